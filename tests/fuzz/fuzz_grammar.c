/*
 * fuzz_grammar: the schema, regex and GBNF compilers and the matcher on arbitrary bytes.
 *
 * The first byte picks the mode:
 *   even: the input after it, up to the first NUL, is a structured-outputs request body (a
 *         JSON object: response_format / guided_json / guided_regex / guided_grammar / ... /
 *         tools), parsed by st_parse_request; the bytes after the NUL are an output fed to
 *         the grammar;
 *   odd:  the bytes up to the first NUL spell a regular expression over a small alphabet
 *         (each byte picks a piece: a, b, ., [ab], [^a], (, ), |, *, +, ?, {1,2}, {2}), the
 *         rest is a subject string over "abc"; the matcher's full-match verdict on every
 *         prefix of the subject must equal POSIX regexec's (glibc, REG_EXTENDED) when both
 *         accept the pattern: a reference recognizer. The same expression is also written as a
 *         GBNF grammar (root ::= x, x ::= the pieces as literals and classes) whose verdict must
 *         agree too.
 * In both modes the token mask after the output so far must equal, token by token, what a
 * fresh matcher says about each token of a small vocabulary (every byte and some pieces).
 */
#include <cjson/cJSON.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/grammar.h"
#include "server/structured.h"

static struct gram_vocab *vocab(void)
{
    static struct gram_vocab *v;
    if (v) return v;
    static const char *pieces[] = {"{\"", "\":", "\",", "\"}", "ab", "aab", "ba", "true", "null",
                                   "12", "-1", "[]", "{}", "\\n", "\\u00", "\xc3\xa9", "a\n"};
    enum { NP = sizeof pieces / sizeof *pieces };
    static char single[256];
    const char *bytes[256 + NP];
    size_t lens[256 + NP];
    for (int i = 0; i < 256; i++) {
        single[i] = (char)i;
        bytes[i] = &single[i];
        lens[i] = 1;
    }
    for (int i = 0; i < NP; i++) {
        bytes[256 + i] = pieces[i];
        lens[256 + i] = strlen(pieces[i]);
    }
    v = gv_new(256 + NP, bytes, lens);
    return v;
}

/* The mask after out[0..n) agrees with feeding each token to a fresh matcher. */
static void check_mask(struct grammar *g, const uint8_t *out, size_t n)
{
    struct gram_vocab *v = vocab();
    struct gram_matcher *m = gm_new(g);
    if (!m) return;
    if (!gm_accept_bytes(m, out, n)) {
        gm_free(m);
        return;
    }
    uint32_t bits[(256 + 64) / 32 + 1];
    if (gm_fill_mask(m, v, bits) < 0) abort();
    for (int32_t t = 0; t < gv_size(v); t++) {
        struct gram_matcher *r = gm_new(g);
        if (!r) break;
        if (!gm_accept_bytes(r, out, n)) abort();
        bool want = gm_accept_token(r, v, t), got = bits[t >> 5] >> (t & 31) & 1;
        if (want != got) abort();
        gm_free(r);
    }
    gm_free(m);
}

static void regex_mode(const uint8_t *d, size_t n)
{
    static const char *const piece[] = {"a", "b", ".", "[ab]", "[^a]", "(", ")", "|", "*", "+",
                                        "?", "{1,2}", "{2}", "a", "b", "(a|b)"};
    /* the same expression in GBNF, called through a rule */
    static const char *const gpiece[] = {"\"a\"", "\"b\"", "[^\\n]", "[ab]", "[^a]", "(",
                                         ")", "|", "*", "+", "?", "{1,2}", "{2}", "\"a\"",
                                         "\"b\"", "(\"a\"|\"b\")"};
    char re[512] = "", gb[1024] = "root ::= x\nx ::= ";
    size_t i = 0, len = 0, glen = strlen(gb);
    for (; i < n && d[i] && i < 40; i++) {
        const char *p = piece[d[i] % 16];
        size_t k = strlen(p);
        memcpy(re + len, p, k + 1);
        len += k;
        k = strlen(gpiece[d[i] % 16]);
        memcpy(gb + glen, gpiece[d[i] % 16], k + 1);
        glen += k;
    }
    /* forms where POSIX and Python differ or that POSIX leaves undefined */
    if (len == 0 || strstr(re, "()") || strstr(re, "(|") || strstr(re, "|)") || strstr(re, "||") ||
        re[0] == '|' || re[len - 1] == '|' || strstr(re, "(*") || strstr(re, "(+") ||
        strstr(re, "(?") || strstr(re, "|*") || strstr(re, "|+") || strstr(re, "|?") ||
        strstr(re, "|{") || strstr(re, "({") || strchr("*+?{", re[0]))
        return;
    for (const char *q = re; *q; q++) /* stacked quantifiers: "a**" is an error in Python */
        if (strchr("*+?}", q[0]) && q[1] && strchr("*+?{", q[1])) return;
    char err[200];
    struct grammar *g = st_compile_regex(re, len, err, sizeof err);
    struct grammar *gg = st_compile_grammar(gb, glen, err, sizeof err);
    char anchored[600];
    snprintf(anchored, sizeof anchored, "^(%s)$", re);
    regex_t px;
    bool px_ok = regcomp(&px, anchored, REG_EXTENDED | REG_NOSUB) == 0;
    if (g && px_ok) {
        char subj[64];
        size_t m = 0;
        for (i++; i < n && m < sizeof subj - 1; i++)
            subj[m++] = "abc"[d[i] % 3]; /* no newline: POSIX . matches it */
        subj[m] = 0;
        struct gram_matcher *mt = gm_new(g);
        for (size_t k = 0; k <= m && mt; k++) {
            char pre[64];
            memcpy(pre, subj, k);
            pre[k] = 0;
            bool ref = regexec(&px, pre, 0, NULL, 0) == 0;
            struct gram_matcher *f = gm_new(g);
            bool got = f && gm_accept_bytes(f, (const uint8_t *)pre, k) && gm_can_end(f);
            gm_free(f);
            if (f && got != ref) abort();
            if (!gg) continue;
            f = gm_new(gg);
            got = f && gm_accept_bytes(f, (const uint8_t *)pre, k) && gm_can_end(f);
            gm_free(f);
            if (f && got != ref) abort();
        }
        gm_free(mt);
        check_mask(g, (const uint8_t *)subj, m / 2);
        if (gg) check_mask(gg, (const uint8_t *)subj, m / 2);
    }
    if (px_ok) regfree(&px);
    grammar_release(g);
    grammar_release(gg);
}

static void request_mode(const uint8_t *d, size_t n)
{
    size_t k = 0;
    while (k < n && d[k]) k++;
    cJSON *root = cJSON_ParseWithLength((const char *)d, k);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }
    struct st_request q;
    struct vlm_err e = {0};
    if (st_parse_request(root, true, &q, &e) == 0 && q.g) {
        const uint8_t *out = k < n ? d + k + 1 : d + n;
        size_t m = k < n ? n - k - 1 : 0;
        struct gram_matcher *mt = gm_new(q.g);
        size_t ok = 0; /* the longest accepted prefix, byte by byte */
        while (mt && ok < m && gm_accept_bytes(mt, out + ok, 1)) ok++;
        gm_free(mt);
        if (m < 512) check_mask(q.g, out, ok);
    }
    st_request_destroy(&q);
    cJSON_Delete(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (data[0] & 1) regex_mode(data + 1, size - 1);
    else request_mode(data + 1, size - 1);
    return 0;
}
