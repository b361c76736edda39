"""Experiments over many trainings: the learning-rate range test and grid sweeps, and the
analysis of a trained embedding table (PCA and nearest neighbours).

lr_find is the sweep of "makemore part 2": one fresh model, one minibatch step at each of
`steps` learning rates rising exponentially from lr_min to lr_max

    lre = torch.linspace(-3, 0, 1000); lrs = 10**lre          (the lecture)

and the minibatch loss recorded at each. The loss falls while the rate is useful and blows
up once it is too large; a good rate lies a little below the bottom of the curve.

sweep trains every combination of a grid of config values, each into its own run directory,
and tabulates them; a finished configuration is never trained twice. Points whose models have
the same shape (only lr, seed, weight decay, ... differ) train together as members of one
training loop (training.train_members; one batched step where that pays), each still into its
own run directory.

Both use engines.make_engine for the step and train's minibatches (weights seeded with
`seed`, minibatch indices drawn from a generator seeded with `seed + 1`). lr_find with several
seeds runs them as members of one engine and averages their curves.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from . import models
from .config import TRAIN_FIELDS, TrainConfig, configs_to_dict, make_configs
from .data import SPLITS, Corpus
from . import runtime
from .engines import make_engine
from .errors import UserError
from .models import ModelConfig
from .batches import Minibatches
from .loop import DIVERGED_LOSS
from .training import SHARED, check_data, train_members
from .outputs import atomic_write, atomic_write_json, check_reused_dir, reused_dir

# ----------------------------------------------------------------------------------------
# Learning-rate range test

LR_FIND_FIELDS = ("step", "lr", "loss", "smoothed_loss")
# The suggested rate is the one at the bottom of the smoothed curve divided by this factor.
# At the bottom the loss has stopped falling because the rate is at the edge of stability;
# half of it keeps a margin. On names, the lecture preset's curve bottoms out at 0.12-0.21
# (seeds 42, 1, 2), so the rule says 0.06-0.11, around the lecture's own pick of 0.1.
SUGGEST_DIVISOR = 2.0


def lr_schedule(lr_min: float, lr_max: float, steps: int) -> np.ndarray:
    """`steps` rates evenly spaced in log10 from lr_min to lr_max, both ends included."""
    return 10.0 ** np.linspace(math.log10(lr_min), math.log10(lr_max), steps)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` points (odd), ignoring NaN; no lag, unlike an EMA.

    Near the ends the window shrinks to the points that exist; a point with no finite value
    in its window is NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    half = max(0, window // 2)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(len(values))
    lo, hi = np.clip(idx - half, 0, len(values)), np.clip(idx + half + 1, 0, len(values))
    count = ccount[hi] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (csum[hi] - csum[lo]) / np.maximum(count, 1), np.nan)


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray, lr_min: float, lr_max: float,
               divisor: float = SUGGEST_DIVISOR) -> tuple[float, str]:
    """The rate at the minimum of the smoothed curve / divisor, kept inside [lr_min, lr_max]."""
    if not np.isfinite(smoothed).any():
        return float(lr_min), "every loss diverged: the lowest rate of the range (lower --lr-min)"
    i = int(np.nanargmin(smoothed))
    at_min = float(lrs[i])
    lr = min(max(at_min / divisor, lr_min), lr_max)
    rule = f"the rate at the minimum of the smoothed loss ({at_min:.3g}) / {divisor:g}"
    if at_min / divisor < lr_min:
        rule += ", raised to --lr-min; the minimum lies at the low end, try a lower --lr-min"
    elif i == len(lrs) - 1:
        rule += "; the loss was still falling at --lr-max, try a higher --lr-max"
    return float(lr), rule


@dataclass
class LRFindResult:
    rows: list[dict]  # step, lr, loss (None once diverged), smoothed_loss (None where no data)
    suggested_lr: float
    rule: str
    lr_at_min: float
    min_smoothed_loss: float
    diverged_at: int | None  # first step whose loss was not finite or > training.DIVERGED_LOSS
    window: int
    seconds: float
    engine: str
    settings: dict = field(default_factory=dict)


def lr_find(corpus: Corpus, model_cfg: ModelConfig, train_cfg: TrainConfig, lr_min: float = 1e-3,
            lr_max: float = 1.0, steps: int = 1000, window: int | None = None,
            divisor: float = SUGGEST_DIVISOR, seeds: int = 1) -> LRFindResult:
    """The lecture's learning-rate sweep: one minibatch step at each rate of lr_schedule.

    The loss recorded at step i is the minibatch loss before update i (as in the lecture's
    loop). Once the loss diverges (inf/NaN or above training.DIVERGED_LOSS) the model is beyond
    repair: stepping stops and the remaining rows keep their rate with an empty loss.

    With `seeds` K > 1, K models (seeds train_cfg.seed, +1, ..., +K-1: other weights, other
    minibatches) take the same rates side by side as one population, and the curve is their
    mean loss: less noise from any one seed's minibatches. It stops where the first of them
    diverges.
    """
    if not (lr_min > 0 and lr_max > 0):
        raise UserError(f"lr-min and lr-max must be positive, got {lr_min:g} and {lr_max:g}")
    if not lr_min < lr_max:
        raise UserError(f"lr-min ({lr_min:g}) must be below lr-max ({lr_max:g})")
    if steps < 2:
        raise UserError(f"steps must be at least 2 for a range test, got {steps}")
    if not divisor >= 1:
        raise UserError(f"the divisor of the suggested rate must be at least 1, got {divisor:g}")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}")
    check_data(corpus, model_cfg, train_cfg)
    lrs = lr_schedule(lr_min, lr_max, steps)
    t0 = time.perf_counter()
    cfgs = [replace(train_cfg, seed=train_cfg.seed + i) for i in range(seeds)]
    setup = runtime.resolve(model_cfg, cfgs)
    with runtime.using_threads(setup.threads):
        losses, engine_name = _range_test(corpus, model_cfg, cfgs, lrs, setup)
    seconds = time.perf_counter() - t0
    diverged = np.flatnonzero(np.isnan(losses))
    diverged_at = int(diverged[0]) if len(diverged) else None

    if window is None:
        window = max(1, steps // 20) | 1  # odd: 51 for 1000 steps
    smoothed = smooth(losses, window)
    suggested, rule = suggest_lr(lrs, smoothed, lr_min, lr_max, divisor)
    i_min = int(np.nanargmin(smoothed)) if np.isfinite(smoothed).any() else 0
    rows = [{"step": i, "lr": float(lr), "loss": None if np.isnan(l) else float(l),
             "smoothed_loss": None if np.isnan(s) else float(s)}
            for i, (lr, l, s) in enumerate(zip(lrs, losses, smoothed))]
    return LRFindResult(rows, suggested, rule, float(lrs[i_min]),
                        float(smoothed[i_min]) if np.isfinite(smoothed[i_min]) else math.nan,
                        diverged_at, window, seconds, engine_name,
                        settings={"lr_min": lr_min, "lr_max": lr_max, "steps": steps, "seeds": seeds,
                                  "batch_size": train_cfg.batch_size, "optimizer": train_cfg.optimizer})


def _range_test(corpus: Corpus, model_cfg: ModelConfig, cfgs: list[TrainConfig], lrs: np.ndarray,
                setup: runtime.Setup) -> tuple[np.ndarray, str]:
    """K seeds' minibatch losses at the rates `lrs`, as the members of one engine (a population
    where it pays): their mean loss, NaN from the first divergence of any of them on."""
    members = [models.build(model_cfg, seed=cfg.seed).to(setup.device) for cfg in cfgs]
    for model in members:
        model.train()
        model.observe_training_data(corpus.encoded("train"))
    engine = make_engine(members, cfgs, setup)
    batches = Minibatches(corpus.encoded("train"), model_cfg.block_size, [cfg.seed for cfg in cfgs],
                          cfgs[0].batch_size, whole_words=members[0].sequence)
    losses = np.full(len(lrs), np.nan)
    for i, lr in enumerate(lrs):
        idx, y = batches.at(i, len(lrs) - 1)
        step_losses = engine.step(idx, y, np.full(len(cfgs), lr))
        if not np.all(step_losses <= DIVERGED_LOSS):  # inf, NaN or blown up, in any member
            break
        losses[i] = step_losses.mean()
    return losses, engine.name


# ----------------------------------------------------------------------------------------
# Grid sweeps

TABLE_FIELDS = ("name", "params", "train_loss", "dev_loss", "gap", "seconds", "steps", "status")
# a run with one of these statuses is done: retraining it with the same seed gives the same run
FINISHED = ("completed", "diverged")


def grid_fields(model: str) -> dict:
    """The settings a sweep of `model` may vary: its config fields and the training ones
    (vocab_size comes from the data; betas is not a grid key)."""
    keys = {**models.config_fields(model), **TRAIN_FIELDS}
    return {k: f for k, f in sorted(keys.items()) if k not in ("vocab_size", "betas")}


def _parse_value(key: str, text: str, field):
    default = field.default
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            value = float(text)  # accepts 1e3 too, as long as it is a whole number
            if not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise UserError(f"grid: {key.replace('_', '-')}={text!r} is not a valid {kind}") from None
    return text


def parse_grid(spec: str, model: str = models.DEFAULT_MODEL) -> dict[str, list]:
    """'emb_dim=2,10 hidden=100,200' -> {'emb_dim': [2, 10], 'hidden': [100, 200]}.

    Keys are the model's config fields and TrainConfig's, with dashes or underscores; values
    are parsed to the field's type (see grid_fields).
    """
    keys = grid_fields(model)
    grid: dict[str, list] = {}
    tokens = spec.split()
    if not tokens:
        raise UserError("grid is empty; give it as KEY=V1,V2 ..., e.g. \"emb_dim=2,10 hidden=100,200\"")
    for token in tokens:
        key, sep, values = token.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"grid: {token!r} is not KEY=V1,V2,...; e.g. \"emb_dim=2,10 hidden=100,200\"")
        if key not in keys:
            raise UserError(f"grid: unknown key {key!r} for --model {model}; use one of {', '.join(keys)}")
        if key in grid:
            raise UserError(f"grid: {key} is given twice")
        items = [v.strip() for v in values.split(",")]
        if not values or any(not v for v in items):
            raise UserError(f"grid: {token!r} has an empty value; give values as {key}=V1,V2,...")
        parsed = [_parse_value(key, v, keys[key]) for v in items]
        if len(set(parsed)) != len(parsed):
            raise UserError(f"grid: {key} repeats a value ({values})")
        grid[key] = parsed
    return grid


def _format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_name(combo: dict) -> str:
    """The run directory name of one grid point: 'emb_dim=2,hidden=100', in grid order."""
    name = ",".join(f"{k}={_format_value(v)}" for k, v in combo.items())
    return "".join(c if c.isalnum() or c in "=,.-_+" else "_" for c in name)


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _same_json(a, b) -> bool:
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def run_state(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus) -> str:
    """'missing', 'finished' (same config and data, status in FINISHED), 'partial' (ours, not
    finished: restart it), or 'other' (a finished run of another config, or not a run)."""
    if not run_dir.exists():
        return "missing"
    if not run_dir.is_dir():
        return "other"
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        # train() creates the directory and then writes config.json: a kill between the two
        # leaves it empty. Anything else in it is not ours to delete.
        return "partial" if not any(run_dir.iterdir()) else "other"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        words = json.loads((run_dir / "words.json").read_text(encoding="utf-8"))
        same = (_same_json({"model": config["model"], "train": config["train"]},
                           configs_to_dict(model_cfg, train_cfg))
                and all(words[s] == corpus.splits[s] for s in SPLITS))
    except (OSError, ValueError, KeyError, TypeError):
        return "partial"  # killed while writing its first files
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        finished = summary.get("status") in FINISHED
    except (OSError, ValueError):
        finished = False
    if finished:
        return "finished" if same else "other"
    return "partial"


def table_row(name: str, combo: dict, summary: dict) -> dict:
    row = {"name": name, **combo, "params": summary["params"], "train_loss": summary["train_loss"],
           "dev_loss": summary["dev_loss"], "gap": summary["dev_loss"] - summary["train_loss"],
           "seconds": summary["seconds"], "steps": summary["steps"], "status": summary["status"]}
    return row


@dataclass
class SweepResult:
    table: list[dict]  # sorted by dev loss
    grid: dict[str, list]
    trained: list[str]  # names trained by this call
    reused: list[str]  # names found finished and skipped


def sweep(corpus: Corpus, grid: dict[str, list], out: str | Path, preset: str | None = None,
          model: str | None = None, overrides: dict | None = None,
          on_result: Callable[[int, int, str, dict, bool], None] | None = None) -> SweepResult:
    """Train each grid point into out/<config_name> as a normal run; skip the finished ones.

    `overrides` apply to every point (e.g. steps); a key may not be both in it and the grid.
    A run directory left unfinished by a killed sweep is removed and trained again; one that
    holds a finished run of another config is an error (nothing is deleted).
    Unfinished points whose models have one config and share training.SHARED settings train
    together as members of one loop, when the first of them comes up; the others alone.
    `on_result(i, n, name, row, reused)` is called after each point.
    """
    out = check_reused_dir(out)  # before any point is checked or trained
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    both = sorted(set(grid) & set(overrides))
    if both:
        raise UserError(f"{', '.join(k.replace('_', '-') for k in both)} given both in the grid and as a flag")
    points = grid_points(grid)
    plans = []
    for combo in points:  # check every point first: a bad value fails before any training
        try:
            model_cfg, train_cfg = make_configs(preset, model, vocab_size=corpus.vocab.size, **{**overrides, **combo})
        except UserError as e:
            raise UserError(f"grid point {config_name(combo)}: {e}") from None
        name = config_name(combo)
        state = run_state(out / name, model_cfg, train_cfg, corpus)
        if state == "other":
            raise UserError(f"{out / name} holds something else than this sweep's run for {name} (another "
                            f"config, data or steps, or not a run); pick another --out or remove it")
        plans.append((combo, name, model_cfg, train_cfg, state))

    _check_earlier_table(out, {name for _, name, *_ in plans})
    groups: dict[tuple, list[int]] = {}  # unfinished points that may train as members of one loop
    for i, (_, _, model_cfg, train_cfg, state) in enumerate(plans):
        if state != "finished":
            groups.setdefault(member_key(model_cfg, train_cfg), []).append(i)
    with reused_dir(out):  # removed again if the sweep fails before anything is written into it
        return _sweep_points(corpus, grid, out, plans, groups, on_result)


def _check_earlier_table(out: Path, names: set[str]) -> None:
    """A sweep's table lists its grid's points: a sweep of another grid into the same folder would
    replace the table, and the earlier points would drop out of it (their runs left unlisted)."""
    path = out / "sweep.json"
    if not path.is_file():
        return
    try:
        earlier = {row["name"] for row in json.loads(path.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError, KeyError):
        raise UserError(f"{path} is corrupted: remove it (the runs beside it are intact) or give another "
                        f"--out") from None
    left_out = sorted(earlier - names)
    if left_out:
        shown = ", ".join(left_out[:3]) + (", ..." if len(left_out) > 3 else "")
        raise UserError(f"{out} holds the table of a sweep of another grid ({len(left_out)} of its points are not in "
                        f"this one: {shown}); its table would be replaced: give another --out, or a grid that "
                        f"includes them")


def _sweep_points(corpus, grid, out, plans, groups, on_result) -> SweepResult:
    table, trained, reused = [], [], []
    summaries: dict[int, dict] = {}  # points trained ahead of their turn, as members of one loop
    for i, (combo, name, model_cfg, train_cfg, state) in enumerate(plans):
        run_dir = out / name
        if state == "finished":
            summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
            reused.append(name)
        else:
            if i not in summaries:
                group = groups[member_key(model_cfg, train_cfg)]
                for j in group:
                    if plans[j][4] == "partial":
                        shutil.rmtree(out / plans[j][1])
                results = train_members(corpus, model_cfg, [plans[j][3] for j in group],
                                        [out / plans[j][1] for j in group], progress=False)
                if any(r.status == "interrupted" for r in results):
                    raise KeyboardInterrupt
                summaries.update({j: r.summary for j, r in zip(group, results)})
            summary = summaries.pop(i)
            trained.append(name)
        row = table_row(name, combo, summary)
        table.append(row)
        if on_result is not None:
            on_result(i, len(plans), name, row, state == "finished")
    table.sort(key=lambda r: (math.isnan(r["dev_loss"]), r["dev_loss"]))
    write_table(table, grid, out / "sweep.csv", out / "sweep.json")
    return SweepResult(table, grid, trained, reused)


def member_key(model_cfg: ModelConfig, train_cfg: TrainConfig) -> tuple:
    """Runs with equal keys can be members of one training loop (training.SHARED)."""
    return (model_cfg.name, tuple(sorted(vars(model_cfg).items())), *(getattr(train_cfg, n) for n in SHARED))


def table_fields(grid: dict[str, list]) -> list[str]:
    return ["name", *grid, *TABLE_FIELDS[1:]]


def write_table(table: list[dict], grid: dict[str, list], csv_path: Path, json_path: Path) -> None:
    """The sweep's table as CSV (columns of table_fields) and as a JSON list of rows."""
    columns = table_fields(grid)

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in table:
                writer.writerow({c: _format_value(row[c]) if isinstance(row[c], bool) else row[c] for c in columns})

    atomic_write(csv_path, write_csv)
    atomic_write_json(json_path, table)


