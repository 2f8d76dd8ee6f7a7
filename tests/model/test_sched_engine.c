// models: gqa4
/*
 * test_sched_engine: the scheduler driving the real CPU engine on a generated checkpoint
 * (issue 5 acceptance). 16 greedy requests (shared prefixes, chunked prefill, images split
 * across chunks) submitted together must give exactly the tokens each gives alone: with
 * prefix caching on and off, with a KV cache so small that requests are preempted (asserted),
 * and through the engine thread. Requests with the same text and different images share no
 * image block and answer differently; the same image twice shares blocks and is encoded
 * once (counters).
 */
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/model.h"
#include "scheduler/loop.h"
#include "scheduler/sched.h"
#include "test.h"

#define N_REQ 16
#define N_GEN 8
#define BLOCK 16
#define IMG_PAD 151655
#define IMG_GRID 8 /* 8x8 patches -> 16 tokens after the 2x2 merge */

static struct model m;

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* An image item with deterministic pixels in [-1, 1); the request owns the pixels. */
static void add_image(struct request *r, int32_t offset, int img)
{
    const struct model_config *c = &m.cfg;
    int32_t n_patches = IMG_GRID * IMG_GRID;
    int32_t pd = c->in_chans * c->temporal_patch_size * c->patch_size * c->patch_size;
    float *px = xmalloc((size_t)n_patches * (size_t)pd * sizeof *px);
    for (size_t i = 0; i < (size_t)n_patches * (size_t)pd; i++)
        px[i] = (float)((double)(mix((uint64_t)img << 32 | i) >> 40) / (double)(1 << 23)) - 1.0f;
    int32_t m2 = c->spatial_merge_size * c->spatial_merge_size;
    struct mm_item it = {.hash = 0xfeed0000ull + (uint64_t)img, .grid_t = 1, .grid_h = IMG_GRID,
                         .grid_w = IMG_GRID, .n_patches = n_patches, .n_tokens = n_patches / m2};
    VLM_ASSERT(req_add_item(r, offset, &it, px) == 0);
}

