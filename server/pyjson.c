/*
 * pyjson.c: a strict JSON reader that writes what Python's json.dumps writes (see pyjson.h).
 * One recursive-descent pass; with out == NULL the same code only validates and skips.
 */
#include "server/pyjson.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/utf8.h"

struct cur {
    const char *p, *end;
};

static void put(struct strbuf *out, const char *s, size_t n)
{
    if (out) sb_append(out, s, n);
}

static void puts_(struct strbuf *out, const char *s)
{
    if (out) sb_puts(out, s);
}

static void skip_ws(struct cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool eat(struct cur *c, char ch)
{
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return true;
    }
    return false;
}

/* ==== Strings ====
 * Decoded code points are written either Python-escaped (json.dumps, ensure_ascii=False) or
 * as plain UTF-8 (pyjson_string). */

enum str_mode { STR_PY, STR_UTF8 };

static void put_utf8(struct strbuf *out, unsigned cp)
{
    char b[4];
    put(out, b, (size_t)utf8_encode(cp, b));
}

/* One decoded code point (< 0x80 ones go through Python's escape table). */
static bool put_cp(struct strbuf *out, unsigned cp, enum str_mode mode)
{
    if (mode == STR_UTF8) {
        if (cp == 0) return false; /* cannot travel in a C string */
        put_utf8(out, cp);
        return true;
    }
    char u[8];
    switch (cp) {
    case '"': puts_(out, "\\\""); break;
    case '\\': puts_(out, "\\\\"); break;
    case '\n': puts_(out, "\\n"); break;
    case '\r': puts_(out, "\\r"); break;
    case '\t': puts_(out, "\\t"); break;
    case '\b': puts_(out, "\\b"); break;
    case '\f': puts_(out, "\\f"); break;
    default:
        if (cp < 0x20) {
            snprintf(u, sizeof u, "\\u%04x", cp);
            puts_(out, u);
        } else {
            put_utf8(out, cp);
        }
    }
    return true;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
              : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A string literal at c->p. Lone surrogates are refused: Python would keep them, but they
 * cannot be encoded as UTF-8 for the tokenizer, so vLLM fails on them too. */
static bool string(struct cur *c, struct strbuf *out, enum str_mode mode)
{
    if (!eat(c, '"')) return false;
    if (mode == STR_PY) puts_(out, "\"");
    const char *run = c->p;
    for (;;) {
        if (c->p >= c->end) return false;
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"' || ch == '\\' || ch < 0x20) {
            put(out, run, (size_t)(c->p - run));
            if (ch < 0x20) return false; /* raw control characters are invalid JSON */
            if (ch == '"') {
                c->p++;
                if (mode == STR_PY) puts_(out, "\"");
                return true;
            }
            if (c->end - c->p < 2) return false;
            char e = c->p[1];
            c->p += 2;
            unsigned cp;
            switch (e) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u': {
                int v = c->end - c->p >= 4 ? hex4(c->p) : -1;
                if (v < 0) return false;
                c->p += 4;
                cp = (unsigned)v;
                if (cp >= 0xdc00 && cp <= 0xdfff) return false;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    bool pair = c->end - c->p >= 6 && c->p[0] == '\\' && c->p[1] == 'u';
                    int lo = pair ? hex4(c->p + 2) : -1;
                    if (lo < 0xdc00 || lo > 0xdfff) return false;
                    c->p += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
                }
                break;
            }
            default: return false;
            }
            if (!put_cp(out, cp, mode)) return false;
            run = c->p;
            continue;
        }
        c->p++;
    }
}

/* ==== Numbers ==== */

/* Python's repr(float): the shortest digits that read back the same; exponent form below
 * 1e-4 and from 1e16 on. */
