"""GPU queries (`tinycnn.cuda.is_available()`)."""
from __future__ import annotations

from . import backends

__all__ = ["is_available", "device_count"]


def is_available() -> bool:
    """True when CuPy is installed and can reach an NVIDIA GPU."""
    cp = backends.cupy_module(required=False)
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:  # driver problems surface as various CUDA errors
        return False


def device_count() -> int:
    if not is_available():
        return 0
    return int(backends.cupy_module().cuda.runtime.getDeviceCount())
