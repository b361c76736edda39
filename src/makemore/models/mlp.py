"""The neural probabilistic language model of Bengio et al. (2003), as in makemore part 2.

    emb    = C[idx]                            (B, block_size, emb_dim)  embedding lookup
    x      = emb.view(B, block_size*emb_dim)                             concatenation
    h      = tanh(x @ W1 + b1)  (repeated for each hidden layer)
    logits = h @ W_out + b_out  [+ x @ W_direct]                         Bengio's direct links
    loss   = F.cross_entropy(logits, targets)

With --hash-orders N, the last hidden state also gets a learned vector for each of the context's
last 2..N characters, looked up by a hash of them in a table of 2^hash_bits rows (Mikolov et al.
2011, "Strategies for training large scale neural network language models": hash-based direct
features beside the network), summed and projected:

    h      = h + (sum_k E_hash[hash(c_{T-k+1..T})]) @ W_hash        k = 2..hash_orders

A count model remembers every long context it has seen; a few hundred hidden units cannot. The
table gives the network that memory at the cost of a lookup: each step reads and updates only the
rows of its minibatch's contexts (sparse gradients, stepped by the optimizer's sparse form).

With --softmax adaptive (auto's choice for a large vocabulary) the last two lines are an
adaptive softmax (models/softmax.py: Goodman 2001, Grave et al. 2017): W_head, b_head [and
W_direct] over the most frequent characters and one token per tail cluster, then P_j, W_tail_j,
b_tail_j per cluster, read only for the rows whose target is in it.

Weights are (fan_in, fan_out) tensors named as in the lecture (C, W1, b1, ...) rather than
nn.Linear modules, so that `x @ W + b` reads as on the blackboard and the fused engine
(fused.py) can share the very same tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from . import softmax as output_layer
from .base import Model, ModelConfig, last_position_loss, setting

TANH_GAIN = 5.0 / 3.0  # torch.nn.init.calculate_gain("tanh")
INITS = ("randn", "scaled")


@dataclass
class MLPConfig(output_layer.OutputSettings, ModelConfig):
    """Embeddings -> tanh hidden layer(s) -> logits (Bengio et al. 2003)."""

    name = "mlp"
    emb_dim: int = setting(10, "size of each character's embedding (the lecture's C has 10 columns)", min=1)
    hidden: int = setting(200, "units per tanh hidden layer", min=1)
    layers: int = setting(1, "tanh hidden layers", min=1)
    direct: bool = setting(False, "Bengio's direct connections from the embeddings to the output")
    dropout: float = setting(0.0, "dropout on each hidden layer's output while training", min=0, below=1)
    # "randn": the lecture's plain torch.randn for every tensor; "scaled": Kaiming-style
    # tanh-gain/sqrt(fan_in) for hidden layers and a small output layer (makemore part 3).
    init: str = setting("scaled", "randn (the lecture's plain randn) or scaled (makemore part 3)", choices=INITS)
    softmax: str = output_layer.softmax_field()  # the output layer (models/softmax.py)
    softmax_head: int = output_layer.head_field()
    hash_orders: int = setting(0, "hashed context features: a learned vector for each of the context's last 2..N "
                               "characters, added to the last hidden layer (0: none)", min=0)
    hash_bits: int = setting(20, "rows of the hashed feature table, as a power of two", min=4, max=28)
    hash_dim: int = setting(32, "size of each hashed feature vector", min=1)
    hash_dropout: float = setting(0.0, "while training, drop each hashed feature vector with this probability "
                                  "(whole vectors: the table then cannot stand in for the network)", min=0, below=1)

    def validate(self) -> None:
        super().validate()
        if self.init not in INITS:
            raise UserError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        if self.hash_orders and not 2 <= self.hash_orders <= self.block_size:
            raise UserError(f"hash-orders must be 0 or from 2 to block-size ({self.block_size}), got {self.hash_orders}")

    @property
    def inputs(self) -> int:
        """Embeddings the first layer reads: the block's characters, and a labelled list's label."""
        return self.block_size + (self.labels > 0)

    @property
    def table_rows(self) -> int:
        """Rows of C: a row per character, and one per label after them (see MLP.forward)."""
        return self.vocab_size + self.labels

    def output_layout(self) -> output_layer.Layout | None:
        """The adaptive softmax's layout (from the config alone), or None for a full softmax."""
        if not self.adaptive:
            return None
        return output_layer.Layout.of(self.hidden, self.vocab_size, self.softmax_head)


