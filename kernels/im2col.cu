// im2col / col2im for convolution, float and double.
//
// Two column layouts (`layout` argument):
//   0: cols (N, C, kH, kW, OH, OW)   - the docs/kernels.md interface layout
//   1: cols (C, kH, kW, N, OH, OW)   - the GEMM layout used inside conv2d: the rows of one group are a
//                                       contiguous (C/g*kH*kW, N*OH*OW) matrix, so a whole batch is one GEMM
// col2im is a gather: one thread per input element adds the taps that read it, in (kh, kw) order, so it
// needs no atomics and gives the same bits every run (and the same summation order as the NumPy
// reference, which adds the taps one after another).

// One thread per (n, c, oh, ow) writes that position's kH x kW taps: the index divisions, the costly
// part of this kernel, are shared by the taps, and for each tap a warp's stores are consecutive.
template <typename T, typename I>
__device__ __forceinline__ void im2col_body(const T* __restrict__ x, T* __restrict__ cols,
                                            int N, int C, int H, int W, int kH, int kW, int OH, int OW,
                                            int sh, int sw, int ph, int pw, int dh, int dw, int layout) {
    const I P = (I)OH * OW;
    const I total = (I)N * C * P;
    const I step = (I)blockDim.x * gridDim.x;
    // distance between consecutive taps in cols: a whole (OH, OW) plane (layout 0) or N of them (1)
    const long long tap_stride = layout == 0 ? (long long)P : (long long)N * P;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const I nc = i / P, p = i - nc * P;
        const int n = (int)(nc / C), c = (int)(nc - (I)n * C);
        const int oh = (int)(p / OW), ow = (int)(p - (I)oh * OW);
        const T* xp = x + (long long)nc * H * W;
        long long j = layout == 0 ? (long long)nc * kH * kW * P + p
                                  : (long long)c * kH * kW * N * P + (long long)n * P + p;
        for (int kh = 0; kh < kH; ++kh) {
            const int h = oh * sh - ph + kh * dh;
            const bool h_in = h >= 0 && h < H;
            for (int kw = 0; kw < kW; ++kw, j += tap_stride) {
                const int w = ow * sw - pw + kw * dw;
                cols[j] = (h_in && w >= 0 && w < W) ? xp[h * W + w] : T(0);
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void im2col_impl(const T* __restrict__ x, T* __restrict__ cols, int N, int C, int H,
                                            int W, int kH, int kW, int OH, int OW, int sh, int sw, int ph, int pw,
                                            int dh, int dw, int layout) {
    // 32-bit index arithmetic when it fits: 64-bit division costs several times more
    if ((long long)N * C * OH * OW < (1LL << 31)) im2col_body<T, unsigned>(x, cols, N, C, H, W, kH, kW,
            OH, OW, sh, sw, ph, pw, dh, dw, layout);
    else im2col_body<T, long long>(x, cols, N, C, H, W, kH, kW, OH, OW, sh, sw, ph, pw, dh, dw, layout);
}

template <typename T, typename I>
__device__ __forceinline__ void col2im_body(const T* __restrict__ cols, T* __restrict__ dx,
                                            int N, int C, int H, int W, int kH, int kW, int OH, int OW,
                                            int sh, int sw, int ph, int pw, int dh, int dw, int layout) {
    const I total = (I)N * C * H * W;
    const I step = (I)blockDim.x * gridDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        I t = i;
        const int w = (int)(t % W); t /= W;
        const int h = (int)(t % H); t /= H;
        const int c = (int)(t % C);
        const int n = (int)(t / C);
        T acc = T(0);
        for (int kh = 0; kh < kH; ++kh) {
            const int hh = h + ph - kh * dh;
            if (hh < 0) break;                 // hh only decreases with kh
            const int oh = sh == 1 ? hh : hh / sh;   // stride 1 (the usual case) needs no division
            if (oh * sh != hh) continue;
            if (oh >= OH) continue;
            for (int kw = 0; kw < kW; ++kw) {
                const int ww = w + pw - kw * dw;
                if (ww < 0) break;
                const int ow = sw == 1 ? ww : ww / sw;
                if (ow * sw != ww) continue;
                if (ow >= OW) continue;
                long long j;
                if (layout == 0) j = ((((long long)n * C + c) * kH + kh) * kW + kw) * OH * OW;
                else j = ((((long long)c * kH + kh) * kW + kw) * N + n) * OH * OW;
                acc += cols[j + (long long)oh * OW + ow];
            }
        }
        dx[i] = acc;
    }
}

template <typename T>
__device__ __forceinline__ void col2im_impl(const T* __restrict__ cols, T* __restrict__ dx, int N, int C, int H,
                                            int W, int kH, int kW, int OH, int OW, int sh, int sw, int ph, int pw,
                                            int dh, int dw, int layout) {
    // 32-bit index arithmetic when it fits: 64-bit division costs several times more
    if ((long long)N * C * H * W < (1LL << 31)) col2im_body<T, unsigned>(cols, dx, N, C, H, W, kH, kW, OH, OW, sh,
            sw, ph, pw, dh, dw, layout);
    else col2im_body<T, long long>(cols, dx, N, C, H, W, kH, kW, OH, OW, sh, sw, ph, pw, dh, dw, layout);
}

#define IM2COL_ENTRY(NAME, T)                                                                           \
    extern "C" __global__ void NAME(const T* x, T* cols, int N, int C, int H, int W, int kH, int kW,      \
                                    int OH, int OW, int sh, int sw, int ph, int pw, int dh, int dw,       \
                                    int layout) {                                                         \
        im2col_impl<T>(x, cols, N, C, H, W, kH, kW, OH, OW, sh, sw, ph, pw, dh, dw, layout);             \
    }
#define COL2IM_ENTRY(NAME, T)                                                                           \
    extern "C" __global__ void NAME(const T* cols, T* dx, int N, int C, int H, int W, int kH, int kW,     \
                                    int OH, int OW, int sh, int sw, int ph, int pw, int dh, int dw,       \
                                    int layout) {                                                         \
        col2im_impl<T>(cols, dx, N, C, H, W, kH, kW, OH, OW, sh, sw, ph, pw, dh, dw, layout);            \
    }

IM2COL_ENTRY(im2col_f32, float)
IM2COL_ENTRY(im2col_f64, double)
COL2IM_ENTRY(col2im_f32, float)
COL2IM_ENTRY(col2im_f64, double)
