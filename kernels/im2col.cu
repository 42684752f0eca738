// im2col / col2im for convolution, float and double.
//
// Two column layouts (`layout` argument):
//   0: cols (N, C, kH, kW, OH, OW)   - the docs/kernels.md interface layout
//   1: cols (C, kH, kW, N, OH, OW)   - the GEMM layout used inside conv2d: the rows of one group are a
//                                       contiguous (C/g*kH*kW, N*OH*OW) matrix, so a whole batch is one GEMM
// col2im is a gather: one thread per input element adds the taps that read it, in (kh, kw) order, so it
// needs no atomics and gives the same bits every run (and the same summation order as the NumPy
// reference, which adds the taps one after another).

template <typename T, typename I>
__device__ __forceinline__ void im2col_body(const T* __restrict__ x, T* __restrict__ cols,
                                            int N, int C, int H, int W, int kH, int kW, int OH, int OW,
                                            int sh, int sw, int ph, int pw, int dh, int dw, int layout) {
    const I total = (I)N * C * kH * kW * OH * OW;
    const I step = (I)blockDim.x * gridDim.x;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        I t = i;
        const int ow = (int)(t % OW); t /= OW;
        const int oh = (int)(t % OH); t /= OH;
        int n, c, kw, kh;
        if (layout == 0) {
            kw = (int)(t % kW); t /= kW;
            kh = (int)(t % kH); t /= kH;
            c = (int)(t % C);   n = (int)(t / C);
        } else {
            n = (int)(t % N);   t /= N;
            kw = (int)(t % kW); t /= kW;
            kh = (int)(t % kH); c = (int)(t / kH);
        }
        const int h = oh * sh - ph + kh * dh;
        const int w = ow * sw - pw + kw * dw;
        T v = T(0);
        if (h >= 0 && h < H && w >= 0 && w < W) v = x[(((long long)n * C + c) * H + h) * W + w];
        cols[i] = v;
    }
}

template <typename T>
__device__ __forceinline__ void im2col_impl(const T* __restrict__ x, T* __restrict__ cols, int N, int C, int H,
                                            int W, int kH, int kW, int OH, int OW, int sh, int sw, int ph, int pw,
                                            int dh, int dw, int layout) {
    // 32-bit index arithmetic when it fits: 64-bit division costs several times more
    if ((long long)N * C * kH * kW * OH * OW < (1LL << 31)) im2col_body<T, unsigned>(x, cols, N, C, H, W, kH, kW,
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
            if (hh % sh != 0) continue;
            const int oh = hh / sh;
            if (oh >= OH) continue;
            for (int kw = 0; kw < kW; ++kw) {
                const int ww = w + pw - kw * dw;
                if (ww < 0) break;
                if (ww % sw != 0) continue;
                const int ow = ww / sw;
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
