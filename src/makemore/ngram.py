"""Count-based character n-gram baselines for the MLP: add-alpha and interpolated Kneser-Ney.

A model of context length k predicts the next character from the previous k characters,
exactly on the examples of `build_examples(words, vocab, block_size=k)`: every word is padded
with k boundary tokens (index 0) in front and ends by predicting the boundary token. Its dev
loss is therefore the mean over the very same predictions as the MLP's dev loss with the same
block size, and the two numbers compare directly.

Two smoothings, each with one parameter tuned on the dev split:

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

Counts are stored sparsely, and a context is named by a dense id, not spelled out. The
contexts of length j seen in training are numbered 0 .. M_j - 1: the id of (c_1 .. c_j) is the
rank of the pair (id of (c_2 .. c_j), c_1) among the distinct such pairs, read as the integer
id * V + c_1 -- a context is its backoff context h' extended by one character on the left. A
(context, next char) pair is the integer id * V + next char. Every key is below (number of
training examples) * V, whatever V and k, where spelling the n-gram out in base V needs V^(k+1)
< 2^63 and breaks for a vocabulary of 3,653 characters at k = 5. A dense table would need
V^(k+1) cells, about 1e10 for names at k = 6, of which training fills fewer than 2e5. The
sorted keys live in numpy arrays, looked up with `np.searchsorted`; they are built one context
column at a time (the character j places back) from the compact examples (data.Examples), so
memory grows with examples x orders, never with V^(k+1) or with all k columns at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import Corpus, Examples, Vocab
from .errors import UserError
from .predict import chunk_rows, make_predictor, target_log_probs

METHODS = ("add_alpha", "kneser_ney")
# Search ranges of the tuned parameters. A discount above 1 would take more than a count of 1
# has, which the max(., 0) of the formula then no longer hands down, so the distribution
# would stop summing to 1.
ALPHA_RANGE = (1e-4, 10.0)
DISCOUNT_RANGE = (1e-3, 1.0)
# Defaults when no parameter is given: Laplace smoothing, and the discount that Chen & Goodman
# (and most textbooks) quote as a good fixed choice.
DEFAULT_SMOOTHING = {"add_alpha": 1.0, "kneser_ney": 0.75}
INT64_MAX = np.iinfo(np.int64).max

# A column of contexts: j -> the character j places before each example (0, the boundary
# token, where that is before the start of its word), int64.
Column = Callable[[int], np.ndarray]


def array_columns(contexts: np.ndarray) -> Column:
    """The columns of the lecture's contexts X (N, k): j places back is X[:, k - j]."""
    k = contexts.shape[1]
    return lambda j: contexts[:, k - j]


def example_columns(examples: Examples) -> Column:
    """The columns of a split in compact form, one at a time: the character j places before
    position p is ids[p - j] if that is still in p's word and the boundary padding otherwise,
    the j-th last column of `Examples.contexts` without gathering the others."""
    n = len(examples)
    lengths = np.diff(np.append(examples.starts, n))
    offset = np.arange(n, dtype=np.int64) - np.repeat(examples.starts, lengths)  # place within the word

    def column(j: int) -> np.ndarray:
        col = np.zeros(n, dtype=np.int64)
        if j < n:
            col[j:] = examples.ids[:n - j]
        col[offset < j] = 0
        return col

    return column


# ----------------------------------------------------------------------------------------
# Sorting and searching int64 keys. np.unique is not used: in numpy 2.x its plain form
# hashes, and on 5.3 million distinct int64 keys it took 15 s where sorting takes 0.8 s.


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """True where a run of equal keys begins."""
    first = np.ones(sorted_keys.shape, dtype=bool)
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=first[1:])
    return first


