"""The bigram language model as a neural net, as in makemore part 1 and makemore.py's Bigram.

    logits = W[c_T]          W (vocab, vocab): row c holds the log-counts of what follows c
    loss   = F.cross_entropy(logits, targets)

Part 1 writes it as one-hot(c_T) @ W, a linear layer with no hidden units; indexing the row is
the same product without the zeros. The whole model is the table, so it learns what the count
model of part 1 counts (ngram.py, context 1) and ends near the same dev loss (~2.45 on names).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import UserError
from .base import Model, ModelConfig, last_position_loss, setting


@dataclass
class BigramConfig(ModelConfig):
    """One table of next-character logits, read at the last character of the context."""

    name = "bigram"
    block_size: int = setting(1, "characters of context (the bigram reads one: must be 1)", min=1)

    def validate(self) -> None:
        super().validate()
        if self.block_size != 1:
            raise UserError(f"the bigram model reads one character of context: block-size must be 1, "
                            f"got {self.block_size}")


class Bigram(Model):
    """forward(idx, targets=None) -> (logits, loss): a lookup of the last character's row."""

    Config = BigramConfig

    def __init__(self, cfg: BigramConfig, seed: int = 42):
        super().__init__(cfg)
        # Zeros, as makemore.py starts it (part 1 draws randn): every first prediction is
        # uniform, loss log(vocab). Nothing is random, so `seed` changes nothing.
        self.W = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.vocab_size))
        if cfg.labels:  # a labelled list: each label's own next-character logits, added to the row
            self.W_label = nn.Parameter(torch.zeros(cfg.labels, cfg.vocab_size))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.W[idx[:, -1]]  # (B, vocab)
        if self.cfg.labels:
            logits = logits + self.W_label[idx[:, 0]]
        return logits, last_position_loss(logits, targets)

    def embedding_table(self) -> torch.Tensor:
        return self.W  # each character's row of next-character logits is its only representation


MODEL = Bigram
DEFAULT_PRESET = "bigram"
PRESETS: dict[str, dict] = {
    # makemore.py trains every model with AdamW (betas 0.9, 0.99; weight decay 0.01). A table
    # of 729 logits needs a larger rate and bigger batches than its lr 5e-4 to converge in a
    # short run (part 1 took full-batch gradient steps of lr 50). One thread, as rnn.py
    # explains: a step is a few tiny operations.
    "bigram": dict(block_size=1, batch_size=256, steps=3_000, lr=0.1, optimizer="adamw", schedule="cosine",
                   weight_decay=0.01, betas=(0.9, 0.99), threads=1),
}

# `makemore tune --model bigram`: see mlp.py's SEARCH_SPACE. A table has only its training to tune.
SEARCH_SPACE: dict = {
    "lr": (1e-2, 1.0, True),
    "batch_size": (32, 1024, True),
    "weight_decay": (0.0, 0.1, False),
}
SEARCH_FIXED = {"optimizer": "adamw", "schedule": "cosine"}
