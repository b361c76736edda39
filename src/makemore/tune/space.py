"""A study's search space: each model's own (SEARCH_SPACE and SEARCH_FIXED, beside its presets
in models/NAME.py), narrowed by --space, drawn from through Optuna's define-by-run API
(trial.suggest_*; Akiba et al. 2019, "Optuna: a next-generation hyperparameter optimization
framework", KDD), and the settings a trial trains written back as a `makemore train` command.

A setting is drawn from a range of numbers [low, high], on a log scale where the model's space
says so, or from a list of choices. Every trial trains over the model's default recipe, as
`makemore train --model NAME` does; `--try PRESET` makes a preset's settings, as a point of the
space, one of a study's first trials (preset_params), so that the sampler starts from recipes
known to be good, and `--try recipe` is the time-budget recipe `train --budget` takes now
(recipes.py, which this module reads and which knows nothing of tune).
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

from .. import models
from ..config import TRAIN_FIELDS, make_configs
from ..errors import UserError
from ..recipes import NAMES_VOCAB, budget_configs

DEFAULT_STEPS = 20_000  # cap on each trial's training steps: the `default` preset's length
# `--try recipe`: the time-budget recipe `train --budget` takes now for the study's budget.
RECIPE_TRY = "recipe"


def model_space(model: str) -> tuple[dict, dict]:
    """The model's search space, name -> (low, high, log scale) for a number or a list of
    choices, and the settings every trial of it shares."""
    mod = models.module(model)
    if not getattr(mod, "SEARCH_SPACE", None):
        raise UserError(f"--model {model} has no search space (SEARCH_SPACE in models/{model}.py); "
                        f"compare it with its presets, or sweep one setting with `makemore sweep`")
    return mod.SEARCH_SPACE, dict(getattr(mod, "SEARCH_FIXED", {}))


def _is_choice(model: str, name: str) -> bool:
    """Whether `name` is drawn from a list of choices (else from a range of numbers)."""
    return isinstance(model_space(model)[0].get(name), list)


def _kind(model: str, name: str) -> type:
    """The type of a setting's values (int, float, bool, str), from its config field's default."""
    f = models.config_fields(model).get(name) or TRAIN_FIELDS[name]
    return type(f.default)


def search_space(steps_cap: int, overrides: dict | None = None, budget: float | None = None,
                 model: str = "mlp") -> dict:
    """The model's SEARCH_SPACE with its `steps` range, and `overrides` ({"hidden": [16, 64]},
    {"layers": 1}, {"direct": [false]}) replacing the ranges or choices they name. Returned as
    JSON-ready lists. Steps: [cap/5, cap] on a log scale, where cap is `--steps`; with a time
    `budget` there is no `steps`: each trial plans its own from the budget (budget.py)."""
    base, _ = model_space(model)
    space = {k: (list(v) if isinstance(v, list) else [v[0], v[1], v[2]]) for k, v in base.items()}
    if not budget:
        space["steps"] = [max(1, steps_cap // 5), steps_cap, True]
    for name, value in (overrides or {}).items():
        if name not in space:
            raise UserError(f"--space: unknown parameter {name!r}; searched are {', '.join(space)}")
        kind = _kind(model, name)
        if _is_choice(model, name):
            choices = value if isinstance(value, list) else [value]
            ok = bool(choices) and all(type(c) is kind or (kind is float and type(c) is int) for c in choices)
            if not ok:
                raise UserError(f"--space: {name} takes one of its values or a list of them, "
                                f"got {json.dumps(value)}")
            for choice in choices:
                _check_setting(model, name, choice)
            space[name] = list(dict.fromkeys(choices))
            continue
        if not isinstance(value, list):
            low = high = value
        elif len(value) in (1, 2):
            low, high = value[0], value[-1]
        else:
            low = high = None
        ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                 and (kind is float or x == int(x)) for x in (low, high))
        if not ok or low > high:
            raise UserError(f"--space: {name} takes a value or [low, high] with low <= high"
                            f"{' (whole numbers)' if kind is int else ''}, got {json.dumps(value)}")
        for end in (low, high):
            _check_setting(model, name, kind(end))
        log = space[name][2] and low > 0
        space[name] = [kind(low), kind(high), log]
    return space


def _check_setting(model: str, name: str, value) -> None:
    """The config's own checks (hidden >= 1, dropout < 1, ...) of one value of the space."""
    try:
        make_configs(None, model, **{name: value})
    except UserError as e:
        raise UserError(f"--space: {e}") from None


