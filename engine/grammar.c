/*
 * grammar: the byte-level pushdown automaton, its matcher and token masks. See grammar.h
 * for the model; this file is in four parts: building (Thompson fragments and rules),
 * regular expressions, the vocabulary trie, and matching / masks.
 */
#include "engine/grammar.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/base.h"

/* ==== Building ==== */

enum { E_EPS, E_BYTE, E_CALL };

#define MAX_SET 4096 /* threads in one closed set (matcher states) */

struct bedge {
    int32_t from, to, rule;
    uint8_t kind, lo, hi;
};

struct gram_builder {
    int32_t n_nodes;
    struct bedge *e;
    size_t ne, cap;
    int32_t *rule_s, *rule_e; /* (n_rules) */
    uint8_t *rule_def;
    int32_t n_rules, cap_rules;
    bool full;
    struct i32_vec same;     /* gb_same_mask pairs: node, as */
    int32_t horizon;         /* least horizon of those pairs */
};

struct gram_builder *gb_new(void)
{
    struct gram_builder *b = trycalloc(1, sizeof *b);
    return b;
}

void gb_free(struct gram_builder *b)
{
    if (!b) return;
    free(b->e);
    free(b->rule_s);
    free(b->rule_e);
    free(b->rule_def);
    i32_vec_free(&b->same);
    free(b);
}

void gb_same_mask(struct gram_builder *b, int32_t node, int32_t as, int32_t horizon)
{
    if (b->full) return;
    if (!b->same.n || horizon < b->horizon) b->horizon = horizon;
    i32_vec_push(&b->same, node);
    i32_vec_push(&b->same, as);
}

bool gb_full(const struct gram_builder *b) { return b->full; }

static int32_t node_new(struct gram_builder *b)
{
    if (b->n_nodes >= GRAM_MAX_NODES) {
        b->full = true;
        return 0;
    }
    return b->n_nodes++;
}

static void edge_add(struct gram_builder *b, int32_t from, int32_t to, int kind, uint8_t lo,
                     uint8_t hi, int32_t rule)
{
    if (b->full) return;
    if (b->ne == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        if (cap > 4u * GRAM_MAX_NODES) {
            b->full = true;
            return;
        }
        struct bedge *ne = tryrealloc(b->e, cap * sizeof *ne);
        if (!ne) {
            b->full = true;
            return;
        }
        b->e = ne;
        b->cap = cap;
    }
    b->e[b->ne++] = (struct bedge){from, to, rule, (uint8_t)kind, lo, hi};
}

int32_t gb_node(struct gram_builder *b) { return node_new(b); }
void gb_eps(struct gram_builder *b, int32_t from, int32_t to)
{
    edge_add(b, from, to, E_EPS, 0, 0, -1);
}

struct gfrag gb_empty(struct gram_builder *b)
{
    int32_t s = node_new(b), e = node_new(b);
    edge_add(b, s, e, E_EPS, 0, 0, -1);
    return (struct gfrag){s, e};
}

struct gfrag gb_range(struct gram_builder *b, uint8_t lo, uint8_t hi)
{
    int32_t s = node_new(b), e = node_new(b);
    edge_add(b, s, e, E_BYTE, lo, hi, -1);
    return (struct gfrag){s, e};
}

struct gfrag gb_byteset(struct gram_builder *b, const uint8_t set[256])
{
    int32_t s = node_new(b), e = node_new(b);
    for (int c = 0; c < 256;) {
        if (!set[c]) {
            c++;
            continue;
        }
        int lo = c;
        while (c < 256 && set[c]) c++;
        edge_add(b, s, e, E_BYTE, (uint8_t)lo, (uint8_t)(c - 1), -1);
    }
    return (struct gfrag){s, e};
}

struct gfrag gb_lit(struct gram_builder *b, const char *str, size_t n)
{
    int32_t s = node_new(b), cur = s;
    for (size_t i = 0; i < n; i++) {
        int32_t nx = node_new(b);
        edge_add(b, cur, nx, E_BYTE, (uint8_t)str[i], (uint8_t)str[i], -1);
        cur = nx;
    }
    if (n == 0) {
        cur = node_new(b);
        edge_add(b, s, cur, E_EPS, 0, 0, -1);
    }
    return (struct gfrag){s, cur};
}

struct gfrag gb_seq(struct gram_builder *b, struct gfrag x, struct gfrag y)
{
    edge_add(b, x.e, y.s, E_EPS, 0, 0, -1);
    return (struct gfrag){x.s, y.e};
}

struct gfrag gb_alt(struct gram_builder *b, struct gfrag x, struct gfrag y)
{
    int32_t s = node_new(b), e = node_new(b);
    edge_add(b, s, x.s, E_EPS, 0, 0, -1);
    edge_add(b, s, y.s, E_EPS, 0, 0, -1);
    edge_add(b, x.e, e, E_EPS, 0, 0, -1);
    edge_add(b, y.e, e, E_EPS, 0, 0, -1);
    return (struct gfrag){s, e};
}

struct gfrag gb_star(struct gram_builder *b, struct gfrag x)
{
    int32_t s = node_new(b), e = node_new(b);
    edge_add(b, s, x.s, E_EPS, 0, 0, -1);
    edge_add(b, s, e, E_EPS, 0, 0, -1);
    edge_add(b, x.e, s, E_EPS, 0, 0, -1);
    return (struct gfrag){s, e};
}

struct gfrag gb_plus(struct gram_builder *b, struct gfrag x)
{
    int32_t e = node_new(b);
    edge_add(b, x.e, x.s, E_EPS, 0, 0, -1);
    edge_add(b, x.e, e, E_EPS, 0, 0, -1);
    return (struct gfrag){x.s, e};
}

struct gfrag gb_opt(struct gram_builder *b, struct gfrag x)
{
    edge_add(b, x.s, x.e, E_EPS, 0, 0, -1);
    return x;
}

static struct gfrag seq3(struct gram_builder *b, struct gfrag x, uint8_t lo, uint8_t hi)
{
    return gb_seq(b, x, gb_range(b, lo, hi));
}

struct gfrag gb_utf8_nonascii(struct gram_builder *b)
{
    int32_t s = node_new(b), e = node_new(b);
    /* the well-formed sequences of Unicode 15, table 3-7 */
    static const uint8_t rows[][8] = {
        {2, 0xC2, 0xDF, 0x80, 0xBF},
        {3, 0xE0, 0xE0, 0xA0, 0xBF, 0x80, 0xBF},
        {3, 0xE1, 0xEC, 0x80, 0xBF, 0x80, 0xBF},
        {3, 0xED, 0xED, 0x80, 0x9F, 0x80, 0xBF},
        {3, 0xEE, 0xEF, 0x80, 0xBF, 0x80, 0xBF},
        {4, 0xF0, 0xF0, 0x90, 0xBF, 0x80, 0xBF},
        {4, 0xF1, 0xF3, 0x80, 0xBF, 0x80, 0xBF},
        {4, 0xF4, 0xF4, 0x80, 0x8F, 0x80, 0xBF},
    };
    for (size_t r = 0; r < ARRAY_LEN(rows); r++) {
        const uint8_t *w = rows[r];
        struct gfrag f = gb_range(b, w[1], w[2]);
        f = seq3(b, f, w[3], w[4]);
        if (w[0] >= 3) f = seq3(b, f, w[5], w[6]);
        if (w[0] >= 4) f = seq3(b, f, 0x80, 0xBF);
        edge_add(b, s, f.s, E_EPS, 0, 0, -1);
        edge_add(b, f.e, e, E_EPS, 0, 0, -1);
    }
    return (struct gfrag){s, e};
}

