/*
 * test_tokenizer_slow: the slow-file tokenizer (vocab.json + merges.txt + ..., no
 * tokenizer.json) against transformers' AutoTokenizer, through
 *   - the model folder "slowtok" that valley-make-model writes with --slow-tokenizer
 *     --valley-tokens from the Qwen3 tokenizer (tests/models.txt): ids identical to
 *     corpus.jsonl (which make_slow_tokenizer_goldens.py checked AutoTokenizer gives on that
 *     folder) and to the tokenizer.json path, and to slow_added.jsonl (strings holding every
 *     added token), decode round trips;
 *   - tiny folders whose AutoTokenizer ids are written below (checked by hand with
 *     transformers 4.51.2): added_tokens_decoder, the legacy added_tokens.json path, no config;
 *   - a table of malformed slow files, each with the words its message must hold;
 * and the stop set (tok_stop_ids), and the writer (engine/slowtok.h) round trip.
 */
// models: slowtok
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/slowtok.h"
#include "engine/testmodel.h"
#include "server/tokenizer.h"
#include "test.h"
#include "tmpdir.h"
#include "tok_golden.h"

/* ==== Tiny slow files ==== */
#define TV "{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3}"
#define TM "#version: 0.2\na b\n"
#define T(s) {s, sizeof(s) - 1}
#define NONE {NULL, 0}
#define TX(s) ((struct tok_text){s, sizeof(s) - 1}) /* the same, as an expression */
#define NO ((struct tok_text){NULL, 0})

static struct tok_slow_files tiny(struct tok_text vocab, struct tok_text merges, struct tok_text cfg,
                                  struct tok_text added, struct tok_text map)
{
    return (struct tok_slow_files){.dir = "tiny", .vocab = vocab, .merges = merges, .config = cfg,
                                   .added_tokens = added, .special_map = map};
}

