// Batch normalisation over every axis but 1 of x (N, C, *inner), training mode, float and double.
// One block of BN_THREADS threads per channel; each thread sums a fixed strided subset in double and the
// block reduces with a fixed shared-memory tree, so the statistics are deterministic.
//
// Forward:  mean = sum(x) / M,  var = sum((x - mean)^2) / M (biased),  invstd = 1 / sqrt(var + eps),
//           y = (x - mean) * invstd * gamma + beta,   M = N * prod(inner)
// Backward: xhat = (x - mean) * invstd,  dbeta = sum(gy),  dgamma = sum(gy * xhat),
//           dx = gamma * invstd * (gy - dbeta / M - xhat * dgamma / M)

#define BN_THREADS 256

__device__ __forceinline__ void block_sum2(double& a, double& b, double* sa, double* sb) {
    const int t = threadIdx.x;
    sa[t] = a; sb[t] = b;
    __syncthreads();
    for (int s = BN_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) { sa[t] += sa[t + s]; sb[t] += sb[t + s]; }
        __syncthreads();
    }
    a = sa[0]; b = sb[0];
    __syncthreads();
}

template <typename T>
__device__ __forceinline__ void bn_fwd_impl(const T* __restrict__ x, const T* __restrict__ gamma, int has_gamma,
                                            const T* __restrict__ beta, int has_beta, T* __restrict__ y,
                                            T* __restrict__ mean_out, T* __restrict__ invstd_out,
                                            int N, int C, long long inner, double eps) {
    __shared__ double sa[BN_THREADS], sb[BN_THREADS];
    const long long M = (long long)N * inner;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        double s = 0.0, unused = 0.0;
        for (long long j = threadIdx.x; j < M; j += BN_THREADS)
            s += (double)x[((j / inner) * C + c) * inner + j % inner];
        block_sum2(s, unused, sa, sb);
        const double mean = s / (double)M;
        double q = 0.0;
        unused = 0.0;
        for (long long j = threadIdx.x; j < M; j += BN_THREADS) {
            const double d = (double)x[((j / inner) * C + c) * inner + j % inner] - mean;
            q += d * d;
        }
        block_sum2(q, unused, sa, sb);
        const double invstd = 1.0 / sqrt(q / (double)M + eps);
        const T tm = (T)mean, ti = (T)invstd;
        const T g = has_gamma ? gamma[c] : T(1), b = has_beta ? beta[c] : T(0);
        for (long long j = threadIdx.x; j < M; j += BN_THREADS) {
            const long long k = ((j / inner) * C + c) * inner + j % inner;
            y[k] = (x[k] - tm) * ti * g + b;
        }
        if (threadIdx.x == 0) { mean_out[c] = tm; invstd_out[c] = ti; }
    }
}

template <typename T>
__device__ __forceinline__ void bn_bwd_impl(const T* __restrict__ gy, const T* __restrict__ x,
                                            const T* __restrict__ gamma, int has_gamma, const T* __restrict__ mean,
                                            const T* __restrict__ invstd, T* __restrict__ dx,
                                            T* __restrict__ dgamma, T* __restrict__ dbeta,
                                            int N, int C, long long inner) {
    __shared__ double sa[BN_THREADS], sb[BN_THREADS];
    const long long M = (long long)N * inner;
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        const double mu = (double)mean[c], is = (double)invstd[c];
        double sg = 0.0, sgx = 0.0;
        for (long long j = threadIdx.x; j < M; j += BN_THREADS) {
            const long long k = ((j / inner) * C + c) * inner + j % inner;
            const double g = (double)gy[k];
            sg += g;
            sgx += g * ((double)x[k] - mu) * is;
        }
        block_sum2(sg, sgx, sa, sb);
        const double scale = (has_gamma ? (double)gamma[c] : 1.0) * is;
        const double a = sg / (double)M, b = sgx / (double)M;
        for (long long j = threadIdx.x; j < M; j += BN_THREADS) {
            const long long k = ((j / inner) * C + c) * inner + j % inner;
            const double xh = ((double)x[k] - mu) * is;
            dx[k] = (T)(scale * ((double)gy[k] - a - xh * b));
        }
        if (threadIdx.x == 0) { dgamma[c] = (T)sgx; dbeta[c] = (T)sg; }
    }
}

#define BN_ENTRIES(SUF, T)                                                                                      \
    extern "C" __global__ void batch_norm_forward_train_##SUF(const T* x, const T* gamma, int has_gamma,        \
            const T* beta, int has_beta, T* y, T* mean, T* invstd, int N, int C, long long inner, double eps) { \
        bn_fwd_impl<T>(x, gamma, has_gamma, beta, has_beta, y, mean, invstd, N, C, inner, eps);                 \
    }                                                                                                           \
    extern "C" __global__ void batch_norm_backward_##SUF(const T* gy, const T* x, const T* gamma, int has_gamma, \
            const T* mean, const T* invstd, T* dx, T* dgamma, T* dbeta, int N, int C, long long inner) {       \
        bn_bwd_impl<T>(gy, x, gamma, has_gamma, mean, invstd, dx, dgamma, dbeta, N, C, inner);                  \
    }

BN_ENTRIES(f32, float)
BN_ENTRIES(f64, double)
