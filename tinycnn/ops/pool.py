"""2-D pooling: max (saving argmax indices), average, adaptive average.

Shapes (NCHW): x (N, C, H, W), y (N, C, OH, OW), OH = floor((H + 2 ph - kH) / sh) + 1 (OW likewise).
A window W(p) of output pixel p = (oh, ow) covers rows oh sh - ph + [0, kH) and columns
ow sw - pw + [0, kW) of the input.

    max:      y[p] = max_{q in W(p)} x[q],  idx[p] = argmax (first in row-major order)
              dx[q] = sum_{p : idx[p] = q} g[p]
    average:  y[p] = (1 / |W|) sum_{q in W(p)} x[q]     (|W| = kH kW, or the count of
              non-padding elements when count_include_pad=False)
              dx[q] = sum_{p : q in W(p)} g[p] / |W(p)|
    adaptive: the windows of output row i are rows [floor(i H / OH), ceil((i + 1) H / OH)) (same for
              columns), so y = A_h x A_w^T with averaging matrices A_h (OH, H), A_w (OW, W), and
              dx = A_h^T g A_w.

Derivations: docs/math.md ("Pooling"); tests: tests/test_pool.py.
"""
from __future__ import annotations

from ..autograd import Function, is_grad_enabled
from ..backends import device_of, kernel, xp_of
from ..backends.cpu_numpy import conv_out_size
from .conv import conv2d, conv_args, pair

__all__ = ["MaxPool2d", "ReLUMaxPool2d", "Conv2dReLUMaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "max_pool2d",
           "relu_max_pool2d", "conv2d_relu_max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]


class MaxPool2d(Function):
    """y = window max, idx saved; dx scatters g to the saved argmax positions (see module docstring)."""

    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding):
        y, idx = kernel("max_pool2d_forward", x)(x, kernel_size, stride, padding)
        ctx.save_for_backward(idx)
        ctx.x_shape = x.shape
        ctx.window = (kernel_size, stride, padding)
        return y

    @staticmethod
    def backward(ctx, g):
        (idx,) = ctx.saved_tensors
        return _max_pool_backward(g, idx, ctx.x_shape, ctx.window)


def _max_pool_backward(g, idx, x_shape, window):
    if not g.flags.c_contiguous:
        g = g.copy()
    fn = kernel("max_pool2d_backward", g)
    if device_of(g) == "cuda":
        # with the window geometry the GPU kernels gather (one thread per input element) instead of
        # adding one (n, c) plane per thread: deterministic either way, much faster this way
        return fn(g, idx, x_shape, *window)
    return fn(g, idx, x_shape)


class ReLUMaxPool2d(Function):
    """y = relu(max_pool2d(x)) = max_pool2d(relu(x)), what `nn.Sequential` runs for a ReLU followed by a
    MaxPool2d.

    ReLU is monotone, so it commutes with a window max: max_q relu(x[q]) = relu(max_q x[q]) (also for
    NaN, which both propagate, and -0.0, which both turn into +0.0). Pooling first and applying ReLU
    to the pooled map touches the full-size map once instead of three times (ReLU's read and write,
    then the pool's read). Backward, likewise exact: dx = max-pool backward of g [y > 0]. Where
    y > 0 the argmax of x and of relu(x) is the same element (the first maximum); where y = 0 both
    orders give a zero gradient to the whole window. So outputs and gradients are bit-identical to
    the two separate ops (tests/test_pool.py).

    On the CPU each direction is one primitive (`relu_max_pool2d_forward`: the pool kernel stores
    max(window max, 0); `relu_max_pool2d_backward`: the scatter puts g or 0 as y > 0 or not), which
    saves ReLU's own passes over the pooled map; elsewhere the pool and ReLU primitives run in turn.
    """

    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding):
        window = (kernel_size, stride, padding)
        if device_of(x) == "cpu":
            y, idx = kernel("relu_max_pool2d_forward", x)(x, *window)
        else:
            from .activation import relu_array   # noqa: PLC0415 - activation imports nothing from here
            pooled, idx = kernel("max_pool2d_forward", x)(x, *window)
            y = relu_array(pooled)
        ctx.save_for_backward(idx, y)
        ctx.x_shape = x.shape
        ctx.window = window
        return y

    @staticmethod
    def backward(ctx, g):
        idx, y = ctx.saved_tensors
        if device_of(g) == "cpu":
            return kernel("relu_max_pool2d_backward", g)(g, y, idx, ctx.x_shape, *ctx.window)
        from .activation import relu_grad_array   # noqa: PLC0415
        return _max_pool_backward(relu_grad_array(g, y), idx, ctx.x_shape, ctx.window)


