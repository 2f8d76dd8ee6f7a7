/*
 * gbnf: EBNF grammars in the GBNF notation (llama.cpp's, which vLLM's xgrammar backend also
 * reads) -> rules of a gram_builder. See gb_gbnf in grammar.h for the notation accepted.
 *
 * The text is parsed into a small tree per rule (struct gn), checked (every called rule
 * defined, a "root" rule, no left recursion: the automaton runs rules top-down, so a rule
 * that can call itself before reading a character never terminates), then emitted: one
 * gb_rule per defined rule, calls as gb_call, counted repetitions as copies of the operand
 * (as the regular expressions do). Characters are Unicode code points matched as their
 * UTF-8 bytes; a class is a set of code point ranges, each emitted as the byte-range
 * sequences that spell exactly its code points.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/base.h"
#include "engine/grammar.h"

enum { GN_EMPTY, GN_LIT, GN_CLASS, GN_REF, GN_SEQ, GN_ALT, GN_REP };

#define GN_MAX_REP 1000   /* largest {m,n} bound, as for regular expressions */
#define GN_MAX_DEPTH 100  /* nested groups */
#define GN_MAX_NODES 200000
#define GN_MAX_TEXT (1 << 20)

struct gn {
    int kind;
    int32_t a, b;      /* SEQ, ALT: children; REP: a; REF: rule index */
    int32_t min, max;  /* REP; max -1: unbounded */
    int32_t off, len;  /* LIT: bytes lit[off, off+len); CLASS: ranges rg[off, off+len) */
    int32_t pos;       /* REF: where it is written (for the undefined-rule message) */
};

struct gn_rule {
    const char *name;
    int32_t len;
    int32_t body;      /* -1: called but not defined (yet) */
    int32_t def_pos, use_pos;
    int32_t id;        /* gb_rule id */
    uint8_t nullable;
};

struct gp {
    const char *s;
    size_t n, i;
    struct gn *t;
    int32_t nt, cap_t;
    char *lit;
    int32_t n_lit, cap_lit;
    uint32_t *rg;      /* lo, hi pairs */
    int32_t n_rg, cap_rg;
    struct gn_rule *r;
    int32_t nr, cap_r;
    int depth;
    char *err;
    size_t errlen;
    bool failed;
};

/* line and column (1-based) of byte offset pos */
static void gp_where(const struct gp *p, size_t pos, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t k = 0; k < pos && k < p->n; k++) {
        if (p->s[k] == '\n') ++*line, *col = 1;
        else if (((uint8_t)p->s[k] & 0xC0) != 0x80) ++*col;
    }
}

static int gp_fail(struct gp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int gp_fail(struct gp *p, const char *fmt, ...)
{
    if (!p->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, p->errlen, fmt, ap);
        va_end(ap);
    }
    p->failed = true;
    return -1;
}

/* "syntax error at line L, column C: <what>" at p->i */
static int gp_syntax(struct gp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int gp_syntax(struct gp *p, const char *fmt, ...)
{
    if (p->failed) return -1;
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int line, col;
    gp_where(p, p->i, &line, &col);
    return gp_fail(p, "syntax error at line %d, column %d: %s", line, col, what);
}

static bool grow(void **v, int32_t *cap, int32_t n, size_t size, int32_t limit)
{
    if (n < *cap) return true;
    int32_t c = *cap ? 2 * *cap : 64;
    if (c > limit) c = limit;
    if (n >= c) return false;
    void *x = tryrealloc(*v, (size_t)c * size);
    if (!x) return false;
    *v = x;
    *cap = c;
    return true;
}

static int32_t gn_new(struct gp *p, int kind)
{
    if (!grow((void **)&p->t, &p->cap_t, p->nt, sizeof *p->t, GN_MAX_NODES))
        return gp_fail(p, "the grammar is too large");
    p->t[p->nt] = (struct gn){.kind = kind, .a = -1, .b = -1};
    return p->nt++;
}

static int32_t gn_pair(struct gp *p, int kind, int32_t a, int32_t b)
{
    int32_t x = gn_new(p, kind);
    if (x < 0) return -1;
    p->t[x].a = a;
    p->t[x].b = b;
    return x;
}

/* ==== Lexing ==== */

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* Skips blanks, newlines and # comments. */
static void gp_space(struct gp *p)
{
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            p->i++;
        } else if (c == '#') {
            while (p->i < p->n && p->s[p->i] != '\n') p->i++;
        } else {
            break;
        }
    }
}

