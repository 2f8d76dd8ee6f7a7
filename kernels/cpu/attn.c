/*
 * Attention: causal over the paged KV cache (decoder) and full attention inside segments
 * (vision tower), both with an online softmax (running max and denominator, accumulator
 * rescaled when the max grows), so no buffer grows with the context. The paged kernel takes
 * one (token, head) pair per iteration; the segment kernel works in sgemm-shaped tiles.
 * Scores and sums in f32.
 */
#include "kernels/cpu.h"

#include <math.h>

#define HD_MAX 512

/* Folds key j's score into the running (max, sum, acc) of one query. */
static inline void online_step(float s, const float *vv, int64_t hd, float *mx, float *sum,
                               float *acc)
{
    if (s > *mx) {
        float c = expf(*mx - s); /* 0 when *mx is -inf */
        *sum *= c;
        for (int64_t d = 0; d < hd; d++) acc[d] *= c;
        *mx = s;
    }
    float w = expf(s - *mx);
    *sum += w;
    for (int64_t d = 0; d < hd; d++) acc[d] += w * vv[d];
}

/* Vectorized (the simd reduction lets the compiler reorder the sum, in a fixed order that
 * does not depend on the batch, so results stay batch-invariant). */
static inline float dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

void cpu_attn_paged(float *o, const float *q, const float *kc, const float *vc,
                    const int32_t *q_start, const int32_t *ctx_len, const int32_t *block_tables,
                    int32_t n_seqs, int32_t max_blocks, int32_t block_size, int64_t n_heads,
                    int64_t n_kv_heads, int64_t hd, float scale)
{
    int64_t group = n_heads / n_kv_heads;
    int64_t kv_row = n_kv_heads * hd;
    int64_t n_tok = q_start[n_seqs];

#pragma omp parallel for collapse(2) schedule(dynamic, 4)
    for (int64_t t = 0; t < n_tok; t++) {
        for (int64_t h = 0; h < n_heads; h++) {
            int32_t s = 0;
            while (q_start[s + 1] <= t) s++;
            int32_t n_s = q_start[s + 1] - q_start[s];
            int32_t p = ctx_len[s] - n_s + (int32_t)(t - q_start[s]);
            const int32_t *bt = block_tables + (int64_t)s * max_blocks;
            const float *qv = q + (t * n_heads + h) * hd;
            int64_t kh = h / group;
            float acc[HD_MAX] = {0}, mx = -INFINITY, sum = 0.0f;
            for (int32_t j = 0; j <= p; j++) {
                int64_t slot = (int64_t)bt[j / block_size] * block_size + j % block_size;
                float sc = dot(qv, kc + slot * kv_row + kh * hd, hd) * scale;
                online_step(sc, vc + slot * kv_row + kh * hd, hd, &mx, &sum, acc);
            }
            float *ov = o + (t * n_heads + h) * hd;
            for (int64_t d = 0; d < hd; d++) ov[d] = acc[d] / sum;
        }
    }
}

/*
 * Full attention in tiles shaped for sgemm (the ViT's segments are long: 1 024 patches for a
 * 448×448 image, 16 384 for the largest): for each segment, head and tile of VT_Q queries,
 * walk the keys in tiles of VT_K with an online softmax. S = Q·Kᵀ and O += P·V are sgemm
 * calls on strided views of the (n, n_heads, hd) arrays; the output rows serve as the
 * accumulator. scratch holds S plus the running max and sum: cpu_attn_varlen_scratch() floats.
 */
#include <cblas.h>

enum { VT_Q = 128, VT_K = 512 };

int64_t cpu_attn_varlen_scratch(void)
{
    return (int64_t)VT_Q * VT_K + 2 * VT_Q;
}

void cpu_attn_varlen(float *o, const float *q, const float *k, const float *v,
                     const int32_t *cu, int32_t n_seg, int64_t n_heads, int64_t hd, float scale,
                     float *scratch)
{
    int64_t row = n_heads * hd;
    float *S = scratch, *mx = scratch + VT_Q * VT_K, *sum = mx + VT_Q;
    for (int32_t s = 0; s < n_seg; s++) {
        int64_t base = cu[s], L = cu[s + 1] - cu[s];
        for (int64_t h = 0; h < n_heads; h++) {
            for (int64_t q0 = 0; q0 < L; q0 += VT_Q) {
                int64_t nq = L - q0 < VT_Q ? L - q0 : VT_Q;
                const float *qt = q + (base + q0) * row + h * hd;
                float *ot = o + (base + q0) * row + h * hd;
                for (int64_t i = 0; i < nq; i++) {
                    mx[i] = -INFINITY;
                    sum[i] = 0.0f;
                    for (int64_t d = 0; d < hd; d++) ot[i * row + d] = 0.0f;
                }
                for (int64_t k0 = 0; k0 < L; k0 += VT_K) {
                    int64_t nk = L - k0 < VT_K ? L - k0 : VT_K;
                    const float *kt = k + (base + k0) * row + h * hd;
                    const float *vt = v + (base + k0) * row + h * hd;
                    /* S(nq, nk) = scale · Q(nq, hd) · K(nk, hd)ᵀ */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, (int)hd,
                                scale, qt, (int)row, kt, (int)row, 0.0f, S, (int)nk);
#pragma omp parallel for if (nq * nk > 16384)
                    for (int64_t i = 0; i < nq; i++) {
                        float *si = S + i * nk, m = mx[i];
                        for (int64_t j = 0; j < nk; j++) m = si[j] > m ? si[j] : m;
                        float c = expf(mx[i] - m), l = 0.0f; /* c = 0 on the first tile */
                        for (int64_t j = 0; j < nk; j++) {
                            si[j] = expf(si[j] - m);
                            l += si[j];
                        }
                        float *oi = ot + i * row;
                        for (int64_t d = 0; d < hd; d++) oi[d] *= c;
                        sum[i] = sum[i] * c + l;
                        mx[i] = m;
                    }
                    /* O(nq, hd) += P(nq, nk) · V(nk, hd) */
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)hd, (int)nk,
                                1.0f, S, (int)nk, vt, (int)row, 1.0f, ot, (int)row);
                }
                for (int64_t i = 0; i < nq; i++) {
                    float inv = 1.0f / sum[i];
                    for (int64_t d = 0; d < hd; d++) ot[i * row + d] *= inv;
                }
            }
        }
    }
}