/* Request k: prompts of 5..69 tokens, some sharing prefixes, four with images. */
static struct request *make_req(int k)
{
    int32_t p[128];
    int32_t n = 5 + (int32_t)(mix((uint64_t)k) % 60);
    int family = k < 12 ? k / 2 : 100; /* pairs share up to 40 tokens */
    for (int32_t i = 0; i < n; i++) {
        uint64_t src = (k < 12 && i < 40) ? (uint64_t)family * 1000 + (uint64_t)i
                                           : (uint64_t)k * 1000 + (uint64_t)i + 77;
        p[i] = (int32_t)(mix(src) % 150000);
    }
    int img_a = -1, img_b = -1;
    if (k >= 12) { /* 10 text tokens, a 16-token image, 30 text tokens (shared text) */
        n = 56;
        for (int32_t i = 0; i < n; i++) p[i] = (int32_t)(mix(5000 + (uint64_t)i) % 150000);
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
    if (img_a >= 0) add_image(r, 10, img_a);
    if (img_b >= 0) add_image(r, 30, img_b);
    return r;
}

static struct sched_config config(bool caching, int32_t n_blocks)
{
    return (struct sched_config){.block_size = BLOCK, .n_blocks = n_blocks, .max_num_seqs = N_REQ,
                                 .max_num_batched_tokens = 64, .max_model_len = 256,
                                 .enable_prefix_caching = caching, .encoder_cache_tokens = 64,
                                 .max_mm_item_tokens = 16};
}

static int engine_start(struct engine *e, const struct sched_config *c)
{
    struct engine_params ep = {.bp = {.n_threads = 2}, .backend = ENGINE_BACKEND_CPU,
                               .block_size = c->block_size, .n_blocks = c->n_blocks,
                               .max_batched_tokens = c->max_num_batched_tokens,
                               .max_seqs = c->max_num_seqs,
                               .encoder_cache_tokens = c->encoder_cache_tokens};
    struct vlm_err err = {0};
    int rc = engine_init(e, &m, &ep, &err);
    if (rc) fprintf(stderr, "  engine_init: %s\n", err.msg);
    return rc;
}

static void read_tokens(struct request *r, int32_t *out, int *state)
{
    struct req_event ev[N_GEN + 1];
    int32_t n = req_stream_read(r, ev, N_GEN + 1, state, NULL);
    VLM_ASSERT(n == N_GEN);
    for (int32_t i = 0; i < n; i++) out[i] = ev[i].token;
}

/* Runs requests (indices which[0..n)) on a fresh engine and scheduler, all submitted at
 * once (together) or one after the other (alone). */
static bool run(const struct sched_config *c, const int *which, int n, bool together,
                int32_t out[N_REQ][N_GEN], struct sched_stats *st)
{
    struct engine e;
    if (engine_start(&e, c)) return false;
    struct sched *s = sched_new(c, NULL);
    struct request *r[N_REQ];
    bool ok = true;
    for (int i = 0; i < n; i++) {
        r[i] = make_req(which[i]);
        struct vlm_err err;
        VLM_ASSERT(sched_validate(c, r[i], &err) == 0);
        req_retain(r[i]);
        sched_add(s, r[i]);
        if (together && i + 1 < n) continue;
        while (sched_n_live(s) > 0) {
            struct batch b;
            struct batch_out o;
            if (!sched_schedule(s, &b)) break;
            int rc = engine_execute(&e, &b, &o);
            if (rc) {
                fprintf(stderr, "  engine_execute: %s\n", vlm_strerror(rc));
                sched_fail(s, &b);
                ok = false;
                break;
            }
            sched_update(s, &b, &o);
            sched_check(s);
        }
    }
    for (int i = 0; i < n; i++) {
        int state;
        read_tokens(r[i], out[which[i]], &state);
        ok &= state == REQ_FINISHED_LENGTH;
        req_release(r[i]);
    }
    sched_get_stats_raw(s, st);
    sched_free(s);
    engine_destroy(&e);
    return ok;
}

static int exec_engine(void *e, const struct batch *b, struct batch_out *o)
{
    return engine_execute(e, b, o);
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void on_notify(struct request *r, void *user)
{
    (void)r;
    struct waiter *w = user;
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* All 16 through the engine thread. */
static bool run_loop(const struct sched_config *c, int32_t out[N_REQ][N_GEN], struct sched_stats *st)
{
    struct engine e;
    if (engine_start(&e, c)) return false;
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
    struct sched_loop *l;
    struct vlm_err err;
    VLM_ASSERT(sched_loop_start(&l, c, (struct engine_iface){exec_engine, &e}, &err) == 0);
    struct request *r[N_REQ];
    for (int i = 0; i < N_REQ; i++) {
        r[i] = make_req(i);
        r[i]->notify = on_notify;
        r[i]->notify_user = &w;
        VLM_ASSERT(sched_submit(l, r[i], &err) == 0);
    }
    pthread_mutex_lock(&w.mu);
    for (int i = 0; i < N_REQ; i++)
        while (!req_state_finished(req_stream_state(r[i]))) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    sched_get_stats(l, st);
    sched_loop_stop(l);
    bool ok = true;
    for (int i = 0; i < N_REQ; i++) {
        int state;
        read_tokens(r[i], out[i], &state);
        ok &= state == REQ_FINISHED_LENGTH;
        req_release(r[i]);
    }
    engine_destroy(&e);
    return ok;
}

static int n_diff(int32_t a[N_REQ][N_GEN], int32_t b[N_REQ][N_GEN])
{
    int d = 0;
    for (int i = 0; i < N_REQ; i++)
        for (int k = 0; k < N_GEN; k++) d += a[i][k] != b[i][k];
    return d;
}

int main(void)
{
    struct vlm_err err = {0};
    int rc = model_load(&m, test_path("VLM_MODELS", "gqa4"), &err);
    TEST("load gqa4") { CHECK_EQ(rc, 0); }
    if (rc) {
        fprintf(stderr, "  %s\n", err.msg);
        return test_report();
    }
    vlm_log_level = VLM_LOG_WARN;
    int all[N_REQ];
    for (int i = 0; i < N_REQ; i++) all[i] = i;
    static int32_t alone[N_REQ][N_GEN], got[N_REQ][N_GEN];
    struct sched_stats st;
    const int32_t big = 1 + N_REQ * 6, tiny = 1 + 10;

    TEST("each request alone (no prefix caching)")
    {
        struct sched_config c = config(false, big);
        CHECK(run(&c, all, N_REQ, false, alone, &st));
        CHECK_EQ(st.preempted_total, 0);
        int distinct = 0;
        for (int i = 1; i < N_REQ; i++) distinct += memcmp(alone[i], alone[0], sizeof alone[0]) != 0;
        CHECK(distinct > 0);
    }
    TEST("16 together, prefix caching on == alone; the shared image is encoded once")
    {
        struct sched_config c = config(true, big);
        CHECK(run(&c, all, N_REQ, true, got, &st));
        CHECK_EQ(n_diff(alone, got), 0);
        CHECK(st.prefix_hit_tokens > 0);
        CHECK_EQ(st.encoder_misses, 2); /* images 1 and 2, each once */
        CHECK(st.encoder_hits >= 1);
        printf("  prefix hits %lld/%lld tokens, encoder hits %lld misses %lld, %lld steps\n",
               (long long)st.prefix_hit_tokens, (long long)st.prefix_queried_tokens,
               (long long)st.encoder_hits, (long long)st.encoder_misses, (long long)st.steps);
    }
    TEST("16 together, prefix caching off == alone")
    {
        struct sched_config c = config(false, big);
        CHECK(run(&c, all, N_REQ, true, got, &st));
        CHECK_EQ(n_diff(alone, got), 0);
        CHECK_EQ(st.prefix_hit_tokens, 0);
    }
    for (int caching = 0; caching < 2; caching++) {
        TEST(caching ? "16 together in a 10-block cache, prefix caching on: preempted, == alone"
                     : "16 together in a 10-block cache, prefix caching off: preempted, == alone")
        {
            struct sched_config c = config(caching, tiny);
            CHECK(run(&c, all, N_REQ, true, got, &st));
            CHECK_EQ(n_diff(alone, got), 0);
            CHECK(st.preempted_total > 0);
            printf("  %lld preemptions\n", (long long)st.preempted_total);
        }
    }
    TEST("16 through the engine thread, small cache == alone")
    {
        struct sched_config c = config(true, tiny);
        CHECK(run_loop(&c, got, &st));
        CHECK_EQ(n_diff(alone, got), 0);
        /* arrivals spread over steps by thread timing: preemption asserted above only */
        printf("  %lld preemptions\n", (long long)st.preempted_total);
    }
    TEST("same text, other image: no shared block, other answer; same image: shared, not "
         "re-encoded")
    {
        struct sched_config c = config(true, big);
        static int32_t seq[N_REQ][N_GEN];
        int order[] = {12, 13, 14};
        /* one after the other on one scheduler, reading the counters between */
        struct engine e;
        VLM_ASSERT(engine_start(&e, &c) == 0);
        struct sched *s = sched_new(&c, NULL);
        struct sched_stats before[3], after[3];
        for (int i = 0; i < 3; i++) {
            sched_get_stats_raw(s, &before[i]);
            struct request *r = make_req(order[i]);
            VLM_ASSERT(sched_validate(&c, r, &err) == 0);
            req_retain(r);
            sched_add(s, r);
            while (sched_n_live(s) > 0) {
                struct batch b;
                struct batch_out o;
                VLM_ASSERT(sched_schedule(s, &b) > 0);
                VLM_ASSERT(engine_execute(&e, &b, &o) == 0);
                sched_update(s, &b, &o);
            }
            int state;
            read_tokens(r, seq[order[i]], &state);
            req_release(r);
            sched_get_stats_raw(s, &after[i]);
        }
        /* 13 (image 2) after 12 (image 1): block 0 holds image tokens, nothing is shared */
        CHECK_EQ(after[1].prefix_hit_tokens - before[1].prefix_hit_tokens, 0);
        CHECK_EQ(after[1].encoder_misses - before[1].encoder_misses, 1);
        CHECK(memcmp(seq[12], seq[13], sizeof seq[12]) != 0);
        /* 14 (image 1 again): 3 of 4 blocks hit, covering the image; nothing encoded */
        CHECK_EQ(after[2].prefix_hit_tokens - before[2].prefix_hit_tokens, 48);
        CHECK_EQ(after[2].encoder_misses - before[2].encoder_misses, 0);
        CHECK(memcmp(seq[12], seq[14], sizeof seq[12]) == 0);
        CHECK(memcmp(seq[12], alone[12], sizeof seq[12]) == 0);
        CHECK(memcmp(seq[13], alone[13], sizeof seq[13]) == 0);
        sched_free(s);
        engine_destroy(&e);
    }
    model_destroy(&m);
    return test_report();
}