def parse_space(text: str | None) -> dict:
    """--space: a JSON object, or a file holding one."""
    if not text:
        return {}
    if not text.lstrip().startswith("{"):
        if not Path(text).is_file():
            raise UserError(f"--space {text!r} is neither a JSON object nor a file: give one, e.g. "
                            f"--space '{{\"hidden\": [32, 256]}}' or --space space.json")
        try:
            text = Path(text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--space {text}: cannot read it ({e})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--space is not valid JSON ({e.msg} at character {e.pos}); "
                        f"example: --space '{{\"hidden\": [32, 256], \"layers\": 1}}'") from None
    if not isinstance(value, dict):
        raise UserError("--space must be a JSON object such as {\"hidden\": [32, 256]}")
    return value


def preset_params(preset: str, space: dict, budget: float | None = None, corpus=None, model: str = "mlp",
                  note=None) -> dict:
    """A preset's settings as a point of `space` (each clipped into its range, or the first
    choice where its value is not one), to enqueue as a trial: a study starts from the recipes
    known to be good. RECIPE_TRY is the recipe a `train --budget` run on `corpus` (names if
    None) takes for `budget` now (recipes.json, scaled to the data: its teacher, regularisation
    and direct connections as that run has them)."""
    if preset == RECIPE_TRY:
        vocab_size = corpus.vocab.size if corpus is not None else NAMES_VOCAB
        train_examples = len(corpus.encoded("train")) if corpus is not None else 0
        model_cfg, train_cfg, recipe = budget_configs(budget, vocab_size, train_examples, model)
        if recipe is None:
            raise UserError(f"--try {RECIPE_TRY}: there is no time-budget recipe for --model {model} yet "
                            f"(src/makemore/recipes.json)")
    else:
        model_cfg, train_cfg = make_configs(preset, model)
    values = {**vars(model_cfg), **vars(train_cfg)}
    params = {}
    for name, spec in space.items():
        value = values[name]
        if _is_choice(model, name):
            params[name] = value if value in spec else spec[0]
        else:
            params[name] = min(max(value, spec[0]), spec[1])
    moved = [f"{name} {values[name]} -> {params[name]}" for name in params if params[name] != values[name]]
    if moved and note is not None:  # the trial is then not quite the preset: said, not hidden
        note(f"note: --try {preset} as a point of the search space: {', '.join(moved)}")
    return params


def suggest(trial, space: dict, model: str = "mlp") -> dict:
    """Draw one configuration from `space` (see search_space), in its order."""
    params = {}
    for name, spec in space.items():
        if _is_choice(model, name):
            params[name] = trial.suggest_categorical(name, spec)
        elif _kind(model, name) is int:
            params[name] = trial.suggest_int(name, spec[0], spec[1], log=spec[2])
        else:
            params[name] = trial.suggest_float(name, spec[0], spec[1], log=spec[2])
    return params


def trial_settings(params: dict, seed: int, budget: float | None = None, model: str = "mlp") -> dict:
    """Every config field a trial sets, its model first: what `makemore train` needs to train
    it again (over the model's own recipe, as `makemore train --model NAME` starts from).

    Floats are trained as drawn rounded to 3 significant digits, so that the printed command
    line is short and still trains exactly what the trial trained.
    """
    rounded = {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in params.items()}
    settings = {"model": model, **rounded, **model_space(model)[1], "seed": seed}
    if budget:
        settings["budget"] = budget
    return settings


def flag(field: str) -> str:
    """The `makemore train` flag of a config field (the CLI names each flag after its field)."""
    return "--" + field.replace("_", "-")


# How a study's data was read (`--min-char-count`, `--normalize`, `--units`: they change the
# vocabulary, so a trial's settings train the same model only on data read the same way), as the
# data flags default; a study from before it was recorded read its data so.
DEFAULT_READING = {"min_char_count": 1, "normalize": "nfc", "units": "codepoint"}


def reading_of(corpus) -> dict:
    """How `corpus` was read, in the data flags' terms (DEFAULT_READING's keys)."""
    return {"min_char_count": corpus.min_char_count, "normalize": corpus.normalize, "units": corpus.units}


def train_command(settings: dict, data: str, out: str = "runs/best", split_seed: int = 42,
                  labels: bool = False, reading: dict | None = None) -> str:
    """The `makemore train` command line that trains `settings` again, on data read as `reading`."""
    words = ["makemore", "train", "--data", data] + (["--labels"] if labels else [])
    if split_seed != 42:
        words += ["--split-seed", str(split_seed)]
    for field, value in (reading or {}).items():
        if value != DEFAULT_READING[field]:
            words += [flag(field), str(value)]
    for field, value in settings.items():
        if isinstance(value, bool):
            words += [flag(field) if value else "--no-" + flag(field)[2:]]
        elif value is not None and not (field == "model" and value == models.DEFAULT_MODEL):
            words += [flag(field), repr(value) if isinstance(value, float) else str(value)]
    words += ["--out", out]
    return " ".join(shlex.quote(w) for w in words)
