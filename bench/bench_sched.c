/*
 * bench_sched: scheduler time per step, excluding model compute (issue 5: aim <= 50 us with
 * 256 running sequences). Times sched_schedule + sched_update around an "engine" that only
 * writes one token per sampled row. Prints figures; asserts nothing.
 *
 *   bench_sched [n_seqs=256] [steps=2000]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"

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
        .max_model_len = 8192,
        .enable_prefix_caching = caching,
        .encoder_cache_tokens = 16384,
    };
    int32_t per_req = prompt + steps + 64;
    c.n_blocks = 1 + n_seqs * ((per_req + 15) / 16) + 64;
    struct sched *s = sched_new(&c, NULL);
    int32_t *p = malloc((size_t)prompt * sizeof *p);
    int32_t *tok = calloc((size_t)n_seqs, sizeof *tok);
    float *lp = calloc((size_t)n_seqs, sizeof *lp);
    struct drain d = {.r = calloc((size_t)n_seqs * 64, sizeof(struct request *))};
    uint64_t id = 0;
    /* churn: short requests (finish in ~64 steps) so arrivals and prefills mix in */
    int32_t max_tokens = churn ? 64 : steps + 32;
    for (int32_t i = 0; i < n_seqs; i++) {
        for (int32_t k = 0; k < prompt; k++) p[k] = (int32_t)((i * 7919 + k * 31) % 150000);
        struct req_params pr = {.max_tokens = max_tokens, .sp = {.logprobs = -1}};
        struct request *r = req_new(++id, p, prompt, &pr);
        if (sched_validate(&c, r, NULL) != 0) abort();
        sched_add(s, r); /* the scheduler's reference is the only one: r dies at finish */
        d.r[d.n++] = r;
        req_retain(r);
    }
    uint64_t *t = malloc((size_t)steps * sizeof *t);
    int64_t seqs_total = 0;
    struct batch b;
    /* warm up until everyone decodes */
    for (int guard = 0; guard < 1000; guard++) {
        int32_t n = sched_schedule(s, &b);
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
        uint64_t t0 = vlm_now_ns();
        int32_t n = sched_schedule(s, &b);
        int32_t k = 0;
        for (int32_t i = 0; i < n; i++)
            if (b.seqs[i].sp) tok[k++] = (b.seqs[i].pos * 17 + 3) % 150000;
        struct batch_out o = {.n = k, .token = tok, .logprob = lp};
        sched_update(s, &b, &o);
        t[st] = vlm_now_ns() - t0;
        seqs_total += n;
        drain_all(&d);
    }
    qsort(t, (size_t)steps, sizeof *t, cmp_u64);
    double sum = 0;
    for (int32_t i = 0; i < steps; i++) sum += (double)t[i];
    printf("%-34s seqs/step %6.1f  mean %7.2f us  p50 %7.2f us  p99 %7.2f us  (%.0f ns/seq)\n",
           name, (double)seqs_total / steps, sum / steps / 1e3, t[steps / 2] / 1e3,
           t[steps * 99 / 100] / 1e3, sum / (double)seqs_total);
    sched_free(s);
    for (int32_t i = 0; i < d.n; i++) req_release(d.r[i]);
    free(d.r);
    free(t);
    free(p);
    free(tok);
    free(lp);
}

int main(int argc, char **argv)
{
    int32_t n = argc > 1 ? atoi(argv[1]) : 256, steps = argc > 2 ? atoi(argv[2]) : 2000;
    vlm_log_level = VLM_LOG_WARN;
    printf("scheduler step time, %d sequences, %d steps, block_size 16, engine excluded\n", n,
           steps);
    run("decode, prefix caching on", n, steps, true, 512, false);
    run("decode, prefix caching off", n, steps, false, 512, false);
    run("churn (64-token outputs), caching", n, steps, true, 512, true);
    return 0;
}