int32_t gb_rule(struct gram_builder *b)
{
    if (b->n_rules >= GRAM_MAX_RULES) {
        b->full = true;
        return 0;
    }
    if (b->n_rules == b->cap_rules) {
        int32_t cap = b->cap_rules ? 2 * b->cap_rules : 16;
        int32_t *s = tryrealloc(b->rule_s, (size_t)cap * sizeof *s);
        if (s) b->rule_s = s;
        int32_t *e = tryrealloc(b->rule_e, (size_t)cap * sizeof *e);
        if (e) b->rule_e = e;
        uint8_t *d = tryrealloc(b->rule_def, (size_t)cap);
        if (d) b->rule_def = d;
        if (!s || !e || !d) {
            b->full = true;
            return 0;
        }
        b->cap_rules = cap;
    }
    int32_t r = b->n_rules++;
    b->rule_s[r] = node_new(b);
    b->rule_e[r] = node_new(b);
    b->rule_def[r] = 0;
    return r;
}

void gb_define(struct gram_builder *b, int32_t rule, struct gfrag body)
{
    if (b->full || rule < 0 || rule >= b->n_rules) return;
    VLM_ASSERT(!b->rule_def[rule]);
    b->rule_def[rule] = 1;
    edge_add(b, b->rule_s[rule], body.s, E_EPS, 0, 0, -1);
    edge_add(b, body.e, b->rule_e[rule], E_EPS, 0, 0, -1);
}

struct gfrag gb_call(struct gram_builder *b, int32_t rule)
{
    int32_t s = node_new(b), e = node_new(b);
    edge_add(b, s, e, E_CALL, 0, 0, rule);
    return (struct gfrag){s, e};
}

/* ==== The frozen grammar ==== */

struct gedge {
    int32_t to, rule;
    uint8_t kind, lo, hi;
};

/* Per-node context-independent mask part (see grammar.h). */
struct ncache {
    uint32_t *acc;   /* (mask words) tokens accepted whatever the stack */
    int32_t *unc;    /* (n_unc) positions in the vocabulary's sorted order, ascending */
    int32_t n_unc;
};

struct grammar {
    _Atomic int refs;
    int32_t n_nodes, n_rules, root;
    int32_t *off;        /* (n_nodes + 1) edges of node i: edges[off[i], off[i+1]) */
    struct gedge *edges;
    uint8_t *is_end;     /* node ends its rule */
    uint8_t *has_byte;   /* node has a byte edge */
    int32_t *canon;      /* node -> the first node with the same epsilon closure (mask cache key) */
    int32_t *canon_far;  /* canon with the gb_same_mask hints applied (NULL: none) */
    int32_t horizon;     /* canon_far holds for vocabularies with tokens of at most this many bytes */
    int32_t *rule_s;     /* (n_rules) */
    pthread_mutex_t mu;  /* guards cache and cache_vocab */
    struct ncache **cache; /* (n_nodes) lazily */
    const struct gram_vocab *cache_vocab;
};

void grammar_retain(struct grammar *g) { atomic_fetch_add(&g->refs, 1); }

static void cache_clear(struct grammar *g)
{
    for (int32_t i = 0; i < g->n_nodes; i++) {
        if (!g->cache[i]) continue;
        free(g->cache[i]->acc);
        free(g->cache[i]->unc);
        free(g->cache[i]);
        __atomic_store_n(&g->cache[i], NULL, __ATOMIC_RELEASE);
    }
}

static void grammar_free(struct grammar *g)
{
    if (g->cache) cache_clear(g);
    free(g->cache);
    free(g->off);
    free(g->edges);
    free(g->is_end);
    free(g->has_byte);
    free(g->canon);
    free(g->canon_far);
    free(g->rule_s);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

void grammar_release(struct grammar *g)
{
    if (g && atomic_fetch_sub(&g->refs, 1) == 1) grammar_free(g);
}

int32_t grammar_n_nodes(const struct grammar *g) { return g->n_nodes; }

static bool left_recursive(struct grammar *g);

/* canon[]: nodes whose epsilon closures reach the same nodes with a byte edge, a call or a
 * rule end behave alike under any stack, so they share one mask cache entry (the nodes
 * right after each alternative of a character class all lead back to one loop). */
#define CANON_MAX_CLOSURE 256 /* nodes explored per closure before giving up sharing */

static bool canon_build(struct grammar *g)
{
    int32_t n = g->n_nodes;
    g->canon = trymalloc((size_t)(n ? n : 1) * sizeof *g->canon);
    int32_t *stamp = trymalloc((size_t)(n ? n : 1) * sizeof *stamp);
    int32_t *stack = trymalloc((size_t)(n ? n : 1) * sizeof *stack);
    int32_t *sig = trymalloc((size_t)(n ? n : 1) * sizeof *sig);
    uint32_t nb = 1;
    while (nb < 2u * (uint32_t)n + 2) nb <<= 1;
    int32_t *head = trymalloc(nb * sizeof *head),
            *next = trymalloc((size_t)(n ? n : 1) * sizeof *next);
    uint64_t *hash = trymalloc((size_t)(n ? n : 1) * sizeof *hash);
    int32_t *sig_off = trymalloc(((size_t)n + 1) * sizeof *sig_off);
    struct i32_vec sigs = {0};
    bool ok = g->canon && stamp && stack && sig && head && next && hash && sig_off;
    for (uint32_t i = 0; ok && i < nb; i++) head[i] = -1;
    for (int32_t i = 0; ok && i < n; i++) stamp[i] = -1;
    for (int32_t v = 0; ok && v < n; v++) {
        /* the significant nodes of v's epsilon closure, sorted */
        int32_t sp = 0, k = 0, seen = 1;
        stack[sp++] = v;
        stamp[v] = v;
        while (sp && seen <= CANON_MAX_CLOSURE) {
            int32_t x = stack[--sp];
            bool significant = g->has_byte[x] || g->is_end[x];
            for (int32_t e = g->off[x]; e < g->off[x + 1]; e++) {
                if (g->edges[e].kind == E_CALL) significant = true;
                else if (g->edges[e].kind == E_EPS && stamp[g->edges[e].to] != v) {
                    stamp[g->edges[e].to] = v;
                    stack[sp++] = g->edges[e].to;
                    seen++;
                }
            }
            if (significant) sig[k++] = x;
        }
        for (int32_t a = 1; a < k; a++) /* insertion sort: closures are small */
            for (int32_t b = a; b > 0 && sig[b - 1] > sig[b]; b--) {
                int32_t t = sig[b];
                sig[b] = sig[b - 1];
                sig[b - 1] = t;
            }
        uint64_t h = 1469598103934665603ull;
        for (int32_t a = 0; a < k; a++) h = (h ^ (uint32_t)sig[a]) * 1099511628211ull;
        h ^= (uint64_t)k;
        g->canon[v] = v;
        if (seen > CANON_MAX_CLOSURE) { /* a long epsilon chain: its own entry, kept linear */
            sig_off[v] = sig_off[v + 1] = (int32_t)sigs.n;
            hash[v] = 0;
            continue;
        }
        for (int32_t c = head[h & (nb - 1)]; c >= 0; c = next[c]) {
            if (hash[c] != h || sig_off[c + 1] - sig_off[c] != k) continue;
            if (!memcmp(sigs.v + sig_off[c], sig, (size_t)k * sizeof *sig)) {
                g->canon[v] = c;
                break;
            }
        }
        hash[v] = h;
        sig_off[v] = (int32_t)sigs.n;
        if (g->canon[v] == v) {
            i32_vec_append(&sigs, sig, (size_t)k);
            next[v] = head[h & (nb - 1)];
            head[h & (nb - 1)] = v;
        }
        sig_off[v + 1] = (int32_t)sigs.n;
    }
    free(stamp);
    free(stack);
    free(sig);
    free(head);
    free(next);
    free(hash);
    free(sig_off);
    i32_vec_free(&sigs);
    return ok;
}

struct grammar *gb_finish(struct gram_builder *b, int32_t root, char *err, size_t errlen)
{
    struct grammar *g = NULL;
    if (b->full) {
        snprintf(err, errlen, "the grammar is too large (more than %d states)", GRAM_MAX_NODES);
        goto out;
    }
    for (int32_t r = 0; r < b->n_rules; r++) {
        if (!b->rule_def[r]) {
            snprintf(err, errlen, "rule %d is used but never defined", (int)r);
            goto out;
        }
    }
    VLM_ASSERT(root >= 0 && root < b->n_rules);
    g = trycalloc(1, sizeof *g);
    if (!g) goto oom;
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->mu, NULL);
    g->n_nodes = b->n_nodes;
    g->n_rules = b->n_rules;
    g->root = root;
    size_t nn = (size_t)b->n_nodes;
    g->off = trycalloc(nn + 1, sizeof *g->off);
    g->edges = trymalloc((b->ne ? b->ne : 1) * sizeof *g->edges);
    g->is_end = trycalloc(nn, 1);
    g->has_byte = trycalloc(nn, 1);
    g->rule_s = trymalloc((size_t)b->n_rules * sizeof *g->rule_s);
    g->cache = trycalloc(nn, sizeof *g->cache);
    if (!g->off || !g->edges || !g->is_end || !g->has_byte || !g->rule_s || !g->cache) goto oom;
    for (size_t i = 0; i < b->ne; i++) g->off[b->e[i].from + 1]++;
    for (size_t i = 0; i < nn; i++) g->off[i + 1] += g->off[i];
    int32_t *fill = trymalloc(nn * sizeof *fill + 1);
    if (!fill) goto oom;
    memcpy(fill, g->off, nn * sizeof *fill);
    for (size_t i = 0; i < b->ne; i++) {
        const struct bedge *x = &b->e[i];
        g->edges[fill[x->from]++] = (struct gedge){x->to, x->rule, x->kind, x->lo, x->hi};
        if (x->kind == E_BYTE) g->has_byte[x->from] = 1;
    }
    free(fill);
    for (int32_t r = 0; r < b->n_rules; r++) {
        g->rule_s[r] = b->rule_s[r];
        g->is_end[b->rule_e[r]] = 1;
    }
    if (!canon_build(g)) goto oom;
    if (b->same.n) {
        g->canon_far = trymalloc(nn * sizeof *g->canon_far);
        if (!g->canon_far) goto oom;
        memcpy(g->canon_far, g->canon, nn * sizeof *g->canon_far);
        for (size_t i = 0; i + 1 < b->same.n; i += 2)
            g->canon_far[b->same.v[i]] = g->canon[b->same.v[i + 1]];
        g->horizon = b->horizon;
    }
    if (left_recursive(g)) {
        snprintf(err, errlen, "the grammar is left-recursive or too ambiguous (a rule reaches "
                              "itself without reading a character, or more than %d states are "
                              "live at once)", MAX_SET);
        grammar_free(g);
        g = NULL;
    }
    goto out;
oom:
    snprintf(err, errlen, "out of memory building the grammar");
    if (g) grammar_free(g);
    g = NULL;
out:
    gb_free(b);
    return g;
}

