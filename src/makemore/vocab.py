"""The vocabulary: symbols by index, and text cut into them.

A symbol is one character (a code point: `units="codepoint"`, the default and the lecture's) or
one extended grapheme cluster (`units="grapheme"`, UAX #29, the `regex` package's `\\X`): a
Devanagari syllable, a Hangul syllable written as jamo, an emoji with its skin-tone modifier or a
ZWJ family is then one symbol, which a model can neither split nor start a word in the middle of.
Text is read in normalisation form C by default (`normalize="nfc"`: "café" typed with a
precomposed é and with e + U+0301 is one word, and no lone accent enters the vocabulary;
`"none"` keeps the text as the file has it); the vocabulary records which, so that what is given
to a model later (a word to score, a prefix) is prepared the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .errors import UserError

# Tried in order when the data itself uses '.', so that the boundary token never collides.
BOUNDARY_CANDIDATES = ".#|~^$_*@%"

NORMALIZE = ("nfc", "none")
UNITS = ("codepoint", "grapheme")
LABEL_SEP = "\t"  # a labelled file's line: LABEL<TAB>ITEM


def check_text_settings(normalize: str, units: str) -> None:
    if normalize not in NORMALIZE:
        raise UserError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    if units not in UNITS:
        raise UserError(f"units must be one of {', '.join(UNITS)}, got {units!r}")


def normalize_text(text: str, normalize: str) -> str:
    """`text` in the normal form `normalize` names ("nfc"), or as it is ("none"). (normalize()
    returns text already in NFC as it is after its quick check: checking first saves nothing.)"""
    return text if normalize == "none" else unicodedata.normalize("NFC", text)


# Tried in order for the unknown-character token (`--min-char-count`): printable, and unlikely
# to be in a list of words.
UNK_CANDIDATES = "\ufffd\u2427\u2426\u2425"


@functools.cache
def _patterns():
    import regex  # a dependency, imported when grapheme units are first used

    # UAX #29 keeps two code points in one cluster only where one of them is of these classes
    # (rules GB3, GB6-GB9c, GB11-GB13); between two code points of none of them a cluster ends (GB999)
    joining = regex.compile(r"[\p{GCB=Extend}\p{GCB=ZWJ}\p{GCB=SpacingMark}\p{GCB=Prepend}"
                            r"\p{GCB=Regional_Indicator}\p{GCB=L}\p{GCB=V}\p{GCB=T}\p{GCB=CR}]")
    return regex.compile(r"\X"), joining


def graphemes(text: str) -> list[str]:
    """The extended grapheme clusters of `text` (UAX #29, the regex package's \\X), in order."""
    return _patterns()[0].findall(text)


_EMPTY = np.zeros(0, dtype=np.int64)
# What ends each word when a list is cut in one go: a line feed, or another code point of the
# Control class, after which (and before which) UAX #29 always ends a cluster (GB4, GB5).
_SEPARATORS = "\n\x1e\x1f\x1d\x1c\x00\u2028\u2029"


@dataclass(frozen=True)
class _Clusters:
    """A text cut into extended grapheme clusters, as graphemes() cuts it, kept as arrays:
    its code points, where each cluster starts among them and how many it holds.

    The regex runs only where it must. UAX #29 keeps two code points in one cluster only where
    one of them is a combining mark, a joiner, a spacing mark, a prepended mark, a regional
    indicator, a Hangul jamo or a carriage return; between two other code points a cluster
    always ends. So every code point is a cluster of its own except in the stretches of those
    (with one code point on either side, where a cluster must end), which the regex cuts: most
    of a list (Latin, Cyrillic, CJK, precomposed Hangul) never meets it. On a 700,000-line list
    in many scripts: 0.3 s where one findall over the text took 1.8 s, and the same clusters."""

    text: str
    codes: np.ndarray  # uint32, the code points of text
    starts: np.ndarray  # int64, index in codes of each cluster's first code point
    sizes: np.ndarray  # int64, code points in each cluster
    ends: np.ndarray = field(default_factory=lambda: _EMPTY)  # int64, index among the clusters of each word's separator (of_words)

    @classmethod
    def of_text(cls, text: str) -> "_Clusters":
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        if not len(codes):
            return cls(text, codes, _EMPTY, _EMPTY)
        cluster, joining_class = _patterns()
        present = np.zeros(int(codes.max()) + 1, dtype=bool)
        present[codes] = True
        distinct = np.flatnonzero(present)
        table = np.zeros(len(present), dtype=bool)  # by code point: may join a neighbour
        table[distinct[[m.start() for m in joining_class.finditer("".join(map(chr, distinct.tolist())))]]] = True
        joining = table[codes]
        first = np.ones(len(codes), dtype=bool)
        if joining.any():
            near = joining.copy()
            near[1:] |= joining[:-1]
            near[:-1] |= joining[1:]
            edges = np.flatnonzero(np.diff(near.astype(np.int8), prepend=0, append=0))
            clusters: list[str] = []
            for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist()):
                clusters.extend(cluster.findall(text, a, b))  # a and b are cluster boundaries: no context is lost
            sizes = np.fromiter(map(len, clusters), dtype=np.int64, count=len(clusters))
            inside = np.flatnonzero(near)
            first[inside] = False
            first[inside[np.cumsum(sizes) - sizes]] = True
        starts = np.flatnonzero(first)
        return cls(text, codes, starts, np.diff(starts, append=len(codes)))

    @classmethod
    def of_words(cls, words: list[str]) -> "_Clusters":
        """The words joined, each followed by a separator that is a cluster of its own (so that
        no cluster spans two words: joined by the boundary token instead, a word beginning with
        a combining mark would glue it to the boundary before it): a line feed, or, where a
        word holds one or a carriage return ("\\r\\n" is one cluster), another control character."""
        if not words:
            return cls("", np.zeros(0, dtype=np.uint32), _EMPTY, _EMPTY)
        for sep in _SEPARATORS:
            text = sep.join(words) + sep
            if text.count(sep) == len(words) and (sep != "\n" or "\r" not in text):
                break
        else:
            raise UserError("the words hold every separator that grapheme units can cut them with")
        cut = cls.of_text(text)
        ends = np.flatnonzero((cut.sizes == 1) & (cut.codes[cut.starts] == ord(sep)))
        assert len(ends) == len(words)
        return cls(text, cut.codes, cut.starts, cut.sizes, ends)

    def strings(self, which: np.ndarray) -> list[str]:
        """The clusters `which` (indices) as strings."""
        text = self.text
        return [text[p:p + n] for p, n in zip(self.starts[which].tolist(), self.sizes[which].tolist())]

    def word_lengths(self) -> np.ndarray:
        """Clusters in each word (its separator not counted)."""
        return np.diff(self.ends, prepend=-1) - 1

    def counts(self) -> Counter:
        """How often each cluster occurs, separators aside."""
        single = self.sizes == 1
        single[self.ends] = False
        tally = np.bincount(self.codes[self.starts[single]])
        seen = np.flatnonzero(tally)
        counts = Counter(dict(zip(map(chr, seen.tolist()), tally[seen].tolist())))
        counts.update(self.strings(np.flatnonzero(self.sizes > 1)))
        return counts


