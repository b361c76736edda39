"""The models makemore trains, registered by name in one place.

Each model is one module here defining `MODEL` (its nn.Module class, a models.base.Model whose
`Config` is its config dataclass), `PRESETS` (named recipes: config and training settings) and
`DEFAULT_PRESET` (the recipe `--model NAME` trains when no --preset is given), and for
`makemore tune --model NAME` its `SEARCH_SPACE` and `SEARCH_FIXED` (tune/space.py). Adding a model
is writing that module and adding its name to REGISTRY below; every command then takes
`--model NAME`, its config fields become flags, and checkpoints record it (docs/models.md).
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from types import ModuleType

from ..errors import UserError
from .base import Model, ModelConfig

REGISTRY = ("mlp", "bigram", "rnn", "gru", "bow", "transformer", "wavenet")

MODULES: dict[str, ModuleType] = {name: importlib.import_module(f"{__name__}.{name}") for name in REGISTRY}
DEFAULT_MODEL = "mlp"


def module(name: str) -> ModuleType:
    if name not in MODULES:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODULES)}")
    return MODULES[name]


def model_class(name: str) -> type[Model]:
    return module(name).MODEL


def config_class(name: str) -> type[ModelConfig]:
    return model_class(name).Config


DATA_FIELDS = ("vocab_size", "labels")  # a model's settings that come from the data


def config_fields(name: str) -> dict:
    """The model's own config fields (not vocab_size and labels, which the data decides), name -> dataclass field."""
    return {f.name: f for f in fields(config_class(name)) if f.name not in DATA_FIELDS}


def build(cfg: ModelConfig, seed: int = 42) -> Model:
    """A fresh model of this config, its initial weights drawn from `seed`."""
    return model_class(cfg.name)(cfg, seed=seed)


def count_params(cfg: ModelConfig) -> int:
    return build(cfg).num_params()


def presets() -> dict[str, dict]:
    """Every model's recipes by preset name, each with its "model"."""
    out: dict[str, dict] = {}
    for name, mod in MODULES.items():
        for preset, values in mod.PRESETS.items():
            if preset in out:
                raise RuntimeError(f"preset {preset!r} is defined by two models")
            out[preset] = {"model": name, **values}
    return out


__all__ = ["Model", "ModelConfig", "REGISTRY", "MODULES", "DEFAULT_MODEL", "module", "model_class", "config_class",
           "config_fields", "build", "count_params", "presets"]