# ----------------------------------------------------------------------------------------
# Embeddings: the table C of a trained model


def embedding_projection(C: np.ndarray) -> tuple[np.ndarray, float, list[float]]:
    """2-D coordinates for each row of C: C itself when it has 2 columns, else its first two
    principal components (SVD of the centred C). Returns (xy, share of variance the two axes
    keep, share of each axis). A 1-column C is drawn on a line (y = 0)."""
    C = np.asarray(C, dtype=np.float64)
    centred = C - C.mean(axis=0, keepdims=True)
    total = float((centred ** 2).sum())
    if C.shape[1] == 2:
        axis_var = (centred ** 2).sum(axis=0)
        shares = [float(v / total) if total > 0 else 0.5 for v in axis_var]
        return C.copy(), 1.0, shares
    if C.shape[1] == 1:
        return np.column_stack([C[:, 0], np.zeros(len(C))]), 1.0, [1.0, 0.0]
    _, S, Vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ Vt[:2].T
    var = S ** 2
    shares = [float(v / total) if total > 0 else 0.0 for v in var[:2]]
    return xy, float(min(1.0, sum(shares))), shares


# Rows of C whose distances to every row are computed at once: memory (rows x V float64) stays
# a few tens of MiB for a vocabulary of thousands of characters.
NEIGHBOUR_ROWS = 512


