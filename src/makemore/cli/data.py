"""`makemore data` and `makemore ngram`: a data file described, and its count baselines."""

from __future__ import annotations

import argparse
import math
import sys

from ..errors import UserError
from .common import _load, _load_corpus, _print_json, _subparser, add_data_flags, columns, pad


VOCAB_SHOWN = 120  # a vocabulary up to this size is printed whole; larger ones are summarised


def add_data(sub) -> None:
    p = _subparser(sub, "data", "describe a data file: words, vocabulary, split sizes",
                   "makemore data --data names --block-size 3\n  makemore data --data big.txt --min-char-count 5")
    add_data_flags(p)
    p.add_argument("--block-size", type=int, default=3,
                   help="characters of context per example, for the example counts (default 3, the lecture's)")
    p.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # older spelling of --split-seed
    p.add_argument("--json", action="store_true", help="everything, the whole vocabulary and character counts included")


def cmd_data(args) -> int:
    if args.block_size < 1:
        raise UserError(f"block-size must be at least 1, got {args.block_size}")
    if args.seed is not None:
        args.split_seed = args.seed
    stats = _load_corpus(args).stats(args.block_size)
    if stats["combining_symbols"]:
        marks = stats["combining_symbols"]
        shown = " ".join(f"U+{ord(c):04X}" for c in marks[:8]) + (f" and {len(marks) - 8} more" if len(marks) > 8 else "")
        print(f"note: the vocabulary holds {len(marks)} combining mark(s) or joiner(s) ({shown}) as characters of "
              f"their own, which a sample can split from their base or start with; --units grapheme keeps each "
              f"grapheme cluster one symbol", file=sys.stderr)
    if args.json:
        _print_json(stats)
        return 0
    grapheme = stats["units"] == "grapheme"
    unit = "graphemes" if grapheme else "characters"
    print(f"source        {stats['source']}")
    print(f"words         {stats['words']:,} ({stats['distinct_words']:,} distinct, {stats['duplicates']:,} duplicates)")
    print(f"{unit:<14}{stats['chars']:,} in all, {stats['distinct_chars']:,} distinct")
    # grapheme clusters may be several code points: shown one by one, separated by spaces
    joined = (lambda symbols: " ".join(symbols)) if grapheme else "".join
    if stats["vocab_size"] <= VOCAB_SHOWN:
        print(f"vocabulary    {stats['vocab_size']} {unit}: {joined(stats['vocab'])!r} (boundary token "
              f"{stats['boundary']!r} at index 0{_unk_note(stats)})")
    else:
        counts = stats["char_counts_train"]
        common = joined(list(counts)[:40])
        rare = sum(1 for n in counts.values() if n < 5)
        print(f"vocabulary    {stats['vocab_size']:,} {unit} (boundary token {stats['boundary']!r} at index 0"
              f"{_unk_note(stats)}); `--json` lists them all")
        print(f"  most common {common!r}")
        print(f"  rare        {rare:,} {unit} are seen fewer than 5 times in the training split")
        scripts = stats["scripts"]
        shown = list(scripts.items())[:12]
        print("  by script   " + ", ".join(f"{k} {v['chars']:,} ({v['count'] / stats['chars']:.1%})" for k, v in shown)
              + (f", {len(scripts) - len(shown)} more" if len(scripts) > len(shown) else ""))
    if stats["min_char_count"] > 1:
        print(f"rare chars    --min-char-count {stats['min_char_count']}: {stats['folded_chars']:,} {unit}, "
              f"{stats['folded_share']:.3%} of the text, are read as the unknown token {stats['unk']!r}")
    longest = stats["longest_word"]  # a line of a whole page would flood the terminal
    shown = repr(longest) if len(longest) <= 80 else repr(longest[:60]) + "..."
    print(f"longest word  {shown} ({stats['longest_length']:,} {unit if stats['longest_length'] != 1 else unit[:-1]})")
    sw, ex = stats["split_words"], stats["examples"]
    print(f"split (seed {stats['seed']})  train {sw['train']:,} / dev {sw['dev']:,} / test {sw['test']:,} words")
    print(f"examples (block {stats['block_size']})  train {ex['train']:,} / dev {ex['dev']:,} / test {ex['test']:,}")
    if "labels" in stats:  # split by label, 80/10/10 each
        labels = stats["labels"]
        width = max(len("label"), *(columns(k) for k in labels))
        print(f"labels        {len(labels)}, each split 80/10/10")
        print(f"  {pad('label', width)}  {'train':>9}  {'dev':>7}  {'test':>7}")
        for label, n in labels.items():
            print(f"  {pad(label, width)}  {n['train']:>9,}  {n['dev']:>7,}  {n['test']:>7,}")
    return 0


