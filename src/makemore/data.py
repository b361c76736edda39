"""Data: a file of words -> vocabulary -> context windows -> train/dev/test split.

This is the first part of "makemore part 2": read the words, give every character an
integer with the boundary token '.' at index 0, slide a window of `block_size` previous
characters over each word (padded with the boundary token) to predict the next one, and
split the words 80/10/10 after shuffling them with `random.Random(seed)`, exactly as the
lecture does, so that our figures compare with its figures.

The vocabulary, and how text is normalised and cut into symbols, are vocab.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
import re
import unicodedata
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .outputs import atomic_write
from .vocab import (LABEL_SEP, BOUNDARY_CANDIDATES, items_of, labels_of, NORMALIZE, UNITS, UNK_CANDIDATES, Vocab, char_counts,  # noqa: F401
                    check_text_settings, combining_symbols, graphemes, normalize_text, symbol_counts)

NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
SPLITS = ("train", "dev", "test")


# ----------------------------------------------------------------------------------------
# Finding and reading the file


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "makemore"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_names(dest: Path, url: str | None = None, timeout: float = 30.0) -> Path:
    """Download names.txt once, check its sha256, and only then move it into place."""
    url = url or os.environ.get("MAKEMORE_NAMES_URL", NAMES_URL)

    def fetch(tmp: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = response.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise UserError(
                f"the names data set is not in $MAKEMORE_DATA_DIR or {cache_dir()} and could "
                f"not be downloaded ({getattr(e, 'reason', e)}); pass a file instead: --data path/to/words.txt"
            ) from None
        digest = hashlib.sha256(body).hexdigest()
        if digest != NAMES_SHA256:
            raise UserError(
                f"downloaded names.txt from {url} has sha256 {digest[:16]}..., expected "
                f"{NAMES_SHA256[:16]}...; the file was not kept"
            )
        with open(tmp, "wb") as f:
            f.write(body)

    atomic_write(dest, fetch)
    return dest


def resolve_data(spec: str | os.PathLike) -> Path:
    """Turn `--data` into a path: a file, or `names` looked up in the data dir, cache, web."""
    if str(spec) == "names" and not Path(spec).is_file():
        candidates = []
        if os.environ.get("MAKEMORE_DATA_DIR"):
            candidates.append(Path(os.environ["MAKEMORE_DATA_DIR"]) / "names.txt")
        candidates.append(cache_dir() / "names.txt")
        for path in candidates:
            if path.is_file():
                return path
        return download_names(cache_dir() / "names.txt")
    path = Path(spec)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if not path.is_file():
        raise UserError(f"data path is not a file: {path}")
    return path


def read_words(path: str | os.PathLike, normalize: str = "nfc", labels: bool = False,
               allow_empty: bool = False) -> list[str]:
    """One item per line, whatever ends the lines (\\n, \\r\\n, or a lone \\r as old Mac files
    have): stripped (also of a UTF-8 BOM), blank lines dropped; in NFC unless `normalize` is
    "none" (the whole text at once: a line end never composes with what is around it). A file
    with no words is an error unless `allow_empty` (a list of words to leave out).
    With `labels`, each line is LABEL<TAB>ITEM (read_labelled)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if _utf16_with_mark(raw) or _utf16_without_mark(raw):
        raise UserError(f"{path} is UTF-16 text; makemore reads UTF-8: re-encode it (iconv -f UTF-16 -t UTF-8 "
                        f"{path} > {path.with_name(path.stem + '-utf8' + path.suffix)})")
    if b"\x00" in raw:
        raise UserError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None
    text = normalize_text(text, normalize)
    lines = re.split(r"\r\n|\r|\n", text)
    if labels:
        return read_labelled(path, lines)
    words = [line.strip() for line in lines]
    words = [w for w in words if w]
    if not words and not allow_empty:
        raise UserError(f"{path} has no words: it is empty or holds only blank lines")
    return words


def _utf16_with_mark(raw: bytes) -> bool:
    """UTF-16 with its byte-order mark: it decodes, and into lines (a list of words has them)."""
    if raw[:2] not in (b"\xff\xfe", b"\xfe\xff") or len(raw) % 2:
        return False
    return "\n" in raw[:4096].decode("utf-16", errors="replace")  # a cut pair at the end: one U+FFFD


