"""Which device a run computes on: `--device auto` resolved, here alone (runtime.py records it
in a run's Setup; the fused engine asks it which device a config means)."""

from __future__ import annotations

import torch

from .errors import UserError


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
