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

Counts are stored sparsely: a context of k characters is read as one integer in base V (its
first character most significant) and a (context, next char) pair as context * V + next char;
the sorted distinct keys live in numpy arrays and are looked up with `np.searchsorted`. A
dense table would need V^(k+1) cells, about 1e10 for names at k = 6, of which training fills
fewer than 2e5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .data import Corpus, Examples, Vocab, build_examples
from .predict import make_predictor, target_log_probs

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


def ngram_keys(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Read each row of character ids as one integer in base `vocab_size` (first id leading).

    A row of zero length (the empty context of a unigram) is 0.
    """
    keys = np.zeros(ids.shape[0], dtype=np.int64)
    for column in ids.T:
        keys = keys * vocab_size + column
    return keys


def _look_up(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where sorted_keys[i] == query, and 0 for a query that is not among the keys."""
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=values.dtype)
    at = np.minimum(np.searchsorted(sorted_keys, queries), sorted_keys.size - 1)
    return np.where(sorted_keys[at] == queries, values[at], 0)


@dataclass(frozen=True)
class CountTable:
    """Sparse counts of one order: counts of (context, next char) pairs and per-context sums.

    The counts are raw counts at the top order of a model and continuation counts below it
    (Kneser-Ney); this table does not care which.
    """

    vocab_size: int
    pair_keys: np.ndarray  # sorted distinct context * V + next_char
    pair_counts: np.ndarray
    context_keys: np.ndarray  # sorted distinct contexts
    context_totals: np.ndarray  # sum of the pair counts of each context
    context_followers: np.ndarray  # number of distinct next chars seen after each context

    @classmethod
    def from_pairs(cls, pair_keys: np.ndarray, pair_counts: np.ndarray, vocab_size: int) -> "CountTable":
        """From distinct sorted pair keys and their counts (as `np.unique` returns them)."""
        # Sorted pair keys keep the pairs of one context next to each other, so each context is
        # one run: np.unique gives where the runs start, reduceat sums over them.
        contexts = pair_keys // vocab_size
        context_keys, run_starts, followers = np.unique(contexts, return_index=True, return_counts=True)
        totals = np.add.reduceat(pair_counts, run_starts) if pair_keys.size else pair_counts[:0]
        return cls(vocab_size, pair_keys, pair_counts, context_keys, totals, followers)

    def look_up(self, context_keys: np.ndarray, next_chars: np.ndarray):
        """Counts (N, M) of each context with each of its M next chars; totals and followers (N,)."""
        pairs = context_keys[:, None] * self.vocab_size + next_chars
        counts = _look_up(self.pair_keys, self.pair_counts, pairs)
        totals = _look_up(self.context_keys, self.context_totals, context_keys)
        followers = _look_up(self.context_keys, self.context_followers, context_keys)
        return counts, totals, followers


def _as_ids(tensor, name: str) -> np.ndarray:
    ids = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must hold integer character ids, got {ids.dtype}")
    return ids.astype(np.int64, copy=False)