/* ==== Regular expressions ====
 * Parsed into a small tree (struct rx), then emitted as fragments; a counted repetition
 * emits its operand once per copy. */

enum { RX_SET, RX_CAT, RX_ALT, RX_REP, RX_EMPTY };

#define RX_MAX_CP 16    /* non-ASCII characters listed in one class */
#define RX_MAX_REP 1000 /* largest {m,n} bound */
#define RX_MAX_DEPTH 100

struct rx {
    int kind;
    int32_t a, b;        /* children (CAT, ALT), a (REP) */
    int32_t min, max;    /* REP; max -1: unbounded */
    uint8_t ascii[128];  /* SET */
    bool any_nonascii;   /* SET: every character above U+007F */
    uint32_t cp[RX_MAX_CP];
    int32_t n_cp;
};

struct rxp {
    const char *s;
    size_t n, i;
    struct rx *t;
    int32_t nt, cap;
    char *err;
    size_t errlen;
    int depth;
    bool failed;
};

static int rx_fail(struct rxp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rx_fail(struct rxp *p, const char *fmt, ...)
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

static int32_t rx_new(struct rxp *p, int kind)
{
    if (p->nt == p->cap) {
        int32_t cap = p->cap ? 2 * p->cap : 32;
        if (cap > 200000) return rx_fail(p, "the regular expression is too large");
        struct rx *t = tryrealloc(p->t, (size_t)cap * sizeof *t);
        if (!t) return rx_fail(p, "out of memory");
        p->t = t;
        p->cap = cap;
    }
    memset(&p->t[p->nt], 0, sizeof p->t[p->nt]);
    p->t[p->nt].kind = kind;
    return p->nt++;
}

int gram_utf8_decode(const uint8_t *u, size_t n, uint32_t *cp)
{
    if (!n) return -1;
    uint32_t c = u[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || (size_t)len > n) return -1;
    if (len > 1) c &= 0xFFu >> (len + 1);
    for (int k = 1; k < len; k++) {
        if ((u[k] & 0xC0) != 0x80) return -1;
        c = c << 6 | (u[k] & 0x3F);
    }
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
        c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return -1;
    *cp = c;
    return len;
}

/* Decodes one UTF-8 character at p->i and moves past it; -1 on malformed input. */
static int64_t rx_utf8(struct rxp *p)
{
    uint32_t c;
    int len = gram_utf8_decode((const uint8_t *)p->s + p->i, p->n - p->i, &c);
    if (len < 0) return -1;
    p->i += (size_t)len;
    return c;
}

static void set_range(struct rx *x, int lo, int hi)
{
    for (int c = lo; c <= hi && c < 128; c++) x->ascii[c] = 1;
}

/* \d \w \s and their negations into x (ASCII meanings; the negations take every non-ASCII
 * character). */
static bool rx_class_escape(struct rx *x, char c)
{
    struct rx y = {0};
    switch (c | 0x20) {
    case 'd': set_range(&y, '0', '9'); break;
    case 'w': set_range(&y, '0', '9'); set_range(&y, 'a', 'z'); set_range(&y, 'A', 'Z');
              y.ascii['_'] = 1; break;
    case 's': set_range(&y, '\t', '\r'); y.ascii[' '] = 1; break;
    default: return false;
    }
    bool neg = c >= 'A' && c <= 'Z';
    for (int k = 0; k < 128; k++)
        if (y.ascii[k] != neg) x->ascii[k] = 1;
    if (neg) x->any_nonascii = true;
    return true;
}

/* One escaped character after '\' (not a class escape). -1 and an error if unsupported. */
static int64_t rx_escape_char(struct rxp *p)
{
    if (p->i >= p->n) return rx_fail(p, "the pattern ends with a backslash");
    char c = p->s[p->i++];
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    case 'a': return 7;
    case 'x': {
        if (p->i + 2 > p->n) return rx_fail(p, "bad \\x escape");
        char h[3] = {p->s[p->i], p->s[p->i + 1], 0};
        char *end;
        long v = strtol(h, &end, 16);
        if (*end) return rx_fail(p, "bad \\x escape");
        p->i += 2;
        return v;
    }
    default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            return rx_fail(p, "the escape \\%c is not supported", c);
        if ((unsigned char)c >= 0x80) return rx_fail(p, "bad escape");
        return (unsigned char)c;
    }
}

static int rx_add_cp(struct rxp *p, struct rx *x, int64_t c)
{
    if (c < 128) {
        x->ascii[c] = 1;
        return 0;
    }
    if (x->n_cp == RX_MAX_CP) return rx_fail(p, "too many non-ASCII characters in a class");
    x->cp[x->n_cp++] = (uint32_t)c;
    return 0;
}