def _utf16_without_mark(raw: bytes) -> bool:
    """UTF-16 of mostly ASCII text, written without a byte-order mark: every other byte NUL."""
    head = raw[:4096]
    if len(head) < 4:
        return False
    return any(head[i::2].count(0) > 0.9 * len(head[i::2]) and head[1 - i::2].count(0) == 0 for i in (0, 1))


def read_labelled(path: Path, lines: list[str]) -> list[str]:
    """The lines of a `--labels` file as LABEL<TAB>ITEM, each part stripped: the label is what
    stands before the tab. A non-blank line without a tab or with more than one, or with an
    empty label or item, is one error naming its line number."""
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, tab, item = line.partition(LABEL_SEP)
        label, item = label.strip(), item.strip()
        if not tab:
            raise UserError(f"{path}, line {number}: no tab; with --labels every line is LABEL<TAB>ITEM")
        if not label or not item:
            raise UserError(f"{path}, line {number}: an empty {'label' if not label else 'item'}; "
                            f"with --labels every line is LABEL<TAB>ITEM")
        if LABEL_SEP in item:  # a table of more columns: its other columns would be read as characters
            raise UserError(f"{path}, line {number}: {line.count(LABEL_SEP)} tabs; with --labels every line is "
                            f"LABEL<TAB>ITEM, one tab")
        out.append(f"{label}{LABEL_SEP}{item}")
    if not out:
        raise UserError(f"{path} has no words: it is empty or holds only blank lines")
    return out


# ----------------------------------------------------------------------------------------
# Examples: a split as one flat array of character ids


