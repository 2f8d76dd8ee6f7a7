/*
 * bench_engine: prefill and decode throughput of the CPU engine on one checkpoint, the
 * process's memory (weights mapped once: file pages vs anonymous memory), and the GFLOP/s
 * of its largest products through the backend next to OpenBLAS's sgemm on an f32 copy of
 * the same weight (what the backend ran before bf16 weights were used in place).
 * Prints figures, asserts nothing.
 *
 *   bench_engine --model DIR [--prefill N] [--decode STEPS] [--batch B] [--threads T]
 *                [--numerics exact|fast]   (fast by default, as the server)
 *                [--no-matmul] [--greedy ID,ID,... [--greedy-tokens N (16)]]
 *
 * --greedy runs no benchmark: it prefills the given prompt ids, decodes N greedy tokens and
 * prints them on one line ("greedy: ..."), to check that another engine given the same
 * weights produces the same tokens (bench/llamacpp_side_by_side.sh). --no-matmul skips the
 * products at the end.
 *
 * Prefill: one sequence of N tokens (ids 1000 + i), in chunks of 512 tokens, logits only
 * for the last row (as in serving). Decode: B sequences of 16 prompt tokens, then STEPS
 * greedy steps with all B sequences in every step; tok/s counts B tokens per step.
 * Each figure is the best of --runs R runs (default 5), with the median beside it (the machine
 * is shared); the 8B geometry takes --runs 1 or 2. An untimed 16-token prefill first brings
 * the mapped weights into the page cache, as llama-bench's warm-up run does.
 * VLM_CPU_ISA=c|avx2|avx512 caps the kernels' instruction set (kernels/cpu.h).
 */
#include "engine/engine.h"
#include "engine/model.h"
#include "kernels/cpu.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* kB of one /proc/self/status field ("VmRSS:", "RssFile:", ...); -1 if absent */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n)) v = strtol(line + n, NULL, 10);
    if (f) fclose(f);
    return v;
}

