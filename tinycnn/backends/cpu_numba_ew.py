"""Numba CPU kernels for fused elementwise primitives (docs/kernels.md, "CPU-only elementwise primitives").

Kept apart from `cpu_numba.py` because Numba's on-disk cache is keyed by source file: editing these
kernels must not throw away the compiled convolution kernels.

NumPy would run `maximum(x, 0)` single-threaded and `g * (y > 0)` as two passes through a boolean
temporary; each kernel here is one parallel pass that writes a fresh output. Every element is
independent, so results do not depend on the thread count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cpu_buffers, register
from .cpu_numba import _launch

__all__ = ["relu_forward", "relu_backward"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(parallel=True, cache=True, nogil=True)
def _relu_fwd(x, y):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        # `v <= 0` (not `v > 0`) keeps NaN as NaN and maps -0.0 to +0.0, as np.maximum(x, 0) does
        y[i] = zero if v <= zero else v


@njit(parallel=True, cache=True, nogil=True)
def _relu_bwd(g, y, dx):
    zero = g.dtype.type(0)
    for i in prange(g.size):
        # torch's threshold_backward: a select, not g * mask, so an inf/NaN g where y <= 0 gives 0,
        # and g passes where y is NaN
        dx[i] = zero if y[i] <= zero else g[i]


def _fast(*arrays):
    a0 = arrays[0]
    return (a0.dtype in _FLOATS and all(a.dtype == a0.dtype and a.flags.c_contiguous for a in arrays))


@register("relu_forward", "numba")
def relu_forward(x):
    if not _fast(x):
        return np.maximum(x, 0)
    y = cpu_buffers.empty(x.shape, x.dtype)
    _launch(_relu_fwd, x.size, x.reshape(-1), y.reshape(-1))
    return y


@register("relu_backward", "numba")
def relu_backward(gy, y, out=None):
    if gy.shape != y.shape or not _fast(gy, y) or (out is not None and not _fast(gy, out)):
        return np.where(y <= 0, gy.dtype.type(0), gy, **({} if out is None else {"out": out}))
    dx = cpu_buffers.empty(gy.shape, gy.dtype) if out is None else out
    _launch(_relu_bwd, gy.size, gy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
