"""Sparse counts of character n-grams: what the count models of ngram.py are built on.

Counts are stored sparsely, and a context is named by a dense id, not spelled out. The
contexts of length j seen in training are numbered 0 .. M_j - 1: the id of (c_1 .. c_j) is the
rank of the pair (id of (c_2 .. c_j), c_1) among the distinct such pairs, read as the integer
id * V + c_1 -- a context is its backoff context h' extended by one character on the left. A
(context, next char) pair is the integer id * V + next char. Every key is below (number of
training examples) * V, whatever V and k, where spelling the n-gram out in base V needs V^(k+1)
< 2^63 and breaks for a vocabulary of thousands of characters at k = 5. A dense table would need
V^(k+1) cells (about 1e10 for names at k = 6), of which training fills a tiny share. The
sorted keys live in numpy arrays, looked up with `np.searchsorted`; they are built one context
column at a time (the character j places back) from the compact examples (data.Examples), so
memory grows with examples x orders, never with V^(k+1) or with all k columns at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import Examples
from .errors import UserError

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

    def count_buckets(self, context_ids: np.ndarray) -> np.ndarray:
        """(N, 3): how many of each context's next chars it was seen with once, twice, and three
        times or more (0 for an unseen context, -1): what modified Kneser-Ney's discounts free.
        Computed over the whole table on first use, then kept."""
        per_context = self.__dict__.get("_buckets")
        if per_context is None:
            contexts = len(self.starts) - 1
            bucket = np.minimum(self.pair_counts, 3).astype(np.int64) - 1  # 0, 1, 2
            context = np.repeat(np.arange(contexts, dtype=np.int64), np.diff(self.starts))
            per_context = np.bincount(context * 3 + bucket, minlength=3 * contexts).reshape(contexts, 3)
            object.__setattr__(self, "_buckets", per_context)  # a cache on a frozen table
        seen = context_ids >= 0
        return np.where(seen[:, None], per_context[np.where(seen, context_ids, 0)], 0)

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
        check_range(targets, vocab_size)
        return cls(example_columns(examples), targets, vocab_size, max_context)

    def kept(self, context: int, every_order: bool = False) -> dict[str, np.ndarray]:
        """What a Kneser-Ney model of `context` characters reads (NGramModel), by name, to keep
        (a run's counts, rundir.write_counts): the context keys of lengths 1..context, and for
        each order its pairs, their starts per context and their counts: continuation counts
        below `context`, raw counts at it. With `every_order`, the raw counts below `context`
        too (as `raw_counts.j`: their pairs and starts are the continuation counts'), which a
        learned interpolation reads (interpolation.py). Totals and followers are recomputed on
        reading."""
        if not 0 <= context <= self.max_context:
            raise ValueError(f"context must be in 0..{self.max_context}, got {context}")
        arrays = {f"context_keys.{j}": self.context_keys[j] for j in range(1, context + 1)}
        for j in range(context + 1):
            table = self.continuation[j] if j < context else self.raw[j]
            arrays.update({f"pairs.{j}": table.pair_keys, f"starts.{j}": table.starts, f"counts.{j}": table.pair_counts})
            if every_order and j < context:
                if self.raw[j] is None:
                    raise ValueError("the raw counts below the top order were not kept")
                arrays[f"raw_counts.{j}"] = self.raw[j].pair_counts
        return arrays

    @classmethod
    def from_kept(cls, arrays: dict[str, np.ndarray], vocab_size: int, context: int) -> "NGramCounts":
        """Counts read back from `kept(context)`: enough for Kneser-Ney of `context` characters
        (the raw counts of shorter contexts were not kept, so `raw` holds None for them). A
        missing or inconsistent array is a ValueError."""
        counts = cls.__new__(cls)
        counts.vocab_size, counts.max_context = vocab_size, context
        counts.context_keys = [np.zeros(1, dtype=np.int64)]
        counts.context_keys += [np.asarray(arrays[f"context_keys.{j}"], dtype=np.int64) for j in range(1, context + 1)]
        tables = []
        for j in range(context + 1):
            keys, starts, pair_counts = (np.asarray(arrays[f"{name}.{j}"]) for name in ("pairs", "starts", "counts"))
            contexts = counts.context_keys[j].size
            if (keys.shape != pair_counts.shape or starts.shape != (contexts + 1,) or starts[-1] != keys.size
                    or (keys.size and not 0 <= keys[0] <= keys[-1] < contexts * vocab_size)):
                raise ValueError(f"the kept counts of order {j} do not fit together")
            tables.append(CountTable.from_pairs(keys.astype(np.int64), pair_counts, contexts, vocab_size,
                                                starts.astype(np.int64)))
        counts.continuation, counts.raw = tables[:context], [None] * context + tables[context:]
        for j in range(context):  # kept with every_order: the same pairs, their raw counts
            raw_counts = arrays.get(f"raw_counts.{j}")
            if raw_counts is not None:
                table = tables[j]
                if raw_counts.shape != table.pair_counts.shape:
                    raise ValueError(f"the kept raw counts of order {j} do not fit together")
                counts.raw[j] = CountTable.from_pairs(table.pair_keys, np.asarray(raw_counts), table.starts.size - 1,
                                                      vocab_size, table.starts)
        return counts

    def context_ids(self, column: Column, n: int, depth: int) -> list[np.ndarray]:
        """The ids of n examples' contexts of lengths 0..depth: -1 for a context never seen in
        training (so is every longer one: it contains it)."""
        ids = np.zeros(n, dtype=np.int64)
        found = [ids]
        for j in range(1, depth + 1):
            ids = _find(self.context_keys[j], np.where(ids >= 0, ids * self.vocab_size + column(j), -1))
            found.append(ids)
        return found


def check_range(ids: np.ndarray, vocab_size: int) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"character ids must lie in [0, {vocab_size})")


def as_ids(tensor, name: str) -> np.ndarray:
    ids = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer character ids, got {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def distinct_examples(counts: NGramCounts, context_ids: list[np.ndarray], targets: np.ndarray):
    """The examples that score differently, once each, and how many examples each stands for.

    An example's probability under every order depends only on its longest context seen in
    training and its target: the shorter contexts are suffixes of that one, the longer ones
    unseen. Scoring each distinct (longest seen context, target) once, weighted by its number,
    gives the same mean NLL for less work: 191,207 of them stand for the 663,024 dev examples
    of the big list at k = 5, where popular names repeat. Returns (context ids per length,
    targets, weights) of one representative each.
    """
    representatives, _, weights = groups(longest_seen(counts, context_ids) * counts.vocab_size + targets)
    return [ids[representatives] for ids in context_ids], targets[representatives], weights.astype(np.float64)


def longest_seen(counts: NGramCounts, context_ids: list[np.ndarray]) -> np.ndarray:
    """Each example's longest context seen in training, as a number unique over all lengths."""
    key, offset = np.zeros(context_ids[0].shape, dtype=np.int64), 0
    for j, ids in enumerate(context_ids):
        key = np.where(ids >= 0, offset + ids, key)
        offset += counts.context_keys[j].size
    return key


def groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of equal keys: one representative index each, each key's group, group sizes."""
    order = np.argsort(keys)
    first = _run_starts(keys[order])
    group = np.empty(keys.shape, dtype=np.int64)
    group[order] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    return order[starts], group, np.diff(np.append(starts, keys.size))
