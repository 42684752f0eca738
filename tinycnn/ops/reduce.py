"""Reductions: sum, mean, max.

`dim` is None (all axes), an int or a tuple of ints; `keepdim` keeps reduced axes as size 1.
Backward re-inserts the reduced axes and broadcasts the gradient back over them.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from ..backends import xp_of


def normalize_dims(dim, ndim: int, name: str = "dim"):
    """Return a sorted tuple of non-negative axes, or None for 'all axes'.

    As in PyTorch, an empty tuple also means all axes, and an axis named twice is a ValueError.
    """
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return None
    if isinstance(dim, (int, np.integer)):
        dims = (dim,)
    elif isinstance(dim, (tuple, list)):
        dims = tuple(dim)
    else:
        raise TypeError(f"{name} must be an int or a tuple of ints, got {dim!r}")
    out = []
    for d in dims:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {dim!r}")
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise ValueError(f"{name}={d} is out of range for a tensor with {ndim} dimensions "
                             f"(expected {-max(ndim, 1)}..{max(ndim, 1) - 1})")
        d = int(d) % max(ndim, 1)
        if d in out:
            raise ValueError(f"{name}={dim!r} names dimension {d} more than once")
        out.append(d)
    return tuple(sorted(out))


def _expand(g, shape, dims, keepdim):
    """Broadcast a reduced gradient `g` back to `shape`."""
    xp = xp_of(g)
    if dims is not None and not keepdim and len(shape) > 0:
        g = xp.expand_dims(g, dims)
    return xp.broadcast_to(g, shape)


class Sum(Function):
    """y = sum over dims of a.   da = g broadcast back over the reduced dims."""

    @staticmethod
    def forward(ctx, a, dims=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dims, keepdim
        return xp_of(a).asarray(a.sum(axis=dims, keepdims=keepdim))

    @staticmethod
    def backward(ctx, g):
        return _expand(g, ctx.shape, ctx.dims, ctx.keepdim)


class Mean(Function):
    """y = mean over dims of a (n elements each).   da = g / n broadcast back."""

    @staticmethod
    def forward(ctx, a, dims=None, keepdim=False):
        ctx.shape, ctx.dims, ctx.keepdim = a.shape, dims, keepdim
        out = xp_of(a).asarray(a.mean(axis=dims, keepdims=keepdim))
        ctx.n = a.size // max(out.size, 1)
        return out

    @staticmethod
    def backward(ctx, g):
        return _expand(g / ctx.n, ctx.shape, ctx.dims, ctx.keepdim)


class Max(Function):
    """y = max over dim of a.   da = g at the (first) arg-max position, 0 elsewhere.

    With dim=None the maximum over all elements, and the gradient split evenly between the
    elements equal to it (PyTorch's rule for the full reduction: each of k tied maxima gets g / k).
    """

    @staticmethod
    def forward(ctx, a, dim=None, keepdim=False):
        xp = xp_of(a)
        ctx.shape, ctx.dim, ctx.keepdim = a.shape, dim, keepdim
        if dim is None:
            y = xp.asarray(a.reshape(-1)[xp.argmax(a)])   # argmax: NaN wins, as in torch.max
            ctx.save_for_backward(a, y)
            return y
        idx = xp.expand_dims(xp.argmax(a, axis=dim), dim)
        ctx.idx = idx
        out = xp.take_along_axis(a, idx, axis=dim)
        return out if keepdim else xp.squeeze(out, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        if ctx.dim is None:
            a, y = ctx.saved_tensors
            tied = (a == y) | (xp.isnan(a) & xp.isnan(y)) if a.dtype.kind in "fc" else (a == y)
            return tied * (g / tied.sum()).astype(g.dtype, copy=False)
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        if not ctx.keepdim:
            g = xp.expand_dims(g, ctx.dim)
        xp.put_along_axis(grad, ctx.idx, g, axis=ctx.dim)
        return grad
