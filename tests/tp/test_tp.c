// models: tp8 valley2
/*
 * test_tp: tensor parallelism on the CPU through the thread communicator (issue 8
 * acceptance). On the tp8 checkpoint (16 heads, 8 KV heads): tp = 1 (a group of one, the
 * collectives included), 2 and 4 give logits within 1e-4 x max|logit| of the plain engine
 * and the same 32 greedy tokens, for a text prompt and for an image+text prompt (two images:
 * at tp 2 and 4 they are encoded on different ranks and broadcast); a vocabulary that no
 * tp divides (the same checkpoint viewed with one row less) is padded and gives the same
 * answer; 16 concurrent greedy requests through the real scheduler loop at tp = 2 give
 * exactly the tokens each gives alone on one engine; an encode that fails on one rank fails
 * the step on every rank without a hang; invalid sizes are refused with a clear message.
 * Valley2's Qwen2.5 decoder (valley2 checkpoint: q/k/v biases sliced with their heads) at
 * tp = 2 gives the plain engine's logits and tokens too.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "alloc_count.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/tp.h"
#include "scheduler/loop.h"
#include "scheduler/sched.h"
#include "sched_workload.h"
#include "test.h"

#ifdef VLM_HAVE_NCCL
#include <cuda_runtime.h>
#endif

enum { N_GREEDY = 32, BLOCK = 16, MAX_LEN = 96, N_BLOCKS = 64 };

static struct model m;
static int backend = ENGINE_BACKEND_CPU; /* --cuda: the GPU check (docs/TP.md) */

/* Image img of the prompts below: IMG_GRID x IMG_GRID patches, pixels px borrowed. */
static struct mm_item make_item(int img, const float *px)
{
    return test_image_item(&m.cfg, 0xabc000ull + (uint64_t)img, IMG_GRID, px);
}

static int32_t argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* ==== Greedy generation with logits, one sequence ==== */

struct prompt {
    int32_t tokens[MAX_LEN];
    int32_t len;
    struct mm_span spans[2];
    int32_t n_spans;
    const struct mm_item *encode[2];
    int32_t rows[2]; /* encoder-cache rows of the spans' items, packed from row 0 */
};

static void text_prompt(struct prompt *p, int32_t vocab)
{
    memset(p, 0, sizeof *p);
    p->len = 23;
    for (int32_t i = 0; i < p->len; i++) p->tokens[i] = (int32_t)(vlm_mix64(700 + (uint64_t)i) % (uint64_t)vocab);
}

/* 6 text tokens, image a (16 rows), 5 text, image b (16 rows), 9 text; ids below the
 * checkpoint's vocabulary (the GPU script's checkpoints have a small synthesized one), image
 * rows 0 (the engine overwrites them) */
static void image_prompt(struct prompt *p, const struct mm_item *a, const struct mm_item *b)
{
    memset(p, 0, sizeof *p);
    const struct mm_item *items[2] = {a, b};
    int32_t text[3] = {6, 5, 9};
    for (int k = 0; k < 3; k++) {
        for (int32_t i = 0; i < text[k]; i++, p->len++)
            p->tokens[p->len] = (int32_t)(vlm_mix64(900 + (uint64_t)p->len) % (uint64_t)m.cfg.vocab_size);
        if (k == 2) break;
        p->spans[p->n_spans] = (struct mm_span){.offset = p->len, .item = items[k]};
        p->rows[p->n_spans] = k ? p->rows[k - 1] + items[k - 1]->n_tokens : 0;
        p->encode[p->n_spans++] = items[k];
        for (int32_t i = 0; i < items[k]->n_tokens; i++) p->tokens[p->len++] = 0;
    }
}

/* Prefill p in one step, then N_GREEDY - 1 decode steps, feeding back the argmax.
 * logits (N_GREEDY, vocab), tokens (N_GREEDY). Returns 0 or the engine's code. */
