/* Embedding gather and KV-cache store. */
#include "kernels/cpu.h"

#include <string.h>

void cpu_embed(float *y, const float *table, const int32_t *ids, int64_t n, int64_t dim)
{
    for (int64_t i = 0; i < n; i++)
        memcpy(y + i * dim, table + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
}

void cpu_kv_store(float *kc, float *vc, const float *k, const float *v, const int32_t *slot,
                  int64_t n_tok, int64_t row)
{
    for (int64_t i = 0; i < n_tok; i++) {
        memcpy(kc + (int64_t)slot[i] * row, k + i * row, (size_t)row * sizeof(float));
        memcpy(vc + (int64_t)slot[i] * row, v + i * row, (size_t)row * sizeof(float));
    }
}
