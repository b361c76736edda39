#!/usr/bin/env bash
# Every figure and table of the README, from scratch: `make figures`.
#
# Trains the presets on names into runs/figures/, runs each experiment command, and copies its
# picture to docs/ and its JSON to docs/results/, with the machine and date in
# docs/results/machine.json. Takes about an hour on 2 CPU cores (45 minutes of it the comparison of
# models, scripts/compare_models.sh). The tune plots come from an
# existing study: set TUNE_STORAGE (and TUNE_STUDY) to include them.
set -euo pipefail
cd "$(dirname "$0")/.."
MM=${MM:-.venv/bin/makemore}
PY=${PY:-.venv/bin/python}
RUNS=runs/figures
DOCS=docs
mkdir -p "$RUNS" "$DOCS/results"
# as the Makefile does: the lecture's names.txt from the shared folder beside the project
if [ -z "${MAKEMORE_DATA_DIR:-}" ] && [ -f ../shared/data/names.txt ]; then
    export MAKEMORE_DATA_DIR=$(cd ../shared/data && pwd)
fi

step() { echo "== $*" >&2; }
# train PRESET [flags]: a fresh run of the preset, its summary kept as docs/results/PRESET.json
train() {
    local name=$1; shift
    rm -rf "$RUNS/$name"
    step "train $name"
    "$MM" train --data names --out "$RUNS/$name" --quiet "$@" >&2
    cp "$RUNS/$name/summary.json" "$DOCS/results/$name.json"
}

$PY - <<'EOF' > "$DOCS/results/machine.json"
import datetime, json, os, torch
from makemore.utils import cpu_name
print(json.dumps({"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                  "date": datetime.date.today().isoformat()}, indent=2))
EOF

# every model's preset (lecture and default among them) into $RUNS, the comparison of models,
# the ensemble and the mixture, with the test split read once at the end (README, "Models")
step "compare models"
RUNS="$RUNS" bash scripts/compare_models.sh >&2
for name in lecture default; do cp "$RUNS/$name/summary.json" "$DOCS/results/$name.json"; done
train tiny2d --preset tiny2d
train fast --preset fast

step "plot, embeddings"
"$MM" plot "$RUNS/lecture" --out "$DOCS/loss_lecture.png"
"$MM" plot "$RUNS/default" --out "$DOCS/loss_default.png"
"$MM" embeddings "$RUNS/tiny2d" --out "$DOCS/embeddings_tiny2d.png" --json > "$DOCS/results/embeddings_tiny2d.json"
"$MM" embeddings "$RUNS/default" --out "$DOCS/embeddings_default.png" --json > "$DOCS/results/embeddings_default.json"

step "lr-find"
"$MM" lr-find --data names --preset lecture --out "$RUNS/lr-find" --json > "$DOCS/results/lr_find.json"
cp "$RUNS/lr-find/lr_find.png" "$DOCS/lr_find.png"

step "sweep"
"$MM" sweep --data names --preset lecture --steps 20000 \
    --grid "emb_dim=2,10,24 hidden=100,200,400 block_size=3,5" --out "$RUNS/sweep" --json > "$DOCS/results/sweep.json"
cp "$RUNS/sweep/sweep.png" "$DOCS/sweep.png"

step "ngram, mix"
"$MM" ngram --data names --max-context 6 --json > "$DOCS/results/ngram.json"
for name in lecture fast default; do
    "$MM" mix "$RUNS/$name" --ngram-context 5 --json > "$DOCS/results/mix_$name.json"
done

step "samples"
"$MM" sample "$RUNS/default" -n 20 --seed 1 --json > "$DOCS/results/samples_default.json"

if [ -n "${TUNE_STORAGE:-}" ]; then
    step "tune report"
    "$MM" tune --report --study "${TUNE_STUDY:-makemore}" --storage "$TUNE_STORAGE" --out "$RUNS/tune" --json \
        > "$DOCS/results/tune.json"
    for png in "$RUNS"/tune/*.png; do cp "$png" "$DOCS/tune_$(basename "$png")"; done
fi
step "done: pictures in $DOCS/, figures in $DOCS/results/"
