"""The hierarchical MLP of makemore part 5, after WaveNet (van den Oord et al. 2016).

Instead of crushing the whole context into one hidden layer, the model fuses neighbouring
pairs, level after level, as WaveNet's dilated causal convolutions do, until one vector is left:

    x = C[idx]                                    (B, 8, emb_dim)    block_size 8 -> 3 levels
    x = tanh(BN(FlattenConsecutive(2)(x) @ W1))   (B, 4, hidden)     pairs of characters
    x = tanh(BN(FlattenConsecutive(2)(x) @ W2))   (B, 2, hidden)     pairs of pairs
    x = tanh(BN(FlattenConsecutive(2)(x) @ W3))   (B, hidden)        the whole context
    logits = x @ W_out + b_out

The lecture's sizes (emb_dim 24, hidden 128) give 76,579 parameters; its recipe is the
`wavenet` preset (the lecture reports dev 1.993 on its own split; ours: docs/models.md). Its BatchNorm "done right" (the bug the lecture fixes): on a
(B, T, C) input the statistics are over the batch *and* the positions, dims (0, 1), since every
position of a level is a sample of the same channel; the running mean and variance are
buffers (saved in checkpoints, not trained) and replace the batch statistics in eval mode.
Like the MLP, the model is trained on the last position only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .base import Model, ModelConfig, last_position_loss, seeded, setting
from .softmax import AdaptiveSoftmax, OutputSettings, head_field, output_head, softmax_field


@dataclass
class WaveNetConfig(OutputSettings, ModelConfig):
    """Embeddings -> levels of (fuse pairs -> linear -> BatchNorm -> tanh) -> logits."""

    name = "wavenet"
    block_size: int = setting(8, "characters of context: a power of 2 (each level fuses pairs)", min=1)
    emb_dim: int = setting(24, "size of each character's embedding (the lecture's n_embd)", min=1)
    hidden: int = setting(128, "units of each level (the lecture's n_hidden)", min=1)
    softmax: str = softmax_field()  # the output layer (models/softmax.py)
    softmax_head: int = head_field()

    def validate(self) -> None:
        super().validate()
        if self.block_size & (self.block_size - 1):
            raise UserError(f"wavenet fuses pairs of positions: block-size must be a power of 2, got {self.block_size}")

    @property
    def levels(self) -> int:
        return self.block_size.bit_length() - 1  # log2(block_size)


class FlattenConsecutive(nn.Module):
    """(B, T, C) -> (B, T/n, n*C): n neighbouring positions side by side; (B, C) once one is left."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x.reshape(B, T // self.n, C * self.n)
        return x.squeeze(1) if x.shape[1] == 1 else x


class BatchNorm1d(nn.Module):
    """Batch normalisation (Ioffe & Szegedy 2015) of the last dim, over every other dim.

    gamma and beta are trained; running_mean and running_var are buffers, moved toward each
    batch's statistics by `momentum` while training and used instead of them in eval mode, so
    one example's logits do not depend on the rest of its batch. Computed by F.batch_norm (as
    nn.BatchNorm1d): batch statistics normalise with the biased variance, the running estimate
    takes the unbiased one; the lecture's own class uses the unbiased one for both.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (B*T, C): the lecture's dims (0, 1) become one
        if self.training and flat.shape[0] < 2:
            raise UserError("wavenet's BatchNorm needs at least 2 examples per batch to train; raise --batch-size")
        y = F.batch_norm(flat, self.running_mean, self.running_var, self.gamma, self.beta,
                         training=self.training, momentum=self.momentum, eps=self.eps)
        return y.view(x.shape)


class WaveNet(Model):
    """forward(idx, targets=None) -> (logits, loss), idx (B, block_size)."""

    Config = WaveNetConfig

    def __init__(self, cfg: WaveNetConfig, seed: int = 42):
        super().__init__(cfg)
        with seeded(seed):  # torch's own init draws from the global generator: leave it as it was
            layers: list[nn.Module] = [nn.Embedding(cfg.vocab_size, cfg.emb_dim)]
            width = cfg.emb_dim
            for _ in range(cfg.levels):
                # no bias: BatchNorm's beta does its job (a bias would be subtracted out with the mean)
                layers += [FlattenConsecutive(2), nn.Linear(2 * width, cfg.hidden, bias=False),
                           BatchNorm1d(cfg.hidden), nn.Tanh()]
                width = cfg.hidden
            if cfg.levels == 0:
                layers.append(FlattenConsecutive(1))  # block_size 1: (B, 1, emb_dim) -> (B, emb_dim)
            # the last layer of the lecture's Sequential; an adaptive softmax is a layer of its own
            head = output_head(cfg, width)
            if not isinstance(head, AdaptiveSoftmax):
                layers.append(head)
        self.layers = nn.Sequential(*layers)
        self.lm_head = head if isinstance(head, AdaptiveSoftmax) else None
        self._init(seed)
        with seeded(seed + 1):
            self.label_embedding(cfg.emb_dim)

    @torch.no_grad()
    def _init(self, seed: int) -> None:
        """The lecture's: randn embeddings, randn/sqrt(fan_in) weights (Kaiming, no tanh gain),
        zero biases, and the output layer scaled by 0.1 so that the first predictions are near
        uniform (loss ~log(vocab), not a confident wrong guess)."""
        g = torch.Generator().manual_seed(seed)
        for m in self.layers:
            if isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
        if self.lm_head is None:
            self.layers[-1].weight.mul_(0.1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        idx, label = self.read_labels(idx)
        if label is None:
            h = self.layers(idx)
        else:  # the label's embedding added to every character's, as the sequence models do
            h = self.layers[1:](self.layers[0](idx) + label[:, None])
        if self.lm_head is None:
            return h, last_position_loss(h, targets)
        if targets is not None and self.training and not self.needs_logits:
            return None, self.lm_head.nll(h, targets)
        log_probs = self.lm_head.log_probs(h)
        return log_probs, last_position_loss(log_probs, targets)

    def embedding_table(self) -> torch.Tensor:
        return self.layers[0].weight


MODEL = WaveNet
DEFAULT_PRESET = "wavenet"
PRESETS: dict[str, dict] = {
    # makemore part 5's recipe: plain SGD, batch 32, lr 0.1 for 150,000 of 200,000 steps, then
    # 0.01 (the notebook's `lr = 0.1 if i < 150000 else 0.01`).
    "wavenet": dict(block_size=8, emb_dim=24, hidden=128, batch_size=32, steps=200_000, lr=0.1,
                    optimizer="sgd", schedule="step", decay_at=0.75, decay_factor=0.1),
}

# `makemore tune --model wavenet`: see mlp.py's SEARCH_SPACE. AdamW rather than the lecture's
# SGD, so that short trials get somewhere; the block sizes are the powers of 2 the tree takes.
SEARCH_SPACE: dict = {
    "block_size": [4, 8, 16],
    "emb_dim": (8, 64, True),
    "hidden": (64, 512, True),
    "lr": (1e-3, 3e-2, True),
    "batch_size": (32, 512, True),
    "weight_decay": (0.0, 0.2, False),
    "teacher": (0.0, 0.9, False),
}
SEARCH_FIXED = {"optimizer": "adamw", "schedule": "cosine"}
