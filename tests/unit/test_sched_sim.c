/*
 * test_sched_sim: a seeded randomized simulation of the scheduler over a tiny KV cache
 * (issue 5 acceptance): arrivals, aborts, varied prompt lengths, shared prefixes, images,
 * EOS; >= 100k steps in four configurations. After every step sched_check() asserts the
 * invariants (each block held or free exactly once, refcounts equal the number of tables
 * holding the block, waiting requests hold nothing, encoder references add up). Every
 * request that finishes must match what it gives alone (unit/sched_fake.h); aborted ones
 * must have emitted a prefix of it. A step with requests held must schedule something (no
 * deadlock), no request may wait longer than a bound (no starvation), and after the drain
 * the pool is full again. Images come in same-size pairs (only their content hashes tell
 * them apart) and are packed closely, so blocks and the encoder arena hold several.
 *
 * VLM_SIM_SEED=n picks another seed; VLM_SIM_STEPS=n scales the run.
 */
#include <stdlib.h>
#include <string.h>

#include "scheduler/sched.h"
#include "test.h"
#include "unit/sched_fake.h"

#define VOCAB 50
#define MAX_LIVE 14
#define PAD 9999
#define MAX_AGE 3000 /* steps from arrival to finish; far above what fair scheduling needs */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

struct sim_req {
    struct request *r;
    long arrival;
};

struct sim {
    struct sched_config c;
    struct sched *s;
    struct fake_engine f;
    struct sim_req live[MAX_LIVE];
    int n_live;
    long step, max_age, n_done, n_aborted, n_checked_tokens;
    uint64_t next_id;
    int32_t prefix[4][32];
    struct mm_item images[6];
    int32_t max_images;             /* per prompt */
};

static void sim_arrive(struct sim *m)
{
    int32_t p[48];
    int32_t n = 1 + (int32_t)rnd(40);
    const int32_t *fam = m->prefix[rnd(4)];
    int32_t shared = rnd(3) ? (int32_t)rnd((uint32_t)n + 1) : 0;
    for (int32_t i = 0; i < n; i++) p[i] = i < shared && i < 32 ? fam[i] : (int32_t)rnd(VOCAB);
    struct req_params pr = {.max_tokens = 1 + (int32_t)rnd(16), .sp = {.logprobs = -1}};
    if (rnd(2)) {
        pr.eos_ids[0] = 7;
        pr.n_eos = 1;
        pr.ignore_eos = rnd(4) == 0;
    }
    if (rnd(4) == 0) {
        pr.stop_ids[0] = 11;
        pr.n_stop = 1;
    }
    /* up to two images, placed over the prompt (their tokens become pads) */
    int32_t n_img = rnd(3) == 0 ? 1 + (int32_t)rnd((uint32_t)m->max_images) : 0, at = 0, k = 0;
    int32_t offs[8], which[8];
    for (int32_t j = 0; j < n_img; j++) {
        which[k] = (int32_t)rnd(6);
        int32_t len = m->images[which[k]].n_tokens, room = n - at - len;
        if (room < 0) break;
        offs[k] = at + (int32_t)rnd((uint32_t)(room < 3 ? room : 3) + 1); /* packed closely */
        for (int32_t i = 0; i < len; i++) p[offs[k] + i] = PAD;
        at = offs[k] + len;
        k++;
    }
    struct request *r = req_new(++m->next_id, p, n, &pr);
    for (int32_t j = 0; j < k; j++) VLM_ASSERT(req_add_item(r, offs[j], &m->images[which[j]], NULL) == 0);
    struct vlm_err e;
    VLM_ASSERT(sched_validate(&m->c, r, &e) == 0);
    req_retain(r);
    sched_add(m->s, r);
    m->live[m->n_live++] = (struct sim_req){.r = r, .arrival = m->step};
}

/* Checks and drops the finished requests. Returns false on a mismatch. */
static bool sim_reap(struct sim *m)
{
    bool ok = true;
    for (int i = 0; i < m->n_live; i++) {
        struct request *r = m->live[i].r;
        if (!req_state_finished(r->state)) continue;
        int32_t want[80];
        int want_state;
        int32_t n_want = fake_reference(r, r->cap_tokens, VOCAB, want, &want_state);
        struct req_event ev[80];
        int state;
        struct req_usage u;
        int32_t n = req_stream_read(r, ev, 80, &state, &u);
        bool same = state == r->state && u.completion_tokens == n && n <= n_want;
        for (int32_t j = 0; j < n && same; j++) same = ev[j].token == want[j];
        if (state == REQ_FINISHED_ABORT) {
            m->n_aborted++;
        } else {
            same = same && state == want_state && n == n_want;
            m->n_done++;
        }
        if (!same) {
            fprintf(stderr, "  step %ld req %llu: state %d (want %d), %d tokens (want %d)\n",
                    m->step, (unsigned long long)r->id, state, want_state, n, n_want);
            ok = false;
        }
        m->n_checked_tokens += n;
        long age = m->step - m->live[i].arrival;
        if (age > m->max_age) m->max_age = age;
        req_release(r);
        m->live[i--] = m->live[--m->n_live];
    }
    return ok;
}

