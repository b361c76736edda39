"""How a run runs, decided once before its engine is made: device, precision, engine, threads,
and each member's seeds on this process.

`resolve` turns the configs' requests (`--device auto`, `--precision auto`, `--engine auto`,
`--threads 0`) and the process group (distributed.py) into one Setup record. The engine and the
training loop read it and decide none of it; summary.json keeps it under "setup". The torch
thread count is set here alone (`using_threads`, `set_threads`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

from .devices import resolve_device, usable_cores
from .errors import UserError


@dataclass(frozen=True)
class Setup:
    device: str  # "cpu" or "cuda"
    device_reason: str  # why this device, when it was chosen for the user (`--device auto`)
    precision: str  # "float32" or "bfloat16": the number format of the step's matrix products
    engine: str  # "fused" (fused.py) or "autograd" (engines.py)
    cuda_graphs: bool  # the step captured as a CUDA graph once warm (graphs.py)
    threads: int  # torch threads of the step; 0: torch's default
    thread_trial: bool  # a budget run on torch's default threads times one thread against all (budget.ThreadTrial)
    world_size: int  # processes of a data-parallel run (1: a plain run)
    rank: int
    dropout_seeds: tuple[int, ...]  # per member: its seed, + rank in a data-parallel run

    def summary(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_threads(n: int, environment: bool = False) -> None:
    """n torch (OpenMP/MKL) threads for this process; `environment`: also for the BLAS libraries
    not yet started and the processes it starts (torchrun sets OMP_NUM_THREADS=1 when it starts
    several workers)."""
    import torch

    if environment:
        for name in THREAD_ENVIRONMENT:
            os.environ[name] = str(n)
    torch.set_num_threads(n)


def default_blas_threads(n: int) -> None:
    """n threads for every BLAS library this process starts from now on, unless the user set
    them: before torch and NumPy start their pools (`makemore tune` runs one trial per core)."""
    for name in THREAD_ENVIRONMENT:
        os.environ.setdefault(name, str(n))


@contextmanager
def using_threads(n: int) -> Iterator[None]:
    """n torch threads inside the block (0: leave them), then the caller's count again (a
    notebook that trains twice keeps its own setting)."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def check_threads(n: int, what: str = "threads") -> None:
    """A thread count the machine can run: 0 (the default) up to its cores. More threads than
    cores only wait for one another, and torch's thread pool crashes at absurd counts."""
    cores = usable_cores()
    if n < 0 or n > cores:
        raise UserError(f"--{what} must be between 0 (torch's default) and the {cores} cores this machine has, "
                        f"got {n}")


def resolve_precision(model_cfg, train_cfg, device: str, engine: str | None = None) -> str:
    """TrainConfig.precision, with `auto` decided: bfloat16 where it buys a timed run (one with
    a --budget) steps at no cost in loss (docs/precision.md): on a CUDA GPU that has it, and on a
    CPU with native bfloat16 where the MLP's fused step has products past OpenBLAS's one-thread
    size (smaller ones stay on NumPy, cheaper per call than any cast). Else float32, which keeps
    fixed-step runs bit-for-bit what they were."""
    from . import fused
    from .utils import native_bfloat16

    if train_cfg.precision != "auto":
        return train_cfg.precision
    if not train_cfg.budget or not native_bfloat16(device):
        return "float32"
    if device == "cuda":
        return "bfloat16"
    engine = engine or resolve_engine(model_cfg, [train_cfg], device)
    return "bfloat16" if engine == "fused" and not fused.small_products(model_cfg, train_cfg.batch_size) else "float32"


def resolve_engine(model_cfg, train_cfgs: Sequence, device: str) -> str:
    """`--engine auto`: the fused engine wherever it supports the run, else autograd."""
    from . import fused

    engine = train_cfgs[0].engine
    if any(c.engine != engine for c in train_cfgs):
        raise UserError("the members of one run must use one engine")
    if engine == "autograd":
        return "autograd"
    reason = next((r for r in (fused.unsupported_reason(model_cfg, c, device) for c in train_cfgs) if r), None)
    if reason is None:
        return "fused"
    if engine == "fused":
        raise UserError(f"--engine fused does not support this run ({reason}); use --engine autograd")
    return "autograd"


def resolve(model_cfg, train_cfgs: Sequence, world=None, device: tuple[str, str] | None = None) -> Setup:
    """The Setup of a run of these members (training.SHARED settings are the same for all) on
    this process of `world` (distributed.World, or None for a plain run); `device`: (device,
    why) where it was decided already (training.choose_device's trial of `--device auto`)."""
    import torch

    from . import optimizers

    first = train_cfgs[0]
    device, why = device or resolve_device(first.device)
    engine = resolve_engine(model_cfg, train_cfgs, device)
    precision = resolve_precision(model_cfg, first, device, engine)
    graphs = (device == "cuda" and engine == "autograd" and len(train_cfgs) == 1 and world is None
              and optimizers.capturable(first.optimizer))
    rank, size = (0, 1) if world is None else (world.rank, world.size)
    threads = first.threads if world is None else world.threads
    trial = bool(first.budget) and threads == 0 and device == "cpu" and world is None and torch.get_num_threads() > 1
    return Setup(device, why, precision, engine, graphs, threads, trial, size, rank,
                 tuple(c.seed + rank for c in train_cfgs))
