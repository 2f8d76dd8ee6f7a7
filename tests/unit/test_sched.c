/*
 * test_sched: the scheduler without a model (in the style of vLLM's
 * tests/v1/core/test_scheduler.py). A fake engine (unit/sched_fake.h) computes the next
 * token from the whole context read through the block tables, and every finished request is
 * compared with what it gives alone.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/kv_cache.h"
#include "scheduler/loop.h"
#include "scheduler/sched.h"
#include "test.h"
#include "unit/sched_fake.h"

#define VOCAB 1000

static struct sched_config base_cfg(void)
{
    return (struct sched_config){
        .block_size = 4,
        .n_blocks = 65,
        .max_num_seqs = 8,
        .max_num_batched_tokens = 16,
        .max_model_len = 128,
        .enable_prefix_caching = true,
        .encoder_cache_tokens = 64,
    };
}

/* Counts notify calls per request (engine thread). */
static void count_notify(struct request *r, void *user)
{
    (void)r;
    (*(int *)user)++;
}

struct tr {                         /* a test request */
    struct request *r;
    int notified;
};

/* A request whose prompt is tokens base, base+1, ...; the test keeps one reference. */
static struct request *mk(const struct sched_config *c, struct tr *t, uint64_t id, int32_t n,
                          int32_t base, int32_t max_tokens)
{
    int32_t p[256];
    VLM_ASSERT(n <= 256);
    for (int32_t i = 0; i < n; i++) p[i] = base + i;
    struct req_params pr = {.max_tokens = max_tokens, .sp = {.temperature = 0, .logprobs = -1}};
    struct request *r = req_new(id, p, n, &pr);
    r->notify = count_notify;
    r->notify_user = &t->notified;
    t->r = r;
    t->notified = 0;
    (void)c;
    return r;
}

static void submit(struct sched *s, const struct sched_config *c, struct request *r)
{
    struct vlm_err e = {0};
    int rc = sched_validate(c, r, &e);
    VLM_ASSERT(rc == 0);
    req_retain(r); /* the scheduler's reference */
    sched_add(s, r);
}

/* One step: schedule, fake engine, update, invariants. Returns the batch (its storage
 * stays valid until the next step). */
static struct batch step(struct sched *s, struct fake_engine *f)
{
    struct batch b;
    struct batch_out o;
    int32_t n = sched_schedule(s, &b);
    sched_check(s);
    if (n) {
        int rc = fake_execute(f, &b, &o);
        VLM_ASSERT(rc == 0);
        sched_update(s, &b, &o);
        sched_check(s);
    }
    return b;
}

static int run_until_idle(struct sched *s, struct fake_engine *f, int max_steps)
{
    int n = 0;
    while (sched_n_live(s) > 0 && n < max_steps) {
        step(s, f);
        n++;
    }
    return n;
}

/* Whether r's stream holds exactly what r gives alone. */
static bool matches_reference(struct request *r)
{
    int32_t want[512];
    int want_state;
    int32_t n_want = fake_reference(r, r->cap_tokens, VOCAB, want, &want_state);
    struct req_event ev[512];
    int state;
    struct req_usage u;
    int32_t n = req_stream_read(r, ev, 512, &state, &u);
    if (state != want_state || n != n_want || u.completion_tokens != n) {
        fprintf(stderr, "  req %llu: state %d/%d, n %d/%d\n", (unsigned long long)r->id, state,
                want_state, n, n_want);
        return false;
    }
    for (int32_t i = 0; i < n; i++)
        if (ev[i].token != want[i]) {
            fprintf(stderr, "  req %llu: token %d differs\n", (unsigned long long)r->id, i);
            return false;
        }
    return true;
}

static struct mm_item image(uint64_t hash, int32_t n_tokens)
{
    return (struct mm_item){.hash = hash, .n_tokens = n_tokens, .n_patches = 4 * n_tokens,
                            .grid_t = 1, .grid_h = 2, .grid_w = 2 * n_tokens};
}

/* 4 text tokens, an image of 8 tokens (pad id 9999), 4 text tokens. */
static struct request *mk_img(struct tr *t, uint64_t id, uint64_t img_hash, int32_t max_tokens)
{
    int32_t p[16];
    for (int i = 0; i < 16; i++) p[i] = (i >= 4 && i < 12) ? 9999 : 100 + i;
    struct req_params pr = {.max_tokens = max_tokens, .sp = {.logprobs = -1}};
    struct request *r = req_new(id, p, 16, &pr);
    struct mm_item it = image(img_hash, 8);
    VLM_ASSERT(req_add_item(r, 4, &it, NULL) == 0);
    r->notify = count_notify;
    r->notify_user = &t->notified;
    t->r = r;
    t->notified = 0;
    return r;
}


/* A prompt of n tokens with images (hash, n_tokens) at the given offsets. */
static struct request *mk_imgs(struct tr *t, uint64_t id, int32_t n, int n_img,
                               const int32_t *offs, const uint64_t *hash, const int32_t *len,
                               int32_t max_tokens)
{
    int32_t p[64];
    for (int32_t i = 0; i < n; i++) p[i] = 300 + i;
    for (int j = 0; j < n_img; j++)
        for (int32_t i = 0; i < len[j]; i++) p[offs[j] + i] = 9999;
    struct req_params pr = {.max_tokens = max_tokens, .sp = {.logprobs = -1}};
    struct request *r = req_new(id, p, n, &pr);
    for (int j = 0; j < n_img; j++) {
        struct mm_item it = image(hash[j], len[j]);
        VLM_ASSERT(req_add_item(r, offs[j], &it, NULL) == 0);
    }
    r->notify = count_notify;
    r->notify_user = &t->notified;
    t->r = r;
    t->notified = 0;
    return r;
}

