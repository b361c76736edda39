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

The recurrence runs one of two ways, the same function (tests/test_recurrent.py): a cell loop in
Python, position by position, or torch's fused recurrent kernel (torch.rnn_tanh and torch.gru,
what nn.RNN and nn.GRU call: cuDNN on a GPU, ATen's loop in C++ on a CPU), given the cell's own
weights, the recurrent matrix already thinned by the weight drop (as AWD-LSTM's WeightDrop sets
the dropped weight before calling the kernel). A cell that has no kernel (makemore.py's GRU
cell, gru.py) always loops; see RNN.recurrence for which way runs.
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
    block_size: int = setting(16, "characters of context: the longest word + 1 reads whole words", min=1)
    emb_dim: int = setting(64, "size of each character's embedding (makemore.py's n_embd)", min=1)
    hidden: int = setting(64, "size of the recurrent state (makemore.py's n_embd2)", min=1)
    # not in makemore.py: a wide state trained on whole words over-fits within minutes
    dropout: float = setting(0.0, "dropout on the embeddings and on the states the output layer reads, while training",
                             min=0, below=1)
    # Merity et al. 2018 (AWD-LSTM), "weight drop": DropConnect (Wan et al. 2013) on the
    # hidden-to-hidden weights, one mask per forward pass, so every position of a window sees
    # the same thinned recurrence; dropout on the states alone leaves the recurrence unregularised
    weight_drop: float = setting(0.0, "share of the recurrent (hidden-to-hidden) weights dropped for each "
                                 "minibatch, while training (DropConnect)", min=0, below=1)
    softmax: str = softmax_field()  # the output layer (models/softmax.py)
    softmax_head: int = head_field()
    # A labelled list (--labels): where the label's embedding enters. "input" adds it to every
    # position's input, as the position embeddings of bow and the transformer; "state" starts
    # the recurrence from a state of the label's own (s + a learned vector per label), read
    # once. Measured in docs/labels.md.
    label_at: str = setting("input", "a labelled list's label: added to every position's input, or the "
                            "recurrence's start state (--labels)", choices=("input", "state"))


class RNNCell(nn.Module):
    """h_t = tanh(W [x_t; h_{t-1}] + b): makemore.py's RNNCell (Elman 1990), one nn.Linear
    over [x; h].

    The product splits as W_x x_t + W_h h_{t-1}: `inputs` computes the x half for every
    position in one product before the loop, so the loop, which must run position by position,
    does only the h half. The split is also nn.RNN's tanh recurrence, h_t = tanh(W_ih x_t +
    b_ih + W_hh h_{t-1} + b_hh), with W_ih = W_x, W_hh = W_h, b_ih = b, b_hh = 0
    (`kernel_weights`), so `kernel` runs the same cell fused."""

    # torch's fused tanh recurrence: what nn.RNN(nonlinearity="tanh") calls
    kernel = staticmethod(torch.rnn_tanh)

    def __init__(self, emb_dim: int, hidden: int):
        super().__init__()
        self.emb_dim = emb_dim
        self.xh_to_h = nn.Linear(emb_dim + hidden, hidden)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, emb_dim) -> (B, T, hidden): W_x x_t + b at every position."""
        return F.linear(x, self.xh_to_h.weight[:, :self.emb_dim], self.xh_to_h.bias)

    def recurrent_weight(self, weight_drop: float = 0.0) -> torch.Tensor:
        """W_h, thinned by `weight_drop` (RNNConfig.weight_drop): one DropConnect mask (Wan et
        al. 2013) for the whole window, as Merity et al. 2018 (AWD-LSTM) drop it. Both ways of
        running the cell draw it here, so the same seed draws the same mask for both."""
        W_h = self.xh_to_h.weight[:, self.emb_dim:]
        return F.dropout(W_h, weight_drop) if weight_drop > 0 else W_h

    def stepper(self, weight_drop: float = 0.0):
        """The recurrence h_{t-1} -> h_t given inputs(x)[:, t], with W_h sliced once (and
        thinned by `weight_drop`, one mask for the whole window)."""
        W_h = self.recurrent_weight(weight_drop)

        def step(xt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(xt + F.linear(h, W_h))

        return step

    def kernel_weights(self, weight_drop: float = 0.0) -> list[torch.Tensor]:
        """[W_ih, W_hh, b_ih, b_hh] of nn.RNN for `kernel`, W_hh thinned by `weight_drop`."""
        E, b = self.emb_dim, self.xh_to_h.bias
        return [self.xh_to_h.weight[:, :E], self.recurrent_weight(weight_drop), b, torch.zeros_like(b)]


# Devices where RNN.recurrence "auto" runs a cell's fused kernel: on a GPU, cuDNN runs the whole
# window in one call; on a CPU, by measurement (benchmarks/bench.py, item 11).
FUSED_DEVICES = ("cuda", "cpu")


def fused_recurrence(kernel, x: torch.Tensor, h0: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """The states (T, B, hidden) of one recurrent layer run by torch's fused `kernel`
    (torch.rnn_tanh or torch.gru) over x (T, B, emb_dim), time first as the kernels run, from
    h0 (B, hidden), given the layer's [W_ih, W_hh, b_ih, b_hh] in nn.RNN's / nn.GRU's layout."""
    if x.is_cuda:
        # cuDNN reads a layer's weights from one buffer in its own order (here that of the list):
        # weights held elsewhere are copied into one at every call, with a warning each time
        # (nn.RNN's "not part of single contiguous chunk of memory"). A weight drop makes new
        # weights every window anyway: laying them out in one buffer here is that copy, silent.
        flat = torch.cat([w.reshape(-1) for w in weights])
        weights = [part.view_as(w) for part, w in zip(flat.split([w.numel() for w in weights]), weights)]
    # (input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first);
    # `train` only keeps what backward needs (with no dropout between layers, there being one
    # layer): cuDNN refuses a backward through a call made without it, in eval mode too
    out, _ = kernel(x, h0[None].contiguous(), weights, True, 1, 0.0, torch.is_grad_enabled(), False, False)
    return out