static int generate(const struct executor *x, const struct prompt *p, float *logits,
                    int32_t *toks)
{
    int32_t V = x->vocab_size, blocks[N_BLOCKS];
    for (int32_t i = 0; i < N_BLOCKS; i++) blocks[i] = 1 + i;
    struct batch_seq s = {.pos = 0, .n_tokens = p->len, .tokens = p->tokens, .blocks = blocks,
                          .n_blocks = (MAX_LEN + N_GREEDY) / BLOCK + 1, .mm = p->spans,
                          .mm_row = p->rows, .n_mm = p->n_spans};
    struct batch b = {.seqs = &s, .n_seqs = 1, .encode = p->encode, .encode_row = p->rows,
                      .n_encode = p->n_spans};
    for (int32_t k = 0; k < N_GREEDY; k++) {
        int32_t row = s.n_tokens - 1;
        int rc = x->forward_rows(x->impl, &b, &row, 1, logits + (size_t)k * V);
        if (rc) return rc;
        toks[k] = argmax(logits + (size_t)k * V, V);
        s.pos += s.n_tokens;
        s.n_tokens = 1;
        s.tokens = &toks[k];
        b.encode = NULL;
        b.n_encode = 0;
    }
    return 0;
}

static struct engine_params params(int tp)
{
    return (struct engine_params){.bp = {.n_threads = 2}, .backend = backend,
                                  .block_size = BLOCK, .n_blocks = N_BLOCKS,
                                  .max_batched_tokens = 128, .max_seqs = 16, .tp_size = tp,
                                  .encoder_cache_tokens = 64,
                                  /* TP engines run eagerly; so does their reference */
                                  .enforce_eager = true};
}

/* worst max|a - ref| / max|ref| over the rows */
static double worst_rel(const float *a, const float *ref, int32_t rows, int32_t V)
{
    double worst = 0;
    for (int32_t k = 0; k < rows; k++) {
        double d = 0, mabs = 0;
        for (int32_t i = 0; i < V; i++) {
            const float *x = a + (size_t)k * V, *r = ref + (size_t)k * V;
            double di = fabs((double)x[i] - (double)r[i]);
            if (!(di <= d)) d = isnan(di) ? INFINITY : di;
            mabs = fmax(mabs, fabs((double)r[i]));
        }
        worst = fmax(worst, d / mabs);
    }
    return worst;
}

/* Runs both prompts (the image one only if imgs) on tp ranks (0: the plain engine) of
 * model mm. logits[2] (N_GREEDY, V), toks[2] (N_GREEDY). */
static bool run_tp(const struct model *mm, int tp, const struct prompt *pr, int n_prompts,
                   float **logits, int32_t toks[][N_GREEDY])
{
    struct engine plain;
    struct tp_group *g = NULL;
    struct engine_params ep = params(tp);
    struct vlm_err err = {0};
    int rc = tp ? tp_group_create(&g, mm, &ep, &err) : engine_init(&plain, mm, &ep, &err);
    if (rc) {
        fprintf(stderr, "  tp %d: %s\n", tp, err.msg);
        return false;
    }
    struct executor x = g ? tp_group_executor(g) : engine_executor(&plain);
    bool ok = true;
    for (int i = 0; i < n_prompts && ok; i++) ok = generate(&x, &pr[i], logits[i], toks[i]) == 0;
    if (g) tp_group_destroy(g);
    else engine_destroy(&plain);
    return ok;
}

/* ==== The scheduler loop over a TP engine (the workload of tests/sched_workload.h) ==== */

