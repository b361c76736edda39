"""Conditions on samples (`makemore sample --suffix --contains --min-len --max-len --exclude`):
what they are (Constraints: checked, described, tested on words) and which samples of a stream
are kept under them (Stream). The samples meeting them are the model's distribution
conditioned on them, by rejection on the seed's own stream; sampling.py draws the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .data import Vocab
from .vocab import LABEL_SEP
from .errors import UserError

# A request is given up as hopeless when, after HOPELESS_DRAWS draws of its stream or more,
# fewer than HOPELESS_RATE of them met its conditions: an error that states the share. (2^18
# draws of the lecture's model take ~0.25 s on one core; at the floor, 20 samples need
# ~200,000 draws.)
HOPELESS_DRAWS = 1 << 18
HOPELESS_RATE = 1e-4
# `unique` gives up once the words seen exactly once number fewer than a tenth of the words still
# wanted, or of those found (after UNIQUE_MIN_MET samples met the conditions): by Good and Turing,
# the share of new words among further samples is about once / met, so ten times the samples drawn
# so far would find fewer than that. A run of repeats alone ends too late where rare new words
# keep breaking it (--unique -n 3000 --max-len 2 on names, of 702 possible words, drew for minutes).
UNIQUE_MIN_MET = 10_000
UNIQUE_MORE = 10


@dataclass(frozen=True)
class Constraints:
    """Conditions every sample must meet besides starting with the prefix, each on the whole
    word, prefix included: it ends with `suffix`, contains `contains`, is `min_len` to
    `max_len` characters long (max_len None: no maximum) and is none of the words in `exclude`.

    The samples are then the model's distribution *conditioned* on them: a word w that meets
    them is drawn with probability P(w) / P(the conditions hold), every other with 0. That is
    what rejection gives, and rejection is how it is done: a request's samples are the samples
    of its seed's (unconstrained) stream that meet the conditions, in order. A length is
    checked while decoding: a sample is dropped as soon as it grows past max_len, so the rest
    of it is never drawn. Masking the end token below min_len and forcing it at max_len would
    cost no draws but give another distribution: masking multiplies each word's probability by
    1 / prod_{t < min_len} (1 - P(end | its first t characters)), which favours words whose
    beginnings usually end early, and forcing the end cuts long words short instead of leaving
    them out (tests/test_sample.py shows both failing the exact distribution, which this passes).
    """

    suffix: str = ""
    contains: str = ""
    min_len: int = 1  # no empty words: no list holds one (0: the model's own distribution, with them)
    max_len: int | None = None
    exclude: frozenset = frozenset()

    def __post_init__(self):
        for what, text in (("suffix", self.suffix), ("text to contain", self.contains)):
            if not isinstance(text, str):
                raise UserError(f"the {what} must be a string, got {text!r}")
        if isinstance(self.exclude, str):  # frozenset("emma") would exclude 'e', 'm' and 'a'
            raise UserError(f"exclude is a collection of words, got the string {self.exclude!r}: give "
                            f"[{self.exclude!r}]")
        if not isinstance(self.exclude, frozenset):
            try:
                object.__setattr__(self, "exclude", frozenset(self.exclude))
            except TypeError:
                raise UserError(f"exclude is a collection of words, got {self.exclude!r}") from None
        if not all(isinstance(w, str) for w in self.exclude):
            raise UserError("exclude is a collection of words: every one a string")

    def read_as(self, vocab: Vocab) -> "Constraints":
        """The conditions as the vocabulary's data was read (NFC, or as given): a suffix typed
        decomposed must match the composed samples."""
        return replace(self, suffix=vocab.normalized(self.suffix), contains=vocab.normalized(self.contains),
                       exclude=frozenset(vocab.normalized(w) for w in self.exclude))

    @property
    def active(self) -> bool:
        return bool(self.suffix or self.contains or self.min_len or self.max_len is not None or self.exclude)

    def check(self, vocab: Vocab, prefix: str = "", cap: int = 64) -> None:
        """A UserError for conditions that are malformed or that no sample can meet (without a
        maximum length, a sample is the prefix and at most `cap` more characters)."""
        for what, value in (("minimum length", self.min_len), ("maximum length", self.max_len)):
            if value is None and what == "maximum length":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise UserError(f"the {what} must be a whole number, 0 or more, got {value!r}")
        lo, hi, P = self.min_len, self.max_len, vocab.length(prefix)  # lengths in the vocabulary's symbols
        if hi is not None and lo > hi:
            default = " (the default: no empty words; a minimum of 0 allows them)" if lo == 1 else ""
            raise UserError(f"the minimum length {lo}{default} is above the maximum length {hi}")
        if hi is not None and P > hi:
            raise UserError(f"the prefix {prefix!r} is {P} characters long, more than the maximum length {hi}")
        if hi is None and lo > P + cap:  # a maximum length replaces the cap (sampling._limit)
            raise UserError(f"no sample is longer than {P + cap} characters (the prefix and at most {cap} more), "
                            f"so none reaches the minimum length {lo}")
        for what, text in (("suffix", self.suffix), ("text to contain", self.contains)):
            if not isinstance(text, str):
                raise UserError(f"the {what} must be a string, got {text!r}")
            if not text:
                continue
            if vocab.boundary in text:
                raise UserError(f"the {what} {text!r} contains the boundary token {vocab.boundary!r}")
            missing = vocab.missing(text)
            if missing:
                raise UserError(f"the {what} {text!r} has character(s) {''.join(missing)!r} that are not in the "
                                f"model's vocabulary")
            if vocab.unk_id is not None and vocab.unk_id in vocab.encode(text):
                raise UserError(f"the {what} {text!r} has a character the model never writes (a rare one, which "
                                f"it reads as its unknown-character token {vocab.unk!r})")
            if hi is not None and vocab.length(text) > hi:
                raise UserError(f"the {what} {text!r} is longer than the maximum length {hi}")
        if not all(isinstance(w, str) for w in self.exclude):
            raise UserError("the words to exclude must be strings")
        tabbed = next((w for w in self.exclude if LABEL_SEP in w), None)
        if tabbed is not None and not vocab.labels:  # a labelled run's are read by labels.label_constraints
            raise UserError(f"the words to exclude have a line LABEL<TAB>ITEM ({tabbed!r}), which is for a run "
                            f"trained with --labels; this one has none: give bare words")

    def limit(self, prefix: str, vocab: Vocab) -> int | None:
        """How many symbols a sample may grow past the prefix (None: any number)."""
        return None if self.max_len is None else self.max_len - vocab.length(prefix)

    def describe(self, new_only: bool = False) -> str:
        """The conditions in words, for messages: "new, ending in 'a', 5 to 8 characters long"."""
        parts = ["new"] if new_only else []
        if self.suffix:
            parts.append(f"ending in {self.suffix!r}")
        if self.contains:
            parts.append(f"containing {self.contains!r}")
        lo, hi = (self.min_len if self.min_len > 1 else 0), self.max_len  # 1, the default, goes unsaid
        if lo and hi is not None:
            parts.append(f"{lo} to {hi} characters long" if lo < hi else f"{lo} characters long")
        elif lo:
            parts.append(f"at least {lo} characters long")
        elif hi is not None:
            parts.append(f"at most {hi} characters long")
        if self.exclude:
            parts.append(f"none of the {len(self.exclude):,} excluded words")
        return ", ".join(parts)

    def meets(self, vocab: Vocab, new_only: bool = False) -> Callable[[list, list | None], list[bool]] | None:
        """(words, tags) -> which of them meet the conditions (and, with `new_only`, are tagged
        new); a word None (dropped while drawing) never does. None when every word would.
        Lengths count the vocabulary's symbols (grapheme clusters where it has them)."""
        if not self.active and not new_only:
            return None
        if self == NON_EMPTY and not new_only:  # the default: a cheap test, for a million samples a second
            return lambda words, tags: [bool(w) for w in words]
        lo, hi = self.min_len, (math.inf if self.max_len is None else self.max_len)
        suffix, contains, exclude, length = self.suffix, self.contains, self.exclude, vocab.length

        def meets(words: list, tags: list | None) -> list[bool]:
            if tags is None or not new_only:
                tags = ["new"] * len(words)
            return [w is not None and lo <= length(w) <= hi and w.endswith(suffix) and contains in w
                    and w not in exclude and t == "new" for w, t in zip(words, tags)]

        return meets


