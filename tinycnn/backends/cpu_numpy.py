"""NumPy reference implementations of the convolution and pooling primitives (docs/kernels.md).

These are the readable definitions every other kernel family is tested against. They are
vectorised over the batch, the channels and the output pixels; the only Python loops run over
the kH x kW kernel taps (and over batch chunks, to bound the im2col buffer).

Shapes: x (N, C, H, W), w (O, C/groups, kH, kW), y (N, O, OH, OW) with

    OH = (H + 2 ph - dh (kH - 1) - 1) // sh + 1        (the same for OW)

The im2col buffer of one batch chunk never exceeds `get_im2col_cap_bytes()` bytes (default
256 MiB, environment variable ``TINYCNN_IM2COL_CAP_MB``, or `set_im2col_cap_bytes`), except
that one sample is always processed even when it alone is larger.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import NamedTuple

import numpy as np

from .. import _threads
from . import cpu_buffers, register

__all__ = [
    "get_im2col_cap_bytes", "set_im2col_cap_bytes", "conv_out_size", "batch_chunks",
    "im2col", "col2im", "conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight",
    "conv2d_relu_max_pool2d_forward", "max_pool2d_forward", "max_pool2d_backward", "relu_max_pool2d_forward",
    "relu_max_pool2d_backward", "conv2d_relu_max_pool2d_backward_weight", "avg_pool2d_forward",
    "avg_pool2d_backward",
    "matmul", "GemmCall", "record_gemms", "log_gemm",
]


def _cap_from_env() -> int:
    raw = os.environ.get("TINYCNN_IM2COL_CAP_MB", "").strip()
    if not raw:
        return 256 * 2**20
    try:
        mb = float(raw)
    except ValueError:
        raise ValueError(f"TINYCNN_IM2COL_CAP_MB must be a positive number of MiB, got {raw!r}") from None
    if mb <= 0:
        raise ValueError(f"TINYCNN_IM2COL_CAP_MB must be a positive number of MiB, got {raw!r}")
    return int(mb * 2**20)


_im2col_cap_bytes = _cap_from_env()


def get_im2col_cap_bytes() -> int:
    """The largest im2col buffer (bytes) one batch chunk may use."""
    return _im2col_cap_bytes


def set_im2col_cap_bytes(n: int) -> int:
    """Set the im2col buffer cap in bytes; returns the previous value (so tests can restore it)."""
    global _im2col_cap_bytes
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"im2col cap must be an int number of bytes, got {type(n).__name__}")
    if n <= 0:
        raise ValueError(f"im2col cap must be a positive number of bytes, got {n}")
    prev = _im2col_cap_bytes
    _im2col_cap_bytes = int(n)
    return prev


# --------------------------------------------------------------------------- matrix product
class GemmCall(NamedTuple):
    """One GEMM c (m, n) = a (m, k) @ b (k, n); a_t / b_t: the operand was a transposed (Fortran-order)
    view, which BLAS reads without a copy; has_out: the result went into a given buffer.
    count > 1: a stack of `count` such products in one call (c[i] = a[i] @ b[i]); spread: the call was
    one block among several that worker threads ran side by side, each with single-threaded BLAS
    (Winograd convolution, cpu_numba_winograd.py), so a replay runs consecutive spread calls that way."""
    m: int
    k: int
    n: int
    a_t: bool
    b_t: bool
    dtype: str
    has_out: bool
    count: int = 1
    spread: bool = False

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


class _GemmLog(threading.local):
    calls = None


_gemm_log = _GemmLog()


def _transposed(a) -> bool:
    """True for a column-major operand (a transposed view, possibly of a block of columns; for a stack
    of matrices, of each matrix)."""
    return not a.flags.c_contiguous and a.strides[-2] < a.strides[-1]


# GEMMs of fewer multiply-adds leave thread placement alone (`_threads.keep_apart`): OpenBLAS runs those
# below 2^18 on the calling thread anyway, and up to 2^20 (~20 us) a second thread gains little, while a
# caller that hops between CPUs (batch-1 inference with pauses) made every other call move the workers
_THREADED_GEMM = 1 << 20


@register("matmul", "numpy")
def matmul(a, b, out=None):
    """c (M, N) = a (M, K) @ b (K, N) through NumPy's BLAS (sgemm/dgemm); transposed views are read in place.

    Every GEMM of the CPU convolution and linear layers goes through here, so `record_gemms` lists
    them (the GEMM floor of `benchmarks/train_step.py` times exactly those calls).
    """
    calls = _gemm_log.calls
    if calls is not None:
        calls.append(GemmCall(a.shape[-2], a.shape[-1], b.shape[-1], _transposed(a), _transposed(b),
                              a.dtype.str, out is not None, a.shape[0] if a.ndim == 3 else 1))
    if a.shape[-2] * a.shape[-1] * b.shape[-1] >= _THREADED_GEMM:
        _threads.keep_apart()
    if out is None and a.ndim == 2 and b.ndim == 2:
        out = cpu_buffers.empty((a.shape[0], b.shape[1]), np.result_type(a.dtype, b.dtype))
    return np.matmul(a, b, out=out)


def log_gemm(call: GemmCall) -> None:
    """Record a GEMM that did not go through `matmul` (while `record_gemms` is on in this thread)."""
    if _gemm_log.calls is not None:
        _gemm_log.calls.append(call)


@contextlib.contextmanager
def record_gemms():
    """Within the block, append a `GemmCall` to the yielded list for every `matmul` this thread runs."""
    prev = _gemm_log.calls
    _gemm_log.calls = calls = []
    try:
        yield calls
    finally:
        _gemm_log.calls = prev


def conv_out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    """Output length of a convolution/pooling window sweep along one axis."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def batch_chunks(n: int, bytes_per_sample: int):
    """Yield batch slices whose im2col buffers fit in the cap (at least one sample each)."""
    step = max(1, get_im2col_cap_bytes() // max(1, bytes_per_sample))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _pad(x, padding, value=0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _tap(i, j, out_hw, stride, dilation):
    """The (rows, cols) slices of the padded input that kernel tap (i, j) reads for every output pixel."""
    (oh, ow), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


# --------------------------------------------------------------------------- im2col / col2im
@register("im2col", "numpy")
def im2col(x, kernel, stride, padding, dilation):
    """cols[n, c, i, j, oh, ow] = x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]  (zero padding).

    One buffer of shape (N, C, kH, kW, OH, OW), filled by one strided slice copy per tap.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    oh = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(w, kw, stride[1], padding[1], dilation[1])
    xp = _pad(x, padding)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rs, cs = _tap(i, j, (oh, ow), stride, dilation)
            cols[:, :, i, j] = xp[:, :, rs, cs]
    return cols


@register("col2im", "numpy")
def col2im(cols, x_shape, kernel, stride, padding, dilation):
    """The adjoint of im2col: dx_pad[n, c, oh*sh + i*dh, ow*sw + j*dw] += cols[n, c, i, j, oh, ow].

    Each tap's slice is added back into the padded gradient (overlapping windows sum), then
    the padding is cut off.
    """
    n, c, h, w = x_shape
    kh, kw = kernel
    ph, pw = padding
    oh, ow = cols.shape[-2:]
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rs, cs = _tap(i, j, (oh, ow), stride, dilation)
            dxp[:, :, rs, cs] += cols[:, :, i, j]
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w]) if (ph or pw) else dxp


# --------------------------------------------------------------------------- convolution
def _grouped_cols(cols, groups):
    """(n, C, kH, kW, OH, OW) -> (n, G, C/G * kH * kW, OH * OW); a view of the contiguous buffer."""
    n, c, kh, kw, oh, ow = cols.shape
    return cols.reshape(n, groups, (c // groups) * kh * kw, oh * ow)


@register("conv2d_forward", "numpy")
def conv2d_forward(x, w, stride, padding, dilation, groups):
    """y[n, g, o, p] = sum_k W[g, o, k] cols[n, g, k, p]: one GEMM per sample and group over im2col columns."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(wd, kw, stride[1], padding[1], dilation[1])
    wg = w.reshape(groups, o // groups, cg * kh * kw)
    y = np.empty((n, o, oh, ow), dtype=x.dtype)
    for sl in batch_chunks(n, c * kh * kw * oh * ow * x.itemsize):
        cols = _grouped_cols(im2col(x[sl], (kh, kw), stride, padding, dilation), groups)
        y[sl] = np.matmul(wg, cols).reshape(-1, o, oh, ow)
    return y


@register("conv2d_backward_data", "numpy")
def conv2d_backward_data(gy, w, x_shape, stride, padding, dilation, groups):
    """dcols[n, g] = W[g]^T gy[n, g]  (GEMM), then dx = col2im(dcols)."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    oh, ow = gy.shape[2:]
    wgt = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)
    dx = np.empty(x_shape, dtype=gy.dtype)
    for sl in batch_chunks(n, c * kh * kw * oh * ow * gy.itemsize):
        gyg = gy[sl].reshape(-1, groups, o // groups, oh * ow)
        dcols = np.matmul(wgt, gyg).reshape(-1, c, kh, kw, oh, ow)
        dx[sl] = col2im(dcols, (dcols.shape[0], c, h, wd), (kh, kw), stride, padding, dilation)
    return dx


@register("conv2d_backward_weight", "numpy")
def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation, groups):
    """dW[g, o, k] = sum_{n, p} gy[n, g, o, p] cols[n, g, k, p]: one GEMM per group and batch chunk."""
    n = x.shape[0]
    o, cg, kh, kw = w_shape
    og = o // groups
    oh, ow = gy.shape[2:]
    dw = np.zeros((groups, og, cg * kh * kw), dtype=gy.dtype)
    for sl in batch_chunks(n, x.shape[1] * kh * kw * oh * ow * x.itemsize):
        cols = _grouped_cols(im2col(x[sl], (kh, kw), stride, padding, dilation), groups)
        gyg = gy[sl].reshape(-1, groups, og, oh * ow)
        for g in range(groups):
            # contract over (sample, pixel): tensordot makes it a single GEMM
            dw[g] += np.tensordot(gyg[:, g], cols[:, g], axes=([0, 2], [0, 2]))
    return dw.reshape(w_shape)


# --------------------------------------------------------------------------- pooling
@register("conv2d_relu_max_pool2d_forward", "numpy")
def conv2d_relu_max_pool2d_forward(x, w, bias, stride, padding, dilation, groups):
    """relu(max_pool2d(conv2d(x, w) + bias, 2)): the reference primitives in turn (inference)."""
    y = conv2d_forward(x, w, stride, padding, dilation, groups)
    if bias is not None:
        y += bias.reshape(1, -1, 1, 1)
    pooled, _ = max_pool2d_forward(y, (2, 2), (2, 2), (0, 0))
    return np.maximum(pooled, 0)


@register("max_pool2d_forward", "numpy")
def max_pool2d_forward(x, kernel, stride, padding):
    """y = max over each window of the (-inf padded) input; idx = h * W + w of the chosen element.

    Taps are visited in row-major window order and a tap replaces the running maximum when it is
    strictly larger or NaN (PyTorch's rule), so ties go to the first element. Padding is never
    chosen: a window of -inf values points at its first real element, as in PyTorch.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    oh = conv_out_size(h, kh, stride[0], padding[0], 1)
    ow = conv_out_size(w, kw, stride[1], padding[1], 1)
    xp = _pad(x, padding, value=-np.inf)
    rows0 = np.arange(oh) * stride[0] - padding[0]          # input row of tap 0 of each window
    cols0 = np.arange(ow) * stride[1] - padding[1]
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    idx = np.full((n, c, oh, ow), -1, dtype=np.int32)
    for i in range(kh):
        for j in range(kw):
            r, q = rows0 + i, cols0 + j
            valid = ((r >= 0) & (r < h))[:, None] & ((q >= 0) & (q < w))[None, :]
            rs, cs = _tap(i, j, (oh, ow), stride, (1, 1))
            v = xp[:, :, rs, cs]
            better = valid & ((v > y) | np.isnan(v) | (idx < 0))
            np.copyto(y, v, where=better)
            np.copyto(idx, (r[:, None] * w + q[None, :]).astype(np.int32), where=better)
    return y, idx


@register("max_pool2d_backward", "numpy")
def max_pool2d_backward(gy, idx, x_shape):
    """dx[n, c].flat[idx[n, c, p]] += gy[n, c, p]; overlapping windows add up."""
    n, c, h, w = x_shape
    planes = n * c
    flat_idx = (idx.reshape(planes, -1).astype(np.int64)
                + (np.arange(planes, dtype=np.int64) * (h * w))[:, None]).ravel()
    # bincount sums repeated indices in a fixed order (deterministic), in float64
    dx = np.bincount(flat_idx, weights=gy.ravel(), minlength=planes * h * w)
    return dx.astype(gy.dtype, copy=False).reshape(x_shape)


@register("relu_max_pool2d_forward", "numpy")
def relu_max_pool2d_forward(x, kernel, stride, padding):
    """(relu(max_pool2d(x)), argmax): ReLU applied to the pooled map (v <= 0 -> +0.0, NaN kept)."""
    y, idx = max_pool2d_forward(x, kernel, stride, padding)
    return np.where(y <= 0, y.dtype.type(0), y), idx


@register("relu_max_pool2d_backward", "numpy")
def relu_max_pool2d_backward(gy, y, idx, x_shape, kernel, stride, padding):
    """dx of y = relu(max_pool2d(x)): the pool's backward of g where y > 0, else 0 (idx holds the window)."""
    return max_pool2d_backward(np.where(y <= 0, gy.dtype.type(0), gy), idx, x_shape)


@register("conv2d_relu_max_pool2d_backward_weight", "numpy")
def conv2d_relu_max_pool2d_backward_weight(gp, y, idx, x, w_shape, padding):
    """(dW, db) of z = relu(max_pool2d(conv2d(x, w, stride 1, padding) + b, 2)) from z's gradient gp: the
    gradient of the convolution's output (relu + pool backward), then the weight and bias gradients."""
    n, _, h, wd = x.shape
    oh = conv_out_size(h, w_shape[2], 1, padding[0], 1)
    ow = conv_out_size(wd, w_shape[3], 1, padding[1], 1)
    g = relu_max_pool2d_backward(gp, y, idx, (n, w_shape[0], oh, ow), (2, 2), (2, 2), (0, 0))
    return conv2d_backward_weight(g, x, w_shape, (1, 1), padding, (1, 1), 1), g.sum(axis=(0, 2, 3))


@register("avg_pool2d_forward", "numpy")
def avg_pool2d_forward(x, kernel, stride, padding):
    """y = (1 / (kH kW)) * sum of the window over the zero-padded input (count_include_pad=True)."""
    n, c, h, w = x.shape
    kh, kw = kernel
    oh = conv_out_size(h, kh, stride[0], padding[0], 1)
    ow = conv_out_size(w, kw, stride[1], padding[1], 1)
    xp = _pad(x, padding)
    y = np.zeros((n, c, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rs, cs = _tap(i, j, (oh, ow), stride, (1, 1))
            y += xp[:, :, rs, cs]
    y *= 1.0 / (kh * kw)
    return y


@register("avg_pool2d_backward", "numpy")
def avg_pool2d_backward(gy, x_shape, kernel, stride, padding):
    """dx_pad[window(p)] += gy[p] / (kH kW), then the padding is cut off."""
    n, c, h, w = x_shape
    kh, kw = kernel
    ph, pw = padding
    oh, ow = gy.shape[2:]
    g = gy * (1.0 / (kh * kw))
    dxp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=gy.dtype)
    for i in range(kh):
        for j in range(kw):
            rs, cs = _tap(i, j, (oh, ow), stride, (1, 1))
            dxp[:, :, rs, cs] += g
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w])


# primitives of the layer and loss ops (batch norm, cross-entropy, dropout mask) live in their own module
from . import cpu_numpy_nn  # noqa: E402,F401
