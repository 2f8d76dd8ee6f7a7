/*
 * fuzz_tokenizer_slow: arbitrary slow tokenizer files through tok_load_slow. The input is
 * split at 0xFF bytes (never part of valid UTF-8 or JSON) into vocab.json, merges.txt,
 * tokenizer_config.json, added_tokens.json and special_tokens_map.json; missing pieces are
 * absent files. Loading must succeed or fail with VLM_EINVAL and a message, never crash or
 * leak. A tokenizer that loads encodes the merges piece and a fixed text; the ids must
 * decode in one go and streamed to the same text, and that text must encode again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tokenizer.h"

static void roundtrip(const struct tokenizer *t, const char *s, size_t n)
{
    struct i32_vec ids = {0};
    int rc = tok_encode(t, s, n, &ids, NULL);
    if (rc != 0 && rc != VLM_EINVAL) abort();
    struct strbuf all = {0}, streamed = {0};
    struct tok_stream st;
    tok_decode(t, ids.v, ids.n, false, &all);
    tok_stream_init(&st);
    sb_append(&streamed, "", 0);
    for (size_t i = 0; i < ids.n; i++) tok_stream_push(t, &st, ids.v[i], false, &streamed);
    tok_stream_flush(&st, &streamed);
    if (all.n != streamed.n || memcmp(all.s, streamed.s, all.n) != 0) {
        fprintf(stderr, "fuzz_tokenizer_slow: streamed decode differs from decode\n");
        abort();
    }
    struct i32_vec again = {0};
    if (tok_encode(t, all.s, all.n, &again, NULL) != 0) {
        fprintf(stderr, "fuzz_tokenizer_slow: decoded text does not encode\n");
        abort();
    }
    i32_vec_free(&again);
    i32_vec_free(&ids);
    sb_free(&all);
    sb_free(&streamed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tok_text piece[5] = {{0}};
    const char *s = (const char *)data;
    size_t start = 0;
    int k = 0;
    for (size_t i = 0; i <= size && k < 5; i++) {
        if (i == size || data[i] == 0xFF) {
            piece[k++] = (struct tok_text){s + start, i - start};
            start = i + 1;
        }
    }
    struct tok_slow_files f = {.dir = "fuzz", .vocab = piece[0], .merges = piece[1],
                               .config = piece[2], .added_tokens = piece[3],
                               .special_map = piece[4]};
    if (!f.vocab.s) f.vocab = (struct tok_text){"", 0};
    if (!f.merges.s) f.merges = (struct tok_text){"", 0};
    struct tokenizer *t = NULL;
    struct vlm_err err = {0};
    int rc = tok_load_slow(&t, &f, &err);
    if (rc != 0 && (rc != VLM_EINVAL || !err.msg[0] || t)) abort();
    if (rc == 0 && !t) abort();
    if (t) {
        roundtrip(t, f.merges.s, f.merges.n);
        static const char text[] = "ab<x>ba b<y><|endoftext|> caf\xc3\xa9 e\xcc\x81 12";
        roundtrip(t, text, sizeof text - 1);
    }
    tok_free(t);
    return 0;
}
