"""The table of time-budget recipes (recipes.json, which recipes.py reads for `makemore train
--budget S`) written from `makemore tune --budget S` studies: each study's best trial is the
recipe for its budget, with what it was tuned on and the machine and date.

    python -m makemore.tune.recipes_table OUT.json STORAGE_URL=STUDY_NAME ...   # scripts/recipes.sh

It is part of tune, not of recipes: tune reads recipes (`--try recipe` starts a study from the
recipe `train --budget` takes now), so the two depend in one direction only.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

from .. import models
from ..errors import UserError
from ..recipes import NAMES_VOCAB, recipe_device
from ..outputs import atomic_write_json
from ..utils import cpu_name
from .report import best_trial
from .storage import STUDY_ATTR, load_study


def from_studies(studies: list[tuple[str, str]]) -> dict:
    """A recipes table from `makemore tune --budget S` studies, given as (storage URL, study
    name): each study's best trial is the recipe for its budget."""
    import torch

    cpu = cpu_name()
    recipes = []
    for url, name in studies:
        study = load_study(name, url)
        attrs = study.user_attrs.get(STUDY_ATTR, {})
        if not attrs.get("budget"):
            raise UserError(f"study {name!r} was not run with --budget: it has no time objective")
        t = best_trial(study)
        settings = {k: v for k, v in t.user_attrs["settings"].items() if k not in ("budget", "seed", "model")}
        model = attrs.get("model", models.DEFAULT_MODEL)
        recipes.append({"budget": attrs["budget"], "model": model, "preset": models.module(model).DEFAULT_PRESET,
                        "settings": settings,
                        "dev_loss": t.value, "train_loss": t.user_attrs.get("train_loss"),
                        "steps": t.user_attrs.get("steps_done"), "params": t.user_attrs.get("params"),
                        "study": name, "trial": t.number, "trials": len(study.trials),
                        "data": attrs.get("data"), "train_examples": attrs.get("train_examples"),
                        "vocab_size": attrs.get("vocab_size") or NAMES_VOCAB})
    recipes.sort(key=lambda r: (r["vocab_size"], r["budget"]))
    return {"machine": f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}",
            "date": datetime.date.today().isoformat(), "command": "scripts/recipes.sh", "recipes": recipes}


def main(argv: list[str] | None = None) -> int:
    """python -m makemore.tune.recipes_table [--add] OUT.json URL=STUDY ...: write a recipes table
    (scripts/recipes.sh); with --add, put the studies' recipes into the table OUT.json holds, in
    place of those of the same budget, vocabulary and device, each with its own machine and date."""
    args = sys.argv[1:] if argv is None else argv
    add = bool(args) and args[0] == "--add"
    args = args[1:] if add else args
    if len(args) < 2 or any("=" not in a for a in args[1:]):
        print("usage: python -m makemore.tune.recipes_table [--add] OUT.json STORAGE_URL=STUDY_NAME ...", file=sys.stderr)
        return 2
    try:
        table = from_studies([tuple(a.rsplit("=", 1)) for a in args[1:]])
    except UserError as e:
        print(f"makemore: error: {e}", file=sys.stderr)
        return 1
    out = Path(args[0])
    old = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {"recipes": []}
    if add:
        new = [{**r, "machine": table["machine"], "date": table["date"]} for r in table["recipes"]]
        same = {(r["budget"], r["vocab_size"], recipe_device(r)) for r in new}
        kept = [r for r in old.get("recipes", [])
                if (r["budget"], r.get("vocab_size", NAMES_VOCAB), recipe_device(r)) not in same]
        table = {**old, "recipes": sorted(kept + new, key=lambda r: (r.get("vocab_size", NAMES_VOCAB), r["budget"]))}
    else:  # the recipes another device's studies found stay (recipes.recipe_device), and those of hand probes
        table["recipes"] += [r for r in old.get("recipes", []) if recipe_device(r) != "cpu" or r.get("study") is None]
    atomic_write_json(out, table)
    for r in table["recipes"]:
        if r.get("study") is None or r.get("dev_loss") is None:  # another device's or a probe's, kept as it was
            continue
        print(f"{r['budget']:>6g} s  dev {r['dev_loss']:.4f}  {r['params']:,} params  {r['steps']} steps  "
              f"(study {r['study']}, trial {r['trial']} of {r['trials']})")
    print(f"wrote {args[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
