/*
 * structured: JSON Schema, regex, choice and tool-call constraints -> grammars, and the
 * request fields that ask for them. See structured.h for the language produced.
 */
#include "server/structured.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== JSON Schema -> grammar ==== */

#define SC_MAX_DEPTH 64      /* nesting of subschemas while compiling */
#define SC_MAX_COUNT 1024    /* largest minItems/maxItems/minLength/maxLength bound */
#define SC_MAX_SUBSCHEMAS 4096
#define SC_HORIZON 128       /* bytes: longer tokens than this disable the shared string masks */

struct sc_memo {
    const cJSON *schema;
    int32_t rule;
};

struct sc {
    struct gram_builder *b;
    const cJSON *root;
    bool any_ws;
    int32_t r_value, r_string, r_number, r_object, r_array, r_jchar; /* -1 until needed */
    struct sc_memo *memo;
    int32_t n_memo, cap_memo;
    char path[256]; /* the JSON pointer of the schema being compiled, for errors */
    char *err;
    size_t errlen;
    bool failed;
    int depth;
};

static int sc_fail(struct sc *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sc_fail(struct sc *c, const char *fmt, ...)
{
    if (c->failed) return -1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s at '#%s'", msg, c->path);
    c->failed = true;
    return -1;
}

static struct gfrag lit(struct sc *c, const char *s) { return gb_lit(c->b, s, strlen(s)); }

static struct gfrag ws(struct sc *c)
{
    if (!c->any_ws) return gb_empty(c->b);
    uint8_t set[256] = {0};
    set[' '] = set['\t'] = set['\n'] = 1;
    return gb_star(c->b, gb_byteset(c->b, set));
}

/* WS "," WS, or "," */
static struct gfrag comma(struct sc *c)
{
    return gb_seq(c->b, gb_seq(c->b, ws(c), lit(c, ",")), ws(c));
}

static struct gfrag colon(struct sc *c)
{
    return gb_seq(c->b, gb_seq(c->b, ws(c), lit(c, ":")), ws(c));
}

/* One JSON string character: unescaped, or an escape. */
static struct gfrag jchar_frag(struct sc *c)
{
    uint8_t set[256] = {0};
    for (int k = 0x20; k < 0x80; k++) set[k] = 1;
    set['"'] = set['\\'] = 0;
    struct gfrag plain = gb_alt(c->b, gb_byteset(c->b, set), gb_utf8_nonascii(c->b));
    uint8_t esc[256] = {0}, hex[256] = {0};
    for (const char *p = "\"\\/bfnrt"; *p; p++) esc[(uint8_t)*p] = 1;
    for (const char *p = "0123456789abcdefABCDEF"; *p; p++) hex[(uint8_t)*p] = 1;
    struct gfrag u = lit(c, "u");
    for (int k = 0; k < 4; k++) u = gb_seq(c->b, u, gb_byteset(c->b, hex));
    struct gfrag e = gb_seq(c->b, lit(c, "\\"), gb_alt(c->b, gb_byteset(c->b, esc), u));
    return gb_alt(c->b, plain, e);
}

static int32_t rule_jchar(struct sc *c)
{
    if (c->r_jchar < 0) {
        c->r_jchar = gb_rule(c->b);
        gb_define(c->b, c->r_jchar, jchar_frag(c));
    }
    return c->r_jchar;
}

static int32_t rule_string(struct sc *c)
{
    if (c->r_string < 0) {
        c->r_string = gb_rule(c->b);
        struct gfrag f = gb_seq(c->b, lit(c, "\""), gb_star(c->b, jchar_frag(c)));
        gb_define(c->b, c->r_string, gb_seq(c->b, f, lit(c, "\"")));
    }
    return c->r_string;
}

static struct gfrag digits(struct sc *c, bool plus)
{
    struct gfrag d = gb_range(c->b, '0', '9');
    return plus ? gb_plus(c->b, d) : gb_star(c->b, d);
}

/* -?(0|[1-9][0-9]*) */
static struct gfrag int_frag(struct sc *c, bool neg)
{
    struct gfrag i =
        gb_alt(c->b, lit(c, "0"), gb_seq(c->b, gb_range(c->b, '1', '9'), digits(c, false)));
    return neg ? gb_seq(c->b, gb_opt(c->b, lit(c, "-")), i) : i;
}

static int32_t rule_number(struct sc *c)
{
    if (c->r_number < 0) {
        c->r_number = gb_rule(c->b);
        struct gfrag f = int_frag(c, true);
        f = gb_seq(c->b, f, gb_opt(c->b, gb_seq(c->b, lit(c, "."), digits(c, true))));
        uint8_t e[256] = {0}, s[256] = {0};
        e['e'] = e['E'] = s['+'] = s['-'] = 1;
        struct gfrag x = gb_seq(c->b, gb_byteset(c->b, e), gb_opt(c->b, gb_byteset(c->b, s)));
        f = gb_seq(c->b, f, gb_opt(c->b, gb_seq(c->b, x, digits(c, true))));
        gb_define(c->b, c->r_number, f);
    }
    return c->r_number;
}

static int32_t rule_value(struct sc *c);

static int32_t rule_object(struct sc *c)
{
    if (c->r_object < 0) {
        c->r_object = gb_rule(c->b);
        int32_t v = rule_value(c), s = rule_string(c);
        struct gfrag m = gb_seq(c->b, gb_seq(c->b, gb_call(c->b, s), colon(c)), gb_call(c->b, v));
        struct gfrag m2 = gb_seq(c->b, gb_seq(c->b, gb_call(c->b, s), colon(c)), gb_call(c->b, v));
        struct gfrag body = gb_seq(c->b, m, gb_star(c->b, gb_seq(c->b, comma(c), m2)));
        body = gb_opt(c->b, gb_seq(c->b, body, ws(c)));
        struct gfrag f = gb_seq(c->b, gb_seq(c->b, lit(c, "{"), ws(c)), body);
        gb_define(c->b, c->r_object, gb_seq(c->b, f, lit(c, "}")));
    }
    return c->r_object;
}

static int32_t rule_array(struct sc *c)
{
    if (c->r_array < 0) {
        c->r_array = gb_rule(c->b);
        int32_t v = rule_value(c);
        struct gfrag body = gb_seq(c->b, gb_call(c->b, v),
                                   gb_star(c->b, gb_seq(c->b, comma(c), gb_call(c->b, v))));
        body = gb_opt(c->b, gb_seq(c->b, body, ws(c)));
        struct gfrag f = gb_seq(c->b, gb_seq(c->b, lit(c, "["), ws(c)), body);
        gb_define(c->b, c->r_array, gb_seq(c->b, f, lit(c, "]")));
    }
    return c->r_array;
}

static int32_t rule_value(struct sc *c)
{
    if (c->r_value < 0) {
        c->r_value = gb_rule(c->b);
        struct gfrag f = gb_call(c->b, rule_object(c));
        f = gb_alt(c->b, f, gb_call(c->b, rule_array(c)));
        f = gb_alt(c->b, f, gb_call(c->b, rule_string(c)));
        f = gb_alt(c->b, f, gb_call(c->b, rule_number(c)));
        f = gb_alt(c->b, f, lit(c, "true"));
        f = gb_alt(c->b, f, lit(c, "false"));
        f = gb_alt(c->b, f, lit(c, "null"));
        gb_define(c->b, c->r_value, f);
    }
    return c->r_value;
}

/* A JSON value written compactly (enum, const): strings as cJSON writes them (UTF-8 kept,
 * '"', '\\' and control characters escaped). */
static struct gfrag value_lit(struct sc *c, const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);
    if (!s) {
        sc_fail(c, "out of memory");
        return gb_empty(c->b);
    }
    struct gfrag f = lit(c, s);
    free(s);
    return f;
}

