/*
 * fuzz_tokenizer: arbitrary bytes through the tokenizer. The real Qwen3 tokenizer is loaded
 * once from fixtures_dir() (tests/fixtures.h). Each input is
 *   1. encoded as text (invalid UTF-8 must give VLM_EINVAL, nothing else may fail), and its
 *      ids decoded in one go and streamed token by token: both texts must be equal;
 *   2. read as a sequence of 3-byte ids (some out of range) and decoded both ways: equal
 *      texts, valid UTF-8 (checked by encoding the text again, which must succeed).
 * A mismatch aborts, so the fuzzer reports it like a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tok.h"
#include "server/tokenizer.h"

static struct tokenizer *tok; /* set from fuzz_tokenizer() by every input */

static void check_decode(const int32_t *ids, size_t n, bool skip)
{
    struct strbuf all = {0}, streamed = {0};
    struct tok_stream st;
    tok_decode(tok, ids, n, skip, &all);
    tok_stream_init(&st);
    sb_append(&streamed, "", 0);
    for (size_t i = 0; i < n; i++) tok_stream_push(tok, &st, ids[i], skip, &streamed);
    tok_stream_flush(&st, &streamed);
    if (all.n != streamed.n || memcmp(all.s, streamed.s, all.n) != 0) {
        fprintf(stderr, "fuzz_tokenizer: streamed decode differs from decode\n");
        abort();
    }
    struct i32_vec again = {0};
    if (tok_encode(tok, all.s, all.n, &again, NULL) != 0) {
        fprintf(stderr, "fuzz_tokenizer: decoded text is not valid UTF-8\n");
        abort();
    }
    i32_vec_free(&again);
    sb_free(&all);
    sb_free(&streamed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tok = fuzz_tokenizer("fuzz_tokenizer");
    struct i32_vec ids = {0};
    int rc = tok_encode(tok, (const char *)data, size, &ids, NULL);
    if (rc != 0 && rc != VLM_EINVAL) abort();
    if (rc == 0) check_decode(ids.v, ids.n, size & 1);
    ids.n = 0;
    int32_t range = tok_vocab_size(tok) + 64;
    for (size_t i = 0; i + 3 <= size; i += 3)
        i32_vec_push(&ids, (int32_t)(((uint32_t)data[i] | (uint32_t)data[i + 1] << 8 |
                                      (uint32_t)data[i + 2] << 16) % (uint32_t)range) - 32);
    check_decode(ids.v, ids.n, false);
    i32_vec_free(&ids);
    return 0;
}
