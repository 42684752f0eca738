"""Arithmetic with NumPy broadcasting, and matrix products.

Shapes: inputs broadcast to a common shape S; each gradient is summed back to its
input's shape by the autograd engine (`autograd.unbroadcast`).
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function, unbroadcast
from ..backends import xp_of


class Add(Function):
    """y = a + b.   da = g,  db = g."""

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Function):
    """y = a - b.   da = g,  db = -g."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Function):
    """y = a * b.   da = g * b,  db = g * a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return (g * b if ctx.needs_input_grad[0] else None,
                g * a if ctx.needs_input_grad[1] else None)


class Div(Function):
    """y = a / b.   da = g / b,  db = -g * a / b^2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        return (g / b if ctx.needs_input_grad[0] else None,
                -g * a / (b * b) if ctx.needs_input_grad[1] else None)


class Pow(Function):
    """y = a ** b.   da = g * b * a^(b-1) (0 where b == 0),  db = g * y * log(a)  (0 where a <= 0).

    da is 0 where b == 0, as in PyTorch: y = a^0 = 1 is constant, even at a = 0 where b a^(b-1) is 0 * inf.
    """

    @staticmethod
    def forward(ctx, a, b):
        y = a ** b
        ctx.save_for_backward(a, b, y)
        return y

    @staticmethod
    def backward(ctx, g):
        a, b, y = ctx.saved_tensors
        xp = xp_of(g)
        da = None
        if ctx.needs_input_grad[0]:
            with np.errstate(divide="ignore", invalid="ignore"):   # a^(b-1) at a = 0 (b < 1): inf, as torch
                da = g * b * a ** (b - 1)
            if hasattr(b, "shape"):
                da = xp.where(b == 0, da.dtype.type(0), da)
            elif b == 0:
                da = xp.zeros_like(da)
        db = None
        if ctx.needs_input_grad[1]:
            safe = xp.where(a > 0, a, 1)
            db = g * y * xp.log(safe)
        return da, db


class Neg(Function):
    """y = -a.   da = -g."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """y = exp(a).   da = g * y."""

    @staticmethod
    def forward(ctx, a):
        y = xp_of(a).exp(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * y


class Log(Function):
    """y = log(a).   da = g / a."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return xp_of(a).log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g / a


class Sqrt(Function):
    """y = sqrt(a).   da = g / (2 y)."""

    @staticmethod
    def forward(ctx, a):
        y = xp_of(a).sqrt(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g / (2 * y)


class Abs(Function):
    """y = |a|.   da = g * sign(a)  (0 at a = 0)."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return xp_of(a).abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        return g * xp_of(a).sign(a)


class Clamp(Function):
    """y = min(max(a, lo), hi).   da = g where lo <= a <= hi, else 0."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        xp = xp_of(a)
        ctx.save_for_backward(a)
        ctx.lo, ctx.hi = lo, hi
        return xp.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved_tensors
        mask = True
        if ctx.lo is not None:
            mask = mask & (a >= ctx.lo)
        if ctx.hi is not None:
            mask = mask & (a <= ctx.hi)
        return g * mask


class MatMul(Function):
    """y = a @ b with NumPy matmul semantics (1-D operands and batch broadcasting).

    For 2-D operands (M,K) @ (K,N):  da = g @ b^T,  db = a^T @ g.
    """

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        xp = xp_of(g)
        # promote 1-D operands as matmul does ((K,) -> (1, K) on the left, (K, 1) on the right),
        # give g the promoted output shape, then sum broadcast batch dims back with unbroadcast
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        batch = tuple(xp.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]))
        g2 = g.reshape(batch + (a2.shape[-2], b2.shape[-1]))
        da = db = None
        if ctx.needs_input_grad[0]:
            da = unbroadcast(g2 @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            db = unbroadcast(xp.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(b.shape)
        return da, db


class Where(Function):
    """y = where(cond, a, b).   da = g * cond,  db = g * (1 - cond)."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        return xp_of(a).where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        (cond,) = ctx.saved_tensors
        xp = xp_of(g)
        return None, xp.where(cond, g, 0), xp.where(cond, 0, g)
