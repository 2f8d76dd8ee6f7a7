/*
 * Row softmax over bf16: one block per row, three passes over the row (max, sum of exponentials, scaled write), f32 throughout.
 * A row of a few tens of thousands of bf16 stays in L2 between the passes.
 */
#include "kernels/cuda/common.cuh"

#define SOFTMAX_THREADS 256

/* Max over the block (blockDim.x == SOFTMAX_THREADS); every thread gets the result. */
__device__ __forceinline__ float block_max(float v)
{
    __shared__ float part[SOFTMAX_THREADS / 32];
    __shared__ float total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads(); /* part[] may still be read by a previous call */
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < SOFTMAX_THREADS / 32 ? part[lane] : -INFINITY;
        t = warp_max(t);
        if (lane == 0) total = t;
    }
    __syncthreads();
    return total;
}

/* Every read of the row (passes 1 and 2) happens before the barriers inside block_sum, so y
 * may alias x: pass 3 reads and writes each element in the same thread. */
static __global__ void softmax_rows_kernel(bf16 *y, const bf16 *x, int32_t dim)
{
    const bf16 *xr = x + (int64_t)blockIdx.x * dim;
    bf16 *yr = y + (int64_t)blockIdx.x * dim;
    float mx = -INFINITY;
    for (int32_t i = threadIdx.x; i < dim; i += SOFTMAX_THREADS) mx = fmaxf(mx, ld_f(xr + i));
    mx = block_max(mx);
    float sum = 0.0f;
    for (int32_t i = threadIdx.x; i < dim; i += SOFTMAX_THREADS) sum += expf(ld_f(xr + i) - mx);
    sum = block_sum(sum);
    float inv = 1.0f / sum;
    for (int32_t i = threadIdx.x; i < dim; i += SOFTMAX_THREADS)
        yr[i] = to_bf(expf(ld_f(xr + i) - mx) * inv);
}

extern "C" void cuda_softmax_rows(void *y, const void *x, int64_t rows, int32_t dim,
                                  cudaStream_t s)
{
    if (rows <= 0 || dim <= 0) return;
    softmax_rows_kernel<<<(unsigned)rows, SOFTMAX_THREADS, 0, s>>>((bf16 *)y, (const bf16 *)x,
                                                                   dim);
    CUDA_LAUNCH_CHECK();
}
