// models: gqa4
/*
 * test_engine_sample_prep: device sampling through the engine. The CPU backend has the
 * sample_summary op (its reference implementation) but leaves device sampling off by default;
 * here one engine forces it on and another off, both decode the same 8 requests (mixed
 * sampling parameters: greedy, temperature, top-k/top-p/min-p, logprobs, a repetition
 * penalty and a top-k above the candidates, which fall back to the full row) for 32 steps,
 * and tokens, logprobs and top-N lists must be identical bit for bit. With device sampling
 * on, the step path must not allocate.
 */
#include "alloc_count.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "model_util.h"
#include "test.h"

#include <stdlib.h>

#define N_SEQ 8
#define N_GEN 32
#define MAX_LEN 24

struct seq_state {
    int32_t tokens[MAX_LEN + N_GEN]; /* prompt then generated */
    int n_prompt, computed, n_gen;
    int32_t blocks[8];
    struct sampling_params sp;
    float logprob[N_GEN];
    int32_t top_ids[N_GEN][VLM_MAX_TOP_LOGPROBS];
    float top_lp[N_GEN][VLM_MAX_TOP_LOGPROBS];
};

static struct sampling_params params_for(int i)
{
    struct sampling_params sp = sampler_params_greedy();
    sp.seed = 500 + (uint64_t)i;
    switch (i) {
    case 0: break;                                              /* greedy */
    case 1: sp.logprobs = 20; break;                            /* greedy + top-20 */
    case 2: sp.temperature = 0.8f; sp.logprobs = 0; break;      /* untruncated draw */
    case 3: sp.temperature = 0.9f; sp.top_k = 20; sp.top_p = 0.9f; sp.logprobs = 5; break;
    case 4: sp.temperature = 0.7f; sp.min_p = 0.1f; break;
    case 5: sp.temperature = 1.0f; sp.top_p = 0.5f; sp.logprobs = 3; break;
    case 6: sp.temperature = 0.8f; sp.repetition_penalty = 1.3f; break; /* falls back */
    case 7: sp.temperature = 1.1f; sp.top_k = SAMPLE_SUMMARY_K + 36; break; /* falls back */
    }
    return sp;
}

/* Structured outputs: with masks on, odd sequences get a token mask each step, handed over
 * by the batch's masks_ready (as the scheduler does): sequence 1 a few hundred allowed
 * tokens, 3 fewer tokens than the summary's candidates (so -inf ones rank among them), 5
 * and 7 about one token in 8. */
#define MASK_WORDS ((151936 + 31) / 32)
static uint32_t g_masks[N_SEQ][MASK_WORDS];
struct mask_step {
    struct batch_seq *seqs;
    int step;
    int32_t vocab;
};

static void fill_mask(uint32_t *m, int i, int step, int32_t V)
{
    int32_t W = (V + 31) / 32;
    memset(m, 0, (size_t)W * sizeof *m);
    int32_t n = i == 1 ? 300 : i == 3 ? SAMPLE_SUMMARY_K / 2 : V / 8;
    for (int32_t k = 0; k < n; k++) {
        int32_t t = (int32_t)(vlm_mix64((uint64_t)(i * 7919 + step) << 20 ^ (uint64_t)k) %
                              (uint64_t)V);
        m[t / 32] |= 1u << (t % 32);
    }
}

static void masks_ready(void *arg)
{
    struct mask_step *ms = arg;
    for (int i = 1; i < N_SEQ; i += 2) {
        fill_mask(g_masks[i], i, ms->step, ms->vocab);
        ms->seqs[i].mask = g_masks[i];
    }
}

/* Prefills every prompt in one step, then decodes the 8 together; results into st. Counts
 * the rows that needed the full row (device sampling on) in *n_fallback. With masked, odd
 * sequences are constrained (see fill_mask); their tokens must be allowed. */
