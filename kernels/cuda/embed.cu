/*
 * Row movement: token embedding gather, gather/scatter of whole rows by index (logit rows,
 * image embeddings into their placeholder positions), and dtype casts. Pure copies move
 * 16 bytes per thread when rows allow it, 4 or 2 bytes otherwise.
 */
#include "kernels/cuda/common.cuh"

/* grid = (rows); block = 128; thread j copies words j, j + 128, ... of one row. The word
 * type W is the widest the row length and the base pointers allow. SCATTER swaps the roles
 * of the index: dst row idx[i] = src row i. */
template <class W, bool SCATTER>
static __global__ void rows_kernel(char *dst, const char *src, const int32_t *__restrict__ idx,
                                   int64_t row_bytes)
{
    int64_t i = blockIdx.x;
    int64_t r = idx[i];
    const W *s = (const W *)(src + (SCATTER ? i : r) * row_bytes);
    W *d = (W *)(dst + (SCATTER ? r : i) * row_bytes);
    int64_t n = row_bytes / (int64_t)sizeof(W);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) d[j] = s[j];
}

template <bool SCATTER>
static void launch_rows(void *dst, const void *src, const int32_t *idx, int32_t n,
                        int64_t row_bytes, cudaStream_t s)
{
    if (n <= 0 || row_bytes <= 0) return;
    uintptr_t a = (uintptr_t)dst | (uintptr_t)src | (uintptr_t)row_bytes;
    char *d = (char *)dst;
    const char *sr = (const char *)src;
    if (a % 16 == 0) rows_kernel<uint4, SCATTER><<<n, 128, 0, s>>>(d, sr, idx, row_bytes);
    else if (a % 4 == 0) rows_kernel<uint32_t, SCATTER><<<n, 128, 0, s>>>(d, sr, idx, row_bytes);
    else if (a % 2 == 0) rows_kernel<uint16_t, SCATTER><<<n, 128, 0, s>>>(d, sr, idx, row_bytes);
    else rows_kernel<uint8_t, SCATTER><<<n, 128, 0, s>>>(d, sr, idx, row_bytes);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_embed(void *y, const void *table, const int32_t *ids, int32_t n, int32_t dim,
                           cudaStream_t s)
{
    launch_rows<false>(y, table, ids, n, (int64_t)dim * 2, s);
}

extern "C" void cuda_gather_rows(void *dst, const void *src, const int32_t *idx, int32_t n,
                                 int64_t row_bytes, cudaStream_t s)
{
    launch_rows<false>(dst, src, idx, n, row_bytes, s);
}

extern "C" void cuda_scatter_rows(void *dst, const void *src, const int32_t *idx, int32_t n,
                                  int64_t row_bytes, cudaStream_t s)
{
    launch_rows<true>(dst, src, idx, n, row_bytes, s);
}

/* ==== Casts ==== */

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

/* grid-stride, one element per thread per iteration, through f32 (exact for every pair
 * of these types except the final rounding). */
template <class TY, class TX>
static __global__ void cast_kernel(TY *y, const TX *__restrict__ x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = from_f<TY>(to_f(x[i]));
}

template <class TY>
static void launch_cast(TY *y, const void *x, enum cuda_dtype xt, int64_t n, cudaStream_t s)
{
    unsigned g = grid_1d(n, 256);
    switch (xt) {
    case CUDA_DT_F32: cast_kernel<<<g, 256, 0, s>>>(y, (const float *)x, n); break;
    case CUDA_DT_BF16: cast_kernel<<<g, 256, 0, s>>>(y, (const bf16 *)x, n); break;
    case CUDA_DT_F16: cast_kernel<<<g, 256, 0, s>>>(y, (const __half *)x, n); break;
    }
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_cast(void *y, enum cuda_dtype yt, const void *x, enum cuda_dtype xt,
                          int64_t n, cudaStream_t s)
{
    if (n <= 0) return;
    switch (yt) {
    case CUDA_DT_F32: launch_cast((float *)y, x, xt, n, s); break;
    case CUDA_DT_BF16: launch_cast((bf16 *)y, x, xt, n, s); break;
    case CUDA_DT_F16: launch_cast((__half *)y, x, xt, n, s); break;
    }
}