static struct gfrag key_lit(struct sc *c, const char *name)
{
    cJSON *k = cJSON_CreateString(name);
    struct gfrag f = k ? value_lit(c, k) : gb_empty(c->b);
    cJSON_Delete(k);
    return f;
}

/* ---- integers and numbers with bounds ---- */

/* Decimal strings of [lo, hi], both of width w (leading zeros kept). */
static struct gfrag digit_range(struct sc *c, const char *lo, const char *hi, int w)
{
    if (w == 1) return gb_range(c->b, (uint8_t)lo[0], (uint8_t)hi[0]);
    if (lo[0] == hi[0])
        return gb_seq(c->b, gb_range(c->b, (uint8_t)lo[0], (uint8_t)lo[0]),
                      digit_range(c, lo + 1, hi + 1, w - 1));
    char nines[24], zeros[24];
    memset(nines, '9', (size_t)w);
    memset(zeros, '0', (size_t)w);
    struct gfrag f = gb_seq(c->b, gb_range(c->b, (uint8_t)lo[0], (uint8_t)lo[0]),
                            digit_range(c, lo + 1, nines, w - 1));
    if (hi[0] - lo[0] > 1) {
        struct gfrag mid = gb_range(c->b, (uint8_t)(lo[0] + 1), (uint8_t)(hi[0] - 1));
        for (int k = 1; k < w; k++) mid = gb_seq(c->b, mid, gb_range(c->b, '0', '9'));
        f = gb_alt(c->b, f, mid);
    }
    return gb_alt(c->b, f, gb_seq(c->b, gb_range(c->b, (uint8_t)hi[0], (uint8_t)hi[0]),
                                  digit_range(c, zeros, hi + 1, w - 1)));
}

/* Canonical decimal texts of the integers in [lo, hi] (0 <= lo; hi < 0: no upper bound). */
static struct gfrag uint_range(struct sc *c, long long lo, long long hi)
{
    char a[24], z[24];
    int wl = snprintf(a, sizeof a, "%lld", lo);
    int wh = hi < 0 ? wl : snprintf(z, sizeof z, "%lld", hi);
    struct gfrag f = {-1, -1};
    for (int w = wl; w <= wh; w++) {
        char x[24], y[24];
        if (w == wl) memcpy(x, a, (size_t)w + 1);
        else {
            memset(x, '0', (size_t)w);
            x[0] = '1';
            x[w] = 0;
        }
        if (hi >= 0 && w == wh) memcpy(y, z, (size_t)w + 1);
        else {
            memset(y, '9', (size_t)w);
            y[w] = 0;
        }
        struct gfrag r = digit_range(c, x, y, w);
        f = f.s < 0 ? r : gb_alt(c->b, f, r);
    }
    if (hi < 0) { /* and every longer number */
        struct gfrag more = gb_range(c->b, '1', '9');
        for (int k = 0; k < wl; k++) more = gb_seq(c->b, more, gb_range(c->b, '0', '9'));
        f = gb_alt(c->b, f, gb_seq(c->b, more, digits(c, false)));
    }
    return f;
}

#define NO_BOUND LLONG_MIN

/* Integers in [lo, hi]; NO_BOUND on either side for none. */
static struct gfrag int_range(struct sc *c, long long lo, long long hi)
{
    struct gfrag f = {-1, -1};
    if (hi == NO_BOUND || hi >= 0) { /* the non-negative part */
        long long a = lo == NO_BOUND || lo < 0 ? 0 : lo;
        f = uint_range(c, a, hi == NO_BOUND ? -1 : hi);
    }
    if (lo == NO_BOUND || lo < 0) { /* -|x| with |x| in [max(1, -hi), -lo] */
        long long a = hi == NO_BOUND || hi >= 0 ? 1 : -hi;
        struct gfrag n = gb_seq(c->b, lit(c, "-"), uint_range(c, a, lo == NO_BOUND ? -1 : -lo));
        f = f.s < 0 ? n : gb_alt(c->b, f, n);
    }
    return f;
}

/* A bound as a long long; false if it is not a number or out of range. */
static bool get_bound(const cJSON *v, double *out)
{
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || fabs(v->valuedouble) > 1e15)
        return false;
    *out = v->valuedouble;
    return true;
}

static struct gfrag integer_frag(struct sc *c, const cJSON *s)
{
    long long lo = NO_BOUND, hi = NO_BOUND;
    const char *names[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    for (int k = 0; k < 4; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, names[k]);
        if (!v) continue;
        double d;
        if (cJSON_IsBool(v)) {
            sc_fail(c, "'%s' must be a number (draft 4 boolean form is not supported)", names[k]);
            return gb_empty(c->b);
        }
        if (!get_bound(v, &d)) {
            sc_fail(c, "'%s' must be a number of magnitude at most 1e15", names[k]);
            return gb_empty(c->b);
        }
        long long x = k == 0 ? (long long)ceil(d) : k == 1 ? (long long)floor(d) + 1
                    : k == 2 ? (long long)floor(d) : (long long)ceil(d) - 1;
        if (k < 2) lo = lo == NO_BOUND || x > lo ? x : lo;
        else hi = hi == NO_BOUND || x < hi ? x : hi;
    }
    if (lo != NO_BOUND && hi != NO_BOUND && lo > hi) {
        sc_fail(c, "no integer satisfies the bounds");
        return gb_empty(c->b);
    }
    if (lo == NO_BOUND && hi == NO_BOUND) return int_frag(c, true);
    return int_range(c, lo, hi);
}