def _learned_row(corpus, counts, context: int, seconds: float, test: bool) -> dict:
    """The learned interpolation of these counts (interpolation.py) trained for `seconds`: its
    dev (and test) NLL."""
    from ..interpolation import InterpolatedCounts

    model = InterpolatedCounts(counts, context).fit(corpus.encoded("train"), seconds=seconds)
    # the seconds of training asked for: torch's first optimizer takes a second more to import
    row = {"context": context, "steps": model.fit_steps, "seconds": model.fit_seconds,
           "dev_loss": model.nll(corpus.encoded("dev"))}
    if test:
        row["test_loss"] = model.nll(corpus.encoded("test"))
    return row


def _unk_note(stats: dict) -> str:
    return f"; unknown-character token {stats['unk']!r} at index 1" if stats.get("unk") else ""


def add_ngram(sub) -> None:
    p = _subparser(sub, "ngram", "count baselines (add-alpha, Kneser-Ney, modified Kneser-Ney) for context "
                   "lengths 1..K",
                   "makemore ngram --data names --max-context 6 --compare runs/lecture")
    add_data_flags(p)
    p.add_argument("--max-context", type=int, default=6, help="largest context length K")
    p.add_argument("--compare", metavar="RUN", help="show this run's size and dev NLL beside them (and its result's, "
                   "where it was mixed)")
    p.add_argument("--test", action="store_true", help="also the test NLL of each dev-tuned model (read the "
                   "test split once, for final figures)")
    p.add_argument("--learned", type=float, metavar="SECONDS",
                   help="also train the learned interpolation of the counts of K characters (a small network "
                        "weighs their orders, docs/big-lists.md) for SECONDS, and show its dev NLL")
    p.add_argument("--json", action="store_true")


