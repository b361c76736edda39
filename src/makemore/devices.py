"""What the machine offers a run: its cores, and which device it computes on (`--device auto`
resolved here alone; runtime.py records it in a run's Setup)."""

from __future__ import annotations

import os

import torch

from .errors import UserError


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_device(device: str) -> tuple[str, str]:
    """(device, why): `auto` takes a CUDA GPU when one is present, else the CPU."""
    if device == "auto":
        if cuda_available():
            return "cuda", f"--device auto: a CUDA GPU is present ({torch.cuda.get_device_name(0)})"
        return "cpu", ""
    if device == "cuda" and not cuda_available():
        raise UserError("--device cuda was asked for but PyTorch sees no CUDA GPU here; use --device cpu")
    return device, ""
