"""A trained run, loaded: its model, vocabulary, configs and split words (Run), and ensembles
of runs used as one model (Ensemble). The files themselves are rundir.py's.

A seed ensemble (`makemore train --seeds K`, training.train_ensemble) is a directory of runs:

    ENS/ensemble.json      {"format": "makemore-ensemble/1", "members": ["seed-42", ...], ...}
    ENS/seed-42/ ...       one run directory per member
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import models, rundir
from .config import TrainConfig, configs_from_dict, configs_to_dict
from .data import SPLITS, Corpus, Vocab
from .errors import UserError
from .models import Model, ModelConfig
from .outputs import check_new_dir, umask, writing


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
    """config.json, vocab.json, words.json; how the text was read (normalize, units) is the vocabulary's."""
    config = {**configs_to_dict(model_cfg, train_cfg),
              "data": {"source": data_source, "split_seed": split_seed, "min_char_count": min_char_count,
                       "normalize": vocab.normalize, "units": vocab.units}}
    rundir.write_config(run_dir, config, vocab.to_json(), splits)


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

    @property
    def normalize(self) -> str:
        """How the run's text was read: "nfc", or "none" (also every run written before the option)."""
        return self.vocab.normalize

    @property
    def units(self) -> str:
        return self.vocab.units

    @property
    def summary(self) -> dict:
        """summary.json (empty where training never finished), as `mm.train`'s result.summary."""
        return rundir.read_summary(self.path)

    def corpus(self) -> Corpus:
        """The data the run was trained on, from the run directory alone."""
        return Corpus(self.data_source, [w for s in SPLITS for w in self.splits[s]], self.vocab, self.splits,
                      self.split_seed, self.min_char_count)


def read_run_files(run_dir: str | Path):
    """RUN's config.json, vocab.json and words.json, checked against each other: (config,
    model_cfg, train_cfg, vocab, splits). What every reader of a run needs but the weights."""
    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    vocab_json, splits = rundir.read_vocab_and_words(run_dir)
    try:
        model_cfg, train_cfg = configs_from_dict(config)
        # runs written before --normalize existed read their text as it was: "none"
        vocab = Vocab.from_json(vocab_json, normalize=config.get("data", {}).get("normalize", "none"))
        if vocab.units != config.get("data", {}).get("units", vocab.units):
            raise ValueError(f"vocab.json has units {vocab.units!r}, config.json {config['data']['units']!r}")
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{run_dir} is an incomplete or corrupted run directory ({type(e).__name__}: {e})") from None
    model_cfg.validate()
    if vocab.size != model_cfg.vocab_size:
        raise UserError(f"{run_dir}: vocab.json has {vocab.size} characters, config.json says {model_cfg.vocab_size}")
    if len(vocab.labels) != model_cfg.labels:
        raise UserError(f"{run_dir}: vocab.json has {len(vocab.labels)} labels, config.json says {model_cfg.labels}")
    return config, model_cfg, train_cfg, vocab, splits


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run:
    """Load RUN's `best` (default) or `last` checkpoint into a ready model in eval mode."""
    run_dir = Path(run_dir)
    config, model_cfg, train_cfg, vocab, splits = read_run_files(run_dir)
    ckpt = run_dir / f"{checkpoint}.safetensors"
    tensors, _ = rundir.load_checkpoint(ckpt)
    model = models.build(model_cfg)
    load_weights(model, tensors, ckpt)
    model.to(device).eval()
    data = config.get("data", {})
    return Run(run_dir, model, vocab, model_cfg, train_cfg, splits, data.get("source", ""),
               data.get("split_seed", 42), data.get("min_char_count", 1))


# --------------------------------------------------------------------------------------------
# Seed ensembles


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

    def corpus(self) -> Corpus:
        """The data its members were trained on (the same for all)."""
        return self.runs[0].corpus()

    @property
    def model_cfg(self) -> ModelConfig:
        return self.runs[0].model_cfg


