"""The tile transforms of Winograd F(4x4, 3x3), for the drivers in `cpu_numba_winograd.py`.

A 4x4 block of outputs needs a 6x6 tile d of the padded input plane:

    Y = A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A           (.*: element-wise, 6x6)

    B^T = [[4,  0, -5,  0, 1, 0],     G = [[ 1/4,     0,    0],     A^T = [[1, 1,  1, 1,  1, 0],
           [0, -4, -4,  1, 1, 0],          [-1/6, -1/6, -1/6],            [0, 1, -1, 2, -2, 0],
           [0,  4, -4, -1, 1, 0],          [-1/6,  1/6, -1/6],            [0, 1,  1, 4,  4, 0],
           [0, -2, -1,  2, 1, 0],          [1/24, 1/12,  1/6],            [0, 1, -1, 8, -8, 1]]
           [0,  2, -1, -2, 1, 0],          [1/24, -1/12, 1/6],
           [0,  4,  0, -5, 0, 1]]          [   0,    0,    1]]

(Lavin & Gray 2016, interpolation points 0, +-1, +-2 and infinity). 36 GEMMs of O x C x T multiply-adds
per 16 outputs replace F(2x2, 3x3)'s 16 per 4 outputs: 1.78x fewer, 4x fewer than im2col. The price is
rounding: the transforms' coefficients (up to 8, and 1/24) make the float32 error about 8x that of a
GEMM (relative RMS 1.4e-6 against 1.7e-7, ResNet-18 shapes), which training does not notice.

Each kernel mirrors its F(2x2, 3x3) twin in `cpu_numba_winograd.py` (same arguments, same layout
U/V/M[6i + j, channel, tile]); each 1-D transform is one helper below, applied to rows, then columns.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["weight_transform", "input_transform", "output_blocks", "grad_output_transform",
           "weight_grad_transform"]


# The integer coefficients are float32 constants: an integer literal would promote float32 data to
# float64 (Numba follows NumPy's scalar rules), and 2, 4, 5 and 8 are exact in either precision.
@njit(cache=True, nogil=True, inline="always")
def _bt(d0, d1, d2, d3, d4, d5):
    """B^T d for a 6-vector d (the input transform, one direction)."""
    two, four, five = np.float32(2), np.float32(4), np.float32(5)
    s = d4 - d2
    t = d3 - d1
    return (four * d0 - five * d2 + d4, (d3 + d4) - four * (d1 + d2), (d4 - d3) + four * (d1 - d2),
            s + two * t, s - two * t, four * d1 - five * d3 + d5)


@njit(cache=True, nogil=True, inline="always")
def _at(m0, m1, m2, m3, m4, m5):
    """A^T m for a 6-vector m (the output transform, one direction)."""
    two, four, eight = np.float32(2), np.float32(4), np.float32(8)
    a = m1 + m2
    b = m1 - m2
    c = m3 + m4
    d = m3 - m4
    return m0 + a + c, b + two * d, a + four * c, b + eight * d + m5


@njit(cache=True, nogil=True, inline="always")
def _a(y0, y1, y2, y3):
    """A y for a 4-vector y: the gradient of `_at` (the gradient-output transform, one direction)."""
    two, four, eight = np.float32(2), np.float32(4), np.float32(8)
    a = y0 + y2
    b = y1 + y3
    c = y0 + four * y2
    d = two * y1 + eight * y3
    return y0, a + b, a - b, c + d, c - d, y3


@njit(cache=True, nogil=True, inline="always")
def _g(g0, g1, g2):
    """G g for a 3-vector g (the weight transform, one direction; float64)."""
    s = (g0 + g2) / 6.0
    t = g1 / 6.0
    p = g0 / 24.0 + g2 / 6.0
    q = g1 / 12.0
    return g0 / 4.0, -s - t, t - s, p + q, p - q, g2


@njit(cache=True, nogil=True, inline="always")
def _gt(u0, u1, u2, u3, u4, u5):
    """G^T u for a 6-vector u: the gradient of `_g` (float64)."""
    return (u0 / 4.0 - (u1 + u2) / 6.0 + (u3 + u4) / 24.0, (u2 - u1) / 6.0 + (u3 - u4) / 12.0,
            (u3 + u4 - u1 - u2) / 6.0 + u5)


@njit(cache=True, nogil=True)
def weight_transform(wf, taps, turned, lo, hi, u):
    """Rows lo..hi of U (36, rows, cols): U[6i + j, row, col] = (G g G^T)[i, j], g = wf[row, col] (taps in
    `taps`; for `turned` g = wf[col, row]), in float64, rounded once on the store."""
    gg = np.empty((6, 3))
    for oc in range(lo, hi):
        for ci in range(u.shape[2]):
            g = wf[ci, oc] if turned else wf[oc, ci]
            for col in range(3):            # G g, column by column
                r = _g(np.float64(g[taps[col]]), np.float64(g[taps[3 + col]]), np.float64(g[taps[6 + col]]))
                for i in range(6):
                    gg[i, col] = r[i]
            for i in range(6):              # then each row of G g times G^T
                r = _g(gg[i, 0], gg[i, 1], gg[i, 2])
                for j in range(6):
                    u[6 * i + j, oc, ci] = r[j]


@njit(cache=True, nogil=True)
def input_transform(x, ph, pw, th, tw, v):
    """v[6i + j, c, s th tw + a tw + b] = (B^T d B)[i, j], d = x_pad[s, c, 4a:4a+6, 4b:4b+6]: per plane and
    row a of tiles, the six rows of B^T d over the padded width, then each tile's six columns times B."""
    n, c, h, w = x.shape
    wp = 4 * tw + 2
    zero = x.dtype.type(0)
    rows = np.zeros((6, wp), dtype=x.dtype)       # zero borders = the padding columns
    for s in range(n):
        base = s * th * tw
        for ch in range(c):
            plane = x[s, ch]
            for a in range(th):
                r0 = 4 * a - ph
                in0, in1, in2 = 0 <= r0 < h, 0 <= r0 + 1 < h, 0 <= r0 + 2 < h
                in3, in4, in5 = 0 <= r0 + 3 < h, 0 <= r0 + 4 < h, 0 <= r0 + 5 < h
                for q in range(w):
                    e = _bt(plane[r0, q] if in0 else zero, plane[r0 + 1, q] if in1 else zero,
                            plane[r0 + 2, q] if in2 else zero, plane[r0 + 3, q] if in3 else zero,
                            plane[r0 + 4, q] if in4 else zero, plane[r0 + 5, q] if in5 else zero)
                    rows[0, q + pw] = e[0]
                    rows[1, q + pw] = e[1]
                    rows[2, q + pw] = e[2]
                    rows[3, q + pw] = e[3]
                    rows[4, q + pw] = e[4]
                    rows[5, q + pw] = e[5]
                t0 = base + a * tw
                for i in range(6):
                    row = rows[i]
                    for b in range(tw):
                        q = 4 * b
                        e = _bt(row[q], row[q + 1], row[q + 2], row[q + 3], row[q + 4], row[q + 5])
                        v[6 * i, ch, t0 + b] = e[0]
                        v[6 * i + 1, ch, t0 + b] = e[1]
                        v[6 * i + 2, ch, t0 + b] = e[2]
                        v[6 * i + 3, ch, t0 + b] = e[3]
                        v[6 * i + 4, ch, t0 + b] = e[4]
                        v[6 * i + 5, ch, t0 + b] = e[5]


