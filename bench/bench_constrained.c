/*
 * bench_constrained: what structured outputs add to a decode step of the engine (CPU, or CUDA
 * with --backend cuda: the masks go to the device as a bitmask), at
 * batch 1 and batch B with every sequence constrained by one typical JSON Schema, next to
 * the same steps unconstrained. Prints figures, asserts nothing.
 *
 *   bench_constrained --model DIR [--tokenizer tokenizer.json] [--decode STEPS] [--batch B]
 *                     [--threads T] [--backend cpu|cuda] [--mask-threads N]
 *   (tokenizer default: $VLM_FIXTURES/qwen3-tokenizer/tokenizer.json)
 *
 * Two ways to run the masks, each timed warm and cold:
 *   - serial: each sequence's mask (gm_fill_mask) on the engine thread, then engine_execute
 *     with the masks, then each sampled token fed to its matcher (gm_accept_token); what the
 *     scheduler did before the mask helper;
 *   - overlapped: what the scheduler does (scheduler/constrain.c): each sequence's next mask
 *     is posted to the helper thread as soon as its matcher has advanced, engine_execute
 *     joins them after the forward pass (struct batch's masks_ready), and a sequence whose
 *     mask is a cold walk still under way sits the step out (unless all would).
 * B sequences of 16 prompt tokens, then STEPS greedy steps; a sequence whose JSON is
 * complete starts a new one (a fresh matcher) so that every step stays constrained. "Cold"
 * is a freshly compiled grammar, so each state's first use builds its mask cache by walking
 * the vocabulary trie (the cost a new schema pays once); "warm" the same grammar again (a
 * repeated schema, cached by its canonical text). Figures are the best of RUNS runs with the
 * median beside it; mask (serial) or join (overlapped: the time the step waited for masks
 * after its forward pass) and advance times are those of the best run. Cold runs also
 * report their slowest single step and, overlapped, how many sequences sampled per step
 * (the held ones did not), with the time per sampled token against unconstrained. Last,
 * what applying a mask adds per row (in place, as the engine does; a fresh copy of the row
 * is timed apart) next to the sampler's own cost, which every row pays on the CPU backend.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/grammar.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "scheduler/constrain.h"
#include "server/structured.h"
#include "server/tokenizer.h"

#define RUNS 3
#define P 16

/* a typical response_format: a record with bounded and free strings, a format, an enum, an
 * integer range and an array */
static const char *SCHEMA =
    "{\"type\":\"object\",\"properties\":{"
    "\"name\":{\"type\":\"string\",\"maxLength\":40},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},"
    "\"email\":{\"type\":\"string\",\"format\":\"email\"},"
    "\"role\":{\"enum\":[\"admin\",\"user\",\"guest\"]},"
    "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":16},\"maxItems\":4},"
    "\"bio\":{\"type\":\"string\"}},"
    "\"required\":[\"name\",\"age\",\"role\"]}";

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_s(void) { return (double)vlm_now_ns() * 1e-9; }

struct cons {
    struct grammar *g;
    const struct gram_vocab *v;
    struct mask_helper *h;            /* NULL: masks serially on the engine thread */
    double t_mask, t_adv, worst_step; /* seconds over steps >= 1 */
    int64_t n_allowed;                /* summed over sequences and steps >= 1 (serial) */
    int64_t n_tokens;                 /* tokens sampled over steps >= 1 */
};

/* The masks_ready of the overlapped steps: joins every sequence of the step. */
struct join {
    struct cons *c;
    struct cmask *cm;
    struct batch_seq *seqs;
    const int32_t *who; /* batch index -> sequence */
    int32_t n;
    double t;           /* seconds spent joining */
};

static void join_masks(void *arg)
{
    struct join *j = arg;
    double t0 = now_s();
    for (int32_t i = 0; i < j->n; i++) j->seqs[i].mask = cmask_join(j->c->h, &j->cm[j->who[i]]);
    j->t += now_s() - t0;
}

/* Seconds of `steps` decode steps (after the prefill step) for B sequences; c NULL:
 * unconstrained. With c->h, as the scheduler does it (scheduler/constrain.c): each
 * sequence's next mask is posted to the helper as soon as its matcher has advanced, the
 * step joins the masks after the forward pass, and a sequence whose mask is a cold walk
 * still under way sits the step out (unless every sequence would). */
