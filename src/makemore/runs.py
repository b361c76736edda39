"""A run directory: everything one training run leaves behind, and loading it back.

    RUN/config.json        model (its name and config) + training config, data source and split seed
    RUN/vocab.json         the vocabulary (index 0 = boundary token; 1 = unknown-character token, if any)
    RUN/words.json         the train/dev/test words, so eval and sample tagging need no data file
    RUN/best.safetensors   weights with the best dev loss seen so far
    RUN/last.safetensors   weights, optimizer and RNG state of the last save (for --resume)
    RUN/metrics.csv        step, train_loss, dev_loss, lr, seconds
    RUN/summary.json       final figures

A seed ensemble (`makemore train --seeds K`, training.train_ensemble) is a directory of such runs:

    ENS/ensemble.json      {"format": "makemore-ensemble/1", "members": ["seed-42", ...], ...}
    ENS/seed-42/ ...       one run directory per member

Checkpoints are safetensors files: tensors and a string->string header, nothing executable,
so loading a file from anywhere never runs code (unlike pickled torch.save checkpoints).
Every write is atomic (utils.atomic_write): a kill mid-write leaves the old file intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import models
from .config import TrainConfig, configs_from_dict, configs_to_dict
from .data import SPLITS, Corpus, Vocab
from .errors import UserError
from .models import Model, ModelConfig
from .utils import atomic_write, atomic_write_json

FORMAT = "makemore-run/1"
ENSEMBLE_FORMAT = "makemore-ensemble/1"


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


def load_weights(model: Model, tensors: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy checkpoint tensors into `model`, checking every name and shape first."""
    params = model.state_dict()  # parameters and buffers (e.g. BatchNorm's running statistics)
    expected = {name: tuple(p.shape) for name, p in params.items()}
    for name, shape in expected.items():
        if name not in tensors:
            raise UserError(f"{source} lacks parameter {name}: it was not written for this run's model")
        if tuple(tensors[name].shape) != shape:
            raise UserError(f"{source}: parameter {name} has shape {tuple(tensors[name].shape)}, the run's config says {shape}")
    with torch.no_grad():
        for name in expected:
            value = tensors[name]
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise UserError(f"{source}: parameter {name} holds NaN or inf")
            params[name].copy_(value)


def write_run_files(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
                    vocab: Vocab, splits: dict[str, list[str]], data_source: str, split_seed: int,
                    min_char_count: int = 1) -> None:
    config = {"format": FORMAT, **configs_to_dict(model_cfg, train_cfg),
              "data": {"source": data_source, "split_seed": split_seed, "min_char_count": min_char_count}}
    atomic_write_json(run_dir / "config.json", config)
    atomic_write_json(run_dir / "vocab.json", {"chars": vocab.chars, "boundary": vocab.boundary, "unk": vocab.unk})
    atomic_write_json(run_dir / "words.json", {s: splits[s] for s in SPLITS})


@dataclass
class Run:
    """A trained model with what it needs to be used: vocabulary, configs and split words."""

    path: Path
    model: Model
    vocab: Vocab
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    splits: dict[str, list[str]]
    data_source: str
    split_seed: int
    min_char_count: int = 1

    def summary(self) -> dict:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def corpus(self) -> Corpus:
        """The data the run was trained on, from the run directory alone."""
        return Corpus(self.data_source, [w for s in SPLITS for w in self.splits[s]], self.vocab, self.splits,
                      self.split_seed, self.min_char_count)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / "ensemble.json").is_file()


