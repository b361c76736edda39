"""A budget run's seeds side by side against in turn and against one seed: docs/results/seeds_runs_*.json.

    python scripts/seeds_runs.py --data names --budget 60 --repeats 3 [--seeds 2] [--ways side_by_side,...]

Each repeat trains (`--ways`, default all three) fresh processes, one after another, each alone on the machine:
`makemore train --budget S` (one seed), `makemore train --budget S --seeds K` (its seeds side by
side, a process each: the default on a CPU with K cores), and the same seeds in turn in one loop
(`makemore.train(..., processes=False)`). It records each one's wall time, steps per member, the
dev loss of its neural model (the ensemble's for K seeds) and of its result (the mixture with
Kneser-Ney), the peak memory of its largest process, and the medians per way (docs/budgets.md, "Seeds side by side").
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_commands import timed_command  # noqa: E402

from makemore.devices import usable_cores
from makemore.outputs import atomic_write_json
from makemore.utils import cpu_name

ROOT = Path(__file__).resolve().parents[1]
IN_TURN = ("import sys, makemore as mm; mm.train(mm.load_corpus(sys.argv[1]), budget=float(sys.argv[2]), "
           "seeds=int(sys.argv[3]), out=sys.argv[4], progress=False, processes=False)")


WAYS = ("one_seed", "side_by_side", "in_turn")


def command(way: str, data: str, budget: float, seeds: int, out: Path) -> list[str]:
    if way == "in_turn":
        return [sys.executable, "-c", IN_TURN, data, f"{budget:g}", str(seeds), str(out)]
    return [sys.executable, "-m", "makemore", "train", "--data", data, "--budget", f"{budget:g}", "--out", str(out),
            "--quiet", *(["--seeds", str(seeds)] if way == "side_by_side" else [])]


def read_run(out: Path) -> dict:
    """Steps per member, the neural model's and the result's dev loss of a run or an ensemble."""
    mix = json.loads((out / "mix.json").read_text())
    members = [out] if (out / "summary.json").exists() else sorted(p.parent for p in out.glob("seed-*/summary.json"))
    summaries = [json.loads((m / "summary.json").read_text()) for m in members]
    # a thread trial's choice, else the threads the run was given
    threads = [s.get("threads") or s.get("setup", {}).get("threads") for s in summaries]
    return {"steps": [s["steps"] for s in summaries], "threads": threads,
            "model_dev_loss": mix["mlp_dev_loss"], "count_model": mix.get("count_model", "kneser_ney"),
            "count_model_context": mix["ngram_context"], "count_model_dev_loss": mix["ngram_dev_loss"],
            "count_seconds": mix.get("count_seconds"), "learned_steps": mix.get("learned_steps"),
            "learned_apart": mix.get("learned_apart", False), "result": mix["result"],
            "result_dev_loss": {"model": mix["mlp_dev_loss"], "ngram": mix["ngram_dev_loss"],
                                "mixture": mix["mix_dev_loss"]}[mix["result"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="names")
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ways", default=",".join(WAYS), help=f"some of {','.join(WAYS)}")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "seeds-runs"))
    parser.add_argument("--results", help="the JSON file to write (default docs/results/seeds_runs_<data>_<S>.json)")
    args = parser.parse_args()
    if not set(args.ways.split(",")) <= set(WAYS):
        parser.error(f"--ways: some of {','.join(WAYS)}, got {args.ways}")
    stem = Path(args.data).stem if args.data != "names" else "names"
    results = Path(args.results or ROOT / "docs" / "results" / f"seeds_runs_{stem}_{args.budget:g}.json")
    rows = []
    ways = args.ways.split(",")
    for repeat in range(args.repeats):
        for way in ways:
            out = Path(args.runs) / f"{stem}-{args.budget:g}-{way}-{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            # the peak covers the member processes the run waited for: the largest of them
            seconds, peak_mib, together_mib = timed_command(command(way, args.data, args.budget, args.seeds, out),
                                                            f"{way} #{repeat}", cwd=ROOT)
            row = {"way": way, "repeat": repeat, "wall_seconds": seconds, "peak_mib_per_process": peak_mib,
                   "peak_mib_together": together_mib, **read_run(out)}
            rows.append(row)
            print(f"{way:>12} #{repeat}: steps {row['steps']}, model {row['model_dev_loss']:.4f}, "
                  f"result {row['result_dev_loss']:.4f} ({row['result']}), {row['wall_seconds']:.0f} s, "
                  f"{row['peak_mib_per_process']:,.0f} MiB largest process, {together_mib:,.0f} MiB together", flush=True)
    medians = {way: {key: statistics.median(r[key] for r in rows if r["way"] == way)
                     for key in ("model_dev_loss", "result_dev_loss", "wall_seconds")}
               | {"steps_per_member": statistics.median(s for r in rows if r["way"] == way for s in r["steps"])}
               for way in ways}
    atomic_write_json(results, {
        "command": f"python scripts/seeds_runs.py --data {args.data} --budget {args.budget:g} --seeds {args.seeds} "
                   f"--repeats {args.repeats} --ways {args.ways}",
        "machine": f"{cpu_name()}, {usable_cores()} cores, torch {torch.__version__}",
        "date": datetime.date.today().isoformat(), "seeds": args.seeds, "budget": args.budget, "runs": rows,
        "medians": medians})
    for way, m in medians.items():
        print(f"{way:>12}: model {m['model_dev_loss']:.4f}, result {m['result_dev_loss']:.4f}, "
              f"{m['steps_per_member']:,.0f} steps per member, {m['wall_seconds']:.0f} s (medians)")


if __name__ == "__main__":
    main()
