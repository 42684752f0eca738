"""Batch normalisation (training and evaluation mode) with PyTorch's running-statistics rules.

Shapes: x (N, C), (N, C, L) or (N, C, H, W) (any (N, C, *spatial)); running_mean, running_var,
weight (gamma), bias (beta) are (C,). Statistics are taken over every axis but 1; M = N * prod(spatial)
values per channel.
"""
from __future__ import annotations

import numbers

from ..autograd import Function
from ..backends import kernel, xp_of
from . import nn_args
from ..backends import cpu_numpy_nn as _reference  # noqa: F401  (registers the NumPy primitives)


class BatchNormTrain(Function):
    """Training mode: normalise with the batch's own statistics.

    forward:  mean = sum(x) / M,  var = sum((x - mean)^2) / M,  invstd = 1 / sqrt(var + eps)
              xhat = (x - mean) * invstd,   y = gamma * xhat + beta
    backward: dbeta = sum(g),  dgamma = sum(g * xhat)
              dx = gamma * invstd / M * (M g - dbeta - xhat * dgamma)
    (The batch statistics depend on x, which gives the two subtracted terms; see docs/math.md.)
    Primitives: batch_norm_forward_train / batch_norm_backward (docs/kernels.md).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, stats=None):
        y, mean, invstd = kernel("batch_norm_forward_train", x)(x, gamma, beta, eps)
        ctx.save_for_backward(x, gamma, mean, invstd)
        if stats is not None:
            # handed back for the running-statistics update, with or without a recorded graph
            stats["mean"], stats["invstd"] = mean, invstd
        return y

    @staticmethod
    def backward(ctx, g):
        x, gamma, mean, invstd = ctx.saved_tensors
        dx, dgamma, dbeta = kernel("batch_norm_backward", g)(g, x, gamma, mean, invstd)
        need = ctx.needs_input_grad
        return (dx if need[0] else None,
                dgamma if len(need) > 1 and need[1] else None,
                dbeta if len(need) > 2 and need[2] else None)


class BatchNormEval(Function):
    """Evaluation mode: normalise with given statistics (running_mean, running_var), an affine map per channel.

    forward:  invstd = 1 / sqrt(running_var + eps),  y = (x - running_mean) * invstd * gamma + beta
    backward: dx = g * gamma * invstd,  dgamma = sum(g * (x - running_mean) * invstd),  dbeta = sum(g)
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, running_mean, running_var, eps):
        xp = xp_of(x)
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        invstd = (1.0 / xp.sqrt(running_var + eps)).astype(x.dtype, copy=False)
        scale = invstd if gamma is None else invstd * gamma
        y = x - running_mean.reshape(bshape)
        y *= scale.reshape(bshape)
        if beta is not None:
            y += beta.reshape(bshape)
        ctx.save_for_backward(x, gamma, running_mean, invstd)
        return y

    @staticmethod
    def backward(ctx, g):
        x, gamma, running_mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        axes = (0,) + tuple(range(2, x.ndim))
        dx = dgamma = dbeta = None
        if need[0]:
            scale = invstd if gamma is None else invstd * gamma
            dx = g * scale.reshape(bshape)
        if need[1]:
            dgamma = (g * (x - running_mean.reshape(bshape))).sum(axis=axes) * invstd
        if need[2]:
            dbeta = g.sum(axis=axes)
        return dx, dgamma, dbeta, None, None


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, num_batches_tracked=None):
    """Batch normalisation over every axis but 1 (PyTorch's F.batch_norm).

    x (N, C, *spatial); running_mean, running_var, weight, bias: (C,) Tensors or None.

    training=True: normalise with the batch mean and biased variance; when running_mean /
    running_var are given they are updated in place, as PyTorch does:
        running_mean <- (1 - f) running_mean + f mean
        running_var  <- (1 - f) running_var  + f var * M / (M - 1)     (unbiased variance)
    where f = momentum, or, when momentum is None (cumulative moving average), f = 1 / num_batches_tracked.
    `num_batches_tracked` (an int or a one-element Tensor) must then already count this batch: the
    module increments its buffer before calling, exactly as torch.nn.BatchNorm does; this function never
    changes it.
    training=False: normalise with running_mean / running_var (both required).
    Forward and backward formulas: see BatchNormTrain and BatchNormEval.
    """
    from ..tensor import Tensor

    x = nn_args.tensor_arg(x, "input")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must have shape (N, C, *spatial) with at least 2 dims, got shape {x.shape}")
    c = x.shape[1]
    if x.dtype.kind != "f":
        raise TypeError(f"batch_norm: input must be floating point, got dtype {x.dtype}")
    args = {}
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is None:
            args[name] = None
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"batch_norm: {name} must be a tinycnn Tensor or None, got {type(t).__name__}")
        if t.shape != (c,):
            raise ValueError(f"batch_norm: {name} must have shape ({c},) for an input with {c} channels, "
                             f"got shape {t.shape}")
        if t.dtype != x.dtype:
            raise TypeError(f"batch_norm: {name} must have the input's dtype {x.dtype}, got {t.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"batch_norm: {name} is on {t.device!r} but input is on {x.device!r}")
        args[name] = t
    nn_args.number_arg(eps, "batch_norm: eps", "a non-negative number", lambda v: v >= 0)
    rm, rv = args["running_mean"], args["running_var"]
    if (rm is None) != (rv is None):
        raise ValueError("batch_norm: running_mean and running_var must both be given or both be None")

    if not training:
        if rm is None:
            raise ValueError("batch_norm: running_mean and running_var must be given in evaluation mode "
                             "(training=False), got None")
        return BatchNormEval.apply(x, weight, bias, rm.data, rv.data, eps=float(eps))

    m = x.numel() // c if c else 0
    if m <= 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                         f"got input of shape {x.shape}")
    factor = _update_factor(momentum, num_batches_tracked) if rm is not None else None
    stats = {}
    y = BatchNormTrain.apply(x, weight, bias, eps=float(eps), stats=stats)
    if rm is not None:
        mean, invstd = stats["mean"], stats["invstd"]
        # var + eps = 1 / invstd^2, recovered in float64: as accurate as invstd itself while var >> eps
        var = xp_of(invstd).maximum(1.0 / invstd.astype("float64") ** 2 - eps, 0.0)
        unbiased = (var * (m / (m - 1))).astype(rm.dtype)
        # in place, so modules and optimisers that hold these buffers see the new values
        rm.data *= 1.0 - factor
        rm.data += factor * mean.astype(rm.dtype, copy=False)
        rv.data *= 1.0 - factor
        rv.data += factor * unbiased
    return y


def _update_factor(momentum, num_batches_tracked):
    if momentum is not None:
        if not isinstance(momentum, numbers.Real) or isinstance(momentum, bool):
            raise TypeError(f"batch_norm: momentum must be a number or None, got {type(momentum).__name__}")
        return float(momentum)
    if num_batches_tracked is None:
        raise ValueError("batch_norm: momentum=None (cumulative moving average) needs num_batches_tracked=, "
                         "the number of batches seen including this one; got None")
    n = int(num_batches_tracked.item() if hasattr(num_batches_tracked, "item") else num_batches_tracked)
    if n < 1:
        raise ValueError(f"batch_norm: num_batches_tracked must be >= 1 (it counts this batch), got {n}")
    return 1.0 / n
