"""Seeded randomness: one generator per device, reset by `manual_seed`.

Everything random in the library (initialisation, dropout masks, `randn`/`rand`, data
shuffling and augmentation defaults) draws from `generator(device)`, so
`tinycnn.manual_seed(s)` makes a run repeat exactly.
"""
from __future__ import annotations

import numpy as np

from . import backends

_seed = 0
_cpu = np.random.default_rng(_seed)
_gpu = None


def manual_seed(seed: int) -> None:
    """Seed every random source the library uses (CPU and, when present, GPU)."""
    global _seed, _cpu, _gpu
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    _seed = int(seed)
    _cpu = np.random.default_rng(_seed)
    _gpu = None  # re-created lazily from the new seed


def initial_seed() -> int:
    return _seed


def generator(device: str = "cpu"):
    """The library's random generator for `device` (numpy.random.Generator or cupy's)."""
    global _gpu
    if backends.normalize_device(device) == "cpu":
        return _cpu
    if _gpu is None:
        cp = backends.array_module("cuda")
        _gpu = cp.random.default_rng(_seed)
    return _gpu


def get_state() -> dict:
    """The CPU generator's state as a JSON-able dict (for checkpoints that resume exactly)."""
    return {"seed": _seed, "bit_generator": _cpu.bit_generator.state}


def set_state(state: dict) -> None:
    global _seed
    _seed = int(state["seed"])
    _cpu.bit_generator.state = state["bit_generator"]
