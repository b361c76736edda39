"""Count baselines fitted to a corpus (ngram.py's models): tuned on the dev split, the context
length that scores best there, what counting costs on this data, and the table of `makemore
ngram`. COUNT_MODEL is the count model that runs mix with and teach with (mixture.py, teacher.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from .counts import NGramCounts, distinct_examples, example_columns
from .data import Corpus, Examples, Vocab
from .ngram import METHODS, NGramModel

# The count model that runs mix with and teach with, and that fit_on_dev and fit_best_order fit
# by default: one discount's Kneser-Ney. Modified Kneser-Ney is 0.012 nats better alone on names
# at 5 characters, but as the teacher of names' 60-s budget runs it left them 0.0025 worse, and
# mixed with the presets' runs it moved them by -0.003 to +0.0005 (docs/baselines.md): the
# recipes were tuned with this one. A run's mix.json names its count model either way.
COUNT_MODEL = "kneser_ney"


def fit_on_dev(corpus: Corpus, context: int, method: str = COUNT_MODEL) -> NGramModel:
    """An n-gram model counted on the train split, its parameter tuned on the dev split."""
    model = NGramModel.from_examples(corpus.encoded("train"), context, corpus.vocab.size, method)
    model.tune(corpus.encoded("dev"))
    return model


def fit_best_order(corpus: Corpus, orders: Sequence[int], method: str = COUNT_MODEL) -> NGramModel:
    """Of the n-gram models with these context lengths, the one with the lowest dev loss, each
    with its parameter tuned on dev: counted once, to the longest, and the orders tried from the
    shortest up while the dev loss still falls (names: 5 characters; a big list of words: more)."""
    orders = sorted(orders)
    counts = NGramCounts.from_examples(corpus.encoded("train"), corpus.vocab.size, orders[-1])
    dev = corpus.encoded("dev")
    best, best_loss = None, math.inf
    for k in orders:
        model = NGramModel(counts, k, method)
        model.tune(dev)
        loss = model.nll(dev)
        if loss >= best_loss:
            break
        best, best_loss = model, loss
    return best


# The counting cost is measured on a sample of at least this many training examples (all of them
# when there are fewer), then scaled to the whole split.
COST_SAMPLE = 50_000


def estimate_fit_seconds(corpus: Corpus, context: int, method: str = COUNT_MODEL) -> float:
    """What fit_on_dev would take on this corpus, measured: a model is counted and tuned on a
    prefix of the training split (COST_SAMPLE examples, or a fiftieth of the split if that is
    more) and dev in the same proportion, timed, and scaled to the whole split by n log n (the
    counting sorts its keys). The cost grows with the characters of the split, not with the
    vocabulary: every key is an int64 whatever V is."""
    train, dev = corpus.encoded("train"), corpus.encoded("dev")
    n = len(train)
    want = min(n, max(COST_SAMPLE, n // 50))
    words = int(np.searchsorted(train.starts, want, side="right"))  # whole words up to ~want examples
    sample_train = Examples(train.ids[:train.starts[words]] if words < train.words else train.ids,
                            train.starts[:words] if words < train.words else train.starts, vocab_size=train.vocab_size)
    share = len(sample_train) / max(1, n)
    dev_words = max(1, int(round(dev.words * share)))
    sample_dev = Examples(dev.ids[:dev.starts[dev_words]] if dev_words < dev.words else dev.ids,
                          dev.starts[:dev_words], vocab_size=dev.vocab_size)
    start = time.perf_counter()
    model = NGramModel.from_examples(sample_train, context, corpus.vocab.size, method)
    model.tune(sample_dev)
    seconds = time.perf_counter() - start
    m = len(sample_train)
    return seconds * (n * math.log(max(n, 2))) / (m * math.log(max(m, 2)))


# The name of each method's tuned parameter in ngram_table's rows.
TABLE_PARAMETERS = {"add_alpha": "alpha", "kneser_ney": "discount", "modified_kneser_ney": "discounts"}


def ngram_table(corpus: Corpus, max_context: int = 6, test: bool = False,
                counts: NGramCounts | None = None) -> list[dict]:
    """For k = 1..max_context: table size, unseen dev contexts, the dev loss of each method tuned.

    Each row: {"context": k, "table_entries": V^(k+1) (the cells a dense table would need, a
    Python int), "unseen_dev_contexts": share of dev examples with a context unseen in
    training, "add_alpha": {"alpha", "dev_loss"}, "kneser_ney": {"discount", "dev_loss"},
    "modified_kneser_ney": {"discounts", "dev_loss"}}; the Kneser-Ney discount is one number
    shared by all orders, modified Kneser-Ney's three (D1, D2, D3+) too. Losses are mean NLL in nats. With
    `test`, each model also gets the "test_loss" of its dev-tuned setting. `counts`: the
    training split's, counted to max_context already (`makemore ngram --learned` reads them too).
    """
    if max_context < 1:
        raise ValueError(f"max_context must be at least 1, got {max_context}")
    V = corpus.vocab.size
    # Counted once to max_context: the contexts of length k are the same for every model, and
    # so are the counts and look-ups of each length.
    if counts is None:
        counts = NGramCounts.from_examples(corpus.encoded("train"), V, max_context)
    elif counts.max_context < max_context:
        raise ValueError(f"counts of up to {counts.max_context} characters, asked for {max_context}")
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
        for method in METHODS:
            model = NGramModel(counts, k, method)
            found = model._look_up(context_ids, targets[:, None], cache)
            tuned = model._tune(found, weights)
            row[method] = {TABLE_PARAMETERS[method]: list(tuned) if np.ndim(tuned) else tuned,
                           "dev_loss": model._nll(found, weights)}
        if test:
            test_targets = test_examples.ids.astype(np.int64)
            context_ids, targets, weights = distinct_examples(counts, test_ids[:k + 1], test_targets)
            test_cache: dict = {}
            for method in METHODS:
                model = NGramModel(counts, k, method, row[method][TABLE_PARAMETERS[method]])
                found = model._look_up(context_ids, targets[:, None], test_cache)
                row[method]["test_loss"] = model._nll(found, weights)
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
