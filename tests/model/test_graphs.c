// models: gqa4
/*
 * test_graphs: decode steps replayed as backend graphs give exactly the tokens and logprobs
 * of eager steps. The CPU backend gets graphs through backend_emulate (recorded op
 * calls, copied host arrays frozen as CUDA graphs freeze them), so this runs the engine's
 * graph path, padding to sequence and block-column buckets included, without a GPU.
 *
 * Workload: 9 requests with prompts of 1 to 270 tokens arrive staggered (one per step)
 * and stop after different lengths, so decode batches take sizes 1 to 9 (buckets 1, 2, 4, 8,
 * 16), contexts cross from the 16- to the 32-column bucket (256 tokens at block size 16),
 * and prefill chunks (eager) share steps with decodes between graph steps. Greedy and seeded
 * top-k/top-p requests are mixed; logprobs (5 top) are compared. The graph engines sample
 * from device summaries (sample_summary) as the CUDA engine does, the eager one on the host.
 */
#include "engine/engine.h"
#include "engine/model.h"
#include "model_util.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>

#define N_SEQ 9
#define MAX_PROMPT 270
#define MAX_GEN 40
#define BS 16
#define PER (((MAX_PROMPT + MAX_GEN) + BS - 1) / BS + 1)
#define CHUNK 96 /* prefill tokens per sequence per step */

static const int prompt_len[N_SEQ] = {3, 240, 1, 40, 17, 270, 9, 120, 64};
static const int gen_len[N_SEQ] = {40, 30, 25, 12, 38, 8, 33, 20, 27};

struct seq_state {
    int32_t tokens[MAX_PROMPT + MAX_GEN];
    int n_prompt, n_gen, computed;
    int32_t blocks[PER];
    struct sampling_params sp;
};

struct result {
    int32_t token[N_SEQ][MAX_GEN];
    float lp[N_SEQ][MAX_GEN];
    int32_t top[N_SEQ][MAX_GEN][5];
    float top_lp[N_SEQ][MAX_GEN][5];
    int max_batch;  /* largest decode-only step seen */
    int64_t decode_steps; /* steps of one sampled token per sequence (graph candidates) */
};

static void run(struct engine *e, struct result *res)
{
    static struct seq_state st[N_SEQ];
    memset(res, 0, sizeof *res);
    for (int i = 0; i < N_SEQ; i++) {
        struct seq_state *s = &st[i];
        memset(s, 0, sizeof *s);
        s->n_prompt = prompt_len[i];
        for (int k = 0; k < s->n_prompt; k++)
            s->tokens[k] = (int32_t)(vlm_mix64((uint64_t)i * 7919 + (uint64_t)k) % 150000);
        for (int j = 0; j < PER; j++) s->blocks[j] = 1 + i * PER + (PER - 1 - j);
        s->sp = sampler_params_greedy();
        s->sp.logprobs = 5;
        if (i % 2) {
            s->sp.temperature = 0.8f;
            s->sp.top_k = 50;
            s->sp.top_p = 0.9f;
            s->sp.seed = 7 + (uint64_t)i;
        }
    }
    struct batch_seq bseq[N_SEQ];
    int who[N_SEQ]; /* the seq_state behind each bseq entry */
    for (int step = 0;; step++) {
        int n = 0, n_decode = 0;
        bool any_left = false;
        for (int i = 0; i < N_SEQ; i++) {
            struct seq_state *s = &st[i];
            if (s->n_gen == gen_len[i]) continue;
            any_left = true;
            if (step < i) continue; /* not arrived yet */
            int len = s->n_prompt + s->n_gen, todo = len - s->computed;
            if (todo > CHUNK) todo = CHUNK;
            bool last = s->computed + todo == len;
            n_decode += todo == 1 && last;
            who[n] = i;
            bseq[n++] = (struct batch_seq){
                .pos = s->computed, .n_tokens = todo,
                .tokens = s->tokens + s->computed, .blocks = s->blocks, .n_blocks = PER,
                .sp = last ? &s->sp : NULL, .prompt = s->tokens, .n_prompt = s->n_prompt,
                .output = s->tokens + s->n_prompt, .n_out = s->n_gen};
        }
        if (!any_left) break;
        if (n == 0) continue;
        if (n_decode == n) {
            res->decode_steps++;
            if (n > res->max_batch) res->max_batch = n;
        }
        struct batch b = {.seqs = bseq, .n_seqs = n};
        struct batch_out o;
        VLM_ASSERT(engine_execute(e, &b, &o) == 0);
        int r = 0;
        for (int k = 0; k < n; k++) {
            int i = who[k];
            struct seq_state *s = &st[i];
            s->computed += bseq[k].n_tokens;
            if (!bseq[k].sp) continue;
            int g = s->n_gen++;
            s->tokens[s->n_prompt + g] = o.token[r];
            res->token[i][g] = o.token[r];
            res->lp[i][g] = o.logprob[r];
            for (int j = 0; j < 5; j++) {
                res->top[i][g][j] = o.top_ids[r * VLM_MAX_TOP_LOGPROBS + j];
                res->top_lp[i][g][j] = o.top_lp[r * VLM_MAX_TOP_LOGPROBS + j];
            }
            r++;
        }
        VLM_ASSERT(r == o.n);
    }
}

