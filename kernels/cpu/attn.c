/*
 * Attention: causal over the paged KV cache (decoder) and full attention inside segments
 * (vision tower). One (token, head) pair per iteration with an online softmax (running max
 * and denominator, accumulator rescaled when the max grows), so no score buffer and no
 * allocation, whatever the context length. Scores and sums in f32.
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

static inline float dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
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

void cpu_attn_varlen(float *o, const float *q, const float *k, const float *v,
                     const int32_t *cu, int32_t n_seg, int64_t n_heads, int64_t hd, float scale)
{
    int64_t n = cu[n_seg];
    int64_t row = n_heads * hd;

#pragma omp parallel for collapse(2) schedule(dynamic, 4)
    for (int64_t t = 0; t < n; t++) {
        for (int64_t h = 0; h < n_heads; h++) {
            int32_t s = 0;
            while (cu[s + 1] <= t) s++;
            const float *qv = q + t * row + h * hd;
            float acc[HD_MAX] = {0}, mx = -INFINITY, sum = 0.0f;
            for (int64_t j = cu[s]; j < cu[s + 1]; j++) {
                float sc = dot(qv, k + j * row + h * hd, hd) * scale;
                online_step(sc, v + j * row + h * hd, hd, &mx, &sum, acc);
            }
            float *ov = o + t * row + h * hd;
            for (int64_t d = 0; d < hd; d++) ov[d] = acc[d] / sum;
        }
    }
}