class _Lookup(dict):
    """A dict that answers `fill` for a missing key, so that map(lookup.__getitem__, ...) runs in C."""

    def __init__(self, mapping: dict, fill: int):
        super().__init__(mapping)
        self.fill = fill

    def __missing__(self, key):
        return self.fill


@dataclass(frozen=True)
class Vocab:
    """Symbols by index; index 0 is the boundary token that starts and ends every word.

    A symbol is one character (a code point: `units="codepoint"`, the default and the lecture's;
    `chars` is then a str) or one extended grapheme cluster (`units="grapheme"`; `chars` is then a
    tuple of strings of one or more code points, its first entry the boundary token). Either way
    `chars[i]` is symbol i, `len(chars)` is the size, and the symbols joined are their text.

    With an unknown-character token (`unk`, at index 1), every symbol the vocabulary does not
    hold is read as that token: `--min-char-count K` folds the symbols seen fewer than K
    times in the training split into it, so that a list in many scripts does not spend a row of
    every embedding and output table on a character seen twice. The boundary and unknown tokens
    are single code points found nowhere in the data, so they are never a symbol nor part of one.

    `normalize` is how text is prepared before it is encoded (`normalized`): "nfc" (the text the
    vocabulary was built from was read in NFC) or "none".

    A labelled vocabulary (`labels`, the sorted label names of a `--labels` file) reads each
    item of a list of words as its file line, `LABEL<TAB>ITEM`: `encode_words` and `lengths`
    take the item, `label_ids` the label. Keeping the line whole through the split, words.json and
    the novelty tags means a labelled run needs no second list beside every list of words;
    `items` is the same vocabulary for bare items (a prefix, a word to score under a label).
    """

    chars: str | tuple[str, ...]
    unk: str | None = None  # the unknown-character token's character (chars[1]), if any
    units: str = "codepoint"
    normalize: str = "none"
    labels: tuple[str, ...] = ()

    def __post_init__(self):
        if self.units not in UNITS or self.normalize not in NORMALIZE:
            raise ValueError(f"units {self.units!r} and normalize {self.normalize!r}: expected one of "
                             f"{', '.join(UNITS)} and one of {', '.join(NORMALIZE)}")
        chars = self.chars
        if not isinstance(chars, str):
            chars = tuple(chars)
            if not chars or not all(isinstance(c, str) and c for c in chars):
                raise ValueError("the symbols of a vocabulary are non-empty strings")
            if self.units == "codepoint":
                if any(len(c) != 1 for c in chars):
                    raise ValueError("a code-point vocabulary holds single characters")
                chars = "".join(chars)
        elif self.units == "grapheme":
            chars = tuple(chars)
        if not chars:
            raise ValueError("a vocabulary holds at least the boundary token")
        object.__setattr__(self, "chars", chars)
        object.__setattr__(self, "labels", tuple(self.labels))

    @classmethod
    def from_words(cls, words: list[str], min_count: int = 1, count_in: list[str] | None = None,
                   units: str = "codepoint", normalize: str = "none") -> "Vocab":
        """Every symbol of `words`; with min_count > 1, only those seen at least min_count
        times in `count_in` (the training split), the others folded into one unknown token.
        With normalize="nfc", the words are taken in NFC (load_corpus has read them so)."""
        check_text_settings(normalize, units)
        words = _normalized_words(words, normalize)
        used = set("".join(words))  # code points: the tokens must be none of them
        boundary = next((c for c in BOUNDARY_CANDIDATES if c not in used), None)
        if boundary is None:  # every candidate is used: take the first code point that is not
            boundary = next(chr(i) for i in range(0x2400, 0x10FFFF) if chr(i) not in used)
        symbols = used if units == "codepoint" else set(symbol_counts(words, units))

        def make(first: list[str], rest) -> "Vocab":
            ordered = [*first, *sorted(rest)]
            return cls("".join(ordered) if units == "codepoint" else tuple(ordered),
                       first[1] if len(first) > 1 else None, units, normalize)

        if min_count <= 1:
            return make([boundary], symbols)
        counted = words if count_in is None else _normalized_words(count_in, normalize)
        counts = symbol_counts(counted, units)
        kept = {c for c in symbols if counts.get(c, 0) >= min_count}
        if not kept and counts:  # every symbol the unknown token: a model of nothing but its length
            top, seen = max(counts.items(), key=lambda item: item[1])
            raise UserError(f"--min-char-count {min_count:,} keeps no character: the most frequent, {top!r}, is seen "
                            f"{seen:,} times in the training split; give {seen:,} or less")
        taken = used | {boundary}
        unk = next((c for c in UNK_CANDIDATES if c not in taken), None)
        if unk is None:
            unk = next(chr(i) for i in range(0xE000, 0x10FFFF) if chr(i) not in taken)
        return make([boundary, unk], kept)

    # vocab.json (rundir.py): code points keep the lecture-era layout, {"chars": "...", ...}
    def to_json(self) -> dict:
        out = {"chars": self.chars} if self.units == "codepoint" else {"symbols": list(self.chars)}
        out = {**out, "boundary": self.boundary, "unk": self.unk, "units": self.units, "normalize": self.normalize}
        return {**out, "labels": list(self.labels)} if self.labels else out

    @classmethod
    def from_json(cls, data: dict, normalize: str | None = None) -> "Vocab":
        """A vocab.json; one written before units existed (a "chars" string) is code points, and
        one written before normalisation existed was read as it was ("none")."""
        units = data.get("units", "codepoint")
        chars = data["symbols"] if units == "grapheme" else data["chars"]
        return cls(chars, data.get("unk"), units, normalize or data.get("normalize", "none"),
                   tuple(data.get("labels", ())))

    # Labels (see the class doc)
    @functools.cached_property
    def items(self) -> "Vocab":
        """This vocabulary for bare items: no labels."""
        return dataclasses.replace(self, labels=()) if self.labels else self

    @functools.cached_property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def label_id(self, label: str) -> int:
        """A label's id; an unknown label is one error line listing the known ones."""
        if label not in self.label_index:
            known = ", ".join(self.labels) if self.labels else "none: the run was trained without --labels"
            raise UserError(f"unknown label {label!r}; the labels are: {known}")
        return self.label_index[label]

    def item_texts(self, words: list[str]) -> list[str]:
        """The items of these words (labelled lines: what follows the first tab)."""
        return items_of(words) if self.labels else words

    def label_ids(self, words: list[str]) -> np.ndarray:
        """The label id of each labelled line, int64."""
        index = self.label_index
        try:
            return np.fromiter((index[w.partition(LABEL_SEP)[0]] for w in words), dtype=np.int64, count=len(words))
        except KeyError as e:
            raise UserError(f"unknown label {e.args[0]!r}; the labels are: {', '.join(self.labels)}") from None

    @property
    def boundary(self) -> str:
        return self.chars[0]

    @property
    def unk_id(self) -> int | None:
        return 1 if self.unk is not None else None

    @property
    def size(self) -> int:
        return len(self.chars)

    @functools.cached_property  # encode() runs once per word: build the mapping once
    def stoi(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def normalized(self, text: str) -> str:
        """`text` prepared as the vocabulary's data was read (NFC, or as it is)."""
        return normalize_text(text, self.normalize)

    def symbols(self, text: str) -> list[str]:
        """`text` cut into this vocabulary's units: characters, or grapheme clusters."""
        return list(text) if self.units == "codepoint" else graphemes(text)

    def length(self, text: str) -> int:
        """How many symbols `text` holds (what a model reads and writes one at a time)."""
        return len(text) if self.units == "codepoint" else len(graphemes(text))

    def lengths(self, words: list[str]) -> np.ndarray:
        """length() of every word (its item, for a labelled vocabulary), as int64."""
        words = self.item_texts(words)
        if self.units == "codepoint":
            return np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        return _Clusters.of_words(words).word_lengths()

    def unknown(self, text: str) -> list[str]:
        """The symbols of `text` that are not in the vocabulary (the unknown token aside)."""
        stoi = self.stoi
        return sorted({c for c in self.symbols(text) if c not in stoi})

    def missing(self, text: str) -> list[str]:
        """The symbols of `text` this vocabulary cannot encode (none when it has `unk`)."""
        return [] if self.unk is not None else self.unknown(text)

    def _missing_error(self, missing: list[str], text: str | None = None) -> UserError:
        what = "character(s)" if self.units == "codepoint" else "grapheme(s)"
        shown = "".join(missing) if self.units == "codepoint" else " ".join(missing)
        # one line, whatever the text: a split's words are encoded as one text
        shown = repr(shown) if len(shown) <= 40 else f"{shown[:40]!r}... ({len(missing):,} in all)"
        where = ""
        if text is not None:
            where = f" in {text!r}" if len(text) <= 80 else f" in {text[:60]!r}... ({len(text):,} characters)"
        return UserError(f"{what} {shown}{where} are not in the model's vocabulary")

    def encode(self, text: str) -> list[int]:
        missing = self.missing(text)
        if missing:
            raise self._missing_error(missing, text)
        stoi, unk = self.stoi, self.unk_id
        return [stoi.get(c, unk) for c in self.symbols(text)]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    @functools.cached_property
    def _code_point_ids(self) -> np.ndarray:
        """ids by Unicode code point (unk, or -1 where there is no unk, for every other one)."""
        fill = -1 if self.unk is None else 1
        table = np.full(max(map(ord, self.chars)) + 1, fill, dtype=np.int32)
        table[[ord(c) for c in self.chars]] = np.arange(self.size, dtype=np.int32)
        return table

    @functools.cached_property
    def _single_code_point_ids(self) -> np.ndarray:
        """For grapheme clusters of one code point: ids by code point (the fill elsewhere)."""
        fill = -1 if self.unk is None else 1
        single = [(ord(c), i) for i, c in enumerate(self.chars) if len(c) == 1]
        table = np.full(max(c for c, _ in single) + 1, fill, dtype=np.int32)
        table[[c for c, _ in single]] = [i for _, i in single]
        return table

    def _cluster_ids(self, cut: "_Clusters") -> np.ndarray:
        """int32 ids of the clusters of `cut` (unk, or -1 for one the vocabulary lacks): those
        of one code point through a table by code point, the others through the dict."""
        fill = -1 if self.unk is None else 1
        ids = np.full(len(cut.starts), fill, dtype=np.int32)
        single = cut.sizes == 1
        codes = cut.codes[cut.starts[single]]
        table = self._single_code_point_ids
        inside = codes < len(table)
        ids[np.flatnonzero(single)[inside]] = table[codes[inside]]
        several = np.flatnonzero(~single)
        if len(several):
            ids[several] = list(map(_Lookup(self.stoi, fill).__getitem__, cut.strings(several)))
        return ids

    def _check_cluster_ids(self, cut: "_Clusters", ids: np.ndarray) -> None:
        if self.unk is None and (ids < 0).any():
            raise self._missing_error(sorted(set(cut.strings(np.flatnonzero(ids < 0)))))

    def encode_array(self, text: str) -> np.ndarray:
        """encode() for a long text at once: int32 ids, one per symbol. Vectorised through a
        table by code point for characters; for grapheme clusters, cut (_Clusters) and looked
        up by code point where a cluster is one, through the dict where it is several."""
        if self.units == "grapheme":
            cut = _Clusters.of_text(text)
            ids = self._cluster_ids(cut)
            self._check_cluster_ids(cut, ids)
            return ids
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = self._code_point_ids
        fill = -1 if self.unk is None else 1
        ids = np.full(codes.shape, fill, dtype=np.int32)
        inside = codes < table.shape[0]
        ids[inside] = table[codes[inside]]
        if fill == -1 and (ids < 0).any():
            self.encode(text)  # names the characters it cannot encode
        return ids

    def encode_words(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The words as one flat int32 array of ids, each word followed by the boundary token
        (id 0), and each word's length in it (its symbols + 1), int64; a labelled vocabulary
        encodes each line's item."""
        words = self.item_texts(words)
        if self.units == "codepoint":
            boundary = self.boundary
            ids = self.encode_array("".join(w + boundary for w in words))
            return ids, np.fromiter((len(w) + 1 for w in words), dtype=np.int64, count=len(words))
        cut = _Clusters.of_words(words)
        ids = self._cluster_ids(cut)
        ids[cut.ends] = 0  # each word's separator: its end
        self._check_cluster_ids(cut, ids)
        return ids, np.diff(cut.ends, prepend=-1)


def items_of(lines: list[str]) -> list[str]:
    """The items of labelled lines: what follows each line's first tab."""
    return [w.partition(LABEL_SEP)[2] for w in lines]


def labels_of(lines: list[str]) -> list[str]:
    """The labels of labelled lines: what stands before each line's first tab."""
    return [w.partition(LABEL_SEP)[0] for w in lines]


def _normalized_words(words: list[str], normalize: str) -> list[str]:
    if normalize == "none" or unicodedata.is_normalized("NFC", "\n".join(words)):
        return words
    return [unicodedata.normalize("NFC", w) for w in words]


def char_counts(words: list[str]) -> Counter:
    return Counter("".join(words))


def symbol_counts(words: list[str], units: str = "codepoint") -> Counter:
    """How often each symbol (character, or grapheme cluster) occurs in `words`."""
    if units == "codepoint":
        return char_counts(words)
    return _Clusters.of_words(words).counts()


# Joiners and selectors: code points that belong to the character before them (with the
# combining marks, Unicode category M*), which a code-point vocabulary splits off it.
JOINERS = {"\u200c", "\u200d", *map(chr, range(0xFE00, 0xFE10)), *map(chr, range(0xE0100, 0xE01F0))}


def combining_symbols(vocab: Vocab) -> list[str]:
    """The symbols of a code-point vocabulary that only make sense with their neighbours:
    combining marks and joiners (where `units="grapheme"` would keep each with its base)."""
    if vocab.units != "codepoint":
        return []
    return [c for c in vocab.chars[1:] if c != vocab.unk and (c in JOINERS or unicodedata.category(c).startswith("M"))]
