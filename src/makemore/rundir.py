"""A run directory: every file one training run leaves behind, written and read here alone.

    RUN/config.json        model (its name and config) + training config, and "data": source, split
                           seed, min_char_count, normalize ("nfc" or "none"; absent: "none") and
                           units ("codepoint" or "grapheme"; absent: "codepoint")
    RUN/vocab.json         the vocabulary (index 0 = boundary token; 1 = unknown-character token, if any)
    RUN/words.json         the train/dev/test words as read (normalised, if they were), so eval and
                           sample tagging need no data file
    RUN/best.safetensors   weights with the best dev loss seen so far
    RUN/last.safetensors   weights, optimizer and RNG state of the last save (for --resume)
    RUN/metrics.csv        step, train_loss, dev_loss, lr, seconds (METRIC_FIELDS)
    RUN/summary.json       final figures, and which predictor is the run's result
    RUN/mix.json           the fitted mixture with a count model (mixture.py), if any
    RUN/counts.safetensors that count model's counts (counts.NGramCounts.kept; for the learned
                           interpolation also its gate, interpolation.InterpolatedCounts.kept), so
                           that using the mixture reads them rather than counting the training
                           split again
    RUN/.lock              held by the one process writing the run (RunLock)

vocab.json (vocab.Vocab.to_json / from_json), for a vocabulary of characters (code points):

    {"chars": ".abc", "boundary": ".", "unk": null, "units": "codepoint", "normalize": "nfc"}

`chars` holds one symbol per character, index 0 first. For grapheme clusters (`--units grapheme`)
the symbols may be several code points each, so they are a list, under another key:

    {"symbols": [".", "a", "e\u0301", "\ud83d\udc4d\ud83c\udffd"], "boundary": ".", "unk": null,
     "units": "grapheme", "normalize": "none"}

A file without "units" (written before they existed) is code points; without "normalize", "none"
(config.json's data.normalize, when present, is what load_run uses). A reader that knows only
"chars" fails on a grapheme vocabulary (no such key) rather than misreading it. The boundary and
unknown tokens are single code points found nowhere in the data. Text given to a model (a word to
score, a prefix) is first normalised as `normalize` says, then cut into symbols: each code point,
or each extended grapheme cluster (UAX #29).

A seed ensemble (`makemore train --seeds K`) or an ensemble of runs (`makemore ensemble`) is a
directory of such runs with ENS/ensemble.json listing them.

Checkpoints are safetensors files: tensors and a string->string header, nothing executable,
so loading a file from anywhere never runs code (unlike pickled torch.save checkpoints).
Every write is atomic (outputs.atomic_write): a kill mid-write leaves the old file intact.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import UserError
from .outputs import atomic_write, atomic_write_json

FORMAT = "makemore-run/1"
ENSEMBLE_FORMAT = "makemore-ensemble/1"
METRIC_FIELDS = ("step", "train_loss", "dev_loss", "lr", "seconds")
SPLITS = ("train", "dev", "test")


# ----------------------------------------------------------------------------------------
# Checkpoints


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


def checkpoint_step(path: str | Path) -> int | None:
    """The step a checkpoint was saved at, from its header alone; None for a missing or
    unreadable file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(json.loads((f.metadata() or {})["step"]))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


# ----------------------------------------------------------------------------------------
# metrics.csv: appended as a run trains, read while it may still be growing