static size_t gp_name_len(const struct gp *p, size_t at)
{
    size_t k = at;
    while (k < p->n && is_name_char(p->s[k])) k++;
    return k - at;
}

/* A rule name at p->i followed by "::=": the start of the next rule. */
static bool gp_rule_start(struct gp *p)
{
    size_t k = gp_name_len(p, p->i);
    if (!k) return false;
    size_t save = p->i;
    p->i += k;
    gp_space(p);
    bool yes = p->n - p->i >= 3 && !memcmp(p->s + p->i, "::=", 3);
    p->i = save;
    return yes;
}

/* Decodes one UTF-8 character at p->i and moves past it; -1 on malformed input. */
static int64_t gp_utf8(struct gp *p)
{
    uint32_t c;
    int len = gram_utf8_decode((const uint8_t *)p->s + p->i, p->n - p->i, &c);
    if (len < 0) return -1;
    p->i += (size_t)len;
    return c;
}

static int64_t gp_hex(struct gp *p, int digits)
{
    uint32_t v = 0;
    for (int k = 0; k < digits; k++) {
        char c = p->i < p->n ? p->s[p->i] : 0;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return gp_syntax(p, "expected %d hexadecimal digits in the escape", digits);
        v = v << 4 | (uint32_t)d;
        p->i++;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return gp_syntax(p, "the escape names no Unicode character (U+%X)", (unsigned)v);
    return v;
}

/* One character of a string or class at p->i (escapes decoded). */
static int64_t gp_char(struct gp *p)
{
    if (p->s[p->i] != '\\') {
        int64_t c = gp_utf8(p);
        return c < 0 ? gp_syntax(p, "the grammar is not valid UTF-8") : c;
    }
    p->i++;
    if (p->i >= p->n) return gp_syntax(p, "the text ends inside an escape");
    char c = p->s[p->i++];
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    case 'b': return '\b';
    case 'a': return 7;
    case '0': return 0;
    case 'x': return gp_hex(p, 2);
    case 'u': return gp_hex(p, 4);
    case 'U': return gp_hex(p, 8);
    default:
        if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
            (c >= 123 && c <= 126))
            return (unsigned char)c;
        p->i--;
        return gp_syntax(p, "unknown escape '\\%c'", c >= 32 && c < 127 ? c : '?');
    }
}

static bool put_utf8(struct gp *p, uint32_t c)
{
    if (!grow((void **)&p->lit, &p->cap_lit, p->n_lit + 4, 1, GN_MAX_TEXT)) return false;
    char *u = p->lit + p->n_lit;
    if (c < 0x80) u[0] = (char)c, p->n_lit += 1;
    else if (c < 0x800) u[0] = (char)(0xC0 | c >> 6), u[1] = (char)(0x80 | (c & 63)), p->n_lit += 2;
    else if (c < 0x10000)
        u[0] = (char)(0xE0 | c >> 12), u[1] = (char)(0x80 | (c >> 6 & 63)),
        u[2] = (char)(0x80 | (c & 63)), p->n_lit += 3;
    else
        u[0] = (char)(0xF0 | c >> 18), u[1] = (char)(0x80 | (c >> 12 & 63)),
        u[2] = (char)(0x80 | (c >> 6 & 63)), u[3] = (char)(0x80 | (c & 63)), p->n_lit += 4;
    return true;
}

/* ==== Parsing ==== */

static int32_t gp_alts(struct gp *p);

static int32_t gp_string(struct gp *p)
{
    size_t start = p->i;
    p->i++; /* the opening quote */
    int32_t x = gn_new(p, GN_LIT);
    if (x < 0) return -1;
    p->t[x].off = p->n_lit;
    for (;;) {
        if (p->i >= p->n) {
            p->i = start;
            return gp_syntax(p, "unterminated string");
        }
        if (p->s[p->i] == '"') break;
        if (p->s[p->i] == '\n') return gp_syntax(p, "a newline inside a string (write \\n)");
        int64_t c = gp_char(p);
        if (c < 0) return -1;
        if (!put_utf8(p, (uint32_t)c)) return gp_fail(p, "the grammar is too large");
    }
    p->i++;
    p->t[x].len = p->n_lit - p->t[x].off;
    return x;
}