static int32_t rx_class(struct rxp *p)
{
    int32_t id = rx_new(p, RX_SET);
    if (id < 0) return -1;
    struct rx x = {0};
    x.kind = RX_SET;
    bool neg = p->i < p->n && p->s[p->i] == '^';
    if (neg) p->i++;
    bool first = true;
    for (;;) {
        if (p->i >= p->n) return rx_fail(p, "unterminated character class");
        char c = p->s[p->i];
        if (c == ']' && !first) {
            p->i++;
            break;
        }
        first = false;
        int64_t lo;
        if (c == '\\') {
            p->i++;
            if (p->i < p->n && rx_class_escape(&x, p->s[p->i])) {
                p->i++;
                continue;
            }
            if (p->i < p->n && p->s[p->i] == 'b') {
                p->i++;
                lo = 8;
            } else if ((lo = rx_escape_char(p)) < 0) {
                return -1;
            }
        } else if (c == '[' && p->i + 1 < p->n && p->s[p->i + 1] == ':') {
            return rx_fail(p, "POSIX classes [:name:] are not supported");
        } else if ((lo = rx_utf8(p)) < 0) {
            return rx_fail(p, "the pattern is not valid UTF-8");
        }
        int64_t hi = lo;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            p->i++;
            if (p->s[p->i] == '\\') {
                p->i++;
                if ((hi = rx_escape_char(p)) < 0) return -1;
            } else if ((hi = rx_utf8(p)) < 0) {
                return rx_fail(p, "the pattern is not valid UTF-8");
            }
            if (hi < lo) return rx_fail(p, "bad character range in a class");
            if (hi >= 128 && hi != lo) {
                if (lo >= 128 || hi != lo)
                    return rx_fail(p, "character ranges beyond ASCII are not supported");
            }
        }
        if (hi < 128) set_range(&x, (int)lo, (int)hi);
        else if (rx_add_cp(p, &x, lo) < 0) return -1;
    }
    if (neg) {
        if (x.n_cp)
            return rx_fail(p, "negated classes with non-ASCII characters are not supported");
        for (int k = 0; k < 128; k++) x.ascii[k] = !x.ascii[k];
        x.any_nonascii = !x.any_nonascii;
    }
    p->t[id] = x;
    return id;
}

static int32_t rx_alt(struct rxp *p);

/* {m}, {m,}, {m,n} at p->i (after '{'); false (nothing consumed) if it is not one. */
static bool rx_counts(struct rxp *p, int32_t *mn, int32_t *mx)
{
    size_t i = p->i;
    long a = -1, b = -1;
    char *end;
    if (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') {
        a = strtol(p->s + i, &end, 10);
        i = (size_t)(end - p->s);
    }
    if (a < 0) return false;
    if (i < p->n && p->s[i] == '}') {
        b = a;
    } else if (i < p->n && p->s[i] == ',') {
        i++;
        if (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') {
            b = strtol(p->s + i, &end, 10);
            i = (size_t)(end - p->s);
        } else {
            b = -2;
        }
        if (i >= p->n || p->s[i] != '}') return false;
    } else {
        return false;
    }
    p->i = i + 1;
    *mn = a > RX_MAX_REP ? RX_MAX_REP + 1 : (int32_t)a;
    *mx = b == -2 ? -1 : b > RX_MAX_REP ? RX_MAX_REP + 1 : (int32_t)b;
    return true;
}

static int32_t rx_atom(struct rxp *p)
{
    char c = p->s[p->i];
    if (c == '(') {
        p->i++;
        if (p->i < p->n && p->s[p->i] == '?') {
            if (p->i + 1 < p->n && p->s[p->i + 1] == ':') {
                p->i += 2;
            } else if (p->i + 2 < p->n && p->s[p->i + 1] == 'P' && p->s[p->i + 2] == '<') {
                size_t j = p->i + 3;
                while (j < p->n && p->s[j] != '>') j++;
                if (j >= p->n) return rx_fail(p, "unterminated group name");
                p->i = j + 1;
            } else {
                return rx_fail(p, "the group construct (?%c is not supported",
                               p->i + 1 < p->n ? p->s[p->i + 1] : '?');
            }
        }
        int32_t x = rx_alt(p);
        if (x < 0) return -1;
        if (p->i >= p->n || p->s[p->i] != ')') return rx_fail(p, "missing ')'");
        p->i++;
        return x;
    }
    if (c == '[') {
        p->i++;
        return rx_class(p);
    }
    int32_t id = rx_new(p, RX_SET);
    if (id < 0) return -1;
    struct rx *x = &p->t[id];
    if (c == '.') {
        p->i++;
        set_range(x, 0, 127);
        x->ascii['\n'] = 0;
        x->any_nonascii = true;
        return id;
    }
    if (c == '\\') {
        p->i++;
        if (p->i < p->n && rx_class_escape(x, p->s[p->i])) {
            p->i++;
            return id;
        }
        if (p->i < p->n && (p->s[p->i] == 'b' || p->s[p->i] == 'B' || p->s[p->i] == 'A' ||
                            p->s[p->i] == 'Z'))
            return rx_fail(p, "the anchor \\%c is not supported", p->s[p->i]);
        if (p->i < p->n && p->s[p->i] >= '1' && p->s[p->i] <= '9')
            return rx_fail(p, "backreferences are not supported");
        int64_t v = rx_escape_char(p);
        if (v < 0) return -1;
        x = &p->t[id];
        return rx_add_cp(p, x, v) < 0 ? -1 : id;
    }
    if (c == '*' || c == '+' || c == '?' || c == ')')
        return rx_fail(p, "nothing to repeat or unbalanced ')' at position %zu", p->i);
    if (c == '^') return rx_fail(p, "the anchor ^ is only supported at the start of the pattern");
    if (c == '$') return rx_fail(p, "the anchor $ is only supported at the end of the pattern");
    int64_t v = rx_utf8(p);
    if (v < 0) return rx_fail(p, "the pattern is not valid UTF-8");
    return rx_add_cp(p, x, v) < 0 ? -1 : id;
}

static int32_t rx_cat(struct rxp *p)
{
    int32_t cur = rx_new(p, RX_EMPTY);
    while (cur >= 0 && p->i < p->n && p->s[p->i] != '|' && p->s[p->i] != ')') {
        if (p->s[p->i] == '$' && p->i + 1 == p->n) break; /* the end anchor, see gb_regex */
        int32_t a = rx_atom(p);
        if (a < 0) return -1;
        for (;;) {
            if (p->i >= p->n) break;
            char q = p->s[p->i];
            int32_t mn, mx;
            if (q == '*') mn = 0, mx = -1, p->i++;
            else if (q == '+') mn = 1, mx = -1, p->i++;
            else if (q == '?') mn = 0, mx = 1, p->i++;
            else if (q == '{') {
                p->i++;
                if (!rx_counts(p, &mn, &mx)) {
                    p->i--;
                    break;
                }
            } else break;
            if (mn > RX_MAX_REP || mx > RX_MAX_REP)
                return rx_fail(p, "repetition counts above %d are not supported", RX_MAX_REP);
            if (mx >= 0 && mx < mn) return rx_fail(p, "bad repetition range {%d,%d}", mn, mx);
            if (p->i < p->n && p->s[p->i] == '?') p->i++; /* lazy: same language */
            else if (p->i < p->n && p->s[p->i] == '+')
                return rx_fail(p, "possessive quantifiers are not supported");
            int32_t r = rx_new(p, RX_REP);
            if (r < 0) return -1;
            p->t[r].a = a;
            p->t[r].min = mn;
            p->t[r].max = mx;
            a = r;
        }
        int32_t c = rx_new(p, RX_CAT);
        if (c < 0) return -1;
        p->t[c].a = cur;
        p->t[c].b = a;
        cur = c;
    }
    return cur;
}