def load_ensemble(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> Ensemble:
    """Load every member of ENS (see write_ensemble); a broken ensemble is one UserError."""
    path = Path(path)
    info = rundir.read_ensemble(path)
    broken = f"{path} is a broken ensemble"
    runs = []
    for name in info["members"]:
        try:
            runs.append(load_run(path / name, checkpoint, device))
        except UserError as e:
            raise UserError(f"{broken}: {e}") from None
    for run in runs[1:]:
        try:
            check_same_data(run, runs[0])
        except UserError as e:
            raise UserError(f"{broken}: {e}") from None
    return Ensemble(path, runs, info)


def check_same_data(run: Run, first: Run) -> None:
    """Runs used as one model must predict the same characters of the same split."""
    if run.vocab.chars != first.vocab.chars:
        raise UserError(f"{run.path} has another vocabulary ({run.vocab.size:,} characters) than {first.path} "
                        f"({first.vocab.size:,}): they were trained on other data files")
    if run.splits != first.splits:
        raise UserError(f"{run.path} was trained on another train/dev/test split than {first.path} (another data "
                        f"file or --split-seed): their dev losses would not compare")


def load_members(out: str | Path, run_dirs: list[str | Path]) -> list[Run]:
    """The runs of an ensemble to be made at `out` (a new folder), loaded and checked: at least
    two, each once, none training now, all trained on the same data and split."""
    check_new_dir(out)
    if len(run_dirs) < 2:
        raise UserError("an ensemble of runs needs at least two runs")
    resolved = [Path(d).resolve() for d in run_dirs]
    twice = next((d for i, d in enumerate(run_dirs) if resolved[i] in resolved[:i]), None)
    if twice is not None:
        raise UserError(f"{twice} is given twice: an ensemble's members must be different runs")
    runs = [load_run(d) for d in run_dirs]  # each one clear error if it is not a run
    for d in run_dirs:  # a run killed before its end joins with its best checkpoint, as eval and sample use it
        pid = rundir.RunLock.holder(d)
        if pid is not None:
            raise UserError(f"{d} is training now (pid {pid}); wait for it to finish, or stop it (it saves as it "
                            f"stops), then make the ensemble")
    for run in runs[1:]:
        check_same_data(run, runs[0])
    return runs


def member_names(runs: list[Run]) -> list[str]:
    """The members' folder names inside an ensemble: each run's own name, made unique."""
    names: list[str] = []
    for run in runs:
        name, i = run.path.resolve().name, 2
        while name in names or name == "ensemble.json":
            name, i = f"{run.path.resolve().name}-{i}", i + 1
        names.append(name)
    return names


def combine_runs(out: str | Path, runs: list[Run], info: dict | None = None) -> Ensemble:
    """ENS from trained runs of any models on the same data (load_members): each run's files are
    copied into ENS/<name> (its optimizer state, last.safetensors, left behind) and
    ENS/ensemble.json lists them with `info`; the whole directory appears at once (built beside
    it, then renamed), so a failure leaves nothing. The ensemble is the mixture of the members'
    probabilities (predict.ensemble_predictor)."""
    import contextlib
    import shutil
    import tempfile

    out = check_new_dir(out)
    names = member_names(runs)
    made = [p for p in reversed(out.parents) if not p.exists()]  # removed again if this fails
    tmp = None
    try:
        with writing(out, "create"):  # the folder asked for, not the temporary one beside it
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            for run, name in zip(runs, names):
                shutil.copytree(run.path, tmp / name,
                                ignore=shutil.ignore_patterns("last.safetensors", "*.tmp", rundir.RunLock.NAME))
            rundir.write_ensemble(tmp, names, {"combined_from": [str(r.path) for r in runs],
                                               "models": [r.model_cfg.name for r in runs], **(info or {})})
            tmp.chmod(0o777 & ~umask())  # mkdtemp's 0700 would hide the ensemble from other users
            tmp.rename(out)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not out.exists():
            for p in reversed(made):
                with contextlib.suppress(OSError):
                    p.rmdir()  # only if empty: another process may have written there since
    # the models are loaded already: only their directories moved
    return Ensemble(out, [replace(run, path=out / name) for run, name in zip(runs, names)], rundir.read_ensemble(out))


def load_any(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> Run | Ensemble:
    """A run directory as a Run, a seed-ensemble directory as an Ensemble."""
    if rundir.is_ensemble_dir(path) and not rundir.is_run_dir(path):
        return load_ensemble(path, checkpoint, device)
    return load_run(path, checkpoint, device)