static void run_masked(struct engine *e, struct seq_state st[N_SEQ], int *n_fallback, bool masked)
{
    for (int i = 0; i < N_SEQ; i++) {
        struct seq_state *s = &st[i];
        memset(s, 0, sizeof *s);
        s->n_prompt = 3 + 2 * i;
        for (int k = 0; k < s->n_prompt; k++)
            s->tokens[k] = (int32_t)(vlm_mix64((uint64_t)i * 1000 + (uint64_t)k) % 150000);
        for (int j = 0; j < 8; j++) s->blocks[j] = 1 + i * 8 + j;
        s->sp = params_for(i);
    }
    struct batch_seq bseq[N_SEQ];
    *n_fallback = 0;
    for (int step = 0; step <= N_GEN - 1; step++) {
        for (int i = 0; i < N_SEQ; i++) {
            struct seq_state *s = &st[i];
            int len = s->n_prompt + s->n_gen;
            bseq[i] = (struct batch_seq){
                .pos = s->computed, .n_tokens = len - s->computed,
                .tokens = s->tokens + s->computed, .blocks = s->blocks, .n_blocks = 8,
                .sp = &s->sp, .prompt = s->tokens, .n_prompt = s->n_prompt,
                .output = s->tokens + s->n_prompt, .n_out = s->n_gen};
        }
        struct batch b = {.seqs = bseq, .n_seqs = N_SEQ};
        struct mask_step ms = {.seqs = bseq, .step = step, .vocab = e->cfg.vocab_size};
        if (masked) b.masks_ready = masks_ready, b.masks_arg = &ms;
        struct batch_out o;
        VLM_ASSERT(engine_execute(e, &b, &o) == 0);
        VLM_ASSERT(o.n == N_SEQ);
        for (int i = 0; i < N_SEQ; i++) {
            struct seq_state *s = &st[i];
            if (e->dev_sampling) { /* the same decision the engine made */
                struct sampler_result r;
                *n_fallback += sampler_sample_summary(&e->h_summary[i], e->cfg.vocab_size, &s->sp,
                                                      s->n_prompt, s->n_gen, &r) < 0;
            }
            s->computed += bseq[i].n_tokens;
            s->logprob[s->n_gen] = o.logprob[i];
            memcpy(s->top_ids[s->n_gen], o.top_ids + i * VLM_MAX_TOP_LOGPROBS,
                   sizeof s->top_ids[0]);
            memcpy(s->top_lp[s->n_gen], o.top_lp + i * VLM_MAX_TOP_LOGPROBS, sizeof s->top_lp[0]);
            s->tokens[s->n_prompt + s->n_gen++] = o.token[i];
            if (masked && i % 2) {
                int32_t t = o.token[i];
                VLM_ASSERT(g_masks[i][t / 32] >> (t % 32) & 1);
            }
        }
    }
}

static void run(struct engine *e, struct seq_state st[N_SEQ], int *n_fallback)
{
    run_masked(e, st, n_fallback, false);
}

