/*
 * test_gemm16: the products with 16-bit weights (kernels/cpu/gemm16.c), every ISA variant
 * this CPU has against the plain C reference, at odd shapes: M from 1 to 40 (the decode
 * block, the prefill blocks and their tails), N not a multiple of the 3- or 4-row group, K
 * not a multiple of any vector width, and K large enough for several x blocks.
 *
 *   - exact and fast against the reference of the same numerics: every element within
 *     1e-5 of the sum of |x·w| terms (only the summation order differs);
 *   - against a float64 product of the unrounded inputs (K >= 64, 8 outputs or more): exact
 *     within 1e-5 in ‖out − ref‖ / ‖ref‖, fast within 5e-3 (the CUDA backend's matmul
 *     bound in test_ops.c);
 *   - batch invariance: each row computed alone, and on one thread, gives the same bits;
 *   - every output written (outputs poisoned with NaN first).
 * Inputs are fresh per run (seed printed; VLM_TEST_SEED=N repeats one).
 */
#include "engine/base.h"
#include "kernels/cpu.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_s;

static float rng_f(void)
{
    rng_s ^= rng_s >> 12;
    rng_s ^= rng_s << 25;
    rng_s ^= rng_s >> 27;
    return (float)((rng_s * 0x2545f4914f6cdd1dull) >> 40) / 8388608.0f * 2.0f - 1.0f;
}

struct prob {
    int64_t M, N, K;
    bool f16;
    float *x, *bias;
    uint16_t *w;
    double *ref64; /* (M, N) float64 product of the unrounded x and the widened w */
};

static float wval(const struct prob *p, int64_t i)
{
    return p->f16 ? f16_to_f32(p->w[i]) : bf16_to_f32(p->w[i]);
}

static uint16_t f32_to_f16_bits(float f)
{
    /* test data in [-1, 1]: normal halves, or zero */
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t s = (u >> 16) & 0x8000u;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    if (e <= 0) return (uint16_t)s;
    return (uint16_t)(s | ((uint32_t)e << 10) | ((u >> 13) & 0x3ffu));
}

static void prob_make(struct prob *p, int64_t M, int64_t N, int64_t K, bool f16)
{
    *p = (struct prob){.M = M, .N = N, .K = K, .f16 = f16};
    p->x = xmalloc((size_t)(M * K) * sizeof(float));
    p->w = xmalloc((size_t)(N * K) * sizeof(uint16_t));
    p->bias = xmalloc((size_t)N * sizeof(float));
    p->ref64 = xmalloc((size_t)(M * N) * sizeof(double));
    for (int64_t i = 0; i < M * K; i++) p->x[i] = rng_f() * 3.0f;
    for (int64_t i = 0; i < N * K; i++)
        p->w[i] = f16 ? f32_to_f16_bits(rng_f()) : f32_to_bf16(rng_f());
    for (int64_t i = 0; i < N; i++) p->bias[i] = rng_f();
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = p->bias[n];
            for (int64_t k = 0; k < K; k++) s += (double)p->x[m * K + k] * wval(p, n * K + k);
            p->ref64[m * N + n] = s;
        }
}

static void prob_free(struct prob *p)
{
    free(p->x), free(p->w), free(p->bias), free(p->ref64);
}

static float *run(const struct prob *p, bool fast, enum cpu_isa isa, int threads)
{
    float *y = xmalloc((size_t)(p->M * p->N) * sizeof(float));
    for (int64_t i = 0; i < p->M * p->N; i++) y[i] = NAN;
    size_t sb = (size_t)threads * (size_t)cpu_matmul_w16_scratch(p->K);
    void *scratch = NULL;
    VLM_ASSERT(!posix_memalign(&scratch, 64, sb));
    cpu_matmul_w16(y, p->x, p->w, p->f16, p->bias, p->M, p->N, p->K, fast, isa, scratch, threads);
    free(scratch);
    return y;
}