static const struct {
    const char *name;
    struct tok_slow_files f;
    const char *want; /* the message must contain this */
} MALFORMED[] = {
    {"vocab not JSON", {"tiny", T("{\"a\":"), T(TM), NONE, NONE, NONE},
     "tiny/vocab.json is not a JSON object"},
    {"vocab an array", {"tiny", T("[\"a\"]"), T(TM), NONE, NONE, NONE},
     "tiny/vocab.json is not a JSON object"},
    {"vocab empty", {"tiny", T("{}"), T(TM), NONE, NONE, NONE},
     "tiny/vocab.json is not a JSON object"},
    {"vocab not UTF-8", {"tiny", T("{\"a\xff\":0}"), T(TM), NONE, NONE, NONE},
     "tiny/vocab.json is not valid UTF-8"},
    {"config not UTF-8", {"tiny", T(TV), T(TM), T("{\"eos_token\":\"\xc3\"}"), NONE, NONE},
     "tiny/tokenizer_config.json is not valid UTF-8"},
    {"vocab negative id", {"tiny", T("{\"a\":-1,\"b\":1}"), T(TM), NONE, NONE, NONE},
     "\"a\": ids must be 0..1"},
    {"vocab id twice", {"tiny", T("{\"a\":0,\"b\":0}"), T(TM), NONE, NONE, NONE},
     "\"b\": ids must be 0..1, each used once"},
    {"vocab id gap", {"tiny", T("{\"a\":0,\"b\":5}"), T(TM), NONE, NONE, NONE},
     "\"b\": ids must be 0..1"},
    {"vocab id string", {"tiny", T("{\"a\":\"0\"}"), T(TM), NONE, NONE, NONE},
     "\"a\": ids must be 0..0"},
    {"vocab fractional id", {"tiny", T("{\"a\":0.5}"), T(TM), NONE, NONE, NONE},
     "ids must be"},
    {"vocab key twice", {"tiny", T("{\"a\":0,\"a\":1}"), T(TM), NONE, NONE, NONE},
     "tiny/vocab.json lists \"a\" twice"},
    {"merge of three", {"tiny", T(TV), T("#version: 0.2\na b\na b c\n"), NONE, NONE, NONE},
     "tiny/merges.txt line 3: expected two tokens separated by a space, found 3"},
    {"merge of one", {"tiny", T(TV), T("a\n"), NONE, NONE, NONE},
     "tiny/merges.txt line 1: expected two tokens"},
    {"merge unknown token", {"tiny", T(TV), T("#version: 0.2\n\na c\n"), NONE, NONE, NONE},
     "tiny/merges.txt line 3 (a c) names a token not in vocab.json"},
    {"merge result missing", {"tiny", T(TV), T("b a\n"), NONE, NONE, NONE},
     "tiny/merges.txt line 1 (b a) names a token"},
    {"version not first", {"tiny", T(TV), T("a b\n#version: 0.2\n"), NONE, NONE, NONE},
     "merges.txt line 2"},
    {"merges not UTF-8", {"tiny", T(TV), T("a \xff\n"), NONE, NONE, NONE},
     "tiny/merges.txt is not valid UTF-8"},
    {"config not JSON", {"tiny", T(TV), T(TM), T("{"), NONE, NONE},
     "tiny/tokenizer_config.json is not a JSON object"},
    {"config an array", {"tiny", T(TV), T(TM), T("[]"), NONE, NONE},
     "tiny/tokenizer_config.json is not a JSON object"},
    {"add_prefix_space", {"tiny", T(TV), T(TM), T("{\"add_prefix_space\":true}"), NONE, NONE},
     "add_prefix_space true is not supported"},
    {"decoder not object", {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":[]}"), NONE, NONE},
     "added_tokens_decoder is not an object"},
    {"decoder key not a number",
     {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":{\"x\":{\"content\":\"<x>\"}}}"), NONE, NONE},
     "entry \"x\" needs a decimal id"},
    {"decoder key with sign",
     {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":{\"+4\":{\"content\":\"<x>\"}}}"), NONE, NONE},
     "entry \"+4\" needs a decimal id"},
    {"decoder without content",
     {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":{\"4\":{\"special\":true}}}"), NONE, NONE},
     "entry \"4\" needs a decimal id and a non-empty content"},
    {"decoder id twice",
     {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":{\"4\":{\"content\":\"<x>\"},\"4\":{\"content\":\"<y>\"}}}"), NONE, NONE},
     "lists id 4 twice"},
    {"decoder gap",
     {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":{\"5\":{\"content\":\"<x>\"}}}"), NONE, NONE},
     "tiny/tokenizer_config.json: added token \"<x>\" has id 5, but transformers numbers it 4"},
    {"decoder vocab token elsewhere",
     {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":{\"4\":{\"content\":\"a\"}}}"), NONE, NONE},
     "added token \"a\" has id 4, but transformers numbers it 0"},
    {"decoder same content twice",
     {"tiny", T(TV), T(TM), T("{\"added_tokens_decoder\":{\"4\":{\"content\":\"<x>\"},\"5\":{\"content\":\"<x>\"}}}"), NONE, NONE},
     "added token \"<x>\" has id 5, but transformers numbers it 4"},
    {"legacy added not object", {"tiny", T(TV), T(TM), NONE, T("[1]"), NONE},
     "tiny/added_tokens.json is not a JSON object"},
    {"legacy added id string", {"tiny", T(TV), T(TM), NONE, T("{\"<x>\":\"4\"}"), NONE},
     "\"<x>\" needs a non-negative integer id"},
    {"legacy added gap", {"tiny", T(TV), T(TM), NONE, T("{\"<x>\":9}"), NONE},
     "tiny/added_tokens.json: added token \"<x>\" has id 9, but transformers numbers it 4"},
    {"legacy added id twice", {"tiny", T(TV), T(TM), NONE, T("{\"<x>\":4,\"<y>\":4}"), NONE},
     "tiny/added_tokens.json lists id 4 twice"},
    {"legacy map not object", {"tiny", T(TV), T(TM), NONE, NONE, T("3")},
     "tiny/special_tokens_map.json is not a JSON object"},
};

/* Loads f, encodes text, compares with want[0..n). */
static void check_tiny(const struct tok_slow_files *f, const char *text, const int32_t *want,
                       size_t n, int32_t n_ids)
{
    struct tokenizer *t = NULL;
    struct vlm_err err = {0};
    CHECK_EQ(tok_load_slow(&t, f, &err), 0);
    if (!t) { fprintf(stderr, "  %s\n", err.msg); return; }
    struct i32_vec ids = {0};
    CHECK_EQ(tok_encode(t, text, strlen(text), &ids, NULL), 0);
    CHECK_EQ(ids.n, n);
    for (size_t i = 0; i < ids.n && i < n; i++) CHECK_EQ(ids.v[i], want[i]);
    CHECK_EQ(tok_vocab_size(t), n_ids);
    i32_vec_free(&ids);
    tok_free(t);
}

