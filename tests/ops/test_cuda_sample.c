/*
 * test_cuda_sample: the sample_summary op on the CUDA backend against the CPU backend (the
 * reference, kernels/cpu/sample.c), on random rows: vocabularies from 1 to 151936, rows
 * with bf16 ties, -inf entries, peaked and flat rows, temperatures from 1e-4 to 100 and
 * greedy rows (no draw).
 *
 *   - argmax, max, the top-K ids and values and the bound next_v: equal (they are copies of
 *     logits, so "within f32 rounding" is exact here);
 *   - lse within 1e-5 relative (double sums in another order: ~1e-12 in practice);
 *   - the draw's total within 1e-6 relative (CUDA's expf is within 2 ulp of glibc's);
 *   - the drawn token equal, unless the target lies within 1e-6 of the mass (relative) of
 *     the boundary between the two tokens, counted from the CPU's running sum: per-element
 *     probabilities differ by an ulp or two, so the running sums differ by ~1e-7 relative,
 *     far above the 1e-9 a double sum alone would give.
 * Rows with inv_t < 0 (the greedy token alone: cuda_argmax_rows) give the CPU's summary
 * byte for byte. It then times the op at (rows, 151936) for 1, 64 and 256 rows, full and
 * greedy alone.
 *
 * mask_logits (structured outputs: disallowed logits to -inf from a bitmask): the CUDA op
 * equals the CPU one bit for bit on strided rows with masks of every density (none, all,
 * one token, sparse, dense, a word boundary at the vocabulary's end), and the CPU op on
 * strided rows equals sampler_apply_mask on packed ones.
 *
 * Without a GPU (or built without CUDA) only the CPU part runs (the op through the backend
 * table on strided rows == cpu_sample_summary on packed rows), then the program exits 77.
 */
#include "engine/backend.h"
#include "engine/sampler.h"
#include "kernels/cpu.h"
#include "sample_rows.h"
#include "test.h"

#include <string.h>
#include <time.h>

static const float temps[] = {0.0f, 1.0f, 0.7f, 1e-4f, 100.0f, 1.3f};
#define N_TEMPS ((int32_t)ARRAY_LEN(temps))

/* Rows (n, stride) with row r of kind r % ROW_KINDS; inv_t and u per row. */
static void make_rows(float *l, int32_t n, int32_t V, int64_t stride, float *inv_t, double *u)
{
    for (int32_t r = 0; r < n; r++) {
        make_row(l + r * stride, V, (enum row_kind)(r % ROW_KINDS));
        float t = temps[r % N_TEMPS];
        inv_t[r] = t > 1e-5f ? 1.0f / t : 0.0f;
        u[r] = sampler_uniform(42 + (uint64_t)r, (uint64_t)r);
    }
}

/* Runs the op on backend b over host rows (n, stride); summaries into out (n). */
static void run_op(struct backend *b, const float *rows, int32_t n, int32_t V, int64_t stride,
                   const float *inv_t, const double *u, struct sample_summary *out)
{
    size_t bytes = (size_t)n * (size_t)stride * sizeof(float);
    void *d_rows = b->ops->alloc(b->ctx, bytes);
    void *d_out = b->ops->alloc(b->ctx, (size_t)n * sizeof *out);
    VLM_ASSERT(d_rows && d_out);
    b->ops->upload(b->ctx, d_rows, rows, bytes);
    struct tensor t = tensor_make(d_rows, DT_F32, V, n, 1, 1);
    t.nb[1] = stride * (int64_t)sizeof(float);
    b->ops->sampling->sample_summary(b->ctx, d_out, &t, inv_t, u);
    b->ops->download(b->ctx, out, d_out, (size_t)n * sizeof *out);
    b->ops->sync(b->ctx);
    b->ops->release(b->ctx, d_rows);
    b->ops->release(b->ctx, d_out);
}

/* Masks (n, W) for rows of vocabulary V: row r of kind r % 6. */
static void make_masks(uint32_t *m, int32_t n, int32_t V)
{
    int32_t W = (V + 31) / 32;
    for (int32_t r = 0; r < n; r++) {
        uint32_t *x = m + (size_t)r * W;
        for (int32_t w = 0; w < W; w++) {
            uint64_t h = vlm_mix64((uint64_t)r << 32 ^ (uint64_t)w);
            switch (r % 6) {
            case 0: x[w] = 0; break;
            case 1: x[w] = 0xffffffffu; break;
            case 2: x[w] = w == V / 2 / 32 ? 1u << (V / 2 % 32) : 0; break;      /* one token */
            case 3: x[w] = (uint32_t)(h & (h >> 17) & (h >> 33)); break;  /* sparse */
            case 4: x[w] = (uint32_t)(h | (h >> 29)); break;              /* dense */
            default: x[w] = (uint32_t)h; break;
            }
        }
        if (V % 32) x[W - 1] |= 0xffffffffu << (V % 32); /* bits past V: ignored */
    }
}

