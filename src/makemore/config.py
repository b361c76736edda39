"""Configs as plain dataclasses, and named presets that override their defaults.

A preset is a dict of field values; flags given on the command line override it. The
`lecture` preset is the recipe of "makemore part 2"; the others are ours and each README
figure names the preset and command that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .errors import UserError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "inverse", "cosine", "constant")
INITS = ("randn", "scaled")
ENGINES = ("auto", "fused", "autograd")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelConfig:
    """The MLP of Bengio et al. (2003): embeddings -> tanh hidden layer(s) -> logits."""

    vocab_size: int = 27
    block_size: int = 3  # characters of context
    emb_dim: int = 10  # size of each character's embedding (the lecture's C has 10 columns)
    hidden: int = 200  # units per tanh hidden layer
    layers: int = 1  # tanh hidden layers
    direct: bool = False  # Bengio's direct connections from the embeddings to the output
    dropout: float = 0.0  # on each hidden layer's output, during training only
    # "randn": the lecture's plain torch.randn for every tensor; "scaled": Kaiming-style
    # tanh-gain/sqrt(fan_in) for hidden layers and a small output layer (makemore part 3).
    init: str = "scaled"

    def validate(self) -> None:
        for name in ("vocab_size", "block_size", "emb_dim", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INITS:
            raise UserError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")


@dataclass
class TrainConfig:
    """Minibatch gradient descent on the training split, judged on the dev split."""

    steps: int = 200_000
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    # step: lr until `decay_at` of the run, then lr*decay_factor (the lecture: 0.1 -> 0.01 at
    # 100k of 200k); inverse: lr / (1 + decay_rate*t) (Bengio et al.); cosine: lr down to
    # lr*min_lr_frac after `warmup` linear steps; constant.
    schedule: str = "step"
    decay_at: float = 0.5
    decay_factor: float = 0.1
    decay_rate: float = 1e-4
    min_lr_frac: float = 0.0
    warmup: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 42  # weights and minibatch order; the data split has its own seed
    eval_interval: int = 0  # steps between dev evaluations; 0 picks about 20 per run
    engine: str = "auto"
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default

    def validate(self) -> None:
        if self.steps < 1:
            raise UserError(f"steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UserError(f"batch-size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UserError(f"lr (learning rate) must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"weight-decay must be >= 0, got {self.weight_decay}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("engine", ENGINES), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @property
    def eval_every(self) -> int:
        return self.eval_interval if self.eval_interval > 0 else max(1, self.steps // 20)


PRESETS: dict[str, dict] = {
    # makemore part 2, end of the lecture: 11,897 parameters, dev 2.17 in the video.
    "lecture": dict(block_size=3, emb_dim=10, hidden=200, init="randn", batch_size=32,
                    steps=200_000, lr=0.1, optimizer="sgd", schedule="step",
                    decay_at=0.5, decay_factor=0.1),
    # The lecture's 2-D embedding experiment: 3,481 parameters, small enough to plot C.
    "tiny2d": dict(block_size=3, emb_dim=2, hidden=100, init="randn", batch_size=32,
                   steps=50_000, lr=0.1, optimizer="sgd", schedule="step"),
    # Least wall time to dev <= 2.17 on 2 CPU cores (see README, `make bench`).
    "fast": dict(block_size=4, emb_dim=12, hidden=128, batch_size=128, steps=1_000,
                 lr=0.03, optimizer="adamw", schedule="cosine", weight_decay=0.01),
    # Best dev loss in about 3 minutes on 2 CPU cores (see README): the best trial of a
    # 30-minute `makemore tune` study on names (dev 1.9386 with hidden 922 in 274 s), narrowed
    # to hidden 768 and 5,500 steps to fit the time (dev 1.9398 in 174 s).
    "default": dict(block_size=10, emb_dim=48, hidden=768, layers=2, batch_size=676, steps=5_500,
                    lr=2.4e-3, optimizer="adamw", schedule="cosine", dropout=0.278,
                    weight_decay=0.0517, init="scaled"),
}


def make_configs(preset: str | None = "default", **overrides) -> tuple[ModelConfig, TrainConfig]:
    """Start from the dataclass defaults, apply the preset, then `overrides` (None = unset)."""
    if preset is None:
        preset = "default"
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    model_fields = {f.name for f in fields(ModelConfig)}
    train_fields = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - model_fields - train_fields
    if unknown:
        raise UserError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    model_cfg = ModelConfig(**{k: v for k, v in values.items() if k in model_fields})
    train_cfg = TrainConfig(**{k: v for k, v in values.items() if k in train_fields})
    if isinstance(train_cfg.betas, list):
        train_cfg = replace(train_cfg, betas=tuple(train_cfg.betas))
    model_cfg.validate()
    train_cfg.validate()
    return model_cfg, train_cfg


def configs_to_dict(model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict:
    return {"model": asdict(model_cfg), "train": asdict(train_cfg)}


def configs_from_dict(d: dict) -> tuple[ModelConfig, TrainConfig]:
    train = dict(d["train"])
    train["betas"] = tuple(train.get("betas", (0.9, 0.999)))
    return ModelConfig(**d["model"]), TrainConfig(**train)
