"""The learned interpolation of counts against Kneser-Ney on one list: docs/results/learned_counts_*.json.

    python scripts/learned_counts.py --data runs/wordfreq/words.txt --seconds 12,60,120 [--threads 1]

Counts the list's training split once, tunes Kneser-Ney of each order a budget run mixes with
(mixture.mixing_orders) on dev and keeps the best, then trains the learned interpolation of the
same counts (interpolation.py) from a fresh gate for each number of seconds, as a budget run does
(mixture.mixing_model); `--emb-dim 0 --hidden 64` is the gate as it was before it read the
context's characters. Records each model's dev loss over the whole dev split, the gate's steps
and the seconds each part took (docs/big-lists.md, "A learned count model").
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

from makemore.data import load_corpus
from makemore.devices import usable_cores
from makemore.interpolation import COUNTS_HIDDEN, HIDDEN, Gate, InterpolatedCounts, default_gate
from makemore.mixture import mixing_orders
from makemore.baselines import fit_best_order
from makemore.outputs import atomic_write_json
from makemore.utils import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seconds", default="12,60,120", help="training times of the gate, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a budget run's count model trains on one)")
    parser.add_argument("--emb-dim", type=int,
                        help="width of the gate's embedding of each context character (0: it reads the counts "
                             "only; default: as a run would choose for this list, interpolation.default_gate)")
    parser.add_argument("--hidden", type=int,
                        help="width of the gate's hidden layers (default: a run's for the gate --emb-dim makes)")
    parser.add_argument("--results", help="the JSON file to write (default docs/results/learned_counts_<data>.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.data)
    train, dev = corpus.encoded("train"), corpus.encoded("dev")
    orders = mixing_orders(corpus)
    started = time.perf_counter()
    kneser_ney = fit_best_order(corpus, orders)  # what a run mixes with: modified Kneser-Ney since 2026-12-07
    count_seconds = time.perf_counter() - started
    rows = []
    for seconds in [float(s) for s in args.seconds.split(",")]:
        started = time.perf_counter()
        gate = default_gate(kneser_ney.counts, orders[-1])
        if args.emb_dim is not None or args.hidden is not None:
            emb_dim = gate.emb_dim if args.emb_dim is None else args.emb_dim
            hidden = args.hidden or (HIDDEN if emb_dim else COUNTS_HIDDEN)
            gate = Gate(orders[-1], hidden, corpus.vocab.size, emb_dim)
        learned = InterpolatedCounts(kneser_ney.counts, orders[-1], gate).fit(train, seconds=seconds)
        fit_seconds = time.perf_counter() - started
        rows.append({"seconds": seconds, "steps": learned.fit_steps, "fit_seconds": fit_seconds,
                     "dev_loss": learned.nll(dev)})
        print(f"learned, {seconds:g} s: {learned.fit_steps:,} steps, dev {rows[-1]['dev_loss']:.4f}", flush=True)
    stem = Path(args.data).stem
    results = Path(args.results or ROOT / "docs" / "results" / f"learned_counts_{stem}.json")
    atomic_write_json(results, {
        "command": "python scripts/learned_counts.py " + " ".join(sys.argv[1:]),
        "machine": f"{cpu_name()}, {usable_cores()} cores, torch {torch.__version__}, {args.threads} thread(s)",
        "date": datetime.date.today().isoformat(),
        "train_examples": len(train), "dev_examples": len(dev), "vocab_size": corpus.vocab.size,
        "kneser_ney": {"orders": orders, "context": kneser_ney.context, "discount": kneser_ney.smoothing,
                       "dev_loss": kneser_ney.nll(dev), "seconds": count_seconds},
        "learned": {"context": orders[-1], "hidden": gate.net[0].out_features, "emb_dim": gate.emb_dim, "runs": rows},
    })
    print(f"Kneser-Ney {kneser_ney.context}: dev {kneser_ney.nll(dev):.4f} ({count_seconds:.1f} s); {results}")


if __name__ == "__main__":
    main()
