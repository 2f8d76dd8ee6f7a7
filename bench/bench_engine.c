/*
 * bench_engine: prefill and decode throughput of the CPU engine on one checkpoint, and the
 * GFLOP/s of its largest products through the backend next to OpenBLAS's own sgemm on the
 * same shape (the backend's matmul is sgemm plus the op boundary; the gap is that boundary).
 * Prints figures, asserts nothing.
 *
 *   bench_engine --model DIR [--prefill N] [--decode STEPS] [--batch B] [--threads T]
 *
 * Prefill: one sequence of N tokens (ids 1000 + i), in chunks of 512 tokens, logits only
 * for the last row (as in serving). Decode: B sequences of 16 prompt tokens, then STEPS
 * greedy steps with all B sequences in every step; tok/s counts B tokens per step.
 * Each figure is the best of 3 runs (the machine is shared).
 */
#include "engine/engine.h"
#include "engine/model.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHUNK 512

static double now_s(void)
{
    return (double)vlm_now_ns() * 1e-9;
}

/* CPU seconds of the whole process (all threads): on a shared machine the wall clock
 * includes time other processes held the cores; CPU time does not (but counts spinning). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t count_params(const struct model *m)
{
    const struct model_config *c = &m->cfg;
    int64_t H = c->hidden_size, hd = c->head_dim, F = c->intermediate_size;
    int64_t per = 2 * H + 2 * hd + H * c->n_heads * hd * 2 + H * c->n_kv_heads * hd * 2 + 3 * H * F;
    int64_t emb = (int64_t)c->vocab_size * H;
    return per * c->n_layers + H + emb * (c->tie_word_embeddings ? 1 : 2);
}

/* One prefill of n tokens; returns seconds. */
static double run_prefill(struct engine *e, int32_t n, const int32_t *ids, int32_t *blocks,
                          int32_t n_blocks)
{
    struct sampling_params sp = sampler_params_greedy();
    struct batch_out o;
    double t0 = now_s();
    for (int32_t p0 = 0; p0 < n; p0 += CHUNK) {
        int32_t c = VLM_MIN(CHUNK, n - p0);
        struct batch_seq s = {.pos = p0, .n_tokens = c, .tokens = ids + p0, .blocks = blocks,
                              .n_blocks = n_blocks, .sp = p0 + c == n ? &sp : NULL,
                              .prompt = ids, .n_prompt = n};
        struct batch b = {.seqs = &s, .n_seqs = 1};
        VLM_ASSERT(engine_execute(e, &b, &o) == 0);
    }
    return now_s() - t0;
}

/* B sequences, 16-token prompts prefilled together, then steps greedy decode steps; returns
 * the decode seconds. */
static double run_decode(struct engine *e, int32_t B, int32_t steps, int32_t per_seq_blocks)
{
    enum { P = 16 };
    struct sampling_params sp = sampler_params_greedy();
    int32_t *toks = xcalloc((size_t)B * (size_t)(P + steps + 1), sizeof(int32_t));
    int32_t *blocks = xmalloc((size_t)B * (size_t)per_seq_blocks * sizeof(int32_t));
    struct batch_seq *seqs = xcalloc((size_t)B, sizeof *seqs);
    int32_t L = P + steps + 1;
    for (int32_t s = 0; s < B; s++) {
        for (int32_t i = 0; i < P; i++) toks[s * L + i] = 2000 + 37 * s + i;
        for (int32_t j = 0; j < per_seq_blocks; j++) blocks[s * per_seq_blocks + j] = 1 + s * per_seq_blocks + j;
    }
    struct batch_out o;
    double t0 = 0;
    for (int32_t step = 0; step <= steps; step++) {
        if (step == 1) t0 = now_s(); /* step 0 is the prefill */
        for (int32_t s = 0; s < B; s++) {
            int32_t n = step == 0 ? P : 1, pos = step == 0 ? 0 : P + step - 1;
            seqs[s] = (struct batch_seq){.slot = (uint32_t)s, .pos = pos, .n_tokens = n,
                                         .tokens = toks + s * L + pos,
                                         .blocks = blocks + s * per_seq_blocks,
                                         .n_blocks = per_seq_blocks, .sp = &sp,
                                         .prompt = toks + s * L, .n_prompt = P,
                                         .output = toks + s * L + P, .n_out = step};
        }
        struct batch b = {.seqs = seqs, .n_seqs = B};
        VLM_ASSERT(engine_execute(e, &b, &o) == 0);
        for (int32_t s = 0; s < B; s++) toks[s * L + P + step] = o.token[s];
    }
    double dt = now_s() - t0;
    free(toks);
    free(blocks);
    free(seqs);
    return dt;
}

