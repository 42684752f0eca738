// 2-D max and average pooling, forward and backward, float and double. One thread per output element
// (forward) or per input element (backward gathers), so there are no atomics and results repeat bit for bit.

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() { return __longlong_as_double(0xfff0000000000000ULL); }

// idx holds h * W + w of the chosen element of the (H, W) plane; padding is never chosen; ties keep the
// first element in row-major window order; a NaN replaces the running maximum (PyTorch's rule, as the
// NumPy reference).
template <typename T, typename I>
__device__ __forceinline__ void max_pool_fwd_body(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ idx,
                                                  int NC, int H, int W, int OH, int OW, int kH, int kW,
                                                  int sh, int sw, int ph, int pw) {
    const I total = (I)NC * OH * OW;
    const I step = (I)blockDim.x * gridDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long plane = (long long)(i / ((I)OH * OW));
        const T* xp = x + plane * H * W;
        T best = neg_inf<T>();
        int bidx = -1;
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        for (int kh = 0; kh < kH; ++kh) {
            const int h = h0 + kh;
            if (h < 0 || h >= H) continue;
            for (int kw = 0; kw < kW; ++kw) {
                const int w = w0 + kw;
                if (w < 0 || w >= W) continue;
                const T v = xp[h * W + w];
                if (bidx < 0 || v > best || v != v) {
                    best = v;
                    bidx = h * W + w;
                }
            }
        }
        y[i] = best;
        idx[i] = bidx;
    }
}

template <typename T>
__device__ __forceinline__ void max_pool_fwd_impl(const T* __restrict__ x, T* __restrict__ y,
                                                  int* __restrict__ idx, int NC, int H, int W, int OH, int OW,
                                                  int kH, int kW, int sh, int sw, int ph, int pw) {
    // 32-bit index arithmetic when it fits: 64-bit division costs several times more
    if ((long long)NC * OH * OW < (1LL << 31)) max_pool_fwd_body<T, unsigned>(x, y, idx, NC, H, W, OH, OW, kH, kW,
            sh, sw, ph, pw);
    else max_pool_fwd_body<T, long long>(x, y, idx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);
}

// Gather form: needs the window geometry to find the outputs whose window covers (h, w).
template <typename T, typename I>
__device__ __forceinline__ void max_pool_bwd_gather_body(const T* __restrict__ gy, const int* __restrict__ idx,
                                                         T* __restrict__ dx, int NC, int H, int W, int OH, int OW,
                                                         int kH, int kW, int sh, int sw, int ph, int pw) {
    const I total = (I)NC * H * W;
    const I step = (I)blockDim.x * gridDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int w = (int)(i % W);
        const int h = (int)((i / W) % H);
        const long long plane = (long long)(i / ((I)H * W));
        const int me = h * W + w;
        // outputs oh with oh*sh - ph <= h <= oh*sh - ph + kH - 1
        int oh_lo = h + ph - kH + 1; oh_lo = oh_lo <= 0 ? 0 : (oh_lo + sh - 1) / sh;
        int oh_hi = (h + ph) / sh; if (oh_hi > OH - 1) oh_hi = OH - 1;
        int ow_lo = w + pw - kW + 1; ow_lo = ow_lo <= 0 ? 0 : (ow_lo + sw - 1) / sw;
        int ow_hi = (w + pw) / sw; if (ow_hi > OW - 1) ow_hi = OW - 1;
        T acc = T(0);
        const long long base = plane * OH * OW;
        for (int oh = oh_lo; oh <= oh_hi; ++oh)
            for (int ow = ow_lo; ow <= ow_hi; ++ow) {
                const long long j = base + (long long)oh * OW + ow;
                if (idx[j] == me) acc += gy[j];
            }
        dx[i] = acc;
    }
}

template <typename T>
__device__ __forceinline__ void max_pool_bwd_gather_impl(const T* __restrict__ gy, const int* __restrict__ idx,
                                                         T* __restrict__ dx, int NC, int H, int W, int OH, int OW,
                                                         int kH, int kW, int sh, int sw, int ph, int pw) {
    // 32-bit index arithmetic when it fits: 64-bit division costs several times more
    if ((long long)NC * H * W < (1LL << 31)) max_pool_bwd_gather_body<T, unsigned>(gy, idx, dx, NC, H, W, OH, OW,
            kH, kW, sh, sw, ph, pw);
    else max_pool_bwd_gather_body<T, long long>(gy, idx, dx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);
}

// Without the geometry (the docs/kernels.md signature): one thread per (n, c) plane adds its outputs in
// row-major order - still deterministic, in the same order as the NumPy reference's np.add.at.
template <typename T>
__device__ __forceinline__ void max_pool_bwd_plane_impl(const T* __restrict__ gy, const int* __restrict__ idx,
                                                        T* __restrict__ dx, int NC, int HW, int OHW) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < NC; p += step) {
        T* d = dx + p * HW;
        for (int j = 0; j < HW; ++j) d[j] = T(0);
        const T* g = gy + p * OHW;
        const int* id = idx + p * OHW;
        for (int j = 0; j < OHW; ++j) d[id[j]] += g[j];
    }
}