def _examples(words: list[str], vocab: Vocab, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`build_examples` for any context length, also 0 (a unigram), which it cannot shape."""
    X, Y = build_examples(words, vocab, max(context, 1))
    return X[:, X.shape[1] - context:], Y


class NGramModel:
    """A character n-gram model with `context` characters of history, fitted by counting.

    Built from training examples X (N, k) and targets Y (N,), as `build_examples` makes them,
    or from words with `from_words`. `method` is "add_alpha" or "kneser_ney"; `smoothing` is
    alpha for the first and the discount D for the second: one number for every order, or
    (Kneser-Ney only) a sequence of k + 1 discounts for the orders 0 (unigram) .. k.
    """

    def __init__(self, X, Y, vocab_size: int, method: str = "kneser_ney",
                 smoothing: float | Sequence[float] | None = None):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        contexts, targets = _as_ids(X, "X"), _as_ids(Y, "Y")
        if contexts.ndim != 2 or targets.shape != (contexts.shape[0],) or contexts.shape[0] == 0:
            raise ValueError(f"need X of shape (N, k) and Y of shape (N,) with N > 0, got "
                             f"{tuple(contexts.shape)} and {tuple(targets.shape)}")
        self.vocab_size = vocab_size
        self.context = contexts.shape[1]
        self.method = method
        if vocab_size ** (self.context + 1) > INT64_MAX:
            raise ValueError(f"{vocab_size}^{self.context + 1} n-grams do not fit the 64-bit keys "
                             f"used here; use a shorter context")
        self._check_ids(contexts, targets)
        self.smoothing = DEFAULT_SMOOTHING[method] if smoothing is None else smoothing
        self.tables = self._count(ngram_keys(np.column_stack([contexts, targets]), vocab_size))

    @classmethod
    def from_words(cls, words: list[str], vocab: Vocab, context: int, method: str = "kneser_ney",
                   smoothing: float | Sequence[float] | None = None) -> "NGramModel":
        X, Y = _examples(words, vocab, context)
        return cls(X, Y, vocab.size, method, smoothing)

    def _check_ids(self, contexts: np.ndarray, next_chars: np.ndarray) -> None:
        if contexts.ndim != 2 or contexts.shape[1] != self.context:
            raise ValueError(f"contexts must have shape (N, {self.context}), got {tuple(contexts.shape)}")
        for ids in (contexts, next_chars):
            if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
                raise ValueError(f"character ids must lie in [0, {self.vocab_size})")

    def _count(self, windows: np.ndarray) -> list[CountTable]:
        """Count tables for the orders this method uses: [k] for add-alpha, [0, .., k] for KN.

        `windows` are the keys of the training (k+1)-grams, one per example. Their last n+1
        characters (the key modulo V^(n+1)) are the (n+1)-gram ending at the same place,
        already padded correctly, so every lower order is read off the same array.
        """
        V, k = self.vocab_size, self.context
        pairs, counts = np.unique(windows, return_counts=True)
        top = CountTable.from_pairs(pairs, counts, V)
        if self.method == "add_alpha":
            return [top]
        tables = [top]
        for order in range(k - 1, -1, -1):
            # The continuation count of an (n+1)-gram is the number of distinct (n+2)-grams
            # that end in it, i.e. of distinct characters seen just before it.
            longer = np.unique(pairs % V ** (order + 2))
            shorter, left_neighbours = np.unique(longer % V ** (order + 1), return_counts=True)
            tables.append(CountTable.from_pairs(shorter, left_neighbours, V))
        return tables[::-1]

    # ------------------------------------------------------------------------------------
    # Probabilities

    def _look_up_all(self, contexts: np.ndarray, next_chars: np.ndarray) -> list[tuple]:
        """For every order's table, the counts it needs for these (context, next chars)."""
        k = self.context
        orders = [k] if self.method == "add_alpha" else range(k + 1)
        return [table.look_up(ngram_keys(contexts[:, k - order:], self.vocab_size), next_chars)
                for order, table in zip(orders, self.tables)]

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

    def probs(self, contexts) -> torch.Tensor:
        """P(next char | context) for each row of `contexts` (N, k): a float tensor (N, V)."""
        contexts = _as_ids(contexts, "contexts")
        self._check_ids(contexts, contexts[:0])
        every_char = np.broadcast_to(np.arange(self.vocab_size), (contexts.shape[0], self.vocab_size))
        probs = self._combine(self._look_up_all(contexts, every_char), self.smoothing)
        return torch.from_numpy(probs).float()

    def _target_probs(self, X, Y) -> np.ndarray:
        contexts, targets = _as_ids(X, "X"), _as_ids(Y, "Y")
        self._check_ids(contexts, targets)
        # Only the target's probability is needed, and interpolation is per next char, so the
        # look-up is done for one column instead of V.
        found = self._look_up_all(contexts, targets[:, None])
        return self._combine(found, self.smoothing)[:, 0]

    def nll(self, X, Y) -> float:
        """Mean negative log likelihood (nats) of targets Y (N,) after contexts X (N, k)."""
        return float(-np.log(self._target_probs(X, Y)).mean())

    def tune(self, X_dev, Y_dev) -> float:
        """Set `smoothing` to the one number that minimises the dev NLL, and return it.

        alpha is searched in ALPHA_RANGE, the discount (the same for every order) in
        DISCOUNT_RANGE, both on a log scale: a coarse grid, then golden-section search around
        its best point.
        """
        contexts, targets = _as_ids(X_dev, "X_dev"), _as_ids(Y_dev, "Y_dev")
        self._check_ids(contexts, targets)
        found = self._look_up_all(contexts, targets[:, None])  # counts do not depend on the parameter

        def dev_loss(parameter: float) -> float:
            return float(-np.log(self._combine(found, parameter)).mean())

        low, high = ALPHA_RANGE if self.method == "add_alpha" else DISCOUNT_RANGE
        self.smoothing = minimise_on_log_scale(dev_loss, low, high)
        return self.smoothing

    def __repr__(self) -> str:
        return (f"NGramModel(context={self.context}, vocab_size={self.vocab_size}, "
                f"method={self.method!r}, smoothing={self.smoothing!r})")


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
    """An n-gram model counted on the train split, its parameter tuned on the dev split."""
    model = NGramModel(*corpus.examples("train", context), corpus.vocab.size, method)
    model.tune(*corpus.examples("dev", context))
    return model


def unseen_context_share(train_contexts, dev_contexts, vocab_size: int) -> float:
    """The share of dev examples whose context never occurs as a context in training."""
    train_keys = ngram_keys(_as_ids(train_contexts, "train_contexts"), vocab_size)
    dev_keys = ngram_keys(_as_ids(dev_contexts, "dev_contexts"), vocab_size)
    return float(1.0 - np.isin(dev_keys, train_keys).mean())


def ngram_table(corpus: Corpus, max_context: int = 6) -> list[dict]:
    """For k = 1..max_context: table size, unseen dev contexts, tuned add-alpha and KN dev loss.

    Each row: {"context": k, "table_entries": V^(k+1) (the cells a dense table would need),
    "unseen_dev_contexts": share of dev examples with a context unseen in training,
    "add_alpha": {"alpha", "dev_loss"}, "kneser_ney": {"discount", "dev_loss"}}; the
    Kneser-Ney discount is one number shared by all orders. Losses are mean NLL in nats.
    """
    if max_context < 1:
        raise ValueError(f"max_context must be at least 1, got {max_context}")
    V = corpus.vocab.size
    # The examples for context k are the last k columns of those for max_context: the padding
    # is the same boundary token, so building them once is enough.
    X_train, Y_train = corpus.examples("train", max_context)
    X_dev, Y_dev = corpus.examples("dev", max_context)
    rows = []
    for k in range(1, max_context + 1):
        train_k, dev_k = X_train[:, max_context - k:], X_dev[:, max_context - k:]
        row: dict = {"context": k, "table_entries": V ** (k + 1),
                     "unseen_dev_contexts": unseen_context_share(train_k, dev_k, V)}
        for method, parameter in (("add_alpha", "alpha"), ("kneser_ney", "discount")):
            model = NGramModel(train_k, Y_train, V, method)
            row[method] = {parameter: model.tune(dev_k, Y_dev), "dev_loss": model.nll(dev_k, Y_dev)}
        rows.append(row)
    return rows


def add_one_bigram_nll(words: list[str], vocab: Vocab | None = None) -> float:
    """makemore part 1's bigram figure: add-one bigram counts over all words, scored on them.

    Counts every bigram of every word (including the '.'-start and end bigrams) with +1
    smoothing, and returns the mean NLL over those same bigrams: 2.454 on names.txt.
    """
    vocab = vocab or Vocab.from_words(words)
    X, Y = build_examples(words, vocab, 1)
    return NGramModel(X, Y, vocab.size, "add_alpha", 1.0).nll(X, Y)


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

    The mixture's NLL is convex in the weight, so a fine grid finds its minimum to 1e-3.
    """
    a, b = _target_log_probs(mlp, words, vocab), _target_log_probs(ngram, words, vocab)
    weights = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    with torch.no_grad():
        log_w = torch.log(weights)[:, None]
        log_1mw = torch.log1p(-weights)[:, None]
        nll = -torch.logaddexp(a[None, :] + log_w, b[None, :] + log_1mw).mean(dim=1)
    best = int(torch.argmin(nll))
    return {"weight": float(weights[best]), "mlp_dev_loss": float(-a.mean()),
            "ngram_dev_loss": float(-b.mean()), "mix_dev_loss": float(nll[best])}


def fit_mixture(mlp, train_words: list[str], dev_words: list[str], vocab: Vocab, context: int):
    """Count a Kneser-Ney model on `train_words`, tune its discount and then the mixture weight
    on `dev_words`; returns (mixture predictor, {weight, discount, context, *_dev_loss})."""
    ngram = NGramModel.from_words(train_words, vocab, context, "kneser_ney")
    ngram.tune(*_examples(dev_words, vocab, context))
    ngram_pred = ngram_predictor(ngram)
    result = {"ngram_context": context, "discount": ngram.smoothing,
              **tune_mixture_weight(mlp, ngram_pred, dev_words, vocab)}
    return mixture_predictor(mlp, ngram_pred, result["weight"]), result


def mixture_from_settings(mlp, train_words: list[str], vocab: Vocab, settings: dict):
    """Rebuild a fitted mixture from the settings fit_mixture returned (no tuning again)."""
    ngram = NGramModel.from_words(train_words, vocab, settings["ngram_context"], "kneser_ney",
                                  settings["discount"])
    return mixture_predictor(mlp, ngram_predictor(ngram), settings["weight"])