/* Runs mask_logits on backend b over host rows (n, stride) in place. */
static void run_mask(struct backend *b, float *rows, int32_t n, int32_t V, int64_t stride,
                     const uint32_t *mask)
{
    size_t bytes = (size_t)n * (size_t)stride * sizeof(float);
    void *d_rows = b->ops->alloc(b->ctx, bytes);
    VLM_ASSERT(d_rows);
    b->ops->upload(b->ctx, d_rows, rows, bytes);
    struct tensor t = tensor_make(d_rows, DT_F32, V, n, 1, 1);
    t.nb[1] = stride * (int64_t)sizeof(float);
    b->ops->sampling->mask_logits(b->ctx, &t, mask);
    b->ops->download(b->ctx, rows, d_rows, bytes);
    b->ops->sync(b->ctx);
    b->ops->release(b->ctx, d_rows);
}

static void cpu_part(struct backend *cpu)
{
    TEST("cpu: mask_logits on strided rows == sampler_apply_mask on packed rows") {
        int32_t V = 1000, n = 12, W = (V + 31) / 32;
        int64_t stride = V + 37;
        float *rows = xmalloc((size_t)n * (size_t)stride * sizeof *rows);
        float *packed = xmalloc((size_t)n * (size_t)V * sizeof *packed);
        uint32_t *mask = xmalloc((size_t)n * (size_t)W * sizeof *mask);
        float inv_t[12];
        double u[12];
        make_rows(rows, n, V, stride, inv_t, u);
        make_masks(mask, n, V);
        for (int32_t r = 0; r < n; r++) {
            memcpy(packed + (size_t)r * V, rows + r * stride, (size_t)V * sizeof *packed);
            sampler_apply_mask(packed + (size_t)r * V, mask + (size_t)r * W, V);
        }
        run_mask(cpu, rows, n, V, stride, mask);
        int bad = 0, ninf = 0;
        for (int32_t r = 0; r < n; r++)
            for (int32_t t = 0; t < V; t++) {
                float x = rows[r * stride + t];
                bad += memcmp(&x, &packed[(size_t)r * V + t], sizeof x) != 0;
                ninf += x == -INFINITY;
            }
        CHECK_EQ(bad, 0);
        CHECK(ninf > n * V / 4);
        free(rows);
        free(packed);
        free(mask);
    }

    TEST("cpu: the op on strided rows == cpu_sample_summary on packed rows") {
        int32_t V = 1000, n = 12;
        int64_t stride = V + 37;
        float *rows = xmalloc((size_t)n * (size_t)stride * sizeof *rows);
        float *packed = xmalloc((size_t)n * (size_t)V * sizeof *packed);
        float inv_t[12];
        double u[12];
        make_rows(rows, n, V, stride, inv_t, u);
        for (int32_t r = 0; r < n; r++)
            memcpy(packed + (size_t)r * V, rows + r * stride, (size_t)V * sizeof *packed);
        struct sample_summary a[12], b[12];
        memset(a, 0, sizeof a);
        memset(b, 0, sizeof b);
        run_op(cpu, rows, n, V, stride, inv_t, u, a);
        cpu_sample_summary(b, packed, n, V, V, inv_t, u);
        CHECK(memcmp(a, b, sizeof a) == 0);
        free(rows);
        free(packed);
    }

    TEST("cpu: inv_t < 0 gives the greedy token alone, the full summary's argmax and max") {
        int32_t V = 1000, n = 12;
        float *rows = xmalloc((size_t)n * (size_t)V * sizeof *rows);
        float inv_t[12], greedy[12];
        double u[12];
        make_rows(rows, n, V, V, inv_t, u);
        for (int32_t r = 0; r < n; r++) greedy[r] = -1.0f;
        struct sample_summary a[12], b[12];
        run_op(cpu, rows, n, V, V, inv_t, u, a);
        run_op(cpu, rows, n, V, V, greedy, u, b);
        int bad = 0;
        for (int32_t r = 0; r < n; r++)
            bad += b[r].argmax != a[r].argmax || b[r].max != a[r].max || b[r].n_top != 0 ||
                   b[r].token != -1 || b[r].next_v != -INFINITY || b[r].lse != 0.0;
        CHECK_EQ(bad, 0);
        /* the host sampler finishes a greedy row without logprobs from it */
        struct sampling_params g = sampler_params_greedy();
        struct sampler_result res;
        for (int32_t r = 0; r < n; r++)
            CHECK_EQ(sampler_sample_summary(&b[r], V, &g, 0, 0, &res), a[r].argmax);
        free(rows);
    }
}

