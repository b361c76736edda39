"""Data: a file of words -> vocabulary -> context windows -> train/dev/test split.

This is the first part of "makemore part 2": read the words, give every character an
integer with the boundary token '.' at index 0, slide a window of `block_size` previous
characters over each word (padded with the boundary token) to predict the next one, and
split the words 80/10/10 after shuffling them with `random.Random(seed)`, exactly as the
lecture does, so that our figures compare with its figures.
"""

from __future__ import annotations

import functools

import hashlib
import os
import random
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .utils import atomic_write

NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
SPLITS = ("train", "dev", "test")
# Tried in order when the data itself uses '.', so that the boundary token never collides.
BOUNDARY_CANDIDATES = ".#|~^$_*@%"


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


def read_words(path: str | os.PathLike) -> list[str]:
    """One item per line: stripped (also of '\\r' and a UTF-8 BOM), blank lines dropped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if b"\x00" in raw:
        raise UserError(f"{path} looks like a binary file (it contains NUL bytes), not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None
    words = [line.strip() for line in text.split("\n")]
    words = [w for w in words if w]
    if not words:
        raise UserError(f"{path} has no words: it is empty or holds only blank lines")
    return words


# ----------------------------------------------------------------------------------------
# Vocabulary and examples


@dataclass(frozen=True)
class Vocab:
    """Characters by index; index 0 is the boundary token that starts and ends every word."""

    chars: str

    @classmethod
    def from_words(cls, words: list[str]) -> "Vocab":
        used = set("".join(words))
        boundary = next((c for c in BOUNDARY_CANDIDATES if c not in used), None)
        if boundary is None:  # every candidate is used: take the first code point that is not
            boundary = next(chr(i) for i in range(0x2400, 0x10FFFF) if chr(i) not in used)
        return cls(boundary + "".join(sorted(used)))

    @property
    def boundary(self) -> str:
        return self.chars[0]

    @property
    def size(self) -> int:
        return len(self.chars)

    @functools.cached_property  # encode() runs once per word: build the mapping once
    def stoi(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        missing = sorted({c for c in text if c not in stoi})
        if missing:
            raise UserError(f"character(s) {''.join(missing)!r} in {text!r} are not in the model's vocabulary")
        return [stoi[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def build_examples(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's build_dataset: X[i] holds `block_size` character ids, Y[i] the next one."""
    stoi = vocab.stoi
    xs: list[list[int]] = []
    ys: list[int] = []
    for w in words:
        context = [0] * block_size
        for ch in w + vocab.boundary:
            ix = stoi[ch]
            xs.append(context)
            ys.append(ix)
            context = context[1:] + [ix]
    X = torch.tensor(xs, dtype=torch.long).view(-1, block_size)
    Y = torch.tensor(ys, dtype=torch.long)
    return X, Y


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


@dataclass
class Corpus:
    """The words of one data file, their vocabulary, and their train/dev/test split."""

    source: str
    words: list[str]
    vocab: Vocab
    splits: dict[str, list[str]]
    seed: int = 42

    def examples(self, split: str, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return build_examples(self.splits[split], self.vocab, block_size)

    def stats(self, block_size: int) -> dict:
        counts = Counter(self.words)
        return {
            "source": self.source,
            "words": len(self.words),
            "distinct_words": len(counts),
            "duplicates": sum(c - 1 for c in counts.values() if c > 1),
            "vocab": self.vocab.chars,
            "vocab_size": self.vocab.size,
            "boundary": self.vocab.boundary,
            "longest_word": max(self.words, key=len),
            "longest_length": max(len(w) for w in self.words),
            "block_size": block_size,
            "seed": self.seed,
            "split_words": {s: len(self.splits[s]) for s in SPLITS},
            # each word yields one example per character plus one for its end
            "examples": {s: sum(len(w) + 1 for w in self.splits[s]) for s in SPLITS},
        }


def load_corpus(spec: str | os.PathLike, seed: int = 42) -> Corpus:
    """Read `--data` (a path or `names`) into a Corpus with its vocabulary and split."""
    path = resolve_data(spec)
    words = read_words(path)
    return Corpus(source=str(path), words=words, vocab=Vocab.from_words(words),
                  splits=split_words(words, seed), seed=seed)