static void put_float(struct strbuf *out, double v)
{
    if (isnan(v)) {
        puts_(out, "NaN");
        return;
    }
    if (isinf(v)) {
        puts_(out, v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, v);
        if (strtod(buf, NULL) == v) break;
    }
    /* buf: [-]d[.ddd]e(+|-)XX */
    const char *p = buf;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    int nd = 0;
    for (; *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp10 = atoi(p + 1);
    if (neg) puts_(out, "-");
    if (exp10 < -4 || exp10 >= 16) {
        put(out, digits, 1);
        if (nd > 1) {
            puts_(out, ".");
            put(out, digits + 1, (size_t)(nd - 1));
        }
        char e[16];
        snprintf(e, sizeof e, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        puts_(out, e);
    } else if (exp10 < 0) {
        puts_(out, "0.");
        for (int i = -1; i > exp10; i--) puts_(out, "0");
        put(out, digits, (size_t)nd);
    } else {
        for (int i = 0; i <= exp10; i++) put(out, i < nd ? digits + i : "0", 1);
        puts_(out, ".");
        if (nd > exp10 + 1) put(out, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
        else puts_(out, "0");
    }
}

static bool is_digit(const struct cur *c)
{
    return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

/* An integer literal keeps its digits (Python ints are exact; "-0" is 0); any other number
 * is a float. */
static bool number(struct cur *c, struct strbuf *out)
{
    const char *start = c->p;
    eat(c, '-');
    if (!is_digit(c)) return false;
    if (!eat(c, '0'))
        while (is_digit(c)) c->p++;
    bool is_float = false;
    if (eat(c, '.')) {
        if (!is_digit(c)) return false;
        while (is_digit(c)) c->p++;
        is_float = true;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (!eat(c, '+')) eat(c, '-');
        if (!is_digit(c)) return false;
        while (is_digit(c)) c->p++;
        is_float = true;
    }
    if (!out) return true;
    size_t n = (size_t)(c->p - start);
    if (!is_float) {
        if (n == 2 && start[0] == '-' && start[1] == '0') start++, n--; /* "-0" */
        put(out, start, n);
        return true;
    }
    char small[64];
    char *tmp = n < sizeof small ? small : xmalloc(n + 1);
    memcpy(tmp, start, n);
    tmp[n] = 0;
    put_float(out, strtod(tmp, NULL));
    if (tmp != small) free(tmp);
    return true;
}

/* ==== Values ==== */

static bool literal(struct cur *c, const char *word, struct strbuf *out)
{
    size_t k = strlen(word);
    if ((size_t)(c->end - c->p) < k || memcmp(c->p, word, k)) return false;
    c->p += k;
    puts_(out, word);
    return true;
}

static bool value(struct cur *c, struct strbuf *out, int depth);

static bool container(struct cur *c, struct strbuf *out, int depth)
{
    if (depth >= PYJSON_MAX_DEPTH) return false;
    bool obj = *c->p == '{';
    char close = obj ? '}' : ']';
    c->p++;
    puts_(out, obj ? "{" : "[");
    skip_ws(c);
    if (eat(c, close)) {
        puts_(out, obj ? "}" : "]");
        return true;
    }
    for (bool first = true;; first = false) {
        if (!first) puts_(out, ", ");
        skip_ws(c);
        if (obj) {
            if (!string(c, out, STR_PY)) return false;
            skip_ws(c);
            if (!eat(c, ':')) return false;
            puts_(out, ": ");
            skip_ws(c);
        }
        if (!value(c, out, depth + 1)) return false;
        skip_ws(c);
        if (eat(c, close)) break;
        if (!eat(c, ',')) return false;
    }
    puts_(out, obj ? "}" : "]");
    return true;
}

static bool value(struct cur *c, struct strbuf *out, int depth)
{
    if (c->p >= c->end) return false;
    switch (*c->p) {
    case '{':
    case '[': return container(c, out, depth);
    case '"': return string(c, out, STR_PY);
    case 't': return literal(c, "true", out);
    case 'f': return literal(c, "false", out);
    case 'n': return literal(c, "null", out);
    default: return number(c, out);
    }
}

int pyjson_dumps(const char *s, size_t n, struct strbuf *out)
{
    struct cur c = {s, s + n};
    skip_ws(&c);
    if (!value(&c, out, 0)) return VLM_EINVAL;
    skip_ws(&c);
    return c.p == c.end ? 0 : VLM_EINVAL;
}

/* ==== Walking raw text ==== */

bool pyjson_iter_init(struct pyjson_iter *it, struct pyjson_span v)
{
    struct cur c = {v.s, v.s + v.n};
    skip_ws(&c);
    if (c.p >= c.end || (*c.p != '{' && *c.p != '[')) return false;
    *it = (struct pyjson_iter){.p = c.p + 1, .end = c.end, .object = *c.p == '{', .first = true};
    return true;
}

bool pyjson_iter_next(struct pyjson_iter *it, struct pyjson_span *key, struct pyjson_span *val)
{
    if (it->done) return false;
    struct cur c = {it->p, it->end};
    skip_ws(&c);
    if (eat(&c, it->object ? '}' : ']')) {
        it->p = c.p;
        it->done = true;
        return false;
    }
    if (!it->first && !eat(&c, ',')) return false;
    skip_ws(&c);
    *key = (struct pyjson_span){NULL, 0};
    if (it->object) {
        const char *k = c.p;
        if (!string(&c, NULL, STR_PY)) return false;
        *key = (struct pyjson_span){k, (size_t)(c.p - k)};
        skip_ws(&c);
        if (!eat(&c, ':')) return false;
        skip_ws(&c);
    }
    const char *v = c.p;
    if (!value(&c, NULL, 1)) return false;
    *val = (struct pyjson_span){v, (size_t)(c.p - v)};
    it->p = c.p;
    it->first = false;
    return true;
}

bool pyjson_key_is(struct pyjson_span key, const char *name)
{
    size_t k = strlen(name);
    if (key.n == k + 2 && key.s[0] == '"' && !memcmp(key.s + 1, name, k)) return true;
    if (!key.s || !memchr(key.s, '\\', key.n)) return false;
    struct strbuf d = {0};
    bool same = !pyjson_string(key, &d) && d.n == k && !memcmp(d.s, name, k);
    sb_free(&d);
    return same;
}

bool pyjson_member(struct pyjson_span obj, const char *name, struct pyjson_span *val)
{
    struct pyjson_iter it;
    struct pyjson_span k, v;
    if (!pyjson_iter_init(&it, obj) || !it.object) return false;
    while (pyjson_iter_next(&it, &k, &v))
        if (pyjson_key_is(k, name)) {
            *val = v;
            return true;
        }
    return false;
}

int pyjson_string(struct pyjson_span lit, struct strbuf *out)
{
    struct cur c = {lit.s, lit.s + lit.n};
    if (!string(&c, out, STR_UTF8) || c.p != c.end) return VLM_EINVAL;
    if (!out->s) sb_append(out, "", 0);
    return 0;
}

/* ==== Tools ==== */

static bool key_in(struct pyjson_span key, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pyjson_key_is(key, names[i])) return true;
    return false;
}

/* ", key: value" for the members of obj not named in skip. */
static int other_members(struct pyjson_span obj, const char *const *skip, size_t n_skip,
                         struct strbuf *out)
{
    struct pyjson_iter it;
    struct pyjson_span k, v;
    if (!pyjson_iter_init(&it, obj)) return VLM_EINVAL;
    while (pyjson_iter_next(&it, &k, &v)) {
        if (key_in(k, skip, n_skip)) continue;
        sb_puts(out, ", ");
        if (pyjson_dumps(k.s, k.n, out) || (sb_puts(out, ": "), pyjson_dumps(v.s, v.n, out)))
            return VLM_EINVAL;
    }
    return it.done ? 0 : VLM_EINVAL;
}

int pyjson_tool(struct pyjson_span tool, struct strbuf *out)
{
    static const char *const top[] = {"type", "function"};
    static const char *const fn[] = {"name", "description", "parameters"};
    struct pyjson_span f = {0}, v;
    if (pyjson_dumps(tool.s, tool.n, NULL) || !pyjson_member(tool, "function", &f))
        return VLM_EINVAL;
    sb_puts(out, "{\"type\": \"function\", \"function\": {");
    for (size_t i = 0; i < ARRAY_LEN(fn); i++) {
        if (i) sb_puts(out, ", ");
        sb_printf(out, "\"%s\": ", fn[i]);
        if (!pyjson_member(f, fn[i], &v)) sb_puts(out, "null");
        else if (pyjson_dumps(v.s, v.n, out)) return VLM_EINVAL;
    }
    if (other_members(f, fn, ARRAY_LEN(fn), out)) return VLM_EINVAL;
    sb_puts(out, "}");
    if (other_members(tool, top, ARRAY_LEN(top), out)) return VLM_EINVAL;
    sb_puts(out, "}");
    return 0;
}
