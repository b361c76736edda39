"""Configs as plain dataclasses, and named presets that override their defaults.

A run is described by two configs: the model's (models/<name>.py defines its dataclass, a
subclass of models.base.ModelConfig that carries the model's name) and TrainConfig below.
A preset is a dict of field values of both, with the model it is a recipe for; flags given on
the command line override it. The `lecture` preset is the recipe of "makemore part 2"; the
others are ours, and each figure in docs/ names the preset and command that produced it.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields, replace

from . import models, optimizers
from .budget import check_minimum, parse_seconds
from .errors import UserError
from .models.base import ModelConfig, check_fields, check_type, setting
from .devices import usable_cores

SCHEDULES = ("step", "inverse", "cosine", "constant")
ENGINES = ("auto", "fused", "autograd")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "float32", "bfloat16")
# The dev loss during training is estimated on this many dev examples (a fixed random subset,
# the same for every run on the same data, so that runs compare): the standard error of such an
# estimate is ~0.01 nats, and the lecture's dev split (22,902 examples) is evaluated whole.
EVAL_EXAMPLES = 25_000


@dataclass
class TrainConfig:
    """Minibatch gradient descent on the training split, judged on the dev split."""

    steps: int = setting(200_000, "training steps (minibatch updates)", min=1)
    # seconds of training: the loop plans `steps` from the time a step takes (budget.py)
    budget: float = setting(0.0, "seconds of training (also 2m, 1h): the steps are planned to fill it "
                            "(0: train --steps)", parse="duration", min=0, below=float("inf"))
    batch_size: int = setting(32, "examples per minibatch", min=1)
    lr: float = setting(0.1, "peak learning rate", above=0, below=float("inf"))
    optimizer: str = setting("sgd", "|".join(optimizers.REGISTRY))  # optimizers.get names the known ones
    # step: lr until `decay_at` of the run, then lr*decay_factor (the lecture: 0.1 -> 0.01 at
    # 100k of 200k); inverse: lr / (1 + decay_rate*t) (Bengio et al.); cosine: lr down to
    # lr*min_lr_frac after `warmup` linear steps; constant.
    schedule: str = setting("step", "|".join(SCHEDULES), choices=SCHEDULES)
    decay_at: float = setting(0.5, "share of the run after which the step schedule decays", min=0, max=1)
    decay_factor: float = setting(0.1, "lr factor after the step schedule's decay", above=0, max=1)
    decay_rate: float = setting(1e-4, "r in lr/(1+r*t) (inverse schedule)", min=0, below=float("inf"))
    min_lr_frac: float = setting(0.0, "cosine schedule: final lr as a share of the peak", min=0, max=1)
    warmup: int = setting(0, "linear warm-up steps (cosine schedule)", min=0)
    weight_decay: float = setting(0.0, "decoupled weight decay on embedding tables and weight matrices", min=0,
                                  below=float("inf"))
    betas: tuple[float, float] = (0.9, 0.999)
    # Distillation from a count model (Hinton et al. 2015, with Bengio et al. 2003's Kneser-Ney
    # model as the teacher): each example's target is (1 - teacher) * onehot(y) + teacher *
    # P_KN(. | its last teacher_context characters), the KN model counted on the training split
    # and tuned on dev (teacher.py). The train loss logged stays the one-hot one.
    teacher: float = setting(0.0, "share of each target taken from a Kneser-Ney model's next-character distribution "
                             "(distillation; 0: the one-hot target alone)", min=0, max=1)
    teacher_context: int = setting(5, "characters of context of the --teacher Kneser-Ney model", min=1, max=12)
    seed: int = setting(42, "seed for weights, minibatches and dropout; the data split has its own", min=0,
                        max=2**63 - 1)
    eval_interval: int = setting(0, "steps between dev evaluations (0: about 20 per run)", min=0)
    eval_examples: int = setting(EVAL_EXAMPLES, "dev examples the dev loss during training is estimated on (a fixed "
                                 f"random subset; default {EVAL_EXAMPLES:,}); the final dev loss is over the whole split", min=1)
    final_examples: int = setting(0, "examples of each split the final train and dev losses are computed on (a fixed "
                                  "random subset; 0: the whole dev split and up to 250,000 training examples)", min=0)
    engine: str = setting("auto", "|".join(ENGINES), choices=ENGINES)
    # Mixed precision (Micikevicius et al. 2018, "Mixed Precision Training"; Kalamkar et al. 2019
    # for bfloat16): the training step's matrix products take bfloat16 inputs and give bfloat16
    # results, with float32 accumulation inside the product; weights, their updates, the
    # optimizer's moments, the loss and every evaluation stay float32. CPUs with AVX512-BF16 or
    # AMX multiply bfloat16 faster than float32 (docs/precision.md); elsewhere it is emulated
    # and slower (utils.native_bfloat16). auto: bfloat16 where it buys a timed run steps, else
    # float32 (runtime.resolve_precision); summary.json records the one used.
    precision: str = setting("auto", "|".join(PRECISIONS) + ": number format of the training step's matrix "
                             "products (auto: bfloat16 for a --budget run where the hardware has it, else float32)", choices=PRECISIONS)
    device: str = setting("auto", "|".join(DEVICES) + " (default auto: a CUDA GPU where one is present and a short "
                          "trial finds it faster for this run, else the CPU)", choices=DEVICES)
    # more threads than cores only wait for one another, and torch's pool crashes at absurd counts
    threads: int = setting(0, "torch threads of the model (0: torch's default; at most the machine's cores); a "
                              "budget run trains its learned count model on a core these leave free", min=0,
                           max=usable_cores)

    def validate(self) -> None:
        check_fields(self)
        check_minimum(self.budget)
        optimizers.get(self.optimizer)

    @property
    def eval_every(self) -> int:
        return self.eval_interval if self.eval_interval > 0 else max(1, self.steps // 20)


TRAIN_FIELDS = {f.name: f for f in fields(TrainConfig)}
PRESETS: dict[str, dict] = models.presets()


def setting_fields() -> dict:
    """Every setting a run may be given, by name: TrainConfig's and every model config's fields."""
    found = {}
    for name in models.MODULES:
        found.update({f.name: f for f in fields(models.config_class(name))})
    return {**found, **TRAIN_FIELDS}


def read_settings(settings: dict) -> dict:
    """Settings given by keyword (the Python API) as the command line's flags would give them: a
    duration as text read ("2m"), each of the type of its field, TrainConfig's within their
    bounds: one UserError naming the setting otherwise, before anything is counted or trained.
    Names no config has are left to make_configs, which says so."""
    out, known = dict(settings), setting_fields()
    for name, value in settings.items():
        f = known.get(name)
        if f is None or value is None:
            continue
        if f.metadata.get("parse") == "duration" and isinstance(value, str):
            value = out[name] = parse_seconds(value)
        check_type(name, f.type, value)
    check_fields(TrainConfig(**{k: v for k, v in out.items() if k in TRAIN_FIELDS and v is not None}))
    return out


def preset_model(preset: str) -> str:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]["model"]


def make_configs(preset: str | None = None, model: str | None = None,
                 **overrides) -> tuple[ModelConfig, TrainConfig]:
    """Start from the dataclass defaults, apply the preset, then `overrides` (None = unset).

    With no preset, `model`'s default recipe (models/<model>.py, DEFAULT_PRESET); with no
    model either, the MLP's `default`. A setting the model does not have is an error. Settings
    given override the preset's, its time budget included: `steps` given trains that many steps.
    """
    if preset is None:
        preset = models.module(model or models.DEFAULT_MODEL).DEFAULT_PRESET
    name = preset_model(preset)
    if model is not None and model != name:
        models.module(model)  # an unknown model is named as such
        raise UserError(f"preset {preset!r} is a recipe for --model {name}; for --model {model} drop --preset "
                        f"(its recipe is --preset {models.module(model).DEFAULT_PRESET})")
    given = {k: v for k, v in read_settings(overrides).items() if v is not None}
    if "steps" in given:  # the steps asked for, not the preset's budget (with a budget given: the provisional plan)
        given.setdefault("budget", 0.0)
    values = {**{k: v for k, v in PRESETS[preset].items() if k != "model"}, **given}
    model_fields = set(models.config_fields(name)) | set(models.DATA_FIELDS)
    unknown = sorted(set(values) - model_fields - set(TRAIN_FIELDS))
    anywhere = setting_fields()
    typos = [u for u in unknown if u not in anywhere]
    if typos:  # given by keyword through the API (the command line knows its flags)
        close = difflib.get_close_matches(typos[0], sorted(anywhere), n=1)
        raise UserError(f"unknown setting{'s' if len(typos) > 1 else ''} {', '.join(typos)}"
                        + (f" (did you mean {close[0]}?)" if close else ""))
    if unknown:
        others = [m for m in models.MODULES if set(unknown) <= set(models.config_fields(m))]
        hint = f" (settings of --model {', '.join(others)})" if others else ""
        raise UserError(f"{', '.join('--' + u.replace('_', '-') for u in unknown)} does not apply to "
                        f"--model {name}{hint}")
    model_cfg = models.config_class(name)(**{k: v for k, v in values.items() if k in model_fields}).decided()
    train_cfg = TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_FIELDS})
    if isinstance(train_cfg.betas, list):
        train_cfg = replace(train_cfg, betas=tuple(train_cfg.betas))
    model_cfg.validate()
    train_cfg.validate()
    return model_cfg, train_cfg


def model_to_dict(model_cfg: ModelConfig) -> dict:
    return {"name": model_cfg.name, **asdict(model_cfg)}


def configs_to_dict(model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict:
    return {"model": model_to_dict(model_cfg), "train": asdict(train_cfg)}


def model_from_dict(d: dict) -> ModelConfig:
    """A model config as configs_to_dict wrote it; runs from before the model registry are MLPs."""
    d = dict(d)
    name = d.pop("name", models.DEFAULT_MODEL)
    cls = models.config_class(name)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"the config of this --model {name} run has settings this makemore does not know: "
                        f"{', '.join(unknown)}")
    for f in fields(cls):  # a setting added since: what its absence meant, where that is not its default
        if f.name not in d and "legacy" in f.metadata:
            d[f.name] = f.metadata["legacy"]
    return cls(**d)


def configs_from_dict(d: dict) -> tuple[ModelConfig, TrainConfig]:
    train = {k: v for k, v in d["train"].items() if k in TRAIN_FIELDS}
    train["betas"] = tuple(train.get("betas", (0.9, 0.999)))
    return model_from_dict(d["model"]), TrainConfig(**train)