def cmd_ngram(args) -> int:
    from ..counts import NGramCounts
    from ..baselines import ngram_table

    if not 1 <= args.max_context <= 12:
        raise UserError(f"max-context must be between 1 and 12, got {args.max_context}")
    if args.learned is not None and not (math.isfinite(args.learned) and args.learned > 0):
        raise UserError(f"--learned must be a positive number of seconds, got {args.learned:g}")
    corpus = _load_corpus(args)
    if args.learned and corpus.labels:
        raise UserError("--learned: the learned interpolation is for an unlabelled list")
    compare = None
    if args.compare:
        from ..data import Examples
        from ..predict import model_predictor, split_nll

        from ..tune.space import flag, reading_of

        run = _load(args.compare)
        theirs, ours = reading_of(run), reading_of(corpus)
        differ = [f"{flag(field)} {value}" for field, value in theirs.items() if value != ours[field]]
        if bool(run.vocab.labels) != bool(corpus.labels):
            differ.append("--labels" if run.vocab.labels else "no --labels")
        if differ:  # another vocabulary, or losses per grapheme against per code point: they would not compare
            raise UserError(f"{args.compare} read its data with {', '.join(differ)}; give the same to compare with it")
        if run.splits["dev"] != corpus.splits["dev"]:
            raise UserError(f"{args.compare} was trained on another data file or split; its dev NLL would not compare")
        dev = Examples.from_words(run.splits["dev"], run.vocab)
        compare = {"run": args.compare, "model": run.model_cfg.name, "params": run.model.num_params(),
                   "block_size": run.model_cfg.block_size, "dev_loss": split_nll(model_predictor(run.model), dev)}
        result = run.summary.get("result") or {}
        if result.get("predictor") in ("mixture", "ngram"):  # what eval, sample and score of the run use
            compare["result"] = {"predictor": result["predictor"], "dev_loss": result["dev_loss"]}
    try:
        counts = NGramCounts.from_examples(corpus.encoded("train"), corpus.vocab.size, args.max_context)
        rows = ngram_table(corpus, args.max_context, test=args.test, counts=counts)
    except MemoryError:  # NGramCounts checks its bound beforehand; this is for what that misses
        raise UserError(f"out of memory counting contexts of up to {args.max_context} characters; "
                        f"use a smaller --max-context") from None
    learned = _learned_row(corpus, counts, args.max_context, args.learned, args.test) if args.learned else None
    if corpus.labels:
        _add_per_label(rows, corpus, args.test)
    if args.json:
        extra = {**({"learned": learned} if learned else {}), **({"mlp": compare} if compare else {})}
        _print_json({"ngram": rows, **extra} if extra else rows)
        return 0
    print(f"{'context':>7}  {'table entries':>16}  {'unseen dev ctx':>14}  {'add-alpha':>9} {'(alpha)':>8}  "
          f"{'Kneser-Ney':>10} {'(D)':>6}  {'modified KN':>11} {'(D1, D2, D3+)':>18}"
          + (f"  {'KN per label':>12}" if corpus.labels else ""))
    for r in rows:
        entries = r["table_entries"]  # V^(k+1), a Python int: 3.2e+25 for V = 4,400 and k = 6
        entries = f"{entries:,}" if entries < 10**12 else f"{float(entries):.1e}"
        alpha = r["add_alpha"]["alpha"]  # 0.06 to 0.4 on names, 1e-4 to 1e-3 on a list of thousands of characters
        alpha = f"{alpha:.3f}" if alpha >= 0.01 else f"{alpha:.1e}"
        modified = r["modified_kneser_ney"]
        print(f"{r['context']:>7}  {entries:>16}  {r['unseen_dev_contexts']:>14.1%}  "
              f"{r['add_alpha']['dev_loss']:>9.4f} {alpha:>8}  "
              f"{r['kneser_ney']['dev_loss']:>10.4f} {r['kneser_ney']['discount']:>6.3f}  "
              f"{modified['dev_loss']:>11.4f} {', '.join(f'{d:.2f}' for d in modified['discounts']):>18}"
              + (f"  {r['per_label']['dev_loss']:>12.4f}" if corpus.labels else "")
              + (f"  test {r['add_alpha']['test_loss']:.4f} / {r['kneser_ney']['test_loss']:.4f} / "
                 f"{modified['test_loss']:.4f}" + (f" / {r['per_label']['test_loss']:.4f}" if corpus.labels else "")
                 if args.test else ""))
    if learned:
        print(f"learned interpolation of the {learned['context']}-character counts: dev {learned['dev_loss']:.4f}"
              + (f", test {learned['test_loss']:.4f}" if args.test else "")
              + f" ({learned['steps']:,} steps in {learned['seconds']:.1f} s)")
    if compare:
        from ..mixture import result_words

        result = compare.get("result")
        what = result_words(result["predictor"]) if result else None
        print(f"{compare['model']} {compare['run']}: {compare['params']:,} parameters (block {compare['block_size']}), "
              f"dev {compare['dev_loss']:.4f}" + (f" alone; the run's result, {what}: {result['dev_loss']:.4f}"
                                                  if result else ""))
    print("dev NLL in nats per character on the dev split; smoothing tuned on dev"
          + ("; every column but the last pools the labels (the counts do not read them); KN per label is the "
             "count model a labelled run mixes with: Kneser-Ney of each label's items, interpolated with every "
             "label's (docs/labels.md)" if corpus.labels else ""))
    return 0


def _add_per_label(rows: list[dict], corpus, test: bool) -> None:
    """Each row's count model conditioned on the label (labels.LabelledNGram, what a labelled run
    mixes with), under "per_label": the table's other columns pool every label's items."""
    from ..labels import fit_on_dev

    for row in rows:
        model = fit_on_dev(corpus, row["context"])
        row["per_label"] = {"method": model.method, "dev_loss": model.nll(corpus.encoded("dev")),
                            **({"test_loss": model.nll(corpus.encoded("test"))} if test else {})}