static int32_t rx_alt(struct rxp *p)
{
    if (++p->depth > RX_MAX_DEPTH) return rx_fail(p, "the pattern nests too deeply");
    int32_t x = rx_cat(p);
    while (x >= 0 && p->i < p->n && p->s[p->i] == '|') {
        p->i++;
        int32_t y = rx_cat(p);
        if (y < 0) return -1;
        int32_t a = rx_new(p, RX_ALT);
        if (a < 0) return -1;
        p->t[a].a = x;
        p->t[a].b = y;
        x = a;
    }
    p->depth--;
    return x;
}

/* One character c written as it appears in the output. */
static struct gfrag emit_char(struct gram_builder *b, uint32_t c, bool json)
{
    char u[8];
    int n;
    if (json && c < 0x80 && (c < 0x20 || c == '"' || c == '\\')) {
        static const char short_esc[] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n',
                                         ['\r'] = 'r', ['\t'] = 't', ['"'] = '"',
                                         ['\\'] = '\\'};
        if (c < sizeof short_esc && short_esc[c]) {
            u[0] = '\\';
            u[1] = short_esc[c];
            return gb_lit(b, u, 2);
        }
        /* \u00XY with either case of hex letters */
        struct gfrag f = gb_lit(b, c < 0x10 ? "\\u000" : "\\u001", 5);
        uint8_t set[256] = {0};
        int d = c & 15;
        if (d < 10) set['0' + d] = 1;
        else set['a' + d - 10] = set['A' + d - 10] = 1;
        return gb_seq(b, f, gb_byteset(b, set));
    }
    if (c < 0x80) u[0] = (char)c, n = 1;
    else if (c < 0x800) u[0] = (char)(0xC0 | c >> 6), u[1] = (char)(0x80 | (c & 63)), n = 2;
    else if (c < 0x10000)
        u[0] = (char)(0xE0 | c >> 12), u[1] = (char)(0x80 | (c >> 6 & 63)),
        u[2] = (char)(0x80 | (c & 63)), n = 3;
    else
        u[0] = (char)(0xF0 | c >> 18), u[1] = (char)(0x80 | (c >> 12 & 63)),
        u[2] = (char)(0x80 | (c >> 6 & 63)), u[3] = (char)(0x80 | (c & 63)), n = 4;
    return gb_lit(b, u, (size_t)n);
}

static struct gfrag emit_set(struct gram_builder *b, const struct rx *x, bool json)
{
    uint8_t set[256] = {0};
    int n_set = 0;
    struct gfrag f = {-1, -1};
    for (int c = 0; c < 128; c++) {
        if (!x->ascii[c]) continue;
        if (json && (c < 0x20 || c == '"' || c == '\\')) {
            struct gfrag e = emit_char(b, (uint32_t)c, json);
            f = f.s < 0 ? e : gb_alt(b, f, e);
        } else {
            set[c] = 1;
            n_set++;
        }
    }
    if (n_set) f = f.s < 0 ? gb_byteset(b, set) : gb_alt(b, f, gb_byteset(b, set));
    if (x->any_nonascii) f = f.s < 0 ? gb_utf8_nonascii(b) : gb_alt(b, f, gb_utf8_nonascii(b));
    for (int32_t k = 0; k < x->n_cp; k++) {
        struct gfrag e = emit_char(b, x->cp[k], json);
        f = f.s < 0 ? e : gb_alt(b, f, e);
    }
    if (f.s < 0) f = gb_byteset(b, set); /* matches nothing */
    return f;
}

static struct gfrag rx_emit(struct gram_builder *b, const struct rx *t, int32_t id, bool json,
                            int depth)
{
    const struct rx *x = &t[id];
    if (gb_full(b) || depth > 4 * RX_MAX_DEPTH) return gb_empty(b);
    switch (x->kind) {
    case RX_SET: return emit_set(b, x, json);
    case RX_CAT:
        return gb_seq(b, rx_emit(b, t, x->a, json, depth + 1),
                      rx_emit(b, t, x->b, json, depth + 1));
    case RX_ALT:
        return gb_alt(b, rx_emit(b, t, x->a, json, depth + 1),
                      rx_emit(b, t, x->b, json, depth + 1));
    case RX_REP: {
        struct gfrag f = gb_empty(b);
        for (int32_t k = 0; k < x->min && !gb_full(b); k++)
            f = gb_seq(b, f, rx_emit(b, t, x->a, json, depth + 1));
        if (x->max < 0) return gb_seq(b, f, gb_star(b, rx_emit(b, t, x->a, json, depth + 1)));
        /* the optional tail, nested: (a(a(a)?)?)? */
        struct gfrag tail = gb_empty(b);
        for (int32_t k = x->min; k < x->max && !gb_full(b); k++)
            tail = gb_opt(b, gb_seq(b, rx_emit(b, t, x->a, json, depth + 1), tail));
        return gb_seq(b, f, tail);
    }
    default: return gb_empty(b);
    }
}

int gb_regex(struct gram_builder *b, const char *re, size_t n, int flags, struct gfrag *out,
             char *err, size_t errlen)
{
    struct rxp p = {.s = re, .n = n, .err = err, .errlen = errlen};
    bool json = flags & GB_RE_JSON, search = flags & GB_RE_SEARCH;
    bool start = n > 0 && re[0] == '^', end = false;
    if (start) p.i = 1;
    int32_t root = rx_alt(&p);
    if (root >= 0 && p.i < p.n && re[p.i] == '$' && p.i + 1 == p.n) {
        end = true;
        p.i++;
    }
    if (root >= 0 && p.i < p.n) root = rx_fail(&p, "unbalanced ')' at position %zu", p.i);
    if (root < 0) {
        free(p.t);
        return -1;
    }
    struct gfrag f = rx_emit(b, p.t, root, json, 0);
    free(p.t);
    if (search) {
        struct rx any = {.kind = RX_SET, .any_nonascii = true};
        set_range(&any, 0, 127);
        if (!start) f = gb_seq(b, gb_star(b, emit_set(b, &any, json)), f);
        if (!end) f = gb_seq(b, f, gb_star(b, emit_set(b, &any, json)));
        else f = gb_seq(b, f, gb_opt(b, emit_char(b, '\n', json))); /* $ before a final \n */
    }
    if (gb_full(b)) {
        snprintf(err, errlen, "the regular expression is too large");
        return -1;
    }
    *out = f;
    return 0;
}

/* ==== Vocabulary ==== */

struct tnode {
    int32_t end;         /* first node after this one's subtree (preorder) */
    int32_t tok_lo, tok_hi; /* sorted[tok_lo, tok_hi): tokens spelled exactly to here */
    int32_t depth;       /* bytes from the root (1 for a child of the root) */
    uint8_t byte;
};

struct gram_vocab {
    int32_t n;           /* ids [0, n) */
    char *buf;           /* token bytes */
    size_t *off;         /* (n + 1) token i is buf[off[i], off[i+1]) */
    int32_t *sorted;     /* (n_sorted) ids with bytes, in byte order */
    int32_t n_sorted;
    struct tnode *tn;    /* (n_tn) preorder */
    int32_t n_tn;
    int32_t max_depth;
};

int32_t gv_size(const struct gram_vocab *v) { return v->n; }
int32_t gv_mask_words(const struct gram_vocab *v) { return (v->n + 31) / 32; }

void gv_free(struct gram_vocab *v)
{
    if (!v) return;
    free(v->buf);
    free(v->off);
    free(v->sorted);
    free(v->tn);
    free(v);
}

static const struct gram_vocab *g_sort_vocab; /* qsort has no context argument */