/* Checks one ISA and numerics on p; returns false on the first failure (printed). */
static bool check(const struct prob *p, bool fast, enum cpu_isa isa)
{
    int64_t M = p->M, N = p->N, K = p->K;
    float *ref = run(p, fast, CPU_ISA_REF, 2), *y = run(p, fast, isa, 2);
    bool ok = true;
    double e2 = 0, r2 = 0;
    for (int64_t m = 0; m < M && ok; m++)
        for (int64_t n = 0; n < N && ok; n++) {
            double mag = fabs(p->bias[n]);
            for (int64_t k = 0; k < K; k++) mag += fabs((double)p->x[m * K + k] * wval(p, n * K + k));
            double a = y[m * N + n], b = ref[m * N + n];
            if (!(fabs(a - b) <= 1e-5 * mag + 1e-30)) {
                fprintf(stderr, "  %s %s M=%lld N=%lld K=%lld y[%lld,%lld] = %.9g, ref %.9g\n",
                        cpu_isa_name(isa), fast ? "fast" : "exact", (long long)M, (long long)N,
                        (long long)K, (long long)m, (long long)n, a, b);
                ok = false;
            }
            e2 += (a - p->ref64[m * N + n]) * (a - p->ref64[m * N + n]);
            r2 += p->ref64[m * N + n] * p->ref64[m * N + n];
        }
    /* a norm over a handful of short dot products says little: bound the larger ones */
    double bound = fast ? 5e-3 : 1e-5;
    if (ok && K >= 64 && M * N >= 8 && !(sqrt(e2) <= bound * sqrt(r2))) {
        fprintf(stderr, "  %s %s M=%lld N=%lld K=%lld: rel err %.3g vs float64 > %.0e\n",
                cpu_isa_name(isa), fast ? "fast" : "exact", (long long)M, (long long)N,
                (long long)K, sqrt(e2 / r2), bound);
        ok = false;
    }
    /* batch invariance: row by row, and on one thread, the same bits */
    float *y1 = run(p, fast, isa, 1);
    if (ok && memcmp(y1, y, (size_t)(M * N) * sizeof(float))) {
        fprintf(stderr, "  %s: 1 thread differs from 2\n", cpu_isa_name(isa));
        ok = false;
    }
    for (int64_t m = 0; m < M && ok; m++) {
        struct prob row = *p;
        row.M = 1;
        row.x = p->x + m * K;
        float *yr = run(&row, fast, isa, 2);
        if (memcmp(yr, y + m * N, (size_t)N * sizeof(float))) {
            fprintf(stderr, "  %s %s M=%lld K=%lld: row %lld alone differs\n", cpu_isa_name(isa),
                    fast ? "fast" : "exact", (long long)M, (long long)K, (long long)m);
            ok = false;
        }
        free(yr);
    }
    free(y1), free(ref), free(y);
    return ok;
}

