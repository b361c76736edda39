"""Labels: one model of many lists (`--labels`), sampled by label, scored given a label, and
asked which list a name belongs to.

A labelled file's lines are LABEL<TAB>ITEM (data.read_labelled); the vocabulary knows the labels
(vocab.Vocab) and every context of a labelled list carries its label in column 0
(data.Examples), which each model reads as a learned embedding (models/base.py). This module is
what follows from that for predictors:

- `given_label` makes a labelled predictor a plain one of a single label's items, so that
  sampling, scoring and serving need not know about labels at all;
- `LabelledNGram` is the count baseline of a labelled list: each label's Kneser-Ney model
  interpolated with the all-labels one, a weight per label (a small list borrows the others'
  statistics, a large one keeps its own);
- `classify` is Bayes' rule: P(label | word) is proportional to P(word | label) P(label), with
  P(word | label) the product of the model's next-character probabilities, end included, and
  P(label) the label's share of the training split.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch

from .conditions import Constraints
from .data import Corpus, Examples
from .errors import UserError
from .baselines import COUNT_MODEL, fit_on_dev as fit_unlabelled
from .ngram import NGramModel
from .predict import Predictor, last_columns, make_predictor, target_log_probs
from .vocab import LABEL_SEP, Vocab, items_of, labels_of


def _with_label(ctx: torch.Tensor, label: int) -> torch.Tensor:
    return torch.cat([torch.full((ctx.shape[0], 1), label, dtype=ctx.dtype, device=ctx.device), ctx], dim=1)


def given_label(predictor: Predictor, label: int) -> Predictor:
    """A labelled predictor as a predictor of `label`'s items: it reads contexts of characters
    alone and puts the label in front of them."""
    if not getattr(predictor, "labels", 0):
        raise ValueError("given_label needs a labelled predictor")
    if not 0 <= label < predictor.labels:
        raise ValueError(f"label id {label} is not in 0..{predictor.labels - 1}")

    def predict(ctx: torch.Tensor) -> torch.Tensor:
        return predictor(_with_label(ctx, label))

    if hasattr(predictor, "logits"):
        predict.logits = lambda ctx: predictor.logits(_with_label(ctx, label))
    if hasattr(predictor, "target_log_probs"):
        predict.target_log_probs = lambda ctx, y: predictor.target_log_probs(_with_label(ctx, label), y)
    return make_predictor(predict, predictor.context_size, predictor.device, predictor.vocab_size)


def label_prior(vocab: Vocab, train_words: list[str]) -> np.ndarray:
    """Each label's share of the training split (L,): the prior of Bayes' rule, and how often
    `sample` without --label draws each label."""
    counts = np.bincount(vocab.label_ids(train_words), minlength=len(vocab.labels)).astype(np.float64)
    return counts / counts.sum()


def one_label(predictor: Predictor, vocab: Vocab, splits: dict[str, list[str]] | None, label: str):
    """(predictor, vocabulary, splits) of one label's items, for sampling or scoring them as a
    run of that list alone would be: the label put in front of every context, the items of
    that label in each split (their novelty tags)."""
    label_id = vocab.label_id(label)
    if splits is not None:
        splits = {s: [item for lab, item in zip(labels_of(words), items_of(words)) if lab == label]
                  for s, words in splits.items()}
    return given_label(predictor, label_id), vocab.items, splits


def label_constraints(constraints: Constraints | None, vocab: Vocab, label: str) -> Constraints | None:
    """The conditions on one label's items. An excluded line LABEL<TAB>ITEM (what `sample` writes
    for a labelled run) leaves ITEM out under LABEL only; a bare item is left out under every
    label. A line of a label the run does not have is one error: it would exclude nothing."""
    if constraints is None or not any(LABEL_SEP in w for w in constraints.exclude):
        return constraints
    exclude = set()
    for line in constraints.exclude:
        if LABEL_SEP not in line:
            exclude.add(line)
            continue
        own, _, item = (part.strip() for part in line.partition(LABEL_SEP))
        if not own or not item or LABEL_SEP in item:  # as a training file's line would be refused
            raise UserError(f"the words to exclude have a line {line!r} that is not LABEL<TAB>ITEM (one tab, "
                            f"a label and an item)")
        if own not in vocab.labels:
            raise UserError(f"the words to exclude have a line of label {own!r}, which the run does not have "
                            f"(its labels: {', '.join(vocab.labels)})")
        if own == label:
            exclude.add(item)
    return replace(constraints, exclude=frozenset(exclude))


def sample_label_ids(prior: np.ndarray, seed: int, start: int, count: int) -> np.ndarray:
    """The labels of samples start .. start + count - 1 of a seed's stream without a label asked
    for (sample_labels, serve): each drawn by the labels' shares `prior` from number i of the
    seed's stream, so sample i's label depends on the seed and i alone."""
    from .seeds import stream_key, uniforms

    cdf = np.cumsum(prior)
    below_total = np.nextafter(cdf[-1], 0.0)  # as sampling._invert: a label of share 0 is never drawn
    u = uniforms(stream_key(seed), np.arange(start, start + count, dtype=np.uint64), 0).astype(np.float64)
    return np.searchsorted(cdf, np.minimum(u * cdf[-1], below_total), side="right")


def label_seed(seed: int, label_id: int) -> int:
    """The seed of a label's own stream of items, within a stream without a label asked for."""
    from .seeds import MASK64

    return int(np.random.SeedSequence([int(seed) & MASK64, label_id]).generate_state(1)[0])


