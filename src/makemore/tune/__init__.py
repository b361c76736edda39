"""Hyperparameter search with Optuna: one study, any number of workers, on one or many machines.

    makemore tune --data names --trials 40 --steps 5000             # SQLite: runs/tune/study.db
    makemore tune --data names --trials 200 --storage postgresql://user@db/makemore   # per machine
    makemore tune --data names --model gru --budget 5m --trials 20 --out runs/tune-gru

A study searches one model's settings (`--model`, default mlp): the space is the model's own
SEARCH_SPACE, beside its presets in models/NAME.py, and every trial trains over that model's
default recipe, as `makemore train --model NAME` does. A study lives in an Optuna RDB storage:
a SQLite file by default, or any database URL Optuna accepts (PostgreSQL for workers on
several machines). Every worker runs the same command; the first one creates the study, the
others join it.

The package, each module depending only on those above it:

    storage.py        where a study lives: URLs, RDBStorage, the workers' lock, heartbeats
    space.py          the search space, the --try presets, a trial's settings and train command
    report.py         reading a study back: table, best trial and settings, plots
    worker.py         TuneOptions and run_study: claiming and running trials
    recipes_table.py  recipes.json, the time-budget recipes, from `tune --budget` studies

tune reads recipes (space.py's `--try recipe`; recipes_table.py writes its table); recipes
knows nothing of tune. recipes_table is not imported here, so that
`python -m makemore.tune.recipes_table` (scripts/recipes.sh) runs it fresh.
"""

from .report import best_settings, best_trial, format_table, print_summary, summary, table_rows, write_plots
from .space import (DEFAULT_STEPS, RECIPE_TRY, flag, model_space, parse_space, preset_params, search_space, suggest,
                    train_command, trial_settings)
from .storage import (DEFAULT_HEARTBEAT, DEFAULT_OUT, DEFAULT_STUDY, STUDY_ATTR, default_storage, grace_period,
                      load_study, open_storage, redact, resolve_url)
from .worker import TuneOptions, run_study

__all__ = [
    "DEFAULT_HEARTBEAT", "DEFAULT_OUT", "DEFAULT_STEPS", "DEFAULT_STUDY", "RECIPE_TRY", "STUDY_ATTR",
    "TuneOptions", "best_settings", "best_trial", "default_storage", "flag", "format_table",
    "grace_period", "load_study", "model_space", "open_storage", "parse_space", "preset_params", "print_summary",
    "redact", "resolve_url", "run_study", "search_space", "suggest", "summary", "table_rows", "train_command",
    "trial_settings", "write_plots",
]
