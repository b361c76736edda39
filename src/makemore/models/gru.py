"""A gated recurrent language model: makemore.py's RNN with its GRU cell (Cho et al. 2014).

The model is rnn.py's (a learned start state run along the window, logits from each state);
only the recurrence differs. With u = [x_t; h_{t-1}]:

    r    = sigmoid(W_r u + b_r)                      reset gate: which channels of h to forget
    z    = sigmoid(W_z u + b_z)                      update gate: which channels to rewrite
    hbar = tanh(W_h [x_t; r * h_{t-1}] + b_h)        candidate state
    h_t  = (1 - z) * h_{t-1} + z * hbar

A channel with z near 0 carries h through unchanged, so gradients reach back further than
through the plain RNN's repeated tanh: the GRU is easier to optimise (makemore.py's words).

That is `--cell cho` (the default), the GRU of Cho et al. 2014 as makemore.py writes it. `--cell
cudnn` is the GRU of PyTorch's nn.GRU and of cuDNN, which applies the reset gate after the
recurrent product (the form of ONNX's linear_before_reset):

    r    = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z    = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n    = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
    h_t  = (1 - z) * n + z * h_{t-1}

The update gate's sense is only a sign (z here is 1 - z there), but r * (W h) is not W (r * h)
for any weights: the two are different functions, and only the second has a fused kernel
(torch.gru: cuDNN's on a GPU, ATen's on a CPU), so only `--cell cudnn` runs fused (rnn.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from . import rnn
from .base import setting
from .rnn import RNN, RNNConfig


@dataclass
class GRUConfig(RNNConfig):
    """rnn's config: embeddings -> a gated recurrent state along the window -> logits."""

    name = "gru"
    cell: str = setting("cho", "cho: makemore.py's GRU (Cho et al. 2014, the reset gate applied before the "
                        "recurrent product); cudnn: PyTorch's and cuDNN's (after it), which runs as one fused "
                        "kernel", choices=("cho", "cudnn"))

    def validate(self) -> None:
        super().validate()
        if self.cell not in CELLS:
            raise UserError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")


class GRUCell(nn.Module):
    """makemore.py's GRUCell (Cho et al. 2014): three nn.Linear layers over [x; h], named as there.

    As in RNNCell, every layer's x half is computed for all positions before the loop. It has
    no fused kernel (see the module doc): it always runs as a loop."""

    kernel = None

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


class CuDNNGRUCell(nn.Module):
    """The GRU of PyTorch's nn.GRU and cuDNN (`--cell cudnn`, the module doc's second form): two
    nn.Linear layers, x -> the three gates' input halves and h -> their recurrent halves, both
    in nn.GRU's gate order (r, z, n), so that their weights and biases are nn.GRU's W_ih, W_hh,
    b_ih and b_hh as they are (initialised as nn.Linear initialises them, as makemore.py's
    cells are, not as nn.GRU does). `inputs` and `stepper` are the loop, written from nn.GRU's
    equations; `kernel` runs the same cell fused."""

    kernel = staticmethod(torch.gru)

    def __init__(self, emb_dim: int, hidden: int):
        super().__init__()
        self.x_to_gates = nn.Linear(emb_dim, 3 * hidden)
        self.h_to_gates = nn.Linear(hidden, 3 * hidden)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, emb_dim) -> (B, T, 3*hidden): W_i{r,z,n} x + b_i{r,z,n} side by side."""
        return self.x_to_gates(x)

    def recurrent_weight(self, weight_drop: float = 0.0) -> torch.Tensor:
        """W_hh (3*hidden, hidden), thinned as RNNCell.recurrent_weight thins W_h: one
        DropConnect mask (Wan et al. 2013) per window over the whole matrix (Merity et al.
        2018's weight drop), drawn here for the loop and the kernel alike."""
        W_hh = self.h_to_gates.weight
        return F.dropout(W_hh, weight_drop) if weight_drop > 0 else W_hh

    def stepper(self, weight_drop: float = 0.0):
        W_hh, b_hh = self.recurrent_weight(weight_drop), self.h_to_gates.bias

        def step(xt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            x_r, x_z, x_n = xt.chunk(3, dim=1)
            h_r, h_z, h_n = F.linear(h, W_hh, b_hh).chunk(3, dim=1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)  # the reset gate after the recurrent product
            return n + z * (h - n)  # = (1 - z) n + z h

        return step

    def kernel_weights(self, weight_drop: float = 0.0) -> list[torch.Tensor]:
        """[W_ih, W_hh, b_ih, b_hh] of nn.GRU for `kernel`, W_hh thinned by `weight_drop`."""
        return [self.x_to_gates.weight, self.recurrent_weight(weight_drop), self.x_to_gates.bias,
                self.h_to_gates.bias]


CELLS = {"cho": GRUCell, "cudnn": CuDNNGRUCell}


class GRU(RNN):
    Config = GRUConfig
    Cell = GRUCell

    @classmethod
    def cell_class(cls, cfg: GRUConfig) -> type[nn.Module]:
        return CELLS[cfg.cell]


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

# `makemore tune --model gru`: rnn's space (the same settings, the same sizes of data), and the
# cell, a choice: PyTorch's is another function, and its step costs less (it runs fused; bench
# item 11), so that a study with a time budget may find it the better use of the time.
SEARCH_SPACE = {**rnn.SEARCH_SPACE, "cell": ["cho", "cudnn"]}
SEARCH_FIXED = rnn.SEARCH_FIXED