/* Numbers in [a, b] with integer bounds, no exponent (see structured.h). */
static struct gfrag number_frag(struct sc *c, const cJSON *s)
{
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(s, "minimum");
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(s, "maximum");
    if (cJSON_GetObjectItemCaseSensitive(s, "exclusiveMinimum") ||
        cJSON_GetObjectItemCaseSensitive(s, "exclusiveMaximum")) {
        sc_fail(c, "unsupported JSON Schema keyword '%s' on type 'number' (use 'minimum' or "
                   "'maximum', or type 'integer')",
                cJSON_GetObjectItemCaseSensitive(s, "exclusiveMinimum") ? "exclusiveMinimum"
                                                                         : "exclusiveMaximum");
        return gb_empty(c->b);
    }
    if (!mn && !mx) return gb_call(c->b, rule_number(c));
    double a = 0, b = 0;
    if ((mn && (!get_bound(mn, &a) || a != floor(a))) ||
        (mx && (!get_bound(mx, &b) || b != floor(b)))) {
        sc_fail(c, "'%s' on type 'number' must be an integer of magnitude at most 1e15",
                mn && !(get_bound(mn, &a) && a == floor(a)) ? "minimum" : "maximum");
        return gb_empty(c->b);
    }
    if (mn && mx && a > b) {
        sc_fail(c, "no number satisfies the bounds");
        return gb_empty(c->b);
    }
    long long lo = mn ? (long long)a : NO_BOUND, hi = mx ? (long long)b : NO_BOUND;
    struct gfrag f = {-1, -1};
    /* non-negative part: I.F with I in [max(lo, 0), hi - 1] and any fraction, or I = hi with
     * zeros */
    if (hi == NO_BOUND || hi >= 0) {
        long long i0 = lo == NO_BOUND || lo < 0 ? 0 : lo;
        struct gfrag frac = gb_opt(c->b, gb_seq(c->b, lit(c, "."), digits(c, true)));
        if (hi == NO_BOUND) {
            f = gb_seq(c->b, uint_range(c, i0, -1), frac);
        } else {
            struct gfrag zf = gb_opt(c->b, gb_seq(c->b, lit(c, "."), gb_plus(c->b, lit(c, "0"))));
            f = gb_seq(c->b, uint_range(c, hi, hi), zf);
            if (i0 <= hi - 1) f = gb_alt(c->b, f, gb_seq(c->b, uint_range(c, i0, hi - 1), frac));
        }
    }
    if (lo == NO_BOUND || lo < 0) { /* -(I.F): I in [max(0, -hi), -lo - 1] any F, or -lo zeros */
        long long i0 = hi == NO_BOUND || hi >= 0 ? 0 : -hi;
        struct gfrag frac = gb_opt(c->b, gb_seq(c->b, lit(c, "."), digits(c, true)));
        struct gfrag n;
        if (lo == NO_BOUND) {
            n = gb_seq(c->b, uint_range(c, i0, -1), frac);
        } else {
            struct gfrag zf = gb_opt(c->b, gb_seq(c->b, lit(c, "."), gb_plus(c->b, lit(c, "0"))));
            n = gb_seq(c->b, uint_range(c, -lo, -lo), zf);
            if (i0 <= -lo - 1) n = gb_alt(c->b, n, gb_seq(c->b, uint_range(c, i0, -lo - 1), frac));
        }
        n = gb_seq(c->b, lit(c, "-"), n);
        f = f.s < 0 ? n : gb_alt(c->b, f, n);
    }
    return f;
}

/* ---- strings ---- */

/* A calendar date as Python's date.fromisoformat takes it (what jsonschema's "date" check
 * uses): years 0001-9999, the days of each month, February 29 in leap years only. */
#define FMT_DATE                                                                              \
    "(([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)-"                                  \
    "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|"           \
    "02-(0[1-9]|1[0-9]|2[0-8]))|"                                                             \
    "([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)-02-29)"
/* A time of day with offset; no leap second (jsonschema refuses second 60). */
#define FMT_TIME                                                                              \
    "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]+)?"                                    \
    "([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"

static const struct {
    const char *name, *re;
} FORMATS[] = {
    {"date", FMT_DATE},
    {"time", FMT_TIME},
    {"date-time", FMT_DATE "[Tt]" FMT_TIME},
    {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
    {"email", "[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+"},
    {"ipv4", "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
             "(\\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"},
};

static int get_count(struct sc *c, const cJSON *s, const char *key, int32_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble))
        return sc_fail(c, "'%s' must be a non-negative integer", key);
    if (v->valuedouble > SC_MAX_COUNT)
        return sc_fail(c, "'%s' above %d is not supported", key, SC_MAX_COUNT);
    *out = (int32_t)v->valuedouble;
    return 1;
}

static struct gfrag string_frag(struct sc *c, const cJSON *s)
{
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(s, "pattern");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(s, "format");
    int32_t mn = 0, mx = -1;
    int rmn = get_count(c, s, "minLength", &mn), rmx = get_count(c, s, "maxLength", &mx);
    if (rmn < 0 || rmx < 0) return gb_empty(c->b);
    const char *re = NULL;
    int flags = GB_RE_JSON;
    if (pat) {
        if (!cJSON_IsString(pat)) {
            sc_fail(c, "'pattern' must be a string");
            return gb_empty(c->b);
        }
        re = pat->valuestring;
        flags |= GB_RE_SEARCH;
    } else if (fmt) {
        if (!cJSON_IsString(fmt)) {
            sc_fail(c, "'format' must be a string");
            return gb_empty(c->b);
        }
        for (size_t k = 0; k < ARRAY_LEN(FORMATS) && !re; k++)
            if (!strcmp(fmt->valuestring, FORMATS[k].name)) re = FORMATS[k].re;
    }
    if (re) {
        if (rmn || rmx) {
            sc_fail(c, "'minLength'/'maxLength' together with '%s' are not supported",
                    pat ? "pattern" : "format");
            return gb_empty(c->b);
        }
        if (pat && fmt) {
            sc_fail(c, "'pattern' together with 'format' is not supported");
            return gb_empty(c->b);
        }
        struct gfrag f;
        char e[160];
        if (gb_regex(c->b, re, strlen(re), flags, &f, e, sizeof e)) {
            sc_fail(c, "bad 'pattern': %s", e);
            return gb_empty(c->b);
        }
        return gb_seq(c->b, gb_seq(c->b, lit(c, "\""), f), lit(c, "\""));
    }
    if (mx >= 0 && mn > mx) {
        sc_fail(c, "'minLength' %d is above 'maxLength' %d", (int)mn, (int)mx);
        return gb_empty(c->b);
    }
    if (mn == 0 && mx < 0) return gb_call(c->b, rule_string(c));
    /* one call of the character rule per counted position; positions more than
     * SC_HORIZON characters from the end of their run share one mask cache entry */
    int32_t jc = rule_jchar(c), rep = -1;
    struct gfrag f = lit(c, "\"");
    for (int32_t k = 0; k < mn; k++) {
        struct gfrag ch = gb_call(c->b, jc);
        if (mn - (k + 1) > SC_HORIZON) {
            if (rep < 0) rep = ch.e;
            else gb_same_mask(c->b, ch.e, rep, SC_HORIZON);
        }
        f = gb_seq(c->b, f, ch);
    }
    if (mx < 0) {
        f = gb_seq(c->b, f, gb_star(c->b, jchar_frag(c)));
    } else {
        struct gfrag tail = gb_empty(c->b);
        rep = -1;
        for (int32_t k = mn; k < mx; k++) { /* built innermost first: k - mn chars remain after */
            struct gfrag ch = gb_call(c->b, jc);
            if (k - mn > SC_HORIZON) {
                if (rep < 0) rep = ch.e;
                else gb_same_mask(c->b, ch.e, rep, SC_HORIZON);
            }
            tail = gb_opt(c->b, gb_seq(c->b, ch, tail));
        }
        f = gb_seq(c->b, f, tail);
    }
    return gb_seq(c->b, f, lit(c, "\""));
}

/* ---- schemas ---- */

static int32_t schema_rule(struct sc *c, const cJSON *s, const char *seg, int idx);

/* Every keyword of schema s is known; unsupported ones are an error. */
static int check_keywords(struct sc *c, const cJSON *s)
{
    static const char *const unsupported[] = {
        "allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas",
        "dependencies", "patternProperties", "propertyNames", "unevaluatedProperties",
        "unevaluatedItems", "contains", "minContains", "maxContains", "multipleOf",
        "minProperties", "maxProperties", "$dynamicRef", "$recursiveRef", "additionalItems",
    };
    for (const cJSON *k = s->child; k; k = k->next) {
        for (size_t i = 0; i < ARRAY_LEN(unsupported); i++) {
            if (strcmp(k->string, unsupported[i])) continue;
            if (!strcmp(k->string, "allOf") && cJSON_IsArray(k) && cJSON_GetArraySize(k) == 1)
                continue; /* a single subschema: taken as that subschema */
            return sc_fail(c, "unsupported JSON Schema keyword '%s'", k->string);
        }
        if (!strcmp(k->string, "uniqueItems") && cJSON_IsTrue(k))
            return sc_fail(c, "unsupported JSON Schema keyword 'uniqueItems'");
    }
    return 0;
}

