/*
 * RMS norm (plain and fused with the residual add) and LayerNorm over bf16 rows, statistics
 * in f32. One block per row; the block size follows the row length so short rows (the
 * per-head q/k norm, 128 wide) do not leave most threads idle.
 */
#include "kernels/cuda/common.cuh"

/* Threads per row-block: one warp for rows up to 256, else up to 256 threads. */
static int norm_threads(int32_t dim)
{
    if (dim <= 256) return 32;
    if (dim <= 1024) return 128;
    return 256;
}

/* grid = rows; block = norm_threads(dim); thread i handles elements i, i + blockDim, ...
 * ADD: r = bf16(res + d) is written back to res first and normalised (fused residual add). */
template <bool ADD>
static __global__ void rmsnorm_kernel(bf16 *y, bf16 *res, const bf16 *x,
                                      const bf16 *__restrict__ w, int32_t dim, float eps)
{
    int64_t row = blockIdx.x;
    const bf16 *xr = x + row * dim;
    bf16 *rr = ADD ? res + row * dim : nullptr;
    bf16 *yr = y + row * dim;
    float ss = 0.0f;
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) {
        float v;
        if (ADD) {
            bf16 r = to_bf(ld_f(rr + d) + ld_f(xr + d));
            rr[d] = r;
            v = __bfloat162float(r);
        } else {
            v = ld_f(xr + d);
        }
        ss += v * v;
    }
    ss = block_sum(ss);
    float inv = 1.0f / sqrtf(ss / (float)dim + eps);
    /* each thread re-reads only the elements it wrote or read itself: y may alias x */
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) {
        float v = ADD ? ld_f(rr + d) : ld_f(xr + d);
        yr[d] = to_bf(ld_f(w + d) * (v * inv));
    }
}

/* grid = rows; block = norm_threads(dim); two passes over the row (mean, then variance of
 * the centred values, as the CPU reference), the second and third from L1/L2. */
static __global__ void layernorm_kernel(bf16 *y, const bf16 *x, const bf16 *__restrict__ w,
                                        const bf16 *__restrict__ b, int32_t dim, float eps)
{
    int64_t row = blockIdx.x;
    const bf16 *xr = x + row * dim;
    bf16 *yr = y + row * dim;
    float s = 0.0f;
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) s += ld_f(xr + d);
    float mean = block_sum(s) / (float)dim;
    float v = 0.0f;
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x) {
        float c = ld_f(xr + d) - mean;
        v += c * c;
    }
    float inv = 1.0f / sqrtf(block_sum(v) / (float)dim + eps);
    for (int32_t d = threadIdx.x; d < dim; d += blockDim.x)
        yr[d] = to_bf((ld_f(xr + d) - mean) * inv * ld_f(w + d) + ld_f(b + d));
}

extern "C" void cuda_rmsnorm(void *y, const void *x, const void *w, int64_t rows, int32_t dim,
                             float eps, cudaStream_t s)
{
    if (rows <= 0) return;
    rmsnorm_kernel<false><<<(unsigned)rows, norm_threads(dim), 0, s>>>(
        (bf16 *)y, nullptr, (const bf16 *)x, (const bf16 *)w, dim, eps);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_add_rmsnorm(void *res, void *y, const void *d, const void *w, int64_t rows,
                                 int32_t dim, float eps, cudaStream_t s)
{
    if (rows <= 0) return;
    rmsnorm_kernel<true><<<(unsigned)rows, norm_threads(dim), 0, s>>>(
        (bf16 *)y, (bf16 *)res, (const bf16 *)d, (const bf16 *)w, dim, eps);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_layernorm(void *y, const void *x, const void *w, const void *b, int64_t rows,
                               int32_t dim, float eps, cudaStream_t s)
{
    if (rows <= 0) return;
    layernorm_kernel<<<(unsigned)rows, norm_threads(dim), 0, s>>>(
        (bf16 *)y, (const bf16 *)x, (const bf16 *)w, (const bf16 *)b, dim, eps);
    CUDA_LAUNCH_CHECK();
}