class Conv2dReLUMaxPool2d(Function):
    """z = relu(max_pool2d(conv2d(x, w, stride 1, padding) + b, 2)) in training, for a first layer: x needs
    no gradient, so backward returns dW and db only.

    Forward: the convolution and `relu_max_pool2d_forward` primitives, as the separate ops run them (the
    same z, bit for bit). Backward: the gradient of the convolution's output is zero except at the argmax
    of each window with z > 0, where it is g; `conv2d_relu_max_pool2d_backward_weight` sums over those
    windows only (the Numba version for 1-channel 3x3 kernels, `_pooled_weight_grad`; elsewhere the dense
    gradient), so the full-size gradient of the convolution's output is never written. CPU only.
    """

    @staticmethod
    def forward(ctx, x, w, b=None, *, padding):
        fwd = kernel("conv2d_forward", x)
        extra = {"bias": b} if b is not None and getattr(fwd, "fuses_bias", False) else {}
        y = fwd(x, w, (1, 1), padding, (1, 1), 1, **extra)
        if b is not None and not extra:
            y += b.reshape(1, -1, 1, 1)
        z, idx = kernel("relu_max_pool2d_forward", y)(y, (2, 2), (2, 2), (0, 0))
        ctx.save_for_backward(x, idx, z)
        ctx.opts = (w.shape, padding)
        return z

    @staticmethod
    def backward(ctx, g):
        x, idx, z = ctx.saved_tensors
        w_shape, padding = ctx.opts
        dw, db = kernel("conv2d_relu_max_pool2d_backward_weight", g)(g, z, idx, x, w_shape, padding)
        return None, dw, (db if len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2] else None)


class AvgPool2d(Function):
    """y = window mean; dx spreads g[p] / |W(p)| over each window (see module docstring)."""

    @staticmethod
    def forward(ctx, x, *, kernel_size, stride, padding, count_include_pad=True):
        args = (kernel_size, stride, padding)
        y = kernel("avg_pool2d_forward", x)(x, *args)
        scale = None
        if not count_include_pad and (padding[0] or padding[1]):
            # rescale the kH*kW mean to a mean over the window's real (non-padding) elements
            xp = xp_of(x)
            ones = xp.ones((1, 1) + x.shape[2:], dtype=x.dtype)
            frac = kernel("avg_pool2d_forward", ones)(ones, *args)
            scale = 1.0 / frac
            y *= scale
        ctx.opts = (x.shape, args, scale)
        return y

    @staticmethod
    def backward(ctx, g):
        x_shape, args, scale = ctx.opts
        if scale is not None:
            g = g * scale
        elif not g.flags.c_contiguous:
            g = g.copy()
        return kernel("avg_pool2d_backward", g)(g, x_shape, *args)


def _adaptive_matrix(xp, size, out, dtype):
    """(out, size) matrix averaging input positions [floor(i size/out), ceil((i+1) size/out)) into row i."""
    a = xp.zeros((out, size), dtype=dtype)
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)
        a[i, start:end] = 1.0 / (end - start)
    return a


class AdaptiveAvgPool2d(Function):
    """y = A_h x A_w^T;  dx = A_h^T g A_w (see module docstring)."""

    @staticmethod
    def forward(ctx, x, *, output_size):
        xp = xp_of(x)
        h, w = x.shape[2:]
        ah = _adaptive_matrix(xp, h, output_size[0], x.dtype)
        aw = _adaptive_matrix(xp, w, output_size[1], x.dtype)
        ctx.save_for_backward(ah, aw)
        return xp.ascontiguousarray(xp.matmul(xp.matmul(ah, x), aw.T))

    @staticmethod
    def backward(ctx, g):
        ah, aw = ctx.saved_tensors
        xp = xp_of(g)
        return xp.ascontiguousarray(xp.matmul(xp.matmul(ah.T, g), aw))


# ---------------------------------------------------------------------- functional API
def _check_input(x, fname):
    from ..tensor import Tensor
    if not isinstance(x, Tensor):
        raise TypeError(f"{fname}: input must be a tinycnn Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{fname}: input must be 4-D (N, C, H, W), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{fname}: input must be a floating-point tensor, got dtype {x.dtype}")


