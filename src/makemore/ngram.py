"""Count-based character n-gram baselines for the MLP: add-alpha and interpolated Kneser-Ney,
with one discount or with modified Kneser-Ney's three.

A model of context length k predicts the next character from the previous k characters,
exactly on the examples of `build_examples(words, vocab, block_size=k)`: every word is padded
with k boundary tokens (index 0) in front and ends by predicting the boundary token. Its dev
loss is therefore the mean over the very same predictions as the MLP's dev loss with the same
block size, and the two numbers compare directly.

Three smoothings, their parameters tuned on the dev split:

* add-alpha (Lidstone; alpha = 1 is Laplace's add-one, the bigram of makemore part 1):

      P(c | h) = (count(h, c) + alpha) / (count(h) + alpha * V)

* interpolated Kneser-Ney with absolute discounting (Chen & Goodman 1998, "An Empirical
  Study of Smoothing Techniques for Language Modeling", section 2.7 and eq. 17/18): the top
  order discounts its raw counts by D and hands the mass it frees to the next lower order,
  recursively down to the uniform distribution 1/V:

      P_n(c | h) = (max(N_n(h, c) - D, 0) + D * T_n(h) * P_{n-1}(c | h')) / N_n(h)

  where h' is h without its first character, T_n(h) the number of distinct characters seen
  after h, and N_n(h, c) the raw count at the top order but the *continuation count* at every
  lower order: in how many distinct left contexts the n-gram (h, c) occurs. A context never
  seen in training (N_n(h) = 0) defers entirely to the lower order. Contexts that contain
  boundary padding are ordinary contexts here; at the start of a word the left neighbour of
  the padding is always the boundary token again.

* modified Kneser-Ney (Chen & Goodman 1998, section 3): the same with three discounts, by how
  often the n-gram was seen: D1 for a count of 1, D2 for 2, D3 for 3 or more, and the mass
  freed is D1 N1(h) + D2 N2(h) + D3 N3+(h), where N_r(h) is the number of next characters seen
  r times after h (N3+: 3 or more). Chen & Goodman found it better than one discount on every
  corpus they tried; on names.txt it is 0.012 nats better at 5 characters (docs/baselines.md).
  The three discounts are shared by all orders and tuned on dev together.

The counts themselves are counts.py's; a model of length k reads those of lengths 0..k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .counts import (NGramCounts, as_ids, check_range, groups, longest_seen, array_columns,
                     distinct_examples, example_columns)
from .data import Examples, Vocab
from .predict import chunk_rows, last_columns, make_predictor

METHODS = ("add_alpha", "kneser_ney", "modified_kneser_ney")
KNESER_NEY = ("kneser_ney", "modified_kneser_ney")  # what a run may mix with besides the learned model
# Search ranges of the tuned parameters. A discount above 1 would take more than a count of 1
# has, which the max(., 0) of the formula then no longer hands down, so the distribution
# would stop summing to 1.
ALPHA_RANGE = (1e-4, 10.0)
DISCOUNT_RANGE = (1e-3, 1.0)
# Modified Kneser-Ney's D_r takes from counts of r (3: of 3 or more): at most r, for the same reason.
MODIFIED_RANGES = ((1e-3, 1.0), (1e-3, 2.0), (1e-3, 3.0))
# Its three discounts are tuned on at most this many distinct dev examples (all of names'), drawn
# at random: on a big list's a search would otherwise cost seconds per context length.
MODIFIED_TUNING_ROWS = 100_000
# Defaults when no parameter is given: Laplace smoothing, and the discount that Chen & Goodman
# (and most textbooks) quote as a good fixed choice.
DEFAULT_SMOOTHING = {"add_alpha": 1.0, "kneser_ney": 0.75, "modified_kneser_ney": (0.75, 1.0, 1.25)}


class NGramModel:
    """A character n-gram model with `context` characters of history, fitted by counting.

    Built on the counts of a training split (NGramCounts, which may be counted to a longer
    context and shared), or with `from_arrays` from the lecture's (X, Y), `from_examples` from a
    split in compact form, `from_words` from words. `method` is "add_alpha", "kneser_ney" or
    "modified_kneser_ney"; `smoothing` is alpha for the first; the discount D for the second:
    one number for every order, or a sequence of k + 1 discounts for the orders 0 (unigram) ..
    k; and the three discounts (D1, D2, D3+) of the third, shared by every order.
    Contexts to score are the lecture's X (N, k) with targets Y (N,), or an Examples.
    """

    def __init__(self, counts: NGramCounts, context: int, method: str = "kneser_ney",
                 smoothing: float | Sequence[float] | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "modified_kneser_ney" and smoothing is not None and np.shape(smoothing) != (3,):
            raise ValueError(f"modified Kneser-Ney takes three discounts (D1, D2, D3+), got {smoothing!r}")
        if not 0 <= context <= counts.max_context:
            raise ValueError(f"context must be in 0..{counts.max_context} (what was counted), got {context}")
        self.counts, self.vocab_size, self.context, self.method = counts, counts.vocab_size, context, method
        self.smoothing = DEFAULT_SMOOTHING[method] if smoothing is None else smoothing
        # add-alpha reads raw counts of length k; Kneser-Ney (either) continuation counts of
        # lengths 0..k-1 below raw counts of length k.
        self.tables = ([counts.raw[context]] if method == "add_alpha"
                       else [*counts.continuation[:context], counts.raw[context]])
        if any(table is None for table in self.tables):  # counts read back for another model (from_kept)
            raise ValueError(f"these counts were kept for Kneser-Ney of {counts.max_context} characters only")

    @classmethod
    def from_arrays(cls, X, Y, vocab_size: int, method: str = "kneser_ney",
                    smoothing: float | Sequence[float] | None = None) -> "NGramModel":
        contexts, targets = as_ids(X, "X"), as_ids(Y, "Y")
        if contexts.ndim != 2 or targets.shape != (contexts.shape[0],) or contexts.shape[0] == 0:
            raise ValueError(f"need X of shape (N, k) and Y of shape (N,) with N > 0, got "
                             f"{tuple(contexts.shape)} and {tuple(targets.shape)}")
        for ids in (contexts, targets):
            check_range(ids, vocab_size)
        k = contexts.shape[1]
        return cls(NGramCounts(array_columns(contexts), targets, vocab_size, k), k, method, smoothing)

    @classmethod
    def from_examples(cls, examples: Examples, context: int, vocab_size: int, method: str = "kneser_ney",
                      smoothing: float | Sequence[float] | None = None) -> "NGramModel":
        if len(examples) == 0:
            raise ValueError("need at least one training example")
        return cls(NGramCounts.from_examples(examples, vocab_size, context), context, method, smoothing)

    @classmethod
    def from_words(cls, words: list[str], vocab: Vocab, context: int, method: str = "kneser_ney",
                   smoothing: float | Sequence[float] | None = None) -> "NGramModel":
        return cls.from_examples(Examples.from_words(words, vocab), context, vocab.size, method, smoothing)

    def _check_contexts(self, contexts: np.ndarray) -> None:
        if contexts.ndim != 2 or contexts.shape[1] != self.context:
            raise ValueError(f"contexts must have shape (N, {self.context}), got {tuple(contexts.shape)}")
        check_range(contexts, self.vocab_size)

    def _context_ids(self, X, Y=None) -> tuple[list[np.ndarray], np.ndarray]:
        """The context ids of every length 0..k of these examples, and their targets."""
        if isinstance(X, Examples):
            if Y is not None:
                raise ValueError("examples carry their own targets: pass no Y")
            targets = X.ids.astype(np.int64)
            column = example_columns(X)
        else:
            contexts, targets = as_ids(X, "X"), as_ids(Y, "Y")
            self._check_contexts(contexts)
            if targets.shape != (contexts.shape[0],):
                raise ValueError(f"need Y of shape ({contexts.shape[0]},), got {tuple(targets.shape)}")
            column = array_columns(contexts)
        check_range(targets, self.vocab_size)
        return self.counts.context_ids(column, targets.shape[0], self.context), targets

    # ------------------------------------------------------------------------------------
    # Probabilities

    def _look_up(self, context_ids: list[np.ndarray], next_chars: np.ndarray, cache: dict | None = None) -> list[tuple]:
        """For every order's table, the counts it needs for these (contexts, next chars).
        `cache` (by table) shares the look-ups of the same queries between models counted
        together."""
        k = self.context
        orders = [k] if self.method == "add_alpha" else range(k + 1)
        cache = {} if cache is None else cache
        for order, table in zip(orders, self.tables):
            if id(table) not in cache:
                cache[id(table)] = table.look_up(context_ids[order], next_chars)
            if self.method == "modified_kneser_ney" and ("buckets", id(table)) not in cache:
                cache["buckets", id(table)] = table.count_buckets(context_ids[order])
        if self.method == "modified_kneser_ney":  # (counts, totals, N1/N2/N3+ of the context)
            return [cache[id(table)][:2] + (cache["buckets", id(table)],) for table in self.tables]
        return [cache[id(table)] for table in self.tables]

    def _discounts(self, smoothing) -> list[float]:
        if np.ndim(smoothing) == 0:
            return [float(smoothing)] * (self.context + 1)
        discounts = [float(d) for d in smoothing]
        if len(discounts) != self.context + 1:
            raise ValueError(f"need {self.context + 1} discounts (orders 0..{self.context}), "
                             f"got {len(discounts)}")
        return discounts

    def _combine(self, found: list[tuple], smoothing) -> np.ndarray:
        """The probabilities of the looked-up next chars under this smoothing parameter."""
        V = self.vocab_size
        if self.method == "add_alpha":
            (counts, totals, _), = found
            alpha = float(smoothing)
            return (counts + alpha) / (totals[:, None] + alpha * V)
        if self.method == "modified_kneser_ney":
            return self._combine_modified(found, smoothing)
        probs = np.full(found[0][0].shape, 1.0 / V)
        for discount, (counts, totals, followers) in zip(self._discounts(smoothing), found):
            seen = totals > 0
            denominator = np.where(seen, totals, 1)[:, None]
            kept = np.maximum(counts - discount, 0.0)
            interpolated = (kept + discount * followers[:, None] * probs) / denominator
            probs = np.where(seen[:, None], interpolated, probs)
        return probs

    def _combine_modified(self, found: list[tuple], smoothing) -> np.ndarray:
        discounts = np.asarray(smoothing, dtype=np.float64)
        probs = np.full(found[0][0].shape, 1.0 / self.vocab_size)
        for counts, totals, buckets in found:
            seen = totals > 0
            denominator = np.where(seen, totals, 1)[:, None]
            freed = (buckets @ discounts)[:, None]
            interpolated = (np.maximum(counts - _discount_of(counts, discounts), 0.0) + freed * probs) / denominator
            probs = np.where(seen[:, None], interpolated, probs)
        return probs

    def _rows(self, context_ids: list[np.ndarray]) -> np.ndarray:
        """Whole distributions (N, V): `_combine` over every next char, computed sparsely.

        Most of the V next chars were never seen after a context, so instead of looking up V
        counts per row, each order scales the row it inherits (by alpha's or the discount's
        share) and adds its seen pairs' terms at their places:
            P_n = P_{n-1} * D T_n(h) / N_n(h) + max(N_n(h, c) - D, 0) / N_n(h).
        """
        V, k = self.vocab_size, self.context
        n = context_ids[0].shape[0]
        if n == 0:
            return np.empty((0, V))
        if self.method == "add_alpha":
            table, alpha = self.tables[0], float(self.smoothing)
            _, totals, _ = table._per_context(context_ids[k])
            denominator = totals + alpha * V
            probs = np.repeat((alpha / denominator)[:, None], V, axis=1)
            rows, chars, counts = table.entries(context_ids[k])
            probs[rows, chars] = (counts + alpha) / denominator[rows]
            return probs
        # The unigram (order 0, the empty context) is the same for every row and has the most
        # pairs, all V characters: computed on one row, then copied.
        modified = self.method == "modified_kneser_ney"
        discounts = ([np.asarray(self.smoothing, dtype=np.float64)] * (k + 1) if modified
                     else self._discounts(self.smoothing))
        probs = np.full((1, V), 1.0 / V)
        for order, (discount, table, ids) in enumerate(zip(discounts, self.tables, context_ids)):
            ids = ids[:1] if order == 0 else ids
            seen, totals, followers = table._per_context(ids)
            denominator = np.where(seen, totals, 1)
            freed = table.count_buckets(ids) @ discount if modified else discount * followers
            probs *= np.where(seen, freed / denominator, 1.0)[:, None]
            rows, chars, counts = table.entries(ids)
            taken = _discount_of(counts, discount) if modified else discount
            probs[rows, chars] += np.maximum(counts - taken, 0.0) / denominator[rows]
            if order == 0:
                probs = np.repeat(probs, n, axis=0)
        return probs

    def probs(self, contexts) -> torch.Tensor:
        """P(next char | context) for each row of `contexts` (N, k): a float tensor (N, V),
        computed a chunk of rows at a time so that the float64 work stays bounded."""
        contexts = as_ids(contexts, "contexts")
        self._check_contexts(contexts)
        out = torch.empty((contexts.shape[0], self.vocab_size), dtype=torch.float32)
        rows = chunk_rows(self.vocab_size)
        for i in range(0, contexts.shape[0], rows):
            chunk = contexts[i:i + rows]
            ids = self.counts.context_ids(array_columns(chunk), chunk.shape[0], self.context)
            # Rows with the same longest seen context have the same distribution (all the
            # word starts of a chunk, say, or every row of a sampler's first step): once each.
            representatives, inverse, _ = groups(longest_seen(self.counts, ids))
            distinct = self._rows([level[representatives] for level in ids])
            out[i:i + rows] = torch.from_numpy(distinct).float()[torch.from_numpy(inverse)]
        return out

    def _scored(self, X, Y=None) -> tuple[list[tuple], np.ndarray]:
        """The look-ups that score these examples' targets: of the distinct ones, with weights."""
        context_ids, targets = self._context_ids(X, Y)
        context_ids, targets, weights = distinct_examples(self.counts, context_ids, targets)
        # Only the target's probability is needed, and interpolation is per next char, so the
        # look-up is done for one column instead of V.
        return self._look_up(context_ids, targets[:, None]), weights

    def nll(self, X, Y=None) -> float:
        """Mean negative log likelihood (nats) of targets Y (N,) after contexts X (N, k), or of
        the examples X (an Examples)."""
        return self._nll(*self._scored(X, Y))

    def target_log_probs(self, X, Y=None) -> torch.Tensor:
        """log P(target | context) of each example (N,), float64: of Y after X (N, k), or of the
        examples X (an Examples)."""
        context_ids, targets = self._context_ids(X, Y)
        probs = self._combine(self._look_up(context_ids, targets[:, None]), self.smoothing)[:, 0]
        return torch.from_numpy(np.log(probs))

    def _nll(self, found: list[tuple], weights: np.ndarray) -> float:
        return _mean_nll(self._combine(found, self.smoothing), weights)

    def tune(self, X_dev, Y_dev=None) -> float:
        """Set `smoothing` to the one number that minimises the dev NLL, and return it.

        The dev examples are X_dev (N, k) and Y_dev (N,), or an Examples. alpha is searched in
        ALPHA_RANGE, the discount (the same for every order) in DISCOUNT_RANGE, both on a log
        scale: a coarse grid, then golden-section search around its best point.
        """
        return self._tune(*self._scored(X_dev, Y_dev))

    def _tune(self, found: list[tuple], weights: np.ndarray) -> float:
        if self.method == "modified_kneser_ney" and len(weights) > MODIFIED_TUNING_ROWS:
            # a big list's dev split: its three discounts from a sample of it
            rows = np.sort(np.random.default_rng(0).choice(len(weights), MODIFIED_TUNING_ROWS, replace=False))
            found, weights = [tuple(part[rows] for part in order) for order in found], weights[rows]

        # the looked-up counts do not depend on the parameter: only _combine is repeated
        def dev_loss(parameter: float) -> float:
            return _mean_nll(self._combine(found, parameter), weights)

        if self.method == "modified_kneser_ney":
            self.smoothing = self._tune_modified(dev_loss)
            return self.smoothing
        low, high = ALPHA_RANGE if self.method == "add_alpha" else DISCOUNT_RANGE
        self.smoothing = minimise_on_log_scale(dev_loss, low, high)
        return self.smoothing

    def _tune_modified(self, dev_loss: Callable, sweeps: int = 2) -> tuple[float, float, float]:
        """The three discounts by coordinate descent from the best single one: each in turn
        searched within a factor of 3 of where it is (in its range, MODIFIED_RANGES) with the
        others held, `sweeps` times over, never to a worse dev loss."""
        single = minimise_on_log_scale(lambda d: dev_loss((d, d, d)), *DISCOUNT_RANGE)
        discounts, best = [single] * 3, dev_loss((single,) * 3)
        for _ in range(sweeps):
            for r, (low, high) in enumerate(MODIFIED_RANGES):
                def loss(d: float, r: int = r) -> float:
                    return dev_loss(tuple(discounts[:r]) + (d,) + tuple(discounts[r + 1:]))
                d = minimise_on_log_scale(loss, max(low, discounts[r] / 3), min(high, discounts[r] * 3), 7, 1e-3)
                tried = loss(d)
                if tried < best:
                    discounts[r], best = d, tried
        return tuple(discounts)

    def __repr__(self) -> str:
        return (f"NGramModel(context={self.context}, vocab_size={self.vocab_size}, "
                f"method={self.method!r}, smoothing={self.smoothing!r})")


