"""Numba CPU fast paths for the convolution and pooling primitives (docs/kernels.md).

Same results as the NumPy reference (`cpu_numpy.py`), faster on the reference CNN's shapes:

* Convolution keeps its columns *channel-major*: cols has shape (C kH kW, n OH OW) for a batch chunk
  of n samples, so each kernel tap of each channel is a contiguous row and the whole chunk is ONE
  GEMM per group that uses every BLAS thread (instead of n small per-sample GEMMs):

      forward:   Y (O, nP) = W (O, CK) @ cols (CK, nP)      -> y (n, O, OH, OW) by a parallel copy
      dW:        dW (O, CK) = gY (O, nP) @ cols^T (nP, CK)
      dx:        dcols (CK, nP) = W^T (CK, O) @ gY (O, nP)  -> col2im: each (sample, channel) plane
                 adds its taps' rows back (one thread owns a plane, so no atomics, fixed order)

* Everything that is not a GEMM (im2col, col2im, the NCHW <-> channel-major copies, pooling) is a
  `@njit(parallel=True, cache=True)` loop over independent (sample, channel) planes or rows;
  plain NumPy would run those single-threaded and through temporaries.

Every loop below sums in a fixed order that does not depend on the thread count, so results are
bit-identical from run to run. `fastmath` stays off: results must match the reference.
"""
from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange

from .. import _threads
from . import cpu_buffers, register
from .cpu_numpy import batch_chunks, conv_out_size, get_im2col_cap_bytes, matmul

_threads.start_numba_threads()  # before any parallel kernel runs: idle OpenMP workers sleep

__all__ = ["clear_workspace", "im2col", "col2im", "conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight",
           "conv2d_relu_max_pool2d_forward", "max_pool2d_forward", "max_pool2d_backward", "relu_max_pool2d_forward",
           "relu_max_pool2d_backward", "conv2d_relu_max_pool2d_backward_weight", "avg_pool2d_forward",
           "avg_pool2d_backward"]

_jit = dict(cache=True, nogil=True)

# Below this many elements a parallel region costs more than it saves (and on a busy machine
# waiting for the second thread can take milliseconds), so such calls run on the calling thread.
_SMALL_WORK = 1 << 15
_APART_WORK = 1 << 20   # and above this, keep the workers off the caller's CPU (cpu_numpy._THREADED_GEMM)


def _launch(fn, work, *args):
    """Run njit kernel `fn` on all Numba threads, or on one when `work` (elements touched) is small."""
    if work >= _SMALL_WORK:
        if work >= _APART_WORK:
            _threads.keep_apart()
        return fn(*args)
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        numba.set_num_threads(prev)


# --------------------------------------------------------------------------- layout kernels
@njit(inline="always")
def _valid_cols(ow, w, sw, off_w):
    """[lo, hi): the output columns b whose input column b*sw + off_w lies inside [0, w)."""
    lo = 0
    if off_w < 0:
        lo = (-off_w + sw - 1) // sw
    hi = ow
    if (ow - 1) * sw + off_w >= w:
        hi = (w - 1 - off_w) // sw + 1
    if hi < lo:
        hi = lo
    return lo, hi


@njit(inline="always")
def _valid_rows(oh, h, sh, off_h):
    return _valid_cols(oh, h, sh, off_h)