@njit(cache=True, nogil=True)
def output_blocks(m, ch, b0, out):
    """out[4r + q, t] = (A^T m A)[r, q] + b0 for every tile t of output channel ch (m[i, j] = m[6i + j, ch, t]):
    A^T m column by column, then each of its 4 rows times A; one loop over the contiguous tiles."""
    for t in range(m.shape[2]):
        c0 = _at(m[0, ch, t], m[6, ch, t], m[12, ch, t], m[18, ch, t], m[24, ch, t], m[30, ch, t])
        c1 = _at(m[1, ch, t], m[7, ch, t], m[13, ch, t], m[19, ch, t], m[25, ch, t], m[31, ch, t])
        c2 = _at(m[2, ch, t], m[8, ch, t], m[14, ch, t], m[20, ch, t], m[26, ch, t], m[32, ch, t])
        c3 = _at(m[3, ch, t], m[9, ch, t], m[15, ch, t], m[21, ch, t], m[27, ch, t], m[33, ch, t])
        c4 = _at(m[4, ch, t], m[10, ch, t], m[16, ch, t], m[22, ch, t], m[28, ch, t], m[34, ch, t])
        c5 = _at(m[5, ch, t], m[11, ch, t], m[17, ch, t], m[23, ch, t], m[29, ch, t], m[35, ch, t])
        for r in range(4):
            y = _at(c0[r], c1[r], c2[r], c3[r], c4[r], c5[r])
            out[4 * r, t] = y[0] + b0
            out[4 * r + 1, t] = y[1] + b0
            out[4 * r + 2, t] = y[2] + b0
            out[4 * r + 3, t] = y[3] + b0