/* ==== The engine thread ====
 * The fake engine behind a gate the test opens step by step, so thread tests are
 * deterministic without sleeping. */
struct gate {
    struct fake_engine f;
    pthread_mutex_t mu;
    pthread_cond_t cv;               /* engine waits for allowance; test waits for notify */
    bool gated;
    long allowed, done;
    int notified;
};

static int gate_execute(void *eng, const struct batch *b, struct batch_out *out)
{
    struct gate *g = eng;
    pthread_mutex_lock(&g->mu);
    while (g->gated && g->done >= g->allowed) pthread_cond_wait(&g->cv, &g->mu);
    g->done++;
    pthread_mutex_unlock(&g->mu);
    return fake_execute(&g->f, b, out);
}

static void gate_notify(struct request *r, void *user)
{
    (void)r;
    struct gate *g = user;
    pthread_mutex_lock(&g->mu);
    g->notified++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

struct submitter {
    struct sched_loop *l;
    struct gate *g;
    struct request *r[8];
    uint64_t id0;
};

static void *submit_thread(void *arg)
{
    struct submitter *t = arg;
    for (int i = 0; i < 8; i++) {
        int32_t p[40];
        int32_t n = 3 + (int32_t)((t->id0 + (uint64_t)i * 7) % 30);
        for (int32_t k = 0; k < n; k++) p[k] = (int32_t)((t->id0 * 31 + (uint64_t)k * 13 + (uint64_t)i) % VOCAB);
        struct req_params pr = {.max_tokens = 4 + i, .sp = {.logprobs = -1}};
        t->r[i] = req_new(t->id0 + (uint64_t)i, p, n, &pr);
        t->r[i]->notify = gate_notify;
        t->r[i]->notify_user = t->g;
        struct vlm_err e;
        VLM_ASSERT(loop_submit(t->l, t->r[i], &e) == 0);
    }
    return NULL;
}

static int n_finished(struct request **r, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) k += req_state_finished(req_stream_state(r[i]));
    return k;
}

/* ==== Structured outputs ====
 * A vocabulary of lowercase words (a-z, every 2- and 3-letter word, the 4-letter words from
 * a-f: ~100k tokens, so a state's first mask walks a large trie) and id 0 with no bytes, the
 * EOS. The masked engine samples the fake engine's token moved to the next allowed id, after
 * joining the masks as engine_execute does, and checks each mask against one computed
 * serially from a matcher of its own fed the same tokens. */

#define CV_EOS 0

static struct gram_vocab *word_vocab(void)
{
    int32_t n = 1 + 26 + 26 * 26 + 26 * 26 * 26 + 6 * 26 * 26 * 26;
    char (*w)[5] = xcalloc((size_t)n, sizeof *w);
    const char **bytes = xcalloc((size_t)n, sizeof *bytes);
    size_t *lens = xcalloc((size_t)n, sizeof *lens);
    int32_t k = 1;
    for (int len = 1; len <= 4; len++) {
        int32_t count = 1;
        for (int i = 0; i < len; i++) count *= 26;
        if (len == 4) count = 6 * 26 * 26 * 26;
        for (int32_t x = 0; x < count; x++, k++) {
            int32_t y = x;
            for (int i = len - 1; i >= 0; i--, y /= 26) w[k][i] = (char)('a' + y % 26);
            bytes[k] = w[k];
            lens[k] = (size_t)len;
        }
    }
    VLM_ASSERT(k == n);
    struct gram_vocab *v = gv_new(n, bytes, lens);
    free(w);
    free(bytes);
    free(lens);
    return v;
}

static struct grammar *word_grammar(const char *re)
{
    struct gram_builder *b = gb_new();
    struct gfrag f;
    char err[200];
    VLM_ASSERT(gb_regex(b, re, strlen(re), 0, &f, err, sizeof err) == 0);
    int32_t root = gb_rule(b);
    gb_define(b, root, f);
    struct grammar *g = gb_finish(b, root, err, sizeof err);
    VLM_ASSERT(g);
    return g;
}

struct masked {
    struct fake_engine f;
    const struct gram_vocab *v;
    struct request *req[4];          /* the constrained requests, with their own matchers */
    struct gram_matcher *ref[4];
    int n_req;
    uint32_t *want;
    int64_t masked, mismatches, unmasked;
};

static int masked_execute(void *eng, const struct batch *b, struct batch_out *out)
{
    struct masked *m = eng;
    int rc = fake_execute(&m->f, b, out);
    if (b->masks_ready) b->masks_ready(b->masks_arg);
    int32_t k = 0, V = gv_size(m->v);
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const struct batch_seq *q = &b->seqs[i];
        if (!q->sp) continue;
        int j = 0;
        while (j < m->n_req && q->tokens + q->n_tokens != m->req[j]->tokens + m->req[j]->n_tokens) j++;
        if (j < m->n_req) {
            if (!q->mask) {
                m->unmasked++;
            } else {
                int32_t n = gm_fill_mask(m->ref[j], m->v, m->want);
                if (n == 0 || gm_can_end(m->ref[j])) m->want[CV_EOS / 32] |= 1u << (CV_EOS % 32);
                m->masked++;
                m->mismatches += memcmp(m->want, q->mask, (size_t)gv_mask_words(m->v) * 4) != 0;
                int32_t t = out->token[k] % V;
                while (!(q->mask[t / 32] >> (t % 32) & 1)) t = (t + 1) % V;
                out->token[k] = t;
                if (t != CV_EOS) VLM_ASSERT(gm_accept_token(m->ref[j], m->v, t));
            }
        }
        k++;
    }
    return rc;
}

