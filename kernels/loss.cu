// Softmax cross-entropy, forward and backward, float and double. One block of CE_THREADS threads per
// row (grid-stride over rows); reductions are fixed-shape shared-memory trees in double, so every run
// gives the same bits.
//
// Per-sample loss with class weights w (1 when absent) and label smoothing eps over C classes:
//   logp_j = (z_j - m) - log(sum_c exp(z_c - m)),  m = max_c z_c
//   loss   = (1 - eps) w_t (-logp_t) + eps / C * sum_c w_c (-logp_c)
// Gradient, scaled by the upstream gradient gs of that sample's loss:
//   dz_j = gs * (p_j * S - (1 - eps) w_t [j == t] - eps / C * w_j),  S = (1 - eps) w_t + eps / C * sum_c w_c
// A target outside [0, C) gives a NaN loss (checked without a host synchronisation).

#define CE_THREADS 128

__device__ __forceinline__ double block_sum(double v, double* sh) {
    const int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int s = CE_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] += sh[t + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ double block_max(double v, double* sh) {
    const int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (int s = CE_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = fmax(sh[t], sh[t + s]);
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads();
    return r;
}

template <typename T>
__device__ __forceinline__ void ce_fwd_impl(const T* __restrict__ z, const long long* __restrict__ target,
                                            const T* __restrict__ weight, int has_weight, T* __restrict__ loss,
                                            T* __restrict__ logp, int N, int C, double ls) {
    __shared__ double sh[CE_THREADS];
    const double neg_inf = __longlong_as_double(0xfff0000000000000ULL);
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        const T* zr = z + (long long)row * C;
        T* lr = logp + (long long)row * C;
        double m = neg_inf;
        for (int j = threadIdx.x; j < C; j += CE_THREADS) m = fmax(m, (double)zr[j]);
        m = block_max(m, sh);
        const T tm = (T)m;
        double s = 0.0;
        for (int j = threadIdx.x; j < C; j += CE_THREADS) s += exp((double)(zr[j] - tm));
        s = block_sum(s, sh);
        const T lse = (T)log(s);
        double swl = 0.0;   // sum_c w_c logp_c
        for (int j = threadIdx.x; j < C; j += CE_THREADS) {
            const T lp = (zr[j] - tm) - lse;
            lr[j] = lp;
            swl += (has_weight ? (double)weight[j] : 1.0) * (double)lp;
        }
        if (ls != 0.0) swl = block_sum(swl, sh);
        if (threadIdx.x == 0) {
            const long long t = target[row];
            double out;
            if (t < 0 || t >= C) {
                out = __longlong_as_double(0x7ff8000000000000ULL);
            } else {
                const double wt = has_weight ? (double)weight[t] : 1.0;
                const double lpt = (double)((zr[t] - tm) - lse);
                out = -(1.0 - ls) * wt * lpt;
                if (ls != 0.0) out -= ls / C * swl;
            }
            loss[row] = (T)out;
        }
        __syncthreads();
    }
}

template <typename T>
__device__ __forceinline__ void ce_bwd_impl(const T* __restrict__ logp, const long long* __restrict__ target,
                                            const T* __restrict__ weight, int has_weight,
                                            const T* __restrict__ gscale, T* __restrict__ dz, int N, int C,
                                            double ls) {
    __shared__ double sh[CE_THREADS];
    double sumw = (double)C;
    if (has_weight && ls != 0.0) {
        double s = 0.0;
        for (int j = threadIdx.x; j < C; j += CE_THREADS) s += (double)weight[j];
        sumw = block_sum(s, sh);
    }
    for (int row = blockIdx.x; row < N; row += gridDim.x) {
        const long long t = target[row];
        const bool valid = t >= 0 && t < C;
        const double wt = valid ? (has_weight ? (double)weight[t] : 1.0) : __longlong_as_double(0x7ff8000000000000ULL);
        const double S = (1.0 - ls) * wt + ls / C * sumw;
        const double gs = (double)gscale[row];
        const T* lr = logp + (long long)row * C;
        T* dr = dz + (long long)row * C;
        for (int j = threadIdx.x; j < C; j += CE_THREADS) {
            const double wj = has_weight ? (double)weight[j] : 1.0;
            double d = exp((double)lr[j]) * S - ls / C * wj;
            if (j == t) d -= (1.0 - ls) * wt;
            dr[j] = (T)(gs * d);
        }
    }
}

#define LOSS_ENTRIES(SUF, T)                                                                                    \
    extern "C" __global__ void cross_entropy_forward_##SUF(const T* z, const long long* target, const T* weight, \
            int has_weight, T* loss, T* logp, int N, int C, double ls) {                                        \
        ce_fwd_impl<T>(z, target, weight, has_weight, loss, logp, N, C, ls);                                    \
    }                                                                                                           \
    extern "C" __global__ void cross_entropy_backward_##SUF(const T* logp, const long long* target,             \
            const T* weight, int has_weight, const T* gscale, T* dz, int N, int C, double ls) {                 \
        ce_bwd_impl<T>(logp, target, weight, has_weight, gscale, dz, N, C, ls);                                 \
    }

LOSS_ENTRIES(f32, float)
LOSS_ENTRIES(f64, double)
