"""A run directory: everything one training run leaves behind, and loading it back.

    RUN/config.json        model + training config, data source and split seed
    RUN/vocab.json         the vocabulary (index 0 = boundary token)
    RUN/words.json         the train/dev/test words, so eval and sample tagging need no data file
    RUN/best.safetensors   weights with the best dev loss seen so far
    RUN/last.safetensors   weights, optimizer and RNG state of the last save (for --resume)
    RUN/metrics.csv        step, train_loss, dev_loss, lr, seconds
    RUN/summary.json       final figures

Checkpoints are safetensors files: tensors and a string->string header, nothing executable,
so loading a file from anywhere never runs code (unlike pickled torch.save checkpoints).
Every write is atomic (utils.atomic_write): a kill mid-write leaves the old file intact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .config import ModelConfig, TrainConfig, configs_from_dict, configs_to_dict
from .data import SPLITS, Vocab
from .errors import UserError
from .model import MLP, param_shapes
from .utils import atomic_write, atomic_write_json

FORMAT = "makemore-run/1"


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"format": FORMAT, **{k: json.dumps(v) for k, v in (meta or {}).items()}}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint; a corrupted, truncated or foreign file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is not a readable makemore checkpoint (corrupted, truncated or another format): {e}") from None
    if header.get("format") != FORMAT:
        raise UserError(f"{path} is a safetensors file but not a makemore checkpoint")
    try:
        meta = {k: json.loads(v) for k, v in header.items() if k != "format"}
    except json.JSONDecodeError:
        raise UserError(f"{path} has a corrupted header") from None
    return tensors, meta


def load_weights(model: MLP, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy checkpoint tensors into `model`, checking every name and shape first."""
    expected = param_shapes(model.cfg)
    for name, shape in expected.items():
        if name not in tensors:
            raise UserError(f"{source} lacks parameter {name}: it was not written for this run's model")
        if tuple(tensors[name].shape) != shape:
            raise UserError(f"{source}: parameter {name} has shape {tuple(tensors[name].shape)}, the run's config says {shape}")
    with torch.no_grad():
        for name in expected:
            value = tensors[name]
            if not torch.isfinite(value).all():
                raise UserError(f"{source}: parameter {name} holds NaN or inf")
            getattr(model, name).copy_(value)


def write_run_files(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                    vocab: Vocab, splits: dict[str, list[str]], data_source: str, split_seed: int) -> None:
    config = {"format": FORMAT, **configs_to_dict(model_cfg, train_cfg),
              "data": {"source": data_source, "split_seed": split_seed}}
    atomic_write_json(run_dir / "config.json", config)
    atomic_write_json(run_dir / "vocab.json", {"chars": vocab.chars, "boundary": vocab.boundary})
    atomic_write_json(run_dir / "words.json", {s: splits[s] for s in SPLITS})


@dataclass
class Run:
    """A trained model with what it needs to be used: vocabulary, configs and split words."""

    path: Path
    model: MLP
    vocab: Vocab
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    splits: dict[str, list[str]]
    data_source: str
    split_seed: int

    def summary(self) -> dict:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def read_run_config(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a makemore run directory (no config.json); train one with `makemore train --out {run_dir}`")
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{run_dir}/config.json is corrupted") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{run_dir} is not a makemore run directory (config.json has no makemore format tag)")
    return config


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run:
    """Load RUN's `best` (default) or `last` checkpoint into a ready model in eval mode."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    try:
        model_cfg, train_cfg = configs_from_dict(config)
        vocab = Vocab(json.loads((run_dir / "vocab.json").read_text(encoding="utf-8"))["chars"])
        words = json.loads((run_dir / "words.json").read_text(encoding="utf-8"))
        splits = {s: list(words[s]) for s in SPLITS}
    except (OSError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{run_dir} is an incomplete or corrupted run directory ({type(e).__name__}: {e})") from None
    model_cfg.validate()
    if vocab.size != model_cfg.vocab_size:
        raise UserError(f"{run_dir}: vocab.json has {vocab.size} characters, config.json says {model_cfg.vocab_size}")
    ckpt = run_dir / f"{checkpoint}.safetensors"
    tensors, _ = load_checkpoint(ckpt)
    model = MLP(model_cfg)
    load_weights(model, tensors, ckpt)
    model.to(device).eval()
    return Run(run_dir, model, vocab, model_cfg, train_cfg, splits,
               config.get("data", {}).get("source", ""), config.get("data", {}).get("split_seed", 42))