static int cmp_tok(const void *a, const void *b)
{
    const struct gram_vocab *v = g_sort_vocab;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    size_t lx = v->off[x + 1] - v->off[x], ly = v->off[y + 1] - v->off[y];
    int c = memcmp(v->buf + v->off[x], v->buf + v->off[y], VLM_MIN(lx, ly));
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static pthread_mutex_t g_sort_mu = PTHREAD_MUTEX_INITIALIZER;

struct gram_vocab *gv_new(int32_t n, const char *const *bytes, const size_t *lens)
{
    struct gram_vocab *v = xcalloc(1, sizeof *v);
    v->n = n;
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) total += bytes[i] ? lens[i] : 0;
    v->buf = xmalloc(total + 1);
    v->off = xmalloc(((size_t)n + 1) * sizeof *v->off);
    v->sorted = xmalloc(((size_t)n + 1) * sizeof *v->sorted);
    size_t o = 0;
    for (int32_t i = 0; i < n; i++) {
        v->off[i] = o;
        if (bytes[i] && lens[i]) {
            memcpy(v->buf + o, bytes[i], lens[i]);
            o += lens[i];
            v->sorted[v->n_sorted++] = i;
        }
    }
    v->off[n] = o;
    pthread_mutex_lock(&g_sort_mu);
    g_sort_vocab = v;
    qsort(v->sorted, (size_t)v->n_sorted, sizeof *v->sorted, cmp_tok);
    pthread_mutex_unlock(&g_sort_mu);
    /* the trie, one node per distinct prefix, built along the sorted order */
    size_t cap = 1024;
    v->tn = xmalloc(cap * sizeof *v->tn);
    int32_t *path = NULL; /* path[d]: the node at depth d + 1 on the previous token's path */
    size_t path_cap = 0, path_len = 0;
    const char *prev = NULL;
    size_t prev_len = 0;
    for (int32_t k = 0; k < v->n_sorted; k++) {
        int32_t id = v->sorted[k];
        const char *s = v->buf + v->off[id];
        size_t len = v->off[id + 1] - v->off[id];
        size_t l = 0;
        while (prev && l < len && l < prev_len && s[l] == prev[l]) l++;
        for (size_t j = l; j < path_len; j++) v->tn[path[j]].end = v->n_tn;
        path_len = l;
        if (len > path_cap) {
            path_cap = 2 * len;
            path = xrealloc(path, path_cap * sizeof *path);
        }
        for (size_t j = l; j < len; j++) {
            if ((size_t)v->n_tn == cap) {
                cap *= 2;
                v->tn = xrealloc(v->tn, cap * sizeof *v->tn);
            }
            v->tn[v->n_tn] = (struct tnode){.end = -1, .tok_lo = 0, .tok_hi = 0,
                                            .depth = (int32_t)j + 1, .byte = (uint8_t)s[j]};
            path[path_len++] = v->n_tn++;
        }
        struct tnode *t = &v->tn[path[len - 1]];
        if (t->tok_hi == t->tok_lo) t->tok_lo = k;
        t->tok_hi = k + 1;
        if ((int32_t)len > v->max_depth) v->max_depth = (int32_t)len;
        prev = s;
        prev_len = len;
    }
    for (size_t j = 0; j < path_len; j++) v->tn[path[j]].end = v->n_tn;
    free(path);
    return v;
}

/* ==== Matching ==== */

#define STACK_EMPTY (-1)
#define STACK_CTX (-2)         /* an unknown context (mask cache walks) */
#define MAX_FRAMES (1 << 22)

struct frame {
    int32_t ret, parent, next; /* next: hash chain */
};

struct thr {
    int32_t node, stack;
    uint8_t root; /* not derived from another thread of the set by epsilon or call */
};

struct gram_matcher {
    struct grammar *g;
    struct frame *fr;
    int32_t n_fr, cap_fr;
    int32_t *bucket;        /* (n_bucket) chain heads, -1 empty */
    int32_t n_bucket;
    struct thr *cur;        /* the state: a closed set */
    int32_t n_cur, cap_cur;
    bool can_end, done;
    /* scratch levels for stepping: level d is ws[lvl[d], lvl[d+1]) */
    struct thr *ws;
    int32_t n_ws, cap_ws;
    int32_t *lvl;
    uint8_t *esc_at, *esc_any; /* per level (cache walks) */
    uint32_t *mark;         /* (n_nodes) epoch of the set that last got a thread at the node */
    uint32_t epoch;
    int32_t cap_lvl;
    bool oom;
};

static uint32_t frame_hash(int32_t ret, int32_t parent)
{
    uint64_t x = (uint64_t)(uint32_t)ret << 32 | (uint32_t)parent;
    x *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(x >> 32);
}

static bool rehash(struct gram_matcher *m, int32_t nb)
{
    int32_t *b = trymalloc((size_t)nb * sizeof *b);
    if (!b) return false;
    for (int32_t i = 0; i < nb; i++) b[i] = -1;
    for (int32_t i = 0; i < m->n_fr; i++) { /* ascending: the newest frame heads its chain */
        uint32_t h = frame_hash(m->fr[i].ret, m->fr[i].parent) & (uint32_t)(nb - 1);
        m->fr[i].next = b[h];
        b[h] = i;
    }
    free(m->bucket);
    m->bucket = b;
    m->n_bucket = nb;
    return true;
}

/* The stack (ret, parent...) as a frame id; -3 on failure. */
static int32_t push(struct gram_matcher *m, int32_t ret, int32_t parent)
{
    uint32_t h = frame_hash(ret, parent) & (uint32_t)(m->n_bucket - 1);
    for (int32_t i = m->bucket[h]; i >= 0; i = m->fr[i].next)
        if (m->fr[i].ret == ret && m->fr[i].parent == parent) return i;
    if (m->n_fr >= MAX_FRAMES) {
        m->oom = true;
        return -3;
    }
    if (m->n_fr == m->cap_fr) {
        int32_t cap = 2 * m->cap_fr;
        struct frame *f = tryrealloc(m->fr, (size_t)cap * sizeof *f);
        if (!f) {
            m->oom = true;
            return -3;
        }
        m->fr = f;
        m->cap_fr = cap;
    }
    int32_t id = m->n_fr++;
    m->fr[id] = (struct frame){ret, parent, m->bucket[h]};
    m->bucket[h] = id;
    if (m->n_fr > 2 * m->n_bucket && !rehash(m, 2 * m->n_bucket)) m->oom = true;
    return id;
}

/* Drops frames [mark, n_fr): the newest frame always heads its chain. */
static void frames_rollback(struct gram_matcher *m, int32_t mark)
{
    while (m->n_fr > mark) {
        int32_t i = --m->n_fr;
        uint32_t h = frame_hash(m->fr[i].ret, m->fr[i].parent) & (uint32_t)(m->n_bucket - 1);
        VLM_ASSERT(m->bucket[h] == i);
        m->bucket[h] = m->fr[i].next;
    }
}

static bool ws_reserve(struct gram_matcher *m, int32_t extra)
{
    if (m->n_ws + extra <= m->cap_ws) return true;
    int32_t cap = VLM_MAX(2 * m->cap_ws, m->n_ws + extra);
    struct thr *w = tryrealloc(m->ws, (size_t)cap * sizeof *w);
    if (!w) return m->oom = true, false;
    m->ws = w;
    m->cap_ws = cap;
    return true;
}

static bool lvl_reserve(struct gram_matcher *m, int32_t d)
{
    if (d + 2 <= m->cap_lvl) return true;
    int32_t cap = VLM_MAX(2 * m->cap_lvl, d + 2);
    int32_t *l = tryrealloc(m->lvl, (size_t)cap * sizeof *l);
    if (l) m->lvl = l;
    uint8_t *a = tryrealloc(m->esc_at, (size_t)cap);
    if (a) m->esc_at = a;
    uint8_t *y = tryrealloc(m->esc_any, (size_t)cap);
    if (y) m->esc_any = y;
    if (!l || !a || !y) return m->oom = true, false;
    m->cap_lvl = cap;
    return true;
}

