"""One model of many lists against a model per list and a model of all: the labels benchmark.

On a labelled list (default: scripts/make_wordfreq_list.py --labelled, words of eight languages of
very different sizes), with the same time budget for every run:

- the labelled model (`train --labels --budget S`): one model of every list, given each item's label;
- an unlabelled model of the same items (`train --budget S` on the items alone);
- a model of each label alone, trained on that label's items only;

all with the same split (the labelled list's stratified one) and the same vocabulary, so their
losses compare item for item. Per label: the dev NLL (nats per character) of each, the neural
models alone (--neural) and the runs' results (mixtures with their count models). Then
classification accuracy (dev and test) of the labelled run by Bayes' rule against a per-label
character n-gram naive Bayes (counts of the 1- to 3-grams of "^word$", add-alpha with alpha
picked on dev). Writes docs/results/labels_bench.json and prints the tables (docs/labels.md).

    .venv/bin/python scripts/labels_bench.py --budget 30
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import makemore as mm  # noqa: E402
from makemore.data import Corpus, Examples  # noqa: E402
from makemore.labels import accuracy, label_prior  # noqa: E402
from makemore.mixture import run_predictor  # noqa: E402
from makemore.outputs import atomic_write_json  # noqa: E402
from makemore.predict import split_nll  # noqa: E402
from makemore.runs import load_any  # noqa: E402
from makemore.vocab import items_of, labels_of  # noqa: E402

SPLITS = ("train", "dev", "test")


def items_corpus(corpus: Corpus, label: str | None = None) -> Corpus:
    """The corpus's items without their labels (of one label, or all), with the same split and
    the same (unlabelled) vocabulary."""
    def keep(lines):
        return [i for lab, i in zip(labels_of(lines), items_of(lines)) if label is None or lab == label]

    splits = {s: keep(corpus.splits[s]) for s in SPLITS}
    return Corpus(corpus.source, [w for s in SPLITS for w in splits[s]], corpus.vocab.items, splits, corpus.seed)


def per_label_nll(predictor, vocab, lines: list[str], labelled: bool) -> dict[str, float]:
    """Dev NLL per label of these labelled lines: given the label (a labelled predictor), or of the items."""
    out = {}
    for label in vocab.labels:
        mine = [w for w in lines if w.partition("\t")[0] == label]
        words = mine if labelled else items_of(mine)
        out[label] = split_nll(predictor, Examples.from_words(words, vocab if labelled else vocab.items))
    return out


# --------------------------------------------------------------------------------------------
# The naive Bayes baseline


def ngrams(item: str, n_max: int = 3) -> Counter:
    padded = f"^{item}$"
    return Counter(padded[i:i + n] for n in range(1, n_max + 1) for i in range(len(padded) - n + 1))


class NaiveBayes:
    """Multinomial naive Bayes over character 1- to 3-grams (McCallum and Nigam 1998's event model)."""

    def __init__(self, lines: list[str], labels: tuple[str, ...]):
        self.labels = labels
        self.counts = {label: Counter() for label in labels}
        for label, item in zip(labels_of(lines), items_of(lines)):
            self.counts[label].update(ngrams(item))
        self.vocab = set().union(*self.counts.values())
        self.totals = {label: sum(c.values()) for label, c in self.counts.items()}
        share = Counter(labels_of(lines))
        self.log_prior = {label: math.log(share[label] / len(lines)) for label in labels}

    def predict(self, items: list[str], alpha: float) -> list[str]:
        V = len(self.vocab)
        out = []
        for item in items:
            grams = ngrams(item)
            best = max(self.labels, key=lambda label: self.log_prior[label] + sum(
                k * math.log((self.counts[label][g] + alpha) / (self.totals[label] + alpha * V))
                for g, k in grams.items()))
            out.append(best)
        return out

    def accuracy(self, lines: list[str], alpha: float) -> float:
        guesses = self.predict(items_of(lines), alpha)
        return float(np.mean([g == t for g, t in zip(guesses, labels_of(lines))]))


# --------------------------------------------------------------------------------------------


def train(corpus: Corpus, out: Path, budget: float, note) -> dict:
    started = time.perf_counter()
    result = mm.train(corpus, budget=budget, out=out, progress=False, note=lambda s: None)
    seconds = time.perf_counter() - started
    note(f"  {out.name}: {seconds:.0f} s, steps {result.summary.get('steps')}, dev {result.summary.get('dev_loss'):.4f}")
    return {"seconds": seconds, "steps": result.summary.get("steps"), "dev_loss": result.summary.get("dev_loss")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "runs" / "languages" / "words.txt"))
    p.add_argument("--budget", type=float, default=30.0, help="seconds of every run's budget (default 30)")
    p.add_argument("--out", default=str(ROOT / "runs" / "labels-bench"))
    p.add_argument("--results", default=str(ROOT / "docs" / "results" / "labels_bench.json"))
    args = p.parse_args(argv)
    data = Path(args.data)
    if not data.is_file():
        sys.path.insert(0, str(ROOT / "scripts"))
        from make_wordfreq_list import main as make_list

        make_list(["--labelled", "--out", str(data)])
    out = Path(args.out)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    def note(line: str) -> None:
        print(line, flush=True)

    corpus = mm.load_corpus(data, labels=True)
    vocab, labels = corpus.vocab, corpus.labels
    note(f"{data}: {len(corpus.words):,} items, {len(labels)} labels, {vocab.size} characters; budget {args.budget:g} s")
    runs = {"labelled": train(corpus, out / "labelled", args.budget, note),
            "unlabelled": train(items_corpus(corpus), out / "unlabelled", args.budget, note)}
    for label in labels:
        runs[f"single-{label}"] = train(items_corpus(corpus, label), out / f"single-{label}", args.budget, note)

    dev, test = corpus.splits["dev"], corpus.splits["test"]
    table = {label: {"train_items": n["train"], "dev_items": n["dev"]}
             for label, n in corpus.stats(3)["labels"].items()}
    overall = {}
    for use in ("model", "result"):
        labelled = run_predictor(load_any(out / "labelled"), use)
        unlabelled = run_predictor(load_any(out / "unlabelled"), use)
        for label, v in per_label_nll(labelled, vocab, dev, True).items():
            table[label][f"labelled_{use}"] = v
        for label, v in per_label_nll(unlabelled, vocab, dev, False).items():
            table[label][f"unlabelled_{use}"] = v
        for label in labels:
            single = run_predictor(load_any(out / f"single-{label}"), use)
            mine = [w for w in dev if w.partition("\t")[0] == label]
            table[label][f"single_{use}"] = split_nll(single, Examples.from_words(items_of(mine), vocab.items))
        overall[f"labelled_{use}"] = split_nll(labelled, Examples.from_words(dev, vocab))
        overall[f"unlabelled_{use}"] = split_nll(unlabelled, Examples.from_words(items_of(dev), vocab.items))
        prior = label_prior(vocab, corpus.splits["train"])
        overall[f"accuracy_dev_{use}"] = accuracy(labelled, vocab, prior, dev)
        overall[f"accuracy_test_{use}"] = accuracy(labelled, vocab, prior, test)

    bayes = NaiveBayes(corpus.splits["train"], labels)
    alphas = [0.01, 0.03, 0.1, 0.3, 1.0]
    on_dev = {a: bayes.accuracy(dev, a) for a in alphas}
    alpha = max(on_dev, key=on_dev.get)
    overall["naive_bayes"] = {"alpha": alpha, "accuracy_dev": on_dev[alpha], "accuracy_test": bayes.accuracy(test, alpha)}

    results = {"machine": f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
               "date": date.today().isoformat(), "data": str(data), "budget": args.budget,
               "command": f"python scripts/labels_bench.py --budget {args.budget:g}",
               "runs": runs, "per_label": table, "overall": overall}
    atomic_write_json(Path(args.results), results)

    print("\n| label | train items | labelled | unlabelled | single label | labelled result | unlabelled result |"
          " single result |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for label in sorted(labels, key=lambda lab: -table[lab]["train_items"]):
        r = table[label]
        print(f"| {label} | {r['train_items']:,} | {r['labelled_model']:.4f} | {r['unlabelled_model']:.4f} | "
              f"{r['single_model']:.4f} | {r['labelled_result']:.4f} | {r['unlabelled_result']:.4f} | "
              f"{r['single_result']:.4f} |")
    print(f"| all | {len(corpus.splits['train']):,} | {overall['labelled_model']:.4f} | {overall['unlabelled_model']:.4f} |"
          f" | {overall['labelled_result']:.4f} | {overall['unlabelled_result']:.4f} | |")
    nb = overall["naive_bayes"]
    print(f"\naccuracy dev/test: labelled model {overall['accuracy_dev_model']:.4f}/{overall['accuracy_test_model']:.4f}, "
          f"labelled result {overall['accuracy_dev_result']:.4f}/{overall['accuracy_test_result']:.4f}, "
          f"naive Bayes (alpha {nb['alpha']:g}) {nb['accuracy_dev']:.4f}/{nb['accuracy_test']:.4f}")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