static bool put_range(struct gp *p, uint32_t lo, uint32_t hi)
{
    if (!grow((void **)&p->rg, &p->cap_rg, p->n_rg + 2, sizeof *p->rg, GN_MAX_NODES))
        return false;
    p->rg[p->n_rg++] = lo;
    p->rg[p->n_rg++] = hi;
    return true;
}

static int cmp_u32_pair(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorts and merges the class's ranges at rg[off..) in place, complementing them over
 * [0, 0x10FFFF] when neg; returns the number of pairs. */
static int32_t norm_ranges(struct gp *p, int32_t off, bool neg)
{
    uint32_t *r = p->rg + off;
    int32_t n = (p->n_rg - off) / 2, m = 0;
    qsort(r, (size_t)n, 2 * sizeof *r, cmp_u32_pair);
    for (int32_t k = 0; k < n; k++) {
        if (m && r[2 * k] <= r[2 * m - 1] + 1) {
            if (r[2 * k + 1] > r[2 * m - 1]) r[2 * m - 1] = r[2 * k + 1];
        } else {
            r[2 * m] = r[2 * k];
            r[2 * m + 1] = r[2 * k + 1];
            m++;
        }
    }
    p->n_rg = off + 2 * m;
    if (!neg) return m;
    /* the gaps: at most m + 1 ranges; build them after the merged ones, then move down */
    uint32_t next = 0;
    int32_t base = p->n_rg;
    for (int32_t k = 0; k <= m; k++) {
        uint32_t lo = next, hi = k < m ? p->rg[off + 2 * k] : 0x110000;
        if (k < m) next = p->rg[off + 2 * k + 1] + 1;
        if (lo < hi && !put_range(p, lo, hi - 1)) return -1;
    }
    int32_t g = (p->n_rg - base) / 2;
    memmove(p->rg + off, p->rg + base, (size_t)g * 2 * sizeof *p->rg);
    p->n_rg = off + 2 * g;
    return g;
}

static int32_t gp_class(struct gp *p)
{
    size_t start = p->i;
    p->i++; /* '[' */
    bool neg = p->i < p->n && p->s[p->i] == '^';
    if (neg) p->i++;
    int32_t off = p->n_rg;
    for (;;) {
        if (p->i >= p->n) {
            p->i = start;
            return gp_syntax(p, "unterminated character class");
        }
        if (p->s[p->i] == ']') break;
        int64_t lo = gp_char(p), hi;
        if (lo < 0) return -1;
        hi = lo;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            p->i++;
            size_t at = p->i;
            if ((hi = gp_char(p)) < 0) return -1;
            if (hi < lo) {
                p->i = at;
                return gp_syntax(p, "bad character range (its end is below its start)");
            }
        }
        if (!put_range(p, (uint32_t)lo, (uint32_t)hi)) return gp_fail(p, "the grammar is too large");
    }
    p->i++;
    if (p->n_rg == off) {
        p->i = start;
        return gp_syntax(p, "empty character class");
    }
    int32_t m = norm_ranges(p, off, neg);
    if (m < 0) return gp_fail(p, "the grammar is too large");
    int32_t x = gn_new(p, GN_CLASS);
    if (x < 0) return -1;
    p->t[x].off = off;
    p->t[x].len = m;
    return x;
}

static int32_t rule_find(struct gp *p, const char *name, int32_t len)
{
    for (int32_t k = 0; k < p->nr; k++)
        if (p->r[k].len == len && !memcmp(p->r[k].name, name, (size_t)len)) return k;
    if (!grow((void **)&p->r, &p->cap_r, p->nr, sizeof *p->r, GRAM_MAX_RULES))
        return gp_fail(p, "too many rules");
    p->r[p->nr] = (struct gn_rule){.name = name, .len = len, .body = -1, .def_pos = -1,
                                   .use_pos = -1};
    return p->nr++;
}

