#!/usr/bin/env bash
# Issue 11's comparison on the lecture split (README, "Models"): every model's preset trained on
# names from scratch, the count models, an ensemble of the best neural runs and its mixture with
# Kneser-Ney. Dev loss picks and compares; the test split is read once, at the end, for these
# final models only. Run by `make figures`, or alone (about 2 hours on 2 CPU cores: 19 minutes
# for each of `best`'s three seeds and for `mlp-best`, 5 for each of `gru-long`'s three; the
# GRU seeds of 2026-11-23 were trained with TRAIN="gru-long:43 gru-long:44" JOBS=2, and the
# latest `best` seeds with TRAIN="best best:43 best:44" JOBS=2, in 42 minutes); writes
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

# the presets, cheapest first; each name is a preset of `makemore train`, and PRESET:SEED is that
# preset with --seed SEED (its run named PRESET-seedSEED): another member for the ensemble, and
# the spread between seeds in the table. TRAIN=... retrains only some of them (their runs and
# figures replaced, the others' kept) and rebuilds the whole table.
PRESETS=${PRESETS:-"bigram lecture bow rnn gru transformer default gru-long gru-long:43 gru-long:44 wavenet mlp-best best best:43 best:44"}
TRAIN=${TRAIN-$PRESETS}  # set and empty: train nothing, refit the ensemble and rebuild the table
# JOBS=2 trains two at a time: on 2 cores that suits the one-thread presets (rnn, gru, gru-long,
# best); the two-thread ones (the MLPs, bow, transformer, wavenet) would then time each other.
JOBS=${JOBS:-1}
run_name() { case $1 in *:*) echo "${1%%:*}-seed${1#*:}" ;; *) echo "$1" ;; esac; }
train_entry() {
    local name flags
    name=$(run_name "$1")
    flags=(--preset "${1%%:*}")
    case $1 in *:*) flags+=(--seed "${1#*:}") ;; esac
    step "train ${flags[*]}"
    rm -rf "${RUNS:?}/$name"
    "$MM" train --data names "${flags[@]}" --out "$RUNS/$name" --quiet >&2
    cp "$RUNS/$name/summary.json" "$OUT/compare/$name.json"
}
running=0
for entry in $TRAIN; do
    train_entry "$entry" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi  # a failure stops the script
done
while [ "$running" -gt 0 ]; do wait -n; running=$((running - 1)); done

step "count models"
"$MM" ngram --data names --max-context 6 --json > "$OUT/compare/ngram.json"

# the ensemble of the neural runs that are best on dev (chosen on dev, before any test figure)
MEMBERS=${MEMBERS:-"mlp-best default wavenet gru transformer gru-long gru-long-seed43 gru-long-seed44 best best-seed43 best-seed44"}
step "ensemble of $MEMBERS, and its mixture with Kneser-Ney"
rm -rf "$RUNS/ensemble"
"$MM" ensemble $(for m in $MEMBERS; do echo "$RUNS/$m"; done) --out "$RUNS/ensemble" --json \
    > "$OUT/compare/ensemble.json"
"$MM" mix "$RUNS/ensemble" --ngram-context 5 --json > "$OUT/compare/mix_ensemble.json"
"$MM" mix "$RUNS/best" --ngram-context 5 --json > "$OUT/compare/mix_best.json"

step "test loss, once, for the final models"
for name in $(for entry in $TRAIN; do run_name "$entry"; done) ensemble; do
    "$MM" eval "$RUNS/$name" --split test --json > "$OUT/compare/test_$name.json"
done
"$MM" eval "$RUNS/ensemble" --split test --mix --json > "$OUT/compare/test_mix_ensemble.json"
"$MM" eval "$RUNS/best" --split test --mix --json > "$OUT/compare/test_mix_best.json"
"$MM" ngram --data names --max-context 6 --test --json > "$OUT/compare/test_ngram.json"

"$PY" scripts/compare_table.py "$OUT/compare" "$PRESETS" > "$OUT/compare.md.tmp"  # a failed table keeps the old one
mv "$OUT/compare.md.tmp" "$OUT/compare.md"
cat "$OUT/compare.md"