@njit(cache=True, nogil=True)
def grad_output_transform(gy, th, tw, dm):
    """dm[6i + j, o, s th tw + a tw + b] = (A dY A^T)[i, j] for the 4x4 block dY = gy[s, o, 4a:4a+4, 4b:4b+4]
    (zeros beyond OH, OW): the gradient of M in Y = A^T M A."""
    n, o, oh, ow = gy.shape
    zero = gy.dtype.type(0)
    blk = np.empty((4, 4), dtype=gy.dtype)
    for s in range(n):
        base = s * th * tw
        for ch in range(o):
            for a in range(th):
                t0 = base + a * tw
                for b in range(tw):
                    for r in range(4):
                        i = 4 * a + r
                        for q in range(4):
                            j = 4 * b + q
                            blk[r, q] = gy[s, ch, i, j] if i < oh and j < ow else zero
                    c0 = _a(blk[0, 0], blk[1, 0], blk[2, 0], blk[3, 0])      # A dY, column by column
                    c1 = _a(blk[0, 1], blk[1, 1], blk[2, 1], blk[3, 1])
                    c2 = _a(blk[0, 2], blk[1, 2], blk[2, 2], blk[3, 2])
                    c3 = _a(blk[0, 3], blk[1, 3], blk[2, 3], blk[3, 3])
                    t = t0 + b
                    for i in range(6):                                      # each row times A^T
                        e = _a(c0[i], c1[i], c2[i], c3[i])
                        dm[6 * i, ch, t] = e[0]
                        dm[6 * i + 1, ch, t] = e[1]
                        dm[6 * i + 2, ch, t] = e[2]
                        dm[6 * i + 3, ch, t] = e[3]
                        dm[6 * i + 4, ch, t] = e[4]
                        dm[6 * i + 5, ch, t] = e[5]


@njit(cache=True, nogil=True)
def weight_grad_transform(du, dw, lo, hi):
    """dw[o, c] = G^T du[:, o, c] G (3 x 3 from 6 x 6) for o in lo..hi, in float64: the gradient of U = G g G^T."""
    k, o, c = du.shape
    r = np.empty((6, 3))
    for oc in range(lo, hi):
        for ci in range(c):
            for i in range(6):                  # each row of du times G
                e = _gt(np.float64(du[6 * i, oc, ci]), np.float64(du[6 * i + 1, oc, ci]),
                        np.float64(du[6 * i + 2, oc, ci]), np.float64(du[6 * i + 3, oc, ci]),
                        np.float64(du[6 * i + 4, oc, ci]), np.float64(du[6 * i + 5, oc, ci]))
                r[i, 0] = e[0]
                r[i, 1] = e[1]
                r[i, 2] = e[2]
            for col in range(3):                # then G^T times each column
                e = _gt(r[0, col], r[1, col], r[2, col], r[3, col], r[4, col], r[5, col])
                dw[oc, ci, 0, col] = e[0]
                dw[oc, ci, 1, col] = e[1]
                dw[oc, ci, 2, col] = e[2]