static const cJSON *resolve_ref(struct sc *c, const char *ref)
{
    if (ref[0] != '#') {
        sc_fail(c, "only local '$ref' (\"#...\") is supported, not '%s'", ref);
        return NULL;
    }
    const cJSON *cur = c->root;
    const char *p = ref + 1;
    if (*p && *p != '/') {
        sc_fail(c, "'$ref' '%s' is not a JSON pointer", ref);
        return NULL;
    }
    while (*p == '/') {
        p++;
        char seg[128];
        size_t n = 0;
        while (*p && *p != '/' && n + 1 < sizeof seg) {
            if (p[0] == '~' && p[1] == '0') seg[n++] = '~', p += 2;
            else if (p[0] == '~' && p[1] == '1') seg[n++] = '/', p += 2;
            else seg[n++] = *p++;
        }
        seg[n] = 0;
        if (cJSON_IsArray(cur)) {
            char *end;
            long i = strtol(seg, &end, 10);
            cur = *end || end == seg ? NULL : cJSON_GetArrayItem(cur, (int)i);
        } else {
            cur = cJSON_IsObject(cur) ? cJSON_GetObjectItemCaseSensitive(cur, seg) : NULL;
        }
        if (!cur) {
            sc_fail(c, "'$ref' '%s' does not resolve", ref);
            return NULL;
        }
    }
    return cur;
}

/* Does v have type t ("integer": a number with an integral value)? */
static bool has_type(const cJSON *v, const char *t)
{
    if (!strcmp(t, "null")) return cJSON_IsNull(v);
    if (!strcmp(t, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(t, "string")) return cJSON_IsString(v);
    if (!strcmp(t, "number")) return cJSON_IsNumber(v);
    if (!strcmp(t, "integer")) return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    if (!strcmp(t, "object")) return cJSON_IsObject(v);
    if (!strcmp(t, "array")) return cJSON_IsArray(v);
    return false;
}

static bool type_allows(const cJSON *type, const cJSON *v)
{
    if (!type) return true;
    if (cJSON_IsString(type)) return has_type(v, type->valuestring);
    for (const cJSON *t = type->child; t; t = t->next)
        if (cJSON_IsString(t) && has_type(v, t->valuestring)) return true;
    return false;
}

static struct gfrag object_frag(struct sc *c, const cJSON *s)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (props && !cJSON_IsObject(props)) {
        sc_fail(c, "'properties' must be an object");
        return gb_empty(c->b);
    }
    if (req && !cJSON_IsArray(req)) {
        sc_fail(c, "'required' must be an array of strings");
        return gb_empty(c->b);
    }
    for (const cJSON *r = req ? req->child : NULL; r; r = r->next) {
        if (!cJSON_IsString(r)) {
            sc_fail(c, "'required' must be an array of strings");
            return gb_empty(c->b);
        }
        if (!props || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring)) {
            sc_fail(c, "required property '%s' is not in 'properties'", r->valuestring);
            return gb_empty(c->b);
        }
    }
    if (addl && !cJSON_IsBool(addl) && !cJSON_IsObject(addl)) {
        sc_fail(c, "'additionalProperties' must be a boolean or a schema");
        return gb_empty(c->b);
    }
    int n = props ? cJSON_GetArraySize(props) : 0;
    /* states S[i][e]: before property i, e = some member written already */
    int32_t *S = xmalloc(((size_t)n + 1) * 2 * sizeof *S);
    for (int i = 0; i <= n; i++) S[2 * i] = gb_node(c->b), S[2 * i + 1] = gb_node(c->b);
    int i = 0;
    for (const cJSON *p = props ? props->child : NULL; p && !c->failed; p = p->next, i++) {
        bool required = false;
        for (const cJSON *r = req ? req->child : NULL; r && !required; r = r->next)
            required = !strcmp(r->valuestring, p->string);
        int32_t rule = schema_rule(c, p, "properties", -1);
        for (int e = 0; e < 2 && !c->failed; e++) {
            struct gfrag m = gb_seq(c->b, gb_seq(c->b, key_lit(c, p->string), colon(c)),
                                    gb_call(c->b, rule));
            if (e) m = gb_seq(c->b, comma(c), m);
            gb_eps(c->b, S[2 * i + e], m.s);
            gb_eps(c->b, m.e, S[2 * (i + 1) + 1]);
            if (!required) gb_eps(c->b, S[2 * i + e], S[2 * (i + 1) + e]);
        }
    }
    int32_t end = gb_node(c->b);
    gb_eps(c->b, S[2 * n], end);
    gb_eps(c->b, S[2 * n + 1], end);
    bool open_obj = addl ? !cJSON_IsFalse(addl) : !props; /* {"type": "object"}: any members */
    if (open_obj && !c->failed) {
        int32_t rule = !addl || cJSON_IsTrue(addl)
                           ? rule_value(c)
                           : schema_rule(c, addl, "additionalProperties", -1);
        int32_t more = gb_node(c->b);
        for (int e = 0; e < 2; e++) {
            struct gfrag m = gb_seq(c->b, gb_seq(c->b, gb_call(c->b, rule_string(c)), colon(c)),
                                    gb_call(c->b, rule));
            if (e) m = gb_seq(c->b, comma(c), m);
            gb_eps(c->b, e ? more : S[2 * n], m.s);
            gb_eps(c->b, m.e, more);
        }
        gb_eps(c->b, S[2 * n + 1], more);
        gb_eps(c->b, more, end);
    }
    struct gfrag f = gb_seq(c->b, gb_seq(c->b, lit(c, "{"), ws(c)), (struct gfrag){S[0], end});
    free(S);
    return gb_seq(c->b, gb_seq(c->b, f, ws(c)), lit(c, "}"));
}

