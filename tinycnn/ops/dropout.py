"""Inverted dropout: zero each element with probability p and scale the kept ones by 1 / (1 - p)."""
from __future__ import annotations

from ..autograd import Function
from ..backends import kernel
from ..backends import cpu_numpy_nn as _reference  # noqa: F401  (registers the NumPy primitives)
from . import nn_args


class Dropout(Function):
    """y = x * mask, mask = [u >= p] / (1 - p) with u ~ U[0, 1) drawn once per call (primitive dropout_mask).

    Shapes: x, mask, y all alike.   backward: dx = g * mask  (the same mask).
    E[y] = x, so no rescaling is needed at evaluation time.
    """

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None


def dropout(x, p=0.5, training=True, inplace=False):
    """Inverted dropout (PyTorch's F.dropout). With training=False or p=0 it returns `x` itself.

    x any shape; p in [0, 1] (p=1 gives zeros). The mask comes from `tinycnn.random.generator(device)`,
    so `tinycnn.manual_seed` makes it repeat. `inplace` is accepted for PyTorch compatibility and
    ignored: the result is always a new tensor.
    """
    x = nn_args.float_tensor_arg(x, "input")
    p = nn_args.probability_arg(p, "dropout probability p")
    if not training or p == 0.0:
        return x
    mask = kernel("dropout_mask", x.data)(x.shape, p, x.dtype, x.data)
    return Dropout.apply(x, mask)
