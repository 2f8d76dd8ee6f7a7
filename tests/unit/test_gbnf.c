/*
 * test_gbnf: GBNF grammars (engine/gbnf.c through st_compile_grammar): accept / reject tables
 * for the notation's pieces and a few whole grammars, code point classes against direct
 * membership over many code points (the UTF-8 range splitting), the error messages, and
 * token masks against a brute-force reference on a synthetic vocabulary.
 */
#include <string.h>

#include "engine/base.h"
#include "engine/grammar.h"
#include "server/structured.h"
#include "test.h"

static struct grammar *gbnf(const char *text)
{
    char err[300];
    struct grammar *g = st_compile_grammar(text, strlen(text), err, sizeof err);
    if (!g) fprintf(stderr, "  grammar: %s\n", err);
    return g;
}

static bool full_match_n(struct grammar *g, const char *s, size_t n)
{
    struct gram_matcher *m = gm_new(g);
    bool ok = gm_accept_bytes(m, (const uint8_t *)s, n) && gm_can_end(m);
    gm_free(m);
    return ok;
}

static bool full_match(struct grammar *g, const char *s) { return full_match_n(g, s, strlen(s)); }

struct row {
    const char *grammar;
    const char *accept[8];
    const char *reject[8];
};

static const struct row ROWS[] = {
    {"root ::= \"yes\" | \"no\"", {"yes", "no"}, {"", "ye", "yesno", "No"}},
    {"root ::= \"a\" b \"c\"\nb ::= \"b\"*", {"ac", "abc", "abbbc"}, {"a", "abd", "bc"}},
    {"root ::= (\"x\" | \"y\")+ \"!\"?", {"x", "yxy", "xx!"}, {"", "!", "x!!"}},
    {"root ::= [a-c]{2}", {"ab", "cc"}, {"a", "abc", "ad"}},
    {"root ::= [a-c]{2,}", {"ab", "abcabc"}, {"a", "abd"}},
    {"root ::= [0-9]{1,3}", {"1", "123"}, {"", "1234", "12a"}},
    {"root ::= \"z\"{,2}", {"", "z", "zz"}, {"zzz"}},
    {"root ::= \"q\" { 2 , 3 }", {"qq", "qqq"}, {"q", "qqqq"}},
    {"root ::= [^\"\\\\\\n]*", {"", "abc", "é ü"}, {"\"", "a\\b", "a\nb"}},
    {"root ::= [\\x41-\\x43\\u00e9]+", {"ABC", "é"}, {"D", "e"}},
    {"root ::= \"\\U0001F600\" \"\\t\" \"\\\"\" \"\\\\\"", {"\xF0\x9F\x98\x80\t\"\\"}, {"x"}},
    {"root ::= .", {"a", "\n", "é", "\xF0\x9F\x98\x80", "\xE4\xB8\xAD"},
     {"", "ab", "\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80"}},
    {"root ::= [α-ω]+", {"αβγ", "ω"}, {"a", "Α"}},
    {"# a comment\nroot ::= item-list # trailing\nitem-list ::= item (\",\" item)*\n"
     "item ::= [a-z]+",
     {"a", "ab,c,def"}, {"", "a,", ",a", "a,,b"}},
    {"root ::=\n  greeting\n  | farewell\ngreeting ::= \"hi\"\nfarewell ::= \"bye\"",
     {"hi", "bye"}, {"hibye"}},
    {"root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= factor ((\"*\" | \"/\") "
     "factor)*\nfactor ::= [0-9]+ | \"(\" expr \")\"",
     {"1", "1+2*3", "(1+2)*3", "((4))", "2/(3-1)"}, {"", "1+", "(1", "1)", "()", "1++2"}},
    {"root ::= \"[\" (v (\",\" v)*)? \"]\"\nv ::= [0-9] | root", {"[]", "[1,[2,[]],3]"},
     {"[", "[1,]", "[[]"}},
    {"root ::= a_b-c\na_b-c ::= \"\" | \"k\"", {"", "k"}, {"kk"}},
    {"root ::= \"a\" ( | \"b\")", {"a", "ab"}, {"b"}},
    /* classes: the first ']' closes; '-' at the edges is literal */
    {"root ::= [-a]+ [b-]", {"-ab", "a-"}, {"b", "a"}},
};

