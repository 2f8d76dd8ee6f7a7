/* Rotary embeddings, rotate-half convention: dims d and d + hd/2 form a pair. */
#include "kernels/cpu.h"

#include <math.h>

void cpu_rope_neox(float *x, const int32_t *pos, int64_t n_tok, int64_t n_heads, int64_t hd,
                   float theta)
{
    int64_t half = hd / 2;
#pragma omp parallel for if (n_tok > 16)
    for (int64_t t = 0; t < n_tok; t++) {
        float cs[512], sn[512]; /* half <= 512: head_dim <= 1024 */
        for (int64_t i = 0; i < half; i++) {
            /* as HF: inv_freq = 1 / theta^(2i/hd) in f32, angle = pos * inv_freq in f32 */
            float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
            float ang = (float)pos[t] * inv_freq;
            cs[i] = cosf(ang);
            sn[i] = sinf(ang);
        }
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * hd;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

void cpu_rope_table(float *x, const float *cos, const float *sin, int64_t n, int64_t n_heads,
                    int64_t hd)
{
    int64_t half = hd / 2;
#pragma omp parallel for if (n > 16)
    for (int64_t t = 0; t < n; t++) {
        const float *c = cos + t * hd, *s = sin + t * hd;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * hd;
            for (int64_t i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}