#ifdef VLM_HAVE_CUDA
/* The CPU's running sum of p over ids < id (sampler.c's float ops). */
static double cum_before(const float *l, int32_t id, float inv_t, float wmx)
{
    double cum = 0.0;
    for (int32_t i = 0; i < id; i++) {
        float w = l[i] * inv_t, pr = expf(w - wmx);
        if (pr > 0.0f) cum += pr;
    }
    return cum;
}

static const int32_t vocabs[] = {1, 7, 65, 66, 1000, 5003, 151936};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The op alone on n device rows (already there), µs per call: one warm-up, then 20. */
static double time_op(struct backend *gpu, void *d_rows, void *d_out, int32_t V, int32_t n,
                      const float *inv_t, const double *u)
{
    struct tensor t = tensor_make(d_rows, DT_F32, V, n, 1, 1);
    gpu->ops->sampling->sample_summary(gpu->ctx, d_out, &t, inv_t, u);
    gpu->ops->sync(gpu->ctx);
    int reps = 20;
    double t0 = now_s();
    for (int i = 0; i < reps; i++)
        gpu->ops->sampling->sample_summary(gpu->ctx, d_out, &t, inv_t, u);
    gpu->ops->sync(gpu->ctx);
    return (now_s() - t0) / reps * 1e6;
}

