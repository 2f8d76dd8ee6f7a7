/*
 * sample_rows.h: logits rows for the sampling tests (test_sampler_prep, test_cuda_sample):
 * a small xorshift generator and five kinds of row that stress the summary's corner cases.
 * Static inline helpers: include from any test .c that uses them.
 */
#ifndef VLM_TEST_SAMPLE_ROWS_H
#define VLM_TEST_SAMPLE_ROWS_H

#include <math.h>
#include <stdint.h>

#include "engine/base.h"

/* xorshift64* over one state per test program; reseed with sample_rng_seed(). */
static uint64_t sample_rng_state = 0x243f6a8885a308d3ull;

static inline void sample_rng_seed(uint64_t s)
{
    sample_rng_state = s ? s : 1;
}

static inline uint32_t rng_u32(void)
{
    sample_rng_state ^= sample_rng_state >> 12;
    sample_rng_state ^= sample_rng_state << 25;
    sample_rng_state ^= sample_rng_state >> 27;
    return (uint32_t)((sample_rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static inline float rng_f(float lo, float hi)
{
    return lo + (hi - lo) * ((float)rng_u32() / 4294967296.0f);
}

enum row_kind { ROW_UNIFORM, ROW_BF16_TIES, ROW_NEG_INF, ROW_PEAKED, ROW_FLAT, ROW_KINDS };
static const char *const row_name[ROW_KINDS] = {"uniform", "bf16-ties", "-inf", "peaked", "flat"};

/* Fills l (V) with a row of the given kind. */
static inline void make_row(float *l, int32_t V, enum row_kind kind)
{
    for (int32_t i = 0; i < V; i++) {
        float v = rng_f(-8.0f, 8.0f);
        switch (kind) {
        case ROW_UNIFORM: break;
        case ROW_BF16_TIES: v = bf16_to_f32(f32_to_bf16(v * 0.25f)); break; /* many equal values */
        case ROW_NEG_INF: if (rng_u32() % 4 == 0) v = -INFINITY; break;
        case ROW_PEAKED: v = v * 0.5f - 10.0f; break;
        case ROW_FLAT: v = (float)(rng_u32() % 3) * 0.5f; break; /* three levels, huge ties */
        default: break;
        }
        l[i] = v;
    }
    if (kind == ROW_PEAKED) { /* a few dominant tokens, one of them doubled */
        l[rng_u32() % (uint32_t)V] = 12.0f;
        l[rng_u32() % (uint32_t)V] = 11.5f;
        l[rng_u32() % (uint32_t)V] = 12.0f;
    }
    if (kind == ROW_NEG_INF) l[rng_u32() % (uint32_t)V] = 1.0f; /* never all -inf */
}

#endif
