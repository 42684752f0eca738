// Our tiled shared-memory GEMM: C (M, N) = A (M, K) @ B (K, N), all row-major and contiguous.
//
// Each block of 256 threads computes a BM x BN tile of C, stepping through K in slices of BK: it stages
// A's BM x BK slice (transposed, padded by 4 so the transposing stores hit 32 different banks) and B's
// BK x BN slice in shared memory, then every thread accumulates a TM x TN sub-tile in registers. A
// thread's rows and columns are strided by the thread grid (ty + i * TY, tx + j * TX), so the shared
// loads of a warp read consecutive words (no bank conflicts) and the stores to C are coalesced.
// Loads outside the matrices read 0, so any M, N, K works. The sum over k runs in a fixed order:
// the result is deterministic.

template <typename T, int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void gemm_impl(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ Cm,
                                          int M, int N, int K) {
    constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;
    __shared__ T As[BK][BM + 4];
    __shared__ T Bs[BK][BN];
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    T acc[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

    for (int k0 = 0; k0 < K; k0 += BK) {
        #pragma unroll
        for (int e = tid; e < BM * BK; e += NT) {
            const int r = e / BK, c = e % BK, gr = row0 + r, gc = k0 + c;
            As[c][r] = (gr < M && gc < K) ? A[(long long)gr * K + gc] : T(0);
        }
        #pragma unroll
        for (int e = tid; e < BK * BN; e += NT) {
            const int r = e / BN, c = e % BN, gr = k0 + r, gc = col0 + c;
            Bs[r][c] = (gr < K && gc < N) ? B[(long long)gr * N + gc] : T(0);
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

// float: 128 x 128 tiles, 8 x 8 per thread. double: 64 x 64 tiles, 4 x 4 per thread (fewer registers).
// Both use 256 threads; cuda_cupy.GEMM_TILES holds the same tile sizes for the grid.
extern "C" __global__ void __launch_bounds__(256) gemm_f32(const float* A, const float* B, float* Cm,
                                                           int M, int N, int K) {
    gemm_impl<float, 128, 128, 8, 8, 8>(A, B, Cm, M, N, K);
}

extern "C" __global__ void __launch_bounds__(256) gemm_f64(const double* A, const double* B, double* Cm,
                                                           int M, int N, int K) {
    gemm_impl<double, 64, 64, 8, 4, 4>(A, B, Cm, M, N, K);
}