static void gpu_part(struct backend *cpu, struct backend *gpu)
{
    for (size_t vi = 0; vi < ARRAY_LEN(vocabs); vi++) {
        int32_t V = vocabs[vi], n = 2 * ROW_KINDS * N_TEMPS;
        char name[96];
        snprintf(name, sizeof name, "cuda == cpu: vocab %d, %d rows, full and greedy alone", V, n);
        TEST(name) {
            float *rows = xmalloc((size_t)n * (size_t)V * sizeof *rows);
            float *inv_t = xmalloc((size_t)n * sizeof *inv_t);
            double *u = xmalloc((size_t)n * sizeof *u);
            struct sample_summary *a = xcalloc((size_t)n, sizeof *a);
            struct sample_summary *b = xcalloc((size_t)n, sizeof *b);
            make_rows(rows, n, V, V, inv_t, u);
            run_op(cpu, rows, n, V, V, inv_t, u, a);
            run_op(gpu, rows, n, V, V, inv_t, u, b);
            int bad_top = 0, bad_lse = 0, bad_tot = 0, near = 0, bad_tok = 0;
            for (int32_t r = 0; r < n; r++) {
                const struct sample_summary *x = &a[r], *y = &b[r];
                const float *l = rows + (size_t)r * V;
                bool top = x->argmax == y->argmax && x->max == y->max && x->n_top == y->n_top &&
                           x->next_v == y->next_v;
                for (int32_t j = 0; top && j < x->n_top; j++)
                    top = x->top_ids[j] == y->top_ids[j] && x->top_v[j] == y->top_v[j];
                bad_top += !top;
                bad_lse += !(fabs(x->lse - y->lse) <= 1e-5 * fmax(1.0, fabs(x->lse)));
                if (inv_t[r] <= 0.0f) {
                    bad_tok += y->token != -1;
                    continue;
                }
                bad_tot += !(fabs(x->total - y->total) <= 1e-6 * x->total);
                if (x->token == y->token) {
                    bad_tok += y->token_logit != l[y->token];
                    continue;
                }
                /* different tokens: only where the target sits on the boundary between them */
                float wmx = x->max * inv_t[r];
                int32_t hi = x->token > y->token ? x->token : y->token;
                double edge = cum_before(l, hi, inv_t[r], wmx), target = u[r] * x->total;
                if (y->token >= 0 && fabs(edge - target) <= 1e-6 * x->total) near++;
                else bad_tok++;
            }
            if (bad_top + bad_lse + bad_tot + bad_tok)
                fprintf(stderr, "  vocab %d: %d top, %d lse, %d total, %d token mismatches\n", V,
                        bad_top, bad_lse, bad_tot, bad_tok);
            if (near) printf("  vocab %d: %d draws on a boundary (allowed)\n", V, near);
            CHECK_EQ(bad_top, 0);
            CHECK_EQ(bad_lse, 0);
            CHECK_EQ(bad_tot, 0);
            CHECK_EQ(bad_tok, 0);
            /* the greedy token alone (inv_t < 0 on every row: cuda_argmax_rows, many blocks
             * per row): the CPU's summary byte for byte */
            for (int32_t r = 0; r < n; r++) inv_t[r] = -1.0f;
            run_op(cpu, rows, n, V, V, inv_t, u, a);
            run_op(gpu, rows, n, V, V, inv_t, u, b);
            int bad_greedy = 0;
            for (int32_t r = 0; r < n; r++) bad_greedy += memcmp(&a[r], &b[r], sizeof a[r]) != 0;
            CHECK_EQ(bad_greedy, 0);
            free(rows);
            free(inv_t);
            free(u);
            free(a);
            free(b);
        }
    }

    static const int32_t mvocabs[] = {1, 31, 32, 33, 1000, 151936};
    for (size_t vi = 0; vi < ARRAY_LEN(mvocabs); vi++) {
        int32_t V = mvocabs[vi], n = 24, W = (V + 31) / 32;
        int64_t stride = V + 5;
        char name[96];
        snprintf(name, sizeof name, "mask_logits cuda == cpu: vocab %d, %d strided rows", V, n);
        TEST(name) {
            float *a = xcalloc((size_t)n * (size_t)stride, sizeof *a);
            float *b = xcalloc((size_t)n * (size_t)stride, sizeof *b);
            uint32_t *mask = xmalloc((size_t)n * (size_t)W * sizeof *mask);
            float inv_t[24];
            double u[24];
            make_rows(a, n, V, stride, inv_t, u);
            memcpy(b, a, (size_t)n * (size_t)stride * sizeof *a);
            make_masks(mask, n, V);
            run_mask(cpu, a, n, V, stride, mask);
            run_mask(gpu, b, n, V, stride, mask);
            CHECK(memcmp(a, b, (size_t)n * (size_t)stride * sizeof *a) == 0);
            free(a);
            free(b);
            free(mask);
        }
    }

    /* timing: the op alone (rows already on the device), printed, never asserted */
    int32_t V = 151936, R = 256;
    float *rows = xmalloc((size_t)R * (size_t)V * sizeof *rows);
    float *inv_t = xmalloc((size_t)R * sizeof *inv_t);
    double *u = xmalloc((size_t)R * sizeof *u);
    make_rows(rows, R, V, V, inv_t, u);
    for (int32_t r = 0; r < R; r++) inv_t[r] = 1.0f / 0.8f; /* every row draws */
    void *d_rows = gpu->ops->alloc(gpu->ctx, (size_t)R * (size_t)V * sizeof(float));
    void *d_out = gpu->ops->alloc(gpu->ctx, (size_t)R * sizeof(struct sample_summary));
    VLM_ASSERT(d_rows && d_out);
    gpu->ops->upload(gpu->ctx, d_rows, rows, (size_t)R * (size_t)V * sizeof(float));
    float *greedy = xmalloc((size_t)R * sizeof *greedy);
    for (int32_t r = 0; r < R; r++) greedy[r] = -1.0f;
    static const int32_t ns[] = {1, 64, 256};
    for (size_t k = 0; k < ARRAY_LEN(ns); k++) {
        double us = time_op(gpu, d_rows, d_out, V, ns[k], inv_t, u);
        printf("perf sample_summary rows=%d vocab=%d: %.1f us (%.1f GB/s of logits read once), "
               "%zu bytes down instead of %zu\n",
               ns[k], V, us, (double)ns[k] * V * 4 / (us * 1e3),
               (size_t)ns[k] * sizeof(struct sample_summary), (size_t)ns[k] * (size_t)V * 4);
        us = time_op(gpu, d_rows, d_out, V, ns[k], greedy, u);
        printf("perf greedy alone rows=%d vocab=%d: %.1f us (%.1f GB/s of logits)\n", ns[k], V, us,
               (double)ns[k] * V * 4 / (us * 1e3));
    }
    free(greedy);
    gpu->ops->release(gpu->ctx, d_rows);
    gpu->ops->release(gpu->ctx, d_out);
    free(rows);
    free(inv_t);
    free(u);
}
#endif

int main(void)
{
    struct vlm_err err = {0};
    struct backend cpu = {0};
    struct backend_params bp = {.n_threads = 0, .device = 0};
    VLM_ASSERT(backend_cpu_init(&cpu, &bp, &err) == 0);
    VLM_ASSERT(cpu.ops->sampling);
    cpu_part(&cpu);

    struct backend gpu = {0};
#ifdef VLM_HAVE_CUDA
    if (backend_cuda_device_count() > 0 && backend_cuda_init(&gpu, &bp, &err) != 0)
        printf("no GPU: %s\n", err.msg);
#endif
    if (!gpu.ops) {
        backend_destroy(&cpu);
        int fails = test_report();
        if (fails) return fails;
        TEST_SKIP("the CUDA part needs a GPU (built with CUDA and a device present)");
    }
#ifdef VLM_HAVE_CUDA
    if (!gpu.ops->sampling) {
        printf("cuda: sample_summary not supported\n");
    } else {
        gpu_part(&cpu, &gpu);
    }
#endif
    backend_destroy(&gpu);
    backend_destroy(&cpu);
    return test_report();
}
