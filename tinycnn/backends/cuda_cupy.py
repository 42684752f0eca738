"""The CUDA C kernel family: ``kernels/*.cu`` compiled by ``cupy.RawModule`` (NVRTC).

Each ``.cu`` file is one module, compiled the first time one of its kernels is launched and kept
for the life of the process (CuPy also caches the binary on disk, so a new process skips NVRTC).
Every kernel has an ``extern "C"`` entry point per dtype (``<name>_f32`` / ``<name>_f64``).
Launches go to CuPy's current stream and never synchronise with the host, so a training step can be
captured as a CUDA graph (`tinycnn.cuda.graph_capture`). Work buffers come from CuPy's memory pool,
which hands the same blocks back step after step.

GEMMs (inside convolution and the ``matmul`` primitive) run on cuBLAS through ``cupy.matmul``, or on
our own tiled SGEMM (``kernels/gemm.cu``) with ``TINYCNN_GEMM=ours`` / `cuda_common.set_gemm`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import cuda_common, cupy_module, register
from .cuda_common import (THREADS, check_flat_buffers, conv_out_size, float_suffix, gemm_entry, gemm_operands,
                          gemm_policy, gemm_split, grid_for, philox_state, pool_out_size)

__all__ = ["KERNEL_DIR", "KERNEL_ENTRY_POINTS", "NVRTC_OPTIONS", "GEMM_TILES", "get_module", "get_kernel",
           "kernel_source"]

NVRTC_OPTIONS = ("-std=c++17",)


def _find_kernel_dir() -> Path:
    # installed wheel: tinycnn/kernels/ ; source checkout: the top-level kernels/ beside tinycnn/
    here = Path(__file__).resolve().parent.parent
    for d in (here / "kernels", here.parent / "kernels"):
        if (d / "im2col.cu").is_file():
            return d
    raise RuntimeError(f"the CUDA kernel sources (*.cu) were not found in {here / 'kernels'} or "
                       f"{here.parent / 'kernels'}; reinstall tinycnn")


KERNEL_DIR = _find_kernel_dir()


def _both(*names):
    return tuple(f"{n}_{s}" for n in names for s in ("f32", "f64"))


# file -> the extern "C" entry points it must define (tests check each one appears in the PTX)
KERNEL_ENTRY_POINTS = {
    "im2col.cu": _both("im2col", "col2im"),
    "pool.cu": _both("max_pool2d_forward", "max_pool2d_backward_gather", "max_pool2d_backward_plane",
                     "avg_pool2d_forward", "avg_pool2d_backward"),
    "elementwise.cu": _both("bias_relu", "dropout_mask", "adam_step", "sgd_step") + ("philox_advance",
                                                                                  "philox4x32_10_raw"),
    "loss.cu": _both("cross_entropy_forward", "cross_entropy_backward"),
    "batchnorm.cu": _both("batch_norm_forward_train", "batch_norm_backward"),
    "gemm.cu": ("gemm_f32", "gemm_f32_small", "gemm_f64", "gemm_reduce_f32", "gemm_reduce_f64"),
}
# entry point -> (BM, BN, BK) of its tile in gemm.cu
GEMM_TILES = {"gemm_f32": (128, 128, 8), "gemm_f32_small": (64, 64, 16), "gemm_f64": (64, 64, 8)}
_CE_THREADS = 128                                   # CE_THREADS in loss.cu
_BN_THREADS = 256                                   # BN_THREADS in batchnorm.cu

_modules: dict[str, object] = {}
_functions: dict[str, object] = {}
_entry_file = {name: f for f, names in KERNEL_ENTRY_POINTS.items() for name in names}


def kernel_source(filename: str) -> str:
    return (KERNEL_DIR / filename).read_text()


def get_module(filename: str):
    """The compiled RawModule of one ``.cu`` file (compiled once per process)."""
    mod = _modules.get(filename)
    if mod is None:
        cp = cupy_module()
        mod = cp.RawModule(code=kernel_source(filename), options=NVRTC_OPTIONS)
        _modules[filename] = mod
    return mod


def get_kernel(name: str):
    fn = _functions.get(name)
    if fn is None:
        fn = get_module(_entry_file[name]).get_function(name)
        _functions[name] = fn
    return fn


def _i32(*vals):
    return tuple(np.int32(v) for v in vals)


def _i64(*vals):
    return tuple(np.int64(v) for v in vals)


def _launch(name, n, args, threads=THREADS):
    get_kernel(name)((grid_for(n, threads),), (threads,), args)


def _contig(cp, a):
    return cp.ascontiguousarray(a)


# --------------------------------------------------------------------------- GEMM
def _our_gemm(cp, a, b, out=None):
    """out = a @ b on our tiled GEMM (kernels/gemm.cu): 2-D or batched operands, strided views in place."""
    a, b, out, g = gemm_operands(cp, a, b, out)
    suf = float_suffix(a.dtype, "a")
    if out.size and g.K == 0:
        out[...] = 0
    elif out.size:
        name = gemm_entry(suf, g.M, g.N)
        bm, bn, bk = GEMM_TILES[name]
        splits, kc = gemm_split(g.M, g.N, g.K, bm, bn, bk, g.batch)
        dst = out if splits == 1 else cp.empty((splits, g.batch, g.M, g.N), dtype=a.dtype)
        grid = ((g.N + bn - 1) // bn, (g.M + bm - 1) // bm, g.batch * splits)
        get_kernel(name)(grid, (256,), (a, b, dst) + _i32(g.M, g.N, g.K, kc, splits) +
                         _i64(g.sAb, g.lda, g.sBb, g.ldb, g.sCb, g.ldc))
        if splits > 1:
            get_kernel(f"gemm_reduce_{suf}")((grid_for(g.batch * g.M * g.N),), (THREADS,),
                                             (dst, out) + _i32(splits, g.batch, g.M, g.N) + _i64(g.sCb, g.ldc))
    return out


@register("matmul", "cupy")
def matmul(a, b):
    """c = a @ b for 2-D float arrays: cuBLAS (cupy.matmul) or our tiled SGEMM (TINYCNN_GEMM=ours)."""
    cp = cupy_module()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs 2-D a (M, K) and b (K, N), got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul needs a and b of one dtype, got {a.dtype} and {b.dtype}")
    if gemm_policy() == "ours":
        return _our_gemm(cp, a, b)
    return cp.matmul(a, b)


# --------------------------------------------------------------------------- im2col / col2im
def _im2col(x, kernel, stride, padding, dilation, layout):
    cp = cupy_module()
    x = _contig(cp, x)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    OH, OW = conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw)
    shape = (N, C, kh, kw, OH, OW) if layout == 0 else (C, kh, kw, N, OH, OW)
    cols = cp.empty(shape, dtype=x.dtype)
    if cols.size:
        _launch(f"im2col_{float_suffix(x.dtype, 'x')}", N * C * OH * OW,   # one thread per position
                (x, cols) + _i32(N, C, H, W, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, layout))
    return cols


def _col2im(cols, x_shape, kernel, stride, padding, dilation, layout):
    cp = cupy_module()
    cols = _contig(cp, cols)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    OH, OW = conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw)
    dx = cp.empty(tuple(x_shape), dtype=cols.dtype)
    if dx.size:
        _launch(f"col2im_{float_suffix(cols.dtype, 'cols')}", dx.size,
                (cols, dx) + _i32(N, C, H, W, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, layout))
    return dx


@register("im2col", "cupy")
def im2col(x, kernel, stride, padding, dilation):
    """x (N, C, H, W) -> cols (N, C, kH, kW, OH, OW); cols[n, c, i, j, oh, ow] = x[n, c, oh*sh - ph + i*dh, ...]."""
    return _im2col(x, kernel, stride, padding, dilation, 0)


@register("col2im", "cupy")
def col2im(cols, x_shape, kernel, stride, padding, dilation):
    """Adjoint of im2col: dx[n, c, h, w] = sum of the cols entries that read x[n, c, h, w] (gather, no atomics)."""
    return _col2im(cols, x_shape, kernel, stride, padding, dilation, 0)


# --------------------------------------------------------------------------- convolution
def _ours(a, b, out=None):
    return _our_gemm(cupy_module(), a, b, out)


@register("conv2d_forward", "cupy")
def conv2d_forward(x, w, stride, padding, dilation, groups):
    """y[n, o] = sum_{c in group(o), i, j} w[o, c, i, j] x[n, c, oh*s - p + i*d, ...]: im2col + GEMM per group."""
    return cuda_common.conv2d_forward(cupy_module(), _im2col, _ours, x, w, stride, padding, dilation, groups)


@register("conv2d_backward_data", "cupy")
def conv2d_backward_data(gy, w, x_shape, stride, padding, dilation, groups):
    """dx = col2im(W_g^T @ gY_g): the gradient of conv2d_forward with respect to x."""
    return cuda_common.conv2d_backward_data(cupy_module(), _col2im, _ours, gy, w, x_shape, stride, padding,
                                            dilation, groups)


@register("conv2d_backward_weight", "cupy")
def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation, groups, bias_grad=None):
    """dW_g = gY_g @ cols_g^T: the gradient of conv2d_forward with respect to w."""
    return cuda_common.conv2d_backward_weight(cupy_module(), _im2col, _ours, gy, x, w_shape, stride, padding,
                                              dilation, groups, bias_grad)


conv2d_backward_weight.sums_bias = True   # fills bias_grad["db"] (see cuda_common.conv2d_backward_weight)


# --------------------------------------------------------------------------- pooling
@register("max_pool2d_forward", "cupy")
def max_pool2d_forward(x, kernel, stride, padding):
    """y = max over each window (padding = -inf); idx (int32) = h * W + w of the first maximum."""
    cp = cupy_module()
    x = _contig(cp, x)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = pool_out_size(H, kh, sh, ph), pool_out_size(W, kw, sw, pw)
    y = cp.empty((N, C, OH, OW), dtype=x.dtype)
    idx = cp.empty((N, C, OH, OW), dtype=np.int32)
    if y.size:
        _launch(f"max_pool2d_forward_{float_suffix(x.dtype, 'x')}", y.size,
                (x, y, idx) + _i32(N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw))
    return y, idx


@register("max_pool2d_backward", "cupy")
def max_pool2d_backward(gy, idx, x_shape, kernel=None, stride=None, padding=None):
    """dx[n, c, idx] += gy. With the window geometry a gather (one thread per input element), else one
    thread per (n, c) plane adding in output order; both deterministic."""
    cp = cupy_module()
    gy, idx = _contig(cp, gy), _contig(cp, idx.astype(np.int32, copy=False))
    N, C, H, W = x_shape
    OH, OW = gy.shape[2], gy.shape[3]
    dx = cp.empty(tuple(x_shape), dtype=gy.dtype)
    if not dx.size:
        return dx
    suf = float_suffix(gy.dtype, "gy")
    if kernel is not None:
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride or kernel, padding or (0, 0)
        _launch(f"max_pool2d_backward_gather_{suf}", dx.size,
                (gy, idx, dx) + _i32(N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw))
    else:
        _launch(f"max_pool2d_backward_plane_{suf}", N * C, (gy, idx, dx) + _i32(N * C, H * W, OH * OW))
    return dx


@register("avg_pool2d_forward", "cupy")
def avg_pool2d_forward(x, kernel, stride, padding):
    """y = sum over each window / (kH * kW) (count_include_pad=True)."""
    cp = cupy_module()
    x = _contig(cp, x)
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = pool_out_size(H, kh, sh, ph), pool_out_size(W, kw, sw, pw)
    y = cp.empty((N, C, OH, OW), dtype=x.dtype)
    if y.size:
        _launch(f"avg_pool2d_forward_{float_suffix(x.dtype, 'x')}", y.size,
                (x, y) + _i32(N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw))
    return y


@register("avg_pool2d_backward", "cupy")
def avg_pool2d_backward(gy, x_shape, kernel, stride, padding):
    """dx[h, w] = sum of gy over the windows covering (h, w) / (kH * kW) (gather)."""
    cp = cupy_module()
    gy = _contig(cp, gy)
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = gy.shape[2], gy.shape[3]
    dx = cp.empty(tuple(x_shape), dtype=gy.dtype)
    if dx.size:
        _launch(f"avg_pool2d_backward_{float_suffix(gy.dtype, 'gy')}", dx.size,
                (gy, dx) + _i32(N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw))
    return dx


# --------------------------------------------------------------------------- losses, normalisation, dropout
def _weight_arg(cp, weight, like):
    if weight is None:
        return like, np.int32(0)
    return _contig(cp, weight.astype(like.dtype, copy=False)), np.int32(1)


@register("cross_entropy_forward", "cupy")
def cross_entropy_forward(logits, target, weight, label_smoothing):
    """loss (N,) = (1-e) w_t (-logp_t) + e/C sum_c w_c (-logp_c); logp (N, C) = stable log-softmax."""
    cp = cupy_module()
    logits = _contig(cp, logits)
    target = _contig(cp, target.astype(np.int64, copy=False))
    N, C = logits.shape
    loss = cp.empty((N,), dtype=logits.dtype)
    logp = cp.empty((N, C), dtype=logits.dtype)
    w, has_w = _weight_arg(cp, weight, logits)
    if N:
        get_kernel(f"cross_entropy_forward_{float_suffix(logits.dtype, 'logits')}")(
            (min(N, 65535),), (_CE_THREADS,),
            (logits, target, w, has_w, loss, logp, np.int32(N), np.int32(C), np.float64(label_smoothing)))
    return loss, logp


@register("cross_entropy_backward", "cupy")
def cross_entropy_backward(logp, target, weight, label_smoothing, gscale):
    """dlogits[i, j] = gs_i (p_ij S_i - (1-e) w_t [j = t] - e/C w_j), S_i = (1-e) w_t + e/C sum_c w_c."""
    cp = cupy_module()
    logp = _contig(cp, logp)
    target = _contig(cp, target.astype(np.int64, copy=False))
    gscale = _contig(cp, cp.broadcast_to(gscale.astype(logp.dtype, copy=False), (logp.shape[0],)))
    N, C = logp.shape
    dz = cp.empty((N, C), dtype=logp.dtype)
    w, has_w = _weight_arg(cp, weight, logp)
    if N:
        get_kernel(f"cross_entropy_backward_{float_suffix(logp.dtype, 'logp')}")(
            (min(N, 65535),), (_CE_THREADS,),
            (logp, target, w, has_w, gscale, dz, np.int32(N), np.int32(C), np.float64(label_smoothing)))
    return dz


def _inner(shape):
    return int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1


@register("batch_norm_forward_train", "cupy")
def batch_norm_forward_train(x, gamma, beta, eps):
    """y = (x - mean) invstd gamma + beta with batch statistics over every axis but 1 (biased variance)."""
    cp = cupy_module()
    x = _contig(cp, x)
    N, C = x.shape[0], x.shape[1]
    y = cp.empty_like(x)
    mean = cp.empty((C,), dtype=x.dtype)
    invstd = cp.empty((C,), dtype=x.dtype)
    g, has_g = _weight_arg(cp, gamma, x)
    b, has_b = _weight_arg(cp, beta, x)
    if C:
        get_kernel(f"batch_norm_forward_train_{float_suffix(x.dtype, 'x')}")(
            (min(C, 65535),), (_BN_THREADS,),
            (x, g, has_g, b, has_b, y, mean, invstd, np.int32(N), np.int32(C), np.int64(_inner(x.shape)),
             np.float64(eps)))
    return y, mean, invstd


@register("batch_norm_backward", "cupy")
def batch_norm_backward(gy, x, gamma, mean, invstd):
    """dx = gamma invstd (gy - mean(gy) - xhat mean(gy xhat)); dgamma = sum(gy xhat); dbeta = sum(gy)."""
    cp = cupy_module()
    gy, x = _contig(cp, gy), _contig(cp, x)
    N, C = x.shape[0], x.shape[1]
    dx = cp.empty_like(x)
    dgamma = cp.empty((C,), dtype=x.dtype)
    dbeta = cp.empty((C,), dtype=x.dtype)
    g, has_g = _weight_arg(cp, gamma, x)
    if C:
        get_kernel(f"batch_norm_backward_{float_suffix(x.dtype, 'x')}")(
            (min(C, 65535),), (_BN_THREADS,),
            (gy, x, g, has_g, _contig(cp, mean), _contig(cp, invstd), dx, dgamma, dbeta, np.int32(N),
             np.int32(C), np.int64(_inner(x.shape))))
    return dx, dgamma, dbeta


@register("dropout_mask", "cupy")
def dropout_mask(shape, p, dtype, like):
    """mask = [u >= p] / (1 - p), u uniform in [0, 1) from Philox4x32-10 (seed, offset + i // 4)."""
    cp = cupy_module()
    suf = float_suffix(dtype, "dtype")
    out = cp.empty(tuple(shape), dtype=dtype)
    n = out.size
    if n:
        state = philox_state(cp, "cupy")
        scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
        groups = (n + 3) // 4
        _launch(f"dropout_mask_{suf}", groups, (out, np.int64(n), np.float64(p), np.float64(scale), state))
        get_kernel("philox_advance")((1,), (1,), (state, np.uint64(groups)))
    return out


def philox_raw(counters, seed):
    """Philox4x32-10 words for each uint64 counter (for tests: the same function the dropout kernel uses)."""
    cp = cupy_module()
    counters = _contig(cp, counters.astype(np.uint64))
    out = cp.empty((counters.size, 4), dtype=np.uint32)
    if counters.size:
        _launch("philox4x32_10_raw", counters.size, (counters, np.uint64(seed), out, np.int64(counters.size)))
    return out


@register("adam_step", "cupy")
def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """In place on flat buffers: PyTorch's Adam (decoupled=False) / AdamW (decoupled=True) update.

    `step` is an int, or a one-element int64 device array (read on the device, for graph replays).
    """
    cp = cupy_module()
    check_flat_buffers("adam_step", param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    if hasattr(step, "__cuda_array_interface__"):
        step_dev, use_dev, step_host = _contig(cp, step.astype(np.int64, copy=False)), np.int32(1), 0.0
    else:
        step_dev, use_dev, step_host = param, np.int32(0), float(step)
    n = param.size
    if n:
        _launch(f"adam_step_{float_suffix(param.dtype, 'param')}", n,
                (param, grad, exp_avg, exp_avg_sq, np.int64(n), np.float64(step_host), step_dev, use_dev,
                 np.float64(lr), np.float64(beta1), np.float64(beta2), np.float64(eps), np.float64(weight_decay),
                 np.int32(bool(decoupled))))


@register("sgd_step", "cupy")
def sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first):
    """In place on flat buffers, one kernel: PyTorch's SGD (optim/sgd.py has the reference and formulas)."""
    check_flat_buffers("sgd_step", param, grad=grad, buf=buf)
    if param.size:
        _launch(f"sgd_step_{float_suffix(param.dtype, 'param')}", param.size,
                (param, grad, buf, np.int64(param.size), np.float64(lr), np.float64(momentum),
                 np.float64(dampening), np.float64(weight_decay)) + _i32(bool(nesterov), bool(maximize), bool(first)))


@register("bias_relu", "cupy")
def bias_relu(y, b):
    """out = relu(y + b[None, :, None, None]) (b may be None)."""
    cp = cupy_module()
    y = _contig(cp, y)
    out = cp.empty_like(y)
    bb, has_b = _weight_arg(cp, b, y)
    if y.size:
        _launch(f"bias_relu_{float_suffix(y.dtype, 'y')}", y.size,
                (y, bb, out, np.int64(y.size), np.int32(y.shape[1]), np.int64(_inner(y.shape)), has_b))
    return out
