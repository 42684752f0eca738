// Our tiled shared-memory GEMM, batched: C[b] (M, N) = A[b] (M, K) @ B[b] (K, N) for b < batch.
//
// Operands are row-major with unit column stride and any row stride (lda, ldb, ldc) and batch stride
// (sAb, sBb, sCb; 0 broadcasts one matrix over the batch). That lets a convolution multiply its weight
// (O, K) with every sample's columns (K, OH*OW) and write the product straight into the NCHW output,
// and read an NCHW gradient as a batch of (O, OH*OW) matrices, with no transposing copies.
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
// for S slices of K, each `kc` long: gridDim.z = batch * S, block z works on sample z / S and sums k in
// [s kc, (s+1) kc) for s = z % S, and writes its partial tile to a contiguous workspace (S, batch, M, N)
// instead of C; gemm_reduce then adds the S slabs element by element in the order s = 0, 1, ..., S-1
// and writes C. No atomics: the result is still bit-reproducible.

struct GemmArgs {
    int M, N, K, kc, S;
    long long sAb, lda, sBb, ldb, sCb, ldc;
};

template <typename T, int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void gemm_impl(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ Cm,
                                          const GemmArgs g) {
    constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY;
    __shared__ T As[BK][BM + 4];
    __shared__ T Bs[BK][BN];
    const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int b = blockIdx.z / g.S, s = blockIdx.z % g.S;
    const int k_lo = s * g.kc, k_hi = min(g.K, k_lo + g.kc);
    const int M = g.M, N = g.N;
    A += b * g.sAb;
    B += b * g.sBb;
    long long ldc = g.ldc;
    if (g.S == 1) {
        Cm += b * g.sCb;
    } else {   // partial sums go to slab (s, b) of the workspace
        Cm += ((long long)s * (gridDim.z / g.S) + b) * M * N;
        ldc = N;
    }
    T acc[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

    for (int k0 = k_lo; k0 < k_hi; k0 += BK) {
        #pragma unroll
        for (int e = tid; e < BM * BK; e += NT) {
            const int r = e / BK, c = e % BK, gr = row0 + r, gc = k0 + c;
            As[c][r] = (gr < M && gc < k_hi) ? A[gr * g.lda + gc] : T(0);
        }
        #pragma unroll
        for (int e = tid; e < BK * BN; e += NT) {
            const int r = e / BN, c = e % BN, gr = k0 + r, gc = col0 + c;
            Bs[r][c] = (gr < k_hi && gc < N) ? B[gr * g.ldb + gc] : T(0);
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            T a[TM], bv[TN];
            #pragma unroll
            for (int i = 0; i < TM; ++i) a[i] = As[kk][ty + i * TY];
            #pragma unroll
            for (int j = 0; j < TN; ++j) bv[j] = Bs[kk][tx + j * TX];
            #pragma unroll
            for (int i = 0; i < TM; ++i)
                #pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * bv[j];
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
            if (c < N) Cm[r * ldc + c] = acc[i][j];
        }
    }
}

// float: 128 x 128 tiles with 8 x 8 per thread for large C, 64 x 64 with 4 x 4 (gemm_f32_small) when C
// is small in either dimension. double: 64 x 64 tiles, 4 x 4 per thread (fewer registers). All use 256
// threads; cuda_cupy.GEMM_TILES holds the same tile sizes for the grid.
#define GEMM_ENTRY(NAME, T, BM, BN, BK, TM, TN)                                                              \
    extern "C" __global__ void __launch_bounds__(256) NAME(const T* A, const T* B, T* Cm, int M, int N,     \
            int K, int kc, int S, long long sAb, long long lda, long long sBb, long long ldb, long long sCb, \
            long long ldc) {                                                                                 \
        gemm_impl<T, BM, BN, BK, TM, TN>(A, B, Cm, GemmArgs{M, N, K, kc, S, sAb, lda, sBb, ldb, sCb, ldc}); \
    }
GEMM_ENTRY(gemm_f32, float, 128, 128, 8, 8, 8)
GEMM_ENTRY(gemm_f32_small, float, 64, 64, 16, 4, 4)
GEMM_ENTRY(gemm_f64, double, 64, 64, 8, 4, 4)

// C[b, r, c] = sum over s = 0..S-1 of W[s, b, r, c], in that order (the second pass of split-K);
// W is contiguous (S, batch, M, N), C has batch stride sCb and row stride ldc.
template <typename T>
__device__ __forceinline__ void gemm_reduce_impl(const T* __restrict__ W, T* __restrict__ Cm, int S, int batch,
                                                 int M, int N, long long sCb, long long ldc) {
    const long long total = (long long)batch * M * N;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        T acc = W[i];
        for (int s = 1; s < S; ++s) acc += W[s * total + i];
        const long long c = i % N, r = (i / N) % M, b = i / ((long long)M * N);
        Cm[b * sCb + r * ldc + c] = acc;
    }
}

extern "C" __global__ void gemm_reduce_f32(const float* W, float* Cm, int S, int batch, int M, int N,
                                           long long sCb, long long ldc) {
    gemm_reduce_impl<float>(W, Cm, S, batch, M, N, sCb, ldc);
}

extern "C" __global__ void gemm_reduce_f64(const double* W, double* Cm, int S, int batch, int M, int N,
                                           long long sCb, long long ldc) {
    gemm_reduce_impl<double>(W, Cm, S, batch, M, N, sCb, ldc);
}