static struct gfrag array_frag(struct sc *c, const cJSON *s)
{
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
    const cJSON *prefix = cJSON_GetObjectItemCaseSensitive(s, "prefixItems");
    if (items && cJSON_IsArray(items)) {
        sc_fail(c, "'items' as an array is not supported (use 'prefixItems')");
        return gb_empty(c->b);
    }
    if (items && !cJSON_IsBool(items) && !cJSON_IsObject(items)) {
        sc_fail(c, "'items' must be a schema");
        return gb_empty(c->b);
    }
    if (prefix && !cJSON_IsArray(prefix)) {
        sc_fail(c, "'prefixItems' must be an array of schemas");
        return gb_empty(c->b);
    }
    int32_t mn = 0, mx = -1;
    if (get_count(c, s, "minItems", &mn) < 0 || get_count(c, s, "maxItems", &mx) < 0)
        return gb_empty(c->b);
    int32_t np = prefix ? cJSON_GetArraySize(prefix) : 0;
    if (np > SC_MAX_COUNT) {
        sc_fail(c, "'prefixItems' longer than %d is not supported", SC_MAX_COUNT);
        return gb_empty(c->b);
    }
    bool more = !cJSON_IsFalse(items);
    if (!more) mx = mx < 0 ? np : VLM_MIN(mx, np);
    if (mx >= 0 && mn > mx) {
        sc_fail(c, "no array satisfies 'minItems' %d with at most %d items", (int)mn, (int)mx);
        return gb_empty(c->b);
    }
    int32_t item_rule = -1;
    if (more) {
        item_rule =
            items && !cJSON_IsTrue(items) ? schema_rule(c, items, "items", -1) : rule_value(c);
    }
    int32_t K = VLM_MAX(mn, np); /* explicit positions */
    if (mx >= 0) K = mx;
    int32_t *P = xmalloc(((size_t)K + 1) * sizeof *P);
    for (int32_t k = 0; k <= K; k++) P[k] = gb_node(c->b);
    int32_t end = gb_node(c->b);
    for (int32_t k = 0; k < K && !c->failed; k++) {
        int32_t r =
            k < np ? schema_rule(c, cJSON_GetArrayItem(prefix, k), "prefixItems", k) : item_rule;
        struct gfrag el = gb_call(c->b, r);
        if (k) el = gb_seq(c->b, comma(c), el);
        gb_eps(c->b, P[k], el.s);
        gb_eps(c->b, el.e, P[k + 1]);
        if (k >= mn) gb_eps(c->b, P[k], end);
    }
    gb_eps(c->b, P[K], end);
    if (mx < 0 && more && !c->failed) { /* unbounded: loop at P[K] */
        int32_t loop = K ? P[K] : gb_node(c->b);
        if (!K) {
            struct gfrag first = gb_call(c->b, item_rule);
            gb_eps(c->b, P[0], first.s);
            gb_eps(c->b, first.e, loop);
            gb_eps(c->b, loop, end);
        }
        struct gfrag el = gb_seq(c->b, comma(c), gb_call(c->b, item_rule));
        gb_eps(c->b, loop, el.s);
        gb_eps(c->b, el.e, loop);
    }
    struct gfrag f = gb_seq(c->b, gb_seq(c->b, lit(c, "["), ws(c)), (struct gfrag){P[0], end});
    free(P);
    return gb_seq(c->b, gb_seq(c->b, f, ws(c)), lit(c, "]"));
}

static struct gfrag type_frag(struct sc *c, const cJSON *s, const char *t)
{
    if (!strcmp(t, "null")) return lit(c, "null");
    if (!strcmp(t, "boolean")) return gb_alt(c->b, lit(c, "true"), lit(c, "false"));
    if (!strcmp(t, "integer")) return integer_frag(c, s);
    if (!strcmp(t, "number")) return number_frag(c, s);
    if (!strcmp(t, "string")) return string_frag(c, s);
    if (!strcmp(t, "object")) return object_frag(c, s);
    if (!strcmp(t, "array")) return array_frag(c, s);
    sc_fail(c, "unknown type '%s'", t);
    return gb_empty(c->b);
}

static bool has_any(const cJSON *s, const char *const *keys)
{
    for (; *keys; keys++)
        if (cJSON_GetObjectItemCaseSensitive(s, *keys)) return true;
    return false;
}

