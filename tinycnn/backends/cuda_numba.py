"""The Numba CUDA kernel family: the kernels of ``kernels/*.cu`` written again with ``numba.cuda``.

Same algorithms, same launch shapes, same results as the CUDA C family (``cuda_cupy.py``) to float32
tolerance (the dropout masks are bit-identical: the same Philox4x32-10 stream). Arrays arrive as
CuPy arrays and are handed to Numba through ``__cuda_array_interface__`` without a stream
synchronisation (``sync=False``); kernels run on CuPy's current stream, so the two families mix freely
and a training step can be captured as one CUDA graph.

The kernels take flat 1-D arrays and int64/float64 scalars; `KERNEL_SIGNATURES` lists one float32 and
one float64 signature per kernel, which the tests compile to PTX for real GPUs (``cuda.compile_ptx``)
and run under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) against the NumPy reference. Under
the simulator the launchers accept NumPy arrays.
"""
from __future__ import annotations

import math

import numpy as np

try:
    from numba import cuda, float32, float64, int32, int64, uint32, uint64
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the 'numba' GPU kernel family needs numba-cuda: "
                      "pip install 'tinycnn[cuda13]' (CUDA 13) or 'tinycnn[cuda12]' (CUDA 12)") from exc


def _check_numpy_is_supported():
    """Fail at load time, with the fix, where numba-cuda cannot compile any kernel with this NumPy.

    numba-cuda up to at least 0.30.4 registers an overload for ``np.row_stack``, which NumPy 2.5
    removed; the first kernel compile then dies with an AttributeError deep inside numba-cuda.
    """
    import importlib

    from numba import config

    if config.ENABLE_CUDASIM:
        return   # the simulator compiles nothing
    try:
        importlib.import_module("numba.cuda.np.arrayobj")
    except ModuleNotFoundError:   # other numba-cuda layouts: nothing to check
        return
    except AttributeError as exc:
        from importlib.metadata import version
        raise ImportError(f"numba-cuda {version('numba-cuda')} cannot compile kernels with NumPy "
                          f"{np.__version__} ({exc}): pip install 'numpy<2.5', or a numba-cuda that "
                          "supports your NumPy") from exc


_check_numpy_is_supported()

from . import cuda_common, cupy_module, register
from .cuda_common import (THREADS, check_flat_buffers, conv_out_size, float_suffix, gemm_entry, gemm_operands,
                          gemm_policy, gemm_split, grid_for, philox_state, pool_out_size)

__all__ = ["KERNEL_SIGNATURES", "philox_raw"]

CE_THREADS = 128    # threads per row in the cross-entropy kernels (a power of two)
BN_THREADS = 256    # threads per channel in the batch-norm kernels (a power of two)
GEMM_T = 16         # GEMM: blocks of 16 x 16 threads; tiles (BM = BN, BK) as in kernels/gemm.cu:
GEMM_TILES = {"gemm_f32": (128, 8), "gemm_f32_small": (64, 16), "gemm_f64": (64, 16)}


# =========================================================================== kernels
@cuda.jit(cache=True)
def im2col_kernel(x, cols, N, C, H, W, kH, kW, OH, OW, sh, sw, ph, pw, dh, dw, layout):
    """cols (layout 0: N,C,kH,kW,OH,OW; layout 1: C,kH,kW,N,OH,OW) from x (N,C,H,W); zero padding.

    One thread per (n, c, oh, ow) writes that position's kH x kW taps (as kernels/im2col.cu).
    """
    P = OH * OW
    tap_stride = P if layout == 0 else N * P
    for i in range(cuda.grid(1), N * C * P, cuda.gridsize(1)):
        nc = i // P
        p = i - nc * P
        n = nc // C
        c = nc - n * C
        oh = p // OW
        ow = p - oh * OW
        if layout == 0:
            j = nc * kH * kW * P + p
        else:
            j = c * kH * kW * N * P + n * P + p
        for kh in range(kH):
            h = oh * sh - ph + kh * dh
            for kw in range(kW):
                w = ow * sw - pw + kw * dw
                if h >= 0 and h < H and w >= 0 and w < W:
                    cols[j] = x[(nc * H + h) * W + w]
                else:
                    cols[j] = 0
                j += tap_stride