static struct batch masked_step(struct sched *s, struct masked *m)
{
    struct batch b;
    struct batch_out o;
    int32_t n = sched_schedule(s, &b);
    sched_check(s);
    if (n) {
        VLM_ASSERT(masked_execute(m, &b, &o) == 0);
        sched_update(s, &b, &o);
        sched_check(s);
    }
    return b;
}

/* The outputs of r (EOS dropped) as text: the words of the vocabulary concatenated. */
static void output_text(struct request *r, const struct gram_vocab *v, char *text, size_t cap)
{
    (void)v;
    size_t n = 0;
    for (int32_t i = r->n_prompt; i < r->n_tokens; i++) {
        int32_t t = r->tokens[i];
        if (t == CV_EOS) continue;
        /* ids: 1..26 one letter, then 2, 3, 4 letters in order */
        int32_t x = t - 1, len = 1, count = 26;
        while (x >= count) x -= count, len++, count = len == 4 ? 6 * 26 * 26 * 26 : count * 26;
        char w[5];
        for (int i2 = len - 1; i2 >= 0; i2--, x /= 26) w[i2] = (char)('a' + x % 26);
        for (int i2 = 0; i2 < len && n + 1 < cap; i2++) text[n++] = w[i2];
    }
    text[n] = 0;
}