def append_metrics(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_FIELDS})


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop rows logged after the checkpoint the run restarts from."""
    if not path.exists():
        return
    columns = read_metrics(path)
    rows = [{c: (None if math.isnan(columns[c][i]) else columns[c][i]) for c in METRIC_FIELDS}
            for i in range(len(columns["step"])) if columns["step"][i] <= last_step]
    for row in rows:
        row["step"] = int(row["step"])

    def write(tmp: str) -> None:
        Path(tmp).unlink()
        append_metrics(Path(tmp), rows)

    atomic_write(path, write)


def read_metrics(path: str | Path, strict: bool = True) -> dict[str, np.ndarray]:
    """metrics.csv as float arrays by column; blank cells (no train loss at step 0, no dev loss
    between evaluations) are NaN. A run may be appending to the file as it is read: a last line
    without its newline, or a row that does not parse, is skipped. `strict`: a missing, empty or
    foreign file is a UserError (else: empty columns)."""
    path = Path(path)
    empty = {c: np.zeros(0) for c in METRIC_FIELDS}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if strict:
            raise UserError(f"{path} not found: the run has no metrics yet") from None
        return empty
    except (OSError, UnicodeDecodeError) as e:  # there, but unreadable: not "no metrics yet"
        if strict:
            what = f"not UTF-8 text (a bad byte at offset {e.start})" if isinstance(e, UnicodeDecodeError) else (
                e.strerror or type(e).__name__)
            raise UserError(f"{path} cannot be read: {what}") from None
        return empty
    text = text[:text.rfind("\n") + 1]
    lines = text.splitlines()
    if strict and lines and tuple(lines[0].split(",")) != METRIC_FIELDS:
        raise UserError(f"{path} is not a makemore metrics file (its header is {lines[0]!r})")
    values: list[list[float]] = []
    try:
        for row in csv.DictReader(lines):
            try:
                cells = [float(row[c]) if row[c] != "" else math.nan for c in METRIC_FIELDS]
            except (KeyError, TypeError, ValueError):
                continue
            if not math.isnan(cells[0]):
                values.append(cells)
    except csv.Error:
        pass
    if strict and not values:
        raise UserError(f"{path} has no rows yet")
    if not values:
        return empty
    table = np.array(values, dtype=np.float64)
    return {c: table[:, i] for i, c in enumerate(METRIC_FIELDS)}


# ----------------------------------------------------------------------------------------
# The lock: one writer per run directory


class RunLock:
    """An exclusive OS lock (flock) on RUN/.lock, held while a process writes the run: a second
    writer (a `--resume` of a run still training, a `mix` of it) is refused with one line naming
    the holder's pid. The kernel releases it when the holder exits, however it exits; readers
    (eval, sample, serve) never take it."""

    NAME = ".lock"

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / self.NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(f"{self.path.parent} is being written by another makemore process (pid {holder}); "
                                f"wait for it to finish, or stop it first") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    @classmethod
    def holder(cls, run_dir: str | Path) -> str | None:
        """The pid of the process writing the run now (training it), or None where none is: a
        reader's question, which creates nothing (a run on a read-only mount is read as well)."""
        import fcntl

        try:
            fd = os.open(Path(run_dir) / cls.NAME, os.O_RDONLY)
        except OSError:  # no .lock: no process has written the run since locks were taken
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at once by the close below
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            return None
        finally:
            os.close(fd)
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------------------
# The JSON files of a run


def read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path.parent} has no {path.name}: {what}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupted") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is corrupted")
    return value


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.json").is_file()


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / "ensemble.json").is_file()


