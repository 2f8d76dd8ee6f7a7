/*
 * test_grammar: the byte-level pushdown automaton (engine/grammar.h) and the compilers that
 * feed it (server/structured.h): regular expressions, JSON Schema pieces, choices, tool
 * calls; token masks against a brute-force reference on a synthetic vocabulary and on the
 * Qwen3 tokenizer's.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "engine/base.h"
#include "engine/grammar.h"
#include "engine/sampler.h"
#include "server/structured.h"
#include "server/tokenizer.h"
#include "test.h"

static bool full_match(struct grammar *g, const char *s)
{
    struct gram_matcher *m = gm_new(g);
    bool ok = gm_accept_bytes(m, (const uint8_t *)s, strlen(s)) && gm_can_end(m);
    gm_free(m);
    return ok;
}

static struct grammar *re(const char *r)
{
    char err[200];
    struct grammar *g = st_compile_regex(r, strlen(r), err, sizeof err);
    if (!g) fprintf(stderr, "  regex %s: %s\n", r, err);
    return g;
}

static struct grammar *schema(const char *text, bool any_ws, char *err, size_t errlen)
{
    cJSON *j = cJSON_Parse(text);
    if (!j) return NULL;
    struct st_options o = {.any_whitespace = any_ws};
    struct grammar *g = st_compile_schema(j, &o, err, errlen);
    cJSON_Delete(j);
    return g;
}

/* The mask after prefix, checked token by token against feeding each token to a fresh
 * matcher. Returns the number of disagreements. */
static int mask_vs_brute(struct grammar *g, const struct gram_vocab *v, const char *prefix,
                         int32_t *n_allowed)
{
    struct gram_matcher *m = gm_new(g);
    if (!gm_accept_bytes(m, (const uint8_t *)prefix, strlen(prefix))) {
        gm_free(m);
        return -1;
    }
    int32_t W = gv_mask_words(v), V = gv_size(v);
    uint32_t *bits = calloc((size_t)W, sizeof *bits);
    *n_allowed = gm_fill_mask(m, v, bits);
    int bad = 0;
    for (int32_t t = 0; t < V; t++) {
        struct gram_matcher *r = gm_new(g);
        gm_accept_bytes(r, (const uint8_t *)prefix, strlen(prefix));
        bool want = gm_accept_token(r, v, t);
        bool got = bits[t >> 5] >> (t & 31) & 1;
        if (want != got && bad++ < 5)
            fprintf(stderr, "  prefix '%s' token %d: mask %d, brute %d\n", prefix, (int)t, got,
                    want);
        gm_free(r);
    }
    /* the state is unchanged by the mask: the next token still goes through */
    free(bits);
    gm_free(m);
    return bad;
}