class RNN(Model):
    """forward(idx, targets=None) -> (logits, loss) of the next character after the window."""

    Config = RNNConfig
    Cell = RNNCell
    sequence = True
    # How the recurrence runs: "loop" (the cell in Python, position by position), "fused"
    # (the cell's kernel, fused_recurrence) or "auto": the kernel where it is at least as fast
    # as the loop (FUSED_DEVICES; benchmarks/bench.py, item 11), else the loop. Not a setting:
    # both compute the same function (tests/test_recurrent.py), so checkpoints do not record it.
    recurrence: str = "auto"

    def __init__(self, cfg: RNNConfig, seed: int = 42):
        super().__init__(cfg)
        with seeded(seed):  # torch's default inits (makemore.py keeps them), drawn from `seed`
            # makemore.py's start state is zeros(1, n_embd2); ours is 1-D, so that weight decay
            # (by rank, Model.decays) leaves it alone as it does a bias
            self.start = nn.Parameter(torch.zeros(cfg.hidden))
            self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
            self.cell = self.cell_class(cfg)(cfg.emb_dim, cfg.hidden)
            self.lm_head = output_head(cfg, cfg.hidden)
            self.label_embedding(cfg.emb_dim if cfg.label_at == "input" else cfg.hidden)
            if self.label_emb is not None and cfg.label_at == "state":
                nn.init.zeros_(self.label_emb.weight)  # every label starts from s, as an unlabelled model

    @classmethod
    def cell_class(cls, cfg: RNNConfig) -> type[nn.Module]:
        return cls.Cell

    def fused(self, device: torch.device) -> bool:
        """Whether forward runs the recurrence through the cell's fused kernel (`recurrence`)."""
        if self.recurrence not in ("auto", "loop", "fused"):
            raise ValueError(f"recurrence must be auto, loop or fused, got {self.recurrence!r}")
        has_kernel = getattr(self.cell, "kernel", None) is not None
        if self.recurrence == "fused" and not has_kernel:
            raise ValueError(f"{type(self.cell).__name__} has no fused kernel")
        if self.recurrence == "auto":
            return has_kernel and device.type in FUSED_DEVICES
        return self.recurrence == "fused"

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        idx, label = self.read_labels(idx)
        window = trim_padding(idx) if self.trim_windows else idx
        start, pos = window_layout(window)
        x = self.wte(window)
        h0 = self.start.expand(x.shape[0], -1)
        if label is not None and self.cfg.label_at == "input":  # at every position's input (docs/labels.md)
            x = x + label[:, None]
        elif label is not None:  # the label's own start state
            h0 = h0 + label
        x = F.dropout(x, self.cfg.dropout, self.training)
        weight_drop = self.cfg.weight_drop if self.training else 0.0
        if self.fused(x.device):
            # sequence_output reads the last column alone out of training (and training draws
            # its dropout masks on every column, as the loop's)
            states = self._fused_states(x, h0, start, pos, weight_drop, last_only=not self.training)
        else:
            states = self._loop_states(x, h0, start, weight_drop)
        states = F.dropout(states, self.cfg.dropout, self.training)
        return sequence_output(self, self.lm_head, states, window, targets)

    def _loop_states(self, x: torch.Tensor, h0: torch.Tensor, start: torch.Tensor, weight_drop: float) -> torch.Tensor:
        B, T, _ = x.shape
        x = self.cell.inputs(x)  # all positions at once
        step = self.cell.stepper(weight_drop)
        h = h0
        hs = []
        for t in range(T):
            # a row whose sequence has not begun keeps the start state: padding reads nothing
            h = torch.where((t >= start)[:, None], step(x[:, t], h), h)
            hs.append(h)
        return torch.stack(hs, dim=1)

    def _fused_states(self, x: torch.Tensor, h0: torch.Tensor, start: torch.Tensor, pos: torch.Tensor,
                      weight_drop: float, last_only: bool = False) -> torch.Tensor:
        """The loop's states (B, T, hidden), by the kernel; with `last_only`, only the last
        column's, (B, 1, hidden). The kernel runs every row from its first column and the rows
        start at different columns (base.window_layout), so each row is shifted left to begin
        at its start (its last columns repeat its last character), run from the start state,
        and its states shifted back, the columns before its start given the start state as the
        loop leaves them. The repeated columns come after the row's last position and the
        recurrence reads nothing ahead, so they change no state that is kept (nor any gradient:
        no loss reads their states)."""
        B, T, E = x.shape
        H = self.start.shape[0]
        # x and the states as (T*B, .) tables, time first as the kernel runs, row j*B + b holding
        # row b's position j: one index_select each way moves them, cheaper on a CPU than a gather
        # along the columns, forward and backward, and it leaves no copy to the kernel
        batch = torch.arange(B, device=x.device)
        cols = (start[None, :] + torch.arange(T, device=x.device)[:, None]).clamp_(max=T - 1)  # (T, B)
        aligned = x.reshape(B * T, E).index_select(0, (batch * T + cols).view(-1)).view(T, B, E)
        weights = self.cell.kernel_weights(weight_drop)
        out = fused_recurrence(self.cell.kernel, aligned, h0, weights).reshape(T * B, H)
        if last_only:  # the last column of row b is its position T - 1 - start_b (never before it)
            return out.index_select(0, (T - 1 - start) * B + batch)[:, None]
        # column t of row b is its position t - start_b, or its start state (the table's last B rows)
        table = torch.cat([out, h0])
        rows = torch.where(pos >= 0, pos * B + batch[:, None], T * B + batch[:, None])
        return table.index_select(0, rows.view(-1)).view(B, T, H)

    def embedding_table(self) -> torch.Tensor:
        return self.wte.weight


MODEL = RNN
DEFAULT_PRESET = "rnn"
PRESETS: dict[str, dict] = {
    # makemore.py's settings (n_embd 64, n_embd2 64, AdamW betas 0.9/0.99, weight decay 0.01,
    # batch 32) with a cosine schedule from a peak above its constant 5e-4, so that a short
    # run gets somewhere.
    # threads=1: the step is many tiny products (one per position, in order); a second thread
    # only adds synchronisation, and when the other core is busy a step runs several times
    # slower (docs/models.md).
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