static struct gfrag schema_body(struct sc *c, const cJSON *s)
{
    if (cJSON_IsTrue(s)) return gb_call(c->b, rule_value(c));
    if (cJSON_IsFalse(s)) {
        sc_fail(c, "the schema false allows no value");
        return gb_empty(c->b);
    }
    if (!cJSON_IsObject(s)) {
        sc_fail(c, "a schema must be an object or a boolean");
        return gb_empty(c->b);
    }
    if (check_keywords(c, s) < 0) return gb_empty(c->b);
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(s, "allOf");
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    const cJSON *one = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cst = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    static const char *const constraining[] = {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "minLength", "maxLength",
        "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "$ref", "allOf", NULL};
    int n_comb = !!ref + !!all + !!any + !!one;
    if (n_comb) {
        int n_constr = 0;
        for (const char *const *k = constraining; *k; k++)
            n_constr += cJSON_GetObjectItemCaseSensitive(s, *k) != NULL;
        if (n_constr > 1) {
            sc_fail(c, "'%s' together with other constraining keywords is not supported",
                    ref ? "$ref" : all ? "allOf" : any ? "anyOf" : "oneOf");
            return gb_empty(c->b);
        }
    }
    if (ref) {
        if (!cJSON_IsString(ref)) {
            sc_fail(c, "'$ref' must be a string");
            return gb_empty(c->b);
        }
        const cJSON *t = resolve_ref(c, ref->valuestring);
        if (!t) return gb_empty(c->b);
        return gb_call(c->b, schema_rule(c, t, NULL, -1));
    }
    if (all) return gb_call(c->b, schema_rule(c, all->child, "allOf", 0));
    if (any || one) {
        const cJSON *arr = any ? any : one;
        const char *kw = any ? "anyOf" : "oneOf";
        if (!cJSON_IsArray(arr) || !cJSON_GetArraySize(arr)) {
            sc_fail(c, "'%s' must be a non-empty array of schemas", kw);
            return gb_empty(c->b);
        }
        struct gfrag f = {-1, -1};
        int i = 0;
        for (const cJSON *x = arr->child; x && !c->failed; x = x->next, i++) {
            struct gfrag g = gb_call(c->b, schema_rule(c, x, kw, i));
            f = f.s < 0 ? g : gb_alt(c->b, f, g);
        }
        return f;
    }
    if (type && !cJSON_IsString(type) && !cJSON_IsArray(type)) {
        sc_fail(c, "'type' must be a string or an array of strings");
        return gb_empty(c->b);
    }
    if (en || cst) {
        if (en && (!cJSON_IsArray(en) || !cJSON_GetArraySize(en))) {
            sc_fail(c, "'enum' must be a non-empty array");
            return gb_empty(c->b);
        }
        struct gfrag f = {-1, -1};
        const cJSON *first = en ? en->child : cst;
        for (const cJSON *x = first; x; x = en ? x->next : NULL) {
            if (!type_allows(type, x)) continue;
            if (en && cst && !cJSON_Compare(x, cst, true)) continue;
            struct gfrag g = value_lit(c, x);
            f = f.s < 0 ? g : gb_alt(c->b, f, g);
        }
        if (f.s < 0) {
            sc_fail(c, "no value of '%s' satisfies the schema", en ? "enum" : "const");
            return gb_empty(c->b);
        }
        return f;
    }
    static const char *const obj_kw[] = {"properties", "required", "additionalProperties", NULL};
    static const char *const arr_kw[] = {"items", "prefixItems", "minItems", "maxItems", NULL};
    static const char *const str_kw[] = {"minLength", "maxLength", "pattern", "format", NULL};
    static const char *const num_kw[] = {"minimum", "maximum", "exclusiveMinimum",
                                         "exclusiveMaximum", NULL};
    if (!type) {
        int kinds =
            has_any(s, obj_kw) + has_any(s, arr_kw) + has_any(s, str_kw) + has_any(s, num_kw);
        if (kinds > 1) {
            sc_fail(c, "a schema without 'type' mixes keywords of several types");
            return gb_empty(c->b);
        }
        if (has_any(s, obj_kw)) return type_frag(c, s, "object");
        if (has_any(s, arr_kw)) return type_frag(c, s, "array");
        if (has_any(s, str_kw)) return type_frag(c, s, "string");
        if (has_any(s, num_kw)) return type_frag(c, s, "number");
        return gb_call(c->b, rule_value(c));
    }
    if (cJSON_IsString(type)) return type_frag(c, s, type->valuestring);
    struct gfrag f = {-1, -1};
    for (const cJSON *t = type->child; t && !c->failed; t = t->next) {
        if (!cJSON_IsString(t)) {
            sc_fail(c, "'type' must be a string or an array of strings");
            return gb_empty(c->b);
        }
        struct gfrag g = type_frag(c, s, t->valuestring);
        f = f.s < 0 ? g : gb_alt(c->b, f, g);
    }
    if (f.s < 0) {
        sc_fail(c, "'type' must not be empty");
        return gb_empty(c->b);
    }
    return f;
}

/* The rule of subschema s (one per schema object, so $ref cycles are calls). seg/idx: the
 * path segment that leads to it from the current schema, for errors. */
static int32_t schema_rule(struct sc *c, const cJSON *s, const char *seg, int idx)
{
    for (int32_t i = 0; i < c->n_memo; i++)
        if (c->memo[i].schema == s) return c->memo[i].rule;
    if (c->failed) return 0;
    if (c->n_memo >= SC_MAX_SUBSCHEMAS) return sc_fail(c, "the schema is too large"), 0;
    if (c->depth >= SC_MAX_DEPTH) return sc_fail(c, "the schema nests too deeply"), 0;
    if (c->n_memo == c->cap_memo) {
        c->cap_memo = c->cap_memo ? 2 * c->cap_memo : 32;
        c->memo = xrealloc(c->memo, (size_t)c->cap_memo * sizeof *c->memo);
    }
    int32_t r = gb_rule(c->b);
    c->memo[c->n_memo++] = (struct sc_memo){s, r};
    size_t plen = strlen(c->path);
    if (seg) {
        /* #/properties/name, #/items, #/anyOf/1 ... ($ref targets keep the referrer's path) */
        size_t room = sizeof c->path - plen;
        if (idx >= 0) snprintf(c->path + plen, room, "/%s/%d", seg, idx);
        else if (s->string && strcmp(seg, "items") && strcmp(seg, "additionalProperties"))
            snprintf(c->path + plen, room, "/%s/%s", seg, s->string);
        else snprintf(c->path + plen, room, "/%s", seg);
    }
    c->depth++;
    struct gfrag f = schema_body(c, s);
    c->depth--;
    if (!c->failed) c->path[plen] = 0;
    gb_define(c->b, r, f);
    return r;
}

static struct sc sc_init(struct gram_builder *b, const struct st_options *o, char *err,
                         size_t errlen)
{
    return (struct sc){.b = b, .any_ws = !o || o->any_whitespace, .r_value = -1,
                       .r_string = -1, .r_number = -1, .r_object = -1, .r_array = -1,
                       .r_jchar = -1, .err = err, .errlen = errlen};
}

static struct grammar *sc_finish(struct sc *c, int32_t root)
{
    free(c->memo);
    if (c->failed) {
        gb_free(c->b);
        return NULL;
    }
    if (gb_full(c->b)) {
        snprintf(c->err, c->errlen, "the schema is too large");
        gb_free(c->b);
        return NULL;
    }
    return gb_finish(c->b, root, c->err, c->errlen);
}

struct grammar *st_compile_schema(const cJSON *schema, const struct st_options *o, char *err,
                                  size_t errlen)
{
    struct gram_builder *b = gb_new();
    if (!b) return snprintf(err, errlen, "out of memory"), NULL;
    struct sc c = sc_init(b, o, err, errlen);
    c.root = schema;
    int32_t root = gb_rule(b);
    struct gfrag body = gb_call(b, schema_rule(&c, schema, NULL, -1));
    gb_define(b, root, body);
    return sc_finish(&c, root);
}

struct grammar *st_compile_json_object(const struct st_options *o, char *err, size_t errlen)
{
    struct gram_builder *b = gb_new();
    if (!b) return snprintf(err, errlen, "out of memory"), NULL;
    struct sc c = sc_init(b, o, err, errlen);
    int32_t root = gb_rule(b);
    gb_define(b, root, gb_call(b, rule_object(&c)));
    return sc_finish(&c, root);
}

struct grammar *st_compile_regex(const char *re, size_t n, char *err, size_t errlen)
{
    struct gram_builder *b = gb_new();
    if (!b) return snprintf(err, errlen, "out of memory"), NULL;
    struct gfrag f;
    if (gb_regex(b, re, n, 0, &f, err, errlen)) {
        gb_free(b);
        return NULL;
    }
    int32_t root = gb_rule(b);
    gb_define(b, root, f);
    return gb_finish(b, root, err, errlen);
}

struct grammar *st_compile_grammar(const char *text, size_t n, char *err, size_t errlen)
{
    struct gram_builder *b = gb_new();
    if (!b) return snprintf(err, errlen, "out of memory"), NULL;
    int32_t root;
    if (gb_gbnf(b, text, n, &root, err, errlen)) {
        gb_free(b);
        return NULL;
    }
    return gb_finish(b, root, err, errlen);
}

struct grammar *st_compile_choice(const char *const *s, const size_t *len, int32_t n, char *err,
                                  size_t errlen)
{
    struct gram_builder *b = gb_new();
    if (!b) return snprintf(err, errlen, "out of memory"), NULL;
    struct gfrag f = gb_lit(b, s[0], len[0]);
    for (int32_t i = 1; i < n; i++) f = gb_alt(b, f, gb_lit(b, s[i], len[i]));
    int32_t root = gb_rule(b);
    gb_define(b, root, f);
    return gb_finish(b, root, err, errlen);
}

/* Qwen3's tool-call form: "<tool_call>\n{\"name\": \"N\", \"arguments\": ARGS}\n</tool_call>"
 * for each tool (all of them for "required", one or more calls; the named one, once). */
static struct grammar *compile_tool_calls(const cJSON *tools, const char *only,
                                          const struct st_options *o, char *err, size_t errlen)
{
    struct gram_builder *b = gb_new();
    if (!b) return snprintf(err, errlen, "out of memory"), NULL;
    struct sc c = sc_init(b, o, err, errlen);
    struct gfrag f = {-1, -1};
    int i = 0;
    for (const cJSON *t = tools->child; t && !c.failed; t = t->next, i++) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!cJSON_IsString(name) || (params && !cJSON_IsObject(params) && !cJSON_IsBool(params))) {
            sc_fail(&c, "tools[%d] needs function.name (a string) and function.parameters (a "
                        "schema)", i);
            break;
        }
        if (only && strcmp(name->valuestring, only)) continue;
        snprintf(c.path, sizeof c.path, "/tools/%d/function/parameters", i);
        c.root = params;
        int32_t r = params ? schema_rule(&c, params, NULL, -1) : rule_object(&c);
        cJSON *nm = cJSON_CreateString(name->valuestring);
        char *q = nm ? cJSON_PrintUnformatted(nm) : NULL;
        cJSON_Delete(nm);
        if (!q) {
            sc_fail(&c, "out of memory");
            break;
        }
        struct gfrag g = lit(&c, "<tool_call>\n{\"name\": ");
        g = gb_seq(b, gb_seq(b, g, lit(&c, q)), lit(&c, ", \"arguments\": "));
        free(q);
        g = gb_seq(b, gb_seq(b, g, gb_call(b, r)), lit(&c, "}\n</tool_call>"));
        f = f.s < 0 ? g : gb_alt(b, f, g);
    }
    if (c.failed) return sc_finish(&c, 0);
    int32_t call = gb_rule(b);
    gb_define(b, call, f);
    int32_t root = gb_rule(b);
    struct gfrag body = gb_call(b, call);
    if (!only) body = gb_seq(b, body, gb_star(b, gb_seq(b, lit(&c, "\n"), gb_call(b, call))));
    gb_define(b, root, body);
    return sc_finish(&c, root);
}