int main(void)
{
    TEST("regex: literals, classes, repetition, alternation") {
        struct grammar *g = re("ab[c-e]{2,3}(x|yz)*\\d?");
        CHECK(g);
        if (g) {
            CHECK(full_match(g, "abcc"));
            CHECK(full_match(g, "abcdexyzx7"));
            CHECK(!full_match(g, "abc"));
            CHECK(!full_match(g, "abcdeex"));
            CHECK(!full_match(g, "abccx77"));
        }
        grammar_release(g);
        g = re("[^a-c]+\\.\\w+");
        CHECK(g && full_match(g, "zé.x_1") && !full_match(g, "a.x") && !full_match(g, "z.x-"));
        grammar_release(g);
        g = re("(?:[A-Z][a-z]*)( [A-Z][a-z]*){0,2}");
        CHECK(g && full_match(g, "Ab Cd E") && !full_match(g, "Ab Cd Ef Gh") &&
              !full_match(g, "ab"));
        grammar_release(g);
    }

    TEST("regex: unsupported constructs are errors naming them") {
        char err[200];
        const char *bad[] = {"(?=a)", "a\\b", "(a)\\1", "a{2,1}", "[b-a]", "(a", "a)", "*a", "a++"};
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            struct grammar *g = st_compile_regex(bad[i], strlen(bad[i]), err, sizeof err);
            CHECK(!g);
            CHECK(err[0]);
            grammar_release(g);
        }
    }

    TEST("schema: an object with required and optional members, whitespace") {
        char err[200];
        struct grammar *g =
            schema("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},"
                   "\"b\":{\"type\":\"string\",\"maxLength\":3},\"c\":{\"type\":"
                   "\"boolean\"}},\"required\":[\"b\"]}",
                   true, err, sizeof err);
        CHECK(g);
        if (g) {
            CHECK(full_match(g, "{\"b\":\"xyz\"}"));
            CHECK(full_match(g, "{ \"a\" : -12 ,\n\t\"b\":\"\" , \"c\":true }"));
            CHECK(!full_match(g, "{\"a\":1}"));           /* b is required */
            CHECK(!full_match(g, "{\"b\":\"wxyz\"}"));    /* maxLength */
            CHECK(!full_match(g, "{\"b\":\"x\",}"));      /* trailing comma */
            CHECK(!full_match(g, "{\"b\":\"x\",\"d\":1}")); /* no additional members */
            CHECK(!full_match(g, "{\"a\":01,\"b\":\"x\"}"));
        }
        grammar_release(g);
        g = schema("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}}}", false,
                   err, sizeof err);
        CHECK(g && full_match(g, "{\"a\":5}") && !full_match(g, "{ \"a\":5}") &&
              full_match(g, "{}"));
        grammar_release(g);
    }

    TEST("schema: integer bounds are exact") {
        char err[200];
        struct grammar *g =
            schema("{\"type\":\"integer\",\"minimum\":-15,\"maximum\":107}", true, err, sizeof err);
        CHECK(g);
        for (int x = -200; x <= 300 && g; x++) {
            char s[16];
            snprintf(s, sizeof s, "%d", x);
            if (full_match(g, s) != (x >= -15 && x <= 107)) {
                CHECK(false);
                fprintf(stderr, "  %d\n", x);
            }
        }
        grammar_release(g);
        g = schema("{\"type\":\"integer\",\"exclusiveMinimum\":9}", true, err, sizeof err);
        CHECK(g && !full_match(g, "9") && full_match(g, "10") && full_match(g, "123456789012") &&
              !full_match(g, "-1"));
        grammar_release(g);
    }

    TEST("schema: recursion through $ref") {
        char err[200];
        struct grammar *g =
            schema("{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"v\":{\"type\":"
                   "\"integer\"},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":"
                   "\"#/$defs/n\"}}},\"required\":[\"v\"]}},\"$ref\":\"#/$defs/n\"}",
                   false, err, sizeof err);
        CHECK(g);
        if (g) {
            CHECK(full_match(
                g, "{\"v\":1,\"kids\":[{\"v\":2},{\"v\":3,\"kids\":[{\"v\":4,\"kids\":[]}]}]}"));
            CHECK(!full_match(g, "{\"v\":1,\"kids\":[{\"kids\":[]}]}"));
        }
        grammar_release(g);
    }

    TEST("schema: errors name the keyword and the place") {
        char err[200];
        struct grammar *g =
            schema("{\"type\":\"object\",\"properties\":{\"x\":{\"allOf\":[{},{}]}}}", true, err,
                   sizeof err);
        CHECK(!g);
        CHECK_STR(err, "unsupported JSON Schema keyword 'allOf' at '#/properties/x'");
        g = schema("{\"$ref\":\"#/$defs/missing\"}", true, err, sizeof err);
        CHECK(!g);
        CHECK_STR(err, "'$ref' '#/$defs/missing' does not resolve at '#'");
        g = schema("{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/"
                   "a\"},{\"type\":\"null\"}]}},\"$ref\":\"#/$defs/a\"}",
                   true, err, sizeof err);
        CHECK(!g); /* left recursion */
        grammar_release(g);
    }

    TEST("choice") {
        char err[100];
        const char *s[] = {"yes", "no", "yesterday"};
        size_t l[] = {3, 2, 9};
        struct grammar *g = st_compile_choice(s, l, 3, err, sizeof err);
        CHECK(g && full_match(g, "yes") && full_match(g, "yesterday") && !full_match(g, "ye"));
        struct gram_matcher *m = gm_new(g);
        CHECK(gm_accept_bytes(m, (const uint8_t *)"no", 2) && gm_done(m));
        gm_free(m);
        m = gm_new(g);
        CHECK(gm_accept_bytes(m, (const uint8_t *)"yes", 3) && gm_can_end(m) && !gm_done(m));
        gm_free(m);
        grammar_release(g);
    }

    TEST("sampling under a mask: only allowed tokens, logprobs of the masked distribution") {
        enum { V = 1000 };
        float row[V];
        uint32_t mask[(V + 31) / 32];
        struct sampler_ws ws;
        sampler_ws_init(&ws, V);
        uint64_t x = 12345;
        for (int trial = 0; trial < 20; trial++) {
            memset(mask, 0, sizeof mask);
            for (int t = 0; t < V; t++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                row[t] = (float)((double)(x >> 11) / 9007199254740992.0 * 8.0 - 4.0);
                if ((x >> 20) % 17 == 0) mask[t >> 5] |= 1u << (t & 31);
            }
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t < V; t++)
                if (mask[t >> 5] >> (t & 31) & 1) mx = row[t] > mx ? row[t] : mx;
            for (int t = 0; t < V; t++)
                if (mask[t >> 5] >> (t & 31) & 1) sum += exp(row[t] - mx);
            double lse = mx + log(sum); /* the reference: log-softmax over the allowed ids */
            float ref[V];
            memcpy(ref, row, sizeof row);
            struct sampling_params sp = sampler_params_greedy();
            sp.temperature = 1.0f;
            sp.top_p = trial % 2 ? 0.9f : 1.0f;
            sp.top_k = trial % 3 ? 0 : 5;
            sp.seed = (uint64_t)trial;
            sp.logprobs = 5;
            sampler_apply_mask(row, mask, V);
            struct sampler_result r;
            int32_t tok = sampler_sample(&ws, row, &sp, NULL, 0, NULL, 0, &r);
            CHECK(mask[tok >> 5] >> (tok & 31) & 1);
            CHECK_NEAR(r.logprob, ref[tok] - lse, 1e-4);
            double psum = 0;
            for (int t = 0; t < V; t++)
                if (mask[t >> 5] >> (t & 31) & 1) psum += exp(ref[t] - lse);
            CHECK_NEAR(psum, 1.0, 1e-9);
            for (int32_t j = 0; j < r.n_top; j++) {
                CHECK(mask[r.top_ids[j] >> 5] >> (r.top_ids[j] & 31) & 1);
                CHECK_NEAR(r.top_lp[j], ref[r.top_ids[j]] - lse, 1e-4);
            }
        }
        sampler_ws_destroy(&ws);
    }

    /* a synthetic vocabulary: every byte, and JSON-ish pieces */
    const char *pieces[] = {"{", "}", "{\"", "\":", "\",", "\"}", "\"", " \"", "a", "ab", "abc",
                            "true", "tr", "ue", "false", "null", ",", ", ", ": ", "\n", "  ",
                            "12", "-", "0", "1.5", "e+", "[", "]", "[]", "{}", "\"a\"", "\\",
                            "\\n", "\\u00", "é", "\xc3", "\xa9", "x\"}", "\"]", "},{", "\":\"",
                            "name", "\"name\"", "b\",\"", "<tool_call>", "</tool_call>"};
    int32_t np = (int32_t)(sizeof pieces / sizeof *pieces);
    int32_t V = 256 + np;
    const char **bytes = calloc((size_t)V, sizeof *bytes);
    size_t *lens = calloc((size_t)V, sizeof *lens);
    char single[256];
    for (int i = 0; i < 256; i++) {
        single[i] = (char)i;
        bytes[i] = &single[i];
        lens[i] = 1;
    }
    for (int32_t i = 0; i < np; i++) {
        bytes[256 + i] = pieces[i];
        lens[256 + i] = strlen(pieces[i]);
    }
    struct gram_vocab *sv = gv_new(V, bytes, lens);

    TEST("masks equal the brute force on a synthetic vocabulary") {
        char err[200];
        struct grammar *g =
            schema("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},"
                   "\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"a\",\"b\"]},"
                   "\"maxItems\":2},\"n\":{\"anyOf\":[{\"type\":\"number\"},{\"type\":"
                   "\"null\"}]},\"kid\":{\"$ref\":\"#\"}},\"required\":[\"name\"]}",
                   true, err, sizeof err);
        CHECK(g);
        const char *prefixes[] = {"", "{", "{ ", "{\"", "{\"name\": \"ab", "{\"name\":\"x\\",
                                  "{\"name\":\"\",\"tags\":[\"a\"", "{\"name\":\"\",\"n\":1",
                                  "{\"name\":\"\",\"kid\":{\"name\":\"x\"",
                                  "{\"name\":\"\",\"kid\":{\"name\":\"x\"}", "{\"name\":\"\xc3"};
        for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes && g; i++) {
            int32_t n;
            int bad = mask_vs_brute(g, sv, prefixes[i], &n);
            CHECK_EQ(bad, 0);
            CHECK(n > 0);
        }
        grammar_release(g);
        g = re("(ab|a)+c?\"x");
        int32_t n;
        CHECK(g && mask_vs_brute(g, sv, "a", &n) == 0 && mask_vs_brute(g, sv, "aba", &n) == 0);
        grammar_release(g);
    }

    TEST("tool calls: the named function's form, then done") {
        cJSON *root =
            cJSON_Parse("{\"messages\":[],\"tools\":[{\"type\":\"function\",\"function\":"
                        "{\"name\":\"f\",\"parameters\":{\"type\":\"object\",\"properties\":"
                        "{\"x\":{\"type\":\"integer\"}},\"required\":[\"x\"]}}},{\"type\":"
                        "\"function\",\"function\":{\"name\":\"g\"}}],\"tool_choice\":"
                        "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}");
        struct st_request q;
        struct vlm_err e = {0};
        CHECK_EQ(st_parse_request(root, true, &q, &e), 0);
        CHECK(q.g && q.tool_calls);
        if (q.g) {
            const char *ok =
                "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 3}}\n</tool_call>";
            struct gram_matcher *m = gm_new(q.g);
            CHECK(gm_accept_bytes(m, (const uint8_t *)ok, strlen(ok)) && gm_done(m));
            gm_free(m);
            CHECK(!full_match(q.g,
                              "<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>"));
        }
        st_request_destroy(&q);
        cJSON_Delete(root);
    }

    /* the real vocabulary, when the fixture is there */
    struct tokenizer *tok = NULL;
    if (tok_load(&tok, test_path("VLM_FIXTURES", "qwen3-tokenizer/tokenizer.json"), NULL) == 0) {
        TEST("masks equal the brute force on the Qwen3 vocabulary") {
            const struct gram_vocab *v = st_vocab(tok, 151936);
            CHECK(v && gv_size(v) == 151936);
            char err[200];
            struct grammar *g =
                schema("{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\","
                       "\"maxLength\":5},\"days\":{\"type\":\"integer\",\"minimum\":1,"
                       "\"maximum\":14},\"unit\":{\"enum\":[\"celsius\",\"fahrenheit\"]}},"
                       "\"required\":[\"city\",\"unit\"]}",
                       true, err, sizeof err);
            const char *prefixes[] = {"", "{\"city\": \"Par", "{\"city\":\"Paris\", \"days\": 1"};
            for (size_t i = 0; i < 3 && g; i++) {
                int32_t n;
                CHECK_EQ(mask_vs_brute(g, v, prefixes[i], &n), 0);
                CHECK(n > 0);
            }
            grammar_release(g);
        }
        TEST("a long counted string: positions far from the end share masks, still exact") {
            const struct gram_vocab *v = st_vocab(tok, 151936);
            char err[200];
            struct grammar *g = schema("{\"type\":\"string\",\"minLength\":150,\"maxLength\":"
                                       "400}", true, err, sizeof err);
            CHECK(g);
            static char prefix[512];
            int ks[] = {10, 200}; /* each shares its entry with other positions */
            for (size_t i = 0; i < sizeof ks / sizeof *ks && g; i++) {
                prefix[0] = '"';
                memset(prefix + 1, 'a', (size_t)ks[i]);
                prefix[ks[i] + 1] = 0;
                int32_t n;
                CHECK_EQ(mask_vs_brute(g, v, prefix, &n), 0);
                CHECK(n > 0);
            }
            grammar_release(g);
        }
        tok_free(tok);
    }
    gv_free(sv);
    free(bytes);
    free(lens);
    return test_report();
}
