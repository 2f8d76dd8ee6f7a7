/*
 * bench_sample: host sampling cost per row at Qwen3's vocabulary (151936), for docs/PERF.md.
 * Prints figures; asserts nothing.
 *
 *   bench_sample [rows=64]
 *
 * For each parameter set: sampler_sample on the full row (what the engine does without
 * device sampling, after downloading the row), the CPU reference of the sample_summary op on
 * one thread (what a device replaces), and sampler_sample_summary (what is left on the host
 * with device sampling). Rows are model-like: a smooth bulk and a few dominant tokens.
 * The CUDA op's time is printed by tests/ops/test_cuda_sample on a GPU.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sampler.h"
#include "kernels/cpu.h"

#define VOCAB 151936

/* CPU time of this thread: on a shared machine, wall time mostly measures the neighbours. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static uint64_t rng_s = 0x853c49e6748fea9bull;

static double rng_unit(void)
{
    rng_s ^= rng_s >> 12;
    rng_s ^= rng_s << 25;
    rng_s ^= rng_s >> 27;
    return (double)((rng_s * 0x2545f4914f6cdd1dull) >> 11) * (1.0 / 9007199254740992.0);
}

/* bulk ~ a sum of uniforms (roughly normal, sd 2) around -4; 8 tokens well above it */
static void make_row(float *l)
{
    for (int32_t i = 0; i < VOCAB; i++)
        l[i] = (float)(-4.0 + 2.0 * (rng_unit() + rng_unit() + rng_unit() - 1.5) * 2.0);
    for (int k = 0; k < 8; k++) l[(int32_t)(rng_unit() * VOCAB)] = (float)(14.0 + k * 0.7);
}

struct pset {
    const char *name;
    float t;
    int32_t k;
    float p, min_p;
    int32_t logprobs;
};

static const struct pset sets[] = {
    {"greedy", 0.0f, 0, 1.0f, 0.0f, -1},
    {"greedy, logprobs 5", 0.0f, 0, 1.0f, 0.0f, 5},
    {"T 0.8", 0.8f, 0, 1.0f, 0.0f, -1},
    {"T 0.8 top-k 50 top-p 0.9", 0.8f, 50, 0.9f, 0.0f, -1},
    {"T 1 top-p 0.95, logprobs 5", 1.0f, 0, 0.95f, 0.0f, 5},
    {"T 0.7 min-p 0.05", 0.7f, 0, 1.0f, 0.05f, -1},
};

int main(int argc, char **argv)
{
    int rows = argc > 1 ? atoi(argv[1]) : 64;
    if (rows < 1) rows = 1;
    float *l = xmalloc((size_t)rows * VOCAB * sizeof *l);
    for (int r = 0; r < rows; r++) make_row(l + (size_t)r * VOCAB);
    struct sampler_ws w;
    sampler_ws_init(&w, VOCAB);
    struct sample_summary *p = xmalloc((size_t)rows * sizeof *p);
    float *inv_t = xmalloc((size_t)rows * sizeof *inv_t);
    double *u = xmalloc((size_t)rows * sizeof *u);

    printf("vocab %d, %d rows, ms per row (thread CPU time)\n", VOCAB, rows);
    printf("%-30s %12s %12s %14s %9s\n", "params", "host sample", "summary (CPU)", "host finish",
           "fallback");
    for (size_t si = 0; si < ARRAY_LEN(sets); si++) {
        struct sampling_params sp = sampler_params_greedy();
        sp.temperature = sets[si].t;
        sp.top_k = sets[si].k;
        sp.top_p = sets[si].p;
        sp.min_p = sets[si].min_p;
        sp.logprobs = sets[si].logprobs;
        struct sampler_result res;
        double t0 = cpu_ms();
        for (int r = 0; r < rows; r++) {
            sp.seed = (uint64_t)r;
            sampler_sample(&w, l + (size_t)r * VOCAB, &sp, NULL, 0, NULL, 0, &res);
        }
        double t_host = (cpu_ms() - t0) / rows;
        for (int r = 0; r < rows; r++) {
            inv_t[r] = sp.temperature > 1e-5f ? 1.0f / sp.temperature : 0.0f;
            u[r] = sampler_uniform((uint64_t)r, 0);
        }
        t0 = cpu_ms();
        for (int r = 0; r < rows; r++) /* one row per call: one thread, no OpenMP team */
            cpu_sample_summary(&p[r], l + (size_t)r * VOCAB, 1, VOCAB, VOCAB, &inv_t[r], &u[r]);
        double t_sum = (cpu_ms() - t0) / rows;
        int fb = 0;
        t0 = cpu_ms();
        for (int r = 0; r < rows; r++) {
            sp.seed = (uint64_t)r;
            fb += sampler_sample_summary(&p[r], VOCAB, &sp, 0, 0, &res) < 0;
        }
        double t_fin = (cpu_ms() - t0) / rows;
        printf("%-30s %12.3f %12.3f %14.5f %5d/%d\n", sets[si].name, t_host, t_sum, t_fin, fb,
               rows);
    }
    printf("bytes down per step: rows x %d (f32 logits) = %zu at 256 rows; with device sampling "
           "rows x %zu = %zu at 256 rows\n",
           VOCAB * 4, (size_t)256 * VOCAB * 4, sizeof(struct sample_summary),
           (size_t)256 * sizeof(struct sample_summary));
    sampler_ws_destroy(&w);
    free(l);
    free(p);
    free(inv_t);
    free(u);
    return 0;
}