/* a JSON grammar written the way llama.cpp's examples write one */
static const char *JSON_GBNF =
    "root   ::= object\n"
    "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::=\n"
    "  \"{\" ws (\n"
    "            string \":\" ws value\n"
    "    (\",\" ws string \":\" ws value)*\n"
    "  )? \"}\" ws\n"
    "array  ::=\n"
    "  \"[\" ws (\n"
    "            value\n"
    "    (\",\" ws value)*\n"
    "  )? \"]\" ws\n"
    "string ::=\n"
    "  \"\\\"\" (\n"
    "    [^\"\\\\\\x7F\\x00-\\x1F] |\n"
    "    \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "  )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] "
    "[1-9]{0,15})? ws\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";

struct bad {
    const char *grammar;
    const char *msg; /* the message contains this */
};

static const struct bad BAD[] = {
    {"root ::= foo", "undefined rule 'foo' (used at line 1, column 10)"},
    {"root ::= \"a\"\nx ::= \"b\" missing", "undefined rule 'missing' (used at line 2, column 11)"},
    {"start ::= \"a\"", "the grammar has no 'root' rule"},
    {"", "the grammar is empty"},
    {"  # only a comment\n", "the grammar is empty"},
    {"root ::= \"a\"\nroot ::= \"b\"", "rule 'root' is defined twice (lines 1 and 2)"},
    {"root ::= root \"a\" | \"b\"", "left recursion (root -> root) is not supported"},
    {"root ::= e\ne ::= t \"+\" e | t\nt ::= \"x\"? e", "left recursion (e -> t -> e) is not supported"},
    {"root ::= x\nx ::= \"\"* y \"a\"\ny ::= x | \"b\"", "left recursion (x -> y -> x)"},
    {"root ::= \"abc", "syntax error at line 1, column 10: unterminated string"},
    {"root ::= \"a\nb\"", "syntax error at line 1, column 12: a newline inside a string"},
    {"root ::= [abc", "syntax error at line 1, column 10: unterminated character class"},
    {"root ::= []", "syntax error at line 1, column 10: empty character class"},
    {"root ::= [z-a]", "syntax error at line 1, column 13: bad character range"},
    {"root ::= \"\\q\"", "syntax error at line 1, column 12: unknown escape '\\q'"},
    {"root ::= \"\\xZZ\"", "syntax error at line 1, column 13: expected 2 hexadecimal digits"},
    {"root ::= \"\\uD800\"", "the escape names no Unicode character (U+D800)"},
    {"root ::= (\"a\" | \"b\"", "syntax error at line 1, column 10: unbalanced '('"},
    {"root ::= \"a\" )", "syntax error at line 1, column 14: unbalanced ')'"},
    {"root ::= \"a\"{3,1}", "bad repetition {3,1}: the maximum is below the minimum"},
    {"root ::= \"a\"{2000}", "repetition counts above 1000 are not supported"},
    {"root ::= \"a\"{x}", "bad repetition: expected {m}, {m,}, {m,n} or {,n}"},
    {"root ::= * \"a\"", "syntax error at line 1, column 10: '*' has nothing to repeat"},
    {"root = \"a\"", "syntax error at line 1, column 6: expected '::=' after the rule name 'root'"},
    {"root ::= 'a'", "strings are written in double quotes"},
    {"\"a\" ::= root", "syntax error at line 1, column 1: expected a rule ('name ::= ...')"},
    {"root ::= \"a\"\n\n  ::= \"b\"", "syntax error at line 3, column 3: '::=' without a rule name"},
    {"root ::= \"a\"??????????", "too many repetition operators in a row"},
    {"root ::= \"\xff\"", "the grammar is not valid UTF-8"},
};

static bool in_ranges(uint32_t c, const uint32_t *r, int n)
{
    for (int k = 0; k < n; k++)
        if (c >= r[2 * k] && c <= r[2 * k + 1]) return true;
    return false;
}