int main(void)
{
    uint64_t seed = getenv("VLM_TEST_SEED") ? strtoull(getenv("VLM_TEST_SEED"), NULL, 10)
                                             : (uint64_t)time(NULL);
    printf("seed %llu (VLM_TEST_SEED=%llu repeats this run)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    rng_s = seed * 0x9e3779b97f4a7c15ull + 1;
    enum cpu_isa best = cpu_isa_best();
    printf("this CPU: %s\n", cpu_isa_name(best));

    TEST("bf16 rounding: nearest, ties to even")
    {
        CHECK(cpu_round_bf16(1.0f) == 1.0f);
        CHECK(cpu_round_bf16(1.0f + 0x1p-8f) == 1.0f);              /* tie: to even */
        CHECK(cpu_round_bf16(1.0f + 3 * 0x1p-8f) == 1.0f + 0x1p-6f); /* tie: to even (up) */
        CHECK(cpu_round_bf16(1.0f + 0x1p-8f + 0x1p-20f) == 1.0f + 0x1p-7f);
        CHECK(cpu_round_bf16(-2.5f) == -2.5f);
        CHECK(isnan(cpu_round_bf16(NAN)));
    }

    static const int64_t Ns[] = {1, 3, 6, 8, 13}; /* every remainder of 3- and 4-row groups */
    static const int64_t Ks[] = {1, 7, 15, 16, 31, 33, 100, 129};
    for (int isa = CPU_ISA_AVX2; isa <= (int)best; isa++) {
        for (int f16 = 0; f16 < 2; f16++) {
            char name[96];
            snprintf(name, sizeof name, "%s, %s weights: M 1..40 x odd N, K", cpu_isa_name(isa),
                     f16 ? "f16" : "bf16");
            TEST(name)
            {
                bool ok = true;
                for (int64_t M = 1; M <= 40 && ok; M++)
                    for (size_t ni = 0; ni < ARRAY_LEN(Ns) && ok; ni++)
                        for (size_t ki = 0; ki < ARRAY_LEN(Ks) && ok; ki++) {
                            if ((M > 4 && M != 7 && M != 16 && M != 17 && M != 40) && (ni || ki != 6))
                                continue; /* every M at one shape, every shape at a few M */
                            struct prob p;
                            prob_make(&p, M, Ns[ni], Ks[ki], f16);
                            ok = check(&p, false, (enum cpu_isa)isa) && check(&p, true, (enum cpu_isa)isa);
                            prob_free(&p);
                        }
                CHECK(ok);
            }
            snprintf(name, sizeof name, "%s, %s weights: several x blocks (K 5000, 40000)",
                     cpu_isa_name(isa), f16 ? "f16" : "bf16");
            TEST(name)
            {
                struct prob p;
                prob_make(&p, 40, 9, 5000, f16);
                CHECK(check(&p, false, (enum cpu_isa)isa) && check(&p, true, (enum cpu_isa)isa));
                prob_free(&p);
                prob_make(&p, 20, 5, 40000, f16);
                CHECK(check(&p, false, (enum cpu_isa)isa) && check(&p, true, (enum cpu_isa)isa));
                prob_free(&p);
            }
        }
    }
    /* several products of one x in one region: each y the bits of its own product, whatever
     * the split of the groups over threads (a thread's range crossing a product boundary) */
    for (int isa = CPU_ISA_REF; isa <= (int)best; isa++) {
        char name[96];
        snprintf(name, sizeof name, "%s: 3 products of one x = 3 single products, bit for bit",
                 cpu_isa_name(isa));
        TEST(name)
        {
            static const int64_t Nq[][3] = {{13, 5, 5}, {1, 8, 3}, {40, 7, 22}};
            static const int64_t Mq[] = {1, 3, 8, 9, 17};
            bool ok = true;
            for (size_t s = 0; s < ARRAY_LEN(Nq) && ok; s++)
                for (size_t mi = 0; mi < ARRAY_LEN(Mq) && ok; mi++)
                    for (int f = 0; f < 4 && ok; f++) {
                        bool fast = f & 1, f16 = f & 2;
                        int64_t M = Mq[mi], K = 100;
                        struct prob p[3];
                        struct cpu_w16_product q[3];
                        float *single[3];
                        for (int i = 0; i < 3; i++) {
                            prob_make(&p[i], M, Nq[s][i], K, f16);
                            if (i) memcpy(p[i].x, p[0].x, (size_t)(M * K) * sizeof(float));
                            single[i] = run(&p[i], fast, (enum cpu_isa)isa, 2);
                            q[i] = (struct cpu_w16_product){
                                .y = xmalloc((size_t)(M * p[i].N) * sizeof(float)),
                                .w = p[i].w, .bias = i == 1 ? NULL : p[i].bias, .N = p[i].N};
                        }
                        for (int threads = 1; threads <= 3 && ok; threads++) {
                            size_t sb = (size_t)threads * (size_t)cpu_matmul_w16_scratch(K);
                            void *scratch = NULL;
                            VLM_ASSERT(!posix_memalign(&scratch, 64, sb));
                            cpu_matmul_w16_multi(q, 3, p[0].x, f16, M, K, fast, (enum cpu_isa)isa,
                                                 scratch, threads);
                            free(scratch);
                            for (int i = 0; i < 3 && ok; i++) {
                                if (i == 1) /* product 1 has no bias: add the single one's */
                                    for (int64_t m = 0; m < M; m++)
                                        for (int64_t n = 0; n < p[i].N; n++)
                                            q[i].y[m * p[i].N + n] += p[i].bias[n];
                                if (memcmp(q[i].y, single[i], (size_t)(M * p[i].N) * sizeof(float))) {
                                    fprintf(stderr, "  %s %s M=%lld set %zu, %d threads: "
                                            "product %d differs\n", cpu_isa_name(isa),
                                            fast ? "fast" : "exact", (long long)M, s, threads, i);
                                    ok = false;
                                }
                            }
                        }
                        for (int i = 0; i < 3; i++) free(single[i]), free(q[i].y), prob_free(&p[i]);
                    }
            CHECK(ok);
        }
    }
    if (best < CPU_ISA_AVX512BF16)
        printf("note: this CPU lacks %s; those variants were not run\n",
               cpu_isa_name((enum cpu_isa)(best + 1)));
    return test_report();
}