NO_CONSTRAINTS = NON_EMPTY = Constraints()


def read_conditions(constraints: Constraints | None, prefix: str, vocab: Vocab) -> tuple[Constraints, str]:
    """The conditions and the prefix as the vocabulary's data was read (NFC, by default)."""
    if constraints is not None and not isinstance(constraints, Constraints):
        raise UserError(f"constraints must be a Constraints(suffix=..., min_len=..., ...), got {constraints!r}")
    if not isinstance(prefix, str):
        raise UserError(f"the prefix must be a string, got {prefix!r}")
    return (NO_CONSTRAINTS if constraints is None else constraints).read_as(vocab), vocab.normalized(prefix)


def _percent(share: float) -> str:
    return f"{100 * share:.2g}%"


class Stream:
    """One request's stream: which of its samples are kept, the first n that meet the
    conditions (and, with `unique`, are not repeats), in the stream's order. The samples are
    drawn `count()` at a time: as many as should give the rest at the share met so far (at
    least 64, at most a chunk), so a rare condition is met in a few large draws. What is kept
    does not depend on how many are drawn at a time.

    It stops early in two ways: `unique` ends quietly (with fewer than n) after a long run of
    repeats in a row or where new words have become too rare to find the rest (UNIQUE_MORE), the
    model having nothing more to give; conditions met by fewer than
    HOPELESS_RATE of HOPELESS_DRAWS draws or more are `hopeless`, a UserError that says so."""

    def __init__(self, n: int, key: np.uint64, meets, unique: bool = False, what: str = ""):
        self.n, self.key, self.meets, self.what = n, key, meets, what
        self.filtering = meets is not None or unique
        self.seen: dict[str, bool] | None = {} if unique else None  # word -> seen more than once
        self.once = 0  # words seen exactly once
        self.patience = min(max(10_000, 100 * n), 1_000_000)  # repeats in a row before `unique` gives up
        self.drawn = self.made = self.met = self.repeats = 0
        self.exhausted = False
        self.hopeless: UserError | None = None

    @property
    def done(self) -> bool:
        return self.made >= self.n or self.exhausted or self.hopeless is not None

    def count(self, chunk_size: int) -> int:
        want = self.n - self.made
        if not self.filtering:
            return min(chunk_size, want)
        guess = 2 * want if self.drawn == 0 else math.ceil(1.25 * want * self.drawn / max(self.made, 1))
        return min(chunk_size, max(64, guess))

    def take(self, words: list, tags: list | None) -> tuple[list[str], list[str] | None]:
        """The next len(words) samples of the stream (None: one dropped while drawing) -> the
        ones kept, with their tags. Then the stream may be `done`, and `hopeless`."""
        self.drawn += len(words)
        if not self.filtering:
            self.made += len(words)
            return words, tags
        ok = self.meets(words, tags) if self.meets is not None else None
        want = self.n - self.made
        kept_words, kept_tags = [], []
        for i, w in enumerate(words):
            if ok is not None and not ok[i]:
                continue
            self.met += 1
            if self.seen is not None:
                if w in self.seen:
                    if not self.seen[w]:
                        self.seen[w], self.once = True, self.once - 1
                    self.repeats += 1
                    continue
                self.seen[w], self.once = False, self.once + 1
                self.repeats = 0
            kept_words.append(w)
            if tags is not None:
                kept_tags.append(tags[i])
            if len(kept_words) == want:
                break
        self.made += len(kept_words)
        if self.made < self.n:
            if self.seen is not None and (self.repeats >= self.patience or (
                    self.met >= UNIQUE_MIN_MET and UNIQUE_MORE * self.once < min(self.n - self.made, self.made))):
                self.exhausted = True
            elif self.drawn >= HOPELESS_DRAWS and self.met < HOPELESS_RATE * self.drawn:
                self.hopeless = UserError(
                    f"only {self.met:,} of {self.drawn:,} samples ({_percent(self.met / self.drawn)}) met the "
                    f"conditions ({self.what}): fewer than 1 in {round(1 / HOPELESS_RATE):,}, too few to go on; "
                    f"loosen them")
        return kept_words, (kept_tags if tags is not None else None)