int main(void)
{
    struct fake_engine f;
    struct sched_stats st;

    TEST("budget and chunked prefill: running first, then FCFS")
    {
        struct sched_config c = base_cfg();
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr a, b, d;
        submit(s, &c, mk(&c, &a, 1, 10, 10, 3));
        submit(s, &c, mk(&c, &b, 2, 10, 20, 3));
        submit(s, &c, mk(&c, &d, 3, 10, 30, 3));
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 2);
        CHECK_EQ(bt.seqs[0].n_tokens, 10);
        CHECK(bt.seqs[0].sp != NULL);
        CHECK_EQ(bt.seqs[1].n_tokens, 6); /* budget 16: B gets the rest, a chunk */
        CHECK(bt.seqs[1].sp == NULL);
        CHECK_EQ(b.notified, 0);
        CHECK_EQ(a.notified, 1);
        bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 3);
        CHECK_EQ(bt.seqs[0].n_tokens, 1);  /* A decodes */
        CHECK_EQ(bt.seqs[0].pos, 10);
        CHECK_EQ(bt.seqs[1].n_tokens, 4);  /* B finishes its prompt */
        CHECK_EQ(bt.seqs[1].pos, 6);
        CHECK(bt.seqs[1].sp != NULL);
        CHECK_EQ(bt.seqs[2].n_tokens, 10); /* C joins */
        CHECK_EQ(bt.seqs[0].n_blocks, 3);
        run_until_idle(s, &f, 100);
        CHECK(matches_reference(a.r));
        CHECK(matches_reference(b.r));
        CHECK(matches_reference(d.r));
        CHECK_EQ(a.notified, 3); /* once per step that produced a token */
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.kv_blocks_used, 0);
        CHECK_EQ(st.tokens_out, 9);
        CHECK_EQ(st.finished[REQ_FINISHED_LENGTH], 3);
        sched_free(s);
        fake_destroy(&f);
        req_release(a.r);
        req_release(b.r);
        req_release(d.r);
    }

    TEST("prefill chunk: a long prompt gets at most the chunk per step, a newcomer runs beside "
         "it, decodes are never cut")
    {
        struct sched_config c = base_cfg();
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        CHECK_EQ(sched_prefill_chunk(s), 16);
        sched_set_prefill_chunk(s, 5);
        struct tr a, b;
        submit(s, &c, mk(&c, &a, 1, 40, 10, 3));
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 1);
        CHECK_EQ(bt.seqs[0].n_tokens, 5);
        submit(s, &c, mk(&c, &b, 2, 3, 100, 4));
        bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 2);           /* the newcomer is not starved by the long prompt */
        CHECK_EQ(bt.seqs[0].n_tokens, 5);
        CHECK_EQ(bt.seqs[0].pos, 5);
        CHECK_EQ(bt.seqs[1].n_tokens, 3); /* B's whole prompt: first token this step */
        CHECK(bt.seqs[1].sp != NULL);
        CHECK_EQ(b.notified, 1);
        bt = step(s, &f);
        CHECK_EQ(bt.seqs[1].n_tokens, 1); /* B decodes beside A's next chunk */
        sched_set_prefill_chunk(s, 1000); /* clamped to max_num_batched_tokens */
        CHECK_EQ(sched_prefill_chunk(s), 16);
        sched_set_prefill_chunk(s, 0);
        CHECK_EQ(sched_prefill_chunk(s), 1);
        sched_set_prefill_chunk(s, 7);
        run_until_idle(s, &f, 100);
        CHECK(matches_reference(a.r));
        CHECK(matches_reference(b.r));
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.kv_blocks_used, 0);
        sched_free(s);
        fake_destroy(&f);
        req_release(a.r);
        req_release(b.r);
    }

    TEST("max_num_seqs caps the batch; a long prompt is split across steps")
    {
        struct sched_config c = base_cfg();
        c.max_num_seqs = 2;
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr t[3];
        submit(s, &c, mk(&c, &t[0], 1, 2, 10, 2));
        submit(s, &c, mk(&c, &t[1], 2, 2, 20, 4));
        submit(s, &c, mk(&c, &t[2], 3, 40, 30, 2));
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 2);
        bt = step(s, &f); /* t0 finishes at its 2nd token */
        CHECK_EQ(bt.n_seqs, 2);
        bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 2);
        CHECK_EQ(bt.seqs[1].n_tokens, 15); /* 16 - t1's decode */
        CHECK_EQ(bt.seqs[1].pos, 0);
        bt = step(s, &f); /* t1 finishes here */
        CHECK_EQ(bt.seqs[1].pos, 15);
        bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 1);
        CHECK_EQ(bt.seqs[0].pos, 30);
        CHECK_EQ(bt.seqs[0].n_tokens, 10);
        CHECK(bt.seqs[0].sp != NULL);
        run_until_idle(s, &f, 100);
        for (int i = 0; i < 3; i++) CHECK(matches_reference(t[i].r));
        sched_free(s);
        fake_destroy(&f);
        for (int i = 0; i < 3; i++) req_release(t[i].r);
    }

    for (int caching = 0; caching < 2; caching++) {
        TEST(caching ? "preemption (prefix caching on): the newest running request goes first, "
                       "to the front of the queue, and resumes with identical output"
                     : "preemption (prefix caching off): newest first, identical output")
        {
            struct sched_config c = base_cfg();
            c.n_blocks = 7; /* 6 usable blocks of 4 tokens */
            c.max_num_batched_tokens = 64;
            c.enable_prefix_caching = caching;
            struct sched *s = sched_new(&c, NULL);
            fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
            struct tr t[4];
            for (int i = 0; i < 3; i++) submit(s, &c, mk(&c, &t[i], (uint64_t)i + 1, 7, 10 * i, 10));
            step(s, &f); /* prefill: 2 blocks each */
            step(s, &f); /* position 7: still in block 1 */
            CHECK_EQ(t[2].r->state, REQ_RUNNING);
            struct batch bt = step(s, &f); /* position 8 needs a block: C is preempted */
            CHECK_EQ(t[2].r->state, REQ_PREEMPTED);
            CHECK_EQ(t[0].r->state, REQ_RUNNING);
            CHECK_EQ(t[1].r->state, REQ_RUNNING);
            CHECK_EQ(bt.n_seqs, 2);
            sched_get_stats_raw(s, &st);
            CHECK_EQ(st.preempted_total, 1);
            CHECK_EQ(st.waiting, 1);
            /* a new request queues behind the preempted one */
            submit(s, &c, mk(&c, &t[3], 4, 3, 77, 2));
            run_until_idle(s, &f, 500);
            CHECK(t[2].r->n_preempted >= 1);
            for (int i = 0; i < 4; i++) CHECK(matches_reference(t[i].r));
            sched_get_stats_raw(s, &st);
            CHECK_EQ(st.kv_blocks_used, 0);
            sched_free(s);
            fake_destroy(&f);
            for (int i = 0; i < 4; i++) req_release(t[i].r);
        }
    }

    TEST("a request longer than the whole cache finishes with length instead of starving")
    {
        struct sched_config c = base_cfg();
        c.n_blocks = 5; /* 16 tokens */
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr t;
        submit(s, &c, mk(&c, &t, 1, 10, 1, 100));
        CHECK_EQ(t.r->cap_tokens, 16);
        run_until_idle(s, &f, 100);
        CHECK(matches_reference(t.r));
        CHECK_EQ(t.r->state, REQ_FINISHED_LENGTH);
        sched_free(s);
        fake_destroy(&f);
        req_release(t.r);
    }

    TEST("abort: blocks are released at once; waiting and unknown ids too")
    {
        struct sched_config c = base_cfg();
        c.max_num_seqs = 1;
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr a, b;
        submit(s, &c, mk(&c, &a, 1, 10, 1, 50));
        submit(s, &c, mk(&c, &b, 2, 10, 1, 50));
        step(s, &f);
        step(s, &f);
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.kv_blocks_used, 3);
        int before = a.notified;
        CHECK(sched_abort_id(s, 1, REQ_FINISHED_ABORT));
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.kv_blocks_used, 0);
        CHECK_EQ(st.running, 0);
        CHECK_EQ(a.notified, before + 1);
        CHECK(!sched_abort_id(s, 1, REQ_FINISHED_ABORT)); /* idempotent */
        CHECK(!sched_abort_id(s, 99, REQ_FINISHED_ABORT));
        CHECK(sched_abort_id(s, 2, REQ_FINISHED_STOP)); /* waiting */
        CHECK_EQ(sched_n_live(s), 0);
        sched_check(s);
        struct req_event ev[8];
        int state;
        struct req_usage u;
        CHECK_EQ(req_stream_read(a.r, ev, 8, &state, &u), 2);
        CHECK_EQ(state, REQ_FINISHED_ABORT);
        CHECK_EQ(u.completion_tokens, 2);
        CHECK_EQ(req_stream_read(b.r, ev, 8, &state, &u), 0);
        CHECK_EQ(state, REQ_FINISHED_STOP);
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.finished[REQ_FINISHED_ABORT], 1);
        sched_free(s);
        fake_destroy(&f);
        req_release(a.r);
        req_release(b.r);
    }

    TEST("prefix hits: shared prefix skips compute, one token is always recomputed")
    {
        struct sched_config c = base_cfg();
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr a, b, d;
        submit(s, &c, mk(&c, &a, 1, 12, 100, 1));
        run_until_idle(s, &f, 10);
        int32_t p[12];
        for (int i = 0; i < 12; i++) p[i] = i < 8 ? 100 + i : 500 + i;
        struct req_params pr = {.max_tokens = 3, .sp = {.logprobs = -1}};
        b.r = req_new(2, p, 12, &pr);
        submit(s, &c, b.r);
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 1);
        CHECK_EQ(bt.seqs[0].pos, 8);
        CHECK_EQ(bt.seqs[0].n_tokens, 4);
        CHECK_EQ(bt.seqs[0].blocks[0], a.r->blocks[0]); /* a's table kept its ids */
        run_until_idle(s, &f, 10);
        submit(s, &c, mk(&c, &d, 3, 12, 100, 2)); /* identical to a: 2 of 3 blocks */
        bt = step(s, &f);
        CHECK_EQ(bt.seqs[0].pos, 8);
        run_until_idle(s, &f, 10);
        CHECK(matches_reference(a.r));
        CHECK(matches_reference(b.r));
        CHECK(matches_reference(d.r));
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.prefix_hit_tokens, 16);
        CHECK_EQ(st.prefix_queried_tokens, 36);
        struct req_event ev[4];
        struct req_usage u;
        int state;
        req_stream_read(d.r, ev, 0, &state, &u);
        CHECK_EQ(u.cached_tokens, 8);
        sched_free(s);
        fake_destroy(&f);
        req_release(a.r);
        req_release(b.r);
        req_release(d.r);
    }

    TEST("images: same text with another image shares no image block; the same image does, "
         "and is encoded once")
    {
        struct sched_config c = base_cfg();
        c.max_mm_item_tokens = 8;
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr x, y, z, w1, w2;
        submit(s, &c, mk_img(&x, 1, 0xA1, 4));
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_encode, 1);
        CHECK_EQ(bt.seqs[0].n_mm, 1);
        run_until_idle(s, &f, 20);
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.encoder_misses, 1);

        submit(s, &c, mk_img(&y, 2, 0xB2, 4)); /* other image, same tokens */
        bt = step(s, &f);
        CHECK_EQ(bt.seqs[0].pos, 4); /* only the text block before the image hits */
        CHECK_EQ(bt.n_encode, 1);
        CHECK_EQ(bt.encode[0]->hash, 0xB2);
        run_until_idle(s, &f, 20);
        CHECK(matches_reference(x.r));
        CHECK(matches_reference(y.r));
        CHECK(x.r->tokens[16] != y.r->tokens[16] || x.r->tokens[17] != y.r->tokens[17]);
        CHECK_EQ(x.r->n_blocks, 0); /* finished tables are empty */

        submit(s, &c, mk_img(&z, 3, 0xA1, 4)); /* x's image again */
        bt = step(s, &f);
        CHECK_EQ(bt.seqs[0].pos, 12); /* text + image blocks hit; the last block runs */
        CHECK_EQ(bt.n_encode, 0);    /* nothing to encode: the span was all cached */
        CHECK_EQ(bt.seqs[0].n_mm, 0);
        run_until_idle(s, &f, 20);
        CHECK(matches_reference(z.r));
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.prefix_hit_tokens, 4 + 12);
        CHECK_EQ(st.encoder_misses, 2);

        /* two requests with a new image in the same step: one encode, one hit */
        submit(s, &c, mk_img(&w1, 4, 0xC3, 2));
        submit(s, &c, mk_img(&w2, 5, 0xC3, 2));
        int64_t enc0 = f.n_encodes;
        bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 2);
        CHECK_EQ(bt.n_encode, 1);
        run_until_idle(s, &f, 20);
        CHECK_EQ(f.n_encodes - enc0, 1);
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.encoder_misses, 3);
        CHECK_EQ(st.encoder_hits, 1);
        CHECK(matches_reference(w1.r));
        CHECK(matches_reference(w2.r));
        sched_free(s);
        fake_destroy(&f);
        req_release(x.r);
        req_release(y.r);
        req_release(z.r);
        req_release(w1.r);
        req_release(w2.r);
    }

    TEST("encoder budget: a chunk stops before an image that does not fit; LRU eviction")
    {
        struct sched_config c = base_cfg();
        c.encoder_cache_tokens = 8; /* one image */
        c.max_mm_item_tokens = 8;
        c.enable_prefix_caching = false;
        c.max_num_batched_tokens = 64;
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr a, b;
        submit(s, &c, mk_img(&a, 1, 0xA1, 3));
        submit(s, &c, mk_img(&b, 2, 0xB2, 3));
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 2);
        CHECK_EQ(bt.seqs[0].n_tokens, 16);
        CHECK_EQ(bt.seqs[1].n_tokens, 4); /* cut before its image */
        CHECK_EQ(bt.n_encode, 1);
        CHECK_EQ(bt.encode_row[0], 0);
        bt = step(s, &f); /* a's image released after its prefill: evicted for b's */
        CHECK_EQ(bt.n_encode, 1);
        CHECK_EQ(bt.encode[0]->hash, 0xB2);
        CHECK_EQ(bt.encode_row[0], 0); /* a's rows, reused */
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.encoder_tokens_used, 8);
        CHECK_EQ(bt.seqs[1].pos, 4);
        CHECK_EQ(bt.seqs[1].n_tokens, 12);
        run_until_idle(s, &f, 20);
        CHECK(matches_reference(a.r));
        CHECK(matches_reference(b.r));
        sched_free(s);
        fake_destroy(&f);
        req_release(a.r);
        req_release(b.r);
    }

    TEST("a chunk boundary inside an image: encoded once, held until the span is done")
    {
        struct sched_config c = base_cfg();
        c.max_num_batched_tokens = 6;
        c.encoder_cache_tokens = 8;
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr a;
        submit(s, &c, mk_img(&a, 1, 0xA1, 2));
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_encode, 1);
        CHECK_EQ(bt.seqs[0].n_mm, 1);
        bt = step(s, &f);
        CHECK_EQ(bt.n_encode, 0);
        CHECK_EQ(bt.seqs[0].pos, 6);
        CHECK_EQ(bt.seqs[0].n_mm, 1);
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.encoder_tokens_used, 8);
        bt = step(s, &f);
        CHECK_EQ(bt.seqs[0].n_mm, 0);
        run_until_idle(s, &f, 20);
        CHECK_EQ(f.n_encodes, 1);
        CHECK(matches_reference(a.r));
        sched_free(s);
        fake_destroy(&f);
        req_release(a.r);
    }

    TEST("stop conditions: EOS, ignore_eos, stop ids, max_tokens, max_model_len")
    {
        struct sched_config c = base_cfg();
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr probe;
        submit(s, &c, mk(&c, &probe, 1, 5, 3, 8));
        run_until_idle(s, &f, 20);
        int32_t out[16];
        int fs;
        fake_reference(probe.r, probe.r->cap_tokens, VOCAB, out, &fs);
        int k = 2;
        while (k < 8) {
            bool seen = false;
            for (int j = 0; j < k; j++) seen |= out[j] == out[k];
            if (!seen) break;
            k++;
        }
        VLM_ASSERT(k < 8);
        struct tr e1, e2, e3, e4;
        mk(&c, &e1, 2, 5, 3, 8);
        e1.r->params.eos_ids[0] = out[k];
        e1.r->params.n_eos = 1;
        mk(&c, &e2, 3, 5, 3, 8);
        e2.r->params.eos_ids[0] = out[k];
        e2.r->params.n_eos = 1;
        e2.r->params.ignore_eos = true;
        mk(&c, &e3, 4, 5, 3, 8);
        e3.r->params.stop_ids[0] = out[k];
        e3.r->params.n_stop = 1;
        struct sched_config c2 = c;
        c2.max_model_len = 7;
        mk(&c, &e4, 5, 5, 3, 100);
        submit(s, &c, e1.r);
        submit(s, &c, e2.r);
        submit(s, &c, e3.r);
        submit(s, &c2, e4.r); /* validated against max_model_len 7: 2 outputs */
        run_until_idle(s, &f, 20);
        struct req_event ev[16];
        int state;
        struct req_usage u;
        CHECK_EQ(req_stream_read(e1.r, ev, 16, &state, &u), k + 1);
        CHECK_EQ(state, REQ_FINISHED_STOP);
        CHECK(ev[k].is_stop && !ev[k - 1].is_stop);
        CHECK_EQ(req_stream_read(e2.r, ev, 16, &state, &u), 8);
        CHECK_EQ(state, REQ_FINISHED_LENGTH);
        CHECK_EQ(req_stream_read(e3.r, ev, 16, &state, &u), k + 1);
        CHECK_EQ(state, REQ_FINISHED_STOP);
        CHECK_EQ(req_stream_read(e4.r, ev, 16, &state, &u), 2);
        CHECK_EQ(state, REQ_FINISHED_LENGTH);
        CHECK_EQ(u.prompt_tokens, 5);
        sched_free(s);
        fake_destroy(&f);
        req_release(probe.r);
        req_release(e1.r);
        req_release(e2.r);
        req_release(e3.r);
        req_release(e4.r);
    }

    TEST("engine failure: the step's requests end with an error, its new items are forgotten")
    {
        struct sched_config c = base_cfg();
        c.encoder_cache_tokens = 16;
        c.max_mm_item_tokens = 8;
        c.enable_prefix_caching = false;
        c.max_num_batched_tokens = 64;
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr a, b, d, e2;
        submit(s, &c, mk_img(&a, 1, 0xA1, 6));
        step(s, &f); /* A prefilled, image A1 encoded and released */
        submit(s, &c, mk_img(&b, 2, 0xB2, 6));
        struct batch bt;
        CHECK(sched_schedule(s, &bt) == 2);
        CHECK_EQ(bt.n_encode, 1);
        sched_fail(s, &bt); /* the engine never ran this step */
        sched_check(s);
        CHECK_EQ(req_stream_state(a.r), REQ_FINISHED_ERROR);
        CHECK_EQ(req_stream_state(b.r), REQ_FINISHED_ERROR);
        CHECK_EQ(a.notified, 2);
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.encoder_tokens_used, 8); /* A1 only: B2's rows may hold anything */
        submit(s, &c, mk_img(&d, 3, 0xB2, 3));  /* needs B2, which the engine never wrote */
        submit(s, &c, mk_img(&e2, 4, 0xA1, 3)); /* A1, which it did: still resident */
        bt = step(s, &f);
        CHECK_EQ(bt.n_encode, 1);
        CHECK_EQ(bt.encode[0]->hash, 0xB2);
        run_until_idle(s, &f, 50);
        CHECK(matches_reference(d.r));
        CHECK(matches_reference(e2.r));
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.finished[REQ_FINISHED_ERROR], 2);
        CHECK_EQ(st.kv_blocks_used, 0);
        sched_free(s);
        fake_destroy(&f);
        req_release(a.r);
        req_release(b.r);
        req_release(d.r);
        req_release(e2.r);
    }

    TEST("encoder arena: a request's own later image must not keep its first one out")
    {
        struct sched_config c = base_cfg();
        c.encoder_cache_tokens = 16;
        c.max_mm_item_tokens = 8;
        c.max_num_batched_tokens = 64;
        c.enable_prefix_caching = false;
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr p1, r1;
        /* p1 leaves Z at rows [0, 6) and Y at rows [6, 10), both unreferenced */
        int32_t o1[] = {0, 6}, l1[] = {6, 4};
        uint64_t h1[] = {0x2, 0x4};
        submit(s, &c, mk_imgs(&p1, 1, 12, 2, o1, h1, l1, 1));
        run_until_idle(s, &f, 10);
        /* r1 needs X (8 rows, new) then Y: with Y pinned the free runs are 6 and 6 rows */
        int32_t o2[] = {2, 12}, l2[] = {8, 4};
        uint64_t h2[] = {0x8, 0x4};
        submit(s, &c, mk_imgs(&r1, 2, 20, 2, o2, h2, l2, 2));
        struct batch bt = step(s, &f);
        CHECK_EQ(bt.n_seqs, 1);
        CHECK_EQ(bt.seqs[0].n_tokens, 10); /* up to the end of X: Y is left for later */
        CHECK_EQ(bt.n_encode, 1);
        CHECK_EQ(bt.encode_row[0], 0); /* Z and Y evicted: X takes rows [0, 8) */
        sched_get_stats_raw(s, &st);
        CHECK_EQ(st.encoder_tokens_used, 8);
        int n = run_until_idle(s, &f, 20);
        CHECK(n < 20);
        CHECK(matches_reference(r1.r));
        sched_free(s);
        fake_destroy(&f);
        req_release(p1.r);
        req_release(r1.r);
    }

    TEST("validation: requests that could never run are rejected with 400")
    {
        struct sched_config c = base_cfg();
        struct vlm_err e;
        struct tr t;
        mk(&c, &t, 1, 128, 0, 4);
        CHECK_EQ(sched_validate(&c, t.r, &e), VLM_EINVAL);
        CHECK_EQ(e.http_status, 400);
        req_release(t.r);
        c.n_blocks = 5;
        mk(&c, &t, 1, 16, 0, 4);
        CHECK_EQ(sched_validate(&c, t.r, &e), VLM_EINVAL); /* > the whole cache */
        req_release(t.r);
        mk(&c, &t, 1, 15, 0, 4);
        CHECK_EQ(sched_validate(&c, t.r, &e), 0);
        req_release(t.r);
        mk(&c, &t, 1, 0, 0, 4);
        CHECK_EQ(sched_validate(&c, t.r, &e), VLM_EINVAL);
        req_release(t.r);
        mk(&c, &t, 1, 4, 0, 0);
        CHECK_EQ(sched_validate(&c, t.r, &e), VLM_EINVAL);
        CHECK_STR(e.param, "max_tokens");
        req_release(t.r);
        c = base_cfg();
        c.encoder_cache_tokens = 4;
        mk_img(&t, 1, 1, 2);
        CHECK_EQ(sched_validate(&c, t.r, &e), VLM_EINVAL); /* image of 8 > budget 4 */
        req_release(t.r);
        c.max_mm_item_tokens = 8;
        CHECK(sched_new(&c, &e) == NULL);
        CHECK_EQ(e.code, VLM_EINVAL);
        c = base_cfg();
        c.max_num_seqs = 0;
        CHECK(sched_new(&c, &e) == NULL);
    }

    TEST("engine thread: submissions from two threads, small cache, abort, rejection")
    {
        struct sched_config c = base_cfg();
        c.n_blocks = 1 + 16;
        struct gate g = {0};
        fake_init(&g.f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        pthread_mutex_init(&g.mu, NULL);
        pthread_cond_init(&g.cv, NULL);
        struct sched_loop *l;
        struct vlm_err e;
        struct executor ex = {.impl = &g, .execute = gate_execute};
        CHECK_EQ(loop_start(&l, &c, ex, &e), 0);
        struct submitter t1 = {.l = l, .g = &g, .id0 = 100}, t2 = {.l = l, .g = &g, .id0 = 200};
        pthread_t th1, th2;
        pthread_create(&th1, NULL, submit_thread, &t1);
        pthread_create(&th2, NULL, submit_thread, &t2);
        pthread_join(th1, NULL);
        pthread_join(th2, NULL);
        struct request *all[16];
        memcpy(all, t1.r, sizeof t1.r);
        memcpy(all + 8, t2.r, sizeof t2.r);
        pthread_mutex_lock(&g.mu);
        while (n_finished(all, 16) < 16) pthread_cond_wait(&g.cv, &g.mu);
        pthread_mutex_unlock(&g.mu);
        for (int i = 0; i < 16; i++) CHECK(matches_reference(all[i]));
        loop_get_stats(l, &st);
        /* how many steps the arrivals spread over depends on thread timing, so preemption is
         * likely here but asserted only in the single-threaded tests above */
        printf("  %lld preemptions\n", (long long)st.preempted_total);
        CHECK_EQ(st.finished[REQ_FINISHED_LENGTH], 16);

        /* rejected at once: could never fit */
        struct tr big;
        mk(&c, &big, 1, 128, 0, 4);
        CHECK_EQ(loop_submit(l, big.r, &e), VLM_EINVAL);
        CHECK_EQ(e.http_status, 400);
        req_release(big.r);

        /* abort from this thread while it runs: finished within a step */
        pthread_mutex_lock(&g.mu);
        g.gated = true;
        g.allowed = g.done + 2;
        pthread_mutex_unlock(&g.mu);
        struct tr lng;
        mk(&c, &lng, 7, 5, 1, 60);
        lng.r->notify = gate_notify;
        lng.r->notify_user = &g;
        pthread_mutex_lock(&g.mu);
        int notified0 = g.notified;
        pthread_mutex_unlock(&g.mu);
        CHECK_EQ(loop_submit(l, lng.r, &e), 0);
        pthread_mutex_lock(&g.mu);
        while (g.notified < notified0 + 2) pthread_cond_wait(&g.cv, &g.mu); /* 2 tokens */
        pthread_mutex_unlock(&g.mu);
        loop_abort(l, 7, REQ_FINISHED_ABORT);
        pthread_mutex_lock(&g.mu);
        g.gated = false;
        pthread_cond_broadcast(&g.cv);
        while (!req_state_finished(req_stream_state(lng.r))) pthread_cond_wait(&g.cv, &g.mu);
        pthread_mutex_unlock(&g.mu);
        struct req_event ev[64];
        int state;
        struct req_usage u;
        int32_t n = req_stream_read(lng.r, ev, 64, &state, &u);
        CHECK_EQ(state, REQ_FINISHED_ABORT);
        CHECK(n >= 2 && n <= 3);
        loop_abort(l, 7, REQ_FINISHED_ABORT); /* idempotent */
        loop_stop(l);
        req_release(lng.r);
        for (int i = 0; i < 16; i++) req_release(all[i]);
        fake_destroy(&g.f);
        pthread_mutex_destroy(&g.mu);
        pthread_cond_destroy(&g.cv);
    }

    for (int mt = 1; mt <= 3; mt += 2) {
        char mt_name[160];
        snprintf(mt_name, sizeof mt_name,
                 "structured outputs, %d mask thread(s): masks from the helpers are the serial "
                 "ones; a cold mask holds its sequence while the others go on", mt);
        TEST(mt_name)
        {
            struct sched_config c = base_cfg();
            c.max_model_len = 96;
            c.mask_threads = mt;
            struct sched *s = sched_new(&c, NULL);
            struct masked m = {.v = word_vocab()};
            int32_t V = gv_size(m.v);
            m.want = xmalloc((size_t)gv_mask_words(m.v) * sizeof *m.want);
            fake_init(&m.f, c.n_blocks, c.block_size, V, c.encoder_cache_tokens);
            /* a fresh grammar: every state's first mask walks the ~100k-token trie */
            struct grammar *gr = word_grammar("(ab|cd|[e-z]{2,3})[a-z]{0,30}q");
            struct tr a, b, d;
            mk(&c, &a, 1, 6, 5, 40);
            mk(&c, &b, 2, 6, 50, 12);  /* unconstrained */
            mk(&c, &d, 3, 6, 90, 40);
            struct tr *con[2] = {&a, &d};
            for (int i = 0; i < 2; i++) {
                struct request *r = con[i]->r;
                r->grammar = gr;
                grammar_retain(gr);
                r->vocab = m.v;
                r->params.eos_ids[0] = CV_EOS;
                r->params.n_eos = 1;
                m.req[m.n_req] = r;
                m.ref[m.n_req++] = gm_new(gr);
            }
            grammar_release(gr);
            submit(s, &c, a.r);
            submit(s, &c, b.r);
            submit(s, &c, d.r);
            /* A's and D's first masks are cold walks on the helper: B's prompt and all of its
             * tokens go through before either of them samples once */
            int steps = 0;
            while (req_stream_state(b.r) == REQ_WAITING && steps < 200) masked_step(s, &m), steps++;
            CHECK_EQ(req_stream_state(b.r), REQ_FINISHED_LENGTH);
            CHECK(a.r->n_tokens - a.r->n_prompt <= 1);
            CHECK(a.r->n_computed < a.r->n_tokens); /* A's last prompt token waits for its mask */
            while (sched_n_live(s) > 0 && steps < 2000) masked_step(s, &m), steps++;
            CHECK_EQ(sched_n_live(s), 0);
            fprintf(stderr, "  %d steps, %lld masked samples\n", steps, (long long)m.masked);
            CHECK(m.masked > 10);
            CHECK_EQ(m.mismatches, 0);
            CHECK_EQ(m.unmasked, 0);
            for (int i = 0; i < 2; i++) { /* each output is a word of the grammar */
                struct request *r = con[i]->r;
                char text[200];
                output_text(r, m.v, text, sizeof text);
                int fin = req_stream_state(r);
                size_t n = strlen(text);
                CHECK(fin == REQ_FINISHED_STOP || fin == REQ_FINISHED_LENGTH);
                if (fin == REQ_FINISHED_STOP) CHECK(n >= 3 && text[n - 1] == 'q');
                for (size_t j = 0; j < n; j++) CHECK(text[j] >= 'a' && text[j] <= 'z');
                gm_free(m.ref[i]);
            }
            sched_free(s);
            fake_destroy(&m.f);
            gv_free((struct gram_vocab *)m.v);
            free(m.want);
            req_release(a.r);
            req_release(b.r);
            req_release(d.r);
        }
    }

    TEST("sched_free finishes what is left as aborted, notifying each")
    {
        struct sched_config c = base_cfg();
        struct sched *s = sched_new(&c, NULL);
        fake_init(&f, c.n_blocks, c.block_size, VOCAB, c.encoder_cache_tokens);
        struct tr a, b;
        submit(s, &c, mk(&c, &a, 1, 10, 1, 50));
        submit(s, &c, mk(&c, &b, 2, 40, 1, 50));
        step(s, &f);
        sched_free(s);
        CHECK_EQ(req_stream_state(a.r), REQ_FINISHED_ABORT);
        CHECK_EQ(req_stream_state(b.r), REQ_FINISHED_ABORT);
        CHECK_EQ(a.notified, 2);
        CHECK_EQ(b.notified, 1);
        fake_destroy(&f);
        req_release(a.r);
        req_release(b.r);
    }

    return test_report();
}
