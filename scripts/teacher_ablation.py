"""What distillation from Kneser-Ney (train --teacher A) does to each time-budget recipe, the
steps held fixed: docs/results/teacher.json.

    python scripts/teacher_ablation.py [SPEC]   # SPEC: budget:A1/A2/...,... (default below)

A weight `recipe` is the one the budget's recipe trains with (its tuned weight, or
recipes.TEACHER_WEIGHT for a recipe tuned without the teacher). The budgets of SPEC replace their
rows in teacher.json; the other budgets' rows stay, each with its date and command.

For each budget, the recipe `train --budget S` trains on names (recipes.json, scaled as a budget
run scales it), with the number of steps that budget's fresh runs planned (the median in
docs/results/budget_runs.json, else the recipe's study), trained once per teacher weight A with
the same seed and fixed steps, so that only the targets differ: dev loss of the model alone and
of its mixture with the same Kneser-Ney model. One process, the fused engine, torch's threads.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from makemore import recipes
from makemore.data import load_corpus
from makemore.mixture import fit_mixture
from makemore.baselines import fit_on_dev
from makemore.predict import model_predictor
from makemore.fit import train
from makemore.outputs import atomic_write_json
from makemore.utils import cpu_name

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "teacher.json"
SPEC = "10:0/0.5/recipe,60:0/0.5/recipe,300:0/recipe"


def planned_steps(budget: float) -> int:
    path = ROOT / "docs" / "results" / "budget_runs.json"
    if path.is_file():
        for entry in json.loads(path.read_text())["budgets"]:
            if entry["budget"] == budget and "steps" in entry:
                return int(entry["steps"]["median"])
    return int(recipes.choose(budget, vocab_size=recipes.NAMES_VOCAB)["steps"])


def main(spec: str = SPEC) -> None:
    corpus = load_corpus("names")
    kn = fit_on_dev(corpus, recipes.MIX_CONTEXT)
    rows = []
    for part in spec.split(","):
        budget, _, weights = part.partition(":")
        budget = float(budget)
        model_cfg, base, _ = recipes.budget_configs(budget, corpus.vocab.size, len(corpus.encoded("train")))
        steps = planned_steps(budget)
        for weight in (base.teacher if w == "recipe" else float(w) for w in weights.split("/")):
            cfg = replace(base, budget=0.0, steps=steps, teacher=weight, teacher_context=recipes.MIX_CONTEXT)
            start = time.perf_counter()
            result = train(corpus, model_cfg, cfg, progress=False)
            seconds = time.perf_counter() - start
            _, mix = fit_mixture(model_predictor(result.model), corpus.splits["train"], corpus.splits["dev"],
                                 corpus.vocab, kn.context, ngram=kn)
            row = {"budget": budget, "teacher": weight, "recipe_teacher": base.teacher, "steps": steps,
                   "dev_loss": result.summary["dev_loss"], "train_loss": result.summary["train_loss"],
                   "mix_dev_loss": mix["mix_dev_loss"], "weight": mix["weight"], "seconds": round(seconds, 1),
                   "date": datetime.date.today().isoformat(), "command": f"python scripts/teacher_ablation.py {spec}"}
            rows.append(row)
            print(f"{budget:>5g} s recipe, {steps:,} steps, teacher {weight:g}: dev {row['dev_loss']:.4f}, "
                  f"mixture {row['mix_dev_loss']:.4f} ({seconds:.0f} s)", flush=True)
    done = {row["budget"] for row in rows}
    kept = []
    if OUT.is_file():  # earlier rows of the budgets not run now, with their own date and command
        old = json.loads(OUT.read_text())
        kept = [{"date": old.get("date"), "command": old.get("command"), **row}
                for row in old["runs"] if row["budget"] not in done]
    atomic_write_json(OUT, {"machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
                            "date": datetime.date.today().isoformat(),
                            "command": f"python scripts/teacher_ablation.py {spec}",
                            "runs": sorted(kept + rows, key=lambda row: row["budget"])})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:])
