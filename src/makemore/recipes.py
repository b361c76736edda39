"""The best recipe known for a time budget: what `makemore train --budget S` trains when no
--preset is given.

The recipes are data (recipes.json beside this file), written by `scripts/recipes.sh`: a
`makemore tune --budget S` study for each budget, whose best trial becomes the recipe for that
budget, with the machine, the date, the dev loss it reached and the data it was tuned on. The
studies run on names.txt (27 characters) and on a big list of 3,653 characters
(scripts/make_big_list.py): what a step costs, and so what fits in a budget, is set by the
vocabulary (the output layer is hidden x V), and a recipe found on 27 characters is four times
too wide for thousands (names' 10-second recipe reached dev 3.13 in 10 s on the big list, the
big list's own 2.70). A run takes the recipes tuned on the vocabulary nearest its data's (by
ratio), and among them the one of the largest budget it covers (the steps are planned from the
time a step takes, whatever the recipe).

On other data the recipe is scaled by how often the budget lets the model see each example.
Dropout and weight decay were tuned against names' 182,441 training examples, which a budget
run sees many times over; on a list ten times larger the same steps see each example a tenth
as often, and the regularisation that fought over-fitting would only slow learning. They are
multiplied by min(1, names' training examples / the data's); a smaller list keeps them. And
Bengio's direct connections, block_size * emb_dim * V weights, are cheap for names' 27
characters (7,128 of the 10-second recipe's 93,305 parameters) but a large share of a model on a
list of thousands of characters (964k of 2.2M for 3,653), where they double the cost of the
V-wide products: a recipe drops them where they would be more than DIRECT_MAX_SHARE of the model.
(With the adaptive softmax, softmax auto's choice there, they feed its head alone and stay.)

A budget run's model is then mixed with a Kneser-Ney model of MIX_CONTEXT characters (Bengio et
al. 2003, sec. 4: the MLP and the count model err differently), the weight fitted on dev: on
names the count model takes 0.2 s of the budget and the mixture beats both parts at every budget
(README, "Time budgets"). The counting is timed and taken out of the budget; where it would take
more than MIX_SHARE of it (a short budget on a big list), the run trains the model alone.

The same count model is the MLP's teacher (distillation, TrainConfig.teacher): each target is
a share of its distribution (the recipe's tuned `teacher`, else TEACHER_WEIGHT) and the rest
the one-hot next character. Its distributions for
every training example are made inside the budget too (0.2 s on names); where they would not fit
in memory (ngram.TEACHER_MAX_BYTES: thousands of characters) the run trains on one-hot targets.
`--teacher 0` turns it off, `--no-mix` the mixture.
"""

from __future__ import annotations

import json
import math
import time
from functools import lru_cache
from pathlib import Path

from .errors import UserError
from .ngram import TEACHER_MAX_BYTES, teacher_bytes
from .utils import cpu_name

RECIPES_FILE = Path(__file__).with_name("recipes.json")
# A budget run's MLP is distilled from the same Kneser-Ney model (TrainConfig.teacher) with the
# share of each target its recipe was tuned with (tune's SPACE has `teacher`), or, for a recipe
# tuned without it, this one: on names, recipe and steps fixed, 0.5 gained 0.011-0.014 dev at 10,
# 60 and 300 s over none (scripts/teacher_ablation.py; README, "Time budgets").
TEACHER_WEIGHT = 0.5
REGULARISERS = ("dropout", "weight_decay")
# The share of a model's parameters past which a recipe drops its direct connections (module doc):
# 8-24% on names in the recipes found so far; at 44% (the 10-second recipe on the 700k-line list
# of 3,653 characters, `train --budget 20`, 2026-11-23) they took 1.8 GB and ended at dev 3.12
# in 252 steps, where the same run without them took 580 MB and reached 2.82 in 621.
DIRECT_MAX_SHARE = 1 / 3
MIX_CONTEXT = 5  # the best count model on names (docs/results/count.md)
MIX_SHARE = 0.1
# Training examples a Kneser-Ney model of 5 characters counts and tunes per second, for the
# decision to count at all: 1.1M/s on names on the 2-core machine of the README, less on a
# big vocabulary; a low figure errs towards training the model alone.
COUNT_RATE = 400_000
NAMES_VOCAB = 27  # names.txt's 26 letters and the boundary '.': what a recipe without vocab_size was tuned on