static int enc(uint32_t c, char *u)
{
    if (c < 0x80) return u[0] = (char)c, 1;
    if (c < 0x800) return u[0] = (char)(0xC0 | c >> 6), u[1] = (char)(0x80 | (c & 63)), 2;
    if (c < 0x10000)
        return u[0] = (char)(0xE0 | c >> 12), u[1] = (char)(0x80 | (c >> 6 & 63)),
               u[2] = (char)(0x80 | (c & 63)), 3;
    u[0] = (char)(0xF0 | c >> 18), u[1] = (char)(0x80 | (c >> 12 & 63));
    u[2] = (char)(0x80 | (c >> 6 & 63)), u[3] = (char)(0x80 | (c & 63));
    return 4;
}

/* code points to probe: every one below 0x900, the neighbourhoods of every range bound and
 * of the encoding-length and surrogate boundaries, and a stride over the rest */
static int probe_points(const uint32_t *r, int n, uint32_t *out)
{
    int k = 0;
    for (uint32_t c = 0; c < 0x900; c++) out[k++] = c;
    static const uint32_t edges[] = {0x7FF, 0x800, 0xFFF, 0x1000, 0xD7FF, 0xE000, 0xFFFF,
                                     0x10000, 0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFF};
    for (size_t i = 0; i < ARRAY_LEN(edges); i++)
        for (int d = -2; d <= 2; d++) out[k++] = edges[i] + (uint32_t)d;
    for (int i = 0; i < 2 * n; i++)
        for (int d = -2; d <= 2; d++) out[k++] = r[i] + (uint32_t)d;
    for (uint32_t c = 0x900; c <= 0x10FFFF; c += 997) out[k++] = c;
    return k;
}

/* A tiny tokenizer-like vocabulary: every byte, and pieces that cross grammar boundaries. */
static struct gram_vocab *small_vocab(void)
{
    static const char *pieces[] = {"{\"", "\":", "\",", "\"}", "ab", "true", "null", "12", "-1",
                                   "[]", "{}", "\\n", "\\u00", "\xc3\xa9", "a\n", "hi", "by",
                                   "bye", "1+", "(1", "2)", " ", "\n ", "αβ", "\xce"};
    enum { NP = ARRAY_LEN(pieces) };
    static char single[256];
    const char *bytes[256 + NP];
    size_t lens[256 + NP];
    for (int i = 0; i < 256; i++) {
        single[i] = (char)i;
        bytes[i] = &single[i];
        lens[i] = 1;
    }
    for (int i = 0; i < NP; i++) bytes[256 + i] = pieces[i], lens[256 + i] = strlen(pieces[i]);
    return gv_new(256 + NP, bytes, lens);
}

static int mask_vs_brute(struct grammar *g, const struct gram_vocab *v, const char *prefix)
{
    struct gram_matcher *m = gm_new(g);
    if (!gm_accept_bytes(m, (const uint8_t *)prefix, strlen(prefix))) {
        gm_free(m);
        return -1;
    }
    uint32_t bits[64] = {0};
    int bad = gm_fill_mask(m, v, bits) < 0;
    for (int32_t t = 0; t < gv_size(v); t++) {
        struct gram_matcher *r = gm_new(g);
        gm_accept_bytes(r, (const uint8_t *)prefix, strlen(prefix));
        bool want = gm_accept_token(r, v, t), got = bits[t >> 5] >> (t & 31) & 1;
        if (want != got && bad++ < 5)
            fprintf(stderr, "  prefix '%s' token %d: mask %d, brute %d\n", prefix, (int)t, got,
                    want);
        gm_free(r);
    }
    gm_free(m);
    return bad;
}

