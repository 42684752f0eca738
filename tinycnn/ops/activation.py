"""Activations and (log-)softmax.

All are elementwise except softmax/log_softmax, which act along `dim`.
"""
from __future__ import annotations

import sys

from ..autograd import Function
from ..backends import device_of, kernel, register, xp_of
from .nn_args import number_arg


# NumPy references of the CPU-only ReLU primitives (docs/kernels.md); cpu_numba_ew.py has the fast ones
@register("relu_forward", "numpy")
def relu_forward(x):
    """y = max(x, 0), NaN propagated."""
    return xp_of(x).maximum(x, 0)


@register("relu_backward", "numpy")
def relu_backward(gy, y, out=None):
    """dx = 0 where y <= 0, else gy (PyTorch's threshold_backward: a select, so an inf/NaN gy where
    y <= 0 gives 0, and gy passes where y is NaN)."""
    xp = xp_of(gy)
    if out is None:
        return xp.where(y <= 0, gy.dtype.type(0), gy)
    out[...] = xp.where(y <= 0, gy.dtype.type(0), gy)   # where() has no out= (numpy nor cupy)
    return out


# References to g when the autograd engine alone owns it: the engine's local, backward's argument and
# getrefcount's own argument (CPython 3.11-3.13; later versions may borrow references, so they are
# not trusted and always get a fresh array).
_SOLE_OWNER_REFS = 3 if sys.version_info < (3, 14) else None


def grad_buffer(g):
    """g itself when a backward may write its result into it, else None.

    True when writing into g cannot be seen by anyone: it is a CPU array that owns its memory (is no
    view), has no views (they would reference it) and nothing but the engine's call holds it. Call it
    directly from a Function's backward with the engine's g (an extra frame adds a reference). The
    gradient arriving from max-pool backward is a fresh multi-megabyte array: writing dx into it
    saves an allocation and its page faults (~1/4 of ReLU backward's time).
    """
    owned = (_SOLE_OWNER_REFS is not None and device_of(g) == "cpu" and g.base is None
             and g.flags.writeable and sys.getrefcount(g) - 1 <= _SOLE_OWNER_REFS)
    return g if owned else None


def relu_array(x):
    """max(x, 0) of a backend array (the `relu_forward` primitive on the CPU)."""
    return kernel("relu_forward", x)(x) if device_of(x) == "cpu" else xp_of(x).maximum(x, 0)


def relu_grad_array(g, y, out=None):
    """g where y > 0, else 0 (the `relu_backward` primitive on the CPU, into `out` when given)."""
    if device_of(g) == "cpu":
        return kernel("relu_backward", g)(g, y, out=out)
    return g * (y > 0)


class ReLU(Function):
    """y = max(x, 0).   dx = g * [x > 0] = g * [y > 0] (computed as a select: g where y > 0, else 0).

    Shapes: x, y, g, dx all the same shape. On the CPU both passes are the `relu_forward` and
    `relu_backward` primitives (one parallel Numba pass each, no boolean temporary).
    """

    @staticmethod
    def forward(ctx, x):
        y = relu_array(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        out = grad_buffer(g)        # first: as another call's argument, g would hold one more reference
        return relu_grad_array(g, y, out=out)


class LeakyReLU(Function):
    """y = x if x > 0 else s x.   dx = g if x > 0 else s g."""

    @staticmethod
    def forward(ctx, x, negative_slope=0.01):
        # a NumPy float64 slope would promote float32 data to float64 (NEP 50); keep x's dtype
        slope = x.dtype.type(negative_slope) if x.dtype.kind == "f" else negative_slope
        ctx.save_for_backward(x)
        ctx.slope = slope
        return xp_of(x).where(x > 0, x, x * slope)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return xp_of(g).where(x > 0, g, g * ctx.slope)


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed without overflow.   dx = g * y * (1 - y)."""

    @staticmethod
    def forward(ctx, x):
        xp = xp_of(x)
        # exp of a non-positive number never overflows
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y * (1 - y)


class Tanh(Function):
    """y = tanh(x).   dx = g * (1 - y^2)."""

    @staticmethod
    def forward(ctx, x):
        y = xp_of(x).tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


def log_softmax_array(x, dim):
    """Stable log-softmax of a backend array: (x - m) - log(sum(exp(x - m))), m = max(x)."""
    xp = xp_of(x)
    shifted = x - x.max(axis=dim, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))


class Softmax(Function):
    """y_i = exp(x_i - m) / sum_j exp(x_j - m) along dim.

    dx = y * (g - sum(g * y, dim)).
    """

    @staticmethod
    def forward(ctx, x, dim):
        xp = xp_of(x)
        e = xp.exp(x - x.max(axis=dim, keepdims=True))
        y = e / e.sum(axis=dim, keepdims=True)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return y * (g - (g * y).sum(axis=ctx.dim, keepdims=True))


class LogSoftmax(Function):
    """y = x - m - log(sum exp(x - m)) along dim (never log of a softmax).

    dx = g - softmax(x) * sum(g, dim),  softmax(x) = exp(y).
    """

    @staticmethod
    def forward(ctx, x, dim):
        y = log_softmax_array(x, dim)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g - xp_of(g).exp(y) * g.sum(axis=ctx.dim, keepdims=True)


# ---------------------------------------------------------------------- functional API
def _check(x, name="input"):
    from ..tensor import Tensor
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a tinycnn Tensor, got {type(x).__name__}")
    return x


def relu(x):
    return ReLU.apply(_check(x))


def leaky_relu(x, negative_slope=0.01):
    number_arg(negative_slope, "leaky_relu: negative_slope")
    return LeakyReLU.apply(_check(x), negative_slope=negative_slope)


def sigmoid(x):
    return _check(x).sigmoid()   # the method: a bool/int input is promoted to float32, as in torch


def tanh(x):
    return _check(x).tanh()


def softmax(x, dim):
    return _check(x).softmax(dim)


def log_softmax(x, dim):
    return _check(x).log_softmax(dim)
