"""A labelled run served (`makemore train --labels`): what the server keeps of its labels, and
how its samples and scores follow from the package's labels.py.

- with a label, a sample or score request is one of that label's items alone: the predictor,
  vocabulary and splits of labels.one_label, built once per run;
- a sample request without one draws the labels by their share of the training split, as
  labels.sample_labels (and so `makemore sample --seed` without --label) does, each label's
  samples drawn with the other requests of that label in the batch;
- a score request is given the word's posterior over the labels (labels.classify), and the
  word is scored under the label asked for, or else under its most probable one.

Nothing here knows how runs are stored or served (models.py does): it is handed a predictor,
a vocabulary and the splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class OneLabel:
    """One label's items, as a run of that list alone would be served."""

    predictor: object                 # contexts of characters alone -> log-probs (the label put in front)
    vocab: object                     # the run's vocabulary for bare items
    splits: dict[str, frozenset]      # the label's items of each split, for the novelty tags


@dataclass(frozen=True)
class Labels:
    """A labelled run's labels: their names (sorted), training shares and one-label views."""

    predictor: object                 # the labelled predictor: the label in column 0 of each context
    vocab: object                     # the labelled vocabulary (vocab.labels)
    prior: np.ndarray                 # each label's share of the training split (labels.label_prior)
    views: dict[str, OneLabel]        # by label name

    @classmethod
    def of_run(cls, predictor, vocab, splits: dict[str, list[str]]) -> "Labels":
        """Built at load: the lines of every split cut by label in one pass (labels.one_label's
        own filtering passes over every line once per label), the predictor of each label
        labels.one_label's."""
        from ..labels import label_prior, one_label
        from ..vocab import LABEL_SEP

        grouped: dict[str, dict[str, set]] = {name: {s: set() for s in splits} for name in vocab.labels}
        for s, lines in splits.items():
            for line in lines:
                label, _, item = line.partition(LABEL_SEP)
                grouped[label][s].add(item)
        views = {}
        for name in vocab.labels:
            p, items_vocab, _ = one_label(predictor, vocab, None, name)
            views[name] = OneLabel(p, items_vocab, {s: frozenset(items) for s, items in grouped[name].items()})
        return cls(predictor, vocab, label_prior(vocab, list(splits["train"])), views)

    @property
    def names(self) -> tuple[str, ...]:
        return self.vocab.labels

    def shares(self) -> list[dict]:
        """[{"label", "share"}, ...] in the vocabulary's order: what /api/runs shows."""
        return [{"label": name, "share": float(p)} for name, p in zip(self.names, self.prior)]

    def check(self, label: str) -> str:
        """`label`, or the one-line error of an unknown one (labels.one_label's)."""
        if label not in self.views:
            shown = label if len(label) <= 100 else label[:100] + "..."
            raise UserError(f"unknown label {shown!r}; the labels are: {', '.join(self.names)}")
        return label

    # -- sampling -----------------------------------------------------------------------------

    def draw_any(self, jobs: list[tuple[int, int]], draw: Callable[[str, list], list]) -> list:
        """Requests without a label, each (n, seed), drawn together: sample i of a request takes
        the label labels.sample_label_ids gives it and the next item of that label's stream
        (labels.label_seed), as labels.sample_labels draws them, so a seed gives `makemore sample
        --seed` (without --label)'s samples. `draw(label, [(count, seed), ...])` draws one label's
        part of every request at once (a list of tagged samples, or the UserError that ended it,
        per part). A request's result is its samples, each with its label, or the first error of
        its parts."""
        from ..labels import label_seed, sample_label_ids

        plans = []
        wanted: dict[int, list[tuple[int, int, int]]] = {}  # label id -> [(request, count, seed)]
        for j, (n, seed) in enumerate(jobs):
            ids = sample_label_ids(self.prior, seed, 0, n)
            plans.append(ids)
            for label_id, count in enumerate(np.bincount(ids, minlength=len(self.names)).tolist()):
                if count:
                    wanted.setdefault(label_id, []).append((j, count, label_seed(seed, label_id)))
        parts: list[dict[int, list | Exception]] = [{} for _ in jobs]
        for label_id in sorted(wanted):
            name = self.names[label_id]
            results = draw(name, [(count, own) for _, count, own in wanted[label_id]])
            for (j, _, _), result in zip(wanted[label_id], results):
                if isinstance(result, UserError):
                    result = UserError(f"label {name!r}: {result}")
                parts[j][label_id] = result
        out = []
        for ids, got in zip(plans, parts):
            failed = next((r for r in got.values() if isinstance(r, Exception)), None)
            if failed is not None:
                out.append(failed)
                continue
            items = {label_id: iter(samples) for label_id, samples in got.items()}
            # in the order of their labels' draws; a label whose stream gave up gives no more
            out.append([s for s in (next(items[label_id], None) for label_id in ids.tolist()) if s is not None])
        return out

    # -- scoring ------------------------------------------------------------------------------

    def score(self, words: list[str], top: int, label: str | None) -> list[dict]:
        """sampling.score of each word as an item of `label`, or else of its most probable label,
        with "label" (the one it is scored under) and "labels" (its posterior,
        labels.classify's: [{"label", "prob"}, ...] most likely first)."""
        from ..labels import classify
        from ..sampling import score

        posterior = classify(self.predictor, self.vocab, self.prior, words)
        chosen = [label or p["labels"][0]["label"] for p in posterior]
        out: list[dict | None] = [None] * len(words)
        for name in dict.fromkeys(chosen):
            view = self.views[self.check(name)]
            mine = [i for i, c in enumerate(chosen) if c == name]
            for i, result in zip(mine, score(view.predictor, view.vocab, [words[i] for i in mine], top=top)):
                out[i] = {**result, "label": name, "labels": posterior[i]["labels"]}
        return out
