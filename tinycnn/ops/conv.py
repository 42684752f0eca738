"""2-D convolution: forward and backward through the conv2d_* primitives (docs/kernels.md).

Shapes (NCHW): x (N, C, H, W), weight (O, C/G, kH, kW), bias (O,), y (N, O, OH, OW),

    OH = floor((H + 2 ph - dh (kH - 1) - 1) / sh) + 1      (OW likewise)

Forward, with cols = im2col(x): cols[n, (c, i, j), (oh, ow)] = x_pad[n, c, oh sh + i dh, ow sw + j dw],
and the columns and weights split into G groups of C/G input and O/G output channels,

    y[n, g] = W[g] @ cols[n, g] + b                  (W[g]: (O/G, C/G kH kW), one GEMM)

Backward, given g = dL/dy:

    db       = sum_{n, oh, ow} g[n, :, oh, ow]
    dW[g]    = sum_n g[n, g] @ cols[n, g]^T          (GEMM over samples and pixels)
    dx       = col2im(W[g]^T @ g[n, g])              (GEMM, then each tap added back)

Derivations: docs/math.md ("Convolution"); tests: tests/test_conv.py.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Function
from ..backends import kernel
from ..backends.cpu_numpy import get_im2col_cap_bytes, set_im2col_cap_bytes

__all__ = ["Conv2d", "conv2d", "pair", "set_im2col_cap_bytes", "get_im2col_cap_bytes"]


def _is_int(v) -> bool:
    # Python and NumPy integers (np.int64 from a shape or an array); bool is not a size
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints -> (h, w) of Python ints, each >= minimum.

    TypeError for something that is not an int or a sequence of ints (a float, a str), ValueError for a
    sequence of the wrong length or a value below `minimum`.
    """
    if _is_int(value):
        out = (int(value), int(value))
    elif hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        value = tuple(value)
        if not all(_is_int(v) for v in value):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of 2 ints, got {value!r} ({len(value)} values)")
        out = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {type(value).__name__} {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return out


class Conv2d(Function):
    """y = conv2d(x, W) + b over im2col columns; see the module docstring for the formulas.

    forward(ctx, x, w, b, stride, padding, dilation, groups) -> y (N, O, OH, OW)
    backward(ctx, g) -> (dx (N, C, H, W), dW (O, C/G, kH, kW), db (O,)), each only when needed.
    """

    @staticmethod
    def forward(ctx, x, w, b=None, *, stride, padding, dilation, groups):
        fwd = kernel("conv2d_forward", x)
        extra = {}
        if b is not None and getattr(fwd, "fuses_bias", False):
            # an implementation may add the bias while it writes y (saves one pass over y)
            extra["bias"] = b
        ctx.kept = None
        if getattr(fwd, "keeps_cols", False) and ctx.inputs is not None and ctx.needs_input_grad[1]:
            # ... and may keep its im2col columns for the weight gradient (ctx.inputs is None
            # when no graph is recorded, so inference never holds them)
            ctx.kept = extra["keep"] = {}
        y = fwd(x, w, stride, padding, dilation, groups, **extra)
        if b is not None and "bias" not in extra:
            y += b.reshape(1, -1, 1, 1)
        ctx.save_for_backward(x, w)
        ctx.opts = (stride, padding, dilation, groups)
        return y

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.opts
        need_x, need_w = ctx.needs_input_grad[:2]
        need_b = len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]
        if not g.flags.c_contiguous:
            g = g.copy()
        dx = dw = db = None
        bwd_x = kernel("conv2d_backward_data", g) if need_x else None
        bwd_w = kernel("conv2d_backward_weight", g) if need_w else None
        extra = {}
        if getattr(bwd_x, "shares_gy", False) and getattr(bwd_w, "shares_gy", False):
            # the two may share a re-laid-out copy of g (made by the first, reused by the second)
            extra["shared"] = {}
        if need_x:
            dx = bwd_x(g, w, x.shape, stride, padding, dilation, groups, **extra)
        if need_w:
            if ctx.kept and getattr(bwd_w, "uses_kept_cols", False):
                extra["kept"] = ctx.kept
            if need_b and getattr(bwd_w, "sums_bias", False):
                # an implementation may sum db while it reads g for dW (it sets extra["bias_grad"]["db"])
                extra["bias_grad"] = {}
            dw = bwd_w(g, x, w.shape, stride, padding, dilation, groups, **extra)
            db = extra.get("bias_grad", {}).get("db")
        if need_b and db is None:
            # NumPy's pairwise SIMD sum is already memory-bound here
            db = g.sum(axis=(0, 2, 3))
        return dx, dw, db


def _check_tensor(t, name):
    from ..tensor import Tensor
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a tinycnn Tensor, got {type(t).__name__}")
    if t.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation as PyTorch's ``torch.nn.functional.conv2d``.

    x (N, C, H, W); weight (O, C/groups, kH, kW); bias (O,) or None; stride, padding, dilation:
    int or (h, w) pair; groups divides C and O (groups == C == O is a depthwise convolution).
    Returns (N, O, OH, OW). Formulas of the forward and backward pass: see this module's docstring.
    """
    stride, padding, dilation, groups = conv_args(x, weight, bias, stride, padding, dilation, groups)
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_args(x, weight, bias, stride, padding, dilation, groups):
    """conv2d's arguments checked (clear errors naming them) and normalised: (stride, padding, dilation,
    groups) with each of the first three an (h, w) pair."""
    _check_tensor(x, "input")
    _check_tensor(weight, "weight")
    if x.ndim != 4:
        raise ValueError(f"conv2d: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if weight.ndim != 4:
        raise ValueError(f"conv2d: weight must be 4-D (C_out, C_in/groups, kH, kW), got shape {weight.shape}")
    if bias is not None:
        _check_tensor(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},) (C_out), got {bias.shape}")
        if bias.dtype != x.dtype:
            raise TypeError(f"conv2d: bias dtype must equal input dtype {x.dtype}, got {bias.dtype}")
    if weight.dtype != x.dtype:
        raise TypeError(f"conv2d: weight dtype must equal input dtype {x.dtype}, got {weight.dtype}")
    stride = pair(stride, "stride", 1)
    padding = pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"conv2d: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"conv2d: groups must be >= 1, got {groups}")
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    if c % groups:
        raise ValueError(f"conv2d: groups={groups} must divide the input channels, got C_in={c}")
    if o % groups:
        raise ValueError(f"conv2d: groups={groups} must divide the output channels, got C_out={o}")
    if cg * groups != c:
        raise ValueError(
            f"conv2d: input has {c} channels but weight expects weight.shape[1] * groups = "
            f"{cg} * {groups} = {cg * groups} (weight shape {weight.shape})")
    for axis, size, k, p, d in (("height", h, kh, padding[0], dilation[0]),
                                ("width", w, kw, padding[1], dilation[1])):
        if (k - 1) * d + 1 > size + 2 * p:
            raise ValueError(
                f"conv2d: kernel {axis} (dilated: {(k - 1) * d + 1}) is larger than the padded input "
                f"{axis} {size + 2 * p} (input {x.shape}, padding {padding})")
    if n == 0 or min(o, kh, kw) == 0:
        raise ValueError(f"conv2d: empty input or weight: input {x.shape}, weight {weight.shape}")
    return stride, padding, dilation, groups
