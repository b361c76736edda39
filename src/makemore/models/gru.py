"""A gated recurrent language model: makemore.py's RNN with its GRU cell (Cho et al. 2014).

The model is rnn.py's (a learned start state run along the window, logits from each state);
only the recurrence differs. With u = [x_t; h_{t-1}]:

    r    = sigmoid(W_r u + b_r)                      reset gate: which channels of h to forget
    z    = sigmoid(W_z u + b_z)                      update gate: which channels to rewrite
    hbar = tanh(W_h [x_t; r * h_{t-1}] + b_h)        candidate state
    h_t  = (1 - z) * h_{t-1} + z * hbar

A channel with z near 0 carries h through unchanged, so gradients reach back further than
through the plain RNN's repeated tanh: the GRU is easier to optimise (makemore.py's words).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import rnn
from .rnn import RNN, RNNConfig


@dataclass
class GRUConfig(RNNConfig):
    """rnn's config: embeddings -> a gated recurrent state along the window -> logits."""

    name = "gru"


class GRUCell(nn.Module):
    """makemore.py's GRUCell: three nn.Linear layers over [x; h], named as there.

    As in RNNCell, every layer's x half is computed for all positions before the loop."""

    def __init__(self, emb_dim: int, hidden: int):
        super().__init__()
        self.emb_dim = emb_dim
        self.xh_to_z = nn.Linear(emb_dim + hidden, hidden)
        self.xh_to_r = nn.Linear(emb_dim + hidden, hidden)
        self.xh_to_hbar = nn.Linear(emb_dim + hidden, hidden)

    def _layers(self):
        return self.xh_to_r, self.xh_to_z, self.xh_to_hbar

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, emb_dim) -> (B, T, 3*hidden): W_r x + b_r, W_z x + b_z, W_h x + b_h side by side."""
        E = self.emb_dim
        W = torch.cat([lin.weight[:, :E] for lin in self._layers()])
        b = torch.cat([lin.bias for lin in self._layers()])
        return F.linear(x, W, b)

    def stepper(self, weight_drop: float = 0.0):
        E = self.emb_dim
        r_lin, z_lin, hbar_lin = self._layers()
        W_rz = torch.cat([r_lin.weight[:, E:], z_lin.weight[:, E:]])  # both gates read h: one product
        W_hbar = hbar_lin.weight[:, E:]
        if weight_drop > 0:  # RNNConfig.weight_drop
            W_rz, W_hbar = F.dropout(W_rz, weight_drop), F.dropout(W_hbar, weight_drop)

        def step(xt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            x_r, x_z, x_hbar = xt.chunk(3, dim=1)
            h_r, h_z = F.linear(h, W_rz).chunk(2, dim=1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            hbar = torch.tanh(x_hbar + F.linear(r * h, W_hbar))
            return h + z * (hbar - h)  # = (1 - z) h + z hbar, one operation fewer

        return step


class GRU(RNN):
    Config = GRUConfig
    Cell = GRUCell


MODEL = GRU
DEFAULT_PRESET = "gru"
PRESETS: dict[str, dict] = {
    # as rnn's recipe (makemore.py's settings, cosine from a higher peak, one thread): see rnn.py.
    "gru": dict(block_size=16, emb_dim=64, hidden=64, batch_size=32, steps=20_000, lr=3e-3,
                optimizer="adamw", schedule="cosine", weight_decay=0.01, betas=(0.9, 0.99), threads=1),
    # a wider state for 5 minutes, as an ensemble member: whole words (training.Minibatches) make a
    # wide GRU over-fit within minutes, so it has dropout and is distilled from Kneser-Ney 5 like
    # the MLP's `mlp-best`. Width, dropout and the teacher's weight are the best of 5-minute probes;
    # wider states take too few steps in the time. One thread: a second does not speed up these
    # products. Measurements: docs/models.md.
    "gru-long": dict(block_size=16, emb_dim=64, hidden=384, batch_size=128, steps=20_000, budget=300, lr=3e-3,
                     optimizer="adamw", schedule="cosine", weight_decay=0.1, dropout=0.2, teacher=0.5,
                     betas=(0.9, 0.99), threads=1),
    # The best single model found for 20 minutes of training on 2 CPU cores. gru-long trained
    # this long over-fits, and dropout on embeddings and states does not reach the recurrence:
    # weight drop does (RNNConfig.weight_drop). Width, embedding size, dropout and weight drop are
    # the best of 19-minute probes; bfloat16 gave more steps and no better loss, so `--precision
    # auto` keeps it in float32. At 5 minutes weight drop costs more than it saves, so gru-long
    # has none. Measurements: docs/models.md.
    "best": dict(block_size=16, emb_dim=128, hidden=512, batch_size=128, steps=20_000, budget=1140, lr=3e-3,
                 optimizer="adamw", schedule="cosine", weight_decay=0.1, dropout=0.3, weight_drop=0.2, teacher=0.5,
                 betas=(0.9, 0.99), threads=1),
}

# `makemore tune --model gru`: rnn's space (the same settings, the same sizes of data).
SEARCH_SPACE, SEARCH_FIXED = rnn.SEARCH_SPACE, rnn.SEARCH_FIXED
