"""docs/budget.png and docs/results/budget.json: the best dev loss for a time budget (issue 12).

    python scripts/budget_plot.py [RECIPES_DIR]     # default runs/recipes (scripts/recipes.sh)

Reads src/makemore/recipes.json and the studies scripts/recipes.sh left in RECIPES_DIR/<budget>/
(every completed trial: its budget and dev loss), times the count models on names here (Kneser-Ney
of context 1..6: counting, tuning the discount on dev and scoring dev, the median of 3), and
adds the presets of docs/results/compare/ at their training time when they are there, and the
fresh `train --budget` runs of scripts/budget_runs.py (docs/results/budget_runs.json), the model
alone and its mixture with a count model, when that file is there.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import makemore as mm
from makemore import recipes
from makemore.ngram import NGramModel
from makemore.plots import plot_budget
from makemore.utils import cpu_name
from makemore.outputs import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def count_models(corpus, max_context: int = 6, repeats: int = 3) -> list[dict]:
    dev = corpus.encoded("dev")
    rows = []
    for k in range(1, max_context + 1):
        times, loss = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            model = NGramModel.from_words(corpus.splits["train"], corpus.vocab, k, "kneser_ney")
            model.tune(dev)
            loss = model.nll(dev)
            times.append(time.perf_counter() - t0)
        rows.append({"label": f"KN {k}", "context": k, "seconds": statistics.median(times), "dev_loss": loss,
                     "seconds_all": times})
    return rows


def main(recipes_dir: str = "runs/recipes") -> None:
    from makemore.tune import load_study

    table = recipes.load()
    if not table.get("recipes"):
        sys.exit("budget_plot: src/makemore/recipes.json has no recipes: run `make recipes` first")
    trials, best, recorded = [], [], ROOT / "docs/results/budget.json"
    for r in recipes.tuned_on_names(table):
        best.append({"seconds": r["budget"], "dev_loss": r["dev_loss"]})
        db = ROOT / recipes_dir / f"{r['budget']:g}" / "study.db"
        if db.is_file():
            study = load_study(r["study"], f"sqlite:///{db}")
            trials += [{"seconds": r["budget"], "dev_loss": t.value} for t in study.trials
                       if t.value is not None and t.state.name == "COMPLETE"]
    if not trials and recorded.is_file():  # the studies are gone (another machine): their trials were recorded
        earlier = json.loads(recorded.read_text())
        if earlier.get("recipes_date") == table["date"]:
            trials = earlier.get("trials", [])
            print(f"the studies are not in {recipes_dir}: their {len(trials)} trials as {recorded} recorded them")
    corpus = mm.load_corpus("names")
    counts = count_models(corpus)
    runs = []
    for preset in ("fast", "lecture", "default", "mlp-best", "best"):
        path = ROOT / "docs/results/compare" / f"{preset}.json"
        if preset == "fast":
            path = ROOT / "docs/results/fast.json"
        if path.is_file():
            s = json.loads(path.read_text())
            runs.append({"label": f"--preset {preset}", "seconds": s["seconds"], "dev_loss": s["dev_loss"]})
    budget_runs, fresh = [], ROOT / "docs/results/budget_runs.json"
    if fresh.is_file():
        measured = json.loads(fresh.read_text())
        budget_runs = [{"seconds": b["budget"], **{k: b[k] for k in ("dev_loss", "mix_dev_loss") if k in b}}
                       for b in measured["budgets"]]
    out = ROOT / "docs/budget.png"
    plot_budget(trials, best, counts, out, "Best dev loss for a time budget (names, 2 CPU cores)",
                f"{table['machine']}, recipes of {table['date']} ({len(trials)} tune trials); count models timed "
                f"on {cpu_name()}; squares: presets at their training time"
                + (f"; train --budget runs of {measured['date']} (median, range)" if budget_runs else ""),
                runs=runs, budget_runs=budget_runs)
    atomic_write_json(recorded, {"recipes": best, "trials": trials, "count_models": counts,
                                 "count_models_machine": cpu_name(), "date": time.strftime("%Y-%m-%d"),
                                 "presets": runs, "recipes_machine": table["machine"], "recipes_date": table["date"]})
    for c in counts:
        print(f"{c['label']}: dev {c['dev_loss']:.4f} in {c['seconds']:.2f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