def _discount_of(counts: np.ndarray, discounts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney's discount of each count: D1, D2, D3+ for 1, 2, 3 or more; 0 for 0."""
    return np.concatenate([[0.0], discounts])[np.minimum(counts, 3).astype(np.int64)]


def _mean_nll(probs: np.ndarray, weights: np.ndarray) -> float:
    """The mean of -log p over examples, from the probabilities (N, 1) of distinct ones."""
    # + 0.0: where every target is certain the sum is -0.0, which prints as "-0.0000"
    return float(-(np.log(probs[:, 0]) * weights).sum() / weights.sum()) + 0.0


def minimise_on_log_scale(loss: Callable[[float], float], low: float, high: float,
                          grid_points: int = 21, tolerance: float = 1e-4) -> float:
    """The x in [low, high] with the least loss(x), searched over log x.

    The grid guards against settling in a poor local dip; golden-section search then narrows
    the bracket around the best grid point down to `tolerance` in log x.
    """
    grid = np.linspace(math.log(low), math.log(high), grid_points)
    losses = [loss(math.exp(x)) for x in grid]
    best = int(np.argmin(losses))
    best_x, best_loss = grid[best], losses[best]
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, grid_points - 1)]
    shrink = (math.sqrt(5) - 1) / 2
    c, d = b - shrink * (b - a), a + shrink * (b - a)
    loss_c, loss_d = loss(math.exp(c)), loss(math.exp(d))
    while b - a > tolerance:
        if loss_c < loss_d:
            b, d, loss_d = d, c, loss_c
            c = b - shrink * (b - a)
            loss_c = loss(math.exp(c))
        else:
            a, c, loss_c = c, d, loss_d
            d = a + shrink * (b - a)
            loss_d = loss(math.exp(d))
    for x, value in ((c, loss_c), (d, loss_d)):
        if value < best_loss:
            best_x, best_loss = x, value
    return float(math.exp(best_x))


def ngram_predictor(model):
    """The n-gram model (an NGramModel, an interpolation.InterpolatedCounts, or a
    labels.LabelledNGram reading the label in column 0) as a sampling/scoring predictor (contexts -> log-probs)."""
    k, labels = model.context, getattr(model, "labels", 0)

    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return model.probs(last_columns(ctx, k, bool(labels)).cpu()).log().to(ctx.device)

    if not labels:  # scoring reads each target's counts, not V-wide rows (NGramModel, InterpolatedCounts)
        predict.target_log_probs = lambda ctx, y: model.target_log_probs(
            last_columns(ctx, k, False).cpu(), y.cpu()).float().to(ctx.device)
    return make_predictor(predict, k, vocab_size=model.vocab_size, labels=labels)
