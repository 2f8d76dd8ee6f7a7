/*
 * Shared pieces of the CUDA kernel files: the error checks (from kernels/cuda.h), the
 * per-launch check, warp and block reductions, bf16 conversions and 16-byte vector helpers.
 * Device code only reads and writes through these; nothing here allocates.
 */
#pragma once

#include "kernels/cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf162;

/* After every launch: debug builds check at once (the failing kernel is named by its file and
 * line); release builds leave it to the backend's once-per-step check. */
#ifdef NDEBUG
#define CUDA_LAUNCH_CHECK() ((void)0)
#else
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())
#endif

static inline int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Blocks for a 1-D grid-stride launch over n items: enough to fill the GPU, capped so the
 * grid dimension stays in range. */
static inline unsigned grid_1d(int64_t n, int threads)
{
    int64_t b = cdiv(n, threads);
    if (b > 65535 * 8) b = 65535 * 8;
    if (b < 1) b = 1;
    return (unsigned)b;
}

/* ==== Reductions ==== */

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the
 * result. Uses 33 floats of shared memory; safe to call repeatedly in one kernel. */
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float part[32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (n_warps == 1) return v;
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < n_warps ? part[lane] : 0.0f;
        t = warp_sum(t);
        if (lane == 0) total = t;
    }
    __syncthreads();
    return total;
}

/* ==== bf16 ==== */

__device__ __forceinline__ float ld_f(const bf16 *p)
{
    return __bfloat162float(*p);
}

__device__ __forceinline__ bf16 to_bf(float f)
{
    return __float2bfloat16_rn(f);
}

/* 8 bf16 in one 16-byte word, for vector loads and stores. */
union bf16x8 {
    uint4 u;
    bf162 h2[4];
    bf16 h[8];
};