static bool sim_step(struct sim *m)
{
    struct batch b;
    struct batch_out o;
    m->step++;
    int32_t live0 = sched_n_live(m->s);
    int32_t n_sched = sched_schedule(m->s, &b);
    if (n_sched == 0 && live0 > 0) { /* held requests and nothing runs: a deadlock */
        fprintf(stderr, "  step %ld: %d requests held, none can run\n", m->step, live0);
        return false;
    }
    if (n_sched) {
        sched_check(m->s);
        int rc = fake_execute(&m->f, &b, &o);
        VLM_ASSERT(rc == 0); /* the engine could place every item it was asked to encode */
        sched_update(m->s, &b, &o);
    }
    sched_check(m->s);
    bool ok = sim_reap(m);
    for (int i = 0; i < m->n_live; i++)
        if (m->step - m->live[i].arrival > MAX_AGE) {
            fprintf(stderr, "  req %llu starves (%ld steps)\n",
                    (unsigned long long)m->live[i].r->id, m->step - m->live[i].arrival);
            return false;
        }
    return ok;
}

/* One configuration: steps with arrivals and aborts, then a drain. */
static void sim_run(const char *name, struct sched_config c, long steps, int32_t max_images)
{
    struct sim *m = xcalloc(1, sizeof *m);
    m->c = c;
    m->max_images = max_images;
    m->s = sched_new(&c, NULL);
    VLM_ASSERT(m->s);
    fake_init(&m->f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 32; j++) m->prefix[i][j] = (int32_t)rnd(VOCAB);
    /* pairs of images with the same size: only their content hashes tell them apart */
    static const int32_t len[6] = {2, 2, 4, 4, 5, 8};
    for (int i = 0; i < 6; i++)
        m->images[i] = (struct mm_item){.hash = 0x1000 + (uint64_t)i, .n_tokens = len[i]};
    bool ok = true;
    long aborts = 0;
    for (long i = 0; i < steps && ok; i++) {
        if (m->n_live < MAX_LIVE && rnd(100) < 35) sim_arrive(m);
        if (m->n_live && rnd(100) < 3) {
            struct request *r = m->live[rnd((uint32_t)m->n_live)].r;
            if (!req_state_finished(r->state)) {
                VLM_ASSERT(sched_abort_id(m->s, r->id, REQ_FINISHED_ABORT));
                aborts++;
                sched_check(m->s);
            }
        }
        ok = sim_step(m);
    }
    long drain = 0;
    while (ok && sched_n_live(m->s) > 0 && drain < 10000) {
        ok = sim_step(m);
        drain++;
    }
    struct sched_stats st;
    sched_get_stats_raw(m->s, &st);
    TEST(name)
    {
        CHECK(ok);
        CHECK_EQ(sched_n_live(m->s), 0);
        CHECK_EQ(m->n_live, 0);
        CHECK_EQ(st.kv_blocks_used, 0);   /* the pool is full again */
        CHECK(m->max_age <= MAX_AGE);
        CHECK(m->n_done > 1000);
        CHECK(st.preempted_total > 0);    /* the cache is small enough to force it */
        if (c.enable_prefix_caching) CHECK(st.prefix_hit_tokens > 0);
        CHECK(st.encoder_hits > 0 && st.encoder_misses > 0);
        printf("  %s: %ld steps, %ld finished, %ld aborted (%ld asked), %lld preemptions, "
               "prefix hits %lld/%lld tokens, encoder hits %lld misses %lld, max age %ld\n",
               name, m->step, m->n_done, m->n_aborted, aborts, (long long)st.preempted_total,
               (long long)st.prefix_hit_tokens, (long long)st.prefix_queried_tokens,
               (long long)st.encoder_hits, (long long)st.encoder_misses, m->max_age);
    }
    sched_free(m->s);
    fake_destroy(&m->f);
    free(m);
}

int main(void)
{
    const char *seed = getenv("VLM_SIM_SEED"), *steps_env = getenv("VLM_SIM_STEPS");
    rng_state = seed ? strtoull(seed, NULL, 0) : 0x5eed;
    if (!rng_state) rng_state = 1;
    long steps = steps_env ? atol(steps_env) : 30000;
    printf("seed %llu, %ld steps per configuration\n", (unsigned long long)rng_state, steps);
    struct sched_config c = {
        .block_size = 4,
        .n_blocks = 1 + 24, /* 96 tokens: a few requests at a time */
        .max_num_seqs = 6,
        .max_num_batched_tokens = 24,
        .max_model_len = 64,
        .enable_prefix_caching = true,
        .encoder_cache_tokens = 16,
        .max_mm_item_tokens = 8,
    };
    sim_run("simulation: prefix caching on", c, steps, 2);
    struct sched_config c2 = c;
    c2.enable_prefix_caching = false;
    sim_run("simulation: prefix caching off", c2, steps, 2);
    struct sched_config c3 = c;
    c3.max_num_batched_tokens = 5; /* chunks cut everywhere, inside images too */
    c3.encoder_cache_tokens = 8;
    c3.block_size = 3;
    c3.n_blocks = 1 + 30;
    sim_run("simulation: tiny budget, odd block size, minimal encoder cache", c3, steps, 2);
    struct sched_config c4 = c;
    c4.max_num_seqs = 2;
    c4.block_size = 1;
    c4.n_blocks = 1 + 80;
    sim_run("simulation: two sequences, one-token blocks", c4, steps / 3, 2);
    struct sched_config c5 = c;
    c5.block_size = 16;
    c5.n_blocks = 1 + 8;
    c5.encoder_cache_tokens = 24;
    sim_run("simulation: 16-token blocks, up to 8 images per prompt", c5, steps / 3, 8);
    return test_report();
}
