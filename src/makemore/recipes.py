"""The best recipe known for a time budget: what `makemore train --budget S` trains when no
--preset is given.

The recipes are data (recipes.json beside this file), written by `scripts/recipes.sh`: a
`makemore tune --budget S` study for each budget on names.txt, whose best trial becomes the
recipe for that budget, with the machine, the date and the dev loss it reached. A budget
between two recipes takes the one of the largest budget it covers (the steps are planned from
the time a step takes, whatever the recipe).

On other data the recipe is scaled by how often the budget lets the model see each example.
Dropout and weight decay were tuned against names' 182,441 training examples, which a budget
run sees many times over; on a list ten times larger the same steps see each example a tenth
as often, and the regularisation that fought over-fitting would only slow learning. They are
multiplied by min(1, names' training examples / the data's); a smaller list keeps them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .errors import UserError

RECIPES_FILE = Path(__file__).with_name("recipes.json")
REGULARISERS = ("dropout", "weight_decay")


@lru_cache(maxsize=1)
def load() -> dict:
    """recipes.json: {"machine", "date", "command", "data", "train_examples", "recipes": [...]},
    each recipe {"budget", "model", "settings", "dev_loss", ...}. Missing: no recipes."""
    if not RECIPES_FILE.is_file():
        return {"recipes": []}
    return json.loads(RECIPES_FILE.read_text(encoding="utf-8"))


def choose(budget: float, model: str | None = None, table: dict | None = None) -> dict:
    """The recipe for `budget` seconds (of `model`, if given): the one of the largest budget not
    above it, else the smallest there is."""
    table = table if table is not None else load()
    recipes = [r for r in table.get("recipes", []) if model is None or r["model"] == model]
    if not recipes:
        what = f" for --model {model}" if model else ""
        raise UserError(f"no time-budget recipe is known{what}; give --preset (the steps are still planned from "
                        f"--budget), or make recipes with scripts/recipes.sh")
    covered = [r for r in recipes if r["budget"] <= budget]
    return max(covered, key=lambda r: r["budget"]) if covered else min(recipes, key=lambda r: r["budget"])


def scaled_settings(recipe: dict, train_examples: int, table: dict | None = None) -> dict:
    """The recipe's settings for data with `train_examples` training examples (see the module
    doc): regularisation scaled down on larger data."""
    table = table if table is not None else load()
    settings = dict(recipe["settings"])
    tuned_on = table.get("train_examples")
    if tuned_on and train_examples > tuned_on:
        factor = tuned_on / train_examples
        for name in REGULARISERS:
            if settings.get(name):
                settings[name] = settings[name] * factor
    return settings


def budget_configs(budget: float, vocab_size: int, train_examples: int, model: str | None = None,
                   table: dict | None = None, **overrides):
    """(model config, train config, recipe) for a budget run with no preset: the recipe's
    settings scaled to the data, then `overrides` (None = unset), the budget last."""
    from .config import make_configs

    table = table if table is not None else load()
    recipe = choose(budget, model, table)
    settings = scaled_settings(recipe, train_examples, table)
    given = {k: v for k, v in overrides.items() if v is not None}
    preset = recipe.get("preset")
    model_cfg, train_cfg = make_configs(preset, recipe["model"], vocab_size=vocab_size,
                                        **{**settings, **given, "budget": budget})
    return model_cfg, train_cfg, {**{k: v for k, v in recipe.items() if k != "settings"},
                                  "settings": settings, "machine": table.get("machine"), "date": table.get("date")}
