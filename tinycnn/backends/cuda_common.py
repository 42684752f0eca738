"""Helpers shared by the two GPU kernel families (``cuda_cupy.py`` and ``cuda_numba.py``).

Nothing here launches a kernel: it holds the pieces both families must agree on, so that they
give the same results - output-size arithmetic, the launch grid, which GEMM runs, and the
counter-based RNG state (seed and offset) that dropout masks are drawn from.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

__all__ = ["conv_out_size", "pool_out_size", "grid_for", "gemm_policy", "set_gemm", "gemm_override",
           "gemm_split", "philox_state",
           "philox_seed", "float_suffix", "THREADS"]

THREADS = 256          # threads per block for the elementwise / gather kernels
_MAX_BLOCKS = 65535    # grid-stride loops cover the rest; keeps grids legal on every GPU

_GEMM_CHOICES = ("auto", "ours", "cublas")
_gemm = os.environ.get("TINYCNN_GEMM", "auto").strip().lower() or "auto"
if _gemm not in _GEMM_CHOICES:
    raise ValueError(f"TINYCNN_GEMM must be one of {_GEMM_CHOICES}, got {_gemm!r}")


def float_suffix(dtype, name: str = "array") -> str:
    """'f32' / 'f64' for the kernel entry points; TypeError for any other dtype."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "f32"
    if dtype == np.float64:
        return "f64"
    raise TypeError(f"{name} must be float32 or float64 for the GPU kernels, got dtype {dtype}")


def conv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def pool_out_size(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def grid_for(n: int, threads: int = THREADS) -> int:
    """Blocks for a grid-stride loop over n items (at least 1, at most 65535)."""
    return max(1, min(_MAX_BLOCKS, (int(n) + threads - 1) // threads))


def set_gemm(policy: str) -> None:
    """Which GEMM the GPU families use: 'ours' (our tiled SGEMM), 'cublas' (cupy.matmul) or 'auto'.

    'auto' is cuBLAS: the choice must not depend on timings taken at run time, or two runs of the
    same seed could pick different GEMMs and differ in the last bits. Also settable with the
    environment variable ``TINYCNN_GEMM``.
    """
    global _gemm
    if policy not in _GEMM_CHOICES:
        raise ValueError(f"policy must be one of {_GEMM_CHOICES}, got {policy!r}")
    _gemm = policy


def gemm_policy() -> str:
    """'ours' or 'cublas': the GEMM that runs now."""
    return "ours" if _gemm == "ours" else "cublas"


@contextlib.contextmanager
def gemm_override(policy: str):
    """Run a block with another GEMM policy (``set_gemm``'s choices), restoring the previous one after."""
    global _gemm
    prev = _gemm
    set_gemm(policy)
    try:
        yield
    finally:
        _gemm = prev


# Split-K aims at this many blocks. A constant rather than the GPU's SM count, so that a shape is
# split the same way, and sums in the same order, on every GPU.
SPLITK_TARGET_BLOCKS = 256
SPLITK_MIN_CHUNK = 256   # never give a block fewer k than this: the partial tiles' traffic would dominate


def gemm_split(M: int, N: int, K: int, bm: int, bn: int, bk: int) -> tuple[int, int]:
    """(S, kc): how many slices of K our GEMM runs as blocks along z, and each slice's length.

    S = 1 (kc = K) when the output tiles alone fill the GPU or K is short. Otherwise K is cut into
    enough slices of a multiple of `bk` to reach about SPLITK_TARGET_BLOCKS blocks, each at least
    SPLITK_MIN_CHUNK long; a second kernel adds the S partial products in a fixed order.
    """
    tiles = -(-M // bm) * -(-N // bn)
    if tiles >= SPLITK_TARGET_BLOCKS or K < 2 * SPLITK_MIN_CHUNK:
        return 1, K
    s = min(-(-SPLITK_TARGET_BLOCKS // tiles), K // SPLITK_MIN_CHUNK)
    kc = -(-(-(-K // s)) // bk) * bk
    return -(-K // kc), kc


# --------------------------------------------------------------------------- Philox state
_MASK64 = (1 << 64) - 1
_states: dict[str, tuple[object, object]] = {}


def philox_seed(seed: int) -> int:
    """Spread a user seed over 64 bits (splitmix64), so seeds 0, 1, 2 give unrelated Philox keys."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def philox_state(xp, key: str):
    """The device array [seed, offset] (uint64) that the dropout kernels of family `key` read.

    It is created from ``tinycnn.manual_seed``'s seed the first time it is needed after each
    ``manual_seed`` call (detected by the library generator being replaced), so the same seed gives
    the same masks. The kernels advance the offset on the device: no host round trip per mask, and a
    captured CUDA graph draws fresh masks on every replay.
    """
    from .. import random as _random  # local: random imports backends

    device = "cuda" if xp is not np else "cpu"
    gen = _random.generator(device)
    entry = _states.get(key + device)
    if entry is None or entry[0] is not gen:
        state = xp.asarray(np.array([philox_seed(_random.initial_seed()), 0], dtype=np.uint64))
        entry = (gen, state)
        _states[key + device] = entry
    return entry[1]
