// models: gqa4
/*
 * test_batch_invariance: a request's tokens do not depend on what else runs in its step.
 * 8 different prompts (1 to 40 tokens) are generated greedily (and with seeded sampling)
 *   - alone: one sequence per step, the whole prompt in one prefill step;
 *   - together: all 8 per step, whole prompts, then decoded together;
 *   - chunked: all 8 per step in reverse order, prompts fed 7 tokens per step, so prefill
 *     chunks and decode tokens of different sequences share steps;
 * with KV block sizes 16 and 32, and every variant must give exactly the alone tokens.
 * `test_batch_invariance --cuda` runs the same on the CUDA backend (tests/gpu/run.sh; exits
 * 77 without a GPU); CUDA graphs are on there, so decode steps are padded graph steps.
 */
#include "alloc_count.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "model_util.h"
#include "test.h"

#include <stdlib.h>

#define N_SEQ 8
#define N_GEN 12
#define MAX_LEN 64

enum mode { MODE_ALONE, MODE_TOGETHER, MODE_CHUNKED };

static const int prompt_len[N_SEQ] = {5, 13, 1, 29, 40, 9, 22, 17};
static int32_t prompts[N_SEQ][MAX_LEN];

struct seq_state {
    int32_t tokens[MAX_LEN + N_GEN]; /* prompt then generated */
    int n_prompt, computed, n_gen;
    int32_t blocks[MAX_LEN];
    struct sampling_params sp;
};

/* Generates N_GEN tokens for every prompt in the given mode; tokens into out. */
static void run(struct engine *e, enum mode mode, bool sample, int32_t out[N_SEQ][N_GEN])
{
    int32_t bs = engine_block_size(e), per = (MAX_LEN + N_GEN) / bs + 2;
    struct seq_state st[N_SEQ];
    for (int i = 0; i < N_SEQ; i++) {
        struct seq_state *s = &st[i];
        memset(s, 0, sizeof *s);
        s->n_prompt = prompt_len[i];
        memcpy(s->tokens, prompts[i], sizeof(int32_t) * (size_t)s->n_prompt);
        /* disjoint block ranges, handed out back to front so tables are not the identity */
        for (int j = 0; j < per; j++) s->blocks[j] = 1 + i * per + (per - 1 - j);
        s->sp = sampler_params_greedy();
        if (sample) {
            s->sp.temperature = 0.9f;
            s->sp.top_k = 40;
            s->sp.top_p = 0.95f;
            s->sp.seed = 100 + (uint64_t)i;
        }
    }
    struct batch_seq bseq[N_SEQ];
    int who[N_SEQ]; /* the seq_state behind each bseq entry */
    int alone_cur = 0;
    for (;;) {
        int n = 0;
        for (int k = 0; k < N_SEQ; k++) {
            int i = mode == MODE_CHUNKED ? N_SEQ - 1 - k : k;
            struct seq_state *s = &st[i];
            if (s->n_gen == N_GEN) continue;
            if (mode == MODE_ALONE && i != alone_cur) continue;
            int len = s->n_prompt + s->n_gen, todo = len - s->computed;
            if (mode == MODE_CHUNKED && todo > 7) todo = 7;
            bool last = s->computed + todo == len;
            who[n] = i;
            bseq[n++] = (struct batch_seq){
                .pos = s->computed, .n_tokens = todo,
                .tokens = s->tokens + s->computed, .blocks = s->blocks, .n_blocks = per,
                .sp = last ? &s->sp : NULL, .prompt = s->tokens, .n_prompt = s->n_prompt,
                .output = s->tokens + s->n_prompt, .n_out = s->n_gen};
        }
        if (n == 0) {
            if (mode == MODE_ALONE && ++alone_cur < N_SEQ) continue;
            break;
        }
        struct batch b = {.seqs = bseq, .n_seqs = n};
        struct batch_out o;
        VLM_ASSERT(engine_execute(e, &b, &o) == 0);
        int r = 0;
        for (int k = 0; k < n; k++) {
            struct seq_state *s = &st[who[k]];
            s->computed += bseq[k].n_tokens;
            if (bseq[k].sp) s->tokens[s->n_prompt + s->n_gen++] = o.token[r++];
        }
        VLM_ASSERT(r == o.n);
    }
    for (int i = 0; i < N_SEQ; i++)
        memcpy(out[i], st[i].tokens + st[i].n_prompt, sizeof(int32_t) * N_GEN);
}

