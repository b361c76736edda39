"""Several budget runs at once, one per core, and their ensemble: the neural model alone against
Kneser-Ney 5 on the real big list within 30 minutes (issue 25).

On 2 cores a budget run of the hashed MLP trains on one thread (its thread trial finds a second
one slower), so a second run, another seed, fits beside it on the idle core (what that costs
each run in steps: docs/big-lists.md, "Both cores"). The mean of their probabilities (`makemore
ensemble --equal`, no weight fitted on dev) is a neural model trained in the same wall time;
`makemore mix` then mixes it with the Kneser-Ney model the runs chose. Each member is a fresh
`makemore train --data LIST --budget S --seed s --threads T`, started at the same time, timed
whole with its peak memory. Writes OUT/side_by_side.json, and with --results also that file.

    .venv/bin/python scripts/side_by_side.py --budget 1800 --out runs/pair1800 \
        --results docs/results/wordfreq_pair_1800.json [-- extra train flags]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from big_list_curve import finish_train, run_figures, start_train  # noqa: E402

from makemore.outputs import atomic_write_json  # noqa: E402
from makemore.runtime import usable_cores  # noqa: E402
from makemore.utils import cpu_name  # noqa: E402


def makemore(*args: str) -> list[str]:
    return [sys.executable, "-m", "makemore", *args]


def json_of(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:4])}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "runs" / "wordfreq" / "words.txt"))
    p.add_argument("--budget", type=float, required=True, help="each run's --budget, seconds")
    p.add_argument("--runs", type=int, default=0, help="runs at once (default: one per core)")
    p.add_argument("--seed", type=int, default=42, help="the first run's seed; the others count up")
    p.add_argument("--out", required=True, help="a new folder: OUT/seed-<s>/, OUT/ensemble/")
    p.add_argument("--results", help="also write the figures to this JSON file")
    p.add_argument("extra", nargs="*", help="after --: more `makemore train` flags for every run")
    args = p.parse_args(argv)
    cores = usable_cores()
    runs = args.runs or cores
    if runs < 2:
        raise SystemExit("--runs must be at least 2 (an ensemble), and this machine needs 2 cores for the default")
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data} not found: make it with scripts/make_wordfreq_list.py")
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists: give a new folder")
    threads = max(1, cores // runs)
    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + runs))
    started_runs = [(seed, out / f"seed-{seed}", start_train(args.data, args.budget, out / f"seed-{seed}", "--seed",
                                                             str(seed), "--threads", str(threads), *args.extra))
                    for seed in seeds]
    members = []
    for seed, folder, (child, began) in started_runs:
        timed = finish_train(child, began, f"seed {seed}")
        members.append({"seed": seed, "run": str(folder), "command": " ".join(child.args[2:]), **timed,
                        **run_figures(folder)})
    trained = time.perf_counter() - started
    for m in members:
        print(f"seed {m['seed']}: model {m['model_dev_loss']:.4f}, mixture {m['mixture_dev_loss'] or float('nan'):.4f}, "
              f"{m['steps']:,} steps, {m['process_seconds']:.0f} s, {m['peak_rss_mib']:,} MiB", flush=True)
    ensemble_dir = out / "ensemble"
    ensemble = json_of(makemore("ensemble", *(m["run"] for m in members), "--equal", "--out", str(ensemble_dir),
                                "--json"))
    context = members[0]["ngram_context"]
    mixed = json_of(makemore("mix", str(ensemble_dir), "--json", *(["--ngram-context", str(context)] if context else [])))
    whole = time.perf_counter() - started
    report = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "date": datetime.date.today().isoformat(),
              "data": args.data, "budget": args.budget, "threads_per_run": threads,
              "command": "python scripts/side_by_side.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "members": members, "training_wall_seconds": round(trained, 1),
              "whole_wall_seconds": round(whole, 1),
              "ensemble_dev_loss": ensemble["dev_loss"], "ngram_context": mixed["ngram_context"],
              "ngram_dev_loss": mixed["ngram_dev_loss"], "mixture_weight": mixed["weight"],
              "mixture_dev_loss": mixed["mix_dev_loss"]}
    atomic_write_json(out / "side_by_side.json", report)
    if args.results:
        atomic_write_json(Path(args.results), report)
    print(f"ensemble of {runs}: model alone {ensemble['dev_loss']:.4f}; with Kneser-Ney {mixed['ngram_context']} "
          f"({mixed['ngram_dev_loss']:.4f}): {mixed['mix_dev_loss']:.4f}; trained in {trained:.0f} s, "
          f"{whole:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