@cuda.jit(cache=True)
def col2im_kernel(cols, dx, N, C, H, W, kH, kW, OH, OW, sh, sw, ph, pw, dh, dw, layout):
    """Gather: dx[n,c,h,w] = sum over the taps (kh, kw order) of the cols entries that read x[n,c,h,w]."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = i % W
        h = (i // W) % H
        c = (i // (W * H)) % C
        n = i // (W * H * C)
        acc = dx.dtype.type(0)
        for kh in range(kH):
            hh = h + ph - kh * dh
            if hh < 0:
                break
            if hh % sh != 0:
                continue
            oh = hh // sh
            if oh >= OH:
                continue
            for kw in range(kW):
                ww = w + pw - kw * dw
                if ww < 0:
                    break
                if ww % sw != 0:
                    continue
                ow = ww // sw
                if ow >= OW:
                    continue
                if layout == 0:
                    j = (((n * C + c) * kH + kh) * kW + kw) * OH * OW
                else:
                    j = (((c * kH + kh) * kW + kw) * N + n) * OH * OW
                acc += cols[j + oh * OW + ow]
        dx[i] = acc


@cuda.jit(cache=True)
def max_pool_fwd_kernel(x, y, idx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw):
    """y = window max (padding never chosen, first maximum, a NaN replaces the maximum); idx = h * W + w."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ow = i % OW
        oh = (i // OW) % OH
        base = (i // (OH * OW)) * H * W
        best = y.dtype.type(0)
        bidx = -1
        for kh in range(kH):
            h = oh * sh - ph + kh
            if h < 0 or h >= H:
                continue
            for kw in range(kW):
                w = ow * sw - pw + kw
                if w < 0 or w >= W:
                    continue
                v = x[base + h * W + w]
                if bidx < 0 or v > best or v != v:
                    best = v
                    bidx = h * W + w
        y[i] = best
        idx[i] = bidx


@cuda.jit(cache=True)
def max_pool_bwd_gather_kernel(gy, idx, dx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw):
    """dx[h, w] = sum of gy over the windows covering (h, w) whose argmax is (h, w); needs the geometry."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = i % W
        h = (i // W) % H
        base = (i // (H * W)) * OH * OW
        me = h * W + w
        lo = h + ph - kH + 1
        oh_lo = 0 if lo <= 0 else (lo + sh - 1) // sh
        oh_hi = min((h + ph) // sh, OH - 1)
        lo = w + pw - kW + 1
        ow_lo = 0 if lo <= 0 else (lo + sw - 1) // sw
        ow_hi = min((w + pw) // sw, OW - 1)
        acc = dx.dtype.type(0)
        for oh in range(oh_lo, oh_hi + 1):
            for ow in range(ow_lo, ow_hi + 1):
                j = base + oh * OW + ow
                if idx[j] == me:
                    acc += gy[j]
        dx[i] = acc


@cuda.jit(cache=True)
def max_pool_bwd_plane_kernel(gy, idx, dx, NC, HW, OHW):
    """One thread per (n, c) plane: dx[idx[j]] += gy[j] in output order (deterministic, no geometry)."""
    for p in range(cuda.grid(1), NC, cuda.gridsize(1)):
        for j in range(HW):
            dx[p * HW + j] = 0
        for j in range(OHW):
            dx[p * HW + idx[p * OHW + j]] += gy[p * OHW + j]


@cuda.jit(cache=True)
def avg_pool_fwd_kernel(x, y, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw):
    """y = window sum / (kH * kW) (count_include_pad=True)."""
    inv = y.dtype.type(1) / y.dtype.type(kH * kW)
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        ow = i % OW
        oh = (i // OW) % OH
        base = (i // (OH * OW)) * H * W
        acc = y.dtype.type(0)
        for kh in range(kH):
            h = oh * sh - ph + kh
            if h < 0 or h >= H:
                continue
            for kw in range(kW):
                w = ow * sw - pw + kw
                if w >= 0 and w < W:
                    acc += x[base + h * W + w]
        y[i] = acc * inv


@cuda.jit(cache=True)
def avg_pool_bwd_kernel(gy, dx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw):
    """dx[h, w] = sum of gy over the windows covering (h, w) / (kH * kW) (gather)."""
    inv = dx.dtype.type(1) / dx.dtype.type(kH * kW)
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        w = i % W
        h = (i // W) % H
        base = (i // (H * W)) * OH * OW
        lo = h + ph - kH + 1
        oh_lo = 0 if lo <= 0 else (lo + sh - 1) // sh
        oh_hi = min((h + ph) // sh, OH - 1)
        lo = w + pw - kW + 1
        ow_lo = 0 if lo <= 0 else (lo + sw - 1) // sw
        ow_hi = min((w + pw) // sw, OW - 1)
        acc = dx.dtype.type(0)
        for oh in range(oh_lo, oh_hi + 1):
            for ow in range(ow_lo, ow_hi + 1):
                acc += gy[base + oh * OW + ow]
        dx[i] = acc * inv


@cuda.jit(cache=True)
def bias_relu_kernel(y, b, out, C, inner, has_bias):
    """out = relu(y + b[c]), c = (i // inner) % C; NaN propagates."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        v = y[i]
        if has_bias:
            v += b[(i // inner) % C]
        out[i] = v if (v > 0 or v != v) else 0


@cuda.jit(device=True, inline=True)
def philox4x32_10(counter, seed):
    """Philox4x32-10 (Salmon et al., SC'11) of a 64-bit counter and key; 32-bit words held in uint64."""
    m32 = uint64(0xFFFFFFFF)
    c0 = counter & m32
    c1 = counter >> uint64(32)
    c2 = uint64(0)
    c3 = uint64(0)
    k0 = seed & m32
    k1 = seed >> uint64(32)
    for r in range(10):
        if r > 0:
            k0 = (k0 + uint64(0x9E3779B9)) & m32
            k1 = (k1 + uint64(0xBB67AE85)) & m32
        p0 = uint64(0xD2511F53) * c0
        p1 = uint64(0xCD9E8D57) * c2
        n0 = (p1 >> uint64(32)) ^ c1 ^ k0
        c1 = p1 & m32
        c2 = (p0 >> uint64(32)) ^ c3 ^ k1
        c3 = p0 & m32
        c0 = n0
    return c0, c1, c2, c3


@cuda.jit(cache=True)
def philox_raw_kernel(counters, seed, out):
    for i in range(cuda.grid(1), counters.size, cuda.gridsize(1)):
        r0, r1, r2, r3 = philox4x32_10(counters[i], seed)
        out[4 * i] = uint32(r0)
        out[4 * i + 1] = uint32(r1)
        out[4 * i + 2] = uint32(r2)
        out[4 * i + 3] = uint32(r3)


@cuda.jit(cache=True)
def dropout_kernel(out, p, scale, state):
    """out[e] = scale if word (e % 4) of Philox(offset + e // 4, seed) * 2^-32 >= p else 0."""
    seed = state[0]
    offset = state[1]
    n = out.size
    keep = out.dtype.type(scale)
    for g in range(cuda.grid(1), (n + 3) // 4, cuda.gridsize(1)):
        r0, r1, r2, r3 = philox4x32_10(offset + uint64(g), seed)
        e = 4 * g
        for k in range(4):
            if e + k < n:
                word = r0 if k == 0 else (r1 if k == 1 else (r2 if k == 2 else r3))
                out[e + k] = keep if float64(word) * 2.3283064365386962890625e-10 >= p else 0


@cuda.jit(cache=True)
def philox_advance_kernel(state, by):
    if cuda.grid(1) == 0:
        state[1] += by


@cuda.jit(cache=True)
def adam_kernel(p, g, m, v, step_host, step_dev, use_step_dev, lr, b1, b2, eps, wd, decoupled):
    """PyTorch Adam (decoupled=0, L2: g += wd p) / AdamW (decoupled=1: p *= 1 - lr wd), in place:
    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)."""
    t = float64(step_dev[0]) if use_step_dev else step_host
    bc1 = 1.0 - b1 ** t
    bc2 = 1.0 - b2 ** t
    T = p.dtype.type
    step_size = T(lr / bc1)
    sqrt_bc2 = T(bc2 ** 0.5)
    tb1, tb2, ob1, ob2 = T(b1), T(b2), T(1.0 - b1), T(1.0 - b2)
    teps, twd, decay = T(eps), T(wd), T(1.0 - lr * wd)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi = p[i]
        gi = g[i]
        if wd != 0.0:
            if decoupled:
                pi = pi * decay
            else:
                gi = gi + twd * pi
        mi = tb1 * m[i] + ob1 * gi
        vi = tb2 * v[i] + ob2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - step_size * (mi / (vi ** T(0.5) / sqrt_bc2 + teps))


@cuda.jit(cache=True)
def sgd_kernel(p, g, buf, lr, mu, tau, wd, nesterov, maximize, first):
    """PyTorch's SGD in one pass (as kernels/elementwise.cu): d = +-g (+ wd p); with momentum the buffer
    becomes d (first step) or mu b + (1 - tau) d, and d = b (or d + mu b, Nesterov); p -= lr d."""
    T = p.dtype.type
    tlr, tmu, otau, twd = T(lr), T(mu), T(1.0 - tau), T(wd)
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        pi = p[i]
        d = -g[i] if maximize else g[i]
        if wd != 0.0:
            d = d + twd * pi
        if mu != 0.0:
            b = d if first else tmu * buf[i] + otau * d
            buf[i] = b
            d = d + tmu * b if nesterov else b
        p[i] = pi - tlr * d


@cuda.jit(device=True, inline=True)
def _block_sum(val, sh, nthreads):
    """Sum of `val` over the block with a fixed tree in shared memory (deterministic)."""
    t = cuda.threadIdx.x
    sh[t] = val
    cuda.syncthreads()
    s = nthreads // 2
    while s > 0:
        if t < s:
            sh[t] += sh[t + s]
        cuda.syncthreads()
        s //= 2
    r = sh[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True, inline=True)
def _block_max(val, sh, nthreads):
    t = cuda.threadIdx.x
    sh[t] = val
    cuda.syncthreads()
    s = nthreads // 2
    while s > 0:
        if t < s:
            sh[t] = max(sh[t], sh[t + s])
        cuda.syncthreads()
        s //= 2
    r = sh[0]
    cuda.syncthreads()
    return r


@cuda.jit(cache=True)
def ce_fwd_kernel(z, target, weight, has_weight, loss, logp, N, C, ls):
    """One block per row: logp = (z - m) - log(sum exp(z - m)); loss = (1-e) w_t (-logp_t) + e/C sum w_c (-logp_c)."""
    sh = cuda.shared.array(CE_THREADS, float64)
    T = z.dtype.type
    for row in range(cuda.blockIdx.x, N, cuda.gridDim.x):
        base = row * C
        m = -math.inf
        for j in range(cuda.threadIdx.x, C, CE_THREADS):
            m = max(m, float64(z[base + j]))
        m = _block_max(m, sh, CE_THREADS)
        tm = T(m)
        s = 0.0
        for j in range(cuda.threadIdx.x, C, CE_THREADS):
            s += math.exp(float64(z[base + j] - tm))
        s = _block_sum(s, sh, CE_THREADS)
        lse = T(math.log(s))
        swl = 0.0
        for j in range(cuda.threadIdx.x, C, CE_THREADS):
            lp = (z[base + j] - tm) - lse
            logp[base + j] = lp
            swl += (float64(weight[j]) if has_weight else 1.0) * float64(lp)
        if ls != 0.0:
            swl = _block_sum(swl, sh, CE_THREADS)
        if cuda.threadIdx.x == 0:
            t = target[row]
            if t < 0 or t >= C:
                out = math.nan
            else:
                wt = float64(weight[t]) if has_weight else 1.0
                out = -(1.0 - ls) * wt * float64((z[base + t] - tm) - lse)
                if ls != 0.0:
                    out -= ls / C * swl
            loss[row] = out
        cuda.syncthreads()


@cuda.jit(cache=True)
def ce_bwd_kernel(logp, target, weight, has_weight, gscale, dz, N, C, ls):
    """dz_j = gs (p_j S - (1-e) w_t [j = t] - e/C w_j),  S = (1-e) w_t + e/C sum_c w_c."""
    sh = cuda.shared.array(CE_THREADS, float64)
    sumw = float64(C)
    if has_weight and ls != 0.0:
        s = 0.0
        for j in range(cuda.threadIdx.x, C, CE_THREADS):
            s += float64(weight[j])
        sumw = _block_sum(s, sh, CE_THREADS)
    for row in range(cuda.blockIdx.x, N, cuda.gridDim.x):
        t = target[row]
        if t >= 0 and t < C:
            wt = float64(weight[t]) if has_weight else 1.0
        else:
            wt = math.nan
        S = (1.0 - ls) * wt + ls / C * sumw
        gs = float64(gscale[row])
        base = row * C
        for j in range(cuda.threadIdx.x, C, CE_THREADS):
            wj = float64(weight[j]) if has_weight else 1.0
            d = math.exp(float64(logp[base + j])) * S - ls / C * wj
            if j == t:
                d -= (1.0 - ls) * wt
            dz[base + j] = gs * d


@cuda.jit(cache=True)
def bn_fwd_kernel(x, gamma, has_gamma, beta, has_beta, y, mean_out, invstd_out, N, C, inner, eps):
    """One block per channel: mean, biased var (two passes, double), y = (x - mean) invstd gamma + beta."""
    sh = cuda.shared.array(BN_THREADS, float64)
    T = x.dtype.type
    M = N * inner
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        s = 0.0
        for j in range(cuda.threadIdx.x, M, BN_THREADS):
            s += float64(x[((j // inner) * C + c) * inner + j % inner])
        mean = _block_sum(s, sh, BN_THREADS) / M
        q = 0.0
        for j in range(cuda.threadIdx.x, M, BN_THREADS):
            d = float64(x[((j // inner) * C + c) * inner + j % inner]) - mean
            q += d * d
        invstd = 1.0 / (_block_sum(q, sh, BN_THREADS) / M + eps) ** 0.5
        tm = T(mean)
        ti = T(invstd)
        gc = gamma[c] if has_gamma else T(1)
        bc = beta[c] if has_beta else T(0)
        for j in range(cuda.threadIdx.x, M, BN_THREADS):
            k = ((j // inner) * C + c) * inner + j % inner
            y[k] = (x[k] - tm) * ti * gc + bc
        if cuda.threadIdx.x == 0:
            mean_out[c] = tm
            invstd_out[c] = ti


@cuda.jit(cache=True)
def bn_bwd_kernel(gy, x, gamma, has_gamma, mean, invstd, dx, dgamma, dbeta, N, C, inner):
    """dbeta = sum gy; dgamma = sum gy xhat; dx = gamma invstd (gy - dbeta/M - xhat dgamma/M)."""
    sa = cuda.shared.array(BN_THREADS, float64)
    M = N * inner
    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):
        mu = float64(mean[c])
        istd = float64(invstd[c])
        sg = 0.0
        sgx = 0.0
        for j in range(cuda.threadIdx.x, M, BN_THREADS):
            k = ((j // inner) * C + c) * inner + j % inner
            g = float64(gy[k])
            sg += g
            sgx += g * (float64(x[k]) - mu) * istd
        sg = _block_sum(sg, sa, BN_THREADS)
        sgx = _block_sum(sgx, sa, BN_THREADS)
        scale = (float64(gamma[c]) if has_gamma else 1.0) * istd
        a = sg / M
        b = sgx / M
        for j in range(cuda.threadIdx.x, M, BN_THREADS):
            k = ((j // inner) * C + c) * inner + j % inner
            xh = (float64(x[k]) - mu) * istd
            dx[k] = scale * (float64(gy[k]) - a - xh * b)
        if cuda.threadIdx.x == 0:
            dgamma[c] = sgx
            dbeta[c] = sg


def _make_gemm(nbtype, BM, BK):
    """C[b] (M, N) = A[b] (M, K) @ B[b] (K, N): the batched, strided GEMM of kernels/gemm.cu.

    Flat buffers with explicit strides in elements (batch strides sAb, sBb, sCb, 0 = broadcast; row
    strides lda, ldb, ldc; unit column stride). A BM x BM tile per 16 x 16-thread block: A's and B's
    BM x BK / BK x BM slices are staged in shared memory; each thread keeps an R x R block of C
    (R = BM / 16) in registers at rows ty + 16 i and columns tx + 16 j (conflict-free shared reads,
    coalesced stores), loading its R values of A and R of B once per k.
    Split-K as in gemm.cu: gridDim.z = batch * S; block z works on sample z // S and K slice z % S,
    and with S > 1 writes a contiguous (S, batch, M, N) workspace that gemm_reduce_kernel adds up.
    """
    R = BM // GEMM_T

    @cuda.jit
    def gemm_kernel(A, B, Cm, M, N, K, kc, S, sAb, lda, sBb, ldb, sCb, ldc):
        sA = cuda.shared.array((BK, BM), nbtype)
        sB = cuda.shared.array((BK, BM), nbtype)
        acc = cuda.local.array((R, R), nbtype)
        av = cuda.local.array(R, nbtype)
        bv = cuda.local.array(R, nbtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * GEMM_T + tx
        row0 = cuda.blockIdx.y * BM
        col0 = cuda.blockIdx.x * BM
        b = cuda.blockIdx.z // S
        s = cuda.blockIdx.z % S
        k_lo = s * kc
        k_hi = min(K, k_lo + kc)
        a0 = b * sAb
        b0 = b * sBb
        if S == 1:
            c0 = b * sCb
            ldo = ldc
        else:
            c0 = (s * (cuda.gridDim.z // S) + b) * M * N
            ldo = N
        for i in range(R):
            for j in range(R):
                acc[i, j] = 0
        for k0 in range(k_lo, k_hi, BK):
            for e in range(tid, BM * BK, GEMM_T * GEMM_T):
                r = e // BK
                c = e % BK
                if row0 + r < M and k0 + c < k_hi:
                    sA[c, r] = A[a0 + (row0 + r) * lda + k0 + c]
                else:
                    sA[c, r] = 0
                r = e // BM
                c = e % BM
                if k0 + r < k_hi and col0 + c < N:
                    sB[r, c] = B[b0 + (k0 + r) * ldb + col0 + c]
                else:
                    sB[r, c] = 0
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(R):
                    av[i] = sA[kk, ty + GEMM_T * i]
                    bv[i] = sB[kk, tx + GEMM_T * i]
                for i in range(R):
                    for j in range(R):
                        acc[i, j] += av[i] * bv[j]
            cuda.syncthreads()
        for i in range(R):
            r = row0 + ty + GEMM_T * i
            if r < M:
                for j in range(R):
                    c = col0 + tx + GEMM_T * j
                    if c < N:
                        Cm[c0 + r * ldo + c] = acc[i, j]
    return gemm_kernel


@cuda.jit
def gemm_reduce_kernel(W, Cm, S, batch, M, N, sCb, ldc):
    """Cm[b, r, c] = sum over s = 0..S-1 of W[s, b, r, c], in that order (split-K's second pass)."""
    total = batch * M * N
    for i in range(cuda.grid(1), total, cuda.gridsize(1)):
        acc = W[i]
        for s in range(1, S):
            acc += W[s * total + i]
        Cm[(i // (M * N)) * sCb + ((i // N) % M) * ldc + i % N] = acc


GEMM_KERNELS = {name: _make_gemm(float64 if name == "gemm_f64" else float32, bm, bk)
                for name, (bm, bk) in GEMM_TILES.items()}


def _sigs():
    """name -> (kernel, [float32 signature, float64 signature]) for compile_ptx in the tests."""
    out = {}
    I = int64
    for suf, T in (("f32", float32), ("f64", float64)):
        A = T[::1]
        table = {
            "im2col": (im2col_kernel, (A, A) + (I,) * 15),
            "col2im": (col2im_kernel, (A, A) + (I,) * 15),
            "max_pool2d_forward": (max_pool_fwd_kernel, (A, A, int32[::1]) + (I,) * 11),
            "max_pool2d_backward_gather": (max_pool_bwd_gather_kernel, (A, int32[::1], A) + (I,) * 11),
            "max_pool2d_backward_plane": (max_pool_bwd_plane_kernel, (A, int32[::1], A, I, I, I)),
            "avg_pool2d_forward": (avg_pool_fwd_kernel, (A, A) + (I,) * 11),
            "avg_pool2d_backward": (avg_pool_bwd_kernel, (A, A) + (I,) * 11),
            "bias_relu": (bias_relu_kernel, (A, A, A, I, I, I)),
            "dropout_mask": (dropout_kernel, (A, float64, float64, uint64[::1])),
            "sgd_step": (sgd_kernel, (A, A, A, float64, float64, float64, float64, I, I, I)),
            "adam_step": (adam_kernel, (A, A, A, A, float64, int64[::1], I, float64, float64, float64, float64,
                                        float64, I)),
            "cross_entropy_forward": (ce_fwd_kernel, (A, int64[::1], A, I, A, A, I, I, float64)),
            "cross_entropy_backward": (ce_bwd_kernel, (A, int64[::1], A, I, A, A, I, I, float64)),
            "batch_norm_forward_train": (bn_fwd_kernel, (A, A, I, A, I, A, A, A, I, I, I, float64)),
            "batch_norm_backward": (bn_bwd_kernel, (A, A, A, I, A, A, A, A, A, I, I, I)),
            "gemm_reduce": (gemm_reduce_kernel, (A, A) + (I,) * 6),
        }
        for name, (k, sig) in table.items():
            out.setdefault(name, (k, []))[1].append(sig)
    for name, kern in GEMM_KERNELS.items():   # one kernel per tile and dtype: one signature each
        A = float64[::1] if name.endswith("f64") else float32[::1]
        out[name] = (kern, [(A, A, A) + (int64,) * 11])
    out["philox_advance"] = (philox_advance_kernel, [(uint64[::1], uint64)])
    out["philox4x32_10_raw"] = (philox_raw_kernel, [(uint64[::1], uint64, uint32[::1])])
    return out


KERNEL_SIGNATURES = _sigs()


# =========================================================================== launching
_streams: dict[int, object] = {}


def _is_host(a) -> bool:
    return isinstance(a, np.ndarray)


def _is_array(a) -> bool:
    return isinstance(a, np.ndarray) or hasattr(a, "__cuda_array_interface__")


def _xp(a):
    return np if _is_host(a) else cupy_module()


def _stream(like):
    """Numba's handle on CuPy's current stream (0 for NumPy arrays under the simulator)."""
    if _is_host(like):
        return 0
    ptr = cupy_module().cuda.get_current_stream().ptr
    s = _streams.get(ptr)
    if s is None:
        s = cuda.default_stream() if ptr == 0 else cuda.external_stream(ptr)
        _streams[ptr] = s
    return s


def _dev(a):
    """A flat Numba view of a contiguous array; CuPy arrays are wrapped without a stream sync."""
    a = a.reshape(-1)
    if _is_host(a):
        # the simulator copies every host argument back after the launch: it must be writable
        return a if a.flags.writeable else a.copy()
    return cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=a, sync=False)


def _run(kern, n, like, *args, threads=THREADS, blocks=None):
    grid = grid_for(n, threads) if blocks is None else blocks
    conv = tuple(_dev(a) if _is_array(a) else a for a in args)
    kern[grid, threads, _stream(like)](*conv)


def _contig(a):
    return _xp(a).ascontiguousarray(a)


# --------------------------------------------------------------------------- GEMM
def _span(a):
    """A flat contiguous view from a's first element to its last: strided views go to the kernels in
    place, with their strides passed explicitly."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    extent = 1 + sum((n - 1) * st for n, st in zip(a.shape, a.strides)) // a.itemsize
    if _is_host(a):
        return np.lib.stride_tricks.as_strided(a, shape=(extent,), strides=(a.itemsize,))
    return cupy_module().ndarray((extent,), dtype=a.dtype, memptr=a.data)


def _our_gemm(a, b, out=None):
    """out = a @ b on our tiled GEMM: 2-D or batched operands, strided views in place."""
    a, b, out, g = gemm_operands(_xp(a), a, b, out)
    name = gemm_entry(float_suffix(a.dtype, "a"), g.M, g.N)
    kern = GEMM_KERNELS[name]
    bm, bk = GEMM_TILES[name]
    if out.size and g.K == 0:
        out[...] = 0
    elif out.size:
        splits, kc = gemm_split(g.M, g.N, g.K, bm, bm, bk, g.batch)
        dst = out if splits == 1 else _xp(a).empty((splits, g.batch, g.M, g.N), dtype=a.dtype)
        grid = ((g.N + bm - 1) // bm, (g.M + bm - 1) // bm, g.batch * splits)
        kern[grid, (GEMM_T, GEMM_T), _stream(a)](_dev(_span(a)), _dev(_span(b)), _dev(_span(dst)), g.M, g.N,
                                                  g.K, kc, splits, g.sAb, g.lda, g.sBb, g.ldb, g.sCb, g.ldc)
        if splits > 1:
            _run(gemm_reduce_kernel, g.batch * g.M * g.N, a, dst, _span(out), splits, g.batch, g.M, g.N,
                 g.sCb, g.ldc)
    return out


@register("matmul", "numba_cuda")
def matmul(a, b):
    """c = a @ b for 2-D float arrays: cuBLAS (cupy.matmul) or our tiled GEMM (TINYCNN_GEMM=ours)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs 2-D a (M, K) and b (K, N), got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul needs a and b of one dtype, got {a.dtype} and {b.dtype}")
    if gemm_policy() == "ours":
        return _our_gemm(a, b)
    return _xp(a).matmul(a, b)


# --------------------------------------------------------------------------- im2col / col2im / conv
def _im2col(x, kernel, stride, padding, dilation, layout):
    x = _contig(x)
    float_suffix(x.dtype, "x")
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    OH, OW = conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw)
    shape = (N, C, kh, kw, OH, OW) if layout == 0 else (C, kh, kw, N, OH, OW)
    cols = _xp(x).empty(shape, dtype=x.dtype)
    if cols.size:
        _run(im2col_kernel, N * C * OH * OW, x, x, cols, N, C, H, W, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, layout)
    return cols


def _col2im(cols, x_shape, kernel, stride, padding, dilation, layout):
    cols = _contig(cols)
    float_suffix(cols.dtype, "cols")
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    OH, OW = conv_out_size(H, kh, sh, ph, dh), conv_out_size(W, kw, sw, pw, dw)
    dx = _xp(cols).empty(tuple(x_shape), dtype=cols.dtype)
    if dx.size:
        _run(col2im_kernel, dx.size, cols, cols, dx, N, C, H, W, kh, kw, OH, OW, sh, sw, ph, pw, dh, dw, layout)
    return dx


@register("im2col", "numba_cuda")
def im2col(x, kernel, stride, padding, dilation):
    """x (N, C, H, W) -> cols (N, C, kH, kW, OH, OW) (zero padding)."""
    return _im2col(x, kernel, stride, padding, dilation, 0)


@register("col2im", "numba_cuda")
def col2im(cols, x_shape, kernel, stride, padding, dilation):
    """Adjoint of im2col, as a gather (one thread per input element, no atomics)."""
    return _col2im(cols, x_shape, kernel, stride, padding, dilation, 0)


@register("conv2d_forward", "numba_cuda")
def conv2d_forward(x, w, stride, padding, dilation, groups):
    """y[n] = W_g @ cols[n, g] per sample and group, written in NCHW (cuda_common.conv2d_forward)."""
    return cuda_common.conv2d_forward(_xp(x), _im2col, _our_gemm, x, w, stride, padding, dilation, groups)


@register("conv2d_backward_data", "numba_cuda")
def conv2d_backward_data(gy, w, x_shape, stride, padding, dilation, groups):
    """dx = col2im(W_g^T @ gY[n, g])."""
    return cuda_common.conv2d_backward_data(_xp(gy), _col2im, _our_gemm, gy, w, x_shape, stride, padding,
                                            dilation, groups)


@register("conv2d_backward_weight", "numba_cuda")
def conv2d_backward_weight(gy, x, w_shape, stride, padding, dilation, groups, bias_grad=None):
    """dW_g = gY_g @ cols_g^T."""
    return cuda_common.conv2d_backward_weight(_xp(gy), _im2col, _our_gemm, gy, x, w_shape, stride, padding,
                                              dilation, groups, bias_grad)


conv2d_backward_weight.sums_bias = True   # fills bias_grad["db"] (see cuda_common.conv2d_backward_weight)


# --------------------------------------------------------------------------- pooling
@register("max_pool2d_forward", "numba_cuda")
def max_pool2d_forward(x, kernel, stride, padding):
    """y = window max (padding = -inf), idx (int32) = h * W + w of the first maximum."""
    x = _contig(x)
    float_suffix(x.dtype, "x")
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = pool_out_size(H, kh, sh, ph), pool_out_size(W, kw, sw, pw)
    xp = _xp(x)
    y = xp.empty((N, C, OH, OW), dtype=x.dtype)
    idx = xp.empty((N, C, OH, OW), dtype=np.int32)
    if y.size:
        _run(max_pool_fwd_kernel, y.size, x, x, y, idx, N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    return y, idx


@register("max_pool2d_backward", "numba_cuda")
def max_pool2d_backward(gy, idx, x_shape, kernel=None, stride=None, padding=None):
    """dx[n, c, idx] += gy: a gather when the geometry is given, else one thread per plane (deterministic)."""
    gy = _contig(gy)
    idx = _contig(idx.astype(np.int32, copy=False))
    float_suffix(gy.dtype, "gy")
    N, C, H, W = x_shape
    OH, OW = gy.shape[2], gy.shape[3]
    dx = _xp(gy).empty(tuple(x_shape), dtype=gy.dtype)
    if not dx.size:
        return dx
    if kernel is not None:
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride or kernel, padding or (0, 0)
        _run(max_pool_bwd_gather_kernel, dx.size, gy, gy, idx, dx, N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    else:
        _run(max_pool_bwd_plane_kernel, N * C, gy, gy, idx, dx, N * C, H * W, OH * OW)
    return dx


@register("avg_pool2d_forward", "numba_cuda")
def avg_pool2d_forward(x, kernel, stride, padding):
    """y = window sum / (kH kW) (count_include_pad=True)."""
    x = _contig(x)
    float_suffix(x.dtype, "x")
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = pool_out_size(H, kh, sh, ph), pool_out_size(W, kw, sw, pw)
    y = _xp(x).empty((N, C, OH, OW), dtype=x.dtype)
    if y.size:
        _run(avg_pool_fwd_kernel, y.size, x, x, y, N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    return y


@register("avg_pool2d_backward", "numba_cuda")
def avg_pool2d_backward(gy, x_shape, kernel, stride, padding):
    """dx[h, w] = sum of gy over covering windows / (kH kW) (gather)."""
    gy = _contig(gy)
    float_suffix(gy.dtype, "gy")
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    OH, OW = gy.shape[2], gy.shape[3]
    dx = _xp(gy).empty(tuple(x_shape), dtype=gy.dtype)
    if dx.size:
        _run(avg_pool_bwd_kernel, dx.size, gy, gy, dx, N * C, H, W, OH, OW, kh, kw, sh, sw, ph, pw)
    return dx


# --------------------------------------------------------------------------- losses, normalisation, dropout
def _opt(a, like):
    """(array, flag) for an optional per-channel/per-class argument; `like` stands in when absent."""
    if a is None:
        return like, 0
    return _contig(a.astype(like.dtype, copy=False)), 1


def _inner(shape):
    return int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1


@register("cross_entropy_forward", "numba_cuda")
def cross_entropy_forward(logits, target, weight, label_smoothing):
    """loss (N,) with class weights and label smoothing; logp (N, C) = stable log-softmax."""
    logits = _contig(logits)
    float_suffix(logits.dtype, "logits")
    target = _contig(target.astype(np.int64, copy=False))
    N, C = logits.shape
    xp = _xp(logits)
    loss = xp.empty((N,), dtype=logits.dtype)
    logp = xp.empty((N, C), dtype=logits.dtype)
    w, has_w = _opt(weight, logits)
    if N:
        _run(ce_fwd_kernel, N, logits, logits, target, w, has_w, loss, logp, N, C, float(label_smoothing),
             threads=CE_THREADS, blocks=min(N, 65535))
    return loss, logp


@register("cross_entropy_backward", "numba_cuda")
def cross_entropy_backward(logp, target, weight, label_smoothing, gscale):
    """dlogits = gscale_i (p_ij S_i - q_ij)."""
    logp = _contig(logp)
    float_suffix(logp.dtype, "logp")
    xp = _xp(logp)
    target = _contig(target.astype(np.int64, copy=False))
    gscale = _contig(xp.broadcast_to(gscale.astype(logp.dtype, copy=False), (logp.shape[0],)))
    N, C = logp.shape
    dz = xp.empty((N, C), dtype=logp.dtype)
    w, has_w = _opt(weight, logp)
    if N:
        _run(ce_bwd_kernel, N, logp, logp, target, w, has_w, gscale, dz, N, C, float(label_smoothing),
             threads=CE_THREADS, blocks=min(N, 65535))
    return dz


@register("batch_norm_forward_train", "numba_cuda")
def batch_norm_forward_train(x, gamma, beta, eps):
    """Batch statistics over every axis but 1; y = (x - mean) invstd gamma + beta."""
    x = _contig(x)
    float_suffix(x.dtype, "x")
    xp = _xp(x)
    N, C = x.shape[0], x.shape[1]
    y = xp.empty_like(x)
    mean = xp.empty((C,), dtype=x.dtype)
    invstd = xp.empty((C,), dtype=x.dtype)
    g, has_g = _opt(gamma, x)
    b, has_b = _opt(beta, x)
    if C:
        _run(bn_fwd_kernel, C, x, x, g, has_g, b, has_b, y, mean, invstd, N, C, _inner(x.shape), float(eps),
             threads=BN_THREADS, blocks=min(C, 65535))
    return y, mean, invstd


@register("batch_norm_backward", "numba_cuda")
def batch_norm_backward(gy, x, gamma, mean, invstd):
    """(dx, dgamma, dbeta) of training-mode batch norm."""
    gy, x = _contig(gy), _contig(x)
    float_suffix(x.dtype, "x")
    xp = _xp(x)
    N, C = x.shape[0], x.shape[1]
    dx = xp.empty_like(x)
    dgamma = xp.empty((C,), dtype=x.dtype)
    dbeta = xp.empty((C,), dtype=x.dtype)
    g, has_g = _opt(gamma, x)
    if C:
        _run(bn_bwd_kernel, C, x, gy, x, g, has_g, _contig(mean), _contig(invstd), dx, dgamma, dbeta, N, C,
             _inner(x.shape), threads=BN_THREADS, blocks=min(C, 65535))
    return dx, dgamma, dbeta


@register("dropout_mask", "numba_cuda")
def dropout_mask(shape, p, dtype, like):
    """[u >= p] / (1 - p) with u from Philox4x32-10: the same masks as the CUDA C family."""
    float_suffix(dtype, "dtype")
    xp = _xp(like)
    out = xp.empty(tuple(shape), dtype=dtype)
    n = out.size
    if n:
        state = philox_state(xp, "numba")
        scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
        groups = (n + 3) // 4
        _run(dropout_kernel, groups, like, out, float(p), float(scale), state)
        _run(philox_advance_kernel, 1, like, state, np.uint64(groups), threads=1)
    return out


def philox_raw(counters, seed):
    """Philox4x32-10 words (N, 4) for each uint64 counter (the function the dropout kernel uses)."""
    xp = _xp(counters)
    counters = _contig(counters.astype(np.uint64))
    out = xp.empty((counters.size, 4), dtype=np.uint32)
    if counters.size:
        _run(philox_raw_kernel, counters.size, counters, counters, np.uint64(seed), out)
    return out


_dummy_steps: dict[str, object] = {}


def _unused_step(xp):
    """A one-element int64 array for the kernel's device-step argument when the step comes from the host
    (allocated once: the kernel does not read it)."""
    key = xp.__name__
    a = _dummy_steps.get(key)
    if a is None:
        a = _dummy_steps[key] = xp.zeros(1, dtype=np.int64)
    return a


@register("adam_step", "numba_cuda")
def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    """In place on flat buffers: PyTorch's Adam (decoupled=False) / AdamW (decoupled=True).

    `step` is an int, or a one-element int64 device array (read on the device, for graph replays).
    """
    float_suffix(param.dtype, "param")
    check_flat_buffers("adam_step", param, grad=grad, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)
    if hasattr(step, "shape"):
        step_dev, use_dev, step_host = _contig(step.astype(np.int64, copy=False)).reshape(-1), 1, 0.0
    else:
        step_dev, use_dev, step_host = _unused_step(_xp(param)), 0, float(step)
    if param.size:
        _run(adam_kernel, param.size, param, param, grad, exp_avg, exp_avg_sq, step_host, step_dev, use_dev,
             float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(bool(decoupled)))


@register("sgd_step", "numba_cuda")
def sgd_step(param, grad, buf, lr, momentum, dampening, weight_decay, nesterov, maximize, first):
    """In place on flat buffers, one kernel: PyTorch's SGD (optim/sgd.py has the reference and formulas)."""
    float_suffix(param.dtype, "param")
    check_flat_buffers("sgd_step", param, grad=grad, buf=buf)
    if param.size:
        _run(sgd_kernel, param.size, param, param, grad, buf, float(lr), float(momentum), float(dampening),
             float(weight_decay), int(bool(nesterov)), int(bool(maximize)), int(bool(first)))


@register("bias_relu", "numba_cuda")
def bias_relu(y, b):
    """out = relu(y + b[None, :, None, None]) (b may be None)."""
    y = _contig(y)
    float_suffix(y.dtype, "y")
    out = _xp(y).empty_like(y)
    bb, has_b = _opt(b, y)
    if y.size:
        _run(bias_relu_kernel, y.size, y, y, bb, out, y.shape[1], _inner(y.shape), has_b)
    return out