static int count_diff(int32_t a[N_SEQ][N_GEN], int32_t b[N_SEQ][N_GEN])
{
    int d = 0;
    for (int i = 0; i < N_SEQ; i++)
        for (int k = 0; k < N_GEN; k++) d += a[i][k] != b[i][k];
    return d;
}

int main(int argc, char **argv)
{
    int backend = ENGINE_BACKEND_CPU;
    if (argc > 1 && !strcmp(argv[1], "--cuda")) {
#ifdef VLM_HAVE_CUDA
        if (backend_cuda_device_count() < 1) TEST_SKIP("no CUDA device");
        backend = ENGINE_BACKEND_CUDA;
#else
        TEST_SKIP("built without CUDA");
#endif
    }
    struct model m = {0};
    struct vlm_err err = {0};
    int rc = test_load_model(&m, "gqa4");
    if (rc) return test_report();
    for (int i = 0; i < N_SEQ; i++)
        for (int k = 0; k < prompt_len[i]; k++)
            prompts[i][k] = (int32_t)(vlm_mix64((uint64_t)i * 1000 + (uint64_t)k) % 150000 %
                                     (uint64_t)m.cfg.vocab_size); /* GPU runs: small vocab */

    static int32_t ref[2][N_SEQ][N_GEN], got[N_SEQ][N_GEN];
    static char names[16][128];
    int n_names = 0;
    int sizes[] = {16, 32};
    for (int si = 0; si < 2; si++) {
        struct engine_params ep = {.backend = backend, .block_size = sizes[si],
                                   .n_blocks = 1 + N_SEQ * 8, .max_batched_tokens = 256,
                                   .max_seqs = N_SEQ};
        struct engine e;
        rc = engine_init(&e, &m, &ep, &err);
        VLM_ASSERT(rc == 0);
        for (int sample = 0; sample < 2; sample++) {
            int32_t alone[N_SEQ][N_GEN];
            run(&e, MODE_ALONE, sample, alone);
            if (!sample) memcpy(ref[si], alone, sizeof alone);
            const char *what = sample ? "seeded sampling" : "greedy";
            char *nm = names[n_names++];
            snprintf(nm, 128, "block %d, %s: 8 together == each alone", sizes[si], what);
            TEST(nm) {
                run(&e, MODE_TOGETHER, sample, got);
                CHECK_EQ(count_diff(alone, got), 0);
            }
            nm = names[n_names++];
            snprintf(nm, 128, "block %d, %s: chunks of 7, mixed with decode == alone", sizes[si],
                     what);
            TEST(nm) {
                run(&e, MODE_CHUNKED, sample, got);
                CHECK_EQ(count_diff(alone, got), 0);
            }
            /* the run is not trivially constant: sequences differ from each other */
            if (!sample) {
                int distinct = 0;
                for (int i = 1; i < N_SEQ; i++) distinct += memcmp(alone[i], alone[0], sizeof alone[0]) != 0;
                CHECK(distinct > 0);
            }
        }
        engine_destroy(&e);
    }
#if COUNT_ALLOCS
    if (backend == ENGINE_BACKEND_CPU) TEST("no allocation on the step path after warm-up") {
        struct engine_params ep = {.block_size = 16, .n_blocks = 1 + N_SEQ * 8,
                                   .max_batched_tokens = 256, .max_seqs = N_SEQ};
        struct engine e;
        VLM_ASSERT(engine_init(&e, &m, &ep, &err) == 0);
        run(&e, MODE_CHUNKED, true, got); /* warm-up: thread pools, BLAS buffers */
        n_allocs = 0;
        counting = 1;
        run(&e, MODE_CHUNKED, true, got); /* prefill chunks, decode, top-k/top-p sampling */
        run(&e, MODE_TOGETHER, false, got);
        counting = 0;
        CHECK_EQ(n_allocs, 0);
        engine_destroy(&e);
    }
#endif
    TEST("block size 16 and 32 give the same greedy tokens") {
        CHECK_EQ(count_diff(ref[0], ref[1]), 0);
    }
    model_destroy(&m);
    return test_report();
}
