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
#include "sched_workload.h"
#include "test.h"

static struct model m;

/* Runs requests (indices which[0..n)) on a fresh engine and scheduler, all submitted at
 * once (together) or one after the other (alone). */
static bool run(const struct sched_config *c, const int *which, int n, bool together,
                int32_t out[N_REQ][N_GEN], struct sched_stats *st)
{
    struct engine e;
    if (engine_start(&e, &m, c)) return false;
    struct sched *s = sched_new(c, NULL);
    struct request *r[N_REQ];
    bool ok = true;
    for (int i = 0; i < n; i++) {
        r[i] = make_req(&m.cfg, which[i]);
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
        int32_t n_read = read_tokens(r[i], out[which[i]], &state);
        VLM_ASSERT(n_read == N_GEN);
        ok &= state == REQ_FINISHED_LENGTH;
        req_release(r[i]);
    }
    sched_get_stats_raw(s, st);
    sched_free(s);
    engine_destroy(&e);
    return ok;
}

/* All 16 through the engine thread. */
static bool run_loop(const struct sched_config *c, int32_t out[N_REQ][N_GEN], struct sched_stats *st)
{
    struct engine e;
    if (engine_start(&e, &m, c)) return false;
    struct request *r[N_REQ];
    run_on_loop(&m.cfg, c, engine_executor(&e), r, st);
    bool ok = true;
    for (int i = 0; i < N_REQ; i++) {
        int state;
        int32_t n = read_tokens(r[i], out[i], &state);
        VLM_ASSERT(n == N_GEN);
        ok &= state == REQ_FINISHED_LENGTH;
        req_release(r[i]);
    }
    engine_destroy(&e);
    return ok;
}

int main(void)
{
    struct vlm_err err = {0};
    int rc = test_load_model(&m, "gqa4");
    if (rc) return test_report();
    vlm_log_level = VLM_LOG_WARN;
    int all[N_REQ];
    for (int i = 0; i < N_REQ; i++) all[i] = i;
    static int32_t alone[N_REQ][N_GEN], got[N_REQ][N_GEN];
    struct sched_stats st;
    const int32_t big = 1 + N_REQ * 6, tiny = 1 + 10;

    TEST("each request alone (no prefix caching)")
    {
        struct sched_config c = workload_config(false, big);
        CHECK(run(&c, all, N_REQ, false, alone, &st));
        CHECK_EQ(st.preempted_total, 0);
        int distinct = 0;
        for (int i = 1; i < N_REQ; i++) distinct += memcmp(alone[i], alone[0], sizeof alone[0]) != 0;
        CHECK(distinct > 0);
    }
    TEST("16 together, prefix caching on == alone; the shared image is encoded once")
    {
        struct sched_config c = workload_config(true, big);
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
        struct sched_config c = workload_config(false, big);
        CHECK(run(&c, all, N_REQ, true, got, &st));
        CHECK_EQ(n_diff(alone, got), 0);
        CHECK_EQ(st.prefix_hit_tokens, 0);
    }
    for (int caching = 0; caching < 2; caching++) {
        TEST(caching ? "16 together in a 10-block cache, prefix caching on: preempted, == alone"
                     : "16 together in a 10-block cache, prefix caching off: preempted, == alone")
        {
            struct sched_config c = workload_config(caching, tiny);
            CHECK(run(&c, all, N_REQ, true, got, &st));
            CHECK_EQ(n_diff(alone, got), 0);
            CHECK(st.preempted_total > 0);
            printf("  %lld preemptions\n", (long long)st.preempted_total);
        }
    }
    TEST("16 through the engine thread, small cache == alone")
    {
        struct sched_config c = workload_config(true, tiny);
        CHECK(run_loop(&c, got, &st));
        CHECK_EQ(n_diff(alone, got), 0);
        /* arrivals spread over steps by thread timing: preemption asserted above only */
        printf("  %lld preemptions\n", (long long)st.preempted_total);
    }
    TEST("same text, other image: no shared block, other answer; same image: shared, not "
         "re-encoded")
    {
        struct sched_config c = workload_config(true, big);
        static int32_t seq[N_REQ][N_GEN];
        int order[] = {12, 13, 14};
        /* one after the other on one scheduler, reading the counters between */
        struct engine e;
        VLM_ASSERT(engine_start(&e, &m, &c) == 0);
        struct sched *s = sched_new(&c, NULL);
        struct sched_stats before[3], after[3];
        for (int i = 0; i < 3; i++) {
            sched_get_stats_raw(s, &before[i]);
            struct request *r = make_req(&m.cfg, order[i]);
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
            int32_t n = read_tokens(r, seq[order[i]], &state);
            VLM_ASSERT(n == N_GEN);
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
