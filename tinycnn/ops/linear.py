"""Fully connected layer: y = x W^T + b."""
from __future__ import annotations

from ..autograd import Function
from ..backends import kernel
from . import nn_args


def _mm(a, b):
    # the device's matmul primitive (CPU: NumPy's BLAS, which reads transposed views without copying)
    return kernel("matmul", a)(a, b)


class Linear(Function):
    """y = x W^T + b.

    Shapes: x (..., in), W (out, in), b (out,) or None, y (..., out); the leading axes of x are
    flattened to M rows, X (M, in), G = dL/dy as (M, out).
    forward:  Y = X W^T + b
    backward: dX = G W,   dW = G^T X,   db = sum over rows of G
    """

    @staticmethod
    def forward(ctx, x, w, b):
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        y = _mm(x2, w.T)
        if b is not None:
            y += b
        ctx.save_for_backward(x2, w)
        ctx.lead = lead
        return y.reshape(lead + (w.shape[0],))

    @staticmethod
    def backward(ctx, g):
        x2, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        g2 = g.reshape(-1, w.shape[0])
        dx = _mm(g2, w).reshape(ctx.lead + (w.shape[1],)) if need[0] else None
        dw = _mm(g2.T, x2) if need[1] else None
        db = g2.sum(axis=0) if len(need) > 2 and need[2] else None
        return dx, dw, db


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias (PyTorch's F.linear). x (..., in), weight (out, in), bias (out,) or None.

    Formulas of forward and backward: see `Linear`.
    """
    x = nn_args.float_tensor_arg(x, "input")
    weight = nn_args.float_tensor_arg(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if x.ndim < 1:
        raise ValueError(f"linear: input must have at least 1 dimension (..., in_features), got a 0-d tensor")
    out_f, in_f = weight.shape
    if x.shape[-1] != in_f:
        raise ValueError(f"linear: input's last dimension must equal weight's in_features={in_f}, "
                         f"got input shape {x.shape} and weight shape {weight.shape}")
    if weight.dtype != x.dtype:
        raise TypeError(f"linear: weight must have the input's dtype {x.dtype}, got {weight.dtype}")
    if weight.device != x.device:
        raise RuntimeError(f"linear: weight is on {weight.device!r} but input is on {x.device!r}")
    bias = nn_args.optional_tensor_arg(bias, "bias", x, shape=(out_f,))
    return Linear.apply(x, weight, bias)
