/*
 * bench_sched: scheduler time per step, excluding model compute (issue 5: aim <= 50 us with
 * 256 running sequences). Times sched_schedule + sched_update around an "engine" that only
 * writes one token per sampled row. Prints figures; asserts nothing.
 *
 *   bench_sched [n_seqs=256] [steps=2000]
 *
 * With a model folder it also measures the CPU engine under the scheduler (issue 5): output
 * tokens per second with 1, 4 and 16 concurrent greedy requests (64-token prompts, 64
 * output tokens each, EOS ignored), prompt processing included.
 *
 *   bench_sched --model build/models/gqa4 [threads=2]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "engine/model.h"
#include "scheduler/sched.h"

/* CPU time of this thread: on a shared machine, wall time mostly measures the neighbours. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct drain {
    struct request **r;
    int32_t n;
};

/* Reads every request's events, as the HTTP side would (outside the timed region). */
static void drain_all(struct drain *d)
{
    static struct req_event ev[64];
    for (int32_t i = 0; i < d->n; i++)
        while (req_stream_read(d->r[i], ev, 64, NULL, NULL) == 64) {}
}

static void run(const char *name, int32_t n_seqs, int32_t steps, bool caching, int32_t prompt,
                bool churn)
{
    struct sched_config c = {
        .block_size = 16,
        .max_num_seqs = n_seqs,
        .max_num_batched_tokens = 8192,
        .max_model_len = 1 << 20,
        .enable_prefix_caching = caching,
        .encoder_cache_tokens = 16384,
    };
    /* churn: short requests (finish in ~64 steps) so arrivals and prefills mix in; otherwise
     * long enough to outlast the warm-up and the measured steps */
    int32_t max_tokens = churn ? 64 : steps + 1100;
    int32_t per_req = prompt + max_tokens + 16;
    c.n_blocks = 1 + n_seqs * ((per_req + 15) / 16) + 64;
    struct sched *s = sched_new(&c, NULL);
    int32_t *p = malloc((size_t)prompt * sizeof *p);
    int32_t *tok = calloc((size_t)n_seqs, sizeof *tok);
    float *lp = calloc((size_t)n_seqs, sizeof *lp);
    struct drain d = {.r = calloc((size_t)n_seqs * 64, sizeof(struct request *))};
    uint64_t id = 0;
    for (int32_t i = 0; i < n_seqs; i++) {
        for (int32_t k = 0; k < prompt; k++) p[k] = (int32_t)((i * 7919 + k * 31) % 150000);
        struct req_params pr = {.max_tokens = max_tokens, .sp = {.logprobs = -1}};
        struct request *r = req_new(++id, p, prompt, &pr);
        if (sched_validate(&c, r, NULL) != 0) abort();
        sched_add(s, r); /* the scheduler's reference is the only one: r dies at finish */
        d.r[d.n++] = r;
        req_retain(r);
    }
    uint64_t *t = malloc((size_t)steps * sizeof *t), *tc = malloc((size_t)steps * sizeof *tc);
    int64_t seqs_total = 0;
    struct batch b;
    /* warm up until everyone decodes */
    for (int guard = 0; guard < 1000; guard++) {
        int32_t n = sched_schedule(s, &b);
        if (n == 0) break;
        int32_t k = 0;
        bool all_decode = n == n_seqs;
        for (int32_t i = 0; i < n; i++) {
            all_decode &= b.seqs[i].n_tokens == 1;
            if (b.seqs[i].sp) tok[k++] = (b.seqs[i].pos * 17 + 3) % 150000;
        }
        struct batch_out o = {.n = k, .token = tok, .logprob = lp};
        sched_update(s, &b, &o);
        drain_all(&d);
        if (all_decode) break;
    }
    for (int32_t st = 0; st < steps; st++) {
        if (churn) {
            /* replace finished requests outside the timed region */
            int32_t j = 0;
            for (int32_t i = 0; i < d.n; i++) {
                if (req_state_finished(req_stream_state(d.r[i]))) {
                    req_release(d.r[i]);
                    continue;
                }
                d.r[j++] = d.r[i];
            }
            d.n = j;
            while (sched_n_live(s) < n_seqs) {
                for (int32_t k = 0; k < prompt; k++) p[k] = (int32_t)((id * 7919 + k * 31) % 150000);
                struct req_params pr = {.max_tokens = max_tokens, .sp = {.logprobs = -1}};
                struct request *r = req_new(++id, p, prompt, &pr);
                if (sched_validate(&c, r, NULL) != 0) abort();
                sched_add(s, r);
                req_retain(r);
                d.r[d.n++] = r;
            }
        }
        uint64_t t0 = vlm_now_ns(), c0 = cpu_ns();
        int32_t n = sched_schedule(s, &b);
        if (n == 0) break; /* only without churn, if steps outlast max_tokens */
        int32_t k = 0;
        for (int32_t i = 0; i < n; i++)
            if (b.seqs[i].sp) tok[k++] = (b.seqs[i].pos * 17 + 3) % 150000;
        struct batch_out o = {.n = k, .token = tok, .logprob = lp};
        sched_update(s, &b, &o);
        tc[st] = cpu_ns() - c0;
        t[st] = vlm_now_ns() - t0;
        seqs_total += n;
        drain_all(&d);
    }
    qsort(t, (size_t)steps, sizeof *t, cmp_u64);
    qsort(tc, (size_t)steps, sizeof *tc, cmp_u64);
    double sum = 0, sum_c = 0;
    for (int32_t i = 0; i < steps; i++) {
        sum += (double)t[i];
        sum_c += (double)tc[i];
    }
    printf("%-36s seqs/step %5.1f | cpu: mean %6.2f us p50 %6.2f p99 %6.2f (%3.0f ns/seq) "
           "| wall: mean %7.2f us p50 %6.2f p99 %7.2f\n",
           name, (double)seqs_total / steps, sum_c / steps / 1e3, tc[steps / 2] / 1e3,
           tc[steps * 99 / 100] / 1e3, sum_c / (double)seqs_total, sum / steps / 1e3,
           t[steps / 2] / 1e3, t[steps * 99 / 100] / 1e3);
    sched_free(s);
    for (int32_t i = 0; i < d.n; i++) req_release(d.r[i]);
    free(d.r);
    free(t);
    free(tc);
    free(p);
    free(tok);
    free(lp);
}

