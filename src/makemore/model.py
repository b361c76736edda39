"""The neural probabilistic language model of Bengio et al. (2003), as in makemore part 2.

    emb    = C[idx]                            (B, block_size, emb_dim)  embedding lookup
    x      = emb.view(B, block_size*emb_dim)                             concatenation
    h      = tanh(x @ W1 + b1)  (repeated for each hidden layer)
    logits = h @ W_out + b_out  [+ x @ W_direct]                         Bengio's direct links
    loss   = F.cross_entropy(logits, targets)

Weights are (fan_in, fan_out) tensors named as in the lecture (C, W1, b1, ...) rather than
nn.Linear modules, so that `x @ W + b` reads as on the blackboard and the fused engine
(fused.py) can share the very same tensors.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

TANH_GAIN = 5.0 / 3.0  # torch.nn.init.calculate_gain("tanh")


def param_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order (the checkpoint format)."""
    concat = cfg.block_size * cfg.emb_dim
    shapes: dict[str, tuple[int, ...]] = {"C": (cfg.vocab_size, cfg.emb_dim)}
    fan_in = concat
    for i in range(1, cfg.layers + 1):
        shapes[f"W{i}"] = (fan_in, cfg.hidden)
        shapes[f"b{i}"] = (cfg.hidden,)
        fan_in = cfg.hidden
    shapes["W_out"] = (cfg.hidden, cfg.vocab_size)
    shapes["b_out"] = (cfg.vocab_size,)
    if cfg.direct:
        shapes["W_direct"] = (concat, cfg.vocab_size)
    return shapes


def decays(name: str) -> bool:
    """Weight decay applies to the embedding table and the weight matrices, never to biases
    (the usual AdamW practice; Bengio et al. 2003 also decay only the weights)."""
    return not name.startswith("b")


def count_params(cfg: ModelConfig) -> int:
    return sum(math.prod(s) for s in param_shapes(cfg).values())


class MLP(nn.Module):
    """forward(idx, targets=None) -> (logits, loss), the interface of Karpathy's makemore."""

    def __init__(self, cfg: ModelConfig, seed: int = 42):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        for name, shape in param_shapes(cfg).items():
            self.register_parameter(name, nn.Parameter(self._init(name, shape, g)))

    def _init(self, name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        w = torch.randn(shape, generator=g)
        if self.cfg.init == "randn" or name == "C":
            return w  # the lecture: every tensor starts as torch.randn
        if name.startswith("W") and name not in ("W_out", "W_direct"):
            return w * (TANH_GAIN / math.sqrt(shape[0]))  # keeps tanh out of saturation
        if name in ("W_out",):
            return w * 0.01  # near-uniform first prediction: loss starts at log(vocab)
        return torch.zeros(shape)  # biases and direct connections

    @property
    def hidden_weights(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        return [(getattr(self, f"W{i}"), getattr(self, f"b{i}")) for i in range(1, self.cfg.layers + 1)]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        emb = self.C[idx]  # (B, block_size, emb_dim): indexing is a one-hot matmul, cheaper
        x = emb.view(emb.shape[0], -1)
        h = x
        for W, b in self.hidden_weights:
            h = torch.tanh(h @ W + b)
            if self.cfg.dropout > 0 and self.training:
                h = F.dropout(h, self.cfg.dropout, training=True)
        logits = h @ self.W_out + self.b_out
        if self.cfg.direct:
            logits = logits + x @ self.W_direct
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss


@torch.no_grad()
def mean_nll(model: MLP, X: torch.Tensor, Y: torch.Tensor, chunk: int = 65536) -> float:
    """Mean negative log-likelihood over a whole split (the lecture's `loss` on Xdev, Ydev)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, X.shape[0], chunk):
        logits, _ = model(X[i:i + chunk])
        total += F.cross_entropy(logits.float(), Y[i:i + chunk], reduction="sum").item()
    model.train(was_training)
    return total / X.shape[0]