int main(void)
{
    TEST("gbnf: accept / reject tables") {
        for (size_t i = 0; i < ARRAY_LEN(ROWS); i++) {
            struct grammar *g = gbnf(ROWS[i].grammar);
            CHECK(g);
            if (!g) continue;
            for (int k = 0; k < 8 && ROWS[i].accept[k]; k++) {
                bool ok = full_match(g, ROWS[i].accept[k]);
                if (!ok) fprintf(stderr, "  row %zu should accept '%s'\n", i, ROWS[i].accept[k]);
                CHECK(ok);
            }
            for (int k = 0; k < 8 && ROWS[i].reject[k]; k++) {
                bool ok = !full_match(g, ROWS[i].reject[k]);
                if (!ok) fprintf(stderr, "  row %zu should reject '%s'\n", i, ROWS[i].reject[k]);
                CHECK(ok);
            }
            grammar_release(g);
        }
    }

    TEST("gbnf: a JSON grammar in llama.cpp's style") {
        struct grammar *g = gbnf(JSON_GBNF);
        CHECK(g);
        if (g) {
            static const char *yes[] = {"{}", "{\"a\": 1}", "{\"a\":[1, -2.5e3, true, null]}",
                                        "{\"k\": {\"n\": \"x\\n\\u00e9\"}}\n  "};
            static const char *no[] = {"[]", "{\"a\" 1}", "{\"a\": 01x}", "{\"a\": \"\x01\"}",
                                       "{\"a\": tru}", "{\"a\": [1,]}"};
            for (size_t k = 0; k < ARRAY_LEN(yes); k++) CHECK(full_match(g, yes[k]));
            for (size_t k = 0; k < ARRAY_LEN(no); k++) CHECK(!full_match(g, no[k]));
            /* the output is complete once the object closes and no whitespace can follow */
            struct gram_matcher *m = gm_new(g);
            CHECK(gm_accept_bytes(m, (const uint8_t *)"{\"a\":1}", 7));
            CHECK(gm_can_end(m) && !gm_done(m));
            gm_free(m);
        }
        grammar_release(g);
        g = gbnf("root ::= \"ok\"");
        struct gram_matcher *m = gm_new(g);
        CHECK(gm_accept_bytes(m, (const uint8_t *)"ok", 2) && gm_done(m));
        gm_free(m);
        grammar_release(g);
    }

    TEST("gbnf: classes over code points agree with direct membership") {
        static const struct {
            const char *cls;
            uint32_t r[8];
            int n;
            bool neg;
        } C[] = {
            {"[a-z\\u00e0-\\u00ff]", {'a', 'z', 0xE0, 0xFF}, 2, false},
            {"[\\u0100-\\uFFFF]", {0x100, 0xD7FF, 0xE000, 0xFFFF}, 2, false},
            {"[\\u07FF-\\U00010400]", {0x7FF, 0xD7FF, 0xE000, 0x10400}, 2, false},
            {"[\\U0001F000-\\U0010FFFF\\x00-\\x10]", {0x1F000, 0x10FFFF, 0, 0x10}, 2, false},
            {"[^\"\\\\\\x00-\\x1F]", {'"', '"', '\\', '\\', 0, 0x1F}, 3, true},
            {"[^\\u0800-\\U00012345a]", {0x800, 0x12345, 'a', 'a'}, 2, true},
            {"[\\u0391-\\u03A9\\u03B1-\\u03C9]", {0x391, 0x3A9, 0x3B1, 0x3C9}, 2, false},
        };
        static uint32_t pts[0x900 + 200 + 1200];
        for (size_t i = 0; i < ARRAY_LEN(C); i++) {
            char text[100];
            snprintf(text, sizeof text, "root ::= %s", C[i].cls);
            struct grammar *g = gbnf(text);
            CHECK(g);
            if (!g) continue;
            int np = probe_points(C[i].r, C[i].n, pts), bad = 0;
            for (int k = 0; k < np; k++) {
                uint32_t c = pts[k];
                if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) continue;
                char u[4];
                int len = enc(c, u);
                bool want = in_ranges(c, C[i].r, C[i].n) != C[i].neg;
                if (full_match_n(g, u, (size_t)len) != want && bad++ < 3)
                    fprintf(stderr, "  %s U+%04X: want %d\n", C[i].cls, (unsigned)c, want);
            }
            /* malformed UTF-8 never matches: surrogates, overlong forms, stray bytes */
            static const char *mal[] = {"\xED\xA0\x80", "\xC0\x80", "\xE0\x80\x80", "\x80",
                                        "\xF4\x90\x80\x80", "\xF8\x88\x80\x80\x80", "\xC3"};
            for (size_t k = 0; k < ARRAY_LEN(mal); k++) bad += full_match(g, mal[k]);
            CHECK_EQ(bad, 0);
            grammar_release(g);
        }
    }

    TEST("gbnf: bad grammars are errors that say what and where") {
        for (size_t i = 0; i < ARRAY_LEN(BAD); i++) {
            char err[300] = "";
            struct grammar *g =
                st_compile_grammar(BAD[i].grammar, strlen(BAD[i].grammar), err, sizeof err);
            bool ok = !g && strstr(err, BAD[i].msg);
            if (!ok) fprintf(stderr, "  '%s': got '%s'\n", BAD[i].grammar, g ? "(compiled)" : err);
            CHECK(ok);
            grammar_release(g);
        }
        /* a grammar past the automaton's limits is refused, not built half */
        char err[300] = "";
        const char *big = "root ::= ((((\"ab\"{1000}){1000}){1000}){1000})";
        struct grammar *g = st_compile_grammar(big, strlen(big), err, sizeof err);
        CHECK(!g && strstr(err, "too large"));
        grammar_release(g);
    }

    TEST("gbnf: nullability through a long chain of rules, and left recursion around it") {
        /* r1 ::= r2 "a"?, ..., each rule nullable only through the next: 100 rules is within
         * the matcher's live-state bound, 3000 is for the left-recursion check */
        static const int sizes[] = {100, 3000};
        for (int i = 0; i < 2; i++) {
            int N = sizes[i];
            size_t cap = (size_t)N * 40 + 100, len = 0;
            char *text = malloc(cap);
            len += (size_t)snprintf(text + len, cap - len, i == 0 ? "root ::= r1 \"!\"\n"
                                                                  : "root ::= r1 root \"x\" | \"!\"\n");
            for (int k = 1; k < N; k++)
                len += (size_t)snprintf(text + len, cap - len, "r%d ::= r%d \"a\"?\n", k, k + 1);
            if (i == 0) {
                snprintf(text + len, cap - len, "r%d ::= \"\" | \"b\"\n", N);
                struct grammar *g = gbnf(text);
                CHECK(g && full_match(g, "!") && full_match(g, "baa!") && !full_match(g, "ab!"));
                grammar_release(g);
            } else { /* r1 is nullable only through all 3000: then root calls itself first */
                snprintf(text + len, cap - len, "r%d ::= \"\"\n", N);
                char err[300] = "";
                struct grammar *g = st_compile_grammar(text, strlen(text), err, sizeof err);
                CHECK(!g && strstr(err, "left recursion (root -> root)"));
                grammar_release(g);
            }
            free(text);
        }
    }

    TEST("gbnf: token masks equal feeding each token") {
        struct gram_vocab *v = small_vocab();
        static const struct {
            const char *g;
            const char *prefix[4];
        } M[] = {
            {NULL, {"", "{\"", "{\"a\": [1", "{\"a\": \"\\u00"}},
            {"root ::= expr\nexpr ::= term ((\"+\" | \"-\") term)*\nterm ::= [0-9]+ | \"(\" "
             "expr \")\"",
             {"", "(1", "((2)+", "1"}},
            {"root ::= \"hi\" | \"bye\" | [α-ω]+ \"\\n\"", {"", "b", "α", "αβ"}},
        };
        for (size_t i = 0; i < ARRAY_LEN(M); i++) {
            struct grammar *g = gbnf(M[i].g ? M[i].g : JSON_GBNF);
            CHECK(g);
            if (!g) continue;
            for (int k = 0; k < 4 && M[i].prefix[k]; k++)
                CHECK_EQ(mask_vs_brute(g, v, M[i].prefix[k]), 0);
            grammar_release(g);
        }
        gv_free(v);
    }

    return test_report();
}