/* Each request alone, one after the other, on one plain engine (the manual step loop). */
static bool run_alone(const struct sched_config *c, int32_t out[N_REQ][N_GEN])
{
    struct engine e;
    if (engine_start(&e, &m, c)) return false;
    struct vlm_err err = {0};
    struct sched *s = sched_new(c, NULL);
    bool ok = true;
    for (int k = 0; k < N_REQ && ok; k++) {
        struct request *r = make_req(&m.cfg, k);
        VLM_ASSERT(sched_validate(c, r, &err) == 0);
        req_retain(r);
        sched_add(s, r);
        while (ok && sched_n_live(s) > 0) {
            struct batch b;
            struct batch_out o;
            VLM_ASSERT(sched_schedule(s, &b) > 0);
            ok = engine_execute(&e, &b, &o) == 0;
            if (ok) sched_update(s, &b, &o);
            else sched_fail(s, &b);
        }
        int state;
        ok &= read_tokens(r, out[k], &state) == N_GEN && state == REQ_FINISHED_LENGTH;
        req_release(r);
    }
    sched_free(s);
    engine_destroy(&e);
    return ok;
}

/* All 16 submitted at once to the scheduler's engine thread, driving a tp-rank group. */
static bool run_loop_tp(const struct sched_config *c, int tp, int32_t out[N_REQ][N_GEN],
                        struct sched_stats *st)
{
    struct tp_group *g;
    struct engine_params ep = workload_params(c, tp);
    struct vlm_err err = {0};
    if (tp_group_create(&g, &m, &ep, &err)) {
        fprintf(stderr, "  tp_group_create: %s\n", err.msg);
        return false;
    }
    struct executor x = tp_group_executor(g);
    VLM_ASSERT(x.kv_blocks == c->n_blocks);
    struct request *r[N_REQ];
    run_on_loop(&m.cfg, c, x, r, st);
    bool ok = true;
    for (int i = 0; i < N_REQ; i++) {
        int state;
        ok &= read_tokens(r[i], out[i], &state) == N_GEN && state == REQ_FINISHED_LENGTH;
        req_release(r[i]);
    }
    tp_group_destroy(g);
    return ok;
}

/* ==== Main ==== */

/* test_tp --cuda: tp=1 through the NCCL communicator == the plain CUDA engine (bit for bit:
 * a one-rank all-reduce is a copy); tp=2 and 4 where there are that many GPUs are printed
 * (bf16 partial sums round differently, so only the tokens are compared). Exits 77 without
 * NCCL or a GPU. */
static int main_cuda(void)
{
#ifndef VLM_HAVE_NCCL
    TEST_SKIP("built without CUDA and NCCL");
#else
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) TEST_SKIP("no CUDA device");
    backend = ENGINE_BACKEND_CUDA;
    const int32_t V = m.cfg.vocab_size;
    float *px_a = test_pixels(&m.cfg, 1, IMG_GRID * IMG_GRID);
    float *px_b = test_pixels(&m.cfg, 2, IMG_GRID * IMG_GRID);
    struct mm_item item_a = make_item(1, px_a), item_b = make_item(2, px_b);
    struct prompt pr[2];
    text_prompt(&pr[0], V);
    image_prompt(&pr[1], &item_a, &item_b);
    float *ref[2], *got[2];
    int32_t ref_tok[2][N_GREEDY], tok[2][N_GREEDY];
    for (int i = 0; i < 2; i++) {
        ref[i] = xmalloc((size_t)N_GREEDY * V * sizeof(float));
        got[i] = xmalloc((size_t)N_GREEDY * V * sizeof(float));
    }
    TEST("plain CUDA engine") { CHECK(run_tp(&m, 0, pr, 2, ref, ref_tok)); }
    for (int tp = 1; tp <= 4 && tp <= n_dev; tp *= 2) {
        char name[64]; /* the harness copies the name */
        snprintf(name, sizeof name, "tp=%d over NCCL vs the plain CUDA engine", tp);
        TEST(name)
        {
            CHECK(run_tp(&m, tp, pr, 2, got, tok));
            for (int i = 0; i < 2; i++) {
                double rel = worst_rel(got[i], ref[i], N_GREEDY, V);
                int same = 0;
                for (int k = 0; k < N_GREEDY; k++) same += tok[i][k] == ref_tok[i][k];
                printf("  %s: worst %.3g, %d/%d tokens equal\n", i ? "image+text" : "text", rel,
                       same, N_GREEDY);
                if (tp == 1) {
                    CHECK(rel <= 1e-4);
                    CHECK_EQ(same, N_GREEDY);
                }
            }
        }
    }
    for (int i = 0; i < 2; i++) {
        free(ref[i]);
        free(got[i]);
    }
    free(px_a);
    free(px_b);
    model_destroy(&m);
    return test_report();
