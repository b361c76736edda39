"""Small helpers shared by several modules: atomic file writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write `path` by calling `write(tmp_path)` on a temp file beside it, then renaming.

    os.replace is atomic on POSIX, so a reader (or a kill -9 in the middle) sees either the
    old file or the complete new one, never a truncated mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _cpuinfo(key: str) -> str | None:
    """The first `key` line's value in Linux's /proc/cpuinfo; None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else the platform's machine type: the
    machine that figures and recipes record beside themselves."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def native_bfloat16(device: str = "cpu") -> bool:
    """Whether `device` multiplies bfloat16 matrices in hardware (TrainConfig.precision): a CUDA
    GPU that says so, or a CPU with AVX512-BF16 or AMX (Linux /proc/cpuinfo flags). Elsewhere
    torch emulates bfloat16 products, slower than float32 ones."""
    import torch

    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(set((_cpuinfo("flags") or "").split()) & {"avx512_bf16", "amx_bf16"})