/* {m} {m,} {m,n} {,n} at p->i ('{'): min and max (-1: unbounded) */
static int gp_counts(struct gp *p, int32_t *mn, int32_t *mx)
{
    size_t start = p->i;
    p->i++;
    long v[2] = {-1, -1};
    bool comma = false;
    for (int k = 0; k < 2; k++) {
        gp_space(p);
        if (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
            long x = 0;
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
                if (x <= GN_MAX_REP) x = x * 10 + (p->s[p->i] - '0');
                p->i++;
            }
            v[k] = x;
        }
        gp_space(p);
        if (k == 0 && p->i < p->n && p->s[p->i] == ',') {
            comma = true;
            p->i++;
        } else {
            break;
        }
    }
    if (p->i >= p->n || p->s[p->i] != '}' || (v[0] < 0 && (!comma || v[1] < 0))) {
        p->i = start;
        return gp_syntax(p, "bad repetition: expected {m}, {m,}, {m,n} or {,n}");
    }
    p->i++;
    *mn = v[0] < 0 ? 0 : (int32_t)v[0];
    *mx = comma ? (v[1] < 0 ? -1 : (int32_t)v[1]) : *mn;
    if (*mn > GN_MAX_REP || *mx > GN_MAX_REP) {
        p->i = start;
        return gp_syntax(p, "repetition counts above %d are not supported", GN_MAX_REP);
    }
    if (*mx >= 0 && *mx < *mn) {
        p->i = start;
        return gp_syntax(p, "bad repetition {%d,%d}: the maximum is below the minimum",
                         (int)*mn, (int)*mx);
    }
    return 0;
}

static int32_t gp_atom(struct gp *p)
{
    char c = p->s[p->i];
    if (c == '"') return gp_string(p);
    if (c == '[') return gp_class(p);
    if (c == '.') {
        p->i++;
        int32_t x = gn_new(p, GN_CLASS);
        if (x < 0) return -1;
        p->t[x].off = p->n_rg;
        p->t[x].len = 1;
        if (!put_range(p, 0, 0x10FFFF)) return gp_fail(p, "the grammar is too large");
        return x;
    }
    if (c == '(') {
        size_t start = p->i;
        p->i++;
        if (++p->depth > GN_MAX_DEPTH) return gp_syntax(p, "groups nest too deeply");
        int32_t x = gp_alts(p);
        if (x < 0) return -1;
        p->depth--;
        if (p->i >= p->n || p->s[p->i] != ')') {
            p->i = start;
            return gp_syntax(p, "unbalanced '(' (no matching ')')");
        }
        p->i++;
        return x;
    }
    size_t k = gp_name_len(p, p->i);
    if (k) {
        int32_t r = rule_find(p, p->s + p->i, (int32_t)k);
        if (r < 0) return -1;
        if (p->r[r].use_pos < 0) p->r[r].use_pos = (int32_t)p->i;
        int32_t x = gn_new(p, GN_REF);
        if (x < 0) return -1;
        p->t[x].a = r;
        p->t[x].pos = (int32_t)p->i;
        p->i += k;
        return x;
    }
    if (c == '\'')
        return gp_syntax(p, "strings are written in double quotes");
    if (c == '*' || c == '+' || c == '?' || c == '{')
        return gp_syntax(p, "'%c' has nothing to repeat", c);
    if (c == ':' && p->n - p->i >= 3 && !memcmp(p->s + p->i, "::=", 3))
        return gp_syntax(p, "'::=' without a rule name before it");
    return gp_syntax(p, "unexpected character '%c'", c >= 32 && c < 127 ? c : '?');
}

/* items until '|', ')', the end or the next rule */
static int32_t gp_seq(struct gp *p)
{
    int32_t cur = gn_new(p, GN_EMPTY);
    for (;;) {
        gp_space(p);
        if (cur < 0 || p->i >= p->n || p->s[p->i] == '|' || p->s[p->i] == ')' || gp_rule_start(p))
            return cur;
        int32_t a = gp_atom(p);
        if (a < 0) return -1;
        for (int n_q = 0;; n_q++) {
            gp_space(p);
            if (p->i >= p->n) break;
            char q = p->s[p->i];
            int32_t mn = 0, mx = 0;
            if (q == '*') mn = 0, mx = -1, p->i++;
            else if (q == '+') mn = 1, mx = -1, p->i++;
            else if (q == '?') mn = 0, mx = 1, p->i++;
            else if (q == '{') {
                if (gp_counts(p, &mn, &mx)) return -1;
            } else break;
            if (n_q == 8) return gp_syntax(p, "too many repetition operators in a row");
            int32_t r = gn_new(p, GN_REP);
            if (r < 0) return -1;
            p->t[r].a = a;
            p->t[r].min = mn;
            p->t[r].max = mx;
            a = r;
        }
        cur = gn_pair(p, GN_SEQ, cur, a);
    }
}

