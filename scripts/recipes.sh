#!/usr/bin/env bash
# The time-budget recipes of `makemore train --budget S`: one `makemore tune --budget S` study per
# budget on names.txt, each study's best trial written to src/makemore/recipes.json with the
# machine and date (`make recipes`; about 80 minutes on 2 CPU cores: run it on an idle machine,
# since every trial is a race against the clock).
#
# Each study starts from the recipe `train --budget` takes now for its budget and the presets
# known to be good (--try recipe,fast,default,mlp-best) and searches around them with TPE (the
# teacher's weight included: SEARCH_SPACE in models/mlp.py); one worker with every core, as `makemore train`
# runs for a user.
set -euo pipefail
cd "$(dirname "$0")/.."
MM=${MM:-.venv/bin/makemore}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/recipes}
if [ -z "${MAKEMORE_DATA_DIR:-}" ] && [ -f ../shared/data/names.txt ]; then
    export MAKEMORE_DATA_DIR=$(cd ../shared/data && pwd)
fi
# budget seconds : trials
PLAN=${PLAN:-"10:24 60:16 300:8"}
BIG_PLAN=${BIG_PLAN:-"10:16 60:8"}
BIG=${BIG:-runs/big/names.txt}
SPACE='{"block_size": [3, 12], "emb_dim": [8, 64], "hidden": [64, 1024], "batch_size": [32, 1024]}'
studies=()
for item in $PLAN; do
    budget=${item%%:*}; trials=${item##*:}
    echo "== tune --budget $budget ($trials trials)" >&2
    "$MM" tune --data names --budget "$budget" --trials "$trials" --study "budget-$budget" \
        --out "$OUT/$budget" --threads 0 --try "${TRY:-recipe,fast,default,mlp-best}" --space "$SPACE" >&2
    studies+=("sqlite:///$(cd "$OUT/$budget" && pwd)/study.db=budget-$budget")
done
if [ -n "$BIG_PLAN" ]; then
    [ -f "$BIG" ] || "$PY" scripts/make_big_list.py --out "$BIG"
    for item in $BIG_PLAN; do
        budget=${item%%:*}; trials=${item##*:}
        echo "== tune --budget $budget ($trials trials) on $BIG" >&2
        "$MM" tune --data "$BIG" --budget "$budget" --trials "$trials" --study "budget-$budget-big" \
            --out "$OUT/big-$budget" --threads 0 --try recipe,fast --space "$SPACE" >&2
        studies+=("sqlite:///$(cd "$OUT/big-$budget" && pwd)/study.db=budget-$budget-big")
    done
fi
"$PY" -m makemore.tune.recipes_table "${RECIPES:-src/makemore/recipes.json}" "${studies[@]}"
# fresh `train --budget` runs of the new recipes, as a user gets them (docs/results/budget_runs.json)
"$PY" scripts/budget_runs.py
# what the Kneser-Ney teacher of a budget run does to each recipe, steps fixed (docs/results/teacher.json)
"$PY" scripts/teacher_ablation.py
# the plot of the README's "Time budgets": best dev loss against seconds, with the count models
"$PY" scripts/budget_plot.py "$OUT"