static double run_decode(struct engine *e, int32_t B, int32_t steps, int32_t per_seq_blocks,
                         struct cons *c)
{
    struct sampling_params sp = sampler_params_greedy();
    int32_t L = P + steps + 1;
    int32_t *toks = xcalloc((size_t)B * (size_t)L, sizeof(int32_t));
    int32_t *n_out = xcalloc((size_t)B, sizeof(int32_t)), *who = xcalloc((size_t)B, sizeof(int32_t));
    int32_t *blocks = xmalloc((size_t)B * (size_t)per_seq_blocks * sizeof(int32_t));
    struct batch_seq *seqs = xcalloc((size_t)B, sizeof *seqs);
    struct cmask *cm = xcalloc((size_t)B, sizeof *cm);
    for (int32_t s = 0; s < B; s++) {
        for (int32_t i = 0; i < P; i++) toks[s * L + i] = 2000 + 37 * s + i;
        for (int32_t j = 0; j < per_seq_blocks; j++)
            blocks[s * per_seq_blocks + j] = 1 + s * per_seq_blocks + j;
        if (c) {
            cm[s] = (struct cmask){.gm = gm_new(c->g), .vocab = c->v,
                                   .bits = xmalloc((size_t)gv_mask_words(c->v) * sizeof(uint32_t))};
            if (c->h) cmask_post(c->h, &cm[s]);
        }
    }
    if (c) c->t_mask = c->t_adv = c->worst_step = 0, c->n_allowed = c->n_tokens = 0;
    struct batch_out o;
    struct join j = {.c = c, .cm = cm, .seqs = seqs, .who = who};
    double t0 = 0;
    for (int32_t step = 0; step <= steps; step++) {
        double ts = now_s();
        if (step == 1) t0 = ts; /* step 0 is the prefill */
        int32_t n = 0;
        for (int pass = 0; pass < 2 && n == 0; pass++)
            for (int32_t s = 0; s < B; s++) {
                if (c && c->h && step && !pass && cmask_pending_cold(c->h, &cm[s])) continue;
                int32_t len = step == 0 ? P : 1, pos = step == 0 ? 0 : P + n_out[s] - 1;
                who[n] = s;
                seqs[n++] = (struct batch_seq){.pos = pos, .n_tokens = len,
                                               .tokens = toks + s * L + pos,
                                               .blocks = blocks + s * per_seq_blocks,
                                               .n_blocks = per_seq_blocks, .sp = &sp,
                                               .prompt = toks + s * L, .n_prompt = P,
                                               .output = toks + s * L + P, .n_out = n_out[s]};
            }
        for (int32_t i = 0; c && !c->h && i < n; i++) { /* serial: the masks first */
            struct cmask *x = &cm[who[i]];
            int32_t k = cmask_fill(x);
            if (k <= 0) { /* complete: a new object */
                gm_free(x->gm);
                x->gm = gm_new(c->g);
                k = cmask_fill(x);
            }
            if (step) c->n_allowed += k;
            seqs[i].mask = x->bits;
        }
        double tm = now_s();
        struct batch b = {.seqs = seqs, .n_seqs = n};
        if (c && c->h) b.masks_ready = join_masks, b.masks_arg = &j, j.n = n, j.t = 0;
        VLM_ASSERT(engine_execute(e, &b, &o) == 0);
        double ta = now_s();
        for (int32_t i = 0; i < n; i++) {
            int32_t s = who[i];
            toks[s * L + P + n_out[s]++] = o.token[i];
            if (!c) continue;
            struct cmask *x = &cm[s];
            if (!gm_accept_token(x->gm, c->v, o.token[i]) || gm_done(x->gm)) {
                gm_free(x->gm);
                x->gm = gm_new(c->g);
            }
            if (c->h) cmask_post(c->h, x);
        }
        double te = now_s();
        if (c && step) {
            c->t_mask += c->h ? j.t : tm - ts;
            c->t_adv += te - ta;
            c->n_tokens += n;
            if (te - ts > c->worst_step) c->worst_step = te - ts;
        }
    }
    double dt = now_s() - t0;
    for (int32_t s = 0; s < B; s++) {
        if (c && c->h) cmask_cancel(c->h, &cm[s]);
        gm_free(cm[s].gm);
        free(cm[s].bits);
    }
    free(cm);
    free(toks);
    free(n_out);
    free(who);
    free(blocks);
    free(seqs);
    return dt;
}