def nearest_neighbours(C: np.ndarray, k: int = 3, metric: str = "euclidean",
                       rows: int = NEIGHBOUR_ROWS) -> list[list[tuple[int, float]]]:
    """For each row of C, the k other rows nearest to it: (index, distance), nearest first
    (ties by index).

    euclidean: straight-line distance; cosine: 1 - cosine similarity. Computed a block of
    `rows` rows at a time from inner products (|a - b|^2 = |a|^2 + |b|^2 - 2 a.b), so a
    vocabulary of thousands of characters needs no (V, V, dim) array.
    """
    C = np.asarray(C, dtype=np.float64)
    if metric == "cosine":
        C = C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    elif metric != "euclidean":
        raise UserError(f"metric must be euclidean or cosine, got {metric!r}")
    n, squared = len(C), (C ** 2).sum(axis=1)
    k = min(k, n - 1)
    if k < 1:
        return [[] for _ in range(n)]
    out = []
    for lo in range(0, n, rows):
        block = C[lo:lo + rows] @ C.T
        if metric == "euclidean":
            dist = np.sqrt(np.maximum(squared[lo:lo + rows, None] + squared[None, :] - 2.0 * block, 0.0))
        else:
            dist = 1.0 - block
        dist[np.arange(len(block)), np.arange(lo, lo + len(block))] = np.inf
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1]
        for i, row in enumerate(dist):
            # every row within the k-th smallest distance, ordered by (distance, index); distances
            # within 1e-9 are ties (the inner products round differently)
            candidates = np.flatnonzero(row <= kth[i] + 1e-9)
            nearest = candidates[np.lexsort((candidates, np.round(row[candidates], 9)))][:k]
            out.append([(int(j), float(row[j])) for j in nearest])
    return out