static void print_memory(const char *when)
{
    printf("memory %-14s VmRSS %7.1f MiB = RssFile %7.1f (mapped weights) + RssAnon %7.1f; "
           "peak VmHWM %7.1f MiB\n",
           when, status_kb("VmRSS:") / 1024.0, status_kb("RssFile:") / 1024.0,
           status_kb("RssAnon:") / 1024.0, status_kb("VmHWM:") / 1024.0);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define MAX_RUNS 16

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
            seqs[s] = (struct batch_seq){.pos = pos, .n_tokens = n,
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

/* Prefill ids, then n greedy steps; prints the generated ids. */
static void run_greedy(struct engine *e, const int32_t *ids, int32_t n_ids, int32_t n,
                       int32_t per_seq_blocks)
{
    struct sampling_params sp = sampler_params_greedy();
    int32_t *toks = xmalloc((size_t)(n_ids + n) * sizeof(int32_t));
    int32_t *blocks = xmalloc((size_t)per_seq_blocks * sizeof(int32_t));
    memcpy(toks, ids, (size_t)n_ids * sizeof(int32_t));
    for (int32_t j = 0; j < per_seq_blocks; j++) blocks[j] = 1 + j;
    struct batch_out o;
    /* the 8 largest logits after the prompt: random weights often make greedy repeat one
     * token, so the values are the finer check of the conversion */
    {
        struct batch_seq s = {.n_tokens = n_ids, .tokens = toks, .blocks = blocks,
                              .n_blocks = per_seq_blocks, .sp = &sp, .prompt = toks,
                              .n_prompt = n_ids};
        struct batch b = {.seqs = &s, .n_seqs = 1};
        int32_t V = e->m->cfg.vocab_size, top[8];
        float *lg = xmalloc((size_t)V * sizeof(float));
        int32_t last = n_ids - 1; /* the prompt's last row */
        VLM_ASSERT(engine_forward_rows(e, &b, &last, 1, lg) == 0);
        printf("top8:");
        for (int i = 0; i < 8; i++) {
            top[i] = -1;
            for (int32_t v = 0; v < V; v++) {
                bool used = false;
                for (int k = 0; k < i; k++) used |= top[k] == v;
                if (!used && (top[i] < 0 || lg[v] > lg[top[i]])) top[i] = v;
            }
            printf(" %d:%.4f", top[i], lg[top[i]]);
        }
        printf("\n");
        free(lg);
    }
    printf("greedy:");
    for (int32_t step = 0; step < n; step++) {
        int32_t pos = step == 0 ? 0 : n_ids + step - 1, cnt = step == 0 ? n_ids : 1;
        struct batch_seq s = {.pos = pos, .n_tokens = cnt, .tokens = toks + pos,
                              .blocks = blocks, .n_blocks = per_seq_blocks, .sp = &sp,
                              .prompt = toks, .n_prompt = n_ids, .output = toks + n_ids,
                              .n_out = step};
        struct batch b = {.seqs = &s, .n_seqs = 1};
        VLM_ASSERT(engine_execute(e, &b, &o) == 0);
        toks[n_ids + step] = o.token[0];
        printf(" %d", o.token[0]);
    }
    printf("\n");
    free(toks);
    free(blocks);
}

/* GFLOP/s of y(M,N) = x(M,K)·w(N,K)ᵀ through the backend, and through sgemm on an f32
 * copy of w (one thread per OpenMP thread, as the backend runs f32 weights). */
static void bench_matmul(struct engine *e, const char *what, const struct tensor *w, int32_t M)
{
    int64_t N = w->ne[1], K = w->ne[0];
    float *x = xmalloc((size_t)(M * K) * sizeof(float)), *y = xmalloc((size_t)(M * N) * sizeof(float));
    float *w32 = xmalloc((size_t)(N * K) * sizeof(float));
    for (int64_t i = 0; i < M * K; i++) x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (int64_t i = 0; i < N * K; i++)
        w32[i] = w->type == DT_F32    ? ((const float *)w->data)[i]
                 : w->type == DT_BF16 ? bf16_to_f32(((const uint16_t *)w->data)[i])
                                      : f16_to_f32(((const uint16_t *)w->data)[i]);
    struct tensor tx = tensor_make(x, DT_F32, K, M, 1, 1), ty = tensor_make(y, DT_F32, N, M, 1, 1);
    double flop = 2.0 * (double)M * (double)N * (double)K, best_be = 1e30, best_blas = 1e30;
    int reps = (int)VLM_MAX(1, VLM_MIN(50, 2e9 / flop));
    int threads = e->p.bp.n_threads > 0 ? e->p.bp.n_threads : omp_get_num_procs();
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++) e->be.ops->matmul(e->be.ctx, &ty, &tx, w, NULL);
        double t1 = now_s();
        for (int i = 0; i < reps; i++) cpu_matmul(y, x, w32, NULL, M, N, K, threads);
        double t2 = now_s();
        best_be = VLM_MIN(best_be, (t1 - t0) / reps);
        best_blas = VLM_MIN(best_blas, (t2 - t1) / reps);
    }
    double wbytes = (double)(N * K) * (double)dtype_size(w->type);
    printf("matmul %-8s M=%-4d N=%-6lld K=%-5lld  backend (%s) %7.2f GFLOP/s %6.1f GB/s of "
           "weights   sgemm f32 copy %7.2f GFLOP/s\n",
           what, M, (long long)N, (long long)K, dtype_name(w->type), flop / best_be * 1e-9,
           wbytes / best_be * 1e-9, flop / best_blas * 1e-9);
    free(x);
    free(y);
    free(w32);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int32_t n_prefill = 512, steps = 32, batch = 8, threads = 0, greedy_n = 16, n_greedy = 0;
    int32_t runs = 5;
    int32_t greedy_ids[256];
    enum numerics numerics = NUMERICS_FAST;
    bool bad = false, matmul = true;
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--no-matmul")) {
            matmul = false;
            i--;
            continue;
        }
        if (i + 1 >= argc) {
            bad = true;
            break;
        }
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--greedy-tokens")) greedy_n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--greedy")) {
            char *p = argv[i + 1], *end;
            while (*p && n_greedy < 256) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 0) {
                    bad = true;
                    break;
                }
                greedy_ids[n_greedy++] = (int32_t)v;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') bad = true;
            }
            bad |= n_greedy == 0;
        }
        else if (!strcmp(argv[i], "--prefill")) n_prefill = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--decode")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--numerics")) bad |= !numerics_parse(argv[i + 1], &numerics);
        else bad = true;
    }
    if (bad || !dir || n_prefill < 1 || steps < 1 || batch < 1 || greedy_n < 1 || greedy_n > 256 ||
        runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_engine --model DIR [--prefill N] [--decode STEPS] "
                        "[--batch B] [--threads T] [--numerics exact|fast] [--runs R (1..16)]\n"
                        "       [--no-matmul]\n"
                        "       [--greedy ID,ID,... [--greedy-tokens N]]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* each figure as it comes */
    vlm_log_level = VLM_LOG_WARN;
    struct model m = {0};
    struct vlm_err err = {0};
    if (model_load(&m, dir, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    int32_t bs = 16, per_seq = (VLM_MAX(VLM_MAX(n_prefill, 16 + steps + 1), n_greedy + greedy_n) + bs - 1) / bs + 1;
    int32_t n_blocks = 1 + VLM_MAX(per_seq, ((16 + steps + 1) / bs + 2) * batch);
    struct engine_params ep = {.bp = {.n_threads = threads, .numerics = numerics}, .block_size = bs, .n_blocks = n_blocks,
                               .max_batched_tokens = VLM_MAX(CHUNK, 16 * batch),
                               .max_seqs = VLM_MAX(batch, 1)};
    struct engine e;
    if (engine_init(&e, &m, &ep, &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    const struct model_config *c = &m.cfg;
    printf("model %s: %.1fM params (%s), %d layers, hidden %d, heads %d/%d x %d, ffn %d, "
           "vocab %d%s\n",
           dir, (double)count_params(&m) * 1e-6, dtype_name(m.w.layers[0].wq.type), c->n_layers,
           c->hidden_size, c->n_heads, c->n_kv_heads, c->head_dim, c->intermediate_size,
           c->vocab_size, c->tie_word_embeddings ? " (tied)" : "");
    printf("numerics %s, kernels %s, %d threads\n", numerics_name(numerics),
           cpu_isa_name(cpu_matmul_w16_path(cpu_isa_best(), numerics == NUMERICS_FAST)), threads > 0 ? threads : omp_get_num_procs());
    print_memory("after load");
    if (n_greedy) {
        run_greedy(&e, greedy_ids, n_greedy, greedy_n, per_seq);
        engine_destroy(&e);
        model_destroy(&m);
        return 0;
    }

    int32_t *ids = xmalloc((size_t)n_prefill * sizeof(int32_t));
    int32_t *blocks = xmalloc((size_t)per_seq * sizeof(int32_t));
    for (int32_t i = 0; i < n_prefill; i++) ids[i] = 1000 + i;
    for (int32_t j = 0; j < per_seq; j++) blocks[j] = 1 + j;
    /* warm-up, untimed: a short prefill reads every weight once, so the timed runs find the
     * mapped file in the page cache (llama-bench warms up the same way) */
    double tw = run_prefill(&e, VLM_MIN(n_prefill, 16), ids, blocks, per_seq);
    printf("warm-up: a %d-token prefill in %.3f s (first touch of the mapped weights)\n",
           VLM_MIN(n_prefill, 16), tw);
    double t[MAX_RUNS], tc[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        double c0 = cpu_s();
        t[r] = run_prefill(&e, n_prefill, ids, blocks, per_seq);
        tc[r] = cpu_s() - c0;
    }
    qsort(t, runs, sizeof *t, cmp_d);
    qsort(tc, runs, sizeof *tc, cmp_d);
    printf("prefill %5d tokens            %8.1f tok/s  median %8.1f  (%.3f s; %.3f CPU-s)\n",
           n_prefill, n_prefill / t[0], n_prefill / t[runs / 2], t[0], tc[0]);
    int32_t bsz[] = {1, batch};
    for (int k = 0; k < (batch > 1 ? 2 : 1); k++) {
        int32_t per = (16 + steps + 1) / bs + 2;
        for (int r = 0; r < runs; r++) {
            double c0 = cpu_s();
            t[r] = run_decode(&e, bsz[k], steps, per);
            tc[r] = cpu_s() - c0; /* includes the 16-token prefill */
        }
        qsort(t, runs, sizeof *t, cmp_d);
        qsort(tc, runs, sizeof *tc, cmp_d);
        printf("decode  batch %-3d x %3d steps  %8.1f tok/s  median %8.1f  (%.1f ms/step; %.1f "
               "CPU-ms/step)\n",
               bsz[k], steps, bsz[k] * steps / t[0], bsz[k] * steps / t[runs / 2],
               t[0] / steps * 1e3, tc[0] / steps * 1e3);
    }
    print_memory("after the runs");
    if (matmul) {
        bench_matmul(&e, "gate", &e.layers[0].w_gate, CHUNK);
        bench_matmul(&e, "down", &e.layers[0].w_down, CHUNK);
        bench_matmul(&e, "lm_head", &e.lm_head, batch);
        bench_matmul(&e, "lm_head", &e.lm_head, 1);
    }
    free(ids);
    free(blocks);
    engine_destroy(&e);
    model_destroy(&m);
    return 0;
}
