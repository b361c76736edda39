"""A real big list in many scripts: the most frequent words of every language wordfreq knows.

wordfreq (Speer et al., https://github.com/rspeer/wordfreq) gathers word frequencies from
Wikipedia, subtitles, news, books, web text and social media in 42 languages. This script takes
each language's WORDS most frequent words (wordfreq.top_n_list, its "best" word lists), keeps
those made of letters and marks alone (no digits, punctuation or spaces: a word, not a token),
and writes them one per line, language by language: with the default 20,000 per language,
about 824,000 items in Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari, Bengali, Tamil,
CJK (Chinese characters, kana, Hangul) and more scripts, some 6,500 distinct
characters. The same word in two languages is two items, as it would be in two lists joined.

The list is the same for the same wordfreq version (pinned in pyproject's `bench` extra) and
arguments; the manifest beside it records both, the counts and the file's sha256.

    .venv/bin/python scripts/make_wordfreq_list.py --out runs/wordfreq/words.txt

`--labelled` writes a labelled list for `--labels` instead (docs/labels.md): lines
LANGUAGE<TAB>WORD for eight languages of the Latin script (so that telling them apart takes
more than the alphabet), of very different sizes (LABELLED_SIZES: 8,000 words of English down to
300 of Finnish), each a seeded random draw from the language's 20,000 most frequent words (a
small list is then a sample of the language, not its 300 commonest words):

    .venv/bin/python scripts/make_wordfreq_list.py --labelled --out runs/languages/words.txt
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from makemore.outputs import atomic_write_json, atomic_write_text  # noqa: E402

WORDS = 20_000


def is_word(text: str) -> bool:
    """Letters and marks only (Unicode categories L* and M*)."""
    return bool(text) and all(unicodedata.category(c)[0] in "LM" for c in text)


def build(words_per_language: int = WORDS) -> tuple[list[str], dict]:
    import wordfreq

    languages = sorted(wordfreq.available_languages("best"))
    items, per_language = [], {}
    for language in languages:
        kept = [w for w in wordfreq.top_n_list(language, words_per_language) if is_word(w)]
        per_language[language] = len(kept)
        items += kept
    chars = set("".join(items))
    manifest = {"source": "wordfreq", "wordfreq_version": getattr(wordfreq, "__version__", None) or _version(),
                "words_per_language": words_per_language, "languages": per_language, "items": len(items),
                "distinct_items": len(set(items)), "distinct_characters": len(chars),
                "command": f"python scripts/make_wordfreq_list.py --words {words_per_language}"}
    return items, manifest


# language -> words drawn from its WORDS most frequent, for --labelled
LABELLED_SIZES = {"en": 8000, "de": 6000, "fr": 4000, "es": 3000, "it": 2000, "nl": 1000, "pl": 500, "fi": 300}


def build_labelled(seed: int = 0, every_language: bool = False) -> tuple[list[str], dict]:
    """LANGUAGE<TAB>WORD lines: LABELLED_SIZES[language] distinct words of each language, drawn
    with random.Random(seed) from its WORDS most frequent words, in the order drawn; with
    `every_language`, all WORDS words of each of wordfreq's languages (the big list, labelled)."""
    import random

    import wordfreq

    sizes = (dict.fromkeys(sorted(wordfreq.available_languages("best")), WORDS) if every_language
             else LABELLED_SIZES)
    lines, per_language = [], {}
    for language, size in sizes.items():
        pool = [w for w in wordfreq.top_n_list(language, WORDS) if is_word(w)]
        drawn = random.Random(f"{seed}:{language}").sample(pool, min(size, len(pool)))
        per_language[language] = len(drawn)
        lines += [f"{language}\t{w}" for w in drawn]
    manifest = {"source": "wordfreq", "wordfreq_version": getattr(wordfreq, "__version__", None) or _version(),
                "labelled": True, "seed": seed, "drawn_from_top": WORDS, "languages": per_language,
                "items": len(lines), "command": f"python scripts/make_wordfreq_list.py --labelled --seed {seed}"
                + (" --every-language" if every_language else "")}
    return lines, manifest


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wordfreq")
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the most frequent words of 42 languages, one per line")
    p.add_argument("--out", default=str(ROOT / "runs" / "wordfreq" / "words.txt"))
    p.add_argument("--words", type=int, default=WORDS, help=f"words per language (default {WORDS:,})")
    p.add_argument("--labelled", action="store_true",
                   help="LANGUAGE<TAB>WORD lines of eight languages of very different sizes (LABELLED_SIZES)")
    p.add_argument("--seed", type=int, default=0, help="seed of --labelled's draws (default 0)")
    p.add_argument("--every-language", action="store_true",
                   help="with --labelled: every language's 20,000 words (the big list, each word labelled)")
    args = p.parse_args(argv)
    try:
        items, manifest = build_labelled(args.seed, args.every_language) if args.labelled else build(args.words)
    except ImportError:
        print("make_wordfreq_list: needs wordfreq: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    text = "\n".join(items) + "\n"
    manifest["sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    out = Path(args.out)
    atomic_write_text(out, text)
    atomic_write_json(out.with_suffix(".json"), manifest)
    print(f"wrote {out}: {manifest['items']:,} items in {len(manifest['languages'])} languages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
