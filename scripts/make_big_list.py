"""A big multilingual list of names, for `make bench` (issue 8, "Scale"): hundreds of
thousands of lines in many scripts and thousands of distinct characters, most of them rare.

    python scripts/make_big_list.py [--out runs/big/names.txt] [--lines 700000] [--seed 0]

The words come from Faker (pypi `faker`, pinned in the `bench` extra): for every locale it
ships, the lists its providers draw from -- given names, family names, places, companies,
occupations and its lorem words. We read those lists and draw from them ourselves instead of
calling `Faker(locale).first_name()` once per line, a path several times slower (its
weighted lists rebuild their cumulative weights on every call). The file then holds

- every item of every list once (when --lines leaves room for them): this is what gives the
  list its long tail of characters seen a handful of times, as a real list of the world's
  names has;
- weighted draws for the remaining lines: each locale gets an equal share, split between the
  kinds by KIND_SHARE (mostly given names), and within a list an item is drawn by Faker's own
  weights where it has them (real frequencies, e.g. en_US, zh_CN family names) and by a
  Zipf law (weight 1/rank over a seeded order) where it has none;

shuffled together. The same seed and the same Faker version give the same bytes: the sidecar
`<out>.json` records the Faker version beside the counts. The file is written atomically.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import itertools
import random
import re
import sys
import time
import unicodedata
from collections import Counter
from importlib import metadata
from pathlib import Path

from faker.config import AVAILABLE_LOCALES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout
from makemore.outputs import atomic_write_json, atomic_write_text  # noqa: E402

DEFAULT_OUT = Path("runs/big/names.txt")

# kind -> (Faker provider, the class attributes of that provider's locale module holding it)
KINDS = {
    "given": ("person", ("first_names", "first_names_female", "first_names_male",
                         "first_names_nonbinary", "first_names_unisex")),
    "family": ("person", ("last_names", "last_names_female", "last_names_male")),
    "place": ("address", ("cities", "city_names", "real_city_names", "towns", "districts", "boroughs",
                          "metropolitan_cities", "provinces", "prefectures", "states", "regions",
                          "streets", "street_names", "road_names", "countries")),
    "company": ("company", ("company_prefixes", "large_companies")),
    "occupation": ("job", ("jobs",)),
    "word": ("lorem", ("word_list",)),
}
# share of a locale's drawn lines per kind ("full" = a given name with a family name)
KIND_SHARE = {"given": 0.60, "full": 0.20, "family": 0.10, "place": 0.06,
              "company": 0.02, "occupation": 0.01, "word": 0.01}
# family name first, without a space, as these languages write a full name
FAMILY_FIRST = ("zh", "ja", "ko")

# an item is dropped if it is a template, holds a digit or is longer than a long name (names.txt's
# longest is 15; Faker's occupations run to 140); whitespace runs become one space
MAX_LENGTH = 32
TEMPLATE = re.compile(r"[{}#%?\d]")
KEEP_FORMAT = {"\u200c", "\u200d"}  # zero-width (non-)joiner: part of Persian and Indic spelling


def clean(item: str) -> str | None:
    item = unicodedata.normalize("NFC", " ".join(item.split()))
    item = "".join(c for c in item if unicodedata.category(c) not in ("Cc", "Cf") or c in KEEP_FORMAT)
    if not item or len(item) > MAX_LENGTH or TEMPLATE.search(item) or not any(c.isalpha() for c in item):
        return None
    return item


def entries(value) -> list[tuple[str, float | None]]:
    """A Faker list as (item, weight): an OrderedDict carries weights, a tuple or list none."""
    if isinstance(value, dict):
        if all(isinstance(w, (int, float)) for w in value.values()):
            return [(k, float(w)) for k, w in value.items() if isinstance(k, str)]
        return [(k, None) for k in value if isinstance(k, str)]  # e.g. a province -> its towns
    if isinstance(value, (list, tuple)):
        return [(v, None) for v in value if isinstance(v, str)]
    return []  # a property or anything else computed: not a plain list


@functools.cache  # read once per process (about a second)
def faker_lists() -> dict[tuple[str, str], tuple[list[str], list[float] | None]]:
    """(locale, kind) -> (distinct items, Faker's weights or None), sorted: the lists
    `Faker(locale)` draws from, where the locale has its own provider module (not Faker's
    fallback to en_US) and without the placeholders of the base provider ("John", "Doe")."""
    lists = {}
    for locale in AVAILABLE_LOCALES:
        for kind, (provider, attrs) in KINDS.items():
            try:
                cls = importlib.import_module(f"faker.providers.{provider}.{locale}").Provider
            except ImportError:
                continue
            base = importlib.import_module(f"faker.providers.{provider}").Provider
            weights: dict[str, float | None] = {}
            for attr in attrs:
                value = getattr(cls, attr, ())
                if value is getattr(base, attr, None):
                    continue
                for raw, w in entries(value):
                    item = clean(raw)
                    if item is not None:
                        old = weights.get(item)
                        weights[item] = w if old is None else (old if w is None else max(old, w))
            if weights:  # sorted: some of Faker's tuples are built from sets, in hash order
                items = sorted(weights)
                ws = [weights[i] for i in items]
                lists[locale, kind] = (items, None if any(w is None for w in ws) else ws)
    return lists


def zipf_weights(n: int, rng: random.Random) -> list[float]:
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    return [1.0 / r for r in ranks]


def make_lines(n_lines: int, seed: int) -> tuple[list[str], Counter]:
    rng = random.Random(seed)
    lists = faker_lists()
    pools = {}
    for key in sorted(lists):
        items, ws = lists[key]
        pools[key] = (items, list(itertools.accumulate(ws if ws is not None else zipf_weights(len(items), rng))))

    every = [item for key in sorted(pools) for item in pools[key][0]]
    kinds = Counter({"every item once": 0})
    if len(every) <= n_lines // 2:
        lines = every
        kinds["every item once"] = len(every)
    else:  # a small list: only draws, or the tail would be all of it
        lines = []

    # one cell per (locale, kind) with its share of the draws; a locale's kinds renormalised
    locales = sorted({loc for loc, _ in pools})
    cells, cell_w = [], []
    for loc in locales:
        have = {k: s for k, s in KIND_SHARE.items()
                if (loc, k) in pools or (k == "full" and (loc, "given") in pools and (loc, "family") in pools)}
        total = sum(have.values())
        for k, s in have.items():
            cells.append((loc, k))
            cell_w.append(s / total / len(locales))
    counts = Counter(rng.choices(range(len(cells)), weights=cell_w, k=n_lines - len(lines)))
    for i in sorted(counts):
        (loc, kind), k = cells[i], counts[i]
        kinds[kind] += k
        if kind != "full":
            items, cum = pools[loc, kind]
            lines += rng.choices(items, cum_weights=cum, k=k)
            continue
        (gi, gc), (fi, fc) = pools[loc, "given"], pools[loc, "family"]
        given, family = rng.choices(gi, cum_weights=gc, k=k), rng.choices(fi, cum_weights=fc, k=k)
        if loc.split("_")[0] in FAMILY_FIRST:
            lines += [f + g for g, f in zip(given, family)]
        else:
            lines += [g + " " + f for g, f in zip(given, family)]
    rng.shuffle(lines)
    return lines, kinds


def script_of(ch: str) -> str:
    """The script of a letter from its Unicode name (LATIN, CYRILLIC, CJK, HANGUL...), close
    to Unicode's Script property, which the standard library does not expose; digits,
    punctuation, spaces and the marks shared by scripts are 'common'."""
    name = unicodedata.name(ch, "").split()
    if not name or unicodedata.category(ch)[0] not in "LM" or name[0] in ("MODIFIER", "KATAKANA-HIRAGANA"):
        return "common"
    if name[0] == "FULLWIDTH":  # FULLWIDTH LATIN CAPITAL LETTER J
        return name[1]
    return "CJK" if name[0] == "IDEOGRAPHIC" else name[0]  # IDEOGRAPHIC ITERATION MARK: Han


def statistics(lines: list[str]) -> dict:
    chars = Counter()
    for line in lines:
        chars.update(line)
    by_script: dict[str, dict] = {}
    for ch, n in chars.items():
        s = by_script.setdefault(script_of(ch), {"distinct": 0, "occurrences": 0})
        s["distinct"] += 1
        s["occurrences"] += n
    rare = {f"seen <= {k} times": sum(1 for n in chars.values() if n <= k) for k in (1, 5, 100)}
    return {"lines": len(lines), "distinct_lines": len(set(lines)), "distinct_characters": len(chars),
            "characters": sum(chars.values()), "longest_line": max(map(len, lines)),
            "rare_characters": rare,
            "by_script": dict(sorted(by_script.items(), key=lambda kv: -kv[1]["distinct"]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the list to write (default {DEFAULT_OUT})")
    parser.add_argument("--lines", type=int, default=700_000, help="lines to write (default 700,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    if args.lines < 10:
        parser.error("--lines must be at least 10")

    t0 = time.perf_counter()
    lines, kinds = make_lines(args.lines, args.seed)
    text = "\n".join(lines) + "\n"
    stats = statistics(lines)
    sidecar = {"faker": metadata.version("faker"), "python": sys.version.split()[0], "seed": args.seed,
               "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), **stats,
               "lines_by_kind": dict(kinds)}
    atomic_write_text(args.out, text)
    atomic_write_json(args.out.with_name(args.out.name + ".json"), sidecar)
    seconds = time.perf_counter() - t0

    if not args.quiet:
        print(f"wrote {args.out} in {seconds:.1f} s (Faker {sidecar['faker']}, seed {args.seed})")
        print(f"lines        {stats['lines']:,} ({stats['distinct_lines']:,} distinct, longest "
              f"{stats['longest_line']} characters)")
        print(f"characters   {stats['distinct_characters']:,} distinct in {stats['characters']:,}; "
              + ", ".join(f"{n:,} {k}" for k, n in stats["rare_characters"].items()))
        print("by kind      " + ", ".join(f"{k} {n:,}" for k, n in kinds.items()))
        print(f"{'script':<14} {'distinct':>9} {'occurrences':>12}")
        for name, s in stats["by_script"].items():
            print(f"{name:<14} {s['distinct']:>9,} {s['occurrences']:>12,}")
    return sidecar


if __name__ == "__main__":
    main()
