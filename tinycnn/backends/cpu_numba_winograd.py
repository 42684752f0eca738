"""Winograd F(2x2, 3x3) and F(4x4, 3x3): the Numba family's 3x3, stride-1 convolution, forward and both
gradients. This file holds the drivers (blocks, threads, GEMMs) and F(2x2, 3x3)'s transforms, explained
below; `cpu_numba_winograd4.py` holds F(4x4, 3x3)'s, which use 6x6 tiles for 4x4 outputs, 36 GEMMs and
4x fewer multiply-adds than im2col. `tile_for` picks the tile per convolution (see there).

Each 2x2 block of outputs of one (sample, output channel) needs a 4x4 tile d of each padded input
plane. With the fixed matrices

    B^T = [[1, 0, -1,  0],      G = [[  1,    0,    0],      A^T = [[1, 1,  1,  0],
           [0, 1,  1,  0],           [1/2,  1/2,  1/2],             [0, 1, -1, -1]]
           [0, -1, 1,  0],           [1/2, -1/2,  1/2],
           [0, 1,  0, -1]]           [  0,    0,    1]]

the 2x2 output block is

    Y = A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A          (.*: element-wise, 4x4)

(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016; derivation in docs/math.md).
The sum over input channels c is, for each of the 16 positions k of the 4x4 transformed tile, one
GEMM over all tiles t:

    U[k] (O, C) = (G g G^T)[k]      V[k] (C, T) = (B^T d B)[k]      M[k] (O, T) = U[k] @ V[k]

(F(2x2, 3x3) stores V[k] channels last, as (T, C), and BLAS reads it transposed: its input transform
then runs along the channels in SIMD lanes; see `_input_transform`.)

16 GEMMs of O x C x T multiply-adds replace the im2col GEMM's O x 9C x 4T: 2.25x fewer.
(F(4x4, 3x3): 36 GEMMs of O x C x T for 16 T outputs, 1.78x fewer again, for about 8x the float32
rounding error; measured on ResNet-18's 3x3 convolutions at batch 128, 1 thread: 64 x 28x28 forward /
backward-data / weight gradient 60 / 60 / 73 ms -> 47 / 46 / 56, 256 x 7x7 58 / 60 / 69 -> 47 / 47 / 52.)

Backward-data of a stride-1 3x3 convolution is itself one: dx = conv(gy, w', padding 2 - p) with
w'[c, o, i, j] = w[o, c, 2 - i, 2 - j] (each input pixel collects the gradients of the outputs whose
window covered it, the kernel turned by 180 degrees). So `conv2d_backward_data` is the forward with
those weights, and needs no col2im. Backward-weight backpropagates through the formula above:
dM = A dY A^T per tile, dU[k] (O, C) = dM[k] (O, T) @ V[k]^T, dW = G^T dU G (again 16 GEMMs; with V
channels last, V[k]^T is V's own (T, C) layout).

Blocks and threads. The transformed tensors are 4x the planes they come from, so the batch is cut
into blocks of samples whose V and M take at most _BLOCK_BYTES: the input transform writes V, the 16
GEMMs read it and write M, and the output transform reads M, all from cache. The GEMMs of one block
are too small to share between BLAS threads (measured: 2 OpenBLAS threads made the whole convolution
slower than 1), so with T tinycnn threads (`numba.get_num_threads()`) the blocks are shared out
instead: T worker threads each run whole blocks, the transforms in serial Numba code that releases
the GIL and the GEMMs through single-threaded BLAS (threadpoolctl limits OpenBLAS to 1 thread while
they run). A block's result does not depend on which thread ran it, and blocks depend only on the
shapes, so results are bit-identical for any thread count. Where U itself is larger than a block
(deep layers), the "whole" schedule of `conv2d_forward` is used instead.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

from .. import _threads
from . import cpu_buffers
from . import cpu_numba_winograd4 as _f4
from .cpu_numba import _workspace
from .cpu_numpy import GemmCall, batch_chunks, log_gemm

__all__ = ["applies", "applies_backward_data", "weight_transform", "conv2d_forward", "conv2d_backward_data",
           "conv2d_backward_weight", "run_spread"]

_BLOCK_BYTES = 2 << 20     # V + M of one block of samples (measured: docs/kernels.md)
MIN_CHANNELS = 8           # fewer summed channels: the 16 GEMMs have too little depth to beat im2col


def applies(x_shape, w_shape, stride, dilation, groups) -> bool:
    """True when `conv2d_forward` computes this convolution (3x3, stride 1, undilated, ungrouped,
    at least MIN_CHANNELS input channels)."""
    return (tuple(w_shape[2:]) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and groups == 1 and x_shape[1] >= MIN_CHANNELS)


def applies_backward_data(w_shape, stride, padding, dilation, groups) -> bool:
    """True when `conv2d_backward_data` computes this convolution's input gradient: as `applies`, with
    the O output channels as the summed ones, and padding at most 2 (the turned convolution's padding
    2 - p must not be negative)."""
    return (applies((0, w_shape[0]), w_shape, stride, dilation, groups)
            and max(padding) <= 2)


def weight_transform(w, out=None, turned=False, tile=2):
    """U (16, O, C): U[4i + j, o, c] = (G w[o, c] G^T)[i, j], computed in float64 then rounded once
    (tile 4: U (36, O, C) of F(4x4, 3x3), U[6i + j]).

    turned: U (16 or 36, C, O) of the turned kernel w'[c, o] = w[o, c, ::-1, ::-1] (backward-data's), read
    straight from w without making w'. Rows of U are shared among the worker threads (each row's
    arithmetic is the same whichever thread runs it): for 512 x 512 kernels one thread took 12 ms, a
    quarter of the forward convolution at 4x4 (2 threads, batch 128).
    """
    w = np.ascontiguousarray(w)
    o, c = w.shape[:2]
    rows, cols = (c, o) if turned else (o, c)
    k, kernel = _slab_count(tile), _KERNELS[tile][0]
    u = np.empty((k, rows, cols), dtype=w.dtype) if out is None else out
    taps = _TURNED_TAPS if turned else _TAPS
    wf = w.reshape(o, c, 9)
    _workers.run(lambda lo, hi: kernel(wf, taps, turned, lo, hi, u), _row_blocks(rows, cols))
    return u


_TAPS = np.arange(9)              # tap k of a kernel, row-major
_TURNED_TAPS = 8 - np.arange(9)   # the kernel turned by 180 degrees: tap k is tap 8 - k


_SPREAD_KERNELS = 128 * 128   # fewer 3x3 kernels: one thread transforms them (0.34 ms for 128 x 128)


def _row_blocks(rows, cols=None):
    """Rows of a weight-sized array in blocks for the worker threads (a few per thread: a late one waits
    less); one block when its rows x cols kernels are fewer than _SPREAD_KERNELS (waking a worker cost
    more than it saved: 64 x 32 kernels take 0.03 ms)."""
    if cols is not None and rows * cols < _SPREAD_KERNELS:
        return [(0, rows)]
    return _split(0, rows, 4 * numba.get_num_threads())


@njit(cache=True, nogil=True)
def _weight_transform(wf, taps, turned, lo, hi, u):
    """Rows lo..hi of U: the 4x4 G g G^T of every 3x3 kernel g (g = wf[row, col] with taps in `taps`, or
    for `turned` g = wf[col, row]), written out (rows of G g: g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 for the
    rows g_k of g; then the same combinations of its columns), in float64, rounded once on the store.
    (As NumPy matrix products this took 37-58 ms for 512 x 512 kernels.)"""
    for oc in range(lo, hi):
        for ci in range(u.shape[2]):
            g = wf[ci, oc] if turned else wf[oc, ci]
            for i in range(4):                  # row i of G g, then times G^T
                if i == 0:
                    r0, r1, r2 = np.float64(g[taps[0]]), np.float64(g[taps[1]]), np.float64(g[taps[2]])
                elif i == 3:
                    r0, r1, r2 = np.float64(g[taps[6]]), np.float64(g[taps[7]]), np.float64(g[taps[8]])
                else:
                    sign = 1.0 if i == 1 else -1.0
                    r0 = (np.float64(g[taps[0]]) + sign * np.float64(g[taps[3]]) + np.float64(g[taps[6]])) * 0.5
                    r1 = (np.float64(g[taps[1]]) + sign * np.float64(g[taps[4]]) + np.float64(g[taps[7]])) * 0.5
                    r2 = (np.float64(g[taps[2]]) + sign * np.float64(g[taps[5]]) + np.float64(g[taps[8]])) * 0.5
                u[4 * i, oc, ci] = r0
                u[4 * i + 1, oc, ci] = (r0 + r1 + r2) * 0.5
                u[4 * i + 2, oc, ci] = (r0 - r1 + r2) * 0.5
                u[4 * i + 3, oc, ci] = r2


@njit(cache=True, nogil=True)
def _input_transform(x, ph, pw, th, tw, v):
    """v[4i + j, s th tw + a tw + b, c] = (B^T d B)[i, j], d = x_pad[s, c, 2a:2a+4, 2b:2b+4]: V channels last.

    Each sample is first copied into a padded channels-last plane (rows, columns, C), whose border stays
    zero; then every step runs along the channels, which are contiguous in that plane and in V, so the
    loops run in SIMD lanes. Along a row of an NCHW plane they could not: a 14-wide plane has 7 tiles, too
    few for 8 lanes, and their columns are read at stride 2 (the NCHW form of this kernel stayed scalar).
    Per (sample, row a of tiles): the four rows of B^T d for the whole padded width, then each tile's four
    columns of those rows times B. (Batch 128, 1 thread, the reference CNN's 32 -> 64 channels at 14x14:
    x's transform 149 -> 107 us per 6-sample block, the 64-channel gradient's 148 -> 77 us per 3 samples.)
    """
    n, c, h, w = x.shape
    hp, wp = 2 * th + 2, 2 * tw + 2
    xp = np.zeros((hp, wp, c), dtype=x.dtype)     # the zero border = the padding
    rr = np.empty((4, wp, c), dtype=x.dtype)
    for s in range(n):
        for ch in range(c):
            plane = x[s, ch]
            for i in range(min(h, hp - ph)):
                dst = xp[i + ph, pw:pw + w]
                row = plane[i]
                for j in range(min(w, wp - pw)):
                    dst[j, ch] = row[j]
        base = s * th * tw
        for a in range(th):
            p0, p1, p2, p3 = xp[2 * a], xp[2 * a + 1], xp[2 * a + 2], xp[2 * a + 3]
            r0, r1, r2, r3 = rr[0], rr[1], rr[2], rr[3]
            for q in range(wp):
                d0, d1, d2, d3 = p0[q], p1[q], p2[q], p3[q]
                o0, o1, o2, o3 = r0[q], r1[q], r2[q], r3[q]
                for k in range(c):
                    e1 = d1[k]
                    e2 = d2[k]
                    o0[k] = d0[k] - e2
                    o1[k] = e1 + e2
                    o2[k] = e2 - e1
                    o3[k] = e1 - d3[k]
            t0 = base + a * tw
            for i in range(4):
                row = rr[i]
                for b in range(tw):
                    e0, e1, e2, e3 = row[2 * b], row[2 * b + 1], row[2 * b + 2], row[2 * b + 3]
                    va, vb = v[4 * i, t0 + b], v[4 * i + 1, t0 + b]
                    vc, vd = v[4 * i + 2, t0 + b], v[4 * i + 3, t0 + b]
                    for k in range(c):
                        f1 = e1[k]
                        f2 = e2[k]
                        va[k] = e0[k] - f2
                        vb[k] = f1 + f2
                        vc[k] = f2 - f1
                        vd[k] = f1 - e3[k]


@njit(cache=True, nogil=True)
def _output_blocks(m, ch, b0, out):
    """out[:, t] = the 2x2 block A^T m A + b0 of every tile t of output channel ch, row by row
    (out[0]: y00, out[1]: y01, out[2]: y10, out[3]: y11). A^T m: row 0 = m0 + m1 + m2, row 1 =
    m1 - m2 - m3 (m0..m3 the rows of the 4x4 m); the same combinations of that 2x4 product's columns
    give the block. One loop over the contiguous tiles of M[k, ch] (all samples of the block), so it
    runs in SIMD lanes; the per-plane scatter into y comes after (3-4x faster than tile by tile)."""
    for t in range(m.shape[2]):
        p0 = m[0, ch, t] + m[4, ch, t] + m[8, ch, t]
        p1 = m[1, ch, t] + m[5, ch, t] + m[9, ch, t]
        p2 = m[2, ch, t] + m[6, ch, t] + m[10, ch, t]
        p3 = m[3, ch, t] + m[7, ch, t] + m[11, ch, t]
        q0 = m[4, ch, t] - m[8, ch, t] - m[12, ch, t]
        q1 = m[5, ch, t] - m[9, ch, t] - m[13, ch, t]
        q2 = m[6, ch, t] - m[10, ch, t] - m[14, ch, t]
        q3 = m[7, ch, t] - m[11, ch, t] - m[15, ch, t]
        out[0, t] = p0 + p1 + p2 + b0
        out[1, t] = p1 - p2 - p3 + b0
        out[2, t] = q0 + q1 + q2 + b0
        out[3, t] = q1 - q2 - q3 + b0


@njit(cache=True, nogil=True)
def _blocks_of_channel(m, ch, b0, out):
    """out[mt r + q, t] = output (r, q) of tile t of channel ch (+ b0), mt x mt per tile: F(2x2, 3x3) when M
    has 16 slabs, F(4x4, 3x3) (`cpu_numba_winograd4.output_blocks`) when it has 36."""
    if m.shape[0] == 16:
        _output_blocks(m, ch, b0, out)
    else:
        _f4.output_blocks(m, ch, b0, out)


@njit(cache=True, nogil=True)
def _output_transform(m, bias, has_bias, th, tw, y):
    """y[s, o, mt a:mt a + mt, mt b:mt b + mt] = A^T m A (+ bias[o]) for tile (a, b) of sample s, m[i, j] =
    M[(mt + 2) i + j, o, s th tw + a tw + b], mt = 2 or 4 (16 or 36 slabs); the rows and columns of the
    last tiles beyond OH, OW are dropped. The blocks of a channel are computed for all tiles at once
    (`_blocks_of_channel`, in SIMD lanes), then stored into y: for F(2x2, 3x3) tile by tile, two values
    into each of the tile's two rows (`_store_blocks_f2`), else each output row is filled from mt rows of
    blocks through row views."""
    n, o, oh, ow = y.shape
    mt = 2 if m.shape[0] == 16 else 4
    tiles = th * tw
    blocks = np.empty((mt * mt, m.shape[2]), dtype=y.dtype)
    for ch in range(o):
        _blocks_of_channel(m, ch, bias[ch] if has_bias else y.dtype.type(0), blocks)
        if mt == 2:
            _store_blocks_f2(blocks, ch, tw, y)
            continue
        for s in range(n):
            base = s * tiles
            ys = y[s, ch]
            for a in range(th):
                t0 = base + a * tw
                for r in range(min(mt, oh - mt * a)):
                    yrow = ys[mt * a + r]
                    for q in range(mt):
                        src = blocks[mt * r + q, t0:t0 + tw]
                        for b in range((ow - q + mt - 1) // mt):      # the tiles whose column q is inside
                            yrow[mt * b + q] = src[b]


@njit(cache=True, nogil=True)
def _store_blocks_f2(blocks, ch, tw, y):
    """y[s, ch] from the 2x2 blocks of its tiles (blocks[r * 2 + q, t]: output (r, q) of tile t), one
    tile at a time: 4 loads and 4 stores per tile without per-row views (2x faster than filling each
    output row's even and odd columns in separate passes: 64 channels x 6 samples at 14x14, 124 -> 64 us).
    An odd last row or column takes the first row or column of its tiles."""
    n, _, oh, ow = y.shape
    b0, b1, b2, b3 = blocks[0], blocks[1], blocks[2], blocks[3]
    hh, hw = oh // 2, ow // 2
    tiles = -(-oh // 2) * tw
    for s in range(n):
        ys = y[s, ch]
        for a in range(hh):
            y0, y1 = ys[2 * a], ys[2 * a + 1]
            t0 = s * tiles + a * tw
            for b in range(hw):
                t = t0 + b
                y0[2 * b] = b0[t]
                y0[2 * b + 1] = b1[t]
                y1[2 * b] = b2[t]
                y1[2 * b + 1] = b3[t]
            if ow % 2:
                y0[ow - 1] = b0[t0 + hw]
                y1[ow - 1] = b2[t0 + hw]
        if oh % 2:
            yl = ys[oh - 1]
            t0 = s * tiles + hh * tw
            for b in range(hw):
                yl[2 * b] = b0[t0 + b]
                yl[2 * b + 1] = b1[t0 + b]
            if ow % 2:
                yl[ow - 1] = b0[t0 + hw]


@njit(cache=True, nogil=True)
def _output_transform_relu_pool(m, bias, has_bias, th, tw, yp):
    """yp[s, o, a, b] = relu(max of the 2x2 block y[s, o, 2a:2a+2, 2b:2b+2]) for inference, with y computed
    as `_output_transform` computes it: each 2x2 max-pool window lies inside one tile (a tile's mt x mt
    outputs hold (mt/2)^2 windows), so the full-size y is never written. The max and ReLU are those of
    the max-pool and ReLU kernels (first maximum, NaN wins; v <= 0 gives +0.0), so the result is
    bit-identical to the three separate passes (written as selects, so the loop over tiles stays in
    SIMD lanes). Windows of an odd last row or column are dropped, as the floor-mode pool drops them."""
    n, o, ph, pw = yp.shape
    zero = yp.dtype.type(0)
    mt = 2 if m.shape[0] == 16 else 4
    hm = mt // 2                                   # windows per tile side
    blocks = np.empty((mt * mt, m.shape[2]), dtype=yp.dtype)
    pooled = np.empty((hm * hm, m.shape[2]), dtype=yp.dtype)
    for ch in range(o):
        _blocks_of_channel(m, ch, bias[ch] if has_bias else zero, blocks)
        for wr in range(hm):
            for wc in range(hm):
                k0 = 2 * wr * mt + 2 * wc          # the window's top-left output in the tile
                for t in range(m.shape[2]):
                    best = blocks[k0, t]
                    v = blocks[k0 + 1, t]
                    best = v if (v > best) | (v != v) else best
                    v = blocks[k0 + mt, t]
                    best = v if (v > best) | (v != v) else best
                    v = blocks[k0 + mt + 1, t]
                    best = v if (v > best) | (v != v) else best
                    pooled[wr * hm + wc, t] = zero if best <= zero else best
        for s in range(n):
            t0 = s * th * tw
            for a in range(ph):
                for b in range(pw):
                    yp[s, ch, a, b] = pooled[(a % hm) * hm + b % hm, t0 + (a // hm) * tw + b // hm]


@njit(cache=True, nogil=True)
def _grad_output_transform(gy, th, tw, dm):
    """dm[4i + j, o, s th tw + a tw + b] = (A dY A^T)[i, j] for the 2x2 block dY = gy[s, o, 2a:2a+2, 2b:2b+2]
    (zeros beyond an odd OH or OW): the gradient of M in Y = A^T M A. Rows of A dY: y0, y0 + y1,
    y0 - y1, -y1 (y0, y1 the rows of dY); each row (p, q) then becomes (p, p + q, p - q, -q).
    Written through row views of gy and of the 16 slabs of each (sample, channel)."""
    n, o, oh, ow = gy.shape
    zero = gy.dtype.type(0)
    tiles = th * tw
    zrow = np.zeros(ow, dtype=gy.dtype)
    for s in range(n):
        base = s * tiles
        for ch in range(o):
            g = gy[s, ch]
            d0, d1, d2, d3 = (dm[0, ch, base:base + tiles], dm[1, ch, base:base + tiles],
                              dm[2, ch, base:base + tiles], dm[3, ch, base:base + tiles])
            d4, d5, d6, d7 = (dm[4, ch, base:base + tiles], dm[5, ch, base:base + tiles],
                              dm[6, ch, base:base + tiles], dm[7, ch, base:base + tiles])
            d8, d9, d10, d11 = (dm[8, ch, base:base + tiles], dm[9, ch, base:base + tiles],
                                dm[10, ch, base:base + tiles], dm[11, ch, base:base + tiles])
            d12, d13, d14, d15 = (dm[12, ch, base:base + tiles], dm[13, ch, base:base + tiles],
                                  dm[14, ch, base:base + tiles], dm[15, ch, base:base + tiles])
            for a in range(th):
                row0 = g[2 * a]
                row1 = g[2 * a + 1] if 2 * a + 1 < oh else zrow
                t0 = a * tw
                for b in range(tw):
                    j = 2 * b
                    t = t0 + b
                    y00 = row0[j]
                    y10 = row1[j]
                    y01 = row0[j + 1] if j + 1 < ow else zero
                    y11 = row1[j + 1] if j + 1 < ow else zero
                    p, q = y00, y01
                    d0[t] = p
                    d1[t] = p + q
                    d2[t] = p - q
                    d3[t] = -q
                    p, q = y00 + y10, y01 + y11
                    d4[t] = p
                    d5[t] = p + q
                    d6[t] = p - q
                    d7[t] = -q
                    p, q = y00 - y10, y01 - y11
                    d8[t] = p
                    d9[t] = p + q
                    d10[t] = p - q
                    d11[t] = -q
                    p, q = -y10, -y11
                    d12[t] = p
                    d13[t] = p + q
                    d14[t] = p - q
                    d15[t] = -q


@njit(cache=True, nogil=True)
def _weight_grad_transform(du, dw, lo, hi):
    """dw[o, c] = G^T du[:, o, c] G (3 x 3 from 4 x 4) for o in lo..hi, in float64: the gradient of
    U = G g G^T. G^T u for a 4-vector u is (u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3)."""
    k, o, c = du.shape
    r = np.empty((4, 3))
    for oc in range(lo, hi):
        for ci in range(c):
            for i in range(4):                  # each row of du times G
                u0, u1, u2, u3 = (np.float64(du[4 * i, oc, ci]), np.float64(du[4 * i + 1, oc, ci]),
                                  np.float64(du[4 * i + 2, oc, ci]), np.float64(du[4 * i + 3, oc, ci]))
                r[i, 0] = u0 + (u1 + u2) * 0.5
                r[i, 1] = (u1 - u2) * 0.5
                r[i, 2] = (u1 + u2) * 0.5 + u3
            for col in range(3):                # then G^T times each column
                u0, u1, u2, u3 = r[0, col], r[1, col], r[2, col], r[3, col]
                dw[oc, ci, 0, col] = u0 + (u1 + u2) * 0.5
                dw[oc, ci, 1, col] = (u1 - u2) * 0.5
                dw[oc, ci, 2, col] = (u1 + u2) * 0.5 + u3


# --------------------------------------------------------------------------- the two tile sizes
# tile -> its kernels: weight transform, input transform, gradient-output transform, weight-gradient transform
_KERNELS = {2: (_weight_transform, _input_transform, _grad_output_transform, _weight_grad_transform),
            4: (_f4.weight_transform, _f4.input_transform, _f4.grad_output_transform, _f4.weight_grad_transform)}


def _slab_count(tile):
    """Elements of a transformed tile: (tile + 2)^2 (16 for F(2x2, 3x3), 36 for F(4x4, 3x3))."""
    if tile not in _KERNELS:
        raise ValueError(f"tile must be 2 or 4, got {tile!r}")
    return (tile + 2) ** 2


TILE = None   # None: `tile_for` chooses; 2 or 4: that tile size everywhere (benchmarks, tests)


def tile_for(c, o, oh, ow) -> int:
    """The output tile side for a convolution of c -> o channels with an oh x ow output: 4 (F(4x4, 3x3))
    where its tiles cut the transformed elements per sample enough to pay for their costlier transforms,
    else 2.

    Elements per sample (GEMM columns, and V, M traffic) are 36 ceil(oh/4) ceil(ow/4) for F(4x4, 3x3)
    against 16 ceil(oh/2) ceil(ow/2): a ratio r of 0.56 at 7, 8, 11, 12, 15, 16, ..., 28; 0.74 at 14;
    1.0 at 5 and 6. The GEMMs gain 1/r; the transforms, whose work per element is larger for 6x6 tiles,
    gain less, so the channels decide where r is middling: c o / (c + o) (GEMM work over transform work
    per element) of at least 48. 4x4 outputs (one tile per sample) measured no faster. Measured (batch
    128, 1 thread, forward / backward-data / weight gradient, F(4x4) over F(2x2) time; `python
    benchmarks/winograd_ab.py --paths f2,f4 --shape 128,C,O,H`): r = 0.56: 32 x 32 at 28x28 0.79 / 0.85 /
    0.85, 64 x 64 at 28 0.77 / 0.77 / 0.76, 64 -> 128 at 7 0.75 / 0.75 / 0.84, 256 x 256 at 7 0.81 / 0.78
    / 0.75; r = 0.74 at 14x14: 128 x 128 (c o / (c + o) = 64) 0.76 / 0.80 / 1.06, 64 x 64 (32) 0.96 / 0.95
    / 0.99, 32 -> 64 (21) 1.17 / 1.12 / 1.05; 512 x 512 at 4x4 1.00 / 0.98 / 1.02."""
    if TILE is not None:
        return TILE
    if min(oh, ow) <= 4:
        return 2
    r = 36 * -(-oh // 4) * -(-ow // 4) / (16 * -(-oh // 2) * -(-ow // 2))
    return 4 if r <= 0.6 or (r <= 0.85 and c * o >= 48 * (c + o)) else 2


# --------------------------------------------------------------------------- worker threads
class _Workers:
    """A persistent pool of worker threads that run blocks with single-threaded BLAS (module docstring)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pool = None
        self._size = 0
        self._blas = None

    def _blas_limit(self):
        if self._blas is None:
            try:
                from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - loads BLAS info once
                self._blas = ThreadpoolController()
            except ImportError:  # pragma: no cover - a core dependency; without it, blocks run in turn
                self._blas = False
        return self._blas

    def run(self, job, blocks):
        """job(lo, hi) for every block (lo, hi), the threads taking the next block as they come free.

        Taking blocks one by one (not a fixed share each) matters on a busy or virtual machine: a
        worker that wakes late (measured: milliseconds, after idle time) leaves its blocks to the
        others instead of making them wait. Which thread runs a block never changes its result.
        """
        count = min(numba.get_num_threads(), len(blocks))
        blas = self._blas_limit() if count > 1 else None
        if count <= 1 or not blas:
            for lo, hi in blocks:
                job(lo, hi)
            return
        with self._lock:
            if self._pool is None or self._size < count:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool = ThreadPoolExecutor(count, thread_name_prefix="tinycnn-winograd",
                                                initializer=_threads.mark_pool_thread)
                self._size = count
            pool = self._pool
        _threads.keep_apart()
        queue = iter(blocks)
        taking = threading.Lock()

        def take_blocks():
            while True:
                with taking:
                    block = next(queue, None)
                if block is None:
                    return
                job(*block)

        with blas.limit(limits=1, user_api="blas"):
            futures = [pool.submit(take_blocks) for _ in range(1, count)]
            take_blocks()                              # the calling thread works too
            for f in futures:
                f.result()


_workers = _Workers()


def run_spread(job, blocks) -> None:
    """job(lo, hi) for every block, run as the convolution runs its blocks (worker threads, each with
    single-threaded BLAS); benchmarks/train_step.py replays recorded Winograd GEMMs through it."""
    _workers.run(job, blocks)


_SPREAD_ENOUGH = 8      # distinct 4 KiB offsets of the 16 slabs that need no spacing (`_slabs`)


def _slabs(slot, rows, cols, dtype, k=16):
    """A (k, rows, cols) workspace array (per thread, reused) for V, M, U or dU, with its k slabs (16 or 36)
    moved apart where contiguous ones would put them at fewer than 8 distinct offsets modulo 4 KiB.

    The transforms read or write all 16 slabs together, one element of each per tile, and addresses
    equal modulo 4 KiB share L1 cache sets: 16 streams at one or a few such offsets thrash them. That is
    the case whenever a slab is a multiple of 1 KiB, as in the whole-batch schedule of deep layers (256
    channels x 7x7 x 128 samples: 2 MiB slabs). There the slabs are 4 KiB x k + 256 bytes apart, and
    (2 threads, batch 128, ms, contiguous -> apart) 256 x 7x7 forward 52 -> 46, backward-data 60 -> 44,
    weight gradient 67 -> 52; 512 x 4x4 59 -> 53, 60 -> 55, 62 -> 42 (a second run: 56 -> 48, 53 -> 47,
    67 -> 55; 59 -> 49, 53 -> 50, 52 -> 52). ResNet-18's blocked layers (64 x 28x28, 128 x 14x14: 4
    offsets) were unchanged by it within noise. Where the offsets are already spread (reference CNN
    blocks: 8), moving them made the forward slower (7.7 -> 8.4 ms per 128 samples, 1 thread), so those
    stay contiguous. U and dU (16, O, C) too: the weight transform of 512 x 512 kernels took 12.5 ms
    with contiguous slabs, 3.0 ms spaced (64 x 64: 0.20 -> 0.10 ms); ResNet-18's training step at 1
    thread 3374-3431 -> 3355-3370 ms.
    """
    itemsize = np.dtype(dtype).itemsize
    slab = rows * cols * itemsize
    if 4096 // math.gcd(slab, 4096) >= _SPREAD_ENOUGH:
        return _workspace.get(slot, (k, rows, cols), dtype)
    step = (-(-slab // 4096) * 4096 + 256) // itemsize
    return _workspace.get(slot, (k, step), dtype)[:, :rows * cols].reshape(k, rows, cols)


def _blocks(n, per_sample, block_bytes):
    step = max(1, (block_bytes or _BLOCK_BYTES) // per_sample)
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _whole_by_default(o, c, itemsize, block_bytes, k=16, blocks_of_u=1):
    """The whole schedule when the transformed weights U (k x O x C) are larger than `blocks_of_u` blocks.

    The forward re-reads U for every block (from a cache level below L1 either way), which costs less
    than the whole schedule's trip through memory up to two blocks' worth of U: F(4x4, 3x3) for 128 x
    128 at 14x14 (U 2.4 MB; ms, blocked / whole) forward 42.5 / 63.3 at 1 thread, 21.7 / 34.2 at 2. The
    weight gradient keeps one partial dU per group of blocks and gained nothing from blocking there
    (58.2 / 60.8, 34.7 / 34.2), so it keeps the one-block limit."""
    return k * o * c * itemsize > blocks_of_u * (block_bytes or _BLOCK_BYTES)


def _chunk_tiles(a, lo, hi, lo0, tiles):
    """The tiles of samples [lo, hi) in a (16, channels, T) tensor that holds a chunk starting at lo0."""
    return a[:, :, (lo - lo0) * tiles:(hi - lo0) * tiles]


def _v_slabs(tile, c, t, dtype, k):
    """The workspace for V: (k, T, C), channels last, for F(2x2, 3x3), whose input transform runs along
    the channels (`_input_transform`); (k, C, T) for F(4x4, 3x3)."""
    return _slabs("wino_v", t, c, dtype, k) if tile == 2 else _slabs("wino_v", c, t, dtype, k)


def _v_chunk(v, tile, lo, hi, lo0, tiles):
    """`_chunk_tiles` of V, whose tiles are axis 1 when it is channels last (tile 2)."""
    if tile == 2:
        return v[:, (lo - lo0) * tiles:(hi - lo0) * tiles]
    return _chunk_tiles(v, lo, hi, lo0, tiles)


def _v_ct(v, tile):
    """V as the stack of (C, T) matrices that U (O, C) multiplies (a transposed view when channels last)."""
    return v.transpose(0, 2, 1) if tile == 2 else v


def _v_tc(v, tile):
    """V as the stack of (T, C) matrices that dM (O, T) multiplies (V itself when channels last)."""
    return v if tile == 2 else v.transpose(0, 2, 1)


def _split(lo, hi, parts):
    """[lo, hi) cut into at most `parts` contiguous, nearly equal ranges."""
    parts = max(1, min(parts, hi - lo))
    b = [lo + (hi - lo) * k // parts for k in range(parts + 1)]
    return list(zip(b[:-1], b[1:]))


def conv2d_forward(x, w, padding, bias=None, block_bytes=None, whole=None, relu_pool=False, turned=False,
                   tile=None):
    """y (N, O, OH, OW) = conv2d(x, w, stride 1, `padding`, dilation 1, groups 1) (+ bias), w (O, C, 3, 3).

    turned: convolve with w'[c, o] = w[o, c, ::-1, ::-1] instead (w (C, O, 3, 3), O = w.shape[1]): the
    backward-data convolution, whose transformed weights are read straight from w.

    relu_pool (inference): return relu(max_pool2d(y, 2)) (N, O, OH // 2, OW // 2) instead, computed in
    the output transform (`_output_transform_relu_pool`), so y is never written.

    tile: 2 for F(2x2, 3x3), 4 for F(4x4, 3x3) (`cpu_numba_winograd4.py`); by default `tile_for` chooses.

    Two schedules, the same operations per tile (the GEMMs' sums may be ordered differently). Blocked
    (small weights): per block of samples, transforms and GEMMs from cache, blocks shared among
    worker threads. Whole (`whole`, by default when the transformed weights U are larger than a
    block: deep layers, e.g. 512 channels at 4x4): rather than re-reading U for every small block, the
    transforms of a whole batch chunk (bounded by the im2col cap) run first, split among the worker
    threads, and the 16 GEMMs then span all its tiles, with every BLAS thread. (2 threads, batch 128,
    ms, whole / blocked: 512 x 4x4 forward 60 / 52, weight gradient 59 / 67; 256 x 7x7 48 / 44 and
    53 / 61: within this machine's noise for the forward, ahead for the weight gradient.)
    """
    x = np.ascontiguousarray(x)
    n, c, h, wd = x.shape
    o = w.shape[1] if turned else w.shape[0]
    ph, pw = padding
    oh, ow = h + 2 * ph - 2, wd + 2 * pw - 2
    tile = tile or tile_for(c, o, oh, ow)
    k, transform = _slab_count(tile), _KERNELS[tile][1]
    th, tw = -(-oh // tile), -(-ow // tile)
    tiles = th * tw
    # a reused buffer: a fresh one would page-fault on first touch (8 ms for 512 x 512 kernels)
    u = weight_transform(w, out=_slabs("wino_u", o, c, w.dtype, k), turned=turned, tile=tile)
    has_bias = bias is not None
    b = np.ascontiguousarray(bias, dtype=x.dtype) if has_bias else np.zeros(1, dtype=x.dtype)
    if relu_pool:
        y = cpu_buffers.empty((n, o, oh // 2, ow // 2), x.dtype)
        finish = _output_transform_relu_pool
    else:
        y = cpu_buffers.empty((n, o, oh, ow), x.dtype)
        finish = _output_transform
    per_sample = k * (c + o) * tiles * x.itemsize
    if whole is None:
        whole = _whole_by_default(o, c, x.itemsize, block_bytes, k, blocks_of_u=2)
    if whole:
        for sl in batch_chunks(n, per_sample):
            lo0, t = sl.start, (sl.stop - sl.start) * tiles
            v = _v_slabs(tile, c, t, x.dtype, k)
            mm = _slabs("wino_m", o, t, x.dtype, k)
            log_gemm(GemmCall(o, c, t, False, tile == 2, x.dtype.str, True, k, False))
            parts = _split(sl.start, sl.stop, 4 * numba.get_num_threads())
            _workers.run(lambda lo, hi: transform(x[lo:hi], ph, pw, th, tw,
                                                  _v_chunk(v, tile, lo, hi, lo0, tiles)), parts)
            np.matmul(u, _v_ct(v, tile), out=mm)                # every BLAS thread
            _workers.run(lambda lo, hi: finish(_chunk_tiles(mm, lo, hi, lo0, tiles), b, has_bias,
                                               th, tw, y[lo:hi]), parts)
        return y

    def job(lo, hi):
        t = (hi - lo) * tiles
        v = _v_slabs(tile, c, t, x.dtype, k)         # per-thread buffers
        mm = _slabs("wino_m", o, t, x.dtype, k)
        transform(x[lo:hi], ph, pw, th, tw, v)
        np.matmul(u, _v_ct(v, tile), out=mm)                    # the k GEMMs, one call
        finish(mm, b, has_bias, th, tw, y[lo:hi])

    blocks = _blocks(n, per_sample, block_bytes)
    for lo, hi in blocks:     # for the GEMM floor of benchmarks/train_step.py
        log_gemm(GemmCall(o, c, (hi - lo) * tiles, False, tile == 2, x.dtype.str, True, k, True))
    _workers.run(job, blocks)
    return y


def conv2d_backward_data(gy, w, padding, block_bytes=None, whole=None, tile=None):
    """dx (N, C, H, W) of y = conv2d(x, w, stride 1, `padding`), given gy (N, O, OH, OW): the forward
    convolution of gy with the turned kernel w'[c, o] = w[o, c, ::-1, ::-1] and padding 2 - p."""
    return conv2d_forward(gy, w, (2 - padding[0], 2 - padding[1]), block_bytes=block_bytes, whole=whole,
                          turned=True, tile=tile)


# Blocks' partial weight gradients are summed in this many fixed groups (each group's blocks in turn,
# then the groups in order), so the sum's order depends on the shapes only, not on the thread count.
_DW_GROUPS = 8


def conv2d_backward_weight(gy, x, padding, block_bytes=None, whole=None, tile=None, bias_grad=None):
    """dW (O, C, 3, 3) of y = conv2d(x, w, stride 1, `padding`), given gy (N, O, OH, OW).

    bias_grad (a dict): also set bias_grad["db"] (O,) = sum of gy over samples and pixels, read off the
    transformed gradient: row 1 of A (F(2x2): [1, 1]; F(4x4): [1, 1, 1, 1]) sums a tile's rows, so
    dM[1, 1] = 1^T dY 1 is the tile's sum, and db is the sum of that slab over all tiles (per block in
    float64, the blocks' sums added in block order: the same for any thread count). This saves the
    separate pass over gy that NumPy's single-threaded sum took (0.9 ms of the reference CNN's step).

    Backpropagation through the forward's formula: dM = A dY A^T per tile, dU[k] (O, C) = sum over
    tiles of dM[k] (O, T) @ V[k]^T (T, C), dW = G^T dU G: 16 GEMMs of O x T x C multiply-adds instead of
    im2col's O x 4T x 9C. Same schedules as `conv2d_forward`: blocked (partial dU per group of blocks,
    summed in a fixed order) or, for large weights, whole chunks with every BLAS thread.
    """
    x = np.ascontiguousarray(x)
    gy = np.ascontiguousarray(gy)
    n, c, h, wd = x.shape
    o = gy.shape[1]
    ph, pw = padding
    tile = tile or tile_for(c, o, gy.shape[2], gy.shape[3])
    k, (_, transform, grad_transform, dw_transform) = _slab_count(tile), _KERNELS[tile]
    th, tw = -(-gy.shape[2] // tile), -(-gy.shape[3] // tile)
    tiles = th * tw
    per_sample = k * (c + o) * tiles * x.itemsize
    if whole is None:
        whole = _whole_by_default(o, c, x.itemsize, block_bytes, k)
    du = _slabs("wino_du", o, c, x.dtype, k)
    tile_sum = tile + 3           # slab (tile + 2) * 1 + 1: dM[1, 1]
    want_db = bias_grad is not None
    if whole:
        db = np.zeros(o)
        part = _slabs("wino_part", o, c, x.dtype, k)
        for sl in batch_chunks(n, per_sample):
            lo0, t = sl.start, (sl.stop - sl.start) * tiles
            v = _v_slabs(tile, c, t, x.dtype, k)
            dm = _slabs("wino_m", o, t, x.dtype, k)
            log_gemm(GemmCall(o, t, c, False, tile != 2, x.dtype.str, True, k, False))

            def transforms(lo, hi):
                transform(x[lo:hi], ph, pw, th, tw, _v_chunk(v, tile, lo, hi, lo0, tiles))
                grad_transform(gy[lo:hi], th, tw, _chunk_tiles(dm, lo, hi, lo0, tiles))
            _workers.run(transforms, _split(sl.start, sl.stop, 4 * numba.get_num_threads()))
            np.matmul(dm, _v_tc(v, tile), out=part if sl.start else du)   # every BLAS thread
            if sl.start:
                du += part
            if want_db:
                db += dm[tile_sum].sum(axis=1, dtype=np.float64)
    else:
        blocks = _blocks(n, per_sample, block_bytes)
        groups = _split(0, len(blocks), _DW_GROUPS)
        partial = [_slabs(f"wino_du{g}", o, c, x.dtype, k) for g in range(len(groups))]
        db_parts = np.zeros((len(blocks), o)) if want_db else None
        for lo, hi in blocks:
            log_gemm(GemmCall(o, (hi - lo) * tiles, c, False, tile != 2, x.dtype.str, True, k, True))

        def group(g0, g1):
            for g in range(g0, g1):
                acc = partial[g]
                part = _slabs("wino_part", o, c, x.dtype, k)
                for bi in range(*groups[g]):
                    lo, hi = blocks[bi]
                    t = (hi - lo) * tiles
                    v = _v_slabs(tile, c, t, x.dtype, k)         # per-thread buffers
                    dm = _slabs("wino_m", o, t, x.dtype, k)
                    transform(x[lo:hi], ph, pw, th, tw, v)
                    grad_transform(gy[lo:hi], th, tw, dm)
                    if want_db:
                        dm[tile_sum].sum(axis=1, dtype=np.float64, out=db_parts[bi])
                    np.matmul(dm, _v_tc(v, tile), out=acc if bi == groups[g][0] else part)
                    if bi != groups[g][0]:
                        acc += part
        _workers.run(group, [(g, g + 1) for g in range(len(groups))])
        du[...] = 0
        for g in range(len(groups)):
            du += partial[g]
        if want_db:
            db = db_parts.sum(axis=0)
    if want_db:
        bias_grad["db"] = db.astype(x.dtype)
    dw = np.empty((o, c, 3, 3), dtype=x.dtype)
    _workers.run(lambda lo, hi: dw_transform(du, dw, lo, hi), _row_blocks(o, c))
    return dw
