// Our tiled shared-memory GEMM: C (M, N) = A (M, K) @ B (K, N), all row-major and contiguous.
//
// Each block of 256 threads computes a BM x BN tile of C, stepping through K in slices of BK: it stages
// A's BM x BK slice (transposed, padded by 4 so the transposing stores hit 32 different banks) and B's
// BK x BN slice in shared memory, then every thread accumulates a TM x TN sub-tile in registers. A
// thread's rows and columns are strided by the thread grid (ty + i * TY, tx + j * TX), so the shared
// loads of a warp read consecutive words (no bank conflicts) and the stores to C are coalesced.
// Loads outside the matrices read 0, so any M, N, K works. The sum over k runs in a fixed order:
// the result is deterministic.
//
// Split-K: a GEMM with few output tiles and a long K (a convolution's weight gradient sums over
// N*OH*OW, e.g. C (32, 9) with K = 100352) would leave all but one or two SMs idle. Then the host asks
// for gridDim.z = S slices of K, each `kc` long: block z sums k in [z kc, (z+1) kc) and writes its
// partial tile to slab z of a workspace (S, M, N); gemm_reduce then adds the S slabs element by
// element in the order z = 0, 1, ..., S-1. No atomics: the result is still bit-reproducible.

template <typename T, int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void gemm_impl(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ Cm,
                                          int M, int N, int K, int kc) {
    constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;
    __shared__ T As[BK][BM + 4];
    __shared__ T Bs[BK][BN];
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int k_lo = blockIdx.z * kc, k_hi = min(K, k_lo + kc);
    Cm += (long long)blockIdx.z * M * N;  // this slice's slab (slab 0 is C itself when S == 1)
    T acc[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

    for (int k0 = k_lo; k0 < k_hi; k0 += BK) {
        #pragma unroll
        for (int e = tid; e < BM * BK; e += NT) {
            const int r = e / BK, c = e % BK, gr = row0 + r, gc = k0 + c;
            As[c][r] = (gr < M && gc < k_hi) ? A[(long long)gr * K + gc] : T(0);
        }
        #pragma unroll
        for (int e = tid; e < BK * BN; e += NT) {
            const int r = e / BN, c = e % BN, gr = k0 + r, gc = col0 + c;
            Bs[r][c] = (gr < k_hi && gc < N) ? B[(long long)gr * N + gc] : T(0);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            T a[TM], b[TN];
            #pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + i * TY];
            #pragma unroll
            for (int j = 0; j < TN; ++j) b[j] = Bs[kk][tx + j * TX];
            #pragma unroll
            for (int i = 0; i < TM; ++i)
                #pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int r = row0 + ty + i * TY;
        if (r >= M) continue;
        #pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int c = col0 + tx + j * TX;
            if (c < N) Cm[(long long)r * N + c] = acc[i][j];
        }
    }
}

// float: 128 x 128 tiles with 8 x 8 per thread for large C, 64 x 64 with 4 x 4 (gemm_f32_small) when C
// has few 128-tiles. double: 64 x 64 tiles, 4 x 4 per thread (fewer registers). All use 256 threads;
// cuda_cupy.GEMM_TILES holds the same tile sizes for the grid.
extern "C" __global__ void __launch_bounds__(256) gemm_f32(const float* A, const float* B, float* Cm,
                                                           int M, int N, int K, int kc) {
    gemm_impl<float, 128, 128, 8, 8, 8>(A, B, Cm, M, N, K, kc);
}

extern "C" __global__ void __launch_bounds__(256) gemm_f32_small(const float* A, const float* B, float* Cm,
                                                                 int M, int N, int K, int kc) {
    gemm_impl<float, 64, 64, 16, 4, 4>(A, B, Cm, M, N, K, kc);
}

extern "C" __global__ void __launch_bounds__(256) gemm_f64(const double* A, const double* B, double* Cm,
                                                           int M, int N, int K, int kc) {
    gemm_impl<double, 64, 64, 8, 4, 4>(A, B, Cm, M, N, K, kc);
}

// C[i] = sum over z = 0..S-1 of W[z][i], in that order (the second pass of split-K).
template <typename T>
__device__ __forceinline__ void gemm_reduce_impl(const T* __restrict__ W, T* __restrict__ Cm, int S,
                                                 long long MN) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < MN;
         i += (long long)gridDim.x * blockDim.x) {
        T s = W[i];
        for (int z = 1; z < S; ++z) s += W[z * MN + i];
        Cm[i] = s;
    }
}

extern "C" __global__ void gemm_reduce_f32(const float* W, float* Cm, int S, long long MN) {
    gemm_reduce_impl<float>(W, Cm, S, MN);
}

extern "C" __global__ void gemm_reduce_f64(const double* W, double* Cm, int S, long long MN) {
    gemm_reduce_impl<double>(W, Cm, S, MN);
}