@njit(parallel=True, **_jit)
def _im2col_cm(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    """cols[(c, i, j), s OH OW + p] = x_pad[s, c, oh sh + i dh, ow sw + j dw] for the n samples of x.

    With unit stride and OW == W ("same" width), the valid part of a tap's window is ONE contiguous
    run of the flattened input plane, copied in one loop; the few entries that wrapped into a
    neighbouring row are then zeroed (they are padding).
    """
    n, c, h, w = x.shape
    npix = oh * ow
    flat = sh == 1 and sw == 1 and ow == w
    for job in prange(c * kh * kw * n):
        row = job // n
        s = job - row * n
        ch = row // (kh * kw)
        tap = row - ch * (kh * kw)
        i = tap // kw
        j = tap - i * kw
        off_h = i * dh - ph
        off_w = j * dw - pw
        lo, hi = _valid_cols(ow, w, sw, off_w)
        a_lo, a_hi = _valid_rows(oh, h, sh, off_h)
        dst = cols[row, s * npix:(s + 1) * npix]
        src = x[s, ch]
        # slice copies (not element loops): Numba lowers them to tight, vectorised loops
        dst[:a_lo * ow] = 0
        dst[a_hi * ow:] = 0
        if a_lo >= a_hi:
            continue
        if flat:
            srcf = src.reshape(h * w)
            shift = off_h * w + off_w
            k0 = a_lo * ow + lo
            k1 = (a_hi - 1) * ow + hi
            dst[k0:k1] = srcf[k0 + shift:k1 + shift]
            # the wrapped border entries: usually one column, so scalar stores beat slice fills
            for a in range(a_lo, a_hi):
                for b in range(lo):
                    dst[a * ow + b] = 0
                for b in range(hi, ow):
                    dst[a * ow + b] = 0
        else:
            for a in range(a_lo, a_hi):
                srow = src[a * sh + off_h]
                base = a * ow
                dst[base:base + lo] = 0
                if hi > lo:
                    dst[base + lo:base + hi] = srow[lo * sw + off_w:(hi - 1) * sw + off_w + 1:sw]
                dst[base + hi:base + ow] = 0


@njit(parallel=True, **_jit)
def _col2im_cm(dcols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx):
    """dx[s, c] = sum over taps (i, j), in order, of dcols[(c, i, j), s-th block] added at the tap's window.

    One thread owns a (sample, channel) plane, so the sums need no atomics and run in a fixed order.
    The flat path (unit stride, OW == W) first zeroes the entries of dcols that would wrap into a
    neighbouring row (they belong to padding; dcols is a scratch buffer), then adds one contiguous run.
    """
    n, c, h, w = dx.shape
    npix = oh * ow
    flat = sh == 1 and sw == 1 and ow == w
    for job in prange(n * c):
        s = job // c
        ch = job - s * c
        plane = dx[s, ch]
        plane[:, :] = 0
        planef = plane.reshape(h * w)
        for i in range(kh):
            off_h = i * dh - ph
            a_lo, a_hi = _valid_rows(oh, h, sh, off_h)
            if a_lo >= a_hi:
                continue
            for j in range(kw):
                row = (ch * kh + i) * kw + j
                off_w = j * dw - pw
                lo, hi = _valid_cols(ow, w, sw, off_w)
                src = dcols[row, s * npix:(s + 1) * npix]
                if hi <= lo:
                    continue
                # adds run over views indexed from 0, which Numba compiles to vectorised loops
                if flat:
                    for a in range(a_lo, a_hi):
                        for b in range(lo):
                            src[a * ow + b] = 0
                        for b in range(hi, ow):
                            src[a * ow + b] = 0
                    shift = off_h * w + off_w
                    k0 = a_lo * ow + lo
                    k1 = (a_hi - 1) * ow + hi
                    acc = planef[k0 + shift:k1 + shift]
                    add = src[k0:k1]
                    for k in range(k1 - k0):
                        acc[k] += add[k]
                else:
                    for a in range(a_lo, a_hi):
                        acc = plane[a * sh + off_h, lo * sw + off_w:(hi - 1) * sw + off_w + 1:sw]
                        add = src[a * ow + lo:a * ow + hi]
                        for k in range(hi - lo):
                            acc[k] += add[k]


@njit(parallel=True, **_jit)
def _cm_to_nchw(ycm, bias, has_bias, y):
    """y[s, o, p] = ycm[o, s P + p] (+ bias[o]): the GEMM's channel-major result back to NCHW."""
    n, o, npix = y.shape
    for job in prange(n * o):
        s = job // o
        ch = job - s * o
        dst = y[s, ch]
        src = ycm[ch, s * npix:(s + 1) * npix]
        if has_bias:
            b0 = bias[ch]
            for k in range(npix):
                dst[k] = src[k] + b0
        else:
            dst[:] = src


@njit(parallel=True, **_jit)
def _nchw_to_cm(g, gcm):
    """gcm[o, s P + p] = g[s, o, p]: NCHW to channel-major, for the backward GEMMs."""
    n, o, npix = g.shape
    for job in prange(n * o):
        s = job // o
        ch = job - s * o
        gcm[ch, s * npix:(s + 1) * npix] = g[s, ch, :]


# --------------------------------------------------------------------------- direct kernels (C/groups == 1)

# Unit-stride direct kernels on "wide" planes: with the input zero-padded to Wp = W + 2 pw columns
# (plus one spare row) and the output computed Wp columns wide, tap (i, j) is ONE contiguous run
# shifted by i dh Wp + j dw, so every inner loop is a plain vectorisable a[k] += w * b[k]. The
# extra output columns are garbage that is never copied out (forward), or zeros (backward).
@njit(parallel=True, **_jit)
def _pad_planes(x, ph, pw, xp):
    """xp[s, c] = x[s, c] zero-padded into an (Hp + 1, Wp) plane."""
    n, c, h, w = x.shape
    for job in prange(n * c):
        s = job // c
        ch = job - s * c
        plane = xp[s, ch]
        plane[:, :] = 0
        for r in range(h):
            plane[r + ph, pw:pw + w] = x[s, ch, r]


@njit(parallel=True, **_jit)
def _direct_fwd_s1(xp, w, bias, has_bias, dh, dw, y, taps9, relu_pool):
    """wide = b, then wide += w[tap] * (input run shifted by the tap), tap by tap in row-major order.

    taps9 (3x3 kernels): the same sums, in the same order and rounding, computed for each element k in
    registers, acc = ((b + w0 x0[k]) + w1 x1[k]) + ... + w8 x8[k], so `wide` is stored once instead
    of being loaded and stored once per tap; `_direct_fwd_s1(..., taps9=False)` is the plain loop.
    relu_pool (inference): y is relu(max_pool2d(conv, 2)) (N, O, OH // 2, OW // 2), taken from `wide`
    with the max-pool and ReLU kernels' comparisons (bit-identical to the separate passes).
    """
    n, c, hp1, wp = xp.shape
    o, _, kh, kw = w.shape
    oh, ow = hp1 - 1 - (kh - 1) * dh, wp - (kw - 1) * dw    # xp has one spare row (`_pad_planes`)
    og = o // c
    m = oh * wp
    zero = y.dtype.type(0)
    for job in prange(n * c):
        s = job // c
        ci = job - s * c
        src = xp[s, ci].reshape(hp1 * wp)
        wide = np.empty(m, dtype=y.dtype)
        for oc in range(ci * og, (ci + 1) * og):
            b0 = bias[oc] if has_bias else zero
            if taps9:
                w0, w1, w2 = w[oc, 0, 0, 0], w[oc, 0, 0, 1], w[oc, 0, 0, 2]
                w3, w4, w5 = w[oc, 0, 1, 0], w[oc, 0, 1, 1], w[oc, 0, 1, 2]
                w6, w7, w8 = w[oc, 0, 2, 0], w[oc, 0, 2, 1], w[oc, 0, 2, 2]
                r0, r1, r2 = src[0:m], src[dw:dw + m], src[2 * dw:2 * dw + m]
                d1 = dh * wp
                r3, r4, r5 = src[d1:d1 + m], src[d1 + dw:d1 + dw + m], src[d1 + 2 * dw:d1 + 2 * dw + m]
                d2 = 2 * dh * wp
                r6, r7, r8 = src[d2:d2 + m], src[d2 + dw:d2 + dw + m], src[d2 + 2 * dw:d2 + 2 * dw + m]
                for k in range(m):
                    acc = b0 + w0 * r0[k]
                    acc += w1 * r1[k]
                    acc += w2 * r2[k]
                    acc += w3 * r3[k]
                    acc += w4 * r4[k]
                    acc += w5 * r5[k]
                    acc += w6 * r6[k]
                    acc += w7 * r7[k]
                    acc += w8 * r8[k]
                    wide[k] = acc
            else:
                wide[:] = b0
                for i in range(kh):
                    for j in range(kw):
                        wv = w[oc, 0, i, j]
                        shift = i * dh * wp + j * dw
                        run = src[shift:shift + m]
                        for k in range(m):
                            wide[k] += wv * run[k]
            if relu_pool:
                for a in range(oh // 2):
                    r0 = 2 * a * wp
                    r1 = r0 + wp
                    for b in range(ow // 2):
                        q = 2 * b
                        # selects, not branches: on random-sign data a branch mispredicts every other window
                        best = wide[r0 + q]
                        v = wide[r0 + q + 1]
                        best = v if (v > best) | (v != v) else best
                        v = wide[r1 + q]
                        best = v if (v > best) | (v != v) else best
                        v = wide[r1 + q + 1]
                        best = v if (v > best) | (v != v) else best
                        y[s, oc, a, b] = zero if best <= zero else best
            else:
                for a in range(oh):
                    y[s, oc, a, :] = wide[a * wp:a * wp + ow]


@njit(parallel=True, **_jit)
def _direct_bwd_weight_s1(gy, xp, dh, dw, dwt, db, want_db, taps9):
    """Per output channel: acc[i, j, k] += g_wide[k] x_wide[k + shift] over samples (elementwise, so it
    vectorises without reassociating a reduction), then each tap's accumulator is summed in float64.
    With want_db the bias gradient db[oc] = sum of g[:, oc] is accumulated the same way (acc_b[k] +=
    g_wide[k]) while g is already in cache, instead of a separate pass over g.
    taps9 (3x3 kernels): the nine accumulators are updated in one loop over k (g_wide[k] loaded once),
    the same operations in the same order as the plain tap-by-tap loop (taps9=False)."""
    n, c, hp1, wp = xp.shape
    o, _, kh, kw = dwt.shape
    oh, ow = gy.shape[2], gy.shape[3]
    og = o // c
    m = oh * wp
    for oc in prange(o):
        ci = oc // og
        acc = np.zeros((kh * kw, m), dtype=gy.dtype)
        acc_b = np.zeros(m, dtype=gy.dtype)
        wide = np.zeros(m, dtype=gy.dtype)
        for s in range(n):
            for a in range(oh):
                wide[a * wp:a * wp + ow] = gy[s, oc, a, :]
            if want_db:
                for k in range(m):
                    acc_b[k] += wide[k]
            src = xp[s, ci].reshape(hp1 * wp)
            if taps9:
                a0, a1, a2, a3, a4 = acc[0], acc[1], acc[2], acc[3], acc[4]
                a5, a6, a7, a8 = acc[5], acc[6], acc[7], acc[8]
                d1, d2 = dh * wp, 2 * dh * wp
                x0, x1, x2 = src[0:m], src[dw:dw + m], src[2 * dw:2 * dw + m]
                x3, x4, x5 = src[d1:d1 + m], src[d1 + dw:d1 + dw + m], src[d1 + 2 * dw:d1 + 2 * dw + m]
                x6, x7, x8 = src[d2:d2 + m], src[d2 + dw:d2 + dw + m], src[d2 + 2 * dw:d2 + 2 * dw + m]
                for k in range(m):
                    gk = wide[k]
                    a0[k] += gk * x0[k]
                    a1[k] += gk * x1[k]
                    a2[k] += gk * x2[k]
                    a3[k] += gk * x3[k]
                    a4[k] += gk * x4[k]
                    a5[k] += gk * x5[k]
                    a6[k] += gk * x6[k]
                    a7[k] += gk * x7[k]
                    a8[k] += gk * x8[k]
            else:
                for i in range(kh):
                    for j in range(kw):
                        shift = i * dh * wp + j * dw
                        run = src[shift:shift + m]
                        tap = acc[i * kw + j]
                        for k in range(m):
                            tap[k] += wide[k] * run[k]
        for i in range(kh):
            for j in range(kw):
                total = 0.0
                tap = acc[i * kw + j]
                for k in range(m):
                    total += tap[k]
                dwt[oc, 0, i, j] = total
        if want_db:
            total = 0.0
            for k in range(m):
                total += acc_b[k]
            db[oc] = total


_POOLED_DW_CHUNKS = 8   # fixed sample chunks of `_pooled_weight_grad` (their sums do not depend on threads)


@njit(parallel=True, **_jit)
def _pooled_weight_grad(gp, y, idx, xp, w_out, dwt, db):
    """dW, db of z = relu(max_pool2d(conv2d(x, w) + b, 2)) for a 1-channel x and 3x3 kernels at stride 1,
    from the gradient gp of z, without the full-size gradient of the convolution's output.

    That gradient is zero except at the argmax of each 2x2 window whose output y is > 0, where it is
    gp; so dW[o, i, j] = sum over those windows of gp x_pad[argmax + (i, j)] (9 products per window, 1/4
    of the dense sum's) and db[o] = the sum of those gp. The window's argmax (flat index in the w_out-wide
    output plane) gives its row and column offset in the window without a division. Each sample's sums
    are taken in float64 registers, then added into its fixed chunk's partial sums (chunks in parallel),
    and the chunks in order: the same result for any thread count. (Reference CNN conv1, 128 x 32 x 28x28:
    6.5 -> 4.5 ms at 2 threads, 10.5 -> 5.5 at 1, against the pool backward and dense weight gradient.)"""
    n, o, ph, pw = gp.shape
    wp = xp.shape[3]
    zero = gp.dtype.type(0)
    chunks = _POOLED_DW_CHUNKS
    part = np.zeros((chunks, o, 10))
    for ck in prange(chunks):
        acc = part[ck]
        for s in range(ck * n // chunks, (ck + 1) * n // chunks):
            src = xp[s, 0].reshape(xp.shape[2] * wp)
            for oc in range(o):
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = sb = 0.0
                g2, y2, i2 = gp[s, oc], y[s, oc], idx[s, oc]
                for a in range(ph):
                    grow, yrow, irow = g2[a], y2[a], i2[a]
                    base = 2 * a * w_out
                    for b in range(pw):
                        if yrow[b] <= zero:          # ReLU's backward: no gradient (as `_relu_bwd`'s select)
                            continue
                        g = np.float64(grow[b])
                        k = irow[b] - base - 2 * b     # 0, 1, w_out or w_out + 1
                        dr = 1 if k >= w_out else 0
                        p = (2 * a + dr) * wp + 2 * b + k - dr * w_out   # tap (0, 0) in the padded plane
                        s0 += g * src[p]
                        s1 += g * src[p + 1]
                        s2 += g * src[p + 2]
                        s3 += g * src[p + wp]
                        s4 += g * src[p + wp + 1]
                        s5 += g * src[p + wp + 2]
                        s6 += g * src[p + 2 * wp]
                        s7 += g * src[p + 2 * wp + 1]
                        s8 += g * src[p + 2 * wp + 2]
                        sb += g
                r = acc[oc]
                r[0] += s0
                r[1] += s1
                r[2] += s2
                r[3] += s3
                r[4] += s4
                r[5] += s5
                r[6] += s6
                r[7] += s7
                r[8] += s8
                r[9] += sb
    for oc in range(o):
        for t in range(10):
            total = 0.0
            for ck in range(chunks):
                total += part[ck, oc, t]
            if t < 9:
                dwt[oc, 0, t // 3, t % 3] = total
            else:
                db[oc] = total


@njit(parallel=True, **_jit)
def _direct_bwd_data_s1(gy, w, ph, pw, dh, dw, dx):
    n, c, h, wd = dx.shape
    o, _, kh, kw = w.shape
    oh, ow = gy.shape[2], gy.shape[3]
    og = o // c
    wp = wd + 2 * pw
    m = oh * wp
    for job in prange(n * c):
        s = job // c
        ci = job - s * c
        padded = np.zeros((h + 2 * ph + 1) * wp, dtype=dx.dtype)
        wide = np.zeros(m, dtype=dx.dtype)
        for oc in range(ci * og, (ci + 1) * og):
            for a in range(oh):
                wide[a * wp:a * wp + ow] = gy[s, oc, a, :]
            for i in range(kh):
                for j in range(kw):
                    wv = w[oc, 0, i, j]
                    shift = i * dh * wp + j * dw
                    run = padded[shift:shift + m]
                    for k in range(m):
                        run[k] += wv * wide[k]
        for r in range(h):
            dx[s, ci, r, :] = padded[(r + ph) * wp + pw:(r + ph) * wp + pw + wd]


# --------------------------------------------------------------------------- scratch buffers
class _Workspace(threading.local):
    """Per-thread scratch buffers (im2col columns, channel-major copies) reused across calls.

    Fresh multi-megabyte arrays cost a page fault per 4 KiB on first touch; reusing them keeps
    the convolution's temporaries warm from one training step to the next. Each slot keeps the
    largest buffer asked for so far (at most the im2col cap, plus the channel-major copies).
    """

    def __init__(self):
        self.buffers = {}

    def get(self, slot, shape, dtype):
        size = 1
        for d in shape:
            size *= d
        key = (slot, np.dtype(dtype).str)
        buf = self.buffers.get(key)
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            self.buffers[key] = buf
        return buf[:size].reshape(shape)


_workspace = _Workspace()


def clear_workspace() -> None:
    """Drop this thread's cached scratch buffers (e.g. after a one-off very large convolution)."""
    _workspace.buffers.clear()


# --------------------------------------------------------------------------- primitives
def _geometry(x_shape, w_shape, stride, padding, dilation):
    n, c, h, w = x_shape
    o, cg, kh, kw = w_shape
    oh = conv_out_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(w, kw, stride[1], padding[1], dilation[1])
    return n, c, h, w, o, cg, kh, kw, oh, ow


def _im2col_chunk(x, kh, kw, stride, padding, dilation, oh, ow, out=None):
    shape = (x.shape[1] * kh * kw, x.shape[0] * oh * ow)
    cols = np.empty(shape, dtype=x.dtype) if out is None else out
    _launch(_im2col_cm, cols.size, x, kh, kw, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], oh, ow, cols)
    return cols


@register("im2col", "numba")
def im2col(x, kernel, stride, padding, dilation):
    """Same result as the reference: cols (N, C, kH, kW, OH, OW)."""
    x = np.ascontiguousarray(x)
    kh, kw = kernel
    n, c = x.shape[:2]
    oh = conv_out_size(x.shape[2], kh, stride[0], padding[0], dilation[0])
    ow = conv_out_size(x.shape[3], kw, stride[1], padding[1], dilation[1])
    cols = _im2col_chunk(x, kh, kw, stride, padding, dilation, oh, ow)
    return np.ascontiguousarray(cols.reshape(c, kh, kw, n, oh, ow).transpose(3, 0, 1, 2, 4, 5))


@register("col2im", "numba")
def col2im(cols, x_shape, kernel, stride, padding, dilation):
    """Same result as the reference, from cols (N, C, kH, kW, OH, OW)."""
    n, c, kh, kw, oh, ow = cols.shape
    cm = np.ascontiguousarray(cols.transpose(1, 2, 3, 0, 4, 5)).reshape(c * kh * kw, n * oh * ow)
    dx = np.empty(x_shape, dtype=cols.dtype)
    _launch(_col2im_cm, cm.size, cm, kh, kw, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1], oh, ow, dx)
    return dx


class _ColsPool:
    """Column buffers that a forward pass keeps for its backward pass, recycled across steps.

    A buffer is taken by `conv2d_forward(..., keep=...)` and given back by the backward-weight
    call that consumes it, so a training loop reuses the same warm memory every step. A graph that
    is dropped without backward simply lets its buffer be garbage-collected.
    """

    def __init__(self, max_per_shape=4):
        self.free = {}
        self.max_per_shape = max_per_shape
        self.lock = threading.Lock()

    def take(self, shape, dtype):
        key = (tuple(shape), np.dtype(dtype).str)
        with self.lock:
            stack = self.free.get(key)
            if stack:
                return stack.pop()
        return np.empty(shape, dtype=dtype)

    def give(self, buf):
        key = (buf.shape, buf.dtype.str)
        with self.lock:
            stack = self.free.setdefault(key, [])
            if len(stack) < self.max_per_shape:
                stack.append(buf)


_cols_pool = _ColsPool()


# Cache blocking of the GEMM path: the im2col columns of the whole batch (reference CNN, conv2:
# 288 x 25088 floats, 29 MB) do not fit in the caches, so writing them and reading them back in the
# GEMM both go to DRAM, and likewise the GEMM's dcols in backward-data and col2im's read of them.
# Blocks of samples whose columns take at most _BLOCK_BYTES stay in the L2/L3 caches between the two
# passes. Set to None for whole-batch columns (limited by the im2col cap only). The blocks depend on
# the shapes only, never on the thread count, so results stay bit-reproducible.
_BLOCK_BYTES = 4 << 20
# Training: keep the forward's whole-batch columns for the weight gradient (True), or rebuild them
# block by block in backward-weight (False; then the forward is blocked too).
_KEEP_COLS = True


def _blocks(n, bytes_per_sample):
    """Sample ranges (a, b) covering range(n) whose columns fit the im2col cap and _BLOCK_BYTES."""
    cap = get_im2col_cap_bytes() if _BLOCK_BYTES is None else min(_BLOCK_BYTES, get_im2col_cap_bytes())
    count = -(-n // max(1, cap // max(1, bytes_per_sample)))      # number of blocks, then sizes as equal as can be
    bounds = [n * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def conv2d_forward(x, w, stride, padding, dilation, groups, bias=None, keep=None):
    """Y (O, nP) = W (O, CK) @ cols (CK, nP) per block of samples and group; then back to NCHW.

    With one input channel per group and unit stride the taps are accumulated directly
    (`_direct_fwd_s1`); a 3x3 stride-1 ungrouped convolution of 8 or more channels is Winograd
    F(2x2, 3x3) or F(4x4, 3x3) (`cpu_numba_winograd.py`: 2.25x or 4x fewer multiply-adds), and so
    are its backward-data and backward-weight.
    Optional extensions of the primitive (flagged by attributes the op checks):
    `bias` (O,) is added while the result is written (`fuses_bias`), saving a pass over y;
    `keep` (a dict): when the whole batch fits one im2col chunk its columns are left in
    keep["cols"] for `conv2d_backward_weight(..., kept=keep)` (`keeps_cols`), which then skips
    rebuilding them (unless _KEEP_COLS is off: then blocks of columns are built and dropped).
    """
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    n, c, h, wd, o, cg, kh, kw, oh, ow = _geometry(x.shape, w.shape, stride, padding, dilation)
    has_bias = bias is not None
    b = np.ascontiguousarray(bias, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    y = cpu_buffers.empty((n, o, oh, ow), x.dtype)
    if _direct(cg, stride):
        return _direct_forward(x, w, b, has_bias, padding, dilation, y, relu_pool=False)
    if cpu_numba_winograd.applies(x.shape, w.shape, stride, dilation, groups):
        # keeps no columns: backward-weight builds its own, block by block
        return cpu_numba_winograd.conv2d_forward(x, w, padding, bias=b if has_bias else None)
    og, ck = o // groups, cg * kh * kw
    w2 = w.reshape(o, ck)
    per_sample = c * kh * kw * oh * ow * x.itemsize
    if keep is not None and _KEEP_COLS and len(list(batch_chunks(n, per_sample))) == 1:
        blocks = [(0, n)]
        out = keep["cols"] = _cols_pool.take((c * kh * kw, n * oh * ow), x.dtype)
    else:
        blocks, out = _blocks(n, per_sample), None
    for lo, hi in blocks:
        m = hi - lo
        cols = _im2col_chunk(x[lo:hi], kh, kw, stride, padding, dilation, oh, ow,
                             out=_workspace.get("cols", (c * kh * kw, m * oh * ow), x.dtype) if out is None else out)
        ycm = _workspace.get("cm", (o, m * oh * ow), x.dtype)
        for g in range(groups):
            matmul(w2[g * og:(g + 1) * og], cols[g * ck:(g + 1) * ck], out=ycm[g * og:(g + 1) * og])
        _launch(_cm_to_nchw, ycm.size, ycm, b, has_bias, y[lo:hi].reshape(m, o, oh * ow))
    return y


conv2d_forward.fuses_bias = True
conv2d_forward.keeps_cols = True
register("conv2d_forward", "numba")(conv2d_forward)


def _direct(cg, stride) -> bool:
    """Convolutions with one input channel per group and unit stride accumulate taps directly."""
    return cg == 1 and stride == (1, 1)


def _direct_forward(x, w, b, has_bias, padding, dilation, y, relu_pool):
    """`_direct_fwd_s1` on the zero-padded planes of x (into y: the conv, or with relu_pool its pooled ReLU)."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = _workspace.get("pad", (n, c, h + 2 * padding[0] + 1, wd + 2 * padding[1]), x.dtype)
    _launch(_pad_planes, xp.size, x, padding[0], padding[1], xp)
    work = xp.size // c * o * kh * kw        # multiply-adds, padded planes
    _launch(_direct_fwd_s1, work, xp, w, b, has_bias, dilation[0], dilation[1], y, (kh, kw) == (3, 3), relu_pool)
    return y


@register("conv2d_relu_max_pool2d_forward", "numba")
def conv2d_relu_max_pool2d_forward(x, w, bias, stride, padding, dilation, groups):
    """relu(max_pool2d(conv2d(x, w) + bias, 2)) (N, O, OH // 2, OW // 2), for inference.

    The direct and the Winograd convolutions pool and apply ReLU as they write their output, so the
    full-size map is never stored; other convolutions run the three primitives in turn. Either way the
    values are bit-identical to `conv2d_forward`, `max_pool2d_forward` and `relu_forward` in turn.
    """
    x = np.ascontiguousarray(x)
    w = np.ascontiguousarray(w)
    n, c, h, wd, o, cg, kh, kw, oh, ow = _geometry(x.shape, w.shape, stride, padding, dilation)
    has_bias = bias is not None
    b = np.ascontiguousarray(bias, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    if _direct(cg, stride):
        y = cpu_buffers.empty((n, o, oh // 2, ow // 2), x.dtype)
        return _direct_forward(x, w, b, has_bias, padding, dilation, y, relu_pool=True)
    if cpu_numba_winograd.applies(x.shape, w.shape, stride, dilation, groups):
        return cpu_numba_winograd.conv2d_forward(x, w, padding, bias=b if has_bias else None, relu_pool=True)
    y = conv2d_forward(x, w, stride, padding, dilation, groups, bias=bias)
    pooled, _ = max_pool2d_forward(y, (2, 2), (2, 2), (0, 0))
    return cpu_numba_ew.relu_forward(pooled)


def conv2d_backward_data(gy, w, x_shape, stride, padding, dilation, groups, shared=None):
    """dcols (CK, nP) = W^T @ gY (O, nP) per group and block of samples, then col2im into each
    (sample, channel) plane of the block.

    `shared` (a dict, `shares_gy`): when the batch is one chunk, the channel-major copy of gY is left
    in shared["gcm"] for `conv2d_backward_weight(..., shared=shared)`, which then skips making it again.
    """
    gy = np.ascontiguousarray(gy)
    w = np.ascontiguousarray(w)
    n, c, h, wd, o, cg, kh, kw, oh, ow = _geometry(x_shape, w.shape, stride, padding, dilation)
    if cg > 1 and cpu_numba_winograd.applies_backward_data(w.shape, stride, padding, dilation, groups):
        return cpu_numba_winograd.conv2d_backward_data(gy, w, padding)    # no col2im, 2.25-4x fewer FLOPs
    dx = cpu_buffers.empty(x_shape, gy.dtype)
    if cg == 1 and stride == (1, 1):
        _launch(_direct_bwd_data_s1, gy.size * kh * kw, gy, w, *padding, *dilation, dx)
        return dx
    og, ck = o // groups, cg * kh * kw
    w2 = w.reshape(o, ck)
    npix = oh * ow
    per_sample = c * kh * kw * npix * gy.itemsize
    for sl in batch_chunks(n, per_sample):
        m = sl.stop - sl.start
        gcm = _workspace.get("cm", (o, m * npix), gy.dtype)
        _launch(_nchw_to_cm, gcm.size, gy[sl].reshape(m, o, npix), gcm)
        if shared is not None and m == n:
            shared["gcm"] = (gy, gcm)
        for lo, hi in _blocks(m, per_sample):
            dcols = _workspace.get("dcols", (c * kh * kw, (hi - lo) * npix), gy.dtype)
            for g in range(groups):
                matmul(w2[g * og:(g + 1) * og].T, gcm[g * og:(g + 1) * og, lo * npix:hi * npix],
                       out=dcols[g * ck:(g + 1) * ck])
            _launch(_col2im_cm, dcols.size, dcols, kh, kw, *stride, *padding, *dilation, oh, ow,
                    dx[sl.start + lo:sl.start + hi])
    return dx


conv2d_backward_data.shares_gy = True
register("conv2d_backward_data", "numba")(conv2d_backward_data)


def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation, groups, kept=None, shared=None,
                           bias_grad=None):
    """dW (O, CK) = sum over blocks of samples of gY (O, nP) @ cols^T (nP, CK), per group.

    `kept`: the dict given to `conv2d_forward(..., keep=...)`; its columns are used (instead of
    rebuilding them from x) and then returned to the pool. `shared`: the dict given to
    `conv2d_backward_data(..., shared=...)` for the same gY; its channel-major gY is reused.
    `bias_grad` (a dict, `sums_bias`): where the kernel can, it also sums gY over samples and pixels
    into bias_grad["db"] (O,) in the same pass; the op sums gY itself when the key is absent.
    """
    gy = np.ascontiguousarray(gy)
    x = np.ascontiguousarray(x)
    n, c, h, wd, o, cg, kh, kw, oh, ow = _geometry(x.shape, w_shape, stride, padding, dilation)
    if cg == 1 and stride == (1, 1):
        dwt = np.empty(w_shape, dtype=gy.dtype)
        db = np.empty(o, dtype=gy.dtype)
        xp = _workspace.get("pad", (n, c, h + 2 * padding[0] + 1, wd + 2 * padding[1]), x.dtype)
        _launch(_pad_planes, xp.size, x, padding[0], padding[1], xp)
        _launch(_direct_bwd_weight_s1, gy.size * kh * kw, gy, xp, dilation[0], dilation[1], dwt, db,
                bias_grad is not None, (kh, kw) == (3, 3))
        if bias_grad is not None:
            bias_grad["db"] = db
        return dwt
    if cpu_numba_winograd.applies(x.shape, w_shape, stride, dilation, groups):
        # the forward ran Winograd too, so no columns were kept
        # 2.25-4x fewer FLOPs, no im2col; db read off the transformed gradient
        return cpu_numba_winograd.conv2d_backward_weight(gy, x, padding, bias_grad=bias_grad)
    og, ck = o // groups, cg * kh * kw
    npix = oh * ow
    per_sample = c * kh * kw * npix * x.itemsize
    # computed transposed, dW^T (CK, O) = cols @ gY^T: OpenBLAS runs this orientation ~15% faster
    dwt = np.zeros((groups, ck, og), dtype=gy.dtype)
    part = np.empty((ck, og), dtype=gy.dtype)
    first = True
    saved = kept.pop("cols", None) if kept is not None else None
    if saved is not None and not (saved.shape == (c * kh * kw, n * npix) and saved.dtype == x.dtype):
        saved = None
    prev = shared.pop("gcm", None) if shared is not None else None
    for sl in batch_chunks(n, per_sample):
        m = sl.stop - sl.start
        if prev is not None and prev[0] is gy and m == n and prev[1].shape == (o, m * npix):
            gcm = prev[1]
        else:
            gcm = _workspace.get("cm", (o, m * npix), gy.dtype)
            _launch(_nchw_to_cm, gcm.size, gy[sl].reshape(m, o, npix), gcm)
        for lo, hi in ([(0, n)] if saved is not None else _blocks(m, per_sample)):
            if saved is not None:
                cols = saved
            else:
                cols = _im2col_chunk(x[sl.start + lo:sl.start + hi], kh, kw, stride, padding, dilation, oh, ow,
                                     out=_workspace.get("cols", (c * kh * kw, (hi - lo) * npix), x.dtype))
            for g in range(groups):
                gblk = gcm[g * og:(g + 1) * og, lo * npix:hi * npix].T
                if first:
                    matmul(cols[g * ck:(g + 1) * ck], gblk, out=dwt[g])
                else:
                    matmul(cols[g * ck:(g + 1) * ck], gblk, out=part)
                    dwt[g] += part
            first = False
    if saved is not None:
        _cols_pool.give(saved)
    return np.ascontiguousarray(dwt.transpose(0, 2, 1)).reshape(w_shape)


conv2d_backward_weight.uses_kept_cols = True
conv2d_backward_weight.shares_gy = True
conv2d_backward_weight.sums_bias = True
register("conv2d_backward_weight", "numba")(conv2d_backward_weight)


# --------------------------------------------------------------------------- pooling
@njit(parallel=True, **_jit)
def _max_pool_fwd(x, kh, kw, sh, sw, ph, pw, y, idx, relu):
    """y = each window's max (relu: max(that, 0), `_relu_fwd`'s rule), idx = its argmax (module docstring)."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    for job in prange(n * c):
        s = job // c
        ch = job - s * c
        xp = x[s, ch]
        for a in range(oh):
            r0 = a * sh - ph
            for b in range(ow):
                c0 = b * sw - pw
                best = -np.inf
                arg = -1
                for i in range(kh):
                    r = r0 + i
                    if r < 0 or r >= h:
                        continue
                    for j in range(kw):
                        q = c0 + j
                        if q < 0 or q >= w:
                            continue
                        v = xp[r, q]
                        # strictly greater keeps the first of tied maxima; NaN always wins (PyTorch)
                        if v > best or np.isnan(v):
                            best = v
                            arg = r * w + q
                        elif arg < 0:
                            arg = r * w + q
                y[s, ch, a, b] = zero if relu and best <= zero else best
                idx[s, ch, a, b] = arg


@njit(parallel=True, **_jit)
def _max_pool_2x2_fwd(x, y, idx, relu):
    """The reference CNN's case (2x2 window, stride 2, no padding) without bounds checks.

    The same result as `_max_pool_fwd`'s scan (the first of tied maxima; with NaNs the last NaN, which
    the scan takes as it meets it), written as selects so the loop has no data-dependent branch: with
    branches, random-sign inputs mispredicted about every other window (13.7 ms against 3.8 for
    128 x 32 x 28x28 on a Zen 3 core). The argmax is found after the max: the first tap equal to it,
    or with a NaN max the last NaN tap. relu: y = max(window max, 0) (`_relu_fwd`'s rule), idx unchanged.
    """
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    for job in prange(n * c):
        s = job // c
        ch = job - s * c
        xp = x[s, ch]
        for a in range(oh):
            row0, row1 = xp[2 * a], xp[2 * a + 1]
            yr, ir = y[s, ch, a], idx[s, ch, a]
            base = 2 * a * w
            for b in range(ow):
                q = 2 * b
                x0, x1, x2, x3 = row0[q], row0[q + 1], row1[q], row1[q + 1]
                best = x0
                best = x1 if (x1 > best) | (x1 != x1) else best
                best = x2 if (x2 > best) | (x2 != x2) else best
                best = x3 if (x3 > best) | (x3 != x3) else best
                yr[b] = zero if relu and best <= zero else best
                k_eq = w + 1
                k_eq = w if x2 == best else k_eq
                k_eq = 1 if x1 == best else k_eq
                k_eq = 0 if x0 == best else k_eq
                k_nan = 0
                k_nan = 1 if x1 != x1 else k_nan
                k_nan = w if x2 != x2 else k_nan
                k_nan = w + 1 if x3 != x3 else k_nan
                ir[b] = base + q + (k_nan if best != best else k_eq)


@njit(parallel=True, **_jit)
def _max_pool_bwd(gy, idx, dx, y, relu, disjoint):
    """dx plane = 0, then each window's gradient added at its argmax (a plane belongs to one thread).

    relu (the backward of relu(max_pool2d)): the gradient of a window whose output y <= 0 is 0, chosen
    as `_relu_bwd` chooses it (a select), so the sums equal those of the two backward passes in turn.
    disjoint (windows do not overlap: stride >= kernel): each gradient is stored, as 0 + g (the sum the
    scatter computes, so -0.0 becomes +0.0), instead of added, which saves a load and an add per window
    (128 x 32 x 28x28, ReLU fused: 4.2 -> 3.4 ms at 1 thread, 2.5 -> 2.1 at 2)."""
    n, c = dx.shape[0], dx.shape[1]
    hw = dx.shape[2] * dx.shape[3]
    npix = gy.shape[2] * gy.shape[3]
    zero = gy.dtype.type(0)
    for job in prange(n * c):
        s = job // c
        ch = job - s * c
        plane = dx[s, ch].reshape(hw)
        plane[:] = 0
        g = gy[s, ch].reshape(npix)
        k = idx[s, ch].reshape(npix)
        out = y[s, ch].reshape(npix)
        for p in range(npix):
            v = zero if relu and out[p] <= zero else g[p]
            if disjoint:
                plane[k[p]] = zero + v
            else:
                plane[k[p]] += v


@njit(parallel=True, **_jit)
def _avg_pool_fwd(x, kh, kw, sh, sw, ph, pw, y):
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    scale = 1.0 / (kh * kw)
    for job in prange(n * c):
        s = job // c
        ch = job - s * c
        xp = x[s, ch]
        for a in range(oh):
            r0 = a * sh - ph
            for b in range(ow):
                c0 = b * sw - pw
                acc = 0.0
                for i in range(kh):
                    r = r0 + i
                    if r < 0 or r >= h:
                        continue
                    for j in range(kw):
                        q = c0 + j
                        if 0 <= q < w:
                            acc += xp[r, q]
                y[s, ch, a, b] = acc * scale


@njit(parallel=True, **_jit)
def _avg_pool_bwd(gy, kh, kw, sh, sw, ph, pw, dx):
    n, c, h, w = dx.shape
    oh, ow = gy.shape[2], gy.shape[3]
    scale = 1.0 / (kh * kw)
    for job in prange(n * c):
        s = job // c
        ch = job - s * c
        plane = dx[s, ch]
        plane[:, :] = 0
        g = gy[s, ch]
        # taps in the reference's order (tap-major), so sums round the same way
        for i in range(kh):
            for j in range(kw):
                for a in range(oh):
                    r = a * sh - ph + i
                    if r < 0 or r >= h:
                        continue
                    for b in range(ow):
                        q = b * sw - pw + j
                        if 0 <= q < w:
                            plane[r, q] += g[a, b] * scale


@register("max_pool2d_forward", "numba")
def max_pool2d_forward(x, kernel, stride, padding, relu=False):
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh = conv_out_size(h, kernel[0], stride[0], padding[0], 1)
    ow = conv_out_size(w, kernel[1], stride[1], padding[1], 1)
    y = cpu_buffers.empty((n, c, oh, ow), x.dtype)
    idx = cpu_buffers.empty((n, c, oh, ow), np.int32)
    if kernel == (2, 2) and stride == (2, 2) and padding == (0, 0):
        _launch(_max_pool_2x2_fwd, x.size, x, y, idx, relu)
    else:
        _launch(_max_pool_fwd, x.size, x, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], y, idx,
                relu)
    return y, idx


@register("max_pool2d_backward", "numba")
def max_pool2d_backward(gy, idx, x_shape):
    dx = cpu_buffers.empty(x_shape, gy.dtype)
    gy = np.ascontiguousarray(gy)
    _launch(_max_pool_bwd, dx.size, gy, np.ascontiguousarray(idx), dx, gy, False, False)
    return dx


@register("conv2d_relu_max_pool2d_backward_weight", "numba")
def conv2d_relu_max_pool2d_backward_weight(gp, y, idx, x, w_shape, padding):
    """(dW, db) of z = relu(max_pool2d(conv2d(x, w, stride 1, padding) + b, 2)) from z's gradient gp, its
    output y and argmax idx: the sparse `_pooled_weight_grad` for 1-channel 3x3 kernels, else the
    relu + pool backward and the dense weight gradient in turn."""
    n, c, h, wd = x.shape
    oh = conv_out_size(h, w_shape[2], 1, padding[0], 1)
    ow = conv_out_size(wd, w_shape[3], 1, padding[1], 1)
    if c != 1 or w_shape[1:] != (1, 3, 3):
        g = relu_max_pool2d_backward(gp, y, idx, (n, w_shape[0], oh, ow), (2, 2), (2, 2), (0, 0))
        bias_grad = {}
        dw = conv2d_backward_weight(g, x, w_shape, (1, 1), padding, (1, 1), 1, bias_grad=bias_grad)
        db = bias_grad.get("db")
        return dw, g.sum(axis=(0, 2, 3)) if db is None else db
    x = np.ascontiguousarray(x)
    xp = _workspace.get("pad", (n, c, h + 2 * padding[0] + 1, wd + 2 * padding[1]), x.dtype)
    _launch(_pad_planes, xp.size, x, padding[0], padding[1], xp)
    dwt = np.empty(w_shape, dtype=gp.dtype)
    db = np.empty(w_shape[0], dtype=gp.dtype)
    _launch(_pooled_weight_grad, gp.size * 10, np.ascontiguousarray(gp), np.ascontiguousarray(y),
            np.ascontiguousarray(idx), xp, ow, dwt, db)
    return dwt, db


@register("relu_max_pool2d_forward", "numba")
def relu_max_pool2d_forward(x, kernel, stride, padding):
    """(relu(max_pool2d(x)), argmax) in one pass: the pool kernels with ReLU applied as each max is stored."""
    return max_pool2d_forward(x, kernel, stride, padding, relu=True)


@register("relu_max_pool2d_backward", "numba")
def relu_max_pool2d_backward(gy, y, idx, x_shape, kernel, stride, padding):
    """dx of y = relu(max_pool2d(x)): ReLU's backward select and the pool's scatter in one pass."""
    dx = cpu_buffers.empty(x_shape, gy.dtype)
    disjoint = stride[0] >= kernel[0] and stride[1] >= kernel[1]
    _launch(_max_pool_bwd, dx.size, np.ascontiguousarray(gy), np.ascontiguousarray(idx), dx,
            np.ascontiguousarray(y), True, disjoint)
    return dx


@register("avg_pool2d_forward", "numba")
def avg_pool2d_forward(x, kernel, stride, padding):
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh = conv_out_size(h, kernel[0], stride[0], padding[0], 1)
    ow = conv_out_size(w, kernel[1], stride[1], padding[1], 1)
    y = cpu_buffers.empty((n, c, oh, ow), x.dtype)
    _launch(_avg_pool_fwd, x.size, x, kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], y)
    return y


@register("avg_pool2d_backward", "numba")
def avg_pool2d_backward(gy, x_shape, kernel, stride, padding):
    dx = cpu_buffers.empty(x_shape, gy.dtype)
    _launch(_avg_pool_bwd, dx.size, np.ascontiguousarray(gy), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dx)
    return dx


# batch-norm kernels of the layer ops live in their own module
from . import cpu_numba_nn  # noqa: E402,F401
from . import cpu_numba_ew  # noqa: E402,F401  (fused elementwise kernels; own file so their edits keep this cache)
from . import cpu_numba_winograd  # noqa: E402  (3x3 convolutions; own file for the same reason)
