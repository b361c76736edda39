"""The README's model comparison table from the JSON files scripts/compare_models.sh writes.

    python scripts/compare_table.py docs/results/compare "bigram lecture ... gru-long:43 ... best" > docs/results/compare.md

Also writes DIR/../compare.json (the same rows, as numbers). Every row's dev loss chose
nothing after the fact; the test column is the one reading of the test split.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

from makemore.config import PRESETS
from makemore.outputs import atomic_write_json
from makemore.utils import cpu_name


def read(folder: Path, name: str) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores"


def main(folder: str, presets: str) -> None:
    folder = Path(folder)
    rows = []
    runs = {}  # run name -> its row
    for entry in presets.split():
        preset, _, seed = entry.partition(":")  # PRESET:SEED is the preset with --seed SEED
        name = f"{preset}-seed{seed}" if seed else preset
        s = read(folder, name)
        runs[name] = {"model": PRESETS[preset]["model"], "what": f"`--preset {preset}" + (f" --seed {seed}`" if seed else "`"),
                      "params": s["params"], "seconds": s["seconds"], "steps": s["steps"], "dev_loss": s["dev_loss"],
                      "test_loss": read(folder, f"test_{name}")["loss"]}
        rows.append(runs[name])
    ngram, ngram_test = read(folder, "ngram"), read(folder, "test_ngram")
    for method, label in (("add_alpha", "add-alpha"), ("kneser_ney", "Kneser-Ney")):
        best = min(range(len(ngram)), key=lambda i: ngram[i][method]["dev_loss"])  # chosen on dev
        rows.append({"model": f"counts, {label}", "what": f"context {ngram[best]['context']} (`makemore ngram`)",
                     "params": None, "seconds": None, "steps": None, "dev_loss": ngram[best][method]["dev_loss"],
                     "test_loss": ngram_test[best][method]["test_loss"]})
    ens = read(folder, "ensemble")
    members = list(ens["member_dev_loss"])
    member_rows = [runs[m] for m in members]
    weights = ens.get("weights") or {m: 1 / len(members) for m in members}
    rows.append({"model": "ensemble", "what": " + ".join(f"{weights[m]:.2f} {m}" for m in members)
                 + " (`makemore ensemble`, weights fitted on dev)",
                 "params": sum(r["params"] for r in member_rows), "seconds": sum(r["seconds"] for r in member_rows),
                 "steps": None, "dev_loss": ens["dev_loss"], "test_loss": read(folder, "test_ensemble")["loss"]})
    for name, label, base in (("best", "best + Kneser-Ney", runs["best"]),
                              ("ensemble", "ensemble + Kneser-Ney", rows[-1])):
        mix = read(folder, f"mix_{name}")
        rows.append({"model": "mixture", "what": f"{label} 5-gram, weight {mix['weight']:.2f} (`makemore mix`)",
                     "params": base["params"], "seconds": base["seconds"], "steps": None, "dev_loss": mix["mix_dev_loss"],
                     "test_loss": read(folder, f"test_mix_{name}")["loss"]})
    when = datetime.date.fromtimestamp((folder / "ensemble.json").stat().st_mtime).isoformat()
    atomic_write_json(folder.parent / "compare.json", {"machine": machine(), "date": when, "rows": rows})
    # steps beside the time: a budget preset plans its steps from the machine's speed at the start,
    # so two runs of one recipe can differ in steps (and a little in loss) by the machine's moment
    print("| model | recipe | parameters | training time | steps | dev loss | test loss |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        params = f"{r['params']:,}" if r["params"] is not None else "-"
        secs = "-" if r["seconds"] is None else (f"{r['seconds']:.0f} s" if r["seconds"] < 120 else f"{r['seconds'] / 60:.1f} min")
        steps = "-" if r["steps"] is None else f"{r['steps']:,}"
        print(f"| {r['model']} | {r['what']} | {params} | {secs} | {steps} | {r['dev_loss']:.4f} | {r['test_loss']:.4f} |")
    print(f"\n{machine()}, {when}; `bash scripts/compare_models.sh` (in `make figures`).")


if __name__ == "__main__":
    main(*sys.argv[1:])
