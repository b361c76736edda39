"""Small helpers shared by several modules: what machine this is."""

from __future__ import annotations


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
