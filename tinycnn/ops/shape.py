"""Shape ops: reshape, permute, indexing, concatenation. Backward moves the gradient back."""
from __future__ import annotations

from ..autograd import Function
from ..backends import xp_of


class Reshape(Function):
    """y = a.reshape(shape).   da = g.reshape(a.shape)."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape)


class Permute(Function):
    """y = a.transpose(dims).   da = g.transpose(inverse(dims))."""

    @staticmethod
    def forward(ctx, a, dims):
        ctx.dims = dims
        return a.transpose(dims)

    @staticmethod
    def backward(ctx, g):
        inv = [0] * len(ctx.dims)
        for i, d in enumerate(ctx.dims):
            inv[d] = i
        return g.transpose(inv)


class GetItem(Function):
    """y = a[index] (basic or integer-array indexing).   da = zeros, with g added at `index`."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        # add.at: repeated integer indices must each contribute their gradient
        xp.add.at(grad, ctx.index, g)
        return grad


class Cat(Function):
    """y = concatenate(xs, dim).   dx_i = the slice of g that x_i filled."""

    @staticmethod
    def forward(ctx, *arrays, dim=0):
        ctx.dim = dim
        ctx.sizes = [a.shape[dim] for a in arrays]
        return xp_of(arrays[0]).concatenate(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        bounds = []
        total = 0
        for n in ctx.sizes[:-1]:
            total += n
            bounds.append(total)
        return tuple(xp.split(g, bounds, axis=ctx.dim))


class Stack(Function):
    """y = stack(xs, dim).   dx_i = g taken at position i of `dim`."""

    @staticmethod
    def forward(ctx, *arrays, dim=0):
        ctx.dim = dim
        return xp_of(arrays[0]).stack(arrays, axis=dim)

    @staticmethod
    def backward(ctx, g):
        xp = xp_of(g)
        return tuple(xp.take(g, i, axis=ctx.dim) for i in range(g.shape[ctx.dim]))