#endif
}

int main(int argc, char **argv)
{
    struct vlm_err err = {0};
    int rc = test_load_model(&m, "tp8");
    if (rc) return test_report();
    vlm_log_level = VLM_LOG_WARN;
    if (argc > 1 && !strcmp(argv[1], "--cuda")) return main_cuda();
    const int32_t V = m.cfg.vocab_size;
    CHECK_EQ(m.cfg.n_kv_heads, 8);

    TEST("invalid sizes are refused with a clear message")
    {
        struct vlm_err e3 = {0}, e16 = {0}, ecuda = {0}, e0 = {0}, eg = {0}, enc = {0};
        CHECK_EQ(tp_check(&m.cfg, 3, ENGINE_BACKEND_CPU, -1, &e3), VLM_EINVAL);
        printf("  tp=3: %s\n", e3.msg);
        CHECK(strstr(e3.msg, "--tensor-parallel-size 3") && strstr(e3.msg, "num_key_value_heads (8)"));
        CHECK(strstr(e3.msg, "valid sizes for this model: 1 2 4 8") != NULL);
        CHECK_EQ(tp_check(&m.cfg, 16, ENGINE_BACKEND_CPU, -1, &e16), VLM_EINVAL);
        CHECK_EQ(tp_check(&m.cfg, 0, ENGINE_BACKEND_CPU, -1, &e0), VLM_EINVAL);
        CHECK_EQ(tp_check(&m.cfg, 8, ENGINE_BACKEND_CPU, -1, &err), 0);
        /* more ranks than GPUs (the count given here; -1 asks cudaGetDeviceCount) */
        CHECK_EQ(tp_check(&m.cfg, 4, ENGINE_BACKEND_CUDA, 2, &ecuda), VLM_EINVAL);
        printf("  tp=4 on 2 GPUs: %s\n", ecuda.msg);
        CHECK(strstr(ecuda.msg, "needs 4 CUDA devices, 2 visible") != NULL);
        /* tp_group_create refuses before allocating anything */
        struct engine_params ep = params(3);
        struct tp_group *g = NULL;
        CHECK_EQ(tp_group_create(&g, &m, &ep, &eg), VLM_EINVAL);
        CHECK(g == NULL);
        CHECK(strstr(eg.msg, "must divide") != NULL);
        /* an engine asked for tp without a communicator */
        struct engine e;
        ep = params(2);
        CHECK_EQ(engine_init(&e, &m, &ep, &enc), VLM_EINVAL);
        CHECK(strstr(enc.msg, "communicator") != NULL);
    }

    /* prompts and the tp=1 reference */
    float *px_a = test_pixels(&m.cfg, 1, IMG_GRID * IMG_GRID);
    float *px_b = test_pixels(&m.cfg, 2, IMG_GRID * IMG_GRID);
    struct mm_item item_a = make_item(1, px_a), item_b = make_item(2, px_b);
    struct prompt pr[2];
    text_prompt(&pr[0], V);
    image_prompt(&pr[1], &item_a, &item_b);
    float *ref[2], *got[2];
    for (int i = 0; i < 2; i++) {
        ref[i] = xmalloc((size_t)N_GREEDY * V * sizeof(float));
        got[i] = xmalloc((size_t)N_GREEDY * V * sizeof(float));
    }
    int32_t ref_tok[2][N_GREEDY], tok[2][N_GREEDY];
    TEST("tp=1 reference (plain engine), text and image+text")
    {
        CHECK(run_tp(&m, 0, pr, 2, ref, ref_tok));
        int distinct = 0;
        for (int k = 1; k < N_GREEDY; k++) distinct += ref_tok[0][k] != ref_tok[0][0];
        CHECK(distinct > 0);
        printf("  text: %d %d %d ..., image: %d %d %d ...; logits hash %016llx\n", ref_tok[0][0],
               ref_tok[0][1], ref_tok[0][2], ref_tok[1][0], ref_tok[1][1], ref_tok[1][2],
               (unsigned long long)vlm_hash64(ref[1], (size_t)N_GREEDY * V * sizeof(float), 0));
    }
    int sizes[] = {1, 2, 4};
    for (size_t t = 0; t < ARRAY_LEN(sizes); t++) {
        char name[96]; /* the harness copies the name */
        snprintf(name, sizeof name,
                 "tp=%d == tp=1: logits within 1e-4 x max|logit|, 32 greedy tokens", sizes[t]);
        TEST(name)
        {
            CHECK(run_tp(&m, sizes[t], pr, 2, got, tok));
            for (int i = 0; i < 2; i++) {
                double rel = worst_rel(got[i], ref[i], N_GREEDY, V);
                printf("  %s: worst max|d|/max|ref| %.3g, logits hash %016llx\n",
                       i ? "image+text" : "text", rel,
                       (unsigned long long)vlm_hash64(got[i], (size_t)N_GREEDY * V * sizeof(float), 0));
                CHECK(rel <= 1e-4);
                CHECK(memcmp(tok[i], ref_tok[i], sizeof tok[i]) == 0);
            }
        }
    }

    TEST("a vocabulary no tp divides (151935 rows) is padded: tp=2, 4 == tp=1")
    {
        struct model mv = m; /* the same weights viewed with one vocabulary row less */
        mv.cfg.vocab_size = V - 1;
        mv.w.embed.ne[1] = V - 1;
        mv.w.lm_head.ne[1] = V - 1;
        struct prompt pt;
        text_prompt(&pt, V - 1);
        float *r1[1] = {ref[0]}, *g1[1] = {got[0]};
        int32_t rt[1][N_GREEDY], gt[1][N_GREEDY];
        CHECK(run_tp(&mv, 0, &pt, 1, r1, rt));
        for (int tp = 2; tp <= 4; tp += 2) {
            CHECK(run_tp(&mv, tp, &pt, 1, g1, gt));
            double rel = worst_rel(got[0], ref[0], N_GREEDY, V - 1);
            printf("  tp=%d: worst %.3g\n", tp, rel);
            CHECK(rel <= 1e-4);
            CHECK(memcmp(gt[0], rt[0], sizeof gt[0]) == 0);
        }
    }

    TEST("Valley2 (Qwen2.5: q/k/v biases split with their heads): tp=2 == tp=1")
    {
        struct model m2;
        struct vlm_err e2 = {0};
        CHECK_EQ(model_load(&m2, test_path("VLM_MODELS", "valley2"), &e2), 0);
        int32_t V2 = m2.cfg.vocab_size;
        struct prompt pt;
        text_prompt(&pt, V2);
        float *r2 = xmalloc((size_t)N_GREEDY * V2 * sizeof(float));
        float *g2 = xmalloc((size_t)N_GREEDY * V2 * sizeof(float));
        float *r1[1] = {r2}, *g1[1] = {g2};
        int32_t rt[1][N_GREEDY], gt[1][N_GREEDY];
        CHECK(m2.cfg.qkv_bias && m2.cfg.n_kv_heads == 2);
        CHECK(run_tp(&m2, 0, &pt, 1, r1, rt));
        CHECK(run_tp(&m2, 2, &pt, 1, g1, gt));
        double rel = worst_rel(g2, r2, N_GREEDY, V2);
        printf("  valley2 tp=2: worst max|d|/max|ref| %.3g\n", rel);
        CHECK(rel <= 1e-4);
        CHECK(memcmp(gt[0], rt[0], sizeof gt[0]) == 0);
        free(r2);
        free(g2);
        model_destroy(&m2);
    }

    TEST("an encode failing on rank 1 fails the step on every rank; the group still works")
    {
        struct tp_group *g;
        struct engine_params ep = params(2);
        CHECK_EQ(tp_group_create(&g, &m, &ep, &err), 0);
        struct executor x = tp_group_executor(g);
        struct mm_item bad = item_b;
        bad.n_tokens = 15; /* inconsistent with its grid: vit_encode refuses it */
        struct prompt p = pr[1];
        p.encode[1] = &bad;
        p.spans[1].item = &bad;
        CHECK(generate(&x, &p, got[1], tok[1]) != 0); /* item 1 is rank 1's */
        CHECK_EQ(generate(&x, &pr[1], got[1], tok[1]), 0);
        CHECK(memcmp(tok[1], ref_tok[1], sizeof tok[1]) == 0);
        tp_group_destroy(g);
    }

#if COUNT_ALLOCS
    TEST("tp=2: no allocation on the step path after warm-up, on any rank")
    {
        struct tp_group *g;
        struct engine_params ep = params(2);
        CHECK_EQ(tp_group_create(&g, &m, &ep, &err), 0);
        struct executor x = tp_group_executor(g);
        CHECK_EQ(generate(&x, &pr[0], got[0], tok[0]), 0); /* warm-up: thread pools, buffers */
        CHECK_EQ(generate(&x, &pr[1], got[1], tok[1]), 0);
        struct mm_item a2 = item_a, b2 = item_b; /* new hashes: encoded again, broadcast */
        a2.hash += 100;
        b2.hash += 100;
        struct prompt p2;
        image_prompt(&p2, &a2, &b2);
        n_allocs = 0;
        counting = 1;
        CHECK_EQ(generate(&x, &pr[0], got[0], tok[0]), 0);
        CHECK_EQ(generate(&x, &p2, got[1], tok[1]), 0);
        counting = 0;
        CHECK_EQ(n_allocs, 0);
        CHECK(memcmp(tok[1], ref_tok[1], sizeof tok[1]) == 0);
        tp_group_destroy(g);
    }
#endif

    TEST("tp=2: 16 concurrent greedy requests through the scheduler loop == each alone")
    {
        static int32_t alone[N_REQ][N_GEN], together[N_REQ][N_GEN];
        struct sched_config big = workload_config(true, 1 + N_REQ * 6),
                           tiny = workload_config(true, 1 + 10);
        struct sched_stats st;
        CHECK(run_alone(&big, alone));
        int distinct = 0;
        for (int i = 1; i < N_REQ; i++) distinct += memcmp(alone[i], alone[0], sizeof alone[0]) != 0;
        CHECK(distinct > 0);
        CHECK(run_loop_tp(&big, 2, together, &st));
        CHECK_EQ(n_diff(alone, together), 0);
        CHECK(st.prefix_hit_tokens > 0);
        printf("  big cache: %lld steps, prefix hits %lld tokens, encoder misses %lld\n",
               (long long)st.steps, (long long)st.prefix_hit_tokens, (long long)st.encoder_misses);
        memset(together, 0, sizeof together);
        CHECK(run_loop_tp(&tiny, 2, together, &st));
        CHECK_EQ(n_diff(alone, together), 0);
        printf("  10-block cache: %lld steps, %lld preemptions\n", (long long)st.steps,
               (long long)st.preempted_total);
    }

    for (int i = 0; i < 2; i++) {
        free(ref[i]);
        free(got[i]);
    }
    free(px_a);
    free(px_b);
    model_destroy(&m);
    return test_report();
}
