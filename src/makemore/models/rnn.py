"""A recurrent language model (Elman 1990), as makemore.py's RNN with its vanilla cell.

The window is read as makemore.py reads a word: <START> c_1 c_2 ... (base.window_layout; the
last padding token plays <START>). A hidden state runs along it, starting from a learned state:

    h_start = s                                   learned, (hidden,)
    h_t     = tanh(W [x_t; h_{t-1}] + b)          x_t = E[c_t], the character's embedding
    logits_t = h_t @ W_out + b_out                the next character after position t

The GRU (gru.py) is the same model with a gated cell. Columns before a row's start leave its
state at s, so the logits of a prefix do not depend on how much padding the window holds.
Training predicts every position of the window (base.sequence_output), and its windows hold
whole words (train.Minibatches, as makemore.py trains on words); eval reads the last position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Model, ModelConfig, seeded, sequence_output, setting, trim_padding, window_layout
from .softmax import OutputSettings, head_field, output_head, softmax_field


@dataclass
class RNNConfig(OutputSettings, ModelConfig):
    """Embeddings -> a recurrent hidden state along the window -> logits (makemore.py's sizes)."""

    name = "rnn"
    # makemore.py: block_size = longest word + 1 (<START>); 16 for names
    block_size: int = setting(16, "characters of context: the longest word + 1 reads whole words")
    emb_dim: int = setting(64, "size of each character's embedding (makemore.py's n_embd)", min=1)
    hidden: int = setting(64, "size of the recurrent state (makemore.py's n_embd2)", min=1)
    # not in makemore.py: a wide state trained on whole words over-fits within minutes
    dropout: float = setting(0.0, "dropout on the embeddings and on the states the output layer reads, while training")
    # Merity et al. 2018 (AWD-LSTM), "weight drop": DropConnect (Wan et al. 2013) on the
    # hidden-to-hidden weights, one mask per forward pass, so every position of a window sees
    # the same thinned recurrence; dropout on the states alone leaves the recurrence unregularised
    weight_drop: float = setting(0.0, "share of the recurrent (hidden-to-hidden) weights dropped for each "
                                 "minibatch, while training (DropConnect)")
    softmax: str = softmax_field()  # the output layer (models/softmax.py)
    softmax_head: int = head_field()


class RNNCell(nn.Module):
    """h_t = tanh(W [x_t; h_{t-1}] + b): makemore.py's RNNCell, one nn.Linear over [x; h].

    The product splits as W_x x_t + W_h h_{t-1}: `inputs` computes the x half for every
    position in one product before the loop, so the loop, which must run position by position,
    does only the h half."""

    def __init__(self, emb_dim: int, hidden: int):
        super().__init__()
        self.emb_dim = emb_dim
        self.xh_to_h = nn.Linear(emb_dim + hidden, hidden)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, emb_dim) -> (B, T, hidden): W_x x_t + b at every position."""
        return F.linear(x, self.xh_to_h.weight[:, :self.emb_dim], self.xh_to_h.bias)

    def stepper(self, weight_drop: float = 0.0):
        """The recurrence h_{t-1} -> h_t given inputs(x)[:, t], with W_h sliced once (and
        thinned by `weight_drop`, one mask for the whole window)."""
        W_h = self.xh_to_h.weight[:, self.emb_dim:]
        if weight_drop > 0:  # RNNConfig.weight_drop
            W_h = F.dropout(W_h, weight_drop)

        def step(xt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(xt + F.linear(h, W_h))

        return step


class RNN(Model):
    """forward(idx, targets=None) -> (logits, loss) of the next character after the window."""

    Config = RNNConfig
    Cell = RNNCell
    sequence = True

    def __init__(self, cfg: RNNConfig, seed: int = 42):
        super().__init__(cfg)
        with seeded(seed):  # torch's default inits (makemore.py keeps them), drawn from `seed`
            # makemore.py's start state is zeros(1, n_embd2); ours is 1-D, so that weight decay
            # (by rank, Model.decays) leaves it alone as it does a bias
            self.start = nn.Parameter(torch.zeros(cfg.hidden))
            self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
            self.cell = self.Cell(cfg.emb_dim, cfg.hidden)
            self.lm_head = output_head(cfg, cfg.hidden)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        window = trim_padding(idx)
        B, T = window.shape
        start, _ = window_layout(window)
        x = self.cell.inputs(F.dropout(self.wte(window), self.cfg.dropout, self.training))  # all positions at once
        step = self.cell.stepper(self.cfg.weight_drop if self.training else 0.0)
        h = self.start.expand(B, -1)
        hs = []
        for t in range(T):
            # a row whose sequence has not begun keeps the start state: padding reads nothing
            h = torch.where((t >= start)[:, None], step(x[:, t], h), h)
            hs.append(h)
        states = F.dropout(torch.stack(hs, dim=1), self.cfg.dropout, self.training)
        return sequence_output(self, self.lm_head, states, window, targets)

    def embedding_table(self) -> torch.Tensor:
        return self.wte.weight


MODEL = RNN
DEFAULT_PRESET = "rnn"
PRESETS: dict[str, dict] = {
    # makemore.py's settings (n_embd 64, n_embd2 64, AdamW betas 0.9/0.99, weight decay 0.01,
    # batch 32) with a cosine schedule from a peak above its constant 5e-4, so that a short
    # run gets somewhere: dev 2.09 on names in about 1.5 minutes on 2 CPU cores.
    # threads=1: the step is many tiny products (one per position, in order); a second thread
    # only adds synchronisation, and when the other core is busy a step ran 5-10x slower
    # (shared 2-core machine beside one busy process, OMP_WAIT_POLICY=PASSIVE as main sets
    # it: ~450 steps/s on one thread, ~80 on two; gru ~220 and ~50).
    "rnn": dict(block_size=16, emb_dim=64, hidden=64, batch_size=32, steps=30_000, lr=3e-3,
                optimizer="adamw", schedule="cosine", weight_decay=0.01, betas=(0.9, 0.99), threads=1),
}

# `makemore tune --model rnn` (and gru): see mlp.py's SEARCH_SPACE. Around makemore.py's sizes
# and the recipes above, for names-like data (16 characters read whole names).
SEARCH_SPACE: dict = {
    "block_size": (8, 16, False),
    "emb_dim": (16, 128, True),
    "hidden": (64, 512, True),
    "lr": (1e-3, 1e-2, True),
    "batch_size": (32, 256, True),
    "weight_decay": (0.0, 0.2, False),
    "dropout": (0.0, 0.5, False),
    "weight_drop": (0.0, 0.5, False),
    "teacher": (0.0, 0.9, False),
}
SEARCH_FIXED = {"optimizer": "adamw", "schedule": "cosine"}