/* ==== The grammar cache (canonical text -> grammar) ==== */

#define ST_CACHE 64

static struct {
    pthread_mutex_t mu;
    char *key[ST_CACHE];
    struct grammar *g[ST_CACHE];
    uint64_t used[ST_CACHE];
    uint64_t tick;
} g_cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct grammar *cache_find(const char *key)
{
    struct grammar *g = NULL;
    pthread_mutex_lock(&g_cache.mu);
    for (int i = 0; i < ST_CACHE && !g; i++) {
        if (g_cache.key[i] && !strcmp(g_cache.key[i], key)) {
            g = g_cache.g[i];
            grammar_retain(g);
            g_cache.used[i] = ++g_cache.tick;
        }
    }
    pthread_mutex_unlock(&g_cache.mu);
    return g;
}

static void cache_put(const char *key, struct grammar *g)
{
    char *k = strdup(key);
    if (!k) return;
    pthread_mutex_lock(&g_cache.mu);
    int victim = 0;
    for (int i = 0; i < ST_CACHE; i++) {
        if (!g_cache.key[i]) {
            victim = i;
            break;
        }
        if (g_cache.used[i] < g_cache.used[victim]) victim = i;
    }
    free(g_cache.key[victim]);
    grammar_release(g_cache.g[victim]);
    g_cache.key[victim] = k;
    g_cache.g[victim] = g;
    grammar_retain(g);
    g_cache.used[victim] = ++g_cache.tick;
    pthread_mutex_unlock(&g_cache.mu);
}

/* ==== Request fields ==== */

enum { C_JSON, C_REGEX, C_CHOICE, C_GRAMMAR, C_JSON_OBJECT, C_TOOLS };

static int bad(struct vlm_err *err, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(struct vlm_err *err, const char *param, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vlm_err_param(err, VLM_EINVAL, 400, param, "%s", msg);
}

struct want {
    int kind;
    const cJSON *v;     /* the schema / regex / choice list / tools */
    const char *param;  /* the field that asked */
    const char *name;   /* the named tool */
};

static int add_want(struct want *w, int *n, int kind, const cJSON *v, const char *param,
                    struct vlm_err *err)
{
    if (*n)
        return bad(err, param, "only one structured-output constraint may be given; '%s' and "
                               "'%s' both ask for one", w->param, param);
    *w = (struct want){kind, v, param, NULL};
    (*n)++;
    return 0;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* response_format */
static int parse_response_format(const cJSON *rf, struct want *w, int *n, struct vlm_err *err)
{
    if (!cJSON_IsObject(rf))
        return bad(err, "response_format", "'response_format' must be an object");
    const cJSON *t = get(rf, "type");
    if (!cJSON_IsString(t))
        return bad(err, "response_format.type", "'response_format.type' must be one of "
                                                "'text', 'json_object', 'json_schema'");
    if (!strcmp(t->valuestring, "text")) return 0;
    if (!strcmp(t->valuestring, "json_object"))
        return add_want(w, n, C_JSON_OBJECT, NULL, "response_format", err);
    if (strcmp(t->valuestring, "json_schema"))
        return bad(err, "response_format.type", "'response_format.type' must be one of "
                                                "'text', 'json_object', 'json_schema', not '%.64s'",
                   t->valuestring);
    const cJSON *js = get(rf, "json_schema");
    if (!js)
        return bad(err, "response_format.json_schema",
                   "'response_format.json_schema' is required when the type is 'json_schema'");
    if (!cJSON_IsObject(js))
        return bad(err, "response_format.json_schema",
                   "'response_format.json_schema' must be an object");
    const cJSON *nm = get(js, "name"), *strict = get(js, "strict");
    if (nm && !cJSON_IsString(nm))
        return bad(err, "response_format.json_schema.name",
                   "'response_format.json_schema.name' must be a string");
    if (strict && !cJSON_IsBool(strict))
        return bad(err, "response_format.json_schema.strict",
                   "'response_format.json_schema.strict' must be a boolean");
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(js, "schema");
    if (!s) s = cJSON_GetObjectItemCaseSensitive(js, "json_schema"); /* an older spelling */
    if (!s)
        return bad(err, "response_format.json_schema.schema",
                   "'response_format.json_schema.schema' is required");
    if (!cJSON_IsObject(s) && !cJSON_IsBool(s))
        return bad(err, "response_format.json_schema.schema",
                   "'response_format.json_schema.schema' must be an object");
    return add_want(w, n, C_JSON, s, "response_format.json_schema.schema", err);
}

/* json / regex / choice / grammar / json_object, under a prefix ("structured_outputs." or
 * "guided_") */
static int parse_fields(const cJSON *o, bool so, struct want *w, int *n, bool *no_ws,
                        struct vlm_err *err)
{
    static const struct {
        const char *so, *guided;
        int kind;
    } F[] = {{"json", "guided_json", C_JSON},       {"regex", "guided_regex", C_REGEX},
             {"choice", "guided_choice", C_CHOICE}, {"grammar", "guided_grammar", C_GRAMMAR},
             {"json_object", NULL, C_JSON_OBJECT}};
    static const char *const so_params[] = {
        "structured_outputs.json", "structured_outputs.regex", "structured_outputs.choice",
        "structured_outputs.grammar", "structured_outputs.json_object"};
    for (size_t k = 0; k < ARRAY_LEN(F); k++) {
        const char *key = so ? F[k].so : F[k].guided;
        if (!key) continue;
        const cJSON *v = get(o, key);
        if (!v) continue;
        const char *param = so ? so_params[k] : key;
        if (F[k].kind == C_JSON_OBJECT) {
            if (!cJSON_IsBool(v)) return bad(err, param, "'%s' must be a boolean", param);
            if (cJSON_IsFalse(v)) continue;
        } else if (F[k].kind == C_JSON) {
            if (!cJSON_IsObject(v) && !cJSON_IsString(v) && !cJSON_IsBool(v))
                return bad(err, param, "'%s' must be a JSON Schema (an object or its text)", param);
        } else if (F[k].kind == C_CHOICE) {
            if (!cJSON_IsArray(v) || !cJSON_GetArraySize(v))
                return bad(err, param, "'%s' must be a non-empty array of strings", param);
            for (const cJSON *x = v->child; x; x = x->next)
                if (!cJSON_IsString(x) || !x->valuestring[0])
                    return bad(err, param, "'%s' must be a non-empty array of non-empty strings",
                               param);
        } else if (!cJSON_IsString(v) || !v->valuestring[0]) {
            return bad(err, param, "'%s' must be a non-empty string", param);
        }
        int rc = add_want(w, n, F[k].kind, v, param, err);
        if (rc) return rc;
    }
    if (so) {
        static const char *const refused[] = {"whitespace_pattern", "structural_tag"};
        for (size_t k = 0; k < ARRAY_LEN(refused); k++) {
            if (!get(o, refused[k])) continue;
            char param[64];
            snprintf(param, sizeof param, "structured_outputs.%s", refused[k]);
            return bad(err, param, "'%s' is not supported", param);
        }
    }
    const char *wsk = so ? "disable_any_whitespace" : "guided_whitespace_pattern";
    const cJSON *d = get(o, wsk);
    if (d && so) {
        if (!cJSON_IsBool(d))
            return bad(err, "structured_outputs.disable_any_whitespace",
                       "'structured_outputs.disable_any_whitespace' must be a boolean");
        *no_ws = cJSON_IsTrue(d);
    } else if (d) {
        return bad(err, "guided_whitespace_pattern", "'guided_whitespace_pattern' is not "
                   "supported; use structured_outputs.disable_any_whitespace");
    }
    return 0;
}

static int parse_tool_choice(const cJSON *root, struct want *w, int *n, struct vlm_err *err)
{
    const cJSON *tc = get(root, "tool_choice"), *tools = get(root, "tools");
    if (tools && !cJSON_IsArray(tools)) tools = NULL; /* openai.c has refused it already */
    if (!tc || cJSON_IsString(tc)) {
        if (!tc || strcmp(tc->valuestring, "required")) return 0;
        if (!tools || !cJSON_GetArraySize(tools))
            return bad(err, "tool_choice",
                       "tool_choice 'required' needs at least one tool in 'tools'");
        return add_want(w, n, C_TOOLS, tools, "tool_choice", err);
    }
    const cJSON *t = get(tc, "type"), *fn = get(tc, "function");
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "function"))
        return bad(err, "tool_choice.type", "'tool_choice.type' must be \"function\"");
    const cJSON *nm = cJSON_IsObject(fn) ? get(fn, "name") : NULL;
    if (!cJSON_IsString(nm))
        return bad(err, "tool_choice.function.name",
                   "'tool_choice.function.name' must be a string");
    if (!tools) return bad(err, "tool_choice", "'tool_choice' requires 'tools' to be set");
    for (const cJSON *x = tools->child; x; x = x->next) {
        const cJSON *f = get(x, "function"), *xn = f ? get(f, "name") : NULL;
        if (cJSON_IsString(xn) && !strcmp(xn->valuestring, nm->valuestring)) {
            int rc = add_want(w, n, C_TOOLS, tools, "tool_choice", err);
            w->name = nm->valuestring;
            return rc;
        }
    }
    return bad(err, "tool_choice.function.name",
               "tool_choice names the function '%.64s', which is not in 'tools'", nm->valuestring);
}

