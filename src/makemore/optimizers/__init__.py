"""The optimizers makemore trains with, registered by name in one place.

Each optimizer is one module here defining NAME, `torch_optimizer(param_groups, train_cfg)`
(what the autograd engine steps) and, if the fused engine (fused.py) can run it, `Flat`: the
same update on flat NumPy buffers holding every parameter of K models, one row per model,
each row with its own learning rate and settings. One whose torch form can keep its state and
learning rate on the GPU says CAPTURABLE = True and takes `capturable=True`: a CUDA graph can
then capture its step (graphs.py). One that can step sparse gradients (a model's
sparse_parameters: a hashed table) defines `sparse_optimizer(params, train_cfg)`. Adding an optimizer is writing that module
and adding its name to REGISTRY.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError

REGISTRY = ("sgd", "adamw")

MODULES: dict[str, ModuleType] = {name: importlib.import_module(f"{__name__}.{name}") for name in REGISTRY}


def capturable(name: str) -> bool:
    return bool(getattr(get(name), "CAPTURABLE", False))


def sparse_optimizer(name: str, params, cfg):
    """The optimizer `name`'s form for sparse gradients, or one line saying it has none."""
    make = getattr(get(name), "sparse_optimizer", None)
    if make is None:
        raise UserError(f"optimizer {name} cannot train hashed context features (--hash-orders); use adamw or sgd")
    return make(params, cfg)


def get(name: str) -> ModuleType:
    if name not in MODULES:
        raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(MODULES)}")
    return MODULES[name]