/* Largest |a - b| over the chosen tokens' and the top-5 logprobs. */
static double max_lp_diff(const struct result *a, const struct result *b)
{
    double d = 0.0;
    for (int i = 0; i < N_SEQ; i++)
        for (int g = 0; g < gen_len[i]; g++) {
            d = fmax(d, fabs((double)a->lp[i][g] - b->lp[i][g]));
            for (int j = 0; j < 5; j++)
                d = fmax(d, fabs((double)a->top_lp[i][g][j] - b->top_lp[i][g][j]));
        }
    return d;
}

static int engine_with(struct engine *e, const struct model *m, bool emulate, bool eager)
{
    struct engine_params ep = {.block_size = BS, .n_blocks = 1 + N_SEQ * PER,
                               .max_batched_tokens = N_SEQ * CHUNK, .max_seqs = 16,
                               .emulate.graphs = emulate, .enforce_eager = eager,
                               /* as on CUDA: the logits rows never leave the backend */
                               .sample_on_device = emulate ? 1 : -1};
    struct vlm_err err = {0};
    int rc = engine_init(e, m, &ep, &err);
    if (rc) fprintf(stderr, "  engine_init: %s\n", err.msg);
    return rc;
}

int main(void)
{
    struct model m = {0};
    int rc = test_load_model(&m, "gqa4");
    if (rc) return test_report();
    static struct result eager, graph, again, forced;
    struct engine e;

    VLM_ASSERT(engine_with(&e, &m, false, false) == 0);
    TEST("the CPU backend has no graphs: every step eager") {
        run(&e, &eager);
        CHECK_EQ(e.n_graph_steps, 0);
        CHECK(eager.max_batch >= 8); /* the workload reaches the 8 and 16 buckets */
    }
    engine_destroy(&e);

    VLM_ASSERT(engine_with(&e, &m, true, false) == 0);
    TEST("emulated graphs: decode steps go through the graph path") {
        run(&e, &graph);
        CHECK(graph.decode_steps > 30);
        CHECK_EQ(e.n_graph_steps, graph.decode_steps);
    }
    TEST("graph steps give the eager tokens and top-5 ids, logprobs within 1e-5") {
        CHECK_EQ(memcmp(graph.token, eager.token, sizeof eager.token), 0);
        CHECK_EQ(memcmp(graph.top, eager.top, sizeof eager.top), 0);
        double d = max_lp_diff(&graph, &eager);
        printf("  max |logprob difference| graph vs eager: %.3g\n", d);
        CHECK(d <= 1e-5);
    }
    TEST("a second run replays the graphs recorded by the first, same results") {
        int64_t before = e.n_graph_steps;
        run(&e, &again);
        CHECK_EQ(e.n_graph_steps - before, again.decode_steps);
        CHECK_EQ(memcmp(again.token, graph.token, sizeof graph.token), 0);
        CHECK_EQ(memcmp(again.top, graph.top, sizeof graph.top), 0);
        CHECK_EQ(memcmp(again.top_lp, graph.top_lp, sizeof graph.top_lp), 0); /* same rows */
    }
    engine_destroy(&e);

    VLM_ASSERT(engine_with(&e, &m, true, true) == 0);
    TEST("enforce_eager: graphs available but never used") {
        run(&e, &forced);
        CHECK_EQ(e.n_graph_steps, 0);
        CHECK_EQ(memcmp(forced.token, eager.token, sizeof eager.token), 0);
    }
    engine_destroy(&e);

    TEST("the runs are not trivial: requests differ") {
        int distinct = 0;
        for (int i = 1; i < N_SEQ; i++)
            distinct += memcmp(eager.token[i], eager.token[0], sizeof eager.token[0]) != 0;
        CHECK(distinct > 0);
    }
    model_destroy(&m);
    return test_report();
}
