/*
 * bench_grammar: structured-output costs on the CPU, with the Qwen3 vocabulary padded to the
 * model's 151 936 rows.
 *
 *   - vocabulary trie build (once per process);
 *   - schema compile time over tests/schemas/corpus.json (each schema compiled --reps times);
 *   - mask time per token per sequence: for each schema, a random walk of up to --steps
 *     tokens (each step: gm_fill_mask, then a uniformly drawn allowed token, or EOS when the
 *     grammar may end and the draw says so). Two passes over the same walks: "cold" (fresh
 *     grammars: the per-node caches are built on first use) and "warm" (the same grammars
 *     again: what a repeated schema costs, the cache keyed by canonical text; each step timed
 *     three times, the least kept, as the host is shared).
 *
 * Usage: bench_grammar [--reps N] [--steps N] [tokenizer.json] [corpus.json]
 * (defaults: $VLM_FIXTURES/qwen3-tokenizer/tokenizer.json, tests/schemas/corpus.json)
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/base.h"
#include "engine/grammar.h"
#include "server/structured.h"
#include "server/tokenizer.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, size_t n, const char *unit, double scale)
{
    if (!n) return;
    qsort(v, n, sizeof *v, cmp_d);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    printf("%-34s n=%-6zu median %9.1f  p99 %9.1f  max %9.1f  mean %9.1f %s\n", what, n,
           v[n / 2] * scale, v[(size_t)((double)(n - 1) * 0.99)] * scale, v[n - 1] * scale,
           sum / (double)n * scale, unit);
}

static uint64_t rng(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 17;
}

int main(int argc, char **argv)
{
    int reps = 5, steps = 64;
    const char *tok_path = NULL, *corpus_path = "tests/schemas/corpus.json";
    char defpath[4096];
    const char *fx = getenv("VLM_FIXTURES");
    snprintf(defpath, sizeof defpath, "%s/qwen3-tokenizer/tokenizer.json", fx ? fx : ".");
    int pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (pos++ == 0) tok_path = argv[i];
        else corpus_path = argv[i];
    }
    if (!tok_path) tok_path = defpath;
    struct tokenizer *tok;
    struct vlm_err err = {0};
    if (tok_load(&tok, tok_path, &err)) {
        fprintf(stderr, "bench_grammar: %s\n", err.msg);
        return 1;
    }
    uint64_t t0 = vlm_now_ns();
    const struct gram_vocab *v = st_vocab(tok, 151936);
    printf("vocabulary trie: %d ids, built in %.1f ms\n", (int)gv_size(v),
           (double)(vlm_now_ns() - t0) / 1e6);

    size_t len;
    char *text = vlm_read_file(corpus_path, &len);
    cJSON *all = text ? cJSON_ParseWithLength(text, len) : NULL;
    free(text);
    if (!cJSON_IsArray(all)) {
        fprintf(stderr, "bench_grammar: cannot read %s\n", corpus_path);
        return 1;
    }
    int ns = cJSON_GetArraySize(all);
    double *compile = xmalloc((size_t)(ns * reps) * sizeof *compile);
    size_t nc = 0;
    struct st_options o = {.any_whitespace = true};
    char msg[256];
    for (const cJSON *e = all->child; e; e = e->next) {
        for (int r = 0; r < reps; r++) {
            uint64_t a = vlm_now_ns();
            struct grammar *g =
                st_compile_schema(cJSON_GetObjectItem(e, "schema"), &o, msg, sizeof msg);
            compile[nc++] = (double)(vlm_now_ns() - a);
            grammar_release(g);
        }
    }
    report("schema compile", compile, nc, "us", 1e-3);

    int32_t W = gv_mask_words(v);
    uint32_t *bits = xmalloc((size_t)W * sizeof *bits);
    int32_t *allowed = xmalloc((size_t)gv_size(v) * sizeof *allowed);
    size_t cap = (size_t)ns * (size_t)steps;
    double *cold = xmalloc(cap * sizeof *cold), *warm = xmalloc(cap * sizeof *warm);
    size_t n_cold = 0, n_warm = 0;
    long n_tokens_total = 0, n_allowed_total = 0;
    for (const cJSON *e = all->child; e; e = e->next) {
        struct grammar *g =
            st_compile_schema(cJSON_GetObjectItem(e, "schema"), &o, msg, sizeof msg);
        if (!g) continue;
        for (int pass = 0; pass < 2; pass++) {
            uint64_t seed = 42;
            struct gram_matcher *m = gm_new(g);
            for (int s = 0; s < steps && !gm_done(m); s++) {
                /* warm: the least of 3 runs of the same step (the host is shared: this drops
                 * preemptions, not work; each run does the whole computation again) */
                double dt = 1e30;
                int32_t n = 0;
                for (int rep = 0; rep < (pass ? 3 : 1); rep++) {
                    uint64_t a = vlm_now_ns();
                    n = gm_fill_mask(m, v, bits);
                    double d = (double)(vlm_now_ns() - a);
                    dt = d < dt ? d : dt;
                }
                if (getenv("BENCH_SLOW") && dt > atof(getenv("BENCH_SLOW")) * 1e3)
                    fprintf(stderr, "slow: %s pass %d step %d: %.1f us, %d allowed\n",
                            cJSON_GetObjectItem(e, "name")->valuestring, pass, s, dt / 1e3, (int)n);
                if (pass) warm[n_warm++] = dt;
                else cold[n_cold++] = dt;
                if (n <= 0) break;
                if (gm_can_end(m) && rng(&seed) % 4 == 0) break; /* EOS */
                int32_t k = 0;
                for (int32_t w = 0; w < W; w++)
                    for (uint32_t x = bits[w]; x; x &= x - 1)
                        allowed[k++] = w * 32 + __builtin_ctz(x);
                if (pass) {
                    n_tokens_total++;
                    n_allowed_total += k;
                }
                if (!gm_accept_token(m, v, allowed[rng(&seed) % (uint64_t)k])) abort();
            }
            gm_free(m);
        }
        grammar_release(g);
    }
    report("mask per token, cold caches", cold, n_cold, "us", 1e-3);
    report("mask per token, warm caches", warm, n_warm, "us", 1e-3);
    printf("mean allowed tokens per step: %.0f of %d\n",
           n_tokens_total ? (double)n_allowed_total / (double)n_tokens_total : 0.0,
           (int)gv_size(v));
    free(compile);
    free(cold);
    free(warm);
    free(bits);
    free(allowed);
    cJSON_Delete(all);
    tok_free(tok);
    return 0;
}