enum { CL_END = 1, CL_ESC = 2, CL_OVERFLOW = 4 };

/* Starts a new set at ws[n_ws]; returns its base. */
static int32_t set_begin(struct gram_matcher *m)
{
    if (++m->epoch == 0) { /* wrapped: forget every mark */
        memset(m->mark, 0, (size_t)m->g->n_nodes * sizeof *m->mark);
        m->epoch = 1;
    }
    return m->n_ws;
}

/* Adds (node, stack) to the set ws[base, n_ws) (begun by set_begin) unless present. */
static void set_add(struct gram_matcher *m, int32_t base, int32_t node, int32_t stack, bool root)
{
    if (stack == -3) return;
    if (m->mark[node] == m->epoch) { /* the node is in the set already, maybe with this stack */
        for (int32_t i = base; i < m->n_ws; i++)
            if (m->ws[i].node == node && m->ws[i].stack == stack) return;
    }
    m->mark[node] = m->epoch;
    if (m->n_ws - base >= MAX_SET) {
        m->oom = true;
        return;
    }
    if (!ws_reserve(m, 1)) return;
    m->ws[m->n_ws++] = (struct thr){node, stack, root};
}

/* Closes the set ws[base, n_ws) in place. Returns CL_* flags: the root rule can end, a
 * thread returned below an unknown context (ignored when ctx_esc is false), overflow. */
static int closure(struct gram_matcher *m, int32_t base, bool ctx_esc)
{
    const struct grammar *g = m->g;
    int flags = 0;
    for (int32_t i = base; i < m->n_ws && !m->oom; i++) {
        struct thr t = m->ws[i];
        for (int32_t k = g->off[t.node]; k < g->off[t.node + 1]; k++) {
            const struct gedge *e = &g->edges[k];
            if (e->kind == E_EPS) set_add(m, base, e->to, t.stack, false);
            else if (e->kind == E_CALL)
                set_add(m, base, g->rule_s[e->rule], push(m, e->to, t.stack), false);
        }
        if (g->is_end[t.node]) {
            if (t.stack >= 0) set_add(m, base, m->fr[t.stack].ret, m->fr[t.stack].parent, true);
            else if (t.stack == STACK_EMPTY) flags |= CL_END;
            else if (ctx_esc) flags |= CL_ESC;
        }
    }
    if (m->oom) flags |= CL_OVERFLOW;
    return flags;
}

/* Appends the threads reached from ws[from, to) by byte c, as a new set, and closes it. */
static int step(struct gram_matcher *m, int32_t from, int32_t to, uint8_t c, bool ctx_esc)
{
    const struct grammar *g = m->g;
    int32_t base = set_begin(m);
    for (int32_t i = from; i < to; i++) {
        int32_t node = m->ws[i].node;
        if (!g->has_byte[node]) continue;
        for (int32_t k = g->off[node]; k < g->off[node + 1]; k++) {
            const struct gedge *e = &g->edges[k];
            if (e->kind == E_BYTE && c >= e->lo && c <= e->hi)
                set_add(m, base, e->to, m->ws[i].stack, true);
        }
    }
    return closure(m, base, ctx_esc);
}

static bool left_recursive(struct grammar *g)
{
    struct gram_matcher *m = gm_new(g);
    if (!m) return true;
    bool bad = false;
    for (int32_t r = 0; r < g->n_rules && !bad; r++) {
        m->n_ws = 0;
        set_begin(m);
        set_add(m, 0, g->rule_s[r], STACK_CTX, true);
        bad = closure(m, 0, false) & CL_OVERFLOW;
        frames_rollback(m, 0);
    }
    m->g = NULL;
    gm_free(m);
    grammar_release(g); /* gm_new took one */
    return bad;
}

static void state_update(struct gram_matcher *m, int flags)
{
    m->can_end = flags & CL_END;
    m->done = m->can_end;
    for (int32_t i = 0; i < m->n_cur && m->done; i++)
        if (m->g->has_byte[m->cur[i].node]) m->done = false;
}

struct gram_matcher *gm_new(struct grammar *g)
{
    struct gram_matcher *m = trycalloc(1, sizeof *m);
    if (!m) return NULL;
    m->g = g;
    grammar_retain(g);
    m->cap_fr = 256;
    m->fr = trymalloc((size_t)m->cap_fr * sizeof *m->fr);
    m->bucket = NULL;
    if (!m->fr || !rehash(m, 256) || !lvl_reserve(m, 64)) goto fail;
    m->mark = trycalloc((size_t)g->n_nodes, sizeof *m->mark);
    if (!m->mark) goto fail;
    m->n_ws = 0;
    set_begin(m);
    set_add(m, 0, g->rule_s[g->root], STACK_EMPTY, true);
    int flags = closure(m, 0, false);
    if (m->oom) goto fail;
    m->cur = trymalloc((size_t)(m->n_ws ? m->n_ws : 1) * sizeof *m->cur);
    if (!m->cur) goto fail;
    memcpy(m->cur, m->ws, (size_t)m->n_ws * sizeof *m->cur);
    m->n_cur = m->cap_cur = m->n_ws;
    state_update(m, flags);
    return m;
fail:
    gm_free(m);
    return NULL;
}

void gm_free(struct gram_matcher *m)
{
    if (!m) return;
    if (m->g) grammar_release(m->g);
    free(m->fr);
    free(m->bucket);
    free(m->cur);
    free(m->ws);
    free(m->lvl);
    free(m->esc_at);
    free(m->esc_any);
    free(m->mark);
    free(m);
}

bool gm_can_end(const struct gram_matcher *m) { return m->can_end; }
bool gm_done(const struct gram_matcher *m) { return m->done; }

bool gm_accept_bytes(struct gram_matcher *m, const uint8_t *s, size_t n)
{
    int32_t mark = m->n_fr;
    m->oom = false;
    m->n_ws = 0;
    if (!ws_reserve(m, m->n_cur)) return false;
    memcpy(m->ws, m->cur, (size_t)m->n_cur * sizeof *m->cur);
    m->n_ws = m->n_cur;
    int32_t from = 0, to = m->n_ws;
    int flags = 0;
    for (size_t i = 0; i < n; i++) {
        flags = step(m, from, to, s[i], false);
        if (m->oom || m->n_ws == to) {
            frames_rollback(m, mark);
            m->oom = false;
            return false;
        }
        from = to;
        to = m->n_ws;
    }
    if (n == 0) return true;
    int32_t k = to - from;
    if (k > m->cap_cur) {
        struct thr *c = tryrealloc(m->cur, (size_t)k * sizeof *c);
        if (!c) {
            frames_rollback(m, mark);
            return false;
        }
        m->cur = c;
        m->cap_cur = k;
    }
    memcpy(m->cur, m->ws + from, (size_t)k * sizeof *m->cur);
    m->n_cur = k;
    state_update(m, flags);
    return true;
}

bool gm_accept_token(struct gram_matcher *m, const struct gram_vocab *v, int32_t t)
{
    if (t < 0 || t >= v->n) return false;
    size_t len = v->off[t + 1] - v->off[t];
    if (!len) return false;
    return gm_accept_bytes(m, (const uint8_t *)v->buf + v->off[t], len);
}

static inline void bit_set(uint32_t *bits, int32_t t) { bits[t >> 5] |= 1u << (t & 31); }

static bool unc_push(struct ncache *c, int32_t *cap, int32_t k)
{
    if (c->n_unc == *cap) {
        int32_t *u = tryrealloc(c->unc, (size_t)*cap * 2 * sizeof *u);
        if (!u) return false;
        c->unc = u;
        *cap *= 2;
    }
    c->unc[c->n_unc++] = k;
    return true;
}