static int32_t gp_alts(struct gp *p)
{
    int32_t x = gp_seq(p);
    while (x >= 0 && p->i < p->n && p->s[p->i] == '|') {
        p->i++;
        int32_t y = gp_seq(p);
        if (y < 0) return -1;
        x = gn_pair(p, GN_ALT, x, y);
    }
    return x;
}

static int gp_grammar(struct gp *p)
{
    gp_space(p);
    if (p->i >= p->n) return gp_fail(p, "the grammar is empty (it needs a 'root ::= ...' rule)");
    while (p->i < p->n) {
        size_t at = p->i, k = gp_name_len(p, p->i);
        if (!k)
            return gp_syntax(p, "expected a rule ('name ::= ...')");
        p->i += k;
        gp_space(p);
        if (p->n - p->i < 3 || memcmp(p->s + p->i, "::=", 3))
            return gp_syntax(p, "expected '::=' after the rule name '%.*s'", (int)(k > 64 ? 64 : k),
                             p->s + at);
        p->i += 3;
        int32_t r = rule_find(p, p->s + at, (int32_t)k);
        if (r < 0) return -1;
        if (p->r[r].body >= 0) {
            int l1, c1, l2, c2;
            gp_where(p, (size_t)p->r[r].def_pos, &l1, &c1);
            gp_where(p, at, &l2, &c2);
            return gp_fail(p, "rule '%.*s' is defined twice (lines %d and %d)",
                           (int)(k > 64 ? 64 : k), p->s + at, l1, l2);
        }
        p->r[r].def_pos = (int32_t)at;
        int32_t body = gp_alts(p);
        if (body < 0) return -1;
        if (p->i < p->n && p->s[p->i] == ')') return gp_syntax(p, "unbalanced ')'");
        p->r[r].body = body;
        gp_space(p);
    }
    return 0;
}

/* ==== Checks ==== */

/* Which nodes can match the empty string (and so which rules: rule.nullable), by
 * propagation: a node found nullable tells its parent (an ALT or REP parent becomes
 * nullable, a SEQ parent once both children are) and, when it is a rule's body, every call
 * of that rule. Linear in the nodes. NULL when out of memory. */
static uint8_t *gn_nullable(struct gp *p)
{
    size_t nt = (size_t)p->nt + 1, nr = (size_t)p->nr + 1;
    uint8_t *nn = trycalloc(nt, 1), *cnt = trycalloc(nt, 1);
    int32_t *parent = trymalloc(nt * sizeof *parent), *rule_of = trymalloc(nt * sizeof *rule_of);
    int32_t *ref_off = trycalloc(nr + 1, sizeof *ref_off), *refs = trymalloc(nt * sizeof *refs);
    int32_t *queue = trymalloc(nt * sizeof *queue), *pos = trymalloc((nr + 1) * sizeof *pos);
    int32_t qh = 0, qt = 0;
    bool ok = nn && cnt && parent && rule_of && ref_off && refs && queue && pos;
    if (!ok) goto out;
    for (int32_t x = 0; x < p->nt; x++) parent[x] = rule_of[x] = -1;
    for (int32_t k = 0; k < p->nr; k++) rule_of[p->r[k].body] = k;
    for (int32_t x = 0; x < p->nt; x++) {
        const struct gn *t = &p->t[x];
        if (t->kind == GN_SEQ || t->kind == GN_ALT) parent[t->a] = parent[t->b] = x;
        else if (t->kind == GN_REP) parent[t->a] = x;
        else if (t->kind == GN_REF) ref_off[t->a + 1]++;
    }
    for (int32_t k = 0; k < p->nr; k++) ref_off[k + 1] += ref_off[k];
    for (int32_t k = 0; k <= p->nr; k++) pos[k] = ref_off[k];
    for (int32_t x = 0; x < p->nt; x++)
        if (p->t[x].kind == GN_REF) refs[pos[p->t[x].a]++] = x;
    for (int32_t x = 0; x < p->nt; x++) {
        const struct gn *t = &p->t[x];
        if (t->kind == GN_EMPTY || (t->kind == GN_LIT && t->len == 0) ||
            (t->kind == GN_REP && t->min == 0))
            nn[x] = 1, queue[qt++] = x;
    }
    while (qh < qt) {
        int32_t x = queue[qh++];
        int32_t k = rule_of[x];
        if (k >= 0 && !p->r[k].nullable) {
            p->r[k].nullable = 1;
            for (int32_t j = ref_off[k]; j < ref_off[k + 1]; j++)
                if (!nn[refs[j]]) nn[refs[j]] = 1, queue[qt++] = refs[j];
        }
        int32_t q = parent[x];
        if (q < 0 || nn[q]) continue;
        if (p->t[q].kind == GN_SEQ && ++cnt[q] < 2) continue;
        nn[q] = 1;
        queue[qt++] = q;
    }
out:
    free(cnt);
    free(parent);
    free(rule_of);
    free(ref_off);
    free(refs);
    free(queue);
    free(pos);
    if (!ok) {
        free(nn);
        return NULL;
    }
    return nn;
}