def check_run_dir(run_dir: str | Path) -> Path:
    """RUN as a path, or a UserError saying what it is instead of a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"run directory not found: {run_dir}")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run directory")
    if not is_run_dir(run_dir) and is_ensemble_dir(run_dir):
        raise UserError(_not_a_single_run(run_dir))
    if not is_run_dir(run_dir) and (run_dir / "sweep.json").is_file():
        raise UserError(f"{run_dir} is a sweep's folder, not a run: give one of its runs (the folders in it); its "
                        f"table is {run_dir / 'sweep.csv'}, its plot {run_dir / 'sweep.png'}")
    if not is_run_dir(run_dir) and (run_dir / "tune.json").is_file():
        raise UserError(f"{run_dir} is a tuning study's folder, not a run: give one of its trials' runs, or see "
                        f"the study with `makemore tune --report --out {run_dir}`")
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a makemore run directory (no config.json): `makemore train --out DIR` "
                        f"makes one")
    return run_dir


# the commands that take an ensemble's directory as one model (cli: `_load(..., ensemble=True)`)
TAKE_AN_ENSEMBLE = "eval, sample, score, classify, mix and serve"


def _not_a_single_run(ens: Path) -> str:
    """What an ensemble given for a single run is, and its members by name (a seed ensemble's are
    seed-<s>, an ensemble of runs' are named after the runs it copied)."""
    try:
        info = read_ensemble(ens)
    except UserError as e:
        return str(e)
    kind = "an ensemble of runs" if "combined_from" in info else "a seed ensemble"
    members = info["members"]
    shown = ", ".join(members[:4]) + (f", ... ({len(members)} in all)" if len(members) > 4 else "")
    return (f"{ens} is {kind}, not a single run: give one of its members ({shown}), e.g. {ens / members[0]}; "
            f"{TAKE_AN_ENSEMBLE} take the whole ensemble")


def write_config(run_dir: Path, config: dict, vocab: dict, splits: dict[str, list[str]]) -> None:
    """config.json (with the format tag), vocab.json and words.json of a new run."""
    atomic_write_json(run_dir / "config.json", {"format": FORMAT, **config})
    atomic_write_json(run_dir / "vocab.json", vocab)
    atomic_write_json(run_dir / "words.json", {s: splits[s] for s in SPLITS})


def read_config(run_dir: str | Path) -> dict:
    run_dir = check_run_dir(run_dir)
    config = read_json(run_dir / "config.json", "not a run")
    if config.get("format") != FORMAT:
        raise UserError(f"{run_dir} is not a makemore run directory (config.json has no makemore format tag)")
    return config


def read_vocab_and_words(run_dir: Path) -> tuple[dict, dict[str, list[str]]]:
    vocab = read_json(run_dir / "vocab.json", "an incomplete run directory")
    words = read_json(run_dir / "words.json", "an incomplete run directory")
    try:
        return vocab, {s: list(words[s]) for s in SPLITS}
    except (KeyError, TypeError):
        raise UserError(f"{run_dir}/words.json is corrupted") from None


def read_summary(run_dir: str | Path) -> dict:
    """summary.json ({} while the run is training)."""
    path = Path(run_dir) / "summary.json"
    try:
        return read_json(path, "") if path.is_file() else {}
    except UserError:
        raise UserError(f"{path} is corrupted: it is the run's record of its training (the model is in "
                        f"best.safetensors); restore it, or delete it to use the run without it") from None


def write_summary(run_dir: str | Path, summary: dict) -> None:
    atomic_write_json(Path(run_dir) / "summary.json", summary)


def update_summary(run_dir: str | Path, **changes) -> dict:
    summary = {**read_summary(run_dir), **changes}
    write_summary(run_dir, summary)
    return summary


def write_mixture(run_dir: str | Path, mix: dict) -> None:
    atomic_write_json(Path(run_dir) / "mix.json", mix)


def read_mixture(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "mix.json"
    try:
        return read_json(path, "") if path.is_file() else None
    except UserError:
        raise UserError(f"{path} is corrupted; fit it again with `makemore mix {Path(run_dir)}`") from None


def write_counts(run_dir: str | Path, arrays: dict[str, np.ndarray], vocab_size: int, context: int) -> None:
    """RUN/counts.safetensors: the mixture's count model (counts.NGramCounts.kept)."""
    save_checkpoint(Path(run_dir) / "counts.safetensors", {k: torch.from_numpy(np.ascontiguousarray(v))
                                                           for k, v in arrays.items()},
                    {"counts": {"vocab_size": vocab_size, "context": context}})


def read_counts(run_dir: str | Path, vocab_size: int, context: int) -> dict[str, np.ndarray] | None:
    """The kept counts of a Kneser-Ney model of `context` characters over `vocab_size`, or None
    where there are none for it (a run mixed before they were kept, or mixed again since)."""
    path = Path(run_dir) / "counts.safetensors"
    if not path.is_file():
        return None
    try:
        tensors, meta = load_checkpoint(path)
    except UserError:
        raise UserError(f"{path} is corrupted; fit the mixture again with `makemore mix {Path(run_dir)}`") from None
    if meta.get("counts") != {"vocab_size": vocab_size, "context": context}:
        return None
    return {k: v.numpy() for k, v in tensors.items()}


def write_ensemble(path: str | Path, members: list[str], info: dict | None = None) -> None:
    """ENS/ensemble.json: the member run directories (names inside ENS) and `info`."""
    atomic_write_json(Path(path) / "ensemble.json", {"format": ENSEMBLE_FORMAT, "members": members, **(info or {})})


def read_ensemble(path: str | Path) -> dict:
    """ENS/ensemble.json, checked: a format tag and member names inside ENS."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"ensemble directory not found: {path}")
    if not path.is_dir():
        raise UserError(f"{path} is a file, not an ensemble directory")
    broken = f"{path} is a broken ensemble"
    if not (path / "ensemble.json").is_file():
        raise UserError(f"{path} is not an ensemble (no ensemble.json)")
    try:
        info = json.loads((path / "ensemble.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{broken}: ensemble.json is corrupted") from None
    members = info.get("members") if isinstance(info, dict) else None
    if not isinstance(info, dict) or info.get("format") != ENSEMBLE_FORMAT:
        raise UserError(f"{broken}: ensemble.json has no makemore ensemble format tag")
    if (not isinstance(members, list) or not members
            or not all(isinstance(m, str) and m and Path(m).name == m and m not in (".", "..") for m in members)):
        raise UserError(f"{broken}: ensemble.json must list its member run directories by name")
    return info
