// Fused elementwise kernels: bias + ReLU, dropout masks from a counter-based RNG (Philox4x32-10), and the
// Adam/AdamW update over a flat parameter buffer. Grid-stride loops: the grid is sized from the problem
// by the launcher and any size works.

// ------------------------------------------------------------------------------------ bias + ReLU
// out = relu(y + b[c]) with c the axis-1 index of y (N, C, *inner); NaN propagates as in torch.relu.
template <typename T>
__device__ __forceinline__ void bias_relu_impl(const T* __restrict__ y, const T* __restrict__ b, T* __restrict__ out,
                                               long long n, int C, long long inner, int has_bias) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        T v = y[i];
        if (has_bias) v += b[(i / inner) % C];
        out[i] = (v > T(0) || v != v) ? v : T(0);
    }
}

// ------------------------------------------------------------------------------------ Philox4x32-10
// Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11). The same function is written in
// cuda_numba.py, so both GPU families draw identical masks for the same seed.
struct u32x4 { unsigned int v[4]; };

__device__ __forceinline__ u32x4 philox4x32_10(unsigned long long counter, unsigned long long seed) {
    unsigned int c0 = (unsigned int)counter, c1 = (unsigned int)(counter >> 32), c2 = 0u, c3 = 0u;
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
    #pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const unsigned long long p0 = (unsigned long long)0xD2511F53u * c0;
        const unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c2;
        const unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        const unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        c0 = hi1 ^ c1 ^ k0; c1 = lo1; c2 = hi0 ^ c3 ^ k1; c3 = lo0;
    }
    u32x4 out; out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
    return out;
}

extern "C" __global__ void philox4x32_10_raw(const unsigned long long* counters, unsigned long long seed,
                                             unsigned int* out, long long n) {
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {
        const u32x4 r = philox4x32_10(counters[i], seed);
        for (int k = 0; k < 4; ++k) out[4 * i + k] = r.v[k];
    }
}

// Element e uses output word e % 4 of the counter offset + e / 4; u = word * 2^-32 in [0, 1); kept when
// u >= p. The seed and offset live in device memory (state[0], state[1]) so that a captured CUDA graph
// draws new masks on every replay (philox_advance moves the offset on, on the device).
template <typename T>
__device__ __forceinline__ void dropout_impl(T* __restrict__ out, long long n, double p, double scale,
                                             const unsigned long long* __restrict__ state) {
    const unsigned long long seed = state[0], offset = state[1];
    const long long groups = (n + 3) / 4;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += step) {
        const u32x4 r = philox4x32_10(offset + (unsigned long long)g, seed);
        #pragma unroll
        for (int k = 0; k < 4; ++k) {
            const long long e = 4 * g + k;
            if (e < n) out[e] = ((double)r.v[k] * 2.3283064365386962890625e-10 >= p) ? (T)scale : T(0);
        }
    }
}

extern "C" __global__ void philox_advance(unsigned long long* state, unsigned long long by) {
    if (blockIdx.x == 0 && threadIdx.x == 0) state[1] += by;
}

// ------------------------------------------------------------------------------------ Adam / AdamW
// PyTorch's formulas (torch.optim.Adam / AdamW, not amsgrad):
//   L2 (decoupled=0):   g <- g + wd * p
//   AdamW (decoupled=1): p <- p * (1 - lr * wd)
//   m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// t comes from the host (step_host) or, for CUDA-graph replays, from a device counter (step_dev).
template <typename T>
__device__ __forceinline__ void adam_impl(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ m,
                                          T* __restrict__ v, long long n, double step_host,
                                          const long long* __restrict__ step_dev, int use_step_dev, double lr,
                                          double b1, double b2, double eps, double wd, int decoupled) {
    const double t = use_step_dev ? (double)step_dev[0] : step_host;
    const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    const T step_size = (T)(lr / bc1), sqrt_bc2 = (T)sqrt(bc2);
    const T tb1 = (T)b1, tb2 = (T)b2, ob1 = (T)(1.0 - b1), ob2 = (T)(1.0 - b2), teps = (T)eps, twd = (T)wd;
    const T decay = (T)(1.0 - lr * wd);
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        T pi = p[i], gi = g[i];
        if (wd != 0.0) {
            if (decoupled) pi = pi * decay;
            else gi = gi + twd * pi;
        }
        const T mi = tb1 * m[i] + ob1 * gi;
        const T vi = tb2 * v[i] + ob2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (sqrt(vi) / sqrt_bc2 + teps));
    }
}

// PyTorch's SGD in one pass (optim/sgd.py has the formulas): d = +-g (+ wd p); with momentum mu the
// buffer becomes d on the first step, else mu b + (1 - tau) d, and d = b (or d + mu b, Nesterov);
// then p -= lr d. Each output element is written by one thread: deterministic.
template <typename T>
__device__ __forceinline__ void sgd_impl(T* __restrict__ p, const T* __restrict__ g, T* __restrict__ buf,
                                         long long n, double lr, double mu, double tau, double wd, int nesterov,
                                         int maximize, int first) {
    const T tlr = (T)lr, tmu = (T)mu, otau = (T)(1.0 - tau), twd = (T)wd;
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const T pi = p[i];
        T d = maximize ? -g[i] : g[i];
        if (wd != 0.0) d = d + twd * pi;
        if (mu != 0.0) {
            const T b = first ? d : tmu * buf[i] + otau * d;
            buf[i] = b;
            d = nesterov ? d + tmu * b : b;
        }
        p[i] = pi - tlr * d;
    }
}

#define ELEMENTWISE_ENTRIES(SUF, T)                                                                             \
    extern "C" __global__ void bias_relu_##SUF(const T* y, const T* b, T* out, long long n, int C,              \
                                               long long inner, int has_bias) {                                 \
        bias_relu_impl<T>(y, b, out, n, C, inner, has_bias);                                                    \
    }                                                                                                           \
    extern "C" __global__ void dropout_mask_##SUF(T* out, long long n, double p, double scale,                  \
                                                  const unsigned long long* state) {                            \
        dropout_impl<T>(out, n, p, scale, state);                                                               \
    }                                                                                                           \
    extern "C" __global__ void adam_step_##SUF(T* p, const T* g, T* m, T* v, long long n, double step_host,     \
            const long long* step_dev, int use_step_dev, double lr, double b1, double b2, double eps,            \
            double wd, int decoupled) {                                                                         \
        adam_impl<T>(p, g, m, v, n, step_host, step_dev, use_step_dev, lr, b1, b2, eps, wd, decoupled);         \
    }                                                                                                           \
    extern "C" __global__ void sgd_step_##SUF(T* p, const T* g, T* buf, long long n, double lr, double mu,      \
            double tau, double wd, int nesterov, int maximize, int first) {                                     \
        sgd_impl<T>(p, g, buf, n, lr, mu, tau, wd, nesterov, maximize, first);                                  \
    }

ELEMENTWISE_ENTRIES(f32, float)
ELEMENTWISE_ENTRIES(f64, double)
