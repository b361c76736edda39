"""What a user gets from `makemore train --data names --budget S`, measured: docs/results/budget_runs.json.

    python scripts/budget_runs.py [SPEC]     # SPEC: budget:repeats,... (default 10:3,60:3,300:2)

Each repeat is a fresh `makemore train --budget S` process (the recipe of recipes.json, its steps
planned here, the mixture with its count model fitted on dev), as a new user would run it. The
JSON keeps every run's model, count model and mixture dev loss, which count model it was (Kneser-Ney
or the learned interpolation), its steps and seconds, and the median and range per budget;
scripts/budget_plot.py draws them. The tune studies' figures (recipes.json) are the best of many
trials, so a fresh run's dev loss is expected a little above them.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from makemore.outputs import atomic_write_json
from makemore.utils import cpu_name

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "budget-runs"
OUT = ROOT / "docs" / "results" / "budget_runs.json"


def parse_spec(spec: str) -> list[tuple[float, int]]:
    pairs = []
    for part in spec.split(","):
        budget, _, repeats = part.partition(":")
        pairs.append((float(budget), int(repeats or 1)))
    return pairs


def one_run(budget: float, repeat: int) -> dict:
    out = RUNS / f"{budget:g}-{repeat}"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "makemore", "train", "--data", "names", "--budget", f"{budget:g}",
                    "--out", str(out), "--quiet"], check=True, cwd=ROOT)
    s = json.loads((out / "summary.json").read_text())
    mix = s.get("mix") or {}
    return {"budget": budget, "repeat": repeat, "dev_loss": s["dev_loss"], "mix_dev_loss": mix.get("mix_dev_loss"),
            "ngram_dev_loss": mix.get("ngram_dev_loss"), "weight": mix.get("weight"),
            "count_model": mix.get("count_model", "kneser_ney"), "learned_steps": mix.get("learned_steps"),
            "count_seconds": mix.get("count_seconds"), "seconds": s["seconds"], "steps": s["steps"],
            "params": s["params"], "precision": s.get("precision"), "threads": s.get("threads")}


def main(spec: str = "10:3,60:3,300:2") -> None:
    runs = []
    for budget, repeats in parse_spec(spec):
        for r in range(repeats):
            row = one_run(budget, r)
            runs.append(row)
            print(f"{budget:>5g} s #{r}: model dev {row['dev_loss']:.4f}, {row['count_model']} "
                  f"{row['ngram_dev_loss']:.4f}, mixture {row['mix_dev_loss']:.4f}, {row['steps']:,} steps in "
                  f"{row['seconds']:.1f} s ({row['precision']}, {row['threads']} thread(s))", flush=True)
    summary = []
    for budget, _ in parse_spec(spec):
        rows = [r for r in runs if r["budget"] == budget]
        entry = {"budget": budget, "runs": len(rows)}
        for key in ("dev_loss", "ngram_dev_loss", "mix_dev_loss", "steps", "seconds"):
            values = [r[key] for r in rows if r[key] is not None]
            if values:
                entry[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        summary.append(entry)
    atomic_write_json(OUT, {"machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
                            "date": datetime.date.today().isoformat(),
                            "command": f"python scripts/budget_runs.py {spec}", "budgets": summary, "runs": runs})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:])