def param_shapes(cfg: MLPConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in a fixed order (the checkpoint format)."""
    concat = cfg.inputs * cfg.emb_dim
    shapes: dict[str, tuple[int, ...]] = {"C": (cfg.table_rows, cfg.emb_dim)}
    fan_in = concat
    for i in range(1, cfg.layers + 1):
        shapes[f"W{i}"] = (fan_in, cfg.hidden)
        shapes[f"b{i}"] = (cfg.hidden,)
        fan_in = cfg.hidden
    if cfg.hash_orders:
        shapes["E_hash"] = (1 << cfg.hash_bits, cfg.hash_dim)
        shapes["W_hash"] = (cfg.hash_dim, cfg.hidden)
    layout = cfg.output_layout()
    if layout is not None:
        return {**shapes, **layout.shapes(direct_features=concat if cfg.direct else 0)}
    shapes["W_out"] = (cfg.hidden, cfg.vocab_size)
    shapes["b_out"] = (cfg.vocab_size,)
    if cfg.direct:
        shapes["W_direct"] = (concat, cfg.vocab_size)
    return shapes


class MLP(Model):
    """forward(idx, targets=None) -> (logits, loss), the interface of Karpathy's makemore."""

    Config = MLPConfig

    def __init__(self, cfg: MLPConfig, seed: int = 42):
        super().__init__(cfg)
        self.layout = cfg.output_layout()
        outputs = self.layout.shapes(direct_features=1) if self.layout is not None else {}
        g = torch.Generator().manual_seed(seed)
        for name, shape in param_shapes(cfg).items():
            w = (output_layer.init_tensor(name, shape, g, scaled=cfg.init == "scaled") if name in outputs
                 else self._init(name, shape, g))
            self.register_parameter(name, nn.Parameter(w))
        if self.layout is not None:
            # character id -> frequency rank (softmax.py): the identity until fit_output_order
            self.register_buffer("output_order", torch.arange(cfg.vocab_size))

    def _init(self, name: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        if name == "E_hash":
            return torch.zeros(shape)  # an unseen context adds nothing to the network's state
        w = torch.randn(shape, generator=g)
        if self.cfg.init == "randn" or name == "C":
            return w  # the lecture: every tensor starts as torch.randn
        if name.startswith("W") and name not in ("W_out", "W_direct"):
            return w * (TANH_GAIN / math.sqrt(shape[0]))  # keeps tanh out of saturation
        if name in ("W_out",):
            return w * 0.01  # near-uniform first prediction: loss starts at log(vocab)
        return torch.zeros(shape)  # biases and direct connections

    @property
    def sparse_parameters(self) -> tuple[str, ...]:
        return ("E_hash",) if self.cfg.hash_orders else ()

    def decays(self, name: str, p: torch.Tensor) -> bool:
        # the hashed table is sparse: decaying all of it every step would cost more than the step
        return name != "E_hash" and super().decays(name, p)

    def hashed(self, idx: torch.Tensor, sparse: bool = False) -> torch.Tensor:
        """The hashed context features' term of the last hidden layer, (N, hidden). With
        hash_dropout p, in training each context's vector of each order is dropped with
        probability p and the kept ones scaled by 1/(1 - p) (dropout, Srivastava et al. 2014, of
        whole features): the table alone over-fits the contexts it has seen (docs/big-lists.md)."""
        rows = context_hashes(idx[:, idx.shape[1] - self.cfg.block_size:], self.cfg.hash_orders, self.cfg.hash_bits)
        keep = None
        if self.cfg.hash_dropout > 0 and self.training:
            keep = (torch.rand(rows.shape, device=rows.device) >= self.cfg.hash_dropout).to(self.E_hash.dtype)
            keep /= 1.0 - self.cfg.hash_dropout
        return F.embedding_bag(rows, self.E_hash, mode="sum", sparse=sparse, per_sample_weights=keep) @ self.W_hash

    @property
    def hidden_weights(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        return [(getattr(self, f"W{i}"), getattr(self, f"b{i}")) for i in range(1, self.cfg.layers + 1)]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """(logits, loss). With the adaptive softmax the logits are log-probabilities (a
        normalised distribution: log_softmax leaves them as they are), and in training with
        targets they are None unless asked for (Model.needs_logits): the loss reads the head
        and the targets' own clusters, never the full (B, V) distribution.

        A labelled model reads the label in idx's column 0 (models/base.py) as one more input:
        label l's embedding is row V + l of C, concatenated in front of the characters', so the
        model is the plain MLP of block_size + 1 inputs (and the fused engine trains it as such)."""
        chars = idx
        idx = label_inputs(idx, self.cfg)
        emb = self.C[idx]  # (B, inputs, emb_dim): indexing is a one-hot matmul, cheaper
        x = emb.view(emb.shape[0], -1)
        h = x
        for W, b in self.hidden_weights:
            h = torch.tanh(h @ W + b)
            if self.cfg.dropout > 0 and self.training:
                h = F.dropout(h, self.cfg.dropout, training=True)
        if self.cfg.hash_orders:
            h = h + self.hashed(chars, sparse=self.training and torch.is_grad_enabled())
        if self.layout is not None:
            direct = x @ self.W_direct if self.cfg.direct else None
            if targets is not None and self.training and not self.needs_logits:
                return None, output_layer.nll(self.layout, self, h, targets, direct)
            log_probs = output_layer.log_probs(self.layout, self, h, direct)
            return log_probs, last_position_loss(log_probs, targets)
        logits = h @ self.W_out + self.b_out
        if self.cfg.direct:
            logits = logits + x @ self.W_direct
        return logits, last_position_loss(logits, targets)

    def observe_training_data(self, train) -> None:
        if self.layout is not None:
            self.fit_output_order(np.bincount(train.ids, minlength=self.cfg.vocab_size),
                                  prior=self.cfg.init == "scaled")

    def fit_output_order(self, counts, prior: bool = False) -> None:
        """The adaptive softmax's frequency order from each character's count as a target in
        the training split (V,): the most frequent in the head. For a fresh model: its
        weights are stored by rank. `prior`: its biases start at the unigram distribution
        (softmax.fit_output_prior; the scaled init's small output weights leave it to them)."""
        output_layer.fit_output_order(self, counts, prior=prior)

    def embedding_table(self) -> torch.Tensor:
        return self.C[:self.cfg.vocab_size]  # the characters' rows (a labelled model's labels follow)

    def logits_fn(self):
        """The model's logits for contexts (N, block_size), computed for inference by tables
        (log-probabilities, with the adaptive softmax).

        The first layer reads x = [C[c_1], ..., C[c_T]], so x @ W1 = sum_t C[c_t] @ W1_t, where
        W1_t is W1's rows for position t. With the table P[t, c] = C[c] @ W1_t (block_size x
        vocab x hidden, computed once) the first layer is T row lookups and adds (one
        embedding_bag) instead of a (T*emb_dim x hidden) product: ~10x less arithmetic for the
        lecture's sizes. Direct connections get the same treatment. A snapshot: build it again
        after more training.
        """
        hidden = self._hidden_fn()
        if self.layout is not None:
            def log_probs(ctx: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return output_layer.log_probs(self.layout, self, *hidden(ctx))

            return log_probs
        W_out, b_out = self.W_out.detach(), self.b_out.detach()

        def logits(ctx: torch.Tensor) -> torch.Tensor:
            h, direct = hidden(ctx)
            out = torch.addmm(b_out, h, W_out)
            if direct is not None:
                out += direct
            return out

        return logits

    def target_log_probs_fn(self):
        """log p(target | context) by the adaptive softmax's head and each target's own
        cluster (output_layer.target_log_probs), the hidden state as logits_fn computes it."""
        if self.layout is None:
            return None
        hidden = self._hidden_fn()

        def target_log_probs(ctx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                h, direct = hidden(ctx)
                return output_layer.target_log_probs(self.layout, self, h, targets, direct)

        return target_log_probs

    def _hidden_fn(self):
        """contexts -> (last hidden layer's state, the direct connections' term or None), by the
        tables of logits_fn."""
        cfg = self.cfg
        T, E, V = cfg.inputs, cfg.emb_dim, cfg.table_rows
        with torch.no_grad():
            def table(W):  # (T*E, out) -> (T*V, out): row t*V + c is C[c] @ W_t
                return torch.einsum("ve,teo->tvo", self.C, W.view(T, E, -1)).reshape(T * V, -1).contiguous()

            (W1, b1), *deeper = self.hidden_weights
            first, direct = table(W1), table(self.W_direct) if cfg.direct else None
            hashed = self.hashed if cfg.hash_orders else None
            deeper = [(W.detach(), b.detach()) for W, b in deeper]
            b1 = b1.detach()
        offsets = torch.arange(T, device=first.device) * V

        def hidden(ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            rows = label_inputs(ctx, cfg) + offsets
            # in place: a fresh large tensor per operation costs more in page faults than the math
            h = _tanh_(F.embedding_bag(rows, first, mode="sum").add_(b1))
            for W, b in deeper:
                h = _tanh_(torch.addmm(b, h, W))
            if hashed is not None:
                with torch.no_grad():
                    h = h + hashed(ctx)
            return h, (F.embedding_bag(rows, direct, mode="sum") if direct is not None else None)

        return hidden


def label_inputs(idx, cfg: MLPConfig):
    """idx with a labelled list's label (column 0) turned into its row of C, V + label; idx
    itself for unlabelled data. A tensor or a NumPy array (the fused engine's)."""
    if not cfg.labels:
        return idx
    if isinstance(idx, np.ndarray):
        out = idx.copy()
        out[..., 0] += cfg.vocab_size
        return out
    return torch.cat([idx[..., :1] + cfg.vocab_size, idx[..., 1:]], dim=-1)


# Fibonacci hashing (Knuth, TAOCP vol. 3, 6.4): 2^64 / the golden ratio as a signed 64-bit integer;
# a context's hash is the top bits of the product. torch's int64 products wrap around, on any device.
HASH_MULTIPLIER = -7046029254386353131
HASH_BASE = 1_000_003


def context_hashes(chars: torch.Tensor, orders: int, bits: int) -> torch.Tensor:
    """(N, orders - 1) rows of a 2^bits-row table: for k = 2..orders, a hash of the last k
    characters of each context (N, T) (a word's start is its padding, so it hashes too)."""
    key = torch.zeros(chars.shape[0], dtype=torch.int64, device=chars.device)
    rows = []
    T = chars.shape[1]
    for k in range(1, orders + 1):
        key = key * HASH_BASE + chars[:, T - k].long() + 1
        if k >= 2:
            rows.append(((key + k) * HASH_MULTIPLIER >> (64 - bits)) & ((1 << bits) - 1))
    return torch.stack(rows, 1)


def _tanh_(h: torch.Tensor) -> torch.Tensor:
    """tanh in place; on the CPU by NumPy, whose vectorised tanh is faster than torch's (docs/speed.md)."""
    if h.device.type == "cpu":
        a = h.numpy()
        np.tanh(a, out=a)
        return h
    return h.tanh_()


def count_params(cfg: MLPConfig) -> int:
    return sum(math.prod(s) for s in param_shapes(cfg).values())


MODEL = MLP
DEFAULT_PRESET = "default"
PRESETS: dict[str, dict] = {
    # makemore part 2, end of the lecture (the video reports dev 2.17).
    "lecture": dict(block_size=3, emb_dim=10, hidden=200, init="randn", batch_size=32,
                    steps=200_000, lr=0.1, optimizer="sgd", schedule="step",
                    decay_at=0.5, decay_factor=0.1),
    # The lecture's 2-D embedding experiment: small enough to plot C directly.
    "tiny2d": dict(block_size=3, emb_dim=2, hidden=100, init="randn", batch_size=32,
                   steps=50_000, lr=0.1, optimizer="sgd", schedule="step"),
    # The least training time to the lecture's dev 2.17 (`make bench`, item 2; docs/speed.md).
    "fast": dict(block_size=4, emb_dim=12, hidden=128, batch_size=128, steps=1_000,
                 lr=0.03, optimizer="adamw", schedule="cosine", weight_decay=0.01),
    # The best dev loss found for about 3 minutes on 2 CPU cores: the best trial of a `makemore
    # tune` study on names, narrowed (hidden, steps) to fit the time (docs/models.md, docs/tuning.md).
    "default": dict(block_size=10, emb_dim=48, hidden=768, layers=2, batch_size=676, steps=5_500,
                    lr=2.4e-3, optimizer="adamw", schedule="cosine", dropout=0.278,
                    weight_decay=0.0517, init="scaled"),
    # The best MLP found for 20 minutes of training on 2 CPU cores (the best single model is a
    # GRU, models/gru.py): `default` made wider, with larger batches and more regularisation for a
    # longer run, and distilled from Kneser-Ney 5 (`teacher`: half of each target), which lowers
    # its dev loss. The steps are planned to fill 19 minutes (`budget`), so that it fits the time
    # on a slower machine too. Measurements: docs/models.md.
    "mlp-best": dict(block_size=10, emb_dim=48, hidden=1024, layers=2, batch_size=1024, steps=20_000, budget=1140,
                     lr=2e-3, optimizer="adamw", schedule="cosine", dropout=0.35, weight_decay=0.1, init="scaled",
                     teacher=0.5),
}

# `makemore tune --model mlp`: name -> (low, high, log scale) for a number, or a list of choices
# (tune.search_space). Ranges for names-like data (docs/tuning.md); the
# teacher's weight (TrainConfig.teacher, distillation from Kneser-Ney) is left out by tune on
# data whose teacher would not fit in memory. SEARCH_FIXED: what every trial shares.
SEARCH_SPACE: dict = {
    "block_size": (3, 8, False),
    "emb_dim": (8, 32, False),
    "hidden": (64, 1024, True),
    "layers": (1, 2, False),
    "direct": [False, True],
    "lr": (1e-3, 3e-2, True),
    "batch_size": (64, 1024, True),
    "weight_decay": (0.0, 0.2, False),
    "dropout": (0.0, 0.5, False),
    "teacher": (0.0, 0.9, False),
}
SEARCH_FIXED = {"optimizer": "adamw", "schedule": "cosine", "init": "scaled"}