int st_parse_request(const cJSON *root, bool chat, struct st_request *out, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    struct want w = {0};
    int n = 0, rc = 0;
    bool no_ws = false;
    const cJSON *rf = get(root, "response_format"), *so = get(root, "structured_outputs");
    if (rf && (rc = parse_response_format(rf, &w, &n, err))) return rc;
    if (so) {
        if (!cJSON_IsObject(so))
            return bad(err, "structured_outputs", "'structured_outputs' must be an object");
        if ((rc = parse_fields(so, true, &w, &n, &no_ws, err))) return rc;
    }
    if ((rc = parse_fields(root, false, &w, &n, &no_ws, err))) return rc;
    if (chat && (rc = parse_tool_choice(root, &w, &n, err))) return rc;
    if (!n) return 0;
    struct st_options o = {.any_whitespace = !no_ws};
    /* the canonical text: kind, options, compact JSON of the constraint */
    cJSON *parsed = NULL;
    const cJSON *v = w.v;
    if (w.kind == C_JSON && cJSON_IsString(v)) {
        parsed = cJSON_Parse(v->valuestring);
        if (!parsed) return bad(err, w.param, "'%s' is not valid JSON", w.param);
        v = parsed;
        if (!cJSON_IsObject(v) && !cJSON_IsBool(v)) {
            cJSON_Delete(parsed);
            return bad(err, w.param, "'%s' must be a JSON Schema (an object)", w.param);
        }
    }
    char *text = v ? cJSON_PrintUnformatted(v) : NULL;
    struct strbuf key = {0};
    sb_printf(&key, "%d/%d/%s/%s", w.kind, (int)o.any_whitespace, w.name ? w.name : "",
              text ? text : "");
    free(text);
    struct grammar *g = cache_find(key.s);
    char msg[400] = "";
    if (!g) {
        switch (w.kind) {
        case C_JSON: g = st_compile_schema(v, &o, msg, sizeof msg); break;
        case C_JSON_OBJECT: g = st_compile_json_object(&o, msg, sizeof msg); break;
        case C_REGEX:
            g = st_compile_regex(v->valuestring, strlen(v->valuestring), msg, sizeof msg);
            break;
        case C_CHOICE: {
            int k = cJSON_GetArraySize(v), i = 0;
            const char **s = xmalloc((size_t)k * sizeof *s);
            size_t *len = xmalloc((size_t)k * sizeof *len);
            for (const cJSON *x = v->child; x; x = x->next, i++)
                s[i] = x->valuestring, len[i] = strlen(x->valuestring);
            g = st_compile_choice(s, len, k, msg, sizeof msg);
            free(s);
            free(len);
            break;
        }
        case C_GRAMMAR:
            g = st_compile_grammar(v->valuestring, strlen(v->valuestring), msg, sizeof msg);
            break;
        case C_TOOLS: g = compile_tool_calls(v, w.name, &o, msg, sizeof msg); break;
        default: break;
        }
        if (g) cache_put(key.s, g);
    }
    sb_free(&key);
    cJSON_Delete(parsed);
    if (!g) {
        if (w.kind == C_TOOLS) return bad(err, "tools", "bad tool parameters: %s", msg);
        if (w.kind == C_GRAMMAR)
            return bad(err, w.param, "bad grammar in '%s': %s", w.param, msg);
        if (w.kind == C_REGEX)
            return bad(err, w.param, "bad regular expression in '%s': %s", w.param, msg);
        return bad(err, w.param, "bad schema in '%s': %s", w.param, msg);
    }
    out->g = g;
    out->tool_calls = w.kind == C_TOOLS;
    return 0;
}

void st_request_destroy(struct st_request *r)
{
    if (!r) return;
    grammar_release(r->g);
    r->g = NULL;
}

/* ==== The vocabulary ==== */

static struct {
    pthread_mutex_t mu;
    const struct tokenizer *tok;
    struct gram_vocab *v;
} g_vocab = {.mu = PTHREAD_MUTEX_INITIALIZER};

const struct gram_vocab *st_vocab(const struct tokenizer *tok, int32_t n)
{
    pthread_mutex_lock(&g_vocab.mu);
    n = VLM_MAX(n, tok_vocab_size(tok));
    if (g_vocab.tok != tok || !g_vocab.v || gv_size(g_vocab.v) != n) {
        gv_free(g_vocab.v);
        const char **bytes = xcalloc((size_t)n, sizeof *bytes);
        size_t *lens = xcalloc((size_t)n, sizeof *lens);
        for (int32_t i = 0; i < tok_vocab_size(tok); i++)
            if (!tok_is_special(tok, i)) bytes[i] = tok_bytes(tok, i, &lens[i]);
        g_vocab.v = gv_new(n, bytes, lens);
        g_vocab.tok = tok;
        free(bytes);
        free(lens);
    }
    const struct gram_vocab *v = g_vocab.v;
    pthread_mutex_unlock(&g_vocab.mu);
    return v;
}