int main(void)
{
    struct model m = {0};
    struct vlm_err err = {0};
    int rc = model_load(&m, test_path("VLM_MODELS", "gqa4"), &err);
    TEST("load gqa4") {
        CHECK_EQ(rc, 0);
    }
    if (rc) {
        fprintf(stderr, "  %s\n", err.msg);
        return test_report();
    }
    static struct seq_state on[N_SEQ], off[N_SEQ];
    struct engine_params ep = {.block_size = 16, .n_blocks = 1 + N_SEQ * 8,
                               .max_batched_tokens = 256, .max_seqs = N_SEQ};
    struct engine e_on, e_off;
    int fb_on = 0, fb_off = 0;

    TEST("sample_on_device: auto is off on the CPU backend, 1 turns it on") {
        ep.sample_on_device = 0;
        VLM_ASSERT(engine_init(&e_off, &m, &ep, &err) == 0);
        CHECK(!e_off.dev_sampling);
        engine_destroy(&e_off);
        ep.sample_on_device = -1;
        VLM_ASSERT(engine_init(&e_off, &m, &ep, &err) == 0);
        CHECK(!e_off.dev_sampling);
        ep.sample_on_device = 1;
        VLM_ASSERT(engine_init(&e_on, &m, &ep, &err) == 0);
        CHECK(e_on.dev_sampling);
    }

    TEST("device sampling on == off: tokens, logprobs, top-N over 32 steps") {
        run(&e_on, on, &fb_on);
        run(&e_off, off, &fb_off);
        int diff_tok = 0, diff_lp = 0, diff_top = 0;
        for (int i = 0; i < N_SEQ; i++) {
            diff_tok += memcmp(on[i].tokens, off[i].tokens, sizeof on[i].tokens) != 0;
            diff_lp += memcmp(on[i].logprob, off[i].logprob, sizeof on[i].logprob) != 0;
            diff_top += memcmp(on[i].top_ids, off[i].top_ids, sizeof on[i].top_ids) != 0 ||
                        memcmp(on[i].top_lp, off[i].top_lp, sizeof on[i].top_lp) != 0;
        }
        CHECK_EQ(diff_tok, 0);
        CHECK_EQ(diff_lp, 0);
        CHECK_EQ(diff_top, 0);
        printf("  %d of %d rows fell back to the full row\n", fb_on, N_SEQ * N_GEN);
        /* the two fallback requests always, the greedy and untruncated ones never */
        CHECK(fb_on >= 2 * N_GEN && fb_on < N_SEQ * N_GEN);
    }

    TEST("with token masks (structured outputs): device sampling on == off, masked on the "
         "backend") {
        VLM_ASSERT(e_on.cfg.vocab_size <= MASK_WORDS * 32);
        static struct seq_state mon[N_SEQ], moff[N_SEQ];
        int fb;
        run_masked(&e_on, mon, &fb, true);
        CHECK(e_on.dev_masked);
        run_masked(&e_off, moff, &fb, true);
        int diff_tok = 0, diff_lp = 0, diff_top = 0, changed = 0;
        for (int i = 0; i < N_SEQ; i++) {
            diff_tok += memcmp(mon[i].tokens, moff[i].tokens, sizeof mon[i].tokens) != 0;
            diff_lp += memcmp(mon[i].logprob, moff[i].logprob, sizeof mon[i].logprob) != 0;
            diff_top += memcmp(mon[i].top_ids, moff[i].top_ids, sizeof mon[i].top_ids) != 0 ||
                        memcmp(mon[i].top_lp, moff[i].top_lp, sizeof mon[i].top_lp) != 0;
            changed += memcmp(mon[i].tokens, on[i].tokens, sizeof mon[i].tokens) != 0;
        }
        CHECK_EQ(diff_tok, 0);
        CHECK_EQ(diff_lp, 0);
        CHECK_EQ(diff_top, 0);
        CHECK(changed >= N_SEQ / 2); /* the masked ones sample otherwise than unmasked */
    }

    TEST("the requests differ: sampling is not trivially greedy") {
        int distinct = 0;
        for (int i = 1; i < N_SEQ; i++)
            distinct += memcmp(on[i].tokens + on[i].n_prompt, on[0].tokens + on[0].n_prompt,
                               sizeof(int32_t) * N_GEN) != 0;
        CHECK(distinct > 0);
    }
#if COUNT_ALLOCS
    TEST("no allocation on the step path with device sampling") {
        int fb;
        run(&e_on, on, &fb); /* warm-up */
        n_allocs = 0;
        counting = 1;
        run(&e_on, on, &fb);
        run_masked(&e_on, on, &fb, true); /* and with masks applied on the backend */
        counting = 0;
        CHECK_EQ(n_allocs, 0);
    }
#endif
    engine_destroy(&e_on);
    engine_destroy(&e_off);
    model_destroy(&m);
    return test_report();
}