def sample_labels(predictor: Predictor, vocab: Vocab, splits: dict[str, list[str]], n: int, seed: int | None = None,
                  tagged: bool = False, constraints: Constraints | None = None, **kwargs):
    """`n` samples of a labelled run without a label asked for, streamed: yields (lines
    LABEL<TAB>ITEM, their novelty tags or None) a chunk at a time, as sampling.sample_chunks does.

    Sample i's label is drawn by the labels' shares of the training split from number i of the
    seed's stream, and its item is the next of that label's own stream (drawn as `sample --label`
    draws them, with a seed derived from `seed` and the label). So sample i depends on the seed
    and i alone, and a smaller n gives the first lines of a larger one, as `--seed` promises
    (drawing each label's count first and shuffling the lines together gave other orders).
    A label whose stream gives up (`unique`: nothing new left) gives no more lines."""
    from .sampling import FIRST_CHUNK, MAX_CHUNK, _check_n, sample_chunks
    from .seeds import stream_key

    _check_n(n)
    seed = secrets.randbits(64) if seed is None else seed
    stream_key(seed)  # checks the seed
    prior = label_prior(vocab, splits["train"])
    with_tags = tagged or kwargs.get("new_only")

    def items(label_id: int):
        label = vocab.labels[label_id]
        p, items_vocab, label_splits = one_label(predictor, vocab, splits, label)
        for words, tags in sample_chunks(p, items_vocab, n, seed=label_seed(seed, label_id),
                                         splits=label_splits if with_tags else None,
                                         constraints=label_constraints(constraints, vocab, label), **kwargs):
            yield from zip(words, tags or [None] * len(words))

    streams: dict[int, Iterator] = {}
    done, size = 0, FIRST_CHUNK
    while done < n:
        count = min(size, n - done)
        lines, tags = [], []
        for label_id in sample_label_ids(prior, seed, done, count).tolist():
            if label_id not in streams:
                streams[label_id] = items(label_id)
            item, tag = next(streams[label_id], (None, None))
            if item is not None:
                lines.append(f"{vocab.labels[label_id]}{LABEL_SEP}{item}")
                tags.append(tag)
        done, size = done + count, min(2 * size, MAX_CHUNK)
        yield lines, (tags if with_tags else None)


# --------------------------------------------------------------------------------------------
# The count baseline of a labelled list


def _positions_of(examples: Examples, words: np.ndarray) -> np.ndarray:
    """Which positions of `examples` belong to these words (a boolean mask over the words)."""
    lengths = np.diff(np.append(examples.starts, len(examples)))
    return np.repeat(words, lengths)