def read_run_config(run_dir: str | Path) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    if not is_run_dir(run_dir) and is_ensemble_dir(run_dir):
        raise UserError(f"{run_dir} is a seed ensemble, not a single run; give one of its members "
                        f"(the seed-* folders in it) - eval, sample and score take the whole ensemble")
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
        vocab_json = json.loads((run_dir / "vocab.json").read_text(encoding="utf-8"))
        vocab = Vocab(vocab_json["chars"], vocab_json.get("unk"))
        words = json.loads((run_dir / "words.json").read_text(encoding="utf-8"))
        splits = {s: list(words[s]) for s in SPLITS}
    except (OSError, KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{run_dir} is an incomplete or corrupted run directory ({type(e).__name__}: {e})") from None
    model_cfg.validate()
    if vocab.size != model_cfg.vocab_size:
        raise UserError(f"{run_dir}: vocab.json has {vocab.size} characters, config.json says {model_cfg.vocab_size}")
    ckpt = run_dir / f"{checkpoint}.safetensors"
    tensors, _ = load_checkpoint(ckpt)
    model = models.build(model_cfg)
    load_weights(model, tensors, ckpt)
    model.to(device).eval()
    data = config.get("data", {})
    return Run(run_dir, model, vocab, model_cfg, train_cfg, splits, data.get("source", ""),
               data.get("split_seed", 42), data.get("min_char_count", 1))


# --------------------------------------------------------------------------------------------
# Seed ensembles


def write_ensemble(path: str | Path, members: list[str], info: dict | None = None) -> None:
    """ENS/ensemble.json: the member run directories (names inside ENS) and `info`."""
    atomic_write_json(Path(path) / "ensemble.json", {"format": ENSEMBLE_FORMAT, "members": members, **(info or {})})


@dataclass
class Ensemble:
    """Runs of one configuration and different seeds, used as one model: the mean of their
    next-character probabilities (predict.ensemble_predictor)."""

    path: Path
    runs: list[Run]
    info: dict  # ensemble.json

    @property
    def models(self) -> list[Model]:
        return [run.model for run in self.runs]

    @property
    def vocab(self) -> Vocab:
        return self.runs[0].vocab

    @property
    def splits(self) -> dict[str, list[str]]:
        return self.runs[0].splits

    @property
    def model_cfg(self) -> ModelConfig:
        return self.runs[0].model_cfg


def load_ensemble(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> Ensemble:
    """Load every member of ENS (see write_ensemble); a broken ensemble is one UserError."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"ensemble directory not found: {path}")
    broken = f"{path} is a broken seed ensemble"
    try:
        info = json.loads((path / "ensemble.json").read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"{path} is not a seed ensemble (no ensemble.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{broken}: ensemble.json is corrupted") from None
    members = info.get("members") if isinstance(info, dict) else None
    if not isinstance(info, dict) or info.get("format") != ENSEMBLE_FORMAT:
        raise UserError(f"{broken}: ensemble.json has no makemore ensemble format tag")
    if (not isinstance(members, list) or not members
            or not all(isinstance(m, str) and m and Path(m).name == m and m not in (".", "..") for m in members)):
        raise UserError(f"{broken}: ensemble.json must list its member run directories by name")
    runs = []
    for name in members:
        try:
            runs.append(load_run(path / name, checkpoint, device))
        except UserError as e:
            raise UserError(f"{broken}: {e}") from None
    first = runs[0]
    for run in runs[1:]:
        if run.vocab.chars != first.vocab.chars or run.splits != first.splits:
            raise UserError(f"{broken}: {run.path.name} was trained on other data than {first.path.name}")
    return Ensemble(path, runs, info)


def combine_runs(out: str | Path, run_dirs: list[str | Path]) -> Ensemble:
    """ENS from trained runs of any models on the same data: each run's files are copied into
    ENS/<name> (its optimizer state, last.safetensors, left behind) and ENS/ensemble.json lists
    them; the whole directory appears at once (built beside it, then renamed), so a failure
    leaves nothing. The ensemble is the mean of the members' probabilities, as a seed ensemble."""
    import shutil
    import tempfile

    out = Path(out)
    if out.exists():
        raise UserError(f"{out} already exists; pick another --out")
    if len(run_dirs) < 2:
        raise UserError("an ensemble of runs needs at least two runs")
    runs = [load_run(d) for d in run_dirs]  # each one clear error if it is not a run
    first = runs[0]
    for run in runs[1:]:
        if run.vocab.chars != first.vocab.chars or run.splits != first.splits:
            raise UserError(f"{run.path} was trained on other data (or another split) than {first.path}")
    names: list[str] = []
    for run in runs:
        name, i = run.path.resolve().name, 2
        while name in names or name == "ensemble.json":
            name, i = f"{run.path.resolve().name}-{i}", i + 1
        names.append(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for run, name in zip(runs, names):
            shutil.copytree(run.path, tmp / name, ignore=shutil.ignore_patterns("last.safetensors", "*.tmp"))
        write_ensemble(tmp, names, {"combined_from": [str(r.path) for r in runs],
                                    "models": [r.model_cfg.name for r in runs]})
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the ensemble from other users
        tmp.rename(out)
    except OSError as e:
        raise UserError(f"could not write the ensemble {out}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads((out / "ensemble.json").read_text(encoding="utf-8"))
    # the models are loaded already: only their directories moved
    return Ensemble(out, [replace(run, path=out / name) for run, name in zip(runs, names)], info)


def load_any(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run | Ensemble:
    """A run directory as a Run, a seed-ensemble directory as an Ensemble."""
    if is_ensemble_dir(path) and not is_run_dir(path):
        return load_ensemble(path, checkpoint, device)
    return load_run(path, checkpoint, device)


def save_mixture(path: str | Path, mix: dict) -> None:
    """Keep a fitted mixture with an n-gram model (ngram.fit_mixture's settings and dev losses)
    as RUN/mix.json, which `--mix` reads; a single run's summary.json gets it as "mix" too, so
    that the run's record says what its best model is (`makemore mix` and a budget run alike)."""
    path = Path(path)
    atomic_write_json(path / "mix.json", mix)
    if is_run_dir(path):
        summary_path = path / "summary.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
        atomic_write_json(summary_path, {**summary, "mix": mix})