/* A rule that can call itself before reading a character: the cycle as "a -> b -> a" in
 * chain, or false. The graph: rule -> the rules its body may call first (each body is a
 * tree of its own, walked once with an explicit stack); then an iterative depth-first
 * search. */
static int gp_left_rec(struct gp *p, const uint8_t *nn, char *chain, size_t len, bool *found)
{
    int rc = -1;
    int32_t *first = trymalloc(((size_t)p->nt + 1) * sizeof *first);
    int32_t *off = trycalloc((size_t)p->nr + 1, sizeof *off);
    int32_t *stack = trymalloc(((size_t)p->nt + 1) * sizeof *stack);
    int32_t *it = trymalloc(((size_t)p->nr + 1) * sizeof *it);
    uint8_t *mark = trycalloc((size_t)p->nr + 1, 1);
    int32_t n_first = 0;
    *found = false;
    if (!first || !off || !stack || !it || !mark) goto out;
    for (int32_t k = 0; k < p->nr; k++) {
        int32_t sp = 0;
        stack[sp++] = p->r[k].body;
        while (sp) {
            const struct gn *t = &p->t[stack[--sp]];
            switch (t->kind) {
            case GN_REF: first[n_first++] = t->a; break;
            case GN_SEQ:
                stack[sp++] = t->a;
                if (nn[t->a]) stack[sp++] = t->b;
                break;
            case GN_ALT: stack[sp++] = t->a, stack[sp++] = t->b; break;
            case GN_REP:
                if (t->max != 0) stack[sp++] = t->a;
                break;
            default: break;
            }
        }
        off[k + 1] = n_first;
    }
    /* mark 1: on the path (stack[0..sp)), 2: done; it[k]: next edge of k to try */
    for (int32_t s = 0; s < p->nr && !*found; s++) {
        if (mark[s]) continue;
        int32_t sp = 0;
        stack[sp++] = s;
        mark[s] = 1;
        it[s] = off[s];
        while (sp && !*found) {
            int32_t k = stack[sp - 1];
            if (it[k] == off[k + 1]) {
                mark[k] = 2;
                sp--;
                continue;
            }
            int32_t r = first[it[k]++];
            if (mark[r] == 1) {
                int32_t at = sp - 1;
                while (stack[at] != r) at--;
                size_t used = 0;
                for (int32_t j = at; j <= sp; j++) {
                    const struct gn_rule *q = &p->r[j < sp ? stack[j] : r];
                    int w = snprintf(chain + used, len - used, "%s%.*s", j > at ? " -> " : "",
                                     (int)(q->len > 32 ? 32 : q->len), q->name);
                    if (w < 0 || (size_t)w >= len - used) break;
                    used += (size_t)w;
                }
                *found = true;
            } else if (!mark[r]) {
                mark[r] = 1;
                it[r] = off[r];
                stack[sp++] = r;
            }
        }
    }
    rc = 0;
out:
    free(first);
    free(off);
    free(stack);
    free(it);
    free(mark);
    return rc;
}