def _best_weight(a: torch.Tensor, b: torch.Tensor) -> float:
    """The weight w in [0, 1] (to 1e-3) that minimises -mean log(w e^a + (1-w) e^b): convex in w."""
    weights = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)[:, None]
    best, best_nll = 1.0, math.inf
    for i in range(0, 1001, 101):
        w = weights[i:i + 101]
        nll = -torch.logaddexp(a[None] + torch.log(w), b[None] + torch.log1p(-w)).mean(dim=1)
        j = int(torch.argmin(nll))
        if float(nll[j]) < best_nll:
            best, best_nll = float(w[j]), float(nll[j])
    return best


class LabelledNGram:
    """P(c | h, l) = w_l P_l(c | h) + (1 - w_l) P_all(c | h): Kneser-Ney counted on label l's
    training items (P_l) and on every label's (P_all), each discount and then each weight w_l
    tuned on the label's dev items (as NGramModel.tune and the mixture's weight are). Contexts
    are a labelled list's: the label in column 0, then `context` characters."""

    def __init__(self, whole: NGramModel, per_label: list[NGramModel], weights: list[float]):
        self.whole, self.per_label, self.weights = whole, per_label, list(weights)
        self.method = whole.method
        self.context, self.vocab_size, self.labels = whole.context, whole.vocab_size, len(per_label)

    @classmethod
    def fit(cls, train: Examples, dev: Examples | None, context: int, vocab_size: int, labels: int,
            smoothing: dict | None = None, method: str = COUNT_MODEL) -> "LabelledNGram":
        """Count on `train`, tune on `dev`; or, with `smoothing` (a fitted model's, see
        `smoothing`), count and take those discounts and weights as they are. `method`: either
        Kneser-Ney (ngram.py)."""
        if train.labels is None:
            raise ValueError("a labelled count model needs labelled examples")
        whole = NGramModel.from_examples(train, context, vocab_size, method,
                                         None if smoothing is None else smoothing["all"])
        if smoothing is None:
            whole.tune(dev)
        per_label, weights = [], []
        for label in range(labels):
            mine = train.select(train.labels == label)
            model = NGramModel.from_examples(mine, context, vocab_size, method,
                                             None if smoothing is None else smoothing["labels"][label])
            if smoothing is not None:
                weights.append(float(smoothing["weights"][label]))
            else:
                held = dev.select(dev.labels == label)
                model.tune(held)
                weights.append(_best_weight(model.target_log_probs(held), whole.target_log_probs(held)))
            per_label.append(model)
        return cls(whole, per_label, weights)

    @property
    def smoothing(self) -> dict:
        """Everything tuned, to rebuild the model from the counts (mix.json keeps it)."""
        return {"all": self.whole.smoothing, "labels": [m.smoothing for m in self.per_label], "weights": self.weights}

    def target_log_probs(self, examples: Examples) -> torch.Tensor:
        """log P(target | context, label) of each example of a labelled split (N,), float64."""
        out = torch.empty(len(examples), dtype=torch.float64)
        for label, (model, w) in enumerate(zip(self.per_label, self.weights)):
            words = examples.labels == label
            if not words.any():
                continue
            mine = examples.select(words)
            own, whole = model.target_log_probs(mine), self.whole.target_log_probs(mine)
            mixed = torch.logaddexp(own + math.log(w) if w > 0 else own - math.inf,
                                    whole + math.log1p(-w) if w < 1 else whole - math.inf)
            out[torch.from_numpy(_positions_of(examples, words))] = mixed
        return out

    def nll(self, examples: Examples) -> float:
        return -self.target_log_probs(examples).mean().item()

    def probs(self, contexts) -> torch.Tensor:
        """P(next char | context, label) for each row of labelled contexts (N, 1 + context)."""
        contexts = torch.as_tensor(contexts)
        labels, chars = contexts[:, 0], contexts[:, 1:]
        out = self.whole.probs(chars)
        for label in torch.unique(labels).tolist():
            rows = labels == label
            w = self.weights[label]
            out[rows] = w * self.per_label[label].probs(chars[rows]) + (1 - w) * out[rows]
        return out

    def __repr__(self) -> str:
        return f"LabelledNGram(context={self.context}, labels={self.labels}, vocab_size={self.vocab_size})"