def _window_args(x, fname, kernel_size, stride, padding):
    k = pair(kernel_size, "kernel_size", 1)
    s = k if stride is None else pair(stride, "stride", 1)
    p = pair(padding, "padding", 0)
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise ValueError(f"{fname}: padding must be at most half of kernel_size, got padding={p}, kernel_size={k}")
    h, w = x.shape[2:]
    if k[0] > h + 2 * p[0] or k[1] > w + 2 * p[1]:
        raise ValueError(f"{fname}: kernel_size {k} is larger than the padded input "
                         f"{(h + 2 * p[0], w + 2 * p[1])} (input {x.shape}, padding {p})")
    return k, s, p


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling as ``torch.nn.functional.max_pool2d`` (stride defaults to kernel_size; padding is -inf)."""
    _check_input(x, "max_pool2d")
    k, s, p = _window_args(x, "max_pool2d", kernel_size, stride, padding)
    return MaxPool2d.apply(x, kernel_size=k, stride=s, padding=p)


def relu_max_pool2d(x, kernel_size, stride=None, padding=0):
    """relu(x) then max_pool2d, as one op (`ReLUMaxPool2d`: same results, less memory traffic)."""
    _check_input(x, "max_pool2d")
    k, s, p = _window_args(x, "max_pool2d", kernel_size, stride, padding)
    return ReLUMaxPool2d.apply(x, kernel_size=k, stride=s, padding=p)


def conv2d_relu_max_pool2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """max_pool2d(relu(conv2d(x, weight, bias, stride, padding, dilation, groups)), 2) (N, O, OH // 2, OW // 2).

    When no gradient is needed (under `no_grad`, or no input requires one: inference) and the arrays are
    on the CPU, this is the `conv2d_relu_max_pool2d_forward` primitive: the Numba family's direct and
    Winograd convolutions take the 2x2 max and the ReLU of each output block as they compute it, so the
    full-size map is never stored (a 2x2 Winograd output tile is exactly one pooling window). The values
    are bit-identical to the three ops in turn. In training on the CPU, when x needs no gradient (a first
    layer; stride 1, no dilation or groups) it is `Conv2dReLUMaxPool2d`, whose backward computes dW and db
    from the pooled gradient; otherwise (x needs a gradient, the GPU) the three ops run in turn.
    """
    from ..tensor import Tensor   # noqa: PLC0415 - tensor.py imports the ops
    s, p, d, g = conv_args(x, weight, bias, stride, padding, dilation, groups)
    oh = conv_out_size(x.shape[2], weight.shape[2], s[0], p[0], d[0])
    ow = conv_out_size(x.shape[3], weight.shape[3], s[1], p[1], d[1])
    needs_grad = is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    if needs_grad and x.device == "cpu" and not x.requires_grad and s == (1, 1) and d == (1, 1) and g == 1 \
            and min(oh, ow) >= 2:
        # a first layer in training: the weight gradient straight from the pooled gradient
        return Conv2dReLUMaxPool2d.apply(x, weight, *(() if bias is None else (bias,)), padding=p)
    if needs_grad or x.device != "cpu" or min(oh, ow) < 2:
        return relu_max_pool2d(conv2d(x, weight, bias, s, p, d, g), 2)
    fused = kernel("conv2d_relu_max_pool2d_forward", x.data)
    return Tensor._wrap(fused(x.data, weight.data, None if bias is None else bias.data, s, p, d, g))


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling as ``torch.nn.functional.avg_pool2d`` (zero padding, counted unless count_include_pad=False)."""
    _check_input(x, "avg_pool2d")
    k, s, p = _window_args(x, "avg_pool2d", kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel_size=k, stride=s, padding=p, count_include_pad=bool(count_include_pad))


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling as ``torch.nn.functional.adaptive_avg_pool2d``.

    output_size: int or (oh, ow); an entry None keeps that input size.
    """
    _check_input(x, "adaptive_avg_pool2d")
    h, w = x.shape[2:]
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = (h if output_size[0] is None else output_size[0],
                       w if output_size[1] is None else output_size[1])
    out = pair(output_size, "output_size", 1)
    return AdaptiveAvgPool2d.apply(x, output_size=out)