/* Builds node's context-independent part by walking the whole trie from (node, unknown
 * stack): a token whose bytes keep a thread alive inside the context, or whose last byte
 * returns below it, is accepted; one that needs the context before its end is uncertain.
 * NULL on allocation failure. */
static struct ncache *cache_build(struct gram_matcher *m, const struct gram_vocab *v,
                                  int32_t node)
{
    struct ncache *c = trycalloc(1, sizeof *c);
    if (!c) return NULL;
    c->acc = trycalloc((size_t)gv_mask_words(v), sizeof *c->acc);
    int32_t cap_unc = 64;
    c->unc = trymalloc((size_t)cap_unc * sizeof *c->unc);
    int32_t mark = m->n_fr;
    if (!c->acc || !c->unc || !lvl_reserve(m, v->max_depth + 1)) goto fail;
    m->oom = false;
    m->n_ws = 0;
    set_begin(m);
    set_add(m, 0, node, STACK_CTX, true);
    closure(m, 0, false); /* returns at depth 0 are other threads of the real state */
    m->lvl[0] = 0;
    m->lvl[1] = m->n_ws;
    m->esc_any[0] = 0;
    for (int32_t i = 0; i < v->n_tn && !m->oom;) {
        const struct tnode *t = &v->tn[i];
        int32_t d = t->depth;
        m->n_ws = m->lvl[d]; /* drop the levels of the previous branch */
        bool esc_at = step(m, m->lvl[d - 1], m->lvl[d], t->byte, true) & CL_ESC;
        m->lvl[d + 1] = m->n_ws;
        bool live = m->lvl[d + 1] > m->lvl[d];
        m->esc_any[d] = m->esc_any[d - 1] || esc_at;
        for (int32_t k = t->tok_lo; k < t->tok_hi; k++) {
            if (live || esc_at) bit_set(c->acc, v->sorted[k]);
            else if (m->esc_any[d - 1] && !unc_push(c, &cap_unc, k)) goto fail;
        }
        if (live) {
            i++;
            continue;
        }
        if (m->esc_any[d]) /* everything below needs the context */
            for (int32_t j = i + 1; j < t->end; j++)
                for (int32_t k = v->tn[j].tok_lo; k < v->tn[j].tok_hi; k++)
                    if (!unc_push(c, &cap_unc, k)) goto fail;
        i = t->end;
    }
    if (m->oom) goto fail;
    frames_rollback(m, mark);
    return c;
fail:
    frames_rollback(m, mark);
    free(c->acc);
    free(c->unc);
    free(c);
    return NULL;
}

static int32_t cache_key(const struct grammar *g, const struct gram_vocab *v, int32_t node)
{
    return g->canon_far && v->max_depth <= g->horizon ? g->canon_far[node] : g->canon[node];
}

static void ncache_free(struct ncache *c)
{
    free(c->acc);
    free(c->unc);
    free(c);
}

/* The cache entry of node, built on first use. The trie walk runs outside the grammar's
 * mutex, so that a sequence whose masks are cached is not held up by another thread's first
 * use of a state of the same grammar (two threads meeting the same new state both walk; the
 * first to finish stores its entry, the other's is dropped). */
static const struct ncache *cache_get(struct gram_matcher *m, const struct gram_vocab *v,
                                      int32_t node)
{
    struct grammar *g = m->g;
    pthread_mutex_lock(&g->mu);
    if (g->cache_vocab != v) {
        cache_clear(g);
        __atomic_store_n(&g->cache_vocab, v, __ATOMIC_RELEASE);
    }
    node = cache_key(g, v, node);
    struct ncache *c = g->cache[node];
    pthread_mutex_unlock(&g->mu);
    if (c) return c;
    struct ncache *mine = cache_build(m, v, node);
    if (!mine) return NULL;
    pthread_mutex_lock(&g->mu);
    if (g->cache_vocab != v) {
        cache_clear(g);
        __atomic_store_n(&g->cache_vocab, v, __ATOMIC_RELEASE);
    }
    c = g->cache[node];
    if (!c) __atomic_store_n(&g->cache[node], c = mine, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g->mu);
    if (c != mine) ncache_free(mine);
    return c;
}

/* Without the mutex: entries and cache_vocab are stored atomically (under it), and an entry
 * once stored stays until the vocabulary changes. */
bool gm_mask_cached(const struct gram_matcher *m, const struct gram_vocab *v)
{
    struct grammar *g = m->g;
    if (__atomic_load_n(&g->cache_vocab, __ATOMIC_ACQUIRE) != v) return false;
    for (int32_t i = 0; i < m->n_cur; i++)
        if (m->cur[i].root &&
            !__atomic_load_n(&g->cache[cache_key(g, v, m->cur[i].node)], __ATOMIC_ACQUIRE))
            return false;
    return true;
}

/* Sets the bits of c's uncertain tokens that thread t accepts. */
static void check_uncertain(struct gram_matcher *m, const struct gram_vocab *v,
                            const struct ncache *c, struct thr t, uint32_t *bits)
{
    m->n_ws = 0;
    set_begin(m);
    set_add(m, 0, t.node, t.stack, true);
    closure(m, 0, false);
    m->lvl[0] = 0;
    m->lvl[1] = m->n_ws;
    int32_t have = 0;        /* levels [0, have] are valid for prev */
    int32_t dead = INT32_MAX; /* level at which prev's path died */
    const char *prev = NULL;
    size_t prev_len = 0;
    for (int32_t u = 0; u < c->n_unc && !m->oom; u++) {
        int32_t id = v->sorted[c->unc[u]];
        const char *s = v->buf + v->off[id];
        size_t len = v->off[id + 1] - v->off[id];
        int32_t l = 0;
        while (prev && (size_t)l < len && (size_t)l < prev_len && s[l] == prev[l]) l++;
        if (l > have) l = have;
        if (dead <= l) continue; /* shares a dead prefix */
        dead = INT32_MAX;
        have = l;
        m->n_ws = m->lvl[l + 1];
        prev = s;
        prev_len = len;
        int32_t d;
        for (d = l; (size_t)d < len; d++) {
            step(m, m->lvl[d], m->lvl[d + 1], (uint8_t)s[d], false);
            m->lvl[d + 2] = m->n_ws;
            if (m->lvl[d + 2] == m->lvl[d + 1]) break;
            have = d + 1;
        }
        if ((size_t)d == len) bit_set(bits, id);
        else dead = d + 1;
    }
}

int32_t gm_fill_mask(struct gram_matcher *m, const struct gram_vocab *v, uint32_t *bits)
{
    int32_t W = gv_mask_words(v);
    memset(bits, 0, (size_t)W * sizeof *bits);
    int32_t mark = m->n_fr;
    m->oom = false;
    if (!lvl_reserve(m, v->max_depth + 1)) return -1;
    int32_t done_nodes[64];
    int32_t n_done = 0;
    for (int32_t i = 0; i < m->n_cur; i++) {
        struct thr t = m->cur[i];
        if (!t.root) continue;
        const struct ncache *c = cache_get(m, v, t.node);
        if (!c) {
            frames_rollback(m, mark);
            return -1;
        }
        bool seen = false;
        int32_t key = cache_key(m->g, v, t.node);
        for (int32_t k = 0; k < n_done && !seen; k++) seen = done_nodes[k] == key;
        if (!seen) {
            for (int32_t w = 0; w < W; w++) bits[w] |= c->acc[w];
            if (n_done < (int32_t)ARRAY_LEN(done_nodes)) done_nodes[n_done++] = key;
        }
        if (c->n_unc) check_uncertain(m, v, c, t, bits);
    }
    frames_rollback(m, mark);
    if (m->oom) return -1;
    int32_t n = 0;
    for (int32_t w = 0; w < W; w++) n += __builtin_popcount(bits[w]);
    return n;
}
