#!/usr/bin/env bash
# Issue 11's comparison on the lecture split (README, "Models"): every model's preset trained on
# names from scratch, the count models, an ensemble of the best neural runs and its mixture with
# Kneser-Ney. Dev loss picks and compares; the test split is read once, at the end, for these
# final models only. Run by `make figures`, or alone (about 70 minutes on 2 CPU cores, 19 of
# them the `best` preset's budget, 19 `gru-best`'s, 5 `gru-long`'s); writes
# docs/results/compare.json and compare.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MM=${MM:-.venv/bin/makemore}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/compare}
OUT=docs/results
if [ -z "${MAKEMORE_DATA_DIR:-}" ] && [ -f ../shared/data/names.txt ]; then
    export MAKEMORE_DATA_DIR=$(cd ../shared/data && pwd)
fi
mkdir -p "$RUNS" "$OUT/compare"
step() { echo "== $*" >&2; }

# the presets, cheapest first; each name is a preset of `makemore train`. TRAIN=... retrains only
# some of them (their runs and figures replaced, the others' kept) and rebuilds the whole table.
PRESETS=${PRESETS:-"bigram lecture bow rnn gru transformer default gru-long wavenet best gru-best"}
TRAIN=${TRAIN-$PRESETS}  # set and empty: train nothing, refit the ensemble and rebuild the table
for preset in $TRAIN; do
    step "train --preset $preset"
    rm -rf "${RUNS:?}/$preset"
    "$MM" train --data names --preset "$preset" --out "$RUNS/$preset" --quiet >&2
    cp "$RUNS/$preset/summary.json" "$OUT/compare/$preset.json"
done

step "count models"
"$MM" ngram --data names --max-context 6 --json > "$OUT/compare/ngram.json"

# the ensemble of the neural runs that are best on dev (chosen on dev, before any test figure)
MEMBERS=${MEMBERS:-"best default wavenet gru transformer gru-long gru-best"}
step "ensemble of $MEMBERS, and its mixture with Kneser-Ney"
rm -rf "$RUNS/ensemble"
"$MM" ensemble $(for m in $MEMBERS; do echo "$RUNS/$m"; done) --out "$RUNS/ensemble" --json \
    > "$OUT/compare/ensemble.json"
"$MM" mix "$RUNS/ensemble" --ngram-context 5 --json > "$OUT/compare/mix_ensemble.json"
"$MM" mix "$RUNS/best" --ngram-context 5 --json > "$OUT/compare/mix_best.json"

step "test loss, once, for the final models"
for preset in $TRAIN ensemble; do
    "$MM" eval "$RUNS/$preset" --split test --json > "$OUT/compare/test_$preset.json"
done
"$MM" eval "$RUNS/ensemble" --split test --mix --json > "$OUT/compare/test_mix_ensemble.json"
"$MM" eval "$RUNS/best" --split test --mix --json > "$OUT/compare/test_mix_best.json"
"$MM" ngram --data names --max-context 6 --test --json > "$OUT/compare/test_ngram.json"

"$PY" scripts/compare_table.py "$OUT/compare" "$PRESETS" > "$OUT/compare.md.tmp"  # a failed table keeps the old one
mv "$OUT/compare.md.tmp" "$OUT/compare.md"
cat "$OUT/compare.md"
