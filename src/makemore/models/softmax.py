"""The output layer for large vocabularies: an adaptive softmax.

A model's last layer turns its state h (N, d) into a distribution over the V characters. The
plain one, softmax(h @ W + b), costs N*d*V multiply-adds forward and twice that backward: the
"expensive layer" that Bengio et al. (2003) single out, and most of an MLP's step once V is in
the thousands (a list of the world's names in dozens of scripts).

Goodman (2001), "Classes for fast maximum entropy training", factors the distribution through
classes of words, p(c | h) = p(class(c) | h) p(c | class(c), h), so that a prediction costs
the class softmax plus the softmax within one class. Grave, Joulin, Cissé, Grangier & Jégou
(2017), "Efficient softmax approximation for GPUs" (torch.nn.AdaptiveLogSoftmaxWithLoss), make
the classes unequal, by frequency (Zipf's law): a *head* holds the most frequent characters and
one token per *tail cluster*; each cluster holds rarer characters, the clusters growing as the
characters thin out, and reads a smaller projection of h (its characters are rarer, and have
less to learn from):

    p(c | h) = softmax(h @ W_head + b_head)[rank(c)]                           c in the head
    p(c | h) = softmax(h @ W_head + b_head)[head + j]                          c in cluster j
             * softmax((h @ P_j) @ W_tail_j + b_tail_j)[rank(c) - start_j]

It is a proper normalised distribution (each cluster token's probability is shared out among
its characters), so a loss under it compares with a full softmax's as any two models' do. A
training example pays the head (head + clusters wide) and, only where its target is rare, its
target's cluster: on names in dozens of scripts the 64 most frequent characters are some 83% of
the targets, so most of the step costs about the head's size. Inference (every character's
probability) still costs about a full softmax.

The vocabulary keeps its order (data.Vocab: code points; the lecture's figures depend on it):
the frequency order is data, a buffer `output_order` (character id -> frequency rank) saved
with the weights, the identity when built and set from the training split's counts
(`fit_output_order`). The parameters are stored in rank order, so their shapes depend on the
config alone and checkpoints load by config.

`Layout` is the shape of the layer (cutoffs and projection sizes, from V and the head size
alone); `log_probs` and `nll` compute it from the tensors of any module that holds them under
their `Layout.shapes()` names: the MLP holds them itself (named as on the blackboard, beside
C and W1), other models hold an `AdaptiveSoftmax`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError

SOFTMAXES = ("auto", "full", "adaptive")
# Each tail cluster holds CLUSTER_GROWTH times the characters of the one before it (the head's
# size for the first), and reads a projection TAIL_DIVISOR times narrower: Grave et al.'s
# geometric clusters and torch.nn.AdaptiveLogSoftmaxWithLoss's div_value.
CLUSTER_GROWTH = 4
TAIL_DIVISOR = 4
# The narrowest projection a cluster reads: below it the rarest cluster's characters (thousands
# of ideographs, some 0.4% of the targets on names in dozens of scripts) would be nearly a unigram of the cluster, for a
# saving of nothing (the rows that reach it are few).
MIN_TAIL_DIM = 16
# softmax "auto" takes the adaptive softmax from this many characters (the boundary token
# included) on: from here its training step measured faster than the full softmax's at every
# shape of bench item 11 (hidden 64-512, batch 32-512); below it, the few operations each tail
# cluster adds cost more than they save at the smallest shapes, though large ones gain earlier.
ADAPTIVE_FROM = 2000
DEFAULT_HEAD = 64


def softmax_field():
    """The `softmax` setting of a model config. A config written before the setting existed
    had a full softmax whatever its vocabulary (`legacy`: what an absent field meant)."""
    return field(default="auto", metadata={
        "help": "output layer: full, adaptive (a head of the most frequent characters and tail clusters, for "
                f"large vocabularies) or auto (adaptive from {ADAPTIVE_FROM:,} characters on)",
        "choices": SOFTMAXES, "legacy": "full"})


def head_field():
    """The `softmax_head` setting of a model config."""
    return field(default=DEFAULT_HEAD, metadata={
        "help": "characters in the adaptive softmax's head (the most frequent ones); the rest fall in tail "
                "clusters", "min": 1})


class OutputSettings:
    """What a model config with an output layer over the vocabulary adds to ModelConfig: its
    fields `softmax` (softmax_field()) and `softmax_head` (head_field()) are declared by each
    config, after its own; this mixin (before ModelConfig in the bases) checks and decides them."""

    softmax: str
    softmax_head: int
    vocab_size: int

    def validate(self) -> None:
        super().validate()
        resolve(self.softmax, self.vocab_size)

    def decided(self):
        return replace(self, softmax=resolve(self.softmax, self.vocab_size))

    @property
    def adaptive(self) -> bool:
        """Whether the output layer is the adaptive softmax (`softmax`, with auto decided)."""
        return resolve(self.softmax, self.vocab_size) == "adaptive"


def output_head(cfg: OutputSettings, in_features: int, bias: bool = True) -> nn.Module:
    """A model's lm_head: nn.Linear(in_features, V), or with cfg.adaptive an AdaptiveSoftmax
    (with its biases, whatever `bias` says), its initial weights drawn from torch's global
    generator (a model builds its modules under base.seeded)."""
    if not cfg.adaptive:
        return nn.Linear(in_features, cfg.vocab_size, bias=bias)
    g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, ())))
    return AdaptiveSoftmax(in_features, cfg.vocab_size, cfg.softmax_head, g=g)


def resolve(softmax: str, vocab_size: int) -> str:
    """"full" or "adaptive": `auto` decided by the vocabulary's size (ADAPTIVE_FROM)."""
    if softmax not in SOFTMAXES:
        raise UserError(f"softmax must be one of {', '.join(SOFTMAXES)}, got {softmax!r}")
    if softmax == "auto":
        return "adaptive" if vocab_size >= ADAPTIVE_FROM else "full"
    return softmax


