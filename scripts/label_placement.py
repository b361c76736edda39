"""Where a recurrent model reads the label: at every input, or as its start state (docs/labels.md).

Trains the GRU on the labelled list (default: scripts/make_wordfreq_list.py --labelled) for the
same steps three ways, `--label-at input`, `--label-at state`, and on the items without their
labels, for each seed, and reports the dev NLL (given the label) and the classification accuracy.
Writes docs/results/label_placement.json.

    .venv/bin/python scripts/label_placement.py --steps 3000 --seeds 2
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import makemore as mm  # noqa: E402
from makemore.labels import accuracy, label_prior  # noqa: E402
from makemore.outputs import atomic_write_json  # noqa: E402
from makemore.predict import model_predictor  # noqa: E402

from labels_bench import items_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "runs" / "languages" / "words.txt"))
    p.add_argument("--model", default="gru")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--results", default=str(ROOT / "docs" / "results" / "label_placement.json"))
    args = p.parse_args(argv)
    corpus = mm.load_corpus(args.data, labels=True)
    plain = items_corpus(corpus)
    prior = label_prior(corpus.vocab, corpus.splits["train"])
    settings = dict(model=args.model, steps=args.steps, block_size=16, progress=False, note=lambda s: None)
    rows = []
    for seed in range(1, args.seeds + 1):
        for way in ("input", "state", "none"):
            started = time.perf_counter()
            if way == "none":
                result = mm.train(plain, seed=seed, **settings)
            else:
                result = mm.train(corpus, seed=seed, label_at=way, **settings)
            row = {"label_at": way, "seed": seed, "dev_loss": result.summary["dev_loss"],
                   "seconds": round(time.perf_counter() - started, 1)}
            if way != "none":
                row["accuracy_dev"] = accuracy(model_predictor(result.model), corpus.vocab, prior, corpus.splits["dev"])
            rows.append(row)
            print(row, flush=True)
    results = {"machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
               "date": date.today().isoformat(), "data": args.data, "model": args.model, "steps": args.steps,
               "command": f"python scripts/label_placement.py --model {args.model} --steps {args.steps} "
                          f"--seeds {args.seeds}", "runs": rows}
    atomic_write_json(Path(args.results), results)
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
