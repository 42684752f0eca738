"""Helpers shared by the two GPU kernel families (``cuda_cupy.py`` and ``cuda_numba.py``).

Nothing here launches a kernel: it holds the pieces both families must agree on, so that they
give the same results - output-size arithmetic, the launch grid, which GEMM runs, and the
counter-based RNG state (seed and offset) that dropout masks are drawn from.
"""
from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

import numpy as np

__all__ = ["check_flat_buffers", "conv_out_size", "pool_out_size", "grid_for", "gemm_policy", "set_gemm", "gemm_override",
           "gemm_split", "gemm_entry", "gemm_operands", "GemmShape", "conv2d_forward", "conv2d_backward_data",
           "conv2d_backward_weight", "philox_state",
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


def check_flat_buffers(op: str, param, **bufs) -> None:
    """The fused optimizer kernels update flat contiguous buffers of param's shape and dtype in place."""
    for name, a in dict(param=param, **bufs).items():
        if a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"{op} updates flat contiguous buffers in place: {name} has shape {a.shape}")
        if a.shape != param.shape or a.dtype != param.dtype:
            raise ValueError(f"{op}: {name} must match param (shape {param.shape}, dtype {param.dtype}), "
                             f"got shape {a.shape}, dtype {a.dtype}")


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


def gemm_split(M: int, N: int, K: int, bm: int, bn: int, bk: int, batch: int = 1) -> tuple[int, int]:
    """(S, kc): how many slices of K our GEMM runs as blocks along z, and each slice's length.

    S = 1 (kc = K) when the output tiles alone fill the GPU or K is short. Otherwise K is cut into
    enough slices of a multiple of `bk` to reach about SPLITK_TARGET_BLOCKS blocks, each at least
    SPLITK_MIN_CHUNK long; a second kernel adds the S partial products in a fixed order.
    """
    tiles = -(-M // bm) * -(-N // bn) * batch
    if tiles >= SPLITK_TARGET_BLOCKS or K < 2 * SPLITK_MIN_CHUNK:
        return 1, K
    s = min(-(-SPLITK_TARGET_BLOCKS // tiles), K // SPLITK_MIN_CHUNK)
    kc = -(-(-(-K // s)) // bk) * bk
    return -(-K // kc), kc


def gemm_entry(suf: str, M: int, N: int) -> str:
    """Which of our GEMM kernels runs C (M, N): float uses 128 x 128 tiles ('gemm_f32') only when C is
    at least that large both ways, else 64 x 64 ('gemm_f32_small'), so small C wastes less work."""
    if suf == "f64":
        return "gemm_f64"
    return "gemm_f32" if M >= 128 and N >= 128 else "gemm_f32_small"


class GemmShape(NamedTuple):
    """A batched GEMM C[b] = A[b] @ B[b] as our kernels take it: sizes, and strides in elements."""
    batch: int
    M: int
    N: int
    K: int
    sAb: int   # batch strides (0: the matrix is broadcast over the batch)
    lda: int   # row strides (the column stride is always 1)
    sBb: int
    ldb: int
    sCb: int
    ldc: int


def gemm_operands(xp, a, b, out=None):
    """Check and describe ``out = a @ b`` for our GEMM kernels: returns (a, b, out, GemmShape).

    a (M, K) or (batch, M, K), b (K, N) or (batch, K, N); a 2-D operand or a batch of 1 is
    broadcast. Views are used in place when their last axis is contiguous (e.g. ``cols[:, g]`` of a
    grouped convolution); other layouts are copied. `out` (batch, M, N) or (M, N) may be such a view
    too; it is allocated when None.
    """
    if a.ndim not in (2, 3) or b.ndim not in (2, 3) or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul needs a (M, K) or (batch, M, K) and b (K, N) or (batch, K, N), "
                         f"got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul needs a and b of one dtype, got {a.dtype} and {b.dtype}")

    def usable(x):
        ok = x.strides[-1] == x.itemsize and all(st >= 0 for st in x.strides)
        return x if ok else xp.ascontiguousarray(x)

    a, b = usable(a), usable(b)
    ba = a.shape[0] if a.ndim == 3 else 1
    bb = b.shape[0] if b.ndim == 3 else 1
    if ba != bb and 1 not in (ba, bb):
        raise ValueError(f"matmul batch sizes differ: a {a.shape}, b {b.shape}")
    batch = max(ba, bb)
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    want = (batch, M, N) if 3 in (a.ndim, b.ndim) else (M, N)
    if out is None:
        out = xp.empty(want, dtype=a.dtype)
    elif tuple(out.shape) != want or out.dtype != a.dtype or out.strides[-1] != out.itemsize:
        raise ValueError(f"out must be a {a.dtype} array of shape {want} with a contiguous last axis, "
                         f"got {out.dtype} {tuple(out.shape)} with strides {out.strides}")
    it = a.itemsize

    def batch_stride(x, n):
        return x.strides[0] // it if x.ndim == 3 and n > 1 else 0

    shape = GemmShape(batch, M, N, K, batch_stride(a, ba), a.strides[-2] // it, batch_stride(b, bb),
                      b.strides[-2] // it, batch_stride(out, batch), out.strides[-2] // it)
    return a, b, out, shape


# --------------------------------------------------------------------------- convolution
# The orchestration both families share; each passes its own im2col / col2im launcher and GEMM.
# Forward and backward-data work per sample, in NCHW: cols (N, C*kH*kW, OH*OW) and the output or
# gradient (N, O, OH*OW) are batches of matrices, so the GEMM reads and writes NCHW directly and no
# transposing copy is made. Backward-weight sums over the samples, so it runs one long GEMM over
# cols (C*kH*kW, N*OH*OW) per group (split-K spreads it over the GPU).
def _matmul(xp, ours, a, b, out=None):
    """a @ b (2-D or batched, broadcasting) with the selected GEMM: cuBLAS (xp.matmul) or ours."""
    if gemm_policy() == "cublas":
        return xp.matmul(a, b) if out is None else xp.matmul(a, b, out=out)
    return ours(a, b, out)


def _per_group(xp, ours, w_g, rhs, out):
    """out[:, g] = w_g[g] @ rhs[:, g]: w_g (G, Mg, K), rhs (N, G, K, P), out (N, G, Mg, P)."""
    if w_g.shape[0] == 1:
        _matmul(xp, ours, w_g[0], rhs[:, 0], out[:, 0])
    elif gemm_policy() == "cublas":
        xp.matmul(w_g[None], rhs, out=out)
    else:
        for g in range(w_g.shape[0]):
            ours(w_g[g], rhs[:, g], out[:, g])


def conv2d_forward(xp, im2col, ours, x, w, stride, padding, dilation, groups):
    """y[n] = W_g @ cols[n, g] for every sample n and group g, written into y (N, O, OH, OW)."""
    N = x.shape[0]
    O, Cg, kh, kw = w.shape
    cols = im2col(x, (kh, kw), stride, padding, dilation, 0)
    OH, OW = cols.shape[4], cols.shape[5]
    K, P = Cg * kh * kw, OH * OW
    y = xp.empty((N, O, OH, OW), dtype=x.dtype)
    _per_group(xp, ours, xp.ascontiguousarray(w).reshape(groups, O // groups, K), cols.reshape(N, groups, K, P),
               y.reshape(N, groups, O // groups, P))
    return y


def conv2d_backward_data(xp, col2im, ours, gy, w, x_shape, stride, padding, dilation, groups):
    """dx = col2im(W_g^T @ gY[n, g]) with gY read in NCHW as a batch of (O/g, OH*OW) matrices."""
    N, O, OH, OW = gy.shape
    _, Cg, kh, kw = w.shape
    K, P = Cg * kh * kw, OH * OW
    w_t = xp.ascontiguousarray(xp.ascontiguousarray(w).reshape(groups, O // groups, K).transpose(0, 2, 1))
    dcols = xp.empty((N, groups, K, P), dtype=gy.dtype)
    _per_group(xp, ours, w_t, xp.ascontiguousarray(gy).reshape(N, groups, O // groups, P), dcols)
    return col2im(dcols.reshape(N, groups * Cg, kh, kw, OH, OW), x_shape, (kh, kw), stride, padding, dilation, 0)


def conv2d_backward_weight(xp, im2col, ours, gy, x, w_shape, stride, padding, dilation, groups, bias_grad=None):
    """dW_g = gY_g (O/g, N*OH*OW) @ cols_g^T (N*OH*OW, C/g*kH*kW): a sum over every sample and position.

    With a `bias_grad` dict (ops/conv.py passes one when the bias needs a gradient) it also stores
    db = the row sums of gY (O, N*OH*OW) under "db": the rows are contiguous in the re-laid-out gY this
    function makes anyway, a far faster reduction than summing the NCHW gradient over (0, 2, 3).
    """
    N, O, OH, OW = gy.shape
    _, Cg, kh, kw = w_shape
    K = Cg * kh * kw
    cols_g = im2col(x, (kh, kw), stride, padding, dilation, 1).reshape(groups, K, N * OH * OW)
    gy_g = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(groups, O // groups, N * OH * OW)
    dw = xp.empty((groups, O // groups, K), dtype=gy.dtype)
    for g in range(groups):
        _matmul(xp, ours, gy_g[g], cols_g[g].T, dw[g])
    if bias_grad is not None:
        bias_grad["db"] = gy_g.reshape(O, N * OH * OW).sum(axis=1)
    return dw.reshape(tuple(w_shape))


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