static int gp_check(struct gp *p, int32_t *root)
{
    for (int32_t k = 0; k < p->nr; k++) {
        if (p->r[k].body >= 0) continue;
        int line, col;
        gp_where(p, (size_t)p->r[k].use_pos, &line, &col);
        return gp_fail(p, "undefined rule '%.*s' (used at line %d, column %d)",
                       (int)(p->r[k].len > 64 ? 64 : p->r[k].len), p->r[k].name, line, col);
    }
    *root = -1;
    for (int32_t k = 0; k < p->nr; k++)
        if (p->r[k].len == 4 && !memcmp(p->r[k].name, "root", 4)) *root = k;
    if (*root < 0) return gp_fail(p, "the grammar has no 'root' rule (the start symbol)");
    uint8_t *nn = gn_nullable(p);
    char chain[120] = "";
    bool found = false;
    int rc = nn ? gp_left_rec(p, nn, chain, sizeof chain, &found) : -1;
    free(nn);
    if (rc) return gp_fail(p, "out of memory");
    if (found)
        return gp_fail(p, "left recursion (%s) is not supported; write it with * or +", chain);
    return 0;
}

/* ==== Emitting ==== */

/* The UTF-8 byte strings between lo[0..n) and hi[0..n) (encodings of equal length n of two
 * code points lo <= hi, both in one encoding length): byte-range sequences. */
static struct gfrag utf8_span(struct gram_builder *b, const uint8_t *lo, const uint8_t *hi,
                              int n)
{
    if (n == 1) return gb_range(b, lo[0], hi[0]);
    if (lo[0] == hi[0]) return gb_seq(b, gb_range(b, lo[0], lo[0]), utf8_span(b, lo + 1, hi + 1, n - 1));
    static const uint8_t all80[3] = {0x80, 0x80, 0x80}, allbf[3] = {0xBF, 0xBF, 0xBF};
    int32_t s = gb_node(b), e = gb_node(b);
    int first = lo[0], last = hi[0];
    if (memcmp(lo + 1, all80, (size_t)n - 1)) {
        struct gfrag f = gb_seq(b, gb_range(b, lo[0], lo[0]), utf8_span(b, lo + 1, allbf, n - 1));
        gb_eps(b, s, f.s);
        gb_eps(b, f.e, e);
        first++;
    }
    if (memcmp(hi + 1, allbf, (size_t)n - 1)) {
        struct gfrag f = gb_seq(b, gb_range(b, hi[0], hi[0]), utf8_span(b, all80, hi + 1, n - 1));
        gb_eps(b, s, f.s);
        gb_eps(b, f.e, e);
        last--;
    }
    if (first <= last) {
        struct gfrag f = gb_range(b, (uint8_t)first, (uint8_t)last);
        for (int k = 1; k < n; k++) f = gb_seq(b, f, gb_range(b, 0x80, 0xBF));
        gb_eps(b, s, f.s);
        gb_eps(b, f.e, e);
    }
    return (struct gfrag){s, e};
}

static int utf8_enc(uint32_t c, uint8_t *u)
{
    if (c < 0x80) return u[0] = (uint8_t)c, 1;
    if (c < 0x800) return u[0] = (uint8_t)(0xC0 | c >> 6), u[1] = (uint8_t)(0x80 | (c & 63)), 2;
    if (c < 0x10000)
        return u[0] = (uint8_t)(0xE0 | c >> 12), u[1] = (uint8_t)(0x80 | (c >> 6 & 63)),
               u[2] = (uint8_t)(0x80 | (c & 63)), 3;
    u[0] = (uint8_t)(0xF0 | c >> 18), u[1] = (uint8_t)(0x80 | (c >> 12 & 63));
    u[2] = (uint8_t)(0x80 | (c >> 6 & 63)), u[3] = (uint8_t)(0x80 | (c & 63));
    return 4;
}

