"""The best recipe known for a time budget: what `makemore train --budget S` trains when no
--preset is given.

The recipes are data (recipes.json beside this file), written by `scripts/recipes.sh`: a
`makemore tune --budget S` study for each budget, whose best trial becomes the recipe for that
budget, with the machine, the date, the dev loss it reached and the data it was tuned on
(docs/budgets.md). What a step costs, and so what fits in a budget, is set by the vocabulary
(the output layer is hidden x V): a run takes the recipes tuned on the vocabulary nearest its
data's (by ratio), and among them the one of the largest budget it covers (the steps are planned
from the time a step takes, whatever the recipe).

On other data the recipe is scaled by how often the budget lets the model see each example.
Dropout and weight decay were tuned against a training split that a budget run sees many times
over; on a list ten times larger the same steps see each example a tenth as often, and the
regularisation that fought over-fitting would only slow learning: they are multiplied by
min(1, the recipe's training examples / the data's), and a dropout that ends below MIN_DROPOUT
is none. Bengio's direct connections,
block_size * emb_dim * V weights, are cheap for a few dozen characters but most of a model on a
list of thousands, where they double the cost of the V-wide products: a recipe drops them where
they would be more than DIRECT_MAX_SHARE of the model.
(With the adaptive softmax they feed its head alone and stay.)

A budget run's model is then mixed with a Kneser-Ney model of MIX_CONTEXT characters, counted
inside the budget, and distilled from it where the recipe has a teacher (fit.py).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path


RECIPES_FILE = Path(__file__).with_name("recipes.json")
# A budget run's model is distilled from its Kneser-Ney model (TrainConfig.teacher) with the
# share of each target its recipe was tuned with (tune's search space has `teacher`), or, for a
# recipe tuned without it, this one (docs/budgets.md: the teacher's ablation).
TEACHER_WEIGHT = 0.5
REGULARISERS = ("dropout", "weight_decay")
# The share of a model's parameters past which a recipe drops its direct connections (module doc):
# they are a small share on names, most of the model on a vocabulary of thousands.
DIRECT_MAX_SHARE = 1 / 3
# Dropout below this regularises nothing measurable but still draws a mask per hidden unit per
# step: the 1,800-s recipe on the wordfreq list, tuned to 0.00049, reached dev 2.9280 in 600
# steps and 18.7 s against 2.9283 and 16.5 s without (docs/big-lists-studies.md).
MIN_DROPOUT = 0.01
MIX_CONTEXT = 5  # the best count model on names (docs/baselines.md)
MAX_MIX_CONTEXT = 7  # a budget run tries longer contexts up to this one where they score better on dev
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
           vocab_size: int | None = None, device: str = "cpu") -> dict | None:
    """The recipe for `budget` seconds (of `model`, if given) on data of `vocab_size` characters
    on `device`: among the recipes tuned on the vocabulary nearest to it (by ratio: a step's
    V-wide products cost in proportion to V), those found on that device if there are any (a
    GPU runs a larger model in the same time), and of them the one of the largest budget not
    above `budget`, else the smallest there is; None if there is none (for that model)."""
    table = table if table is not None else load()
    recipes = [r for r in table.get("recipes", []) if model is None or r["model"] == model]
    if not recipes:
        return None
    if vocab_size is not None:
        def distance(r: dict) -> float:
            return abs(math.log(max(1, vocab_size) / tuned_vocab(r)))

        nearest = min(distance(r) for r in recipes)
        recipes = [r for r in recipes if distance(r) == nearest]
    recipes = [r for r in recipes if recipe_device(r) == device] or [r for r in recipes if recipe_device(r) == "cpu"]
    if not recipes:
        return None
    covered = [r for r in recipes if r["budget"] <= budget]
    return max(covered, key=lambda r: r["budget"]) if covered else min(recipes, key=lambda r: r["budget"])


def tuned_on_names(table: dict | None = None) -> list[dict]:
    """The recipes tuned on names.txt's vocabulary (the figures of docs/budgets.md and the benchmarks)."""
    table = table if table is not None else load()
    return [r for r in table.get("recipes", []) if tuned_vocab(r) == NAMES_VOCAB and recipe_device(r) == "cpu"]


def recipe_device(recipe: dict) -> str:
    """The device a recipe was found on (the CPU for one that does not say)."""
    return recipe.get("device", "cpu")


def tuned_vocab(recipe: dict) -> int:
    """The vocabulary a recipe was tuned on (names' 27 for a recipe that does not say)."""
    return int(recipe.get("vocab_size") or NAMES_VOCAB)


def scaled_settings(recipe: dict, train_examples: int, vocab_size: int | None = None) -> dict:
    """The recipe's settings for data with `train_examples` training examples and `vocab_size`
    characters (see the module doc): regularisation scaled down on larger data, a dropout too
    small to matter dropped, direct connections dropped where the vocabulary makes them most of the model."""
    settings = dict(recipe["settings"])
    tuned_on = recipe.get("train_examples")
    if tuned_on and train_examples > tuned_on:
        factor = tuned_on / train_examples
        for name in REGULARISERS:
            if settings.get(name):
                settings[name] = settings[name] * factor
    if 0 < settings.get("dropout", 0) < MIN_DROPOUT:
        settings["dropout"] = 0.0
    if settings.get("direct") and vocab_size is not None and recipe.get("model", "mlp") == "mlp":
        from .config import make_configs
        from .models.mlp import param_shapes

        cfg, _ = make_configs(recipe.get("preset"), "mlp", vocab_size=vocab_size, **settings)
        sizes = {name: math.prod(shape) for name, shape in param_shapes(cfg).items()}
        if sizes["W_direct"] > DIRECT_MAX_SHARE * sum(sizes.values()):
            settings["direct"] = False
    return settings


def budget_configs(budget: float, vocab_size: int, train_examples: int, model: str | None = None,
                   table: dict | None = None, teacher_allowed: bool = True, for_device: str = "cpu", **overrides):
    """(model config, train config, recipe) for a budget run with no preset: the recipe's
    settings scaled to the data, with its teacher where `teacher_allowed` (fit.py: there is
    time to count it and memory to hold its targets), then `overrides` (None = unset), the
    budget last. With no recipe (for that model), the model's own preset, and recipe None."""
    from .config import make_configs

    table = table if table is not None else load()
    recipe = choose(budget, model, table, vocab_size, for_device)
    given = {k: v for k, v in overrides.items() if v is not None}
    if recipe is None:
        return (*make_configs(None, model, vocab_size=vocab_size, **{**given, "budget": budget}), None)
    settings = scaled_settings(recipe, train_examples, vocab_size)
    if teacher_allowed:
        settings = distilled(settings)
    else:
        settings["teacher"] = 0.0
    model_cfg, train_cfg = make_configs(recipe.get("preset"), recipe["model"], vocab_size=vocab_size,
                                        **{**settings, **given, "budget": budget})
    return model_cfg, train_cfg, {"machine": table.get("machine"), "date": table.get("date"),
                                  **{k: v for k, v in recipe.items() if k != "settings"}, "settings": settings}


def distilled(settings: dict) -> dict:
    """A recipe's settings with its teacher: the Kneser-Ney model of MIX_CONTEXT characters, with
    the weight the recipe was tuned with, else TEACHER_WEIGHT (a recipe tuned without it)."""
    return {"teacher": TEACHER_WEIGHT, "teacher_context": MIX_CONTEXT, **settings}