@dataclass(frozen=True)
class Examples:
    """The examples of the lecture's build_dataset, stored compactly.

    A split's words are kept as one flat array of character ids, each word followed by the
    boundary token: `ids` = e m m a . o l i v i a . ...  Every position p of `ids` is one
    example, its target ids[p] and its context the `block_size` ids before p *within the same
    word*, padded on the left with the boundary token (id 0), exactly the lecture's

        context = [0] * block_size; for ch in w + '.': X.append(context); Y.append(ix); ...

    so example i here is row i of the lecture's (X, Y). Contexts are gathered when asked for
    (a minibatch, a chunk of an evaluation), so memory grows with the characters of the split
    (2 bytes each for a vocabulary up to 65,536), never with block_size x examples x 8 bytes.
    """

    ids: np.ndarray  # uint16 (or int32 for a vocabulary past 65,536), one per character + one per word end
    starts: np.ndarray  # int64, index in ids of each word's first character (ascending)
    # A labelled list's label id of each word (int64), or None. Then every context carries its
    # word's label in front: column 0, the characters after it (models/base.py).
    labels: np.ndarray | None = None
    # The size of the vocabulary that encoded them (None: not known), so that a predictor of
    # another vocabulary is refused (predict.check_examples) instead of reading other characters.
    vocab_size: int | None = None

    @classmethod
    def from_words(cls, words: list[str], vocab: Vocab) -> "Examples":
        ids, lengths = vocab.encode_words(words)  # a word's symbols and its end
        starts = np.zeros(len(words), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        labels = vocab.label_ids(words) if vocab.labels else None
        return cls(ids.astype(np.uint16 if vocab.size <= 1 << 16 else np.int32), starts, labels, vocab.size)

    def select(self, words: np.ndarray) -> "Examples":
        """The examples of these words (a boolean mask over the words), in order."""
        ends = np.append(self.starts[1:], len(self))
        lengths = (ends - self.starts)[words]
        first = self.starts[words]
        starts = np.zeros(len(first), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        index = np.repeat(first - starts, lengths) + np.arange(int(lengths.sum()))
        return Examples(self.ids[index], starts, None if self.labels is None else self.labels[words], self.vocab_size)

    def with_label(self, label: int | None) -> "Examples":
        """These examples with every word given `label` (None: unlabelled)."""
        return Examples(self.ids, self.starts, None if label is None else np.full(self.words, label, dtype=np.int64),
                        self.vocab_size)

    def width(self, block_size: int) -> int:
        """Columns of a context of `block_size` characters: one more for the label."""
        return block_size + (self.labels is not None)

    def label_of(self, positions: np.ndarray) -> np.ndarray:
        """The label id of each position's word (a labelled list)."""
        return self.labels[np.searchsorted(self.starts, positions, side="right") - 1]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def words(self) -> int:
        return int(self.starts.shape[0])

    def targets(self, positions: np.ndarray) -> np.ndarray:
        return self.ids[positions].astype(np.int64)

    def word_start(self, positions: np.ndarray) -> np.ndarray:
        """Where the word of each position begins, in ids."""
        return self.starts[np.searchsorted(self.starts, positions, side="right") - 1]

    def contexts(self, positions: np.ndarray, block_size: int) -> np.ndarray:
        """(len(positions), block_size) int64: the block_size ids before each position, within
        its word, boundary-padded on the left; for a labelled list, the word's label in front
        ((len(positions), 1 + block_size))."""
        positions = np.asarray(positions, dtype=np.int64)
        word = np.searchsorted(self.starts, positions, side="right") - 1
        word_start = self.starts[word]
        before = positions[:, None] + np.arange(-block_size, 0, dtype=np.int64)  # (n, T)
        ctx = self.ids[np.maximum(before, 0)].astype(np.int64)
        ctx[before < word_start[:, None]] = 0  # before the word: padding
        if self.labels is not None:
            ctx = np.concatenate([self.labels[word][:, None], ctx], axis=1)
        return ctx

    def batch(self, positions: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(contexts, targets) of these examples, as int64 arrays."""
        return self.contexts(positions, block_size), self.targets(positions)

    def window_positions(self, positions: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """For the window before each position, the position each of its columns predicts (a
        sequence model's dense targets, models.base.dense_targets) and whether that column
        predicts anything: (positions.shape + (block_size,)) int64 and bool."""
        positions = np.asarray(positions, dtype=np.int64)
        predicted = positions[..., None] + np.arange(1 - block_size, 1, dtype=np.int64)
        valid = predicted >= self.word_start(positions)[..., None]
        return np.where(valid, predicted, positions[..., None]), valid

    def word_windows(self, block_size: int) -> np.ndarray:
        """Positions whose windows tile every word, ascending: each word's end, and every
        block_size-th position before it within the word. A sequence model reads a window whole
        and predicts each of its characters (models.base.sequence_output), so these windows
        predict every character of the split exactly once, as makemore.py's whole-word examples
        do (a word longer than the window is cut into windows of block_size predictions)."""
        ends = np.append(self.starts[1:], len(self)) - 1  # each word's boundary token
        lengths = ends - self.starts + 1  # targets per word: its characters and its end
        tiles = -(-lengths // block_size)  # ceil: windows per word
        word = np.repeat(np.arange(self.words), tiles)
        back = np.arange(int(tiles.sum())) - np.repeat(np.cumsum(tiles) - tiles, tiles)
        return np.sort(ends[word] - back * block_size)

    def subset(self, size: int, seed: int = 0) -> np.ndarray:
        """A fixed random sample of `size` example positions (all of them when there are fewer),
        ascending; the same for the same data, size and seed, so estimates compare across runs."""
        n = len(self)
        if size >= n:
            return np.arange(n, dtype=np.int64)
        return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)

    def tensors(self, block_size: int, positions: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(X, Y) as the lecture's torch tensors, for these positions (default all): for small
        splits, tests and notebooks; training and evaluation gather per minibatch or chunk."""
        positions = np.arange(len(self), dtype=np.int64) if positions is None else positions
        X, Y = self.batch(positions, block_size)
        return torch.from_numpy(X), torch.from_numpy(Y)


def build_examples(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's build_dataset: X[i] holds `block_size` character ids, Y[i] the next one."""
    return Examples.from_words(words, vocab).tensors(block_size)


# The published part-2 notebook shows 182,441 / 22,902 / 22,803 training/dev/test examples.
# Its `random.seed(42); random.shuffle(words)` cell had been run four times when those were
# printed (one pass gives 182,625 / 22,655 / 22,866), so we shuffle four times, re-seeding each
# time, to land on exactly the lecture's split and make our figures comparable with its figures.
LECTURE_SHUFFLES = 4


def split_words(words: list[str], seed: int = 42) -> dict[str, list[str]]:
    """Shuffle with random.Random(seed) and cut 80/10/10: the lecture's split for seed 42."""
    shuffled = list(words)
    for _ in range(LECTURE_SHUFFLES):
        random.Random(seed).shuffle(shuffled)
    n1, n2 = int(0.8 * len(shuffled)), int(0.9 * len(shuffled))
    parts = {"train": shuffled[:n1], "dev": shuffled[n1:n2], "test": shuffled[n2:]}
    if any(not part for part in parts.values()):
        raise UserError(
            f"too few words for a train/dev/test split: {len(words)} given, at least 10 needed"
        )
    return parts


def split_labelled(lines: list[str], seed: int = 42) -> dict[str, list[str]]:
    """The stratified split of a labelled list: each label's lines, in file order, shuffled with
    random.Random(seed) and cut 80/10/10, so that every label is in every split in proportion
    (a small label is not left out of dev by chance). A label needs 10 lines."""
    by_label: dict[str, list[str]] = {}
    for label, line in zip(labels_of(lines), lines):
        by_label.setdefault(label, []).append(line)
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) < 10:
            raise UserError(f"label {label!r} has {len(group)} line(s): each label needs at least 10 "
                            f"for its train/dev/test split")
        random.Random(seed).shuffle(group)
        n1, n2 = int(0.8 * len(group)), int(0.9 * len(group))
        parts["train"] += group[:n1]
        parts["dev"] += group[n1:n2]
        parts["test"] += group[n2:]
    return parts


def label_counts(vocab: Vocab, splits: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Lines per label in each split: {label: {train, dev, test}}, labels in the vocabulary's order."""
    counts = {label: dict.fromkeys(SPLITS, 0) for label in vocab.labels}
    for s in SPLITS:
        ids, n = np.unique(vocab.label_ids(splits[s]), return_counts=True)
        for i, k in zip(ids.tolist(), n.tolist()):
            counts[vocab.labels[i]][s] = k
    return counts


@dataclass
class Corpus:
    """The words of one data file, their vocabulary, and their train/dev/test split."""

    source: str
    words: list[str]
    vocab: Vocab
    splits: dict[str, list[str]]
    seed: int = 42
    min_char_count: int = 1
    _encoded: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def normalize(self) -> str:
        return self.vocab.normalize

    @property
    def units(self) -> str:
        return self.vocab.units

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Symbols in each item (characters, or grapheme clusters)."""
        return self.vocab.lengths(self.words)

    @functools.cached_property
    def longest(self) -> int:
        """Symbols in the longest item: a context longer than this + 1 is all padding."""
        return int(self.lengths.max())

    def encoded(self, split: str) -> Examples:
        """The split's examples in compact form, encoded once."""
        if split not in self._encoded:
            self._encoded[split] = Examples.from_words(self.splits[split], self.vocab)
        return self._encoded[split]

    def examples(self, split: str, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All of the split's examples as the lecture's (X, Y) tensors (materialised: for small
        data and for tests; training gathers contexts per minibatch from `encoded`)."""
        return self.encoded(split).tensors(block_size)

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names of a labelled list (`--labels`), else ()."""
        return self.vocab.labels

    def stats(self, block_size: int) -> dict:
        counts = Counter(self.words)
        units = self.vocab.units
        train_chars = symbol_counts(self.vocab.item_texts(self.splits["train"]), units)
        all_chars = symbol_counts(self.vocab.item_texts(self.words), units)
        total = sum(all_chars.values())
        stoi = self.vocab.stoi
        folded = {c: n for c, n in all_chars.items() if c not in stoi}
        return {
            "source": self.source,
            "words": len(self.words),
            "distinct_words": len(counts),
            "duplicates": sum(c - 1 for c in counts.values() if c > 1),
            "vocab": self.vocab.chars,  # a str of characters, or a list of grapheme clusters
            "vocab_size": self.vocab.size,
            "boundary": self.vocab.boundary,
            "unk": self.vocab.unk,
            "units": units,
            "normalize": self.vocab.normalize,
            # combining marks and joiners in a code-point vocabulary: --units grapheme keeps them with their base
            "combining_symbols": combining_symbols(self.vocab),
            "min_char_count": self.min_char_count,
            "distinct_chars": len(all_chars),
            "chars": total,
            # characters read as the unknown token (rare in train, or never seen there)
            "folded_chars": len(folded),
            "folded_share": (sum(folded.values()) / total) if total else 0.0,
            "char_counts_train": dict(train_chars.most_common()),
            "scripts": script_counts(all_chars),
            "longest_word": self.vocab.item_texts([self.words[int(self.lengths.argmax())]])[0],
            "longest_length": self.longest,
            "block_size": block_size,
            "seed": self.seed,
            "split_words": {s: len(self.splits[s]) for s in SPLITS},
            **({"labels": label_counts(self.vocab, self.splits)} if self.labels else {}),
            # each word yields one example per character plus one for its end
            "examples": {s: int(self.vocab.lengths(self.splits[s]).sum()) + len(self.splits[s]) for s in SPLITS},
        }


def script_of(char: str) -> str:
    """A character's script, read off its Unicode name ('CYRILLIC SMALL LETTER A' -> Cyrillic);
    a grapheme cluster's, off its first character's."""
    char = char[0]
    name = unicodedata.name(char, "")
    if not name:
        return "other"
    first = name.split()[0]
    if first in ("CJK", "HIRAGANA", "KATAKANA", "HANGUL"):
        return {"CJK": "CJK", "HIRAGANA": "Kana", "KATAKANA": "Kana", "HANGUL": "Hangul"}[first]
    if unicodedata.category(char)[0] not in "LM":
        return "digits, punctuation, symbols" if not char.isspace() else "space"
    return first.capitalize()


def script_counts(counts: Counter) -> dict[str, dict]:
    """Distinct characters and occurrences per script, most frequent script first."""
    scripts: dict[str, dict] = {}
    for char, n in counts.items():
        entry = scripts.setdefault(script_of(char), {"chars": 0, "count": 0})
        entry["chars"] += 1
        entry["count"] += n
    return dict(sorted(scripts.items(), key=lambda kv: -kv[1]["count"]))


def load_corpus(spec: str | os.PathLike, seed: int = 42, min_char_count: int = 1, normalize: str = "nfc",
                units: str = "codepoint", labels: bool = False) -> Corpus:
    """Read `--data` (a path or `names`) into a Corpus with its vocabulary and split.

    min_char_count K > 1 folds the symbols seen fewer than K times in the training split
    into one unknown-character token (see Vocab). normalize: "nfc" (default) reads the text in
    Unicode normalisation form C, "none" as it is. units: "codepoint" (default) makes each
    character a symbol, "grapheme" each extended grapheme cluster (see the module's docstring).
    labels: each line is LABEL<TAB>ITEM (read_labelled), the split is stratified by label
    (split_labelled) and the vocabulary is labelled (Vocab)."""
    if isinstance(seed, bool) or not isinstance(seed, int):  # random.Random takes any value: another split, unsaid
        raise UserError(f"the split's seed must be a whole number, got {seed!r}")
    if isinstance(min_char_count, bool) or not isinstance(min_char_count, int) or min_char_count < 1:
        raise UserError(f"min-char-count must be a whole number, at least 1, got {min_char_count!r}")
    if not isinstance(spec, (str, os.PathLike)):
        raise UserError(f"load_corpus reads a file: give its path, or 'names', got {spec!r}")
    check_text_settings(normalize, units)
    path = resolve_data(spec)
    words = read_words(path, normalize, labels)
    if not labels:
        splits = split_words(words, seed)
        vocab = Vocab.from_words(words, min_char_count, count_in=splits["train"], units=units, normalize=normalize)
    else:
        splits = split_labelled(words, seed)
        vocab = Vocab.from_words(items_of(words), min_char_count, count_in=items_of(splits["train"]), units=units,
                                 normalize=normalize)
        vocab = dataclasses.replace(vocab, labels=tuple(sorted(set(labels_of(words)))))
    return Corpus(source=str(path), words=words, vocab=vocab, splits=splits, seed=seed,
                  min_char_count=min_char_count)
