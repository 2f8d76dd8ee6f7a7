/*
 * Rotary embeddings, rotate-half convention (dims i and i + hd/2 form a pair), in place on
 * bf16 (n_tok, n_heads, hd): the decoder's 1-D RoPE from positions, the ViT's 2-D RoPE from
 * per-row cos/sin tables, and the decoder's q/k RMS norm fused with its RoPE.
 * Angles as the CPU reference and HF: inv_freq = 1/theta^(2i/hd) in f32 (a host table made
 * with the same powf as the CPU), pos·inv_freq in f32, then the accurate sincosf (no
 * fast-math), since positions reach tens of thousands of radians.
 */
#include "kernels/cuda/common.cuh"

#include <math.h>

extern "C" void cuda_rope_inv_freq(float *inv_freq, int32_t hd, float theta)
{
    for (int32_t i = 0; i < hd / 2; i++)
        inv_freq[i] = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
}

/* grid-stride over n_tok · n_heads · hd/2 pairs; one thread rotates one (t, h, i) pair. */
static __global__ void rope_neox_kernel(bf16 *x, const int32_t *__restrict__ pos,
                                        const float *__restrict__ inv_freq, int32_t n_tok,
                                        int32_t n_heads, int32_t hd)
{
    int32_t half = hd / 2;
    int64_t n = (int64_t)n_tok * n_heads * half;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        int32_t i = (int32_t)(k % half);
        int64_t th = k / half; /* t * n_heads + h */
        int32_t t = (int32_t)(th / n_heads);
        float sn, cs;
        sincosf((float)pos[t] * inv_freq[i], &sn, &cs);
        bf16 *v = x + th * hd;
        float a = ld_f(v + i), b = ld_f(v + i + half);
        v[i] = to_bf(a * cs - b * sn);
        v[i + half] = to_bf(b * cs + a * sn);
    }
}

/* grid-stride over n · n_heads · hd/2 pairs; cos/sin rows are per token (n, hd) f32. */
static __global__ void rope_table_kernel(bf16 *x, const float *__restrict__ cos,
                                         const float *__restrict__ sin, int32_t n_rows,
                                         int32_t n_heads, int32_t hd)
{
    int32_t half = hd / 2;
    int64_t n = (int64_t)n_rows * n_heads * half;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n;
         k += (int64_t)gridDim.x * blockDim.x) {
        int32_t i = (int32_t)(k % half);
        int64_t th = k / half;
        int64_t t = th / n_heads;
        const float *c = cos + t * hd, *s = sin + t * hd;
        bf16 *v = x + th * hd;
        float a = ld_f(v + i), b = ld_f(v + i + half);
        v[i] = to_bf(a * c[i] - b * s[i]);
        v[i + half] = to_bf(b * c[i + half] + a * s[i + half]);
    }
}

/* grid = n_tok · n_heads / 4 blocks of 4 warps; one warp per (t, h) row of hd <= 256: lane
 * holds pairs (i, i + half) for i = lane, lane + 32, ... (at most 4), so the norm's sum and
 * the rotation both stay in registers. The normed value is rounded to bf16 before the
 * rotation, as the unfused rmsnorm-then-rope path stores it. */
#define QKNR_WARPS 4
static __global__ void qk_norm_rope_kernel(bf16 *x, const bf16 *__restrict__ w,
                                           const int32_t *__restrict__ pos,
                                           const float *__restrict__ inv_freq, int32_t n_tok,
                                           int32_t n_heads, int32_t hd, float eps)
{
    int64_t row = (int64_t)blockIdx.x * QKNR_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= (int64_t)n_tok * n_heads) return;
    int32_t half = hd / 2, t = (int32_t)(row / n_heads);
    bf16 *v = x + row * hd;
    float a[4], b[4], ss = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int32_t i = lane + 32 * j;
        a[j] = i < half ? ld_f(v + i) : 0.0f;
        b[j] = i < half ? ld_f(v + i + half) : 0.0f;
        ss += a[j] * a[j] + b[j] * b[j];
    }
    float inv = 1.0f / sqrtf(warp_sum(ss) / (float)hd + eps);
    float p = (float)pos[t];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int32_t i = lane + 32 * j;
        if (i >= half) break;
        float na = __bfloat162float(to_bf(ld_f(w + i) * (a[j] * inv)));
        float nb = __bfloat162float(to_bf(ld_f(w + i + half) * (b[j] * inv)));
        float sn, cs;
        sincosf(p * inv_freq[i], &sn, &cs);
        v[i] = to_bf(na * cs - nb * sn);
        v[i + half] = to_bf(nb * cs + na * sn);
    }
}

extern "C" void cuda_rope_neox(void *x, const int32_t *pos, const float *inv_freq,
                               int32_t n_tok, int32_t n_heads, int32_t hd, cudaStream_t s)
{
    int64_t n = (int64_t)n_tok * n_heads * (hd / 2);
    if (n <= 0) return;
    rope_neox_kernel<<<grid_1d(n, 256), 256, 0, s>>>((bf16 *)x, pos, inv_freq, n_tok, n_heads,
                                                     hd);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_rope_table(void *x, const float *cos, const float *sin, int32_t n,
                                int32_t n_heads, int32_t hd, cudaStream_t s)
{
    int64_t m = (int64_t)n * n_heads * (hd / 2);
    if (m <= 0) return;
    rope_table_kernel<<<grid_1d(m, 256), 256, 0, s>>>((bf16 *)x, cos, sin, n, n_heads, hd);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_qk_norm_rope(void *x, const void *w, const int32_t *pos,
                                  const float *inv_freq, int32_t n_tok, int32_t n_heads,
                                  int32_t hd, float eps, cudaStream_t s)
{
    int64_t rows = (int64_t)n_tok * n_heads;
    if (rows <= 0) return;
    if (hd > 256 || hd % 2) {
        fprintf(stderr, "valley: cuda_qk_norm_rope: head_dim %d not even or > 256\n", hd);
        abort();
    }
    qk_norm_rope_kernel<<<(unsigned)cdiv(rows, QKNR_WARPS), 32 * QKNR_WARPS, 0, s>>>(
        (bf16 *)x, (const bf16 *)w, pos, inv_freq, n_tok, n_heads, hd, eps);
    CUDA_LAUNCH_CHECK();
}