def _unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct keys and how often each occurs."""
    keys = np.sort(keys)
    starts = np.flatnonzero(_run_starts(keys))
    return keys[starts], np.diff(np.append(starts, keys.size))


def _unique_ranks(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct keys (non-negative), and for each key its index among them."""
    index_bits = max(1, (keys.size - 1).bit_length())
    if keys.size and int(keys.max()).bit_length() + index_bits <= 63:
        # One sort of (key, index) packed into one int64 gives the sorted keys and their order:
        # about twice as fast as argsort, which sorts indices by an indirect comparison.
        packed = np.sort((keys << index_bits) | np.arange(keys.size, dtype=np.int64))
        ordered, order = packed >> index_bits, packed & ((1 << index_bits) - 1)
        del packed
    else:
        order = np.argsort(keys)
        ordered = keys[order]
    first = _run_starts(ordered)
    ranks = np.empty(keys.shape, dtype=np.int64)
    ranks[order] = np.cumsum(first) - 1
    return ordered[first], ranks


def _find(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The index of each query in sorted_keys, -1 for a query that is not among them.

    The queries are searched in sorted order: the binary searches then walk the keys in
    order and stay in cache, about 6x faster than random order for a million queries.
    """
    flat = queries.ravel()
    if sorted_keys.size == 0 or flat.size == 0:
        return np.full(queries.shape, -1, dtype=np.int64)
    order = np.argsort(flat)
    at = np.empty(flat.shape, dtype=np.int64)
    at[order] = np.searchsorted(sorted_keys, flat[order])
    np.minimum(at, sorted_keys.size - 1, out=at)
    return np.where(sorted_keys[at] == flat, at, -1).reshape(queries.shape)


# ----------------------------------------------------------------------------------------
# Counting


@dataclass(frozen=True)
class CountTable:
    """Sparse counts of one order, by dense context id: counts of (context, next char) pairs,
    and per context their sum and the number of distinct next chars.

    The counts are raw counts at the top order of a model and continuation counts below it
    (Kneser-Ney); this table does not care which. The pairs of context s are
    pair_keys[starts[s]:starts[s + 1]], by next char.
    """

    vocab_size: int
    pair_keys: np.ndarray  # sorted distinct context id * V + next char
    pair_counts: np.ndarray
    starts: np.ndarray  # (contexts + 1,)
    context_totals: np.ndarray  # sum of the pair counts of each context
    context_followers: np.ndarray  # number of distinct next chars seen after each context

    @classmethod
    def from_pairs(cls, pair_keys: np.ndarray, pair_counts: np.ndarray, contexts: int, vocab_size: int,
                   starts: np.ndarray | None = None) -> "CountTable":
        """From distinct sorted pair keys and their counts; every context 0..contexts-1 has a pair."""
        if starts is None:  # sorted keys keep each context's pairs together, as one run
            starts = np.zeros(contexts + 1, dtype=np.int64)
            np.cumsum(np.bincount(pair_keys // vocab_size, minlength=contexts), out=starts[1:])
        totals = np.add.reduceat(pair_counts, starts[:-1]) if pair_keys.size else pair_counts[:0]
        followers = np.diff(starts).astype(pair_counts.dtype)
        return cls(vocab_size, pair_keys, pair_counts, starts, totals, followers)

    def _per_context(self, context_ids: np.ndarray):
        seen = context_ids >= 0
        safe = np.where(seen, context_ids, 0)
        return (seen, np.where(seen, self.context_totals[safe], 0),
                np.where(seen, self.context_followers[safe], 0))

    def look_up(self, context_ids: np.ndarray, next_chars: np.ndarray):
        """Counts (N, M) of each context (an id, -1 if unseen) with each of its M next chars;
        totals and followers (N,), 0 for an unseen context."""
        seen, totals, followers = self._per_context(context_ids)
        pairs = np.where(seen[:, None], context_ids[:, None] * self.vocab_size + next_chars, -1)
        at = _find(self.pair_keys, pairs)
        counts = np.where(at >= 0, self.pair_counts[at], 0)
        return counts, totals, followers

    def entries(self, context_ids: np.ndarray):
        """Every pair seen after each context: (row, next char, count) arrays over all of them."""
        rows = np.flatnonzero(context_ids >= 0)
        first = self.starts[context_ids[rows]]
        lengths = self.starts[context_ids[rows] + 1] - first
        offset = np.repeat(first - (np.cumsum(lengths) - lengths), lengths)
        at = offset + np.arange(offset.size)
        return np.repeat(rows, lengths), self.pair_keys[at] % self.vocab_size, self.pair_counts[at]


def counting_bytes(examples: int, max_context: int, vocab_size: int) -> int:
    """An upper bound on the memory NGramCounts takes: for each context length j at most
    min(examples, V^j) contexts and min(examples, V^(j+1)) pairs, plus the working arrays of
    sorting one column."""
    total = 96 * examples
    for j in range(max_context + 1):
        contexts = min(examples, vocab_size ** j)
        total += 40 * contexts + 16 * min(examples, contexts * vocab_size)
    return total


def available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (None where there is none to read)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class NGramCounts:
    """Training examples counted at every context length 0..max_context, once, for the models
    of every length and both smoothings.

    context_keys[j]: for the contexts of length j seen in training, sorted, (id of the context
    without its first character) * V + its first character; a context's id is its index here.
    raw[j]: counts of (context of length j, next char). continuation[j] for j < max_context: in
    how many distinct left contexts each of those pairs occurs (Kneser-Ney's lower orders).
    Built from `column(j)` for j = 1..max_context, one column at a time, and the targets.
    """

    def __init__(self, column: Column, targets: np.ndarray, vocab_size: int, max_context: int):
        n, V = targets.shape[0], vocab_size
        if n * V > INT64_MAX:  # keys stay below examples * V; data this large would not fit in memory anyway
            raise ValueError(f"{n:,} examples of {V:,} characters do not fit 64-bit keys")
        need, free = counting_bytes(n, max_context, V), available_memory()
        if free is not None and need > free:
            raise UserError(f"counting contexts of up to {max_context} characters over {n:,} examples may need "
                            f"{need / 2**30:.1f} GiB of memory, and {free / 2**30:.1f} GiB is available; "
                            f"use a shorter context")
        self.vocab_size, self.max_context = V, max_context
        count_dtype = np.int32 if n < 2**31 else np.int64
        ids = np.zeros(n, dtype=np.int64)  # every example's empty context, id 0
        self.context_keys = [np.zeros(1, dtype=np.int64)]
        self.raw: list[CountTable] = []
        for j in range(max_context + 1):
            if j > 0:  # extend each example's context by the character j places back
                keys, ids = _unique_ranks(ids * V + column(j))
                self.context_keys.append(keys)
            pairs, counts = _unique_counts(ids * V + targets)
            self.raw.append(CountTable.from_pairs(pairs, counts.astype(count_dtype), self.context_keys[j].size, V))
        del ids
        # The continuation count of a pair (h, c) is the number of distinct characters a seen
        # just before it: of distinct pairs (a h, c) one length up. Map each of those to (h, c)
        # through its context's parent (the key's quotient by V) and count.
        self.continuation: list[CountTable] = []
        for j in range(max_context):
            longer = self.raw[j + 1].pair_keys
            parents = self.context_keys[j + 1][longer // V] // V
            shorter, left_neighbours = _unique_counts(parents * V + longer % V)
            table = self.raw[j]
            # every pair seen has a left neighbour (the padding at worst), so the pairs are the same
            assert np.array_equal(shorter, table.pair_keys)
            self.continuation.append(CountTable.from_pairs(table.pair_keys, left_neighbours.astype(count_dtype),
                                                           table.starts.size - 1, V, table.starts))

    @classmethod
    def from_examples(cls, examples: Examples, vocab_size: int, max_context: int) -> "NGramCounts":
        targets = examples.ids.astype(np.int64)
        _check_range(targets, vocab_size)
        return cls(example_columns(examples), targets, vocab_size, max_context)

    def context_ids(self, column: Column, n: int, depth: int) -> list[np.ndarray]:
        """The ids of n examples' contexts of lengths 0..depth: -1 for a context never seen in
        training (so is every longer one: it contains it)."""
        ids = np.zeros(n, dtype=np.int64)
        found = [ids]
        for j in range(1, depth + 1):
            ids = _find(self.context_keys[j], np.where(ids >= 0, ids * self.vocab_size + column(j), -1))
            found.append(ids)
        return found


def _check_range(ids: np.ndarray, vocab_size: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"character ids must lie in [0, {vocab_size})")


def _as_ids(tensor, name: str) -> np.ndarray:
    ids = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer character ids, got {ids.dtype}")
    return ids.astype(np.int64, copy=False)


class NGramModel:
    """A character n-gram model with `context` characters of history, fitted by counting.

    Built on the counts of a training split (NGramCounts, which may be counted to a longer
    context and shared), or with `from_arrays` from the lecture's (X, Y), `from_examples` from a
    split in compact form, `from_words` from words. `method` is "add_alpha" or "kneser_ney";
    `smoothing` is alpha for the first and the discount D for the second: one number for every
    order, or (Kneser-Ney only) a sequence of k + 1 discounts for the orders 0 (unigram) .. k.
    Contexts to score are the lecture's X (N, k) with targets Y (N,), or an Examples.
    """

    def __init__(self, counts: NGramCounts, context: int, method: str = "kneser_ney",
                 smoothing: float | Sequence[float] | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not 0 <= context <= counts.max_context:
            raise ValueError(f"context must be in 0..{counts.max_context} (what was counted), got {context}")
        self.counts, self.vocab_size, self.context, self.method = counts, counts.vocab_size, context, method
        self.smoothing = DEFAULT_SMOOTHING[method] if smoothing is None else smoothing
        # add-alpha reads raw counts of length k; Kneser-Ney continuation counts of lengths
        # 0..k-1 below raw counts of length k.
        self.tables = ([counts.raw[context]] if method == "add_alpha"
                       else [*counts.continuation[:context], counts.raw[context]])

    @classmethod
    def from_arrays(cls, X, Y, vocab_size: int, method: str = "kneser_ney",
                    smoothing: float | Sequence[float] | None = None) -> "NGramModel":
        contexts, targets = _as_ids(X, "X"), _as_ids(Y, "Y")
        if contexts.ndim != 2 or targets.shape != (contexts.shape[0],) or contexts.shape[0] == 0:
            raise ValueError(f"need X of shape (N, k) and Y of shape (N,) with N > 0, got "
                             f"{tuple(contexts.shape)} and {tuple(targets.shape)}")
        for ids in (contexts, targets):
            _check_range(ids, vocab_size)
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
        _check_range(contexts, self.vocab_size)

    def _context_ids(self, X, Y=None) -> tuple[list[np.ndarray], np.ndarray]:
        """The context ids of every length 0..k of these examples, and their targets."""
        if isinstance(X, Examples):
            if Y is not None:
                raise ValueError("examples carry their own targets: pass no Y")
            targets = X.ids.astype(np.int64)
            column = example_columns(X)
        else:
            contexts, targets = _as_ids(X, "X"), _as_ids(Y, "Y")
            self._check_contexts(contexts)
            if targets.shape != (contexts.shape[0],):
                raise ValueError(f"need Y of shape ({contexts.shape[0]},), got {tuple(targets.shape)}")
            column = array_columns(contexts)
        _check_range(targets, self.vocab_size)
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
        probs = np.full(found[0][0].shape, 1.0 / V)
        for discount, (counts, totals, followers) in zip(self._discounts(smoothing), found):
            seen = totals > 0
            denominator = np.where(seen, totals, 1)[:, None]
            kept = np.maximum(counts - discount, 0.0)
            interpolated = (kept + discount * followers[:, None] * probs) / denominator
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
        probs = np.full((1, V), 1.0 / V)
        for order, (discount, table, ids) in enumerate(zip(self._discounts(self.smoothing), self.tables, context_ids)):
            ids = ids[:1] if order == 0 else ids
            seen, totals, followers = table._per_context(ids)
            denominator = np.where(seen, totals, 1)
            probs *= np.where(seen, discount * followers / denominator, 1.0)[:, None]
            rows, chars, counts = table.entries(ids)
            probs[rows, chars] += np.maximum(counts - discount, 0.0) / denominator[rows]
            if order == 0:
                probs = np.repeat(probs, n, axis=0)
        return probs

    def probs(self, contexts) -> torch.Tensor:
        """P(next char | context) for each row of `contexts` (N, k): a float tensor (N, V),
        computed a chunk of rows at a time so that the float64 work stays bounded."""
        contexts = _as_ids(contexts, "contexts")
        self._check_contexts(contexts)
        out = torch.empty((contexts.shape[0], self.vocab_size), dtype=torch.float32)
        rows = chunk_rows(self.vocab_size)
        for i in range(0, contexts.shape[0], rows):
            chunk = contexts[i:i + rows]
            ids = self.counts.context_ids(array_columns(chunk), chunk.shape[0], self.context)
            # Rows with the same longest seen context have the same distribution (all the
            # word starts of a chunk, say, or every row of a sampler's first step): once each.
            representatives, inverse, _ = _groups(_longest_seen(self.counts, ids))
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
        # the looked-up counts do not depend on the parameter: only _combine is repeated
        def dev_loss(parameter: float) -> float:
            return _mean_nll(self._combine(found, parameter), weights)

        low, high = ALPHA_RANGE if self.method == "add_alpha" else DISCOUNT_RANGE
        self.smoothing = minimise_on_log_scale(dev_loss, low, high)
        return self.smoothing

    def __repr__(self) -> str:
        return (f"NGramModel(context={self.context}, vocab_size={self.vocab_size}, "
                f"method={self.method!r}, smoothing={self.smoothing!r})")


def distinct_examples(counts: NGramCounts, context_ids: list[np.ndarray], targets: np.ndarray):
    """The examples that score differently, once each, and how many examples each stands for.

    An example's probability under every order depends only on its longest context seen in
    training and its target: the shorter contexts are suffixes of that one, the longer ones
    unseen. Scoring each distinct (longest seen context, target) once, weighted by its number,
    gives the same mean NLL for less work: 191,207 of them stand for the 663,024 dev examples
    of the big list at k = 5, where popular names repeat. Returns (context ids per length,
    targets, weights) of one representative each.
    """
    representatives, _, weights = _groups(_longest_seen(counts, context_ids) * counts.vocab_size + targets)
    return [ids[representatives] for ids in context_ids], targets[representatives], weights.astype(np.float64)


def _longest_seen(counts: NGramCounts, context_ids: list[np.ndarray]) -> np.ndarray:
    """Each example's longest context seen in training, as a number unique over all lengths."""
    key, offset = np.zeros(context_ids[0].shape, dtype=np.int64), 0
    for j, ids in enumerate(context_ids):
        key = np.where(ids >= 0, offset + ids, key)
        offset += counts.context_keys[j].size
    return key


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of equal keys: one representative index each, each key's group, group sizes."""
    order = np.argsort(keys)
    first = _run_starts(keys[order])
    group = np.empty(keys.shape, dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    return order[starts], group, np.diff(np.append(starts, keys.size))


def _mean_nll(probs: np.ndarray, weights: np.ndarray) -> float:
    """The mean of -log p over examples, from the probabilities (N, 1) of distinct ones."""
    return float(-(np.log(probs[:, 0]) * weights).sum() / weights.sum())


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


# ----------------------------------------------------------------------------------------
# Tables and figures


def fit_on_dev(corpus: Corpus, context: int, method: str = "kneser_ney") -> NGramModel:
    """An n-gram model counted on the train split, its parameter tuned on the dev split; once
    per corpus (kept in corpus.fitted)."""
    key = (context, method)
    if key not in corpus.fitted:
        model = NGramModel.from_examples(corpus.encoded("train"), context, corpus.vocab.size, method)
        model.tune(corpus.encoded("dev"))
        corpus.fitted[key] = model
    return corpus.fitted[key]


# A teacher's distributions are kept for every training example, examples x V floats: on a
# list of thousands of characters that is more than a run should hold (a budget run then trains
# without one; --teacher says so).
TEACHER_MAX_BYTES = 1 << 30


def teacher_bytes(train_examples: int, vocab_size: int) -> int:
    """Memory the teacher's targets take: a float32 distribution per training example."""
    return train_examples * vocab_size * 4


def teacher_targets(corpus: Corpus, context: int) -> np.ndarray:
    """P_KN(next char | its last `context` characters) for every example of the training split:
    (N, V) float32, row i for example i of corpus.encoded("train"). What a run with --teacher
    distils from (config.TrainConfig.teacher). The Kneser-Ney model is fit_on_dev's, counted once
    per corpus (a budget run has counted it for its mixture already).

    The teacher has counted these very examples: on them it is sharper than on unseen text
    (train loss ~1.63 against 1.98 on dev, names, 5 characters)."""
    train = corpus.encoded("train")
    need = teacher_bytes(len(train), corpus.vocab.size)
    if need > TEACHER_MAX_BYTES:
        raise UserError(f"--teacher keeps the count model's distribution for every training example: "
                        f"{need / 2**30:.1f} GiB for this data ({len(train):,} examples x "
                        f"{corpus.vocab.size:,} characters; limit {TEACHER_MAX_BYTES / 2**30:.0f} GiB); "
                        f"train without it (--teacher 0)")
    ngram = fit_on_dev(corpus, context)
    out = np.empty((len(train), corpus.vocab.size), np.float32)
    rows = 1 << 16  # contexts gathered at a time (probs() bounds its own float64 work)
    for start in range(0, len(train), rows):
        positions = np.arange(start, min(start + rows, len(train)), dtype=np.int64)
        out[start:start + rows] = ngram.probs(train.contexts(positions, context)).numpy()
    return out


def ngram_table(corpus: Corpus, max_context: int = 6, test: bool = False) -> list[dict]:
    """For k = 1..max_context: table size, unseen dev contexts, tuned add-alpha and KN dev loss.

    Each row: {"context": k, "table_entries": V^(k+1) (the cells a dense table would need, a
    Python int), "unseen_dev_contexts": share of dev examples with a context unseen in
    training, "add_alpha": {"alpha", "dev_loss"}, "kneser_ney": {"discount", "dev_loss"}}; the
    Kneser-Ney discount is one number shared by all orders. Losses are mean NLL in nats. With
    `test`, each model also gets the "test_loss" of its dev-tuned setting.
    """
    if max_context < 1:
        raise ValueError(f"max_context must be at least 1, got {max_context}")
    V = corpus.vocab.size
    # Counted once to max_context: the contexts of length k are the same for every model, and
    # so are the counts and look-ups of each length.
    counts = NGramCounts.from_examples(corpus.encoded("train"), V, max_context)
    dev = corpus.encoded("dev")
    dev_ids = counts.context_ids(example_columns(dev), len(dev), max_context)
    if test:
        test_examples = corpus.encoded("test")
        test_ids = counts.context_ids(example_columns(test_examples), len(test_examples), max_context)
    rows = []
    for k in range(1, max_context + 1):
        row: dict = {"context": k, "table_entries": V ** (k + 1),
                     "unseen_dev_contexts": float(np.mean(dev_ids[k] < 0))}
        context_ids, targets, weights = distinct_examples(counts, dev_ids[:k + 1], dev.ids.astype(np.int64))
        cache: dict = {}  # the add-alpha model reads the same top-order table as Kneser-Ney's
        for method, parameter in (("add_alpha", "alpha"), ("kneser_ney", "discount")):
            model = NGramModel(counts, k, method)
            found = model._look_up(context_ids, targets[:, None], cache)
            row[method] = {parameter: model._tune(found, weights), "dev_loss": model._nll(found, weights)}
        if test:
            context_ids, targets, weights = distinct_examples(counts, test_ids[:k + 1], test_examples.ids.astype(np.int64))
            test_cache: dict = {}
            for method in ("add_alpha", "kneser_ney"):
                model = NGramModel(counts, k, method, row[method]["alpha" if method == "add_alpha" else "discount"])
                row[method]["test_loss"] = model._nll(model._look_up(context_ids, targets[:, None], test_cache), weights)
        rows.append(row)
    return rows


def add_one_bigram_nll(words: list[str], vocab: Vocab | None = None) -> float:
    """makemore part 1's bigram figure: add-one bigram counts over all words, scored on them.

    Counts every bigram of every word (including the '.'-start and end bigrams) with +1
    smoothing, and returns the mean NLL over those same bigrams: 2.454 on names.txt.
    """
    vocab = vocab or Vocab.from_words(words)
    examples = Examples.from_words(words, vocab)
    return NGramModel.from_examples(examples, 1, vocab.size, "add_alpha", 1.0).nll(examples)


# ----------------------------------------------------------------------------------------
# Bengio et al. (2003), section 4: the MLP mixed with an n-gram model


def ngram_predictor(model: NGramModel):
    """The n-gram model as a sampling/scoring predictor (contexts -> log-probs)."""
    k = model.context

    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return model.probs(ctx[:, ctx.shape[1] - k:].cpu()).log().to(ctx.device)

    return make_predictor(predict, k, vocab_size=model.vocab_size)


def mixture_predictor(mlp, ngram, weight: float):
    """P(c | h) = weight * P_mlp(c | h) + (1 - weight) * P_ngram(c | h), in log space."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"mixture weight must be in [0, 1], got {weight}")
    log_w, log_1mw = math.log(weight) if weight > 0 else -math.inf, math.log1p(-weight) if weight < 1 else -math.inf

    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(mlp(ctx) + log_w, ngram(ctx).to(ctx.device) + log_1mw)

    return make_predictor(predict, max(mlp.context_size, ngram.context_size), mlp.device, mlp.vocab_size)


def _target_log_probs(predictor, words: list[str], vocab: Vocab) -> torch.Tensor:
    return target_log_probs(predictor, Examples.from_words(words, vocab))


def tune_mixture_weight(mlp, ngram, words: list[str], vocab: Vocab) -> dict:
    """The weight in [0, 1] that minimises the mixture's NLL on `words` (the dev split).

    `ngram` is a predictor, or an NGramModel: then its log-probs of the targets are read off
    its counts directly, without its distributions over all V characters (45 s of a 90 s
    `makemore mix` on the big list). The mixture's NLL is convex in the weight, so a fine grid
    finds its minimum to 1e-3.
    """
    examples = Examples.from_words(words, vocab)
    a = target_log_probs(mlp, examples)
    b = ngram.target_log_probs(examples) if isinstance(ngram, NGramModel) else target_log_probs(ngram, examples)
    weights = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    nll = torch.empty_like(weights)
    # a few weights at a time: (weights, examples) of float64 for all 1001 weights would be
    # 5 GB for the 663,024 dev examples of a big list
    step = max(1, (1 << 22) // max(1, a.shape[0]))
    with torch.no_grad():
        for i in range(0, weights.shape[0], step):
            log_w = torch.log(weights[i:i + step])[:, None]
            log_1mw = torch.log1p(-weights[i:i + step])[:, None]
            nll[i:i + step] = -torch.logaddexp(a[None, :] + log_w, b[None, :] + log_1mw).mean(dim=1)
    best = int(torch.argmin(nll))
    return {"weight": float(weights[best]), "mlp_dev_loss": float(-a.mean()),
            "ngram_dev_loss": float(-b.mean()), "mix_dev_loss": float(nll[best])}


def fit_mixture(mlp, train_words: list[str], dev_words: list[str], vocab: Vocab, context: int,
                ngram: NGramModel | None = None):
    """Count a Kneser-Ney model on `train_words`, tune its discount and then the mixture weight
    on `dev_words`; returns (mixture predictor, {weight, discount, context, *_dev_loss}). A
    Kneser-Ney `ngram` already counted and tuned so (a budget run's) is used as it is."""
    if ngram is None:
        ngram = NGramModel.from_words(train_words, vocab, context, "kneser_ney")
        ngram.tune(Examples.from_words(dev_words, vocab))
    result = {"ngram_context": context, "discount": ngram.smoothing,
              **tune_mixture_weight(mlp, ngram, dev_words, vocab)}
    return mixture_predictor(mlp, ngram_predictor(ngram), result["weight"]), result


def mixture_from_settings(mlp, train_words: list[str], vocab: Vocab, settings: dict):
    """Rebuild a fitted mixture from the settings fit_mixture returned (no tuning again)."""
    ngram = NGramModel.from_words(train_words, vocab, settings["ngram_context"], "kneser_ney",
                                  settings["discount"])
    return mixture_predictor(mlp, ngram_predictor(ngram), settings["weight"])
