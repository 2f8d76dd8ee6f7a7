/*
 * bench_tokenizer: single-thread tokenizer throughput on the golden corpus, one string per
 * tok_encode call (as the server does), and decode throughput. Prints figures, asserts none.
 *
 *   bench_tokenizer [TOKENIZER_JSON [CORPUS_JSONL [SECONDS]]]
 * Defaults: the tokenizer fixture (tests/fixtures.h: $VLM_FIXTURES, else the build tree's) and
 * $VLM_SOURCE_DIR (else .)/tests/golden/tokenizer/corpus.jsonl, 3 seconds per measurement:
 * run it from the source root.
 * Compare with bench/bench_tokenizer_hf.py (HF tokenizers on the same corpus).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixtures.h"
#include "server/tokenizer.h"

/* CPU time of this thread: on a shared, loaded machine it moves much less than wall time. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct text {
    char *s; /* owned */
    size_t n;
};

static struct text *load_corpus(const char *path, size_t *n_out, size_t *bytes)
{
    size_t len, n = 0, cap = 0;
    char *data = vlm_read_file(path, &len);
    if (!data) return NULL;
    struct text *t = NULL;
    *bytes = 0;
    for (char *line = data, *end; line < data + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(data + len - line));
        if (!end) end = data + len;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)(end - line));
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "text"));
        if (s && !cJSON_GetObjectItemCaseSensitive(j, "hex")) {
            if (n == cap) t = xrealloc(t, (cap = cap ? 2 * cap : 1024) * sizeof *t);
            t[n].n = strlen(s);
            t[n].s = xstrdup(s);
            *bytes += t[n++].n;
        }
        cJSON_Delete(j);
    }
    free(data);
    *n_out = n;
    return t;
}

int main(int argc, char **argv)
{
    char def_tok[4096], def_corpus[4096];
    const char *src = getenv("VLM_SOURCE_DIR");
    fixtures_tokenizer_json(def_tok, sizeof def_tok);
    snprintf(def_corpus, sizeof def_corpus, "%s/tests/golden/tokenizer/corpus.jsonl", src ? src : ".");
    const char *tok_path = argc > 1 ? argv[1] : def_tok;
    const char *corpus_path = argc > 2 ? argv[2] : def_corpus;
    double seconds = argc > 3 ? atof(argv[3]) : 3.0;

    struct vlm_err err = {0};
    struct tokenizer *tok;
    uint64_t t0 = vlm_now_ns();
    if (tok_load(&tok, tok_path, &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    double load_ms = (double)(vlm_now_ns() - t0) / 1e6;
    size_t n, bytes;
    struct text *texts = load_corpus(corpus_path, &n, &bytes);
    if (!texts) {
        fprintf(stderr, "bench_tokenizer: cannot read %s\n", corpus_path);
        return 1;
    }

    /* encode: whole corpus passes, one string per call, until the time is up */
    struct i32_vec ids = {0};
    size_t passes = 0, n_tokens = 0;
    double c0 = cpu_s();
    t0 = vlm_now_ns();
    uint64_t t_end = t0 + (uint64_t)(seconds * 1e9);
    do {
        for (size_t i = 0; i < n; i++) {
            ids.n = 0;
            tok_encode(tok, texts[i].s, texts[i].n, &ids, NULL);
            n_tokens += ids.n;
        }
        passes++;
    } while (vlm_now_ns() < t_end);
    double enc_s = (double)(vlm_now_ns() - t0) / 1e9, enc_cpu = cpu_s() - c0;

    /* decode: all ids of one pass, one string per call, and streamed token by token */
    struct i32_vec all = {0};
    size_t *starts = xmalloc((n + 1) * sizeof *starts);
    for (size_t i = 0; i < n; i++) {
        starts[i] = all.n;
        tok_encode(tok, texts[i].s, texts[i].n, &all, NULL);
    }
    starts[n] = all.n;
    struct strbuf out = {0};
    size_t dpasses = 0;
    c0 = cpu_s();
    t0 = vlm_now_ns();
    t_end = t0 + (uint64_t)(seconds * 1e9);
    do {
        for (size_t i = 0; i < n; i++) {
            out.n = 0;
            tok_decode(tok, all.v + starts[i], starts[i + 1] - starts[i], false, &out);
        }
        dpasses++;
    } while (vlm_now_ns() < t_end);
    double dec_s = (double)(vlm_now_ns() - t0) / 1e9, dec_cpu = cpu_s() - c0;
    size_t spasses = 0;
    c0 = cpu_s();
    t0 = vlm_now_ns();
    t_end = t0 + (uint64_t)(seconds * 1e9);
    do {
        struct tok_stream st;
        tok_stream_init(&st);
        out.n = 0;
        for (size_t k = 0; k < all.n; k++) {
            tok_stream_push(tok, &st, all.v[k], false, &out);
            if (out.n > 65536) out.n = 0;
        }
        tok_stream_flush(&st, &out);
        spasses++;
    } while (vlm_now_ns() < t_end);
    double str_cpu = cpu_s() - c0;

    printf("tokenizer load: %.0f ms (%s)\n", load_ms, tok_path);
    printf("corpus: %zu strings, %zu bytes, %zu tokens\n", n, bytes, all.n);
    printf("encode (1 thread, 1 string/call): %.2f MB/s per CPU second (%.2f wall), %.0f tokens/s, %zu passes\n",
           (double)bytes * (double)passes / enc_cpu / 1e6, (double)bytes * (double)passes / enc_s / 1e6,
           (double)n_tokens / enc_cpu, passes);
    printf("decode (1 thread, 1 string/call): %.2f MB/s of text per CPU second (%.2f wall)\n",
           (double)bytes * (double)dpasses / dec_cpu / 1e6, (double)bytes * (double)dpasses / dec_s / 1e6);
    printf("stream decode (token by token):   %.1f M tokens per CPU second\n", (double)all.n * (double)spasses / str_cpu / 1e6);
    sb_free(&out);
    i32_vec_free(&ids);
    i32_vec_free(&all);
    free(starts);
    for (size_t i = 0; i < n; i++) free(texts[i].s);
    free(texts);
    tok_free(tok);
    return 0;
}