@lru_cache(maxsize=1)
def load() -> dict:
    """recipes.json: {"machine", "date", "command", "recipes": [...]}, each recipe {"budget",
    "model", "settings", "dev_loss", "data", "train_examples", "vocab_size", ...} (the last three:
    what its study trained on). Missing: no recipes."""
    if not RECIPES_FILE.is_file():
        return {"recipes": []}
    return json.loads(RECIPES_FILE.read_text(encoding="utf-8"))


def choose(budget: float, model: str | None = None, table: dict | None = None,
           vocab_size: int | None = None) -> dict | None:
    """The recipe for `budget` seconds (of `model`, if given) on data of `vocab_size` characters:
    among the recipes tuned on the vocabulary nearest to it (by ratio: a step's V-wide products
    cost in proportion to V), the one of the largest budget not above `budget`, else the smallest
    there is; None if there is none (for that model)."""
    table = table if table is not None else load()
    recipes = [r for r in table.get("recipes", []) if model is None or r["model"] == model]
    if not recipes:
        return None
    if vocab_size is not None:
        def distance(r: dict) -> float:
            return abs(math.log(max(1, vocab_size) / tuned_vocab(r)))

        nearest = min(distance(r) for r in recipes)
        recipes = [r for r in recipes if distance(r) == nearest]
    covered = [r for r in recipes if r["budget"] <= budget]
    return max(covered, key=lambda r: r["budget"]) if covered else min(recipes, key=lambda r: r["budget"])


def tuned_on_names(table: dict | None = None) -> list[dict]:
    """The recipes tuned on names.txt's vocabulary (the README's figures and benchmarks)."""
    table = table if table is not None else load()
    return [r for r in table.get("recipes", []) if tuned_vocab(r) == NAMES_VOCAB]


def tuned_vocab(recipe: dict) -> int:
    """The vocabulary a recipe was tuned on (names' 27 for a recipe that does not say)."""
    return int(recipe.get("vocab_size") or NAMES_VOCAB)


def scaled_settings(recipe: dict, train_examples: int, vocab_size: int | None = None) -> dict:
    """The recipe's settings for data with `train_examples` training examples and `vocab_size`
    characters (see the module doc): regularisation scaled down on larger data, direct
    connections dropped where the vocabulary makes them most of the model."""
    settings = dict(recipe["settings"])
    tuned_on = recipe.get("train_examples")
    if tuned_on and train_examples > tuned_on:
        factor = tuned_on / train_examples
        for name in REGULARISERS:
            if settings.get(name):
                settings[name] = settings[name] * factor
    if settings.get("direct") and vocab_size is not None and recipe.get("model", "mlp") == "mlp":
        from .config import make_configs
        from .models.mlp import param_shapes

        cfg, _ = make_configs(recipe.get("preset"), "mlp", vocab_size=vocab_size, **settings)
        sizes = {name: math.prod(shape) for name, shape in param_shapes(cfg).items()}
        if sizes["W_direct"] > DIRECT_MAX_SHARE * sum(sizes.values()):
            settings["direct"] = False
    return settings