/* One character from the sorted, merged ranges r[0..2m). */
static struct gfrag emit_class(struct gram_builder *b, const uint32_t *r, int32_t m)
{
    int32_t s = gb_node(b), e = gb_node(b);
    uint8_t ascii[256] = {0};
    bool any_ascii = false;
    static const uint32_t split[][2] = {
        {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}};
    for (int32_t k = 0; k < m && !gb_full(b); k++) {
        uint32_t lo = r[2 * k], hi = r[2 * k + 1];
        for (uint32_t c = lo; c <= hi && c < 0x80; c++) ascii[c] = 1, any_ascii = true;
        for (size_t j = 0; j < ARRAY_LEN(split); j++) {
            uint32_t a = lo > split[j][0] ? lo : split[j][0];
            uint32_t z = hi < split[j][1] ? hi : split[j][1];
            if (a > z) continue;
            uint8_t ua[4], uz[4];
            int n = utf8_enc(a, ua);
            utf8_enc(z, uz);
            struct gfrag f = utf8_span(b, ua, uz, n);
            gb_eps(b, s, f.s);
            gb_eps(b, f.e, e);
        }
    }
    if (any_ascii) {
        struct gfrag f = gb_byteset(b, ascii);
        gb_eps(b, s, f.s);
        gb_eps(b, f.e, e);
    }
    return (struct gfrag){s, e};
}

static struct gfrag gn_emit(struct gram_builder *b, struct gp *p, int32_t x)
{
    const struct gn *t = &p->t[x];
    if (gb_full(b) || p->failed) return gb_empty(b);
    switch (t->kind) {
    case GN_LIT: return gb_lit(b, p->lit + t->off, (size_t)t->len);
    case GN_CLASS: return emit_class(b, p->rg + t->off, t->len);
    case GN_REF: return gb_call(b, p->r[t->a].id);
    case GN_SEQ: {
        /* a SEQ chain leans left (((e a) b) c): walk it without recursing on the left */
        int32_t n = 0;
        for (int32_t y = x; p->t[y].kind == GN_SEQ; y = p->t[y].a) n++;
        struct gfrag f = gb_empty(b);
        int32_t *items = trymalloc((size_t)n * sizeof *items);
        if (!items) {
            gp_fail(p, "out of memory");
            return f;
        }
        int32_t k = n;
        for (int32_t y = x; p->t[y].kind == GN_SEQ; y = p->t[y].a) items[--k] = p->t[y].b;
        for (k = 0; k < n && !gb_full(b); k++) f = gb_seq(b, f, gn_emit(b, p, items[k]));
        free(items);
        return f;
    }
    case GN_ALT: {
        int32_t s = gb_node(b), e = gb_node(b);
        for (int32_t y = x;; y = p->t[y].a) {
            int32_t arm = p->t[y].kind == GN_ALT ? p->t[y].b : y;
            struct gfrag f = gn_emit(b, p, arm);
            gb_eps(b, s, f.s);
            gb_eps(b, f.e, e);
            if (p->t[y].kind != GN_ALT || gb_full(b)) break;
        }
        return (struct gfrag){s, e};
    }
    case GN_REP: {
        struct gfrag f = gb_empty(b);
        for (int32_t k = 0; k < t->min && !gb_full(b); k++)
            f = gb_seq(b, f, gn_emit(b, p, t->a));
        if (t->max < 0) return gb_seq(b, f, gb_star(b, gn_emit(b, p, t->a)));
        struct gfrag tail = gb_empty(b);
        for (int32_t k = t->min; k < t->max && !gb_full(b); k++)
            tail = gb_opt(b, gb_seq(b, gn_emit(b, p, t->a), tail));
        return gb_seq(b, f, tail);
    }
    default: return gb_empty(b);
    }
}

int gb_gbnf(struct gram_builder *b, const char *text, size_t n, int32_t *root, char *err,
            size_t errlen)
{
    struct gp p = {.s = text, .n = n, .err = err, .errlen = errlen};
    int rc = -1;
    int32_t r = 0;
    if (n > GN_MAX_TEXT) {
        gp_fail(&p, "the grammar is too large (more than %d bytes)", GN_MAX_TEXT);
        goto out;
    }
    if (gp_grammar(&p) || gp_check(&p, &r)) goto out;
    for (int32_t k = 0; k < p.nr; k++) p.r[k].id = gb_rule(b);
    for (int32_t k = 0; k < p.nr && !gb_full(b) && !p.failed; k++)
        gb_define(b, p.r[k].id, gn_emit(b, &p, p.r[k].body));
    if (p.failed) goto out;
    if (gb_full(b)) {
        gp_fail(&p, "the grammar is too large (more than %d states)", GRAM_MAX_NODES);
        goto out;
    }
    *root = p.r[r].id;
    rc = 0;
out:
    free(p.t);
    free(p.lit);
    free(p.rg);
    free(p.r);
    return rc;
}