@dataclass(frozen=True)
class Layout:
    """Where the head and the tail clusters are in the frequency ranks, and their widths.

    cutoffs: the end rank of the head, then of each cluster (the last is V): ranks
    [0, cutoffs[0]) are the head's characters, [cutoffs[j], cutoffs[j+1]) tail cluster j+1's.
    A head of at least V characters leaves no cluster: a full softmax in frequency order."""

    in_features: int
    vocab_size: int
    cutoffs: tuple[int, ...]
    tail_dims: tuple[int, ...]

    @classmethod
    def of(cls, in_features: int, vocab_size: int, head_size: int) -> "Layout":
        cutoffs = [min(head_size, vocab_size)]
        while cutoffs[-1] < vocab_size:
            end = cutoffs[-1] * CLUSTER_GROWTH
            # a remainder smaller than the cluster before it joins the last cluster: one cluster
            # fewer costs less than a few characters' worth of a small one
            cutoffs.append(vocab_size if vocab_size - end < end // CLUSTER_GROWTH * (CLUSTER_GROWTH - 1)
                           else end)
        tails = len(cutoffs) - 1
        dims = tuple(min(in_features, max(MIN_TAIL_DIM, in_features // TAIL_DIVISOR ** j)) for j in range(1, tails + 1))
        return cls(in_features, vocab_size, tuple(cutoffs), dims)

    @property
    def head(self) -> int:
        """Characters in the head (its outputs are these and one token per cluster)."""
        return self.cutoffs[0]

    @property
    def tails(self) -> list[tuple[int, int]]:
        """(first rank, end rank) of each tail cluster."""
        return list(zip(self.cutoffs[:-1], self.cutoffs[1:]))

    def shapes(self, direct_features: int = 0) -> dict[str, tuple[int, ...]]:
        """Every tensor's name and shape, weights as (fan_in, fan_out) for `x @ W`, in the order
        they are drawn. With `direct_features`, W_direct adds x @ W_direct to the head's logits
        (Bengio's direct connections, from the input to the part of the output every
        prediction computes)."""
        n_head = self.head + len(self.tails)
        shapes: dict[str, tuple[int, ...]] = {"W_head": (self.in_features, n_head), "b_head": (n_head,)}
        if direct_features:
            shapes["W_direct"] = (direct_features, n_head)
        for j, ((lo, hi), d) in enumerate(zip(self.tails, self.tail_dims), start=1):
            shapes[f"P{j}"] = (self.in_features, d)
            shapes[f"W_tail{j}"] = (d, hi - lo)
            shapes[f"b_tail{j}"] = (hi - lo,)
        return shapes

    def num_params(self, direct_features: int = 0) -> int:
        return sum(math.prod(s) for s in self.shapes(direct_features).values())


def _head_logits(p: nn.Module, h: torch.Tensor, head_extra: torch.Tensor | None) -> torch.Tensor:
    z = torch.addmm(p.b_head, h, p.W_head)
    return z if head_extra is None else z + head_extra


def _tail_logits(p: nn.Module, j: int, h: torch.Tensor) -> torch.Tensor:
    return torch.addmm(getattr(p, f"b_tail{j}"), h @ getattr(p, f"P{j}"), getattr(p, f"W_tail{j}"))


def log_probs(layout: Layout, p: nn.Module, h: torch.Tensor, head_extra: torch.Tensor | None = None) -> torch.Tensor:
    """log p(c | h) for every character, (N, V) in character-id order: a normalised
    distribution (its log_softmax is itself). `p` holds the tensors of layout.shapes() and the
    buffer output_order; `head_extra` (N, head + clusters) is added to the head's logits (the
    direct connections' x @ W_direct, where a model has them)."""
    head_lp = F.log_softmax(_head_logits(p, h, head_extra), dim=-1)
    if not layout.tails:
        by_rank = head_lp
    else:
        by_rank = head_lp.new_empty((h.shape[0], layout.vocab_size))
        by_rank[:, :layout.head] = head_lp[:, :layout.head]
        for j, (lo, hi) in enumerate(layout.tails, start=1):
            z = _tail_logits(p, j, h)
            # log p(c | cluster) + log p(cluster), in one pass over the cluster's columns
            by_rank[:, lo:hi] = z - (torch.logsumexp(z, dim=-1, keepdim=True) - head_lp[:, layout.head + j - 1, None])
    # column c: rank output_order[c] (index_select: a column gather, several times faster than indexing)
    return by_rank.index_select(1, p.output_order)


def target_log_probs(layout: Layout, p: nn.Module, h: torch.Tensor, targets: torch.Tensor,
                     head_extra: torch.Tensor | None = None) -> torch.Tensor:
    """log p(target | h) of each row (N,): the head, and for a rare target its own cluster,
    as `nll` reads them. What scoring a split needs, at a fraction of `log_probs`' cost (no
    row computes every cluster, and nothing is V wide)."""
    rank = p.output_order[targets]
    head_lp = F.log_softmax(_head_logits(p, h, head_extra), dim=-1)
    if not layout.tails:
        return head_lp.gather(1, rank[:, None]).squeeze(1)
    cluster = torch.bucketize(rank, rank.new_tensor(layout.cutoffs), right=True)
    out = head_lp.gather(1, torch.where(cluster == 0, rank, cluster + (layout.head - 1))[:, None]).squeeze(1)
    for j, (lo, _) in enumerate(layout.tails, start=1):
        rows = (cluster == j).nonzero().squeeze(1)
        if rows.numel():
            tail_lp = F.log_softmax(_tail_logits(p, j, h[rows]), dim=-1)
            out[rows] += tail_lp.gather(1, (rank[rows] - lo)[:, None]).squeeze(1)
    return out


def nll(layout: Layout, p: nn.Module, h: torch.Tensor, targets: torch.Tensor,
        head_extra: torch.Tensor | None = None, ignore_index: int | None = None) -> torch.Tensor:
    """Mean -log p(target | h), the cross-entropy of `log_probs`, without computing it: the
    head for every row, and cluster j only for the rows whose target is in it. Targets equal
    to `ignore_index` count for nothing (a sequence model's padding)."""
    if ignore_index is not None:
        keep = targets != ignore_index
        if not bool(keep.all()):
            h, targets = h[keep], targets[keep]
            head_extra = None if head_extra is None else head_extra[keep]
    rank = p.output_order[targets]
    head_logits = _head_logits(p, h, head_extra)
    if not layout.tails:
        return F.cross_entropy(head_logits, rank)
    n = rank.shape[0]
    # the head's target: the character itself, or the token of its cluster
    cluster = torch.bucketize(rank, rank.new_tensor(layout.cutoffs), right=True)  # 0: head, j: cluster j
    head_target = torch.where(cluster == 0, rank, cluster + (layout.head - 1))
    total = F.cross_entropy(head_logits, head_target, reduction="sum")
    counts = torch.bincount(cluster, minlength=len(layout.cutoffs)).tolist()
    if sum(counts[1:]):
        # rows grouped by cluster, by one sort: each cluster's rows are then one slice of it
        order = torch.argsort(cluster, stable=True)
        start = counts[0]
        for j, (lo, _) in enumerate(layout.tails, start=1):
            rows, start = order[start:start + counts[j]], start + counts[j]
            if rows.numel():
                total = total + F.cross_entropy(_tail_logits(p, j, h[rows]), rank[rows] - lo, reduction="sum")
    return total / max(n, 1)


def frequency_order(counts: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Each character's rank by how often it is a target, most frequent first (ties by id):
    (V,) int64, the `output_order` of a layer fitted to these counts."""
    counts = torch.from_numpy(np.array(counts, dtype=np.float64))
    by_rank = torch.argsort(-counts, stable=True)
    order = torch.empty_like(by_rank)
    order[by_rank] = torch.arange(len(by_rank))
    return order


def fit_output_order(p: nn.Module, counts, prior: bool = False) -> None:
    """Set p.output_order from the characters' counts (V,) in the training split; with `prior`
    (a fresh layer of small output weights), also its biases to the counts' log-frequencies."""
    counts = np.array(counts)
    if counts.shape != tuple(p.output_order.shape):
        raise ValueError(f"need one count per character ({p.output_order.shape[0]}), got shape {counts.shape}")
    with torch.no_grad():
        p.output_order.copy_(frequency_order(counts))
    if prior:
        fit_output_prior(p, counts)


def fit_output_prior(p: nn.Module, counts) -> None:
    """Biases that make a layer of near-zero output weights predict the training split's
    unigram distribution: the head's characters and cluster tokens their log-frequencies, each
    cluster's characters theirs within it (add-half smoothed: a character never seen as a
    target keeps some mass). Karpathy's "init well" (makemore part 3 fixes the initial loss; "A
    Recipe for Training Neural Networks": set the output bias to the prior): with thousands of
    characters, most of them rare, a zero bias starts every rare character at 1/V and leaves it
    a handful of gradient steps a run to reach its frequency, which counting has exactly."""
    layout = p.layout if hasattr(p, "layout") and isinstance(p.layout, Layout) else None
    if layout is None:
        raise ValueError("fit_output_prior needs a module with an adaptive softmax Layout")
    by_rank = torch.zeros(layout.vocab_size, dtype=torch.float64)
    by_rank[p.output_order] = torch.from_numpy(np.asarray(counts, dtype=np.float64)) + 0.5
    head = [by_rank[:layout.head]] + [by_rank[lo:hi].sum()[None] for lo, hi in layout.tails]
    with torch.no_grad():
        p.b_head.copy_(torch.cat(head).log())
        for j, (lo, hi) in enumerate(layout.tails, start=1):
            getattr(p, f"b_tail{j}").copy_(by_rank[lo:hi].log())


def init_tensor(name: str, shape: tuple[int, ...], g: torch.Generator, scaled: bool = True) -> torch.Tensor:
    """The initial value of one tensor of Layout.shapes(), drawn from `g`. scaled: the head's
    and the tails' output weights small (near-uniform first predictions, loss ~log V, as
    mlp.py's W_out), projections randn/sqrt(fan_in) (a projected state of h's scale), biases
    and direct connections zero; else plain torch.randn (the lecture's init)."""
    w = torch.randn(shape, generator=g)
    if not scaled:
        return w
    if name.startswith("P"):
        return w / math.sqrt(shape[0])
    if name == "W_head" or name.startswith("W_tail"):
        return w * 0.01
    return torch.zeros(shape)


class AdaptiveSoftmax(nn.Module):
    """The layer as a module, for a model's output head (a sequence model's lm_head):
    `log_probs(h)` (..., V) and `nll(h, targets)`, h (..., in_features)."""

    def __init__(self, in_features: int, vocab_size: int, head_size: int, g: torch.Generator | None = None,
                 scaled: bool = True):
        super().__init__()
        self.layout = Layout.of(in_features, vocab_size, head_size)
        self.scaled = scaled  # small output weights: the biases alone make the first prediction
        g = g if g is not None else torch.Generator().manual_seed(0)
        for name, shape in self.layout.shapes().items():
            self.register_parameter(name, nn.Parameter(init_tensor(name, shape, g, scaled)))
        self.register_buffer("output_order", torch.arange(vocab_size))

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        lead = h.shape[:-1]
        return log_probs(self.layout, self, h.reshape(-1, h.shape[-1])).view(*lead, -1)

    def nll(self, h: torch.Tensor, targets: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
        return nll(self.layout, self, h.reshape(-1, h.shape[-1]), targets.reshape(-1), ignore_index=ignore_index)

    def fit_output_order(self, counts, prior: bool = False) -> None:
        fit_output_order(self, counts, prior=prior and self.scaled)

    forward = log_probs


__all__ = ["SOFTMAXES", "ADAPTIVE_FROM", "DEFAULT_HEAD", "softmax_field", "head_field", "OutputSettings",
           "output_head", "resolve", "Layout", "log_probs", "target_log_probs", "nll", "frequency_order",
           "fit_output_order", "fit_output_prior", "init_tensor", "AdaptiveSoftmax"]
