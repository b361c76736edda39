"""A bag-of-words language model, as makemore.py's BoW: a transformer with its attention
replaced by a plain average.

    x_t      = E[c_t] + P[t]                      character and position embeddings
    x_t     += mean(x_s for s = start .. t)       the causal bag of words
    x_t     += W_2 tanh(W_1 x_t + b_1) + b_2      an MLP on each position
    logits_t = x_t @ W_out + b_out

makemore.py computes the mean as a softmax of zeros under the causal mask (the form attention
takes, with every weight equal); here it is the mask's rows divided by their counts, the same
numbers. The window is read as makemore.py's sequence (base.window_layout): the mean leaves
out the columns before a row's start, and P is indexed by the position counted from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .base import Model, ModelConfig, causal_mask, embed_window, seeded, sequence_output, setting
from .softmax import OutputSettings, head_field, output_head, softmax_field


@dataclass
class BoWConfig(OutputSettings, ModelConfig):
    """Embeddings -> causal mean + MLP -> logits (makemore.py's sizes)."""

    name = "bow"
    block_size: int = setting(16, "characters of context: the longest word + 1 reads whole words", min=1)
    emb_dim: int = setting(64, "size of each character's embedding (makemore.py's n_embd)", min=1)
    hidden: int = setting(64, "units of the MLP after the average (makemore.py's n_embd2)", min=1)
    softmax: str = softmax_field()  # the output layer (models/softmax.py)
    softmax_head: int = head_field()


class BoWBlock(nn.Module):
    """makemore.py's BoWBlock: the causal mean, then an MLP, each added to its input."""

    def __init__(self, emb_dim: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(emb_dim, hidden)
        self.c_proj = nn.Linear(hidden, emb_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(x.dtype)
        weights = weights / weights.sum(dim=-1, keepdim=True)  # (B, T, T): each row a uniform average
        x = x + weights @ x
        return x + self.c_proj(torch.tanh(self.c_fc(x)))


class BoW(Model):
    """forward(idx, targets=None) -> (logits, loss) of the next character after the window."""

    Config = BoWConfig
    sequence = True

    def __init__(self, cfg: BoWConfig, seed: int = 42):
        super().__init__(cfg)
        with seeded(seed):  # torch's default inits (makemore.py keeps them), drawn from `seed`
            self.wte = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
            self.wpe = nn.Embedding(cfg.block_size, cfg.emb_dim)
            self.block = BoWBlock(cfg.emb_dim, cfg.hidden)
            self.lm_head = output_head(cfg, cfg.emb_dim)
            self.label_embedding(cfg.emb_dim)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x, window, start = embed_window(self, idx)
        x = self.block(x, causal_mask(start, window.shape[1]))
        return sequence_output(self, self.lm_head, x, window, targets)

    def embedding_table(self) -> torch.Tensor:
        return self.wte.weight


MODEL = BoW
DEFAULT_PRESET = "bow"
PRESETS: dict[str, dict] = {
    # makemore.py's settings (n_embd 64, n_embd2 64, AdamW betas 0.9/0.99, weight decay 0.01,
    # batch 32) with a cosine schedule from a peak above its constant 5e-4 for a short run.
    "bow": dict(block_size=16, emb_dim=64, hidden=64, batch_size=32, steps=20_000, lr=3e-3,
                optimizer="adamw", schedule="cosine", weight_decay=0.01, betas=(0.9, 0.99)),
}

# `makemore tune --model bow`: see mlp.py's SEARCH_SPACE.
SEARCH_SPACE: dict = {
    "block_size": (8, 16, False),
    "emb_dim": (16, 128, True),
    "hidden": (32, 512, True),
    "lr": (1e-3, 1e-2, True),
    "batch_size": (32, 256, True),
    "weight_decay": (0.0, 0.2, False),
    "teacher": (0.0, 0.9, False),
}
SEARCH_FIXED = {"optimizer": "adamw", "schedule": "cosine"}