def budget_configs(budget: float, vocab_size: int, train_examples: int, model: str | None = None,
                   table: dict | None = None, **overrides):
    """(model config, train config, recipe) for a budget run with no preset: the recipe's
    settings scaled to the data, then `overrides` (None = unset), the budget last. With no
    recipe (for that model), the model's own preset, and recipe None."""
    from .config import make_configs

    table = table if table is not None else load()
    recipe = choose(budget, model, table, vocab_size)
    if recipe is None:
        given = {k: v for k, v in overrides.items() if v is not None}
        return (*make_configs(None, model, vocab_size=vocab_size, **{**given, "budget": budget}), None)
    settings = scaled_settings(recipe, train_examples, vocab_size)
    if counts_in_time(budget, train_examples) and teacher_bytes(train_examples, vocab_size) <= TEACHER_MAX_BYTES:
        settings = distilled(settings)
    else:
        settings["teacher"] = 0.0  # no time to count the teacher, or no memory to hold its targets
    given = {k: v for k, v in overrides.items() if v is not None}
    preset = recipe.get("preset")
    model_cfg, train_cfg = make_configs(preset, recipe["model"], vocab_size=vocab_size,
                                        **{**settings, **given, "budget": budget})
    return model_cfg, train_cfg, {**{k: v for k, v in recipe.items() if k != "settings"},
                                  "settings": settings, "machine": table.get("machine"), "date": table.get("date")}


def distilled(settings: dict) -> dict:
    """A recipe's settings with its teacher: the Kneser-Ney model of MIX_CONTEXT characters, with
    the weight the recipe was tuned with, else TEACHER_WEIGHT (a recipe tuned without it)."""
    return {"teacher": TEACHER_WEIGHT, "teacher_context": MIX_CONTEXT, **settings}


def counts_in_time(budget: float, train_examples: int) -> bool:
    """Whether counting the Kneser-Ney model takes at most MIX_SHARE of the budget (estimated
    at COUNT_RATE): a budget run then mixes its model with it, and distils from it."""
    return train_examples / COUNT_RATE <= MIX_SHARE * budget


def count_for_mixture(corpus, budget: float, context: int = MIX_CONTEXT):
    """(Kneser-Ney model counted on the training split and tuned on dev, seconds it took) for a
    budget run to mix its model with; None where counting would take more than MIX_SHARE of
    the budget (the estimate: COUNT_RATE)."""
    from .ngram import fit_on_dev

    if not counts_in_time(budget, len(corpus.encoded("train"))):
        return None
    start = time.perf_counter()
    ngram = fit_on_dev(corpus, context)  # kept in the corpus: the run's teacher is this model
    return ngram, time.perf_counter() - start


def attach_mixture(run_dir: str | Path, ngram, count_seconds: float) -> dict:
    """Fit the weight of RUN's model (a run or a seed ensemble) against `ngram` on dev and keep
    it as RUN/mix.json, which `--mix` reads (eval, sample, score, serve); a single run's
    summary.json gets it as "mix". Returns mix.json's content."""
    from .ngram import fit_mixture
    from .predict import run_predictor
    from .runs import load_any, save_mixture

    run = load_any(run_dir)
    _, fitted = fit_mixture(run_predictor(run), run.splits["train"], run.splits["dev"], run.vocab, ngram.context,
                            ngram=ngram)
    result = {**fitted, "count_seconds": count_seconds}
    save_mixture(run_dir, result)
    return result


def from_studies(studies: list[tuple[str, str]]) -> dict:
    """A recipes table from `makemore tune --budget S` studies, given as (storage URL, study
    name): each study's best trial is the recipe for its budget."""
    import datetime
    import os

    import torch

    from . import models
    from .tune import STUDY_ATTR, best_trial, load_study

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
    """python -m makemore.recipes OUT.json URL=STUDY ...: write a recipes table (scripts/recipes.sh)."""
    import sys

    from .utils import atomic_write_json

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or any("=" not in a for a in args[1:]):
        print("usage: python -m makemore.recipes OUT.json STORAGE_URL=STUDY_NAME ...", file=sys.stderr)
        return 2
    try:
        table = from_studies([tuple(a.rsplit("=", 1)) for a in args[1:]])
    except UserError as e:
        print(f"makemore: error: {e}", file=sys.stderr)
        return 1
    atomic_write_json(args[0], table)
    for r in table["recipes"]:
        print(f"{r['budget']:>6g} s  dev {r['dev_loss']:.4f}  {r['params']:,} params  {r['steps']} steps  "
              f"(study {r['study']}, trial {r['trial']} of {r['trials']})")
    print(f"wrote {args[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
