"""Numba CPU fast paths for batch norm (docs/kernels.md names and signatures).

Why: NumPy needs about ten full passes over the activations for a batch-norm forward and backward
(separate reductions, centring, squaring, scaling, each with its own temporary) and runs them on one
core. Here each channel is one parallel task that reads its values twice per direction:
forward = one pass for the statistics (sum and sum of squares of x - k, with k a sample of the
channel so the single-pass variance does not cancel; float64 accumulators) + one pass to write y;
backward = one pass for sum(g) and sum(g (x - mean)) + one pass to write dx.
A channel is summed by one thread in a fixed order, so results repeat bit for bit.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cpu_buffers, register
from . import cpu_numpy_nn as _ref

# reassociation lets LLVM vectorise the per-channel sums (fixed order for a given build, so still
# deterministic); no flag that changes inf/nan handling
_FASTMATH = {"reassoc", "contract"}


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _bn_forward(x, gamma, beta, eps, y, mean_out, invstd_out):
    n, c, l = x.shape
    m = n * l
    for ch in prange(c):
        k = np.float64(x[0, ch, 0])
        s1 = 0.0
        s2 = 0.0
        for i in range(n):
            for j in range(l):
                d = np.float64(x[i, ch, j]) - k
                s1 += d
                s2 += d * d
        dm = s1 / m
        var = max(s2 / m - dm * dm, 0.0)
        mu = k + dm
        inv = 1.0 / np.sqrt(var + eps)
        sc = inv * np.float64(gamma[ch])
        sh = np.float64(beta[ch])
        for i in range(n):
            for j in range(l):
                y[i, ch, j] = (np.float64(x[i, ch, j]) - mu) * sc + sh
        mean_out[ch] = mu
        invstd_out[ch] = inv


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def _bn_backward(gy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    n, c, l = x.shape
    m = n * l
    for ch in prange(c):
        mu = np.float64(mean[ch])
        inv = np.float64(invstd[ch])
        sg = 0.0
        sgx = 0.0
        for i in range(n):
            for j in range(l):
                g = np.float64(gy[i, ch, j])
                sg += g
                sgx += g * (np.float64(x[i, ch, j]) - mu)
        dg = sgx * inv
        a = np.float64(gamma[ch]) * inv
        c1 = sg / m
        c2 = dg * inv / m
        for i in range(n):
            for j in range(l):
                dx[i, ch, j] = a * (np.float64(gy[i, ch, j]) - c1 - (np.float64(x[i, ch, j]) - mu) * c2)
        dgamma[ch] = dg
        dbeta[ch] = sg


def _supported(*arrays):
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(a is None or a.dtype == dt for a in arrays)


def _ncl(a):
    return np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], -1)


@register("batch_norm_forward_train", "numba")
def batch_norm_forward_train(x, gamma, beta, eps):
    """Same contract and formulas as the NumPy reference (cpu_numpy_nn.batch_norm_forward_train)."""
    if not _supported(x, gamma, beta) or x.size == 0:
        return _ref.batch_norm_forward_train(x, gamma, beta, eps)
    x3 = _ncl(x)
    c = x3.shape[1]
    g = np.ones(c, x.dtype) if gamma is None else np.ascontiguousarray(gamma)
    b = np.zeros(c, x.dtype) if beta is None else np.ascontiguousarray(beta)
    y = cpu_buffers.empty(x3.shape, x3.dtype)
    mean = np.empty(c, x.dtype)
    invstd = np.empty(c, x.dtype)
    _bn_forward(x3, g, b, float(eps), y, mean, invstd)
    return y.reshape(x.shape), mean, invstd


@register("batch_norm_backward", "numba")
def batch_norm_backward(gy, x, gamma, mean, invstd):
    """Same contract and formulas as the NumPy reference (cpu_numpy_nn.batch_norm_backward)."""
    if not _supported(x, gy, gamma, mean, invstd) or x.size == 0:
        return _ref.batch_norm_backward(gy, x, gamma, mean, invstd)
    x3, g3 = _ncl(x), _ncl(gy)
    c = x3.shape[1]
    gam = np.ones(c, x.dtype) if gamma is None else np.ascontiguousarray(gamma)
    dx = cpu_buffers.empty(x3.shape, x3.dtype)
    dgamma = np.empty(c, x.dtype)
    dbeta = np.empty(c, x.dtype)
    _bn_backward(g3, x3, gam, np.ascontiguousarray(mean), np.ascontiguousarray(invstd), dx, dgamma, dbeta)
    return dx.reshape(x.shape), dgamma, dbeta
