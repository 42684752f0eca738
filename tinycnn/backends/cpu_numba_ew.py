"""Numba CPU kernels for fused elementwise primitives (docs/kernels.md, "CPU-only elementwise primitives").

Kept apart from `cpu_numba.py` because Numba's on-disk cache is keyed by source file: editing these
kernels must not throw away the compiled convolution kernels.

NumPy would run `maximum(x, 0)` single-threaded and `g * (y > 0)` as two passes through a boolean
temporary; each kernel here is one parallel pass that writes a fresh output. Every element is
independent, so results do not depend on the thread count.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import cpu_buffers, register
from .cpu_numba import _launch

__all__ = ["relu_forward", "relu_backward", "adam_step"]

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


@njit(parallel=True, cache=True, nogil=True)
def _adam(p, g, m, v, c1, b2, c2, bc2_sqrt, eps, step_size, wd, l2, decay):
    for i in prange(p.size):
        pi = p[i]
        if decay:
            pi = pi * wd                    # decoupled: p (1 - lr wd), the factor precomputed
        gi = g[i]
        if l2:
            gi = gi + wd * pi               # Adam's L2 term
        mi = m[i] + (gi - m[i]) * c1        # m.lerp_(g, 1 - beta1)
        vi = v[i] * b2 + (gi * gi) * c2
        m[i] = mi
        v[i] = vi
        p[i] = pi - (mi / (np.sqrt(vi) / bc2_sqrt + eps)) * step_size


@register("adam_step", "numba")
def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One parallel pass of the NumPy reference's update (tinycnn/optim/adam.py), same operations in the
    same order, each rounded to the parameter's dtype, so the results are bit-identical to it."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if not (_fast(*arrays) and all(a.ndim == 1 and a.size == param.size for a in arrays)):
        from ..optim.adam import adam_step as reference  # noqa: PLC0415
        return reference(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled)
    t = int(step) if not hasattr(step, "shape") else int(step.reshape(-1)[0])
    f = param.dtype.type
    decay = weight_decay != 0 and decoupled
    l2 = weight_decay != 0 and not decoupled
    wd = f(1 - lr * weight_decay) if decay else f(weight_decay)
    _launch(_adam, param.size, param, grad, exp_avg, exp_avg_sq, f(1 - beta1), f(beta2), f(1 - beta2),
            f(math.sqrt(1 - beta2 ** t)), f(eps), f(lr / (1 - beta1 ** t)), wd, l2, decay)
