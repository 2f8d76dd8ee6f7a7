/*
 * test_tokenizer: the tokenizer against Hugging Face `tokenizers`, through the goldens made
 * by tests/golden/make_tokenizer_goldens.py (corpus.jsonl: text -> ids; decode.jsonl: byte
 * ids -> HF's lossy text), plus lookups, invalid input, streaming, threads, and a table of
 * malformed tokenizer.json files.
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/tokenizer.h"
#include "test.h"
#include "tok_golden.h"

/* ==== Threads: the same corpus encoded concurrently gives the same ids ==== */
struct thread_arg {
    const struct tokenizer *t;
    const struct golden *g;
    size_t n, start, step;
    int mismatches;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    for (size_t i = a->start; i < a->n; i += a->step) {
        struct i32_vec ids = {0};
        if (tok_encode(a->t, a->g[i].text, a->g[i].len, &ids, NULL) || !ids_equal(&ids, &a->g[i].ids))
            a->mismatches++;
        i32_vec_free(&ids);
    }
    return NULL;
}

/* ==== Malformed tokenizer.json table ==== */
static int load_text(const char *json, struct vlm_err *err)
{
    char path[] = "/tmp/test_tokenizer_XXXXXX";
    int fd = mkstemp(path);
    VLM_ASSERT(fd >= 0);
    VLM_ASSERT(write(fd, json, strlen(json)) == (ssize_t)strlen(json));
    close(fd);
    struct tokenizer *t = NULL;
    int rc = tok_load(&t, path, err);
    unlink(path);
    VLM_ASSERT((rc == 0) == (t != NULL));
    tok_free(t);
    return rc;
}

/* A tiny valid tokenizer: vocab "a" "b" "ab" "Ġ", merges a+b, the Qwen-style split. */
#define TINY_PRE "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\"," \
    "\"pattern\":{\"Regex\":\"\\\\s+|\\\\S+\"},\"behavior\":\"Isolated\",\"invert\":false}," \
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}"
#define TINY_VOCAB "\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3}"