/* n concurrent requests on the CPU engine; prints output tok/s. */
static void run_model(const struct model *m, int32_t n, int threads)
{
    const int32_t prompt = 64, gen = 64;
    struct sched_config c = {.block_size = 16, .n_blocks = 1 + n * 9, .max_num_seqs = n,
                             .max_num_batched_tokens = 512, .max_model_len = 256,
                             .enable_prefix_caching = true};
    struct engine_params ep = {.bp = {.n_threads = threads}, .backend = ENGINE_BACKEND_CPU,
                               .block_size = c.block_size, .n_blocks = c.n_blocks,
                               .max_batched_tokens = c.max_num_batched_tokens, .max_seqs = n};
    struct engine e;
    struct vlm_err err;
    if (engine_init(&e, m, &ep, &err)) {
        fprintf(stderr, "engine_init: %s\n", err.msg);
        exit(1);
    }
    struct sched *s = sched_new(&c, NULL);
    int32_t p[64];
    uint64_t t0 = vlm_now_ns(), t_first = 0;
    for (int32_t i = 0; i < n; i++) {
        for (int32_t k = 0; k < prompt; k++) p[k] = (int32_t)((i * 7919 + k * 31 + 11) % 150000);
        struct req_params pr = {.max_tokens = gen, .ignore_eos = true};
        pr.sp = sampler_params_greedy();
        struct request *r = req_new((uint64_t)i + 1, p, prompt, &pr);
        if (sched_validate(&c, r, NULL)) abort();
        sched_add(s, r);
    }
    int64_t steps = 0;
    struct batch b;
    struct batch_out o;
    while (sched_schedule(s, &b)) {
        if (engine_execute(&e, &b, &o)) abort();
        sched_update(s, &b, &o);
        if (!t_first && o.n) t_first = vlm_now_ns();
        steps++;
    }
    double sec = (double)(vlm_now_ns() - t0) / 1e9;
    printf("engine %2d concurrent: %5.0f output tok/s total, %5.1f tok/s per request, "
           "%.2f s, %lld steps, first token after %.0f ms\n",
           n, n * gen / sec, gen / sec, sec, (long long)steps, (double)(t_first - t0) / 1e6);
    sched_free(s);
    engine_destroy(&e);
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--model")) {
        struct model m = {0};
        struct vlm_err err;
        vlm_log_level = VLM_LOG_WARN;
        if (model_load(&m, argv[2], &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        int threads = argc > 3 ? atoi(argv[3]) : 2;
        printf("CPU engine under the scheduler: %s, %d threads, 64-token prompts, 64 outputs\n",
               argv[2], threads);
        for (int32_t n = 1; n <= 16; n *= 4) run_model(&m, n, threads);
        model_destroy(&m);
        return 0;
    }
    int32_t n = argc > 1 ? atoi(argv[1]) : 256, steps = argc > 2 ? atoi(argv[2]) : 2000;
    vlm_log_level = VLM_LOG_WARN;
    printf("scheduler step time, %d sequences, %d steps, block_size 16, engine excluded\n", n,
           steps);
    run("decode, prefix caching on", n, steps, true, 512, false);
    run("decode, prefix caching off", n, steps, false, 512, false);
    run("churn (64-token outputs), caching", n, steps, true, 512, true);
    return 0;
}