/* GFLOP/s of y(M,N) = x(M,K)·w(N,K)ᵀ through the backend and straight through sgemm. */
static void bench_matmul(struct engine *e, const char *what, const struct tensor *w, int32_t M)
{
    int64_t N = w->ne[1], K = w->ne[0];
    float *x = xmalloc((size_t)(M * K) * sizeof(float)), *y = xmalloc((size_t)(M * N) * sizeof(float));
    for (int64_t i = 0; i < M * K; i++) x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    struct tensor tx = tensor_make(x, DT_F32, K, M, 1, 1), ty = tensor_make(y, DT_F32, N, M, 1, 1);
    double flop = 2.0 * (double)M * (double)N * (double)K, best_be = 1e30, best_blas = 1e30;
    int reps = (int)VLM_MAX(1, VLM_MIN(50, 2e9 / flop));
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++) e->be.ops->matmul(e->be.ctx, &ty, &tx, w, NULL);
        double t1 = now_s();
        for (int i = 0; i < reps; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, (int)N, (int)K, 1.0f, x, (int)K,
                        (const float *)w->data, (int)K, 0.0f, y, (int)N);
        double t2 = now_s();
        best_be = VLM_MIN(best_be, (t1 - t0) / reps);
        best_blas = VLM_MIN(best_blas, (t2 - t1) / reps);
    }
    printf("matmul %-8s M=%-4d N=%-6lld K=%-5lld  backend %7.2f GFLOP/s   sgemm %7.2f GFLOP/s\n",
           what, M, (long long)N, (long long)K, flop / best_be * 1e-9, flop / best_blas * 1e-9);
    free(x);
    free(y);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int32_t n_prefill = 512, steps = 32, batch = 8, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--prefill")) n_prefill = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    }
    if (!dir || n_prefill < 1 || steps < 1 || batch < 1) {
        fprintf(stderr, "usage: bench_engine --model DIR [--prefill N] [--decode STEPS] "
                        "[--batch B] [--threads T]\n");
        return 2;
    }
    vlm_log_level = VLM_LOG_WARN;
    struct model m = {0};
    struct vlm_err err = {0};
    if (model_load(&m, dir, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    int32_t bs = 16, per_seq = (VLM_MAX(n_prefill, 16 + steps + 1) + bs - 1) / bs + 1;
    int32_t n_blocks = 1 + VLM_MAX(per_seq, ((16 + steps + 1) / bs + 2) * batch);
    struct engine_params ep = {.bp = {.n_threads = threads}, .block_size = bs, .n_blocks = n_blocks,
                               .max_batched_tokens = VLM_MAX(CHUNK, 16 * batch),
                               .max_seqs = VLM_MAX(batch, 1)};
    struct engine e;
    if (engine_init(&e, &m, &ep, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    const struct model_config *c = &m.cfg;
    printf("model %s: %.1fM params, %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d%s\n",
           dir, (double)count_params(&m) * 1e-6, c->n_layers, c->hidden_size, c->n_heads,
           c->n_kv_heads, c->head_dim, c->intermediate_size, c->vocab_size,
           c->tie_word_embeddings ? " (tied)" : "");

    int32_t *ids = xmalloc((size_t)n_prefill * sizeof(int32_t));
    int32_t *blocks = xmalloc((size_t)per_seq * sizeof(int32_t));
    for (int32_t i = 0; i < n_prefill; i++) ids[i] = 1000 + i;
    for (int32_t j = 0; j < per_seq; j++) blocks[j] = 1 + j;
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < 3; r++) {
        double c0 = cpu_s();
        best = VLM_MIN(best, run_prefill(&e, n_prefill, ids, blocks, per_seq));
        best_cpu = VLM_MIN(best_cpu, cpu_s() - c0);
    }
    printf("prefill %5d tokens            %8.1f tok/s  (%.3f s; %.3f CPU-s, %.1f tok/CPU-s)\n",
           n_prefill, n_prefill / best, best, best_cpu, n_prefill / best_cpu);
    int32_t bsz[] = {1, batch};
    for (int k = 0; k < (batch > 1 ? 2 : 1); k++) {
        int32_t per = (16 + steps + 1) / bs + 2;
        best = 1e30;
        best_cpu = 1e30;
        for (int r = 0; r < 3; r++) {
            double c0 = cpu_s();
            best = VLM_MIN(best, run_decode(&e, bsz[k], steps, per));
            best_cpu = VLM_MIN(best_cpu, cpu_s() - c0); /* includes the 16-token prefill */
        }
        printf("decode  batch %-3d x %3d steps  %8.1f tok/s  (%.1f ms/step; %.1f CPU-ms/step)\n",
               bsz[k], steps, bsz[k] * steps / best, best / steps * 1e3, best_cpu / steps * 1e3);
    }
    bench_matmul(&e, "gate", &e.layers[0].w_gate, CHUNK);
    bench_matmul(&e, "down", &e.layers[0].w_down, CHUNK);
    bench_matmul(&e, "lm_head", &e.lm_head, batch);
    bench_matmul(&e, "lm_head", &e.lm_head, 1);
    free(ids);
    free(blocks);
    engine_destroy(&e);
    model_destroy(&m);
    return 0;
}