static const struct {
    const char *name, *json;
    int code;
} MALFORMED[] = {
    {"empty file", "", VLM_EINVAL},
    {"bad json", "{\"model\": {", VLM_EINVAL},
    {"not an object", "[1,2,3]", VLM_EINVAL},
    {"missing model", "{" TINY_PRE "}", VLM_EINVAL},
    {"model not object", "{\"model\":3," TINY_PRE "}", VLM_EINVAL},
    {"model not BPE", "{\"model\":{\"type\":\"WordPiece\"," TINY_VOCAB ",\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"missing vocab", "{\"model\":{\"type\":\"BPE\",\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"empty vocab", "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"missing merges", "{\"model\":{\"type\":\"BPE\"," TINY_VOCAB "}," TINY_PRE "}", VLM_EINVAL},
    {"negative id", "{\"model\":{\"vocab\":{\"a\":-1},\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"huge id", "{\"model\":{\"vocab\":{\"a\":1e12},\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"fractional id", "{\"model\":{\"vocab\":{\"a\":1.5},\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"string id", "{\"model\":{\"vocab\":{\"a\":\"0\"},\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"merge unknown token", "{\"model\":{" TINY_VOCAB ",\"merges\":[\"a c\"]}," TINY_PRE "}", VLM_EINVAL},
    {"merge result missing", "{\"model\":{" TINY_VOCAB ",\"merges\":[\"b a\"]}," TINY_PRE "}", VLM_EINVAL},
    {"merge bad shape", "{\"model\":{" TINY_VOCAB ",\"merges\":[[\"a\"]]}," TINY_PRE "}", VLM_EINVAL},
    {"merge not string", "{\"model\":{" TINY_VOCAB ",\"merges\":[7]}," TINY_PRE "}", VLM_EINVAL},
    {"missing pre_tokenizer", "{\"model\":{" TINY_VOCAB ",\"merges\":[\"a b\"]}}", VLM_EINVAL},
    {"pre_tokenizer without split",
     "{\"model\":{" TINY_VOCAB ",\"merges\":[]},\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}", VLM_EINVAL},
    {"bad regex",
     "{\"model\":{" TINY_VOCAB ",\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\","
     "\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}", VLM_EINVAL},
    {"split behavior",
     "{\"model\":{" TINY_VOCAB ",\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\","
     "\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\"}}", VLM_EINVAL},
    {"unsupported normalizer",
     "{\"normalizer\":{\"type\":\"NFKC\"},\"model\":{" TINY_VOCAB ",\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"added not array", "{\"added_tokens\":{},\"model\":{" TINY_VOCAB ",\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"added without id",
     "{\"added_tokens\":[{\"content\":\"<x>\"}],\"model\":{" TINY_VOCAB ",\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"added empty content",
     "{\"added_tokens\":[{\"id\":9,\"content\":\"\"}],\"model\":{" TINY_VOCAB ",\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
    {"dropout", "{\"model\":{\"dropout\":0.1," TINY_VOCAB ",\"merges\":[]}," TINY_PRE "}", VLM_EINVAL},
};

int main(void)
{
    struct vlm_err err = {0};
    struct tokenizer *tok = NULL;
    const char *tok_path = test_fixture("qwen3-tokenizer/tokenizer.json");
    TEST("load the Qwen3 tokenizer") {
        CHECK_EQ(tok_load(&tok, tok_path, &err), 0);
        if (!tok) { fprintf(stderr, "  %s\n", err.msg); return test_report(); }
    }

    TEST("lookups: vocab size, find, special flags, bytes") {
        CHECK_EQ(tok_vocab_size(tok), 151669);
        CHECK_EQ(tok_find(tok, "<|im_start|>"), 151644);
        CHECK_EQ(tok_find(tok, "<|im_end|>"), 151645);
        CHECK_EQ(tok_find(tok, "<|endoftext|>"), 151643);
        CHECK_EQ(tok_find(tok, "<think>"), 151667);
        CHECK_EQ(tok_find(tok, "Hello"), 9707);
        CHECK_EQ(tok_find(tok, "\xc4\xa0world"), 1879); /* "Ġworld" */
        CHECK_EQ(tok_find(tok, "no such token here"), -1);
        CHECK(tok_is_special(tok, 151644));
        CHECK(!tok_is_special(tok, 151667)); /* <think> is added but not special */
        CHECK(!tok_is_special(tok, 9707));
        CHECK(!tok_is_special(tok, -1));
        CHECK(!tok_is_special(tok, 1 << 30));
        size_t n = 0;
        const char *b = tok_bytes(tok, 1879, &n);
        CHECK(b && n == 6 && memcmp(b, " world", 6) == 0);
        b = tok_bytes(tok, 151644, &n);
        CHECK(b && n == 12 && memcmp(b, "<|im_start|>", 12) == 0);
        CHECK(tok_bytes(tok, -5, &n) == NULL);
        CHECK(tok_bytes(tok, 151669, &n) == NULL);
    }

    TEST("invalid UTF-8 input is VLM_EINVAL") {
        static const char *bad[] = {"\xff", "a\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe4\xbd",
                                    "ok\x80", "\xf0\x9f\x98", "\xc2"};
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            struct i32_vec ids = {0};
            memset(&err, 0, sizeof err);
            CHECK_EQ(tok_encode(tok, bad[i], strlen(bad[i]), &ids, &err), VLM_EINVAL);
            CHECK_EQ(err.code, VLM_EINVAL);
            CHECK_EQ(tok_encode(tok, bad[i], strlen(bad[i]), &ids, NULL), VLM_EINVAL);
            i32_vec_free(&ids);
        }
    }

    size_t n_corpus = 0;
    struct golden *corpus = load_jsonl("tests/golden/tokenizer/corpus.jsonl", &n_corpus);
    TEST("corpus: ids identical to HF tokenizers") {
        CHECK(n_corpus >= 2000);
        int bad = 0;
        for (size_t i = 0; i < n_corpus; i++) {
            struct i32_vec ids = {0};
            int rc = tok_encode(tok, corpus[i].text, corpus[i].len, &ids, &err);
            if (rc || !ids_equal(&ids, &corpus[i].ids)) {
                if (bad++ < 5) {
                    fprintf(stderr, "  line %zu: rc %d, %zu ids vs %zu expected; text \"%.60s\"\n", i + 1, rc,
                            ids.n, corpus[i].ids.n, corpus[i].text);
                    for (size_t k = 0; k < ids.n || k < corpus[i].ids.n; k++) {
                        long a = k < ids.n ? ids.v[k] : -1, e = k < corpus[i].ids.n ? corpus[i].ids.v[k] : -1;
                        if (a != e) { fprintf(stderr, "    first difference at %zu: %ld vs %ld\n", k, a, e); break; }
                    }
                }
            }
            i32_vec_free(&ids);
        }
        CHECK_EQ(bad, 0);
    }

    TEST("corpus: decode(ids) == NFC(text), streaming gives the same text") {
        int bad = 0, bad_stream = 0, bad_chunk = 0;
        for (size_t i = 0; i < n_corpus; i++) {
            struct strbuf d = {0}, s = {0};
            tok_decode(tok, corpus[i].ids.v, corpus[i].ids.n, false, &d);
            if (d.n != corpus[i].nfc_len || memcmp(d.s, corpus[i].nfc, d.n) != 0) {
                if (bad++ < 5) fprintf(stderr, "  line %zu: decode \"%.60s\"\n", i + 1, d.s);
            }
            if (!stream_decode(tok, corpus[i].ids.v, corpus[i].ids.n, false, &s)) bad_chunk++;
            if (s.n != d.n || memcmp(s.s, d.s, d.n) != 0) bad_stream++;
            sb_free(&d);
            sb_free(&s);
        }
        CHECK_EQ(bad, 0);
        CHECK_EQ(bad_stream, 0);
        CHECK_EQ(bad_chunk, 0);
    }

    TEST("skip_special drops special tokens only, in batch and stream") {
        const char *text = "<|im_start|>user\n<think>hi</think><|im_end|>";
        struct i32_vec ids = {0};
        CHECK_EQ(tok_encode(tok, text, strlen(text), &ids, NULL), 0);
        struct strbuf d = {0}, s = {0};
        tok_decode(tok, ids.v, ids.n, true, &d);
        stream_decode(tok, ids.v, ids.n, true, &s);
        CHECK_STR(d.s, "user\n<think>hi</think>");
        CHECK_STR(s.s, "user\n<think>hi</think>");
        sb_free(&d);
        sb_free(&s);
        i32_vec_free(&ids);
    }

    size_t n_dec = 0;
    struct golden *dec = load_jsonl("tests/golden/tokenizer/decode.jsonl", &n_dec);
    TEST("invalid byte sequences decode to U+FFFD exactly like HF, batch and stream") {
        CHECK(n_dec >= 100);
        int bad = 0;
        for (size_t i = 0; i < n_dec; i++) {
            struct strbuf d = {0}, s = {0};
            tok_decode(tok, dec[i].ids.v, dec[i].ids.n, false, &d);
            bool chunks_ok = stream_decode(tok, dec[i].ids.v, dec[i].ids.n, false, &s);
            if (d.n != dec[i].len || memcmp(d.s, dec[i].text, d.n) != 0 || s.n != d.n ||
                memcmp(s.s, d.s, d.n) != 0 || !chunks_ok) {
                if (bad++ < 5) fprintf(stderr, "  decode line %zu differs\n", i + 1);
            }
            sb_free(&d);
            sb_free(&s);
        }
        CHECK_EQ(bad, 0);
    }

    TEST("stream: a character split across tokens is held back, flushed as U+FFFD") {
        /* "😀" = F0 9F 98 80; push the byte tokens one at a time */
        static const unsigned char emoji[] = {0xF0, 0x9F, 0x98, 0x80};
        struct tok_stream st;
        struct strbuf out = {0};
        tok_stream_init(&st);
        sb_append(&out, "", 0);
        int32_t byte_ids[4] = {-1, -1, -1, -1};
        for (int32_t id = 0; id < tok_vocab_size(tok); id++) { /* the single-byte tokens */
            size_t len;
            const char *b = tok_bytes(tok, id, &len);
            for (int i = 0; i < 4; i++)
                if (b && len == 1 && (unsigned char)b[0] == emoji[i] && byte_ids[i] < 0) byte_ids[i] = id;
        }
        for (int i = 0; i < 4; i++) CHECK(byte_ids[i] >= 0);
        for (int i = 0; i < 3; i++) {
            tok_stream_push(tok, &st, byte_ids[i], false, &out);
            CHECK_EQ(out.n, 0);
        }
        tok_stream_push(tok, &st, byte_ids[3], false, &out);
        CHECK_STR(out.s, "\xf0\x9f\x98\x80");
        out.n = 0;
        tok_stream_push(tok, &st, byte_ids[0], false, &out);
        tok_stream_push(tok, &st, byte_ids[1], false, &out);
        CHECK_EQ(out.n, 0);
        CHECK_EQ(st.n_pending, 2);
        tok_stream_flush(&st, &out);
        CHECK_EQ(out.n, 3);
        CHECK(memcmp(out.s, "\xef\xbf\xbd", 3) == 0);
        CHECK_EQ(st.n_pending, 0);
        tok_stream_flush(&st, &out);
        CHECK_EQ(out.n, 3);
        tok_stream_push(tok, &st, -1, false, &out);          /* invalid ids are ignored */
        tok_stream_push(tok, &st, 1 << 30, false, &out);
        CHECK_EQ(out.n, 3);
        sb_free(&out);
    }

    TEST("encode appends to out and is deterministic") {
        struct i32_vec ids = {0};
        i32_vec_push(&ids, 7);
        CHECK_EQ(tok_encode(tok, "Hello world", 11, &ids, NULL), 0);
        CHECK_EQ(ids.n, 3);
        CHECK_EQ(ids.v[0], 7);
        CHECK_EQ(ids.v[1], 9707);
        CHECK_EQ(ids.v[2], 1879);
        i32_vec_free(&ids);
    }

    TEST("allocation failure while encoding a long word: VLM_ENOMEM or the right ids") {
        char word[600];
        memset(word, 'q', sizeof word);
        struct i32_vec want = {0};
        CHECK_EQ(tok_encode(tok, word, sizeof word, &want, NULL), 0);
        int n_fail = 0;
        for (long n = 0; n < 4; n++) {
            struct i32_vec ids = {0};
            memset(&err, 0, sizeof err);
            vlm_fail_alloc_after(n);
            int rc = tok_encode(tok, word, sizeof word, &ids, &err);
            vlm_fail_alloc_after(-1);
            CHECK(rc == 0 || rc == VLM_ENOMEM);
            if (rc == 0) CHECK(ids_equal(&ids, &want));
            else { n_fail++; CHECK_EQ(err.code, VLM_ENOMEM); }
            i32_vec_free(&ids);
        }
        CHECK(n_fail >= 1);
        i32_vec_free(&want);
    }

    TEST("two threads encode the corpus at once with identical results") {
        pthread_t th[2];
        struct thread_arg a[2];
        for (int i = 0; i < 2; i++) {
            a[i] = (struct thread_arg){tok, corpus, n_corpus, (size_t)i, 2, 0};
            pthread_create(&th[i], NULL, thread_main, &a[i]);
        }
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        CHECK_EQ(a[0].mismatches + a[1].mismatches, 0);
    }

    TEST("malformed tokenizer.json files give a clean error") {
        for (size_t i = 0; i < ARRAY_LEN(MALFORMED); i++) {
            memset(&err, 0, sizeof err);
            int rc = load_text(MALFORMED[i].json, &err);
            if (rc != MALFORMED[i].code || err.code != rc || !err.msg[0])
                fprintf(stderr, "  case \"%s\": rc %d, msg \"%s\"\n", MALFORMED[i].name, rc, err.msg);
            CHECK_EQ(rc, MALFORMED[i].code);
            CHECK(err.msg[0] != 0);
        }
        memset(&err, 0, sizeof err);
        struct tokenizer *t = NULL;
        CHECK_EQ(tok_load(&t, "/nonexistent/tokenizer.json", &err), VLM_EIO);
        CHECK(t == NULL);
        CHECK(err.msg[0] != 0);
    }

    static const char *tiny[] = { /* merges as [a, b] pairs (newer files) and "a b" strings */
        "{\"added_tokens\":[{\"id\":4,\"content\":\"<x>\",\"special\":true},{\"id\":5,\"content\":\"\\u00e9 x\"}],"
        "\"model\":{\"type\":\"BPE\"," TINY_VOCAB ",\"merges\":[[\"a\",\"b\"]]}," TINY_PRE "}",
        "{\"added_tokens\":[{\"id\":4,\"content\":\"<x>\",\"special\":true},{\"id\":5,\"content\":\"\\u00e9 x\"}],"
        "\"model\":{\"type\":\"BPE\"," TINY_VOCAB ",\"merges\":[\"a b\"]}," TINY_PRE "}",
    };
    for (size_t k = 0; k < ARRAY_LEN(tiny); k++) TEST(k ? "a tiny tokenizer with \"a b\" merges" : "a tiny tokenizer with [a, b] merges") {
        const char *json = tiny[k];
        char path[] = "/tmp/test_tokenizer_XXXXXX";
        int fd = mkstemp(path);
        CHECK(fd >= 0 && write(fd, json, strlen(json)) == (ssize_t)strlen(json));
        close(fd);
        struct tokenizer *t = NULL;
        CHECK_EQ(tok_load(&t, path, &err), 0);
        unlink(path);
        if (t) {
            struct i32_vec ids = {0};
            CHECK_EQ(tok_encode(t, "ab<x>ba b", 9, &ids, NULL), 0);
            /* ab -> 2, <x> -> 4, ba -> b a, " " -> Ġ, b */
            int32_t want[] = {2, 4, 1, 0, 3, 1};
            CHECK_EQ(ids.n, ARRAY_LEN(want));
            for (size_t i = 0; i < ids.n && i < ARRAY_LEN(want); i++) CHECK_EQ(ids.v[i], want[i]);
            CHECK_EQ(tok_vocab_size(t), 6);
            /* an added token spelled with non-byte-level characters decodes to its own UTF-8 */
            size_t n = 0;
            const char *b = tok_bytes(t, 5, &n);
            CHECK(b && n == 4 && memcmp(b, "\xc3\xa9 x", 4) == 0);
            CHECK_EQ(tok_find(t, "\xc3\xa9 x"), 5);
            CHECK(tok_is_special(t, 4));
            struct strbuf d = {0};
            tok_decode(t, ids.v, ids.n, true, &d);
            CHECK_STR(d.s, "abba b");
            sb_free(&d);
            i32_vec_free(&ids);
        }
        tok_free(t);
    }

    free_golden(corpus, n_corpus);
    free_golden(dec, n_dec);
    tok_free(tok);
    tok_free(NULL);
    return test_report();
}