def fit_on_dev(corpus: Corpus, context: int) -> NGramModel | LabelledNGram:
    """The Kneser-Ney count model of a corpus, counted on train and tuned on dev: per label and
    interpolated for a labelled list."""
    if not corpus.labels:
        return fit_unlabelled(corpus, context)
    return LabelledNGram.fit(corpus.encoded("train"), corpus.encoded("dev"), context, corpus.vocab.size,
                             len(corpus.labels))


def count_model(train_words: list[str], vocab: Vocab, context: int, smoothing=None,
                dev_words: list[str] | None = None, method: str = COUNT_MODEL) -> NGramModel | LabelledNGram:
    """A Kneser-Ney count model of these training words (`method`: ngram.COUNT_MODEL, or the one
    a run's mix.json records): tuned on `dev_words`, or with the `smoothing` of one fitted
    before (mix.json's)."""
    train = Examples.from_words(train_words, vocab)
    dev = Examples.from_words(dev_words, vocab) if dev_words is not None else None
    if vocab.labels:
        return LabelledNGram.fit(train, dev, context, vocab.size, len(vocab.labels), smoothing, method)
    model = NGramModel.from_examples(train, context, vocab.size, method, smoothing)
    if smoothing is None:
        model.tune(dev)
    return model


# --------------------------------------------------------------------------------------------
# Which list a word belongs to


def word_log_likelihoods(predictor: Predictor, vocab: Vocab, items: list[str]) -> np.ndarray:
    """log P(item | label) of each item under each label (N, L): the sum of the predictor's
    log-probabilities of the item's characters and its end, the label put in front."""
    examples = Examples.from_words(items, vocab.items)
    lengths = np.diff(np.append(examples.starts, len(examples)))
    word_of = np.repeat(np.arange(len(items)), lengths)
    out = np.empty((len(items), len(vocab.labels)))
    for label in range(len(vocab.labels)):
        logp = target_log_probs(predictor, examples.with_label(label)).numpy()
        out[:, label] = np.bincount(word_of, weights=logp, minlength=len(items))
    return out


def check_items(vocab: Vocab, items: list[str]) -> list[str]:
    """Items to score or classify, normalised as the data was read; one error line for an empty
    one or one with a character the model never saw."""
    items = [vocab.normalized(w) for w in items]
    for w in items:
        if not w:
            raise UserError("cannot score an empty word")
        if vocab.boundary in w:
            raise UserError(f"{w!r} contains the boundary token {vocab.boundary!r}")
        vocab.items.encode(w)
    return items


def posterior(predictor: Predictor, vocab: Vocab, prior: np.ndarray, items: list[str]) -> np.ndarray:
    """P(label | item) by Bayes' rule (N, L): the likelihoods under each label times the prior."""
    joint = word_log_likelihoods(predictor, vocab, items) + np.log(np.maximum(prior, 1e-300))
    joint -= joint.max(axis=1, keepdims=True)
    p = np.exp(joint)
    return p / p.sum(axis=1, keepdims=True)


def classify(predictor: Predictor, vocab: Vocab, prior: np.ndarray, words: list[str]) -> list[dict]:
    """[{"word", "labels": [{"label", "prob"}, ...] most likely first}, ...] in the order given."""
    items = check_items(vocab, words)
    post = posterior(predictor, vocab, prior, items)
    out = []
    for word, row in zip(items, post):
        order = np.argsort(-row, kind="stable")
        out.append({"word": word, "labels": [{"label": vocab.labels[i], "prob": float(row[i])} for i in order]})
    return out


def accuracy(predictor: Predictor, vocab: Vocab, prior: np.ndarray, lines: list[str]) -> float:
    """The share of labelled lines whose most probable label is their own."""
    if not lines:
        return float("nan")
    post = posterior(predictor, vocab, prior, vocab.item_texts(lines))
    return float((post.argmax(axis=1) == vocab.label_ids(lines)).mean())


__all__ = ["given_label", "label_prior", "one_label", "label_constraints", "sample_labels", "LabelledNGram",
           "fit_on_dev", "count_model", "word_log_likelihoods", "posterior", "classify", "accuracy", "check_items",
           "last_columns"]