static bool file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

int main(void)
{
    struct vlm_err err = {0};
    char path[4200];
    tmpdir_make("/tmp/vlm_test_tokenizer_slow_XXXXXX");

    /* ---- tiny folders (expected ids from AutoTokenizer) ---- */
    static const char *text = "ab<x>ba b<y><|endoftext|>";
    TEST("added_tokens_decoder: ids, special from the flag or a special-token setting") {
        struct tok_slow_files f = tiny(TX(TV), TX(TM), TX("{\"eos_token\":\"<y>\",\"added_tokens_decoder\":{"
                                       "\"4\":{\"content\":\"<x>\",\"special\":true},\"5\":{\"content\":\"<y>\"}}}"),
                                       NO, NO);
        int32_t want[] = {2, 4, 1, 0, 3, 1, 5, 6}; /* <|endoftext|> (the unk/pad default) is 6 */
        check_tiny(&f, text, want, ARRAY_LEN(want), 7);
        struct tokenizer *t = NULL;
        CHECK_EQ(tok_load_slow(&t, &f, &err), 0);
        if (t) {
            CHECK(tok_is_special(t, 4) && tok_is_special(t, 5) && tok_is_special(t, 6));
            CHECK(tok_is_added(t, 5) && !tok_is_added(t, 2));
            CHECK_EQ(tok_find(t, "<|endoftext|>"), 6);
        }
        tok_free(t);
    }
    TEST("legacy files: added_tokens.json, special only when special_tokens_map.json names it") {
        struct tok_slow_files f = tiny(TX(TV), TX(TM), NO, TX("{\"<x>\":4,\"<y>\":5}"),
                                       TX("{\"additional_special_tokens\":[\"<x>\"]}"));
        int32_t want[] = {2, 4, 1, 0, 3, 1, 5, 6};
        check_tiny(&f, text, want, ARRAY_LEN(want), 7);
        struct tokenizer *t = NULL;
        CHECK_EQ(tok_load_slow(&t, &f, &err), 0);
        if (t) CHECK(tok_is_special(t, 4) && !tok_is_special(t, 5) && tok_is_special(t, 6));
        tok_free(t);
    }
    TEST("with added_tokens_decoder, added_tokens.json and special_tokens_map.json are not read") {
        struct tok_slow_files f = tiny(TX(TV), TX(TM), TX("{\"unk_token\":null,\"eos_token\":null,\"pad_token\":null,"
                                       "\"added_tokens_decoder\":{\"4\":{\"content\":\"<x>\",\"special\":true}}}"),
                                       TX("{\"<x>\":4,\"<y>\":5}"), TX("{\"additional_special_tokens\":[\"<y>\"]}"));
        int32_t want[] = {2, 4, 1, 0, 3, 1};
        check_tiny(&f, text, want, ARRAY_LEN(want), 5);
    }
    TEST("no config: the class defaults add <|endoftext|>") {
        struct tok_slow_files f = tiny(TX(TV), TX(TM), NO, NO, NO);
        int32_t want[] = {2, 1, 0, 3, 1, 4}; /* "<x>" and "<y>" have no byte tokens here */
        check_tiny(&f, text, want, ARRAY_LEN(want), 5);
    }
    TEST("merges.txt: CRLF, blank lines, tabs and padding as Python reads them") {
        struct tok_slow_files f = tiny(TX(TV), TX("#version: 0.2\r\n\r\n  a\tb  \r\n"),
                                       TX("{\"unk_token\":null,\"eos_token\":null,\"pad_token\":null}"), NO, NO);
        int32_t want[] = {2, 1, 0, 3, 1};
        check_tiny(&f, text, want, ARRAY_LEN(want), 4);
    }
    TEST("an added token that is a vocab token keeps its id and is cut out first") {
        struct tok_slow_files f = tiny(TX(TV), TX(TM), TX("{\"unk_token\":null,\"eos_token\":\"<x>\",\"pad_token\":null,"
                                       "\"added_tokens_decoder\":{\"1\":{\"content\":\"b\",\"special\":true},"
                                       "\"4\":{\"content\":\"<x>\"}}}"), NO, NO);
        int32_t want[] = {0, 1, 4, 1, 0, 3, 1};
        check_tiny(&f, text, want, ARRAY_LEN(want), 5);
    }

    TEST("malformed slow files give a clean error naming the file") {
        for (size_t i = 0; i < ARRAY_LEN(MALFORMED); i++) {
            memset(&err, 0, sizeof err);
            struct tokenizer *t = NULL;
            int rc = tok_load_slow(&t, &MALFORMED[i].f, &err);
            bool ok = rc == VLM_EINVAL && !t && err.code == rc && strstr(err.msg, MALFORMED[i].want);
            if (!ok) fprintf(stderr, "  case \"%s\": rc %d, msg \"%s\"\n", MALFORMED[i].name, rc, err.msg);
            CHECK(ok);
            tok_free(t);
        }
    }

    TEST("a folder with neither file set: the error names the files looked for") {
        const char *dir = sub("empty");
        mkdir(dir, 0755);
        struct tokenizer *t = NULL;
        memset(&err, 0, sizeof err);
        CHECK_EQ(tok_load_dir(&t, dir, &err), VLM_EIO);
        CHECK(t == NULL);
        CHECK(strstr(err.msg, "looked for tokenizer.json, then vocab.json + merges.txt: vocab.json is missing") != NULL);
        snprintf(path, sizeof path, "%s/vocab.json", dir);
        FILE *fp = fopen(path, "w");
        if (fp) { fputs(TV, fp); fclose(fp); }
        CHECK_EQ(tok_load_dir(&t, dir, &err), VLM_EIO);
        CHECK(strstr(err.msg, "merges.txt is missing") != NULL);
        snprintf(path, sizeof path, "%s/merges.txt", dir);
        fp = fopen(path, "w");
        if (fp) { fputs("a c\n", fp); fclose(fp); }
        CHECK_EQ(tok_load_dir(&t, dir, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "/merges.txt line 1 (a c) names a token not in vocab.json") != NULL);
    }

    /* ---- the Qwen3 tokenizer: tokenizer.json and the slow folder ---- */
    struct tokenizer *fast = NULL, *slow = NULL;
    const char *slow_dir = test_path("VLM_MODELS", "slowtok");
    TEST("load the slowtok folder (no tokenizer.json) and the tokenizer.json fixture") {
        snprintf(path, sizeof path, "%s/tokenizer.json", slow_dir);
        CHECK(!file_exists(path));
        snprintf(path, sizeof path, "%s/merges.txt", slow_dir);
        CHECK(file_exists(path));
        CHECK_EQ(tok_load_dir(&slow, slow_dir, &err), 0);
        if (!slow) fprintf(stderr, "  %s\n", err.msg);
        CHECK_EQ(tok_load(&fast, test_path("VLM_FIXTURES", "qwen3-tokenizer/tokenizer.json"), &err), 0);
    }
    if (!slow || !fast) {
        tmpdir_remove();
        return test_report();
    }

    TEST("every Qwen3 id has the same bytes and flags; the Valley tokens follow") {
        CHECK_EQ(tok_vocab_size(slow), 151679);
        int bad = 0;
        for (int32_t id = 0; id < 151669; id++) {
            size_t na = 0, nb = 0;
            const char *a = tok_bytes(fast, id, &na), *b = tok_bytes(slow, id, &nb);
            if (!a || !b || na != nb || memcmp(a, b, na) || tok_is_special(fast, id) != tok_is_special(slow, id) ||
                tok_is_added(fast, id) != tok_is_added(slow, id))
                bad++;
        }
        CHECK_EQ(bad, 0);
        for (int i = 0; i < SLOWTOK_N_VALLEY; i++) {
            CHECK_EQ(tok_find(slow, slowtok_valley_tokens[i]), 151669 + i);
            CHECK(tok_is_special(slow, 151669 + i) && tok_is_added(slow, 151669 + i));
        }
    }

    size_t n_corpus = 0;
    struct golden *corpus = load_jsonl("tests/golden/tokenizer/corpus.jsonl", &n_corpus);
    TEST("corpus: ids identical to AutoTokenizer and to tokenizer.json; decode round trip") {
        CHECK(n_corpus >= 2000);
        int bad = 0, bad_fast = 0, bad_decode = 0;
        for (size_t i = 0; i < n_corpus; i++) {
            struct i32_vec a = {0}, b = {0};
            int rc = tok_encode(slow, corpus[i].text, corpus[i].len, &a, &err);
            tok_encode(fast, corpus[i].text, corpus[i].len, &b, NULL);
            if (rc || !ids_equal(&a, &corpus[i].ids)) {
                if (bad++ < 5) fprintf(stderr, "  line %zu: \"%.60s\"\n", i + 1, corpus[i].text);
            }
            if (!ids_equal(&a, &b)) bad_fast++;
            struct strbuf d = {0};
            tok_decode(slow, a.v, a.n, false, &d);
            if (d.n != corpus[i].nfc_len || (d.n && memcmp(d.s, corpus[i].nfc, d.n))) bad_decode++;
            sb_free(&d);
            i32_vec_free(&a);
            i32_vec_free(&b);
        }
        CHECK_EQ(bad, 0);
        CHECK_EQ(bad_fast, 0);
        CHECK_EQ(bad_decode, 0);
    }
    free_golden(corpus, n_corpus);

    TEST("added tokens: ids, decode and skip_special identical to AutoTokenizer") {
        size_t len;
        char *data = vlm_read_file(test_path("VLM_SOURCE_DIR", "tests/golden/tokenizer/slow_added.jsonl"), &len);
        CHECK(data != NULL);
        int lines = 0, bad = 0;
        for (char *line = data, *end; data && line < data + len; line = end + 1) {
            end = memchr(line, '\n', (size_t)(data + len - line));
            if (!end) end = data + len;
            if (end == line) continue;
            cJSON *j = cJSON_ParseWithLength(line, (size_t)(end - line));
            VLM_ASSERT(j);
            if (lines++ == 0) { /* the header: id count, every added token, the special ones */
                CHECK_EQ(cJSON_GetObjectItemCaseSensitive(j, "n_ids")->valueint, tok_vocab_size(slow));
                CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "corpus_equal")));
                int n_added = 0;
                for (const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "added")->child; a; a = a->next, n_added++)
                    CHECK_EQ(tok_find(slow, a->string), a->valueint);
                CHECK_EQ(n_added, 36);
                const cJSON *x;
                int n_special = 0;
                cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(j, "special")) {
                    CHECK(tok_is_special(slow, x->valueint));
                    n_special++;
                }
                int have = 0;
                for (int32_t id = 0; id < tok_vocab_size(slow); id++) have += tok_is_special(slow, id);
                CHECK_EQ(have, n_special);
                cJSON_Delete(j);
                continue;
            }
            const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "text"));
            struct i32_vec want = {0}, got = {0};
            const cJSON *x;
            cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(j, "ids")) i32_vec_push(&want, x->valueint);
            int rc = tok_encode(slow, s, strlen(s), &got, NULL);
            struct strbuf d = {0}, dk = {0}, st = {0};
            tok_decode(slow, got.v, got.n, false, &d);
            tok_decode(slow, got.v, got.n, true, &dk);
            stream_decode(slow, got.v, got.n, true, &st);
            bool ok = !rc && ids_equal(&got, &want) &&
                      !strcmp(d.s, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "decoded"))) &&
                      !strcmp(dk.s, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "decoded_skip"))) &&
                      !strcmp(st.s, dk.s);
            if (!ok && bad++ < 5) fprintf(stderr, "  \"%s\": %zu ids, decode \"%s\"\n", s, got.n, d.s);
            sb_free(&d);
            sb_free(&dk);
            sb_free(&st);
            i32_vec_free(&want);
            i32_vec_free(&got);
            cJSON_Delete(j);
        }
        CHECK(lines > 400);
        CHECK_EQ(bad, 0);
        free(data);
    }

    TEST("stop set: <|im_end|> and <|endoftext|> whatever the config lists") {
        int32_t out[8];
        int32_t base_only[] = {151643};
        CHECK_EQ(tok_stop_ids(slow, base_only, 1, out, 8), 2);
        CHECK_EQ(out[0], 151645);
        CHECK_EQ(out[1], 151643);
        int32_t both[] = {151645, 151643};
        CHECK_EQ(tok_stop_ids(slow, both, 2, out, 8), 2);
        CHECK_EQ(tok_stop_ids(slow, NULL, 0, out, 8), 2);
        int32_t other[] = {7, 151643, 7};
        CHECK_EQ(tok_stop_ids(slow, other, 3, out, 8), 3);
        CHECK_EQ(out[2], 7);
        CHECK_EQ(tok_stop_ids(slow, other, 3, out, 1), 1); /* capped: the tokenizer's come first */
        CHECK_EQ(out[0], 151645);
        struct tokenizer *t = NULL; /* a tokenizer without them: only the config's ids */
        struct tok_slow_files f = tiny(TX(TV), TX(TM), TX("{\"unk_token\":null,\"eos_token\":null,\"pad_token\":null}"), NO, NO);
        CHECK_EQ(tok_load_slow(&t, &f, &err), 0);
        if (t) {
            int32_t two[] = {2};
            CHECK_EQ(tok_stop_ids(t, two, 1, out, 8), 1);
            CHECK_EQ(out[0], 2);
        }
        tok_free(t);
    }

    TEST("slowtok_write without Valley tokens: the slow files give the tokenizer.json ids") {
        char dir[512];
        snprintf(dir, sizeof dir, "%s", sub("write"));
        mkdir(dir, 0755);
        CHECK_EQ(slowtok_write(test_path("VLM_FIXTURES", "qwen3-tokenizer/tokenizer.json"), dir, false, &err), 0);
        struct tokenizer *t = NULL;
        CHECK_EQ(tok_load_dir(&t, dir, &err), 0);
        if (t) {
            CHECK_EQ(tok_vocab_size(t), 151669);
            static const char *s = "<|im_start|>user\nHéllo wörld 123 <think>\n</think><|im_end|>";
            struct i32_vec a = {0}, b = {0};
            CHECK_EQ(tok_encode(t, s, strlen(s), &a, NULL), 0);
            CHECK_EQ(tok_encode(fast, s, strlen(s), &b, NULL), 0);
            CHECK(ids_equal(&a, &b));
            i32_vec_free(&a);
            i32_vec_free(&b);
        }
        tok_free(t);
        /* a tokenizer the slow files cannot express is refused */
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        FILE *fp = fopen(path, "w");
        if (fp) {
            fputs("{\"model\":{\"type\":\"BPE\",\"vocab\":" TV ",\"merges\":[\"a b\"]},\"normalizer\":null,"
                  "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}", fp);
            fclose(fp);
        }
        memset(&err, 0, sizeof err);
        CHECK_EQ(slowtok_write(path, dir, false, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "the slow files imply NFC and the Qwen2 split regex") != NULL);
    }

    TEST("the synthesized tokenizer: slow and tokenizer.json forms, with Valley tokens, agree") {
        struct testmodel_params p;
        testmodel_defaults(&p);
        p.hidden = 32, p.layers = 1, p.heads = 2, p.kv_heads = 1, p.head_dim = 16, p.ffn = 32;
        p.vision = false;
        p.valley_tokens = true;
        char a[512], b[512];
        snprintf(a, sizeof a, "%s", sub("synth_json"));
        snprintf(b, sizeof b, "%s", sub("synth_slow"));
        CHECK_EQ(testmodel_write(a, &p, &err), 0);
        p.slow_tokenizer = true;
        CHECK_EQ(testmodel_write(b, &p, &err), 0);
        CHECK(testmodel_up_to_date(b, &p));
        snprintf(path, sizeof path, "%s/tokenizer.json", b);
        CHECK(!file_exists(path));
        struct tokenizer *ta = NULL, *tb = NULL;
        CHECK_EQ(tok_load_dir(&ta, a, &err), 0);
        CHECK_EQ(tok_load_dir(&tb, b, &err), 0);
        if (ta && tb) {
            CHECK_EQ(tok_vocab_size(ta), tok_vocab_size(tb));
            int32_t first = tok_find(ta, "<|endoftext|>") + 26; /* after the 26 Qwen3 tokens */
            for (int i = 0; i < SLOWTOK_N_VALLEY; i++) {
                CHECK_EQ(tok_find(ta, slowtok_valley_tokens[i]), first + i);
                CHECK_EQ(tok_find(tb, slowtok_valley_tokens[i]), first + i);
                CHECK(tok_is_special(ta, first + i) && tok_is_special(tb, first + i));
            }
            CHECK_EQ(tok_vocab_size(ta), first + SLOWTOK_N_VALLEY);
            static const char *s = "The valley <im_start><image><im_end> answers <|im_end|>\n caf\xc3\xa9 42";
            struct i32_vec x = {0}, y = {0};
            CHECK_EQ(tok_encode(ta, s, strlen(s), &x, NULL), 0);
            CHECK_EQ(tok_encode(tb, s, strlen(s), &y, NULL), 0);
            CHECK(ids_equal(&x, &y));
            i32_vec_free(&x);
            i32_vec_free(&y);
        }
        tok_free(ta);
        tok_free(tb);
    }

    tok_free(slow);
    tok_free(fast);
    tmpdir_remove();
    return test_report();
}
