"""NumPy reference implementations of the normalisation, loss and dropout primitives.

The math is written with `xp_of(array)` so the same bodies also serve as the readable
reference for the GPU families (their tests compare against these). Names and signatures
follow docs/kernels.md exactly.
"""
from __future__ import annotations

import numpy as np

from . import device_of, register, xp_of


# --------------------------------------------------------------------------- batch norm
def _as_ncl(a):
    """View an (N, C, *spatial) array as (N, C, L) (a copy only when it is not contiguous)."""
    return a.reshape(a.shape[0], a.shape[1], -1)


@register("batch_norm_forward_train", "numpy")
def batch_norm_forward_train(x, gamma, beta, eps):
    """Training-mode batch norm over every axis but 1.

    x (N, C, *spatial), gamma/beta (C,) or None -> y (x's shape), mean (C,), invstd (C,)
    with M = N * prod(spatial):
        mean = sum(x) / M,  var = sum((x - mean)^2) / M  (biased),  invstd = 1 / sqrt(var + eps)
        y = (x - mean) * invstd * gamma + beta
    Two passes over x (mean, then centred sums and squares) for accuracy; the centred copy becomes y.
    """
    xp = xp_of(x)
    x3 = _as_ncl(x)
    m = x3.shape[0] * x3.shape[2]
    mean = x3.sum(axis=2).sum(axis=0) / m
    xc = x3 - mean[:, None]
    # corrected two-pass: the rounding error of the first mean (an ulp of |mean|, which matters when
    # |mean| >> std) is measured on the centred data and removed from the mean, variance and output
    delta = xc.sum(axis=2).sum(axis=0) / m
    sq = xc * xc
    var = sq.sum(axis=2).sum(axis=0) / m - delta * delta
    del sq
    invstd = (1.0 / xp.sqrt(xp.maximum(var, 0) + eps)).astype(x.dtype, copy=False)
    scale = invstd if gamma is None else invstd * gamma
    shift = -delta * scale if beta is None else beta - delta * scale
    xc *= scale[:, None]
    xc += shift[:, None]
    return xc.reshape(x.shape), (mean + delta).astype(x.dtype, copy=False), invstd


@register("batch_norm_backward", "numpy")
def batch_norm_backward(gy, x, gamma, mean, invstd):
    """Gradients of training-mode batch norm (statistics of the batch itself).

    With xhat = (x - mean) * invstd and sums over every axis but 1 (M elements per channel):
        dbeta  = sum(gy)
        dgamma = sum(gy * xhat)
        dx     = gamma * invstd / M * (M * gy - dbeta - xhat * dgamma)
    gamma None means gamma = 1. Returns (dx, dgamma, dbeta).
    """
    g3 = _as_ncl(gy)
    x3 = _as_ncl(x)
    m = x3.shape[0] * x3.shape[2]
    xc = x3 - mean[:, None]
    dbeta = g3.sum(axis=2).sum(axis=0)
    dgamma = (g3 * xc).sum(axis=2).sum(axis=0) * invstd
    a = invstd if gamma is None else gamma * invstd
    # dx = a * gy - a * dbeta / M - a * invstd * dgamma / M * (x - mean): one fused expression per channel
    xc *= (-(a * invstd * dgamma) / m)[:, None]
    xc += a[:, None] * g3
    xc -= (a * dbeta / m)[:, None]
    return xc.reshape(x.shape), dgamma, dbeta


# --------------------------------------------------------------------------- cross-entropy
def _log_softmax_rows(z):
    xp = xp_of(z)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


@register("cross_entropy_forward", "numpy")
def cross_entropy_forward(logits, target, weight, label_smoothing):
    """Per-sample softmax cross-entropy with class weights and label smoothing (PyTorch's reduction='none').

    logits (N, C), target int64 (N,), weight (C,) or None, eps = label_smoothing:
        logp = log_softmax(logits)                      (max-shifted log-sum-exp)
        loss_i = -(1 - eps) w[t_i] logp[i, t_i] - eps / C * sum_c w_c logp[i, c]
    Returns (loss (N,), logp (N, C)).
    """
    xp = xp_of(logits)
    n, c = logits.shape
    logp = _log_softmax_rows(logits)
    picked = logp[xp.arange(n), target]
    if weight is None:
        loss = -picked
        if label_smoothing:
            loss = (1.0 - label_smoothing) * loss - (label_smoothing / c) * logp.sum(axis=1)
    else:
        loss = -(1.0 - label_smoothing) * weight[target] * picked
        if label_smoothing:
            loss = loss - (label_smoothing / c) * (logp @ weight)
    return loss.astype(logits.dtype, copy=False), logp


@register("cross_entropy_backward", "numpy")
def cross_entropy_backward(logp, target, weight, label_smoothing, gscale):
    """d loss_i / d logits for `cross_entropy_forward`, times gscale_i (upstream grad of each loss_i).

    With q_ic = (1 - eps) w[t_i] [c = t_i] + eps / C * w_c (the weighted, smoothed target)
    and Q_i = sum_c q_ic, since loss_i = -sum_c q_ic logp_ic and d logp_ic / dz_ij = [c = j] - p_ij:
        dlogits_ij = gscale_i * (p_ij Q_i - q_ij)
    Without weights Q_i = 1, so this is (softmax - smoothed one-hot) * gscale.
    """
    xp = xp_of(logp)
    n, c = logp.shape
    rows = xp.arange(n)
    d = xp.exp(logp)
    eps = label_smoothing
    if weight is None:
        if eps:
            d -= eps / c
        d[rows, target] -= 1.0 - eps
    else:
        wt = weight[target]
        big_q = (1.0 - eps) * wt + (eps / c) * weight.sum()
        d *= big_q[:, None]
        if eps:
            d -= (eps / c) * weight[None, :]
        d[rows, target] -= (1.0 - eps) * wt
    d *= gscale[:, None]
    return d.astype(logp.dtype, copy=False)


# --------------------------------------------------------------------------- dropout
@register("dropout_mask", "numpy")
def dropout_mask(shape, p, dtype, like):
    """Inverted-dropout mask: 1 / (1 - p) where an element is kept (probability 1 - p), else 0.

    Uniform draws u in [0, 1) from the library's seeded generator; kept where u >= p.
    p = 1 gives all zeros (nothing kept, no division by zero).
    """
    from ..random import generator  # local: random imports the backends package

    xp = xp_of(like)
    dtype = np.dtype(dtype)
    if p >= 1.0:
        return xp.zeros(shape, dtype=dtype)
    u = generator(device_of(like)).random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    return xp.multiply(u >= p, dtype.type(1.0 / (1.0 - p)), dtype=dtype)
