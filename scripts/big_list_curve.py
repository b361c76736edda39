"""The learning curve of a budget run on the real big list: the neural model, the count model and
their mixture (the run's result) after 30, 120, 600 and 1,800 seconds (issue 25).

Each budget is a fresh `makemore train --data LIST --budget S` (its recipe, its Kneser-Ney model
counted inside the budget, its mixture), timed whole and with its peak memory; the figures come
from each run's summary.json and mix.json, over the whole dev split: where a short budget's run
reported its final figures over a subset (budget.FINAL_SHARE), the mixture with the run's own
count model is fitted again over the whole split after the timing, and its figures are the row's. Writes
docs/results/wordfreq_curve.json and
docs/wordfreq_curve.png. About 45 minutes on 2 cores, on an otherwise idle machine.

    .venv/bin/python scripts/make_wordfreq_list.py
    .venv/bin/python scripts/big_list_curve.py [--budgets 30,120,600,1800] [--data runs/wordfreq/words.txt]
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

from makemore.outputs import atomic_write_json  # noqa: E402
from makemore.utils import cpu_name  # noqa: E402

OUT = ROOT / "docs" / "results" / "wordfreq_curve.json"
PLOT = ROOT / "docs" / "wordfreq_curve.png"


def run_figures(out: Path) -> dict:
    """A finished budget run's figures over the whole dev split: where the run reported its final
    figures over a subset (budget.FINAL_SHARE), the mixture is fitted again over the whole split
    with the run's kept count model (mixture.attach; untimed) and its figures are the run's."""
    summary = json.loads((out / "summary.json").read_text())
    mix = json.loads((out / "mix.json").read_text()) if (out / "mix.json").is_file() else None
    if mix is not None and mix.get("dev_examples"):  # the run's own count model, kept: not counted or trained again
        from makemore.mixture import attach, kept_count_model
        from makemore.runs import load_any

        run = load_any(out)
        attach(run, kept_count_model(run, int(mix["ngram_context"]), mix["discount"], mix.get("count_model", "kneser_ney")),
               count_seconds=mix.get("count_seconds"))
        summary = json.loads((out / "summary.json").read_text())
        mix = json.loads((out / "mix.json").read_text())
        summary["dev_loss"] = mix["mlp_dev_loss"]
    return {"steps": summary["steps"], "model": summary["model"], "params": summary["params"],
            "model_dev_loss": summary["dev_loss"],
            "count_model": None if mix is None else mix.get("count_model", "kneser_ney"),
            "ngram_context": None if mix is None else mix["ngram_context"],
            "ngram_dev_loss": None if mix is None else mix["ngram_dev_loss"],
            "mixture_dev_loss": None if mix is None else mix["mix_dev_loss"],
            "result": None if mix is None else mix["result"],
            "result_dev_loss": summary.get("result", {}).get("dev_loss", summary["dev_loss"]),
            "recipe_budget": (summary.get("recipe") or {}).get("budget")}


def run_budget(data: str, budget: float, folder: Path) -> dict:
    """A fresh `makemore train --data DATA --budget S` process: its whole wall time, its own peak
    memory, its notes and its figures (run_figures)."""
    out = folder / f"budget-{budget:g}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "makemore", "train", "--data", data, "--budget", f"{budget:g}",
                              "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, cwd=ROOT)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory (ru_maxrss, KiB)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"budget {budget:g}: {stderr.strip()}")
    return {"budget": budget, "process_seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            **run_figures(out), "notes": stderr.strip().splitlines()}


def kneser_ney_5(data: str) -> float:
    """The baseline of the issue's targets: Kneser-Ney of 5 characters, tuned on dev, its dev loss."""
    from makemore.data import load_corpus
    from makemore.baselines import fit_on_dev

    corpus = load_corpus(data)
    return fit_on_dev(corpus, 5, "kneser_ney").nll(corpus.encoded("dev"))


def plot(rows: list[dict], path: Path, title: str, baseline: float) -> None:
    from makemore.plots import new_figure, save_figure

    fig = new_figure()
    ax = fig.add_subplot()
    budgets = [r["budget"] for r in rows]
    ax.plot(budgets, [r["model_dev_loss"] for r in rows], "o-", label="neural model alone")
    ax.plot(budgets, [r["result_dev_loss"] for r in rows], "s-", label="the run's result (the mixture)")
    counted = [r for r in rows if r["ngram_dev_loss"] is not None]
    if counted:
        which = {r["count_model"] for r in counted}
        name = "learned count model" if which == {"learned"} else "Kneser-Ney" if which == {"kneser_ney"} else "count model"
        ax.plot([r["budget"] for r in counted], [r["ngram_dev_loss"] for r in counted], "^:", color="gray",
                label=f"the run's {name} ({counted[-1]['ngram_context']} characters)")
    ax.axhline(baseline, ls="--", color="black", lw=0.8, label="Kneser-Ney, 5 characters")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:g} s" for b in budgets])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training budget (train --budget)")
    ax.set_ylabel("dev loss (nats per character)")
    ax.set_title(title, fontsize=10)
    ax.legend()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="30,120,600,1800")
    p.add_argument("--data", default=str(ROOT / "runs" / "wordfreq" / "words.txt"))
    p.add_argument("--runs", default=str(ROOT / "runs" / "curve"))
    p.add_argument("--results", default=str(OUT), help=f"the JSON file to write (default {OUT.relative_to(ROOT)})")
    p.add_argument("--plot", default=str(PLOT), help=f"the picture to write (default {PLOT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    if not Path(args.data).is_file():
        print(f"{args.data} not found: make it with scripts/make_wordfreq_list.py", file=sys.stderr)
        return 1
    baseline = kneser_ney_5(args.data)
    print(f"Kneser-Ney 5: dev {baseline:.4f}", flush=True)
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        row = run_budget(args.data, budget, Path(args.runs))
        rows.append(row)
        counted = (f"{row['count_model']} {row['ngram_context']} {row['ngram_dev_loss']:.4f}, "
                   f"mixture {row['mixture_dev_loss']:.4f}"
                   if row["ngram_dev_loss"] is not None else "not counted")
        print(f"{budget:>6g} s: model {row['model_dev_loss']:.4f}, {counted} ({row['steps']:,} steps, "
              f"{row['process_seconds']:.0f} s, {row['peak_rss_mib']:,} MiB)", flush=True)
    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    atomic_write_json(Path(args.results), {"machine": machine, "date": datetime.date.today().isoformat(), "data": args.data,
                            "kneser_ney_5_dev_loss": baseline,
                            "command": "python scripts/big_list_curve.py " + " ".join(argv if argv is not None else sys.argv[1:]), "runs": rows})
    title = (f"train --budget S on the wordfreq list (824,057 words, 42 languages)\n"
             f"{machine}, {datetime.date.today().isoformat()}")
    plot(rows, Path(args.plot), title, baseline)
    print(f"wrote {args.results} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