static struct grammar *compile(double *ms)
{
    cJSON *j = cJSON_Parse(SCHEMA);
    struct st_options o = {.any_whitespace = true};
    char err[300];
    double t0 = now_s();
    struct grammar *g = st_compile_schema(j, &o, err, sizeof err);
    *ms = (now_s() - t0) * 1e3;
    cJSON_Delete(j);
    if (!g) {
        fprintf(stderr, "bench_constrained: %s\n", err);
        exit(1);
    }
    return g;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *tok_path = NULL;
    int32_t steps = 32, batch = 64, threads = 0;
    bool cuda = false;
    int mask_threads = 1;
    char defpath[4096];
    const char *fx = getenv("VLM_FIXTURES");
    snprintf(defpath, sizeof defpath, "%s/qwen3-tokenizer/tokenizer.json",
             fx ? fx : VLM_DEFAULT_FIXTURES);
    bool bad = false;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--tokenizer")) tok_path = argv[i + 1];
        else if (!strcmp(argv[i], "--decode")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mask-threads")) mask_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--backend")) cuda = !strcmp(argv[i + 1], "cuda"),
                                                  bad |= !cuda && strcmp(argv[i + 1], "cpu");
        else bad = true;
    }
    if (bad || !dir || steps < 1 || batch < 1 || mask_threads < 1) {
        fprintf(stderr, "usage: bench_constrained --model DIR [--tokenizer tokenizer.json] "
                        "[--decode STEPS] [--batch B] [--threads T] [--backend cpu|cuda] [--mask-threads N]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    vlm_log_level = VLM_LOG_WARN;
    struct model mo = {0};
    struct vlm_err err = {0};
    struct tokenizer *tok = NULL;
    if (model_load(&mo, dir, &err) || tok_load(&tok, tok_path ? tok_path : defpath, &err)) {
        fprintf(stderr, "bench_constrained: %s\n", err.msg);
        return 1;
    }
    int32_t bs = 16, per = (P + steps + 1) / bs + 2;
    struct engine_params ep = {.bp = {.n_threads = threads, .numerics = NUMERICS_FAST},
                               .block_size = bs, .n_blocks = 1 + per * batch,
                               .max_batched_tokens = VLM_MAX(512, P * batch),
                               .max_seqs = batch,
                               .backend = cuda ? ENGINE_BACKEND_CUDA : ENGINE_BACKEND_CPU};
    struct engine e;
    if (engine_init(&e, &mo, &ep, &err)) {
        fprintf(stderr, "bench_constrained: %s\n", err.msg);
        return 1;
    }
    double t_v = now_s();
    const struct gram_vocab *v = st_vocab(tok, mo.cfg.vocab_size);
    printf("model %s on %s: vocab %d (trie built in %.0f ms), %d layers, hidden %d; schema %zu "
           "bytes; %d mask thread(s)\n",
           dir, cuda ? "cuda" : "cpu", mo.cfg.vocab_size, (now_s() - t_v) * 1e3, mo.cfg.n_layers,
           mo.cfg.hidden_size, strlen(SCHEMA), mask_threads);
    int32_t bsz[] = {1, batch};
    struct mask_helper *helper = mask_helper_new(mask_threads);
    VLM_ASSERT(helper);
    for (int k = 0; k < (batch > 1 ? 2 : 1); k++) {
        int32_t B = bsz[k];
        double tu[RUNS];
        for (int r = 0; r < RUNS; r++) tu[r] = run_decode(&e, B, steps, per, NULL);
        qsort(tu, RUNS, sizeof *tu, cmp_d);
        double su = tu[0] / steps * 1e3;
        printf("batch %-3d x %3d steps  unconstrained %8.2f ms/step (median %8.2f)\n", B, steps,
               su, tu[RUNS / 2] / steps * 1e3);
        for (int mode = 0; mode < 2; mode++) {
            const char *name = mode ? "overlapped" : "serial";
            struct mask_helper *h = mode ? helper : NULL;
            /* warm: one grammar, its caches filled by a first run */
            double compile_ms, tw[RUNS];
            struct cons c = {.g = compile(&compile_ms), .v = v, .h = h};
            run_decode(&e, B, steps, per, &c);
            double best_mask = 0, best_adv = 0, best = 1e30;
            int64_t allowed = 0;
            for (int r = 0; r < RUNS; r++) {
                tw[r] = run_decode(&e, B, steps, per, &c);
                if (tw[r] < best) best = tw[r], best_mask = c.t_mask, best_adv = c.t_adv,
                                  allowed = c.n_allowed;
            }
            grammar_release(c.g);
            qsort(tw, RUNS, sizeof *tw, cmp_d);
            double sw = tw[0] / steps * 1e3;
            printf("  %-10s warm  %8.2f ms/step (median %8.2f)  %+.1f%%  [%s %.3f ms/step = %.1f "
                   "us/seq, advance %.3f ms/step", name, sw, tw[RUNS / 2] / steps * 1e3,
                   (sw / su - 1) * 100, mode ? "join" : "masks", best_mask / steps * 1e3,
                   best_mask / steps / B * 1e6, best_adv / steps * 1e3);
            if (!mode) printf("; %.0f tokens allowed on average", (double)allowed / ((double)steps * B));
            printf("]\n");
            /* cold: a fresh grammar each run */
            double cold_best = 1e30, cold_mask = 0, cold_worst = 0;
            int64_t cold_tokens = 0;
            for (int r = 0; r < RUNS; r++) {
                struct cons cc = {.g = compile(&compile_ms), .v = v, .h = h};
                double t = run_decode(&e, B, steps, per, &cc);
                if (t < cold_best) cold_best = t, cold_mask = cc.t_mask, cold_tokens = cc.n_tokens;
                if (cc.worst_step > cold_worst) cold_worst = cc.worst_step;
                grammar_release(cc.g);
            }
            double per_tok = cold_best / (double)cold_tokens, per_tok_u = tu[0] / ((double)steps * B);
            printf("  %-10s cold  %8.2f ms/step  %+.1f%%; %.1f of %d sequences sampled per step "
                   "(%+.1f%% per token)  [%s %.2f ms/step; slowest step %.1f ms; compile %.2f ms]\n",
                   name, cold_best / steps * 1e3, (cold_best / tu[0] - 1) * 100,
                   (double)cold_tokens / steps, B, (per_tok / per_tok_u - 1) * 100,
                   mode ? "join" : "masks", cold_mask / steps * 1e3, cold_worst * 1e3, compile_ms);
        }
    }
    mask_helper_free(helper);
    /* what a mask adds to sampling a row: the mask applied to a copy of the row (the CPU
     * backend samples every row with the full sampler, masked or not) */
    {
        int32_t V = mo.cfg.vocab_size, prompt[P] = {0};
        float *logits = xmalloc((size_t)V * sizeof *logits), *row = xmalloc((size_t)V * sizeof *row);
        uint32_t *mk = xmalloc((size_t)gv_mask_words(v) * sizeof *mk);
        for (int32_t t = 0; t < V; t++) logits[t] = (float)((t * 7919) % 1000) * 1e-3f;
        for (int32_t w = 0; w < gv_mask_words(v); w++) mk[w] = w % 3 ? 0xF0F0F0F0u : 0;
        struct sampling_params sp = sampler_params_greedy();
        struct sampler_result res;
        double best_copy = 1e30, best_mask = 1e30, best_sample = 1e30;
        for (int r = 0; r < 5; r++) {
            double tc = 0, tm = 0, ts = 0;
            for (int i = 0; i < 50; i++) {
                double t0 = now_s();
                memcpy(row, logits, (size_t)V * sizeof *row);
                double t1 = now_s();
                sampler_apply_mask(row, mk, V);
                double t2 = now_s();
                sampler_sample(&e.sws, row, &sp, prompt, P, NULL, 0, &res);
                tc += t1 - t0;
                tm += t2 - t1;
                ts += now_s() - t2;
            }
            best_copy = VLM_MIN(best_copy, tc / 50);
            best_mask = VLM_MIN(best_mask, tm / 50);
            best_sample = VLM_MIN(best_sample, ts / 50);
        }
        printf("per row: mask %.0f us (after a copy of the row, %.0f us, which the engine does "
               "not make); the sampler (greedy, either way) %.0f us\n",
               best_mask * 1e6, best_copy * 1e6, best_sample * 1e6);
        free(logits);
        free(row);
        free(mk);
    }
    engine_destroy(&e);
    model_destroy(&mo);
    tok_free(tok);
    return 0;
}
