/*
 * test_attn_paged: the CPU paged attention (kernels/cpu/attn.c, tiled per sequence, KV head
 * and token tile) against a float64 softmax written out plainly, on random data: GQA groups
 * of 1, 2, 4 and 40 (larger than one item's rows, so a group spans several items), head
 * sizes 32 and 128, block sizes 16 and 5 (chunks that end at block edges), several
 * sequences per step with prefill chunks and single decode tokens, block tables in shuffled
 * order. Bound: max |out − ref| ≤ 5e-5 (f32 arithmetic; outputs of magnitude ≤ 1); every output
 * written (poisoned with NaN first). Fresh inputs per run (VLM_TEST_SEED=N repeats one).
 */
#include "engine/base.h"
#include "kernels/cpu.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

static uint64_t rng_s;

static float rng_f(void)
{
    rng_s ^= rng_s >> 12;
    rng_s ^= rng_s << 25;
    rng_s ^= rng_s >> 27;
    return (float)((rng_s * 0x2545f4914f6cdd1dull) >> 40) / 8388608.0f * 2.0f - 1.0f;
}

#define N_SEQS 3

static double run_case(int64_t n_heads, int64_t n_kv, int64_t hd, int32_t bs)
{
    static const int32_t q_len[N_SEQS] = {37, 1, 6}, ctx[N_SEQS] = {37, 70, 29};
    int32_t q_start[N_SEQS + 1] = {0}, max_blocks = 0;
    for (int s = 0; s < N_SEQS; s++) {
        q_start[s + 1] = q_start[s] + q_len[s];
        max_blocks = VLM_MAX(max_blocks, (ctx[s] + bs - 1) / bs);
    }
    int32_t n_tok = q_start[N_SEQS], n_blocks = 1 + N_SEQS * max_blocks;
    int32_t *bt = xcalloc((size_t)(N_SEQS * max_blocks), sizeof *bt);
    /* blocks 1..n_blocks-1 handed out in a shuffled order */
    int32_t *perm = xmalloc((size_t)n_blocks * sizeof *perm);
    for (int32_t i = 0; i < n_blocks - 1; i++) perm[i] = i + 1;
    for (int32_t i = n_blocks - 2; i > 0; i--) {
        int32_t j = (int32_t)((rng_f() + 1.0f) * 0.5f * (float)i) % (i + 1), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int32_t i = 0; i < N_SEQS * max_blocks; i++) bt[i] = perm[i];
    int64_t row = n_kv * hd, slots = (int64_t)n_blocks * bs;
    float *kc = xmalloc((size_t)(slots * row) * sizeof(float));
    float *vc = xmalloc((size_t)(slots * row) * sizeof(float));
    float *q = xmalloc((size_t)(n_tok * n_heads * hd) * sizeof(float));
    float *o = xmalloc((size_t)(n_tok * n_heads * hd) * sizeof(float));
    for (int64_t i = 0; i < slots * row; i++) kc[i] = rng_f(), vc[i] = rng_f();
    for (int64_t i = 0; i < n_tok * n_heads * hd; i++) q[i] = rng_f() * 2.0f, o[i] = NAN;
    float scale = 1.0f / sqrtf((float)hd);
    cpu_attn_paged(o, q, kc, vc, q_start, ctx, bt, N_SEQS, max_blocks, bs, n_heads, n_kv, hd,
                   scale);
    double worst = 0;
    double *sc = xmalloc(100 * sizeof *sc), *acc = xmalloc((size_t)hd * sizeof *acc);
    for (int s = 0; s < N_SEQS; s++)
        for (int32_t i = 0; i < q_len[s]; i++) {
            int64_t t = q_start[s] + i;
            int32_t p = ctx[s] - q_len[s] + i;
            for (int64_t h = 0; h < n_heads; h++) {
                int64_t kh = h / (n_heads / n_kv);
                const float *qv = q + (t * n_heads + h) * hd;
                double mx = -INFINITY, sum = 0;
                for (int32_t j = 0; j <= p; j++) {
                    int64_t slot = (int64_t)bt[s * max_blocks + j / bs] * bs + j % bs;
                    double d = 0;
                    for (int64_t e = 0; e < hd; e++) d += (double)qv[e] * kc[slot * row + kh * hd + e];
                    sc[j] = d * scale;
                    mx = fmax(mx, sc[j]);
                }
                for (int64_t e = 0; e < hd; e++) acc[e] = 0;
                for (int32_t j = 0; j <= p; j++) {
                    int64_t slot = (int64_t)bt[s * max_blocks + j / bs] * bs + j % bs;
                    double w = exp(sc[j] - mx);
                    sum += w;
                    for (int64_t e = 0; e < hd; e++) acc[e] += w * vc[slot * row + kh * hd + e];
                }
                for (int64_t e = 0; e < hd; e++) {
                    double got = o[(t * n_heads + h) * hd + e];
                    worst = fmax(worst, isfinite(got) ? fabs(got - acc[e] / sum) : INFINITY);
                }
            }
        }
    free(sc), free(acc), free(bt), free(perm), free(kc), free(vc), free(q), free(o);
    return worst;
}

int main(void)
{
    uint64_t seed = getenv("VLM_TEST_SEED") ? strtoull(getenv("VLM_TEST_SEED"), NULL, 10)
                                             : (uint64_t)time(NULL);
    printf("seed %llu (VLM_TEST_SEED=%llu repeats this run); kernels %s\n",
           (unsigned long long)seed, (unsigned long long)seed, cpu_isa_name(cpu_isa_best()));
    rng_s = seed * 0x9e3779b97f4a7c15ull + 1;
    static const int64_t shapes[][3] = {{4, 4, 32}, {8, 4, 32}, {16, 4, 128}, {16, 8, 128}, {40, 1, 32}};
    static const int32_t bss[] = {16, 5};
    for (size_t i = 0; i < ARRAY_LEN(shapes); i++)
        for (size_t b = 0; b < ARRAY_LEN(bss); b++) {
            char name[128];
            snprintf(name, sizeof name, "heads %lld / kv %lld x %lld, block size %d",
                     (long long)shapes[i][0], (long long)shapes[i][1], (long long)shapes[i][2],
                     bss[b]);
            TEST(name)
            {
                double w = run_case(shapes[i][0], shapes[i][1], shapes[i][2], bss[b]);
                printf("  %s: max |out - ref| %.3g\n", name, w);
                CHECK(w <= 5e-5);
            }
        }
    return test_report();
}