// count_include_pad=True: divide by kH*kW always.
template <typename T, typename I>
__device__ __forceinline__ void avg_pool_fwd_body(const T* __restrict__ x, T* __restrict__ y, int NC, int H, int W,
                                                  int OH, int OW, int kH, int kW, int sh, int sw, int ph, int pw) {
    const I total = (I)NC * OH * OW;
    const I step = (I)blockDim.x * gridDim.x;
    const T inv = T(1) / T(kH * kW);
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const long long plane = (long long)(i / ((I)OH * OW));
        const T* xp = x + plane * H * W;
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        T acc = T(0);
        for (int kh = 0; kh < kH; ++kh) {
            const int h = h0 + kh;
            if (h < 0 || h >= H) continue;
            for (int kw = 0; kw < kW; ++kw) {
                const int w = w0 + kw;
                if (w < 0 || w >= W) continue;
                acc += xp[h * W + w];
            }
        }
        y[i] = acc * inv;
    }
}

template <typename T>
__device__ __forceinline__ void avg_pool_fwd_impl(const T* __restrict__ x, T* __restrict__ y, int NC, int H,
                                                  int W, int OH, int OW, int kH, int kW, int sh, int sw, int ph,
                                                  int pw) {
    // 32-bit index arithmetic when it fits: 64-bit division costs several times more
    if ((long long)NC * OH * OW < (1LL << 31)) avg_pool_fwd_body<T, unsigned>(x, y, NC, H, W, OH, OW, kH, kW, sh,
            sw, ph, pw);
    else avg_pool_fwd_body<T, long long>(x, y, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);
}

template <typename T, typename I>
__device__ __forceinline__ void avg_pool_bwd_body(const T* __restrict__ gy, T* __restrict__ dx, int NC, int H, int W,
                                                  int OH, int OW, int kH, int kW, int sh, int sw, int ph, int pw) {
    const I total = (I)NC * H * W;
    const I step = (I)blockDim.x * gridDim.x;
    const T inv = T(1) / T(kH * kW);
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int w = (int)(i % W);
        const int h = (int)((i / W) % H);
        const long long plane = (long long)(i / ((I)H * W));
        int oh_lo = h + ph - kH + 1; oh_lo = oh_lo <= 0 ? 0 : (oh_lo + sh - 1) / sh;
        int oh_hi = (h + ph) / sh; if (oh_hi > OH - 1) oh_hi = OH - 1;
        int ow_lo = w + pw - kW + 1; ow_lo = ow_lo <= 0 ? 0 : (ow_lo + sw - 1) / sw;
        int ow_hi = (w + pw) / sw; if (ow_hi > OW - 1) ow_hi = OW - 1;
        T acc = T(0);
        const long long base = plane * OH * OW;
        for (int oh = oh_lo; oh <= oh_hi; ++oh)
            for (int ow = ow_lo; ow <= ow_hi; ++ow) acc += gy[base + (long long)oh * OW + ow];
        dx[i] = acc * inv;
    }
}

template <typename T>
__device__ __forceinline__ void avg_pool_bwd_impl(const T* __restrict__ gy, T* __restrict__ dx, int NC, int H,
                                                  int W, int OH, int OW, int kH, int kW, int sh, int sw, int ph,
                                                  int pw) {
    // 32-bit index arithmetic when it fits: 64-bit division costs several times more
    if ((long long)NC * H * W < (1LL << 31)) avg_pool_bwd_body<T, unsigned>(gy, dx, NC, H, W, OH, OW, kH, kW, sh,
            sw, ph, pw);
    else avg_pool_bwd_body<T, long long>(gy, dx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);
}

#define POOL_ENTRIES(SUF, T)                                                                                    \
    extern "C" __global__ void max_pool2d_forward_##SUF(const T* x, T* y, int* idx, int NC, int H, int W,       \
            int OH, int OW, int kH, int kW, int sh, int sw, int ph, int pw) {                                   \
        max_pool_fwd_impl<T>(x, y, idx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);                              \
    }                                                                                                           \
    extern "C" __global__ void max_pool2d_backward_gather_##SUF(const T* gy, const int* idx, T* dx, int NC,     \
            int H, int W, int OH, int OW, int kH, int kW, int sh, int sw, int ph, int pw) {                     \
        max_pool_bwd_gather_impl<T>(gy, idx, dx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);                     \
    }                                                                                                           \
    extern "C" __global__ void max_pool2d_backward_plane_##SUF(const T* gy, const int* idx, T* dx, int NC,      \
            int HW, int OHW) {                                                                                  \
        max_pool_bwd_plane_impl<T>(gy, idx, dx, NC, HW, OHW);                                                   \
    }                                                                                                           \
    extern "C" __global__ void avg_pool2d_forward_##SUF(const T* x, T* y, int NC, int H, int W, int OH, int OW, \
            int kH, int kW, int sh, int sw, int ph, int pw) {                                                   \
        avg_pool_fwd_impl<T>(x, y, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);                                   \
    }                                                                                                           \
    extern "C" __global__ void avg_pool2d_backward_##SUF(const T* gy, T* dx, int NC, int H, int W, int OH,      \
            int OW, int kH, int kW, int sh, int sw, int ph, int pw) {                                           \
        avg_pool_bwd_impl<T>(gy, dx, NC, H, W, OH, OW, kH, kW, sh, sw, ph, pw);                                 \
    }

POOL_ENTRIES(f32, float)
POOL_ENTRIES(f64, double)
