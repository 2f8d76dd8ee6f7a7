/*
 * sched_workload.h: the scheduler-plus-engine workload of tests/model/test_sched_engine.c and
 * tests/tp/test_tp.c. N_REQ greedy requests of N_GEN tokens each (make_req): prompts of 5 to
 * 69 tokens, pairs sharing up to 40 tokens of prefix, and four with 16-token images (12 and
 * 14: image 1, 13: image 2 with the same text, 15: both images and another text). run_on_loop
 * submits them all at once to the scheduler's engine thread. Static inline helpers: include
 * from the test .c.
 */
#ifndef VLM_TEST_SCHED_WORKLOAD_H
#define VLM_TEST_SCHED_WORKLOAD_H

#include <pthread.h>
#include <stdio.h>

#include "engine/engine.h"
#include "model_util.h"
#include "scheduler/loop.h"
#include "scheduler/sched.h"

#define N_REQ 16
#define N_GEN 8
#define IMG_PAD 151655
#define IMG_GRID 8 /* 8x8 patches -> 16 tokens after the 2x2 merge */

/* Image img (deterministic pixels, owned by the request) at prompt position offset of r. */
static inline void add_image(const struct model_config *c, struct request *r, int32_t offset,
                             int img)
{
    struct mm_item it = test_image_item(c, 0xfeed0000ull + (uint64_t)img, IMG_GRID, NULL);
    VLM_ASSERT(req_add_item(r, offset, &it, test_pixels(c, img, it.n_patches)) == 0);
}

/* Request k (0 <= k < N_REQ), id k + 1; the caller owns the one reference. */
static inline struct request *make_req(const struct model_config *c, int k)
{
    int32_t p[128];
    int32_t n = 5 + (int32_t)(vlm_mix64((uint64_t)k) % 60);
    int family = k < 12 ? k / 2 : 100; /* pairs share up to 40 tokens */
    for (int32_t i = 0; i < n; i++) {
        uint64_t src = (k < 12 && i < 40) ? (uint64_t)family * 1000 + (uint64_t)i
                                           : (uint64_t)k * 1000 + (uint64_t)i + 77;
        p[i] = (int32_t)(vlm_mix64(src) % 150000);
    }
    int img_a = -1, img_b = -1;
    if (k >= 12) { /* 10 text tokens, a 16-token image, 30 text tokens (shared text) */
        n = 56;
        for (int32_t i = 0; i < n; i++) p[i] = (int32_t)(vlm_mix64(5000 + (uint64_t)i) % 150000);
        for (int32_t i = 10; i < 26; i++) p[i] = IMG_PAD;
        img_a = k == 13 ? 2 : 1; /* 12 and 14: image 1; 13: image 2, same text */
        if (k == 15) { /* both images, and a different text */
            for (int32_t i = 30; i < 46; i++) p[i] = IMG_PAD;
            p[0] = 42;
            img_b = 2;
        }
    }
    struct req_params pr = {.max_tokens = N_GEN, .ignore_eos = true};
    pr.sp = sampler_params_greedy();
    struct request *r = req_new((uint64_t)k + 1, p, n, &pr);
    if (img_a >= 0) add_image(c, r, 10, img_a);
    if (img_b >= 0) add_image(c, r, 30, img_b);
    return r;
}

/* The scheduler for the workload: KV blocks of 16 tokens, n_blocks of them. */
static inline struct sched_config workload_config(bool caching, int32_t n_blocks)
{
    return (struct sched_config){.block_size = 16, .n_blocks = n_blocks, .max_num_seqs = N_REQ,
                                 .max_num_batched_tokens = 64, .max_model_len = 256,
                                 .enable_prefix_caching = caching, .encoder_cache_tokens = 64,
                                 .max_mm_item_tokens = 16};
}

/* CPU engine parameters matching scheduler config c, tp ranks (1: one engine). */
static inline struct engine_params workload_params(const struct sched_config *c, int tp)
{
    return (struct engine_params){.bp = {.n_threads = 2}, .backend = ENGINE_BACKEND_CPU,
                                  .block_size = c->block_size, .n_blocks = c->n_blocks,
                                  .max_batched_tokens = c->max_num_batched_tokens,
                                  .max_seqs = c->max_num_seqs, .tp_size = tp,
                                  .encoder_cache_tokens = c->encoder_cache_tokens};
}

/* A plain engine on m for config c; 0 or engine_init's code (printed). */
static inline int engine_start(struct engine *e, const struct model *m, const struct sched_config *c)
{
    struct engine_params ep = workload_params(c, 1);
    struct vlm_err err = {0};
    int rc = engine_init(e, m, &ep, &err);
    if (rc) fprintf(stderr, "  engine_init: %s\n", err.msg);
    return rc;
}

/* Copies r's streamed tokens (at most N_GEN) into out; returns how many r streamed, and its
 * stream state in *state. */
static inline int32_t read_tokens(struct request *r, int32_t out[N_GEN], int *state)
{
    struct req_event ev[N_GEN + 1];
    int32_t n = req_stream_read(r, ev, N_GEN + 1, state, NULL);
    for (int32_t i = 0; i < n && i < N_GEN; i++) out[i] = ev[i].token;
    return n;
}

/* How many tokens differ between two runs of the workload. */
static inline int n_diff(int32_t a[N_REQ][N_GEN], int32_t b[N_REQ][N_GEN])
{
    int d = 0;
    for (int i = 0; i < N_REQ; i++)
        for (int k = 0; k < N_GEN; k++) d += a[i][k] != b[i][k];
    return d;
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static inline void on_notify(struct request *r, void *user)
{
    (void)r;
    struct waiter *w = user;
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Submits requests 0..N_REQ-1 at once to a scheduler loop (config c) whose engine thread
 * drives ex, waits until every one has finished, reads the loop's counters into *st and stops
 * the loop. r receives the requests, one reference each: the caller reads and releases them. */
static inline void run_on_loop(const struct model_config *mc, const struct sched_config *c,
                               struct executor ex, struct request *r[N_REQ], struct sched_stats *st)
{
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
    struct sched_loop *l;
    struct vlm_err err = {0};
    VLM_ASSERT(loop_start(&l, c, ex, &err) == 0);
    for (int i = 0; i < N_REQ; i++) {
        r[i] = make_req(mc, i);
        r[i]->notify = on_notify;
        r[i]->notify_user = &w;
        VLM_ASSERT(loop_submit(l, r[i], &err) == 0);
    }
    pthread_mutex_lock(&w.mu);
    for (int i = 0; i < N_REQ; i++)
        while (!req_state_finished(req_stream_state(r[i]))) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    loop_get_stats(l, st);
    loop_stop(l);
}

#endif
