/*
 * textout.c: the stop-string and <think> stage, the tool-call parser, and the two chained.
 * See textout.h.
 */
#include "server/textout.h"

#include <stdlib.h>
#include <string.h>

#include "server/pyjson.h"

/* ==== The output text pipeline ====
 * hold keeps decoded text that might still turn into a stop string or a think tag. After each
 * token: (1) the earliest complete stop string in hold ends the output; (2) otherwise everything
 * is released except the longest tail that is a proper prefix of a stop string or of the tag
 * that the think state is waiting for. Released text goes through the think router. */

static const char THINK_OPEN[] = "<think>", THINK_CLOSE[] = "</think>";

void textout_text_init(struct textout_text *t, const struct tokenizer *tok, bool skip_special,
                   const char *const *stop, int32_t n_stop, bool thinking)
{
    memset(t, 0, sizeof *t);
    t->tok = tok;
    tok_stream_init(&t->ts);
    t->skip_special = skip_special;
    t->stop = stop;
    t->n_stop = n_stop;
    t->think = thinking ? TEXTOUT_THINK_START : TEXTOUT_THINK_OFF;
}

void textout_text_destroy(struct textout_text *t)
{
    sb_free(&t->hold);
    sb_free(&t->piece);
}

/* Longest k < strlen(pat) such that s[n-k..n) == pat[0..k). */
static size_t partial_suffix(const char *s, size_t n, const char *pat)
{
    size_t m = strlen(pat);
    for (size_t k = VLM_MIN(n, m - 1); k > 0; k--)
        if (!memcmp(s + n - k, pat, k)) return k;
    return 0;
}

static void route(struct textout_text *t, const char *s, size_t n, struct strbuf *content,
                  struct strbuf *reasoning)
{
    while (n > 0) {
        if (t->think == TEXTOUT_THINK_START) {
            size_t lo = strlen(THINK_OPEN);
            if (n >= lo && !memcmp(s, THINK_OPEN, lo)) {
                s += lo;
                n -= lo;
                t->think = TEXTOUT_THINK_IN;
            } else {
                t->think = TEXTOUT_THINK_DONE;
            }
            continue;
        }
        if (t->think == TEXTOUT_THINK_IN) {
            const char *e = memmem(s, n, THINK_CLOSE, strlen(THINK_CLOSE));
            size_t take = e ? (size_t)(e - s) : n;
            sb_append(reasoning, s, take);
            if (!e) return;
            t->think = TEXTOUT_THINK_DONE;
            s += take + strlen(THINK_CLOSE);
            n -= take + strlen(THINK_CLOSE);
            continue;
        }
        sb_append(content, s, n);
        return;
    }
}

static void release(struct textout_text *t, size_t upto, struct strbuf *content,
                    struct strbuf *reasoning)
{
    if (upto == 0) return;
    route(t, t->hold.s, upto, content, reasoning);
    memmove(t->hold.s, t->hold.s + upto, t->hold.n - upto);
    t->hold.n -= upto;
    t->hold.s[t->hold.n] = 0;
}

int textout_text_push_bytes(struct textout_text *t, const char *s, size_t n, struct strbuf *content,
                        struct strbuf *reasoning)
{
    if (t->stopped) return 0;
    sb_append(&t->hold, s, n);
    if (!t->hold.n) return 0;
    /* (1) earliest complete stop string */
    size_t best = SIZE_MAX;
    for (int32_t i = 0; i < t->n_stop; i++) {
        const char *e = memmem(t->hold.s, t->hold.n, t->stop[i], strlen(t->stop[i]));
        if (e && (size_t)(e - t->hold.s) < best) {
            best = (size_t)(e - t->hold.s);
            t->stop_idx = i;
        }
    }
    if (best != SIZE_MAX) {
        release(t, best, content, reasoning);
        t->hold.n = 0;
        t->hold.s[0] = 0;
        t->stopped = true;
        return 1;
    }
    /* (2) hold back a possible beginning of a stop string or an awaited tag; the think state
     * only changes inside route(), so decide the tag from the state before releasing. */
    size_t keep = 0;
    for (int32_t i = 0; i < t->n_stop; i++)
        keep = VLM_MAX(keep, partial_suffix(t->hold.s, t->hold.n, t->stop[i]));
    if (t->think == TEXTOUT_THINK_START) {
        /* undecided until we see whether the output opens with <think> */
        if (t->hold.n < strlen(THINK_OPEN) && !memcmp(THINK_OPEN, t->hold.s, t->hold.n))
            keep = t->hold.n;
    } else if (t->think == TEXTOUT_THINK_IN) {
        keep = VLM_MAX(keep, partial_suffix(t->hold.s, t->hold.n, THINK_CLOSE));
    }
    release(t, t->hold.n - keep, content, reasoning);
    /* a release that closed the think block may leave a held tail that no longer needs
     * holding; it goes out with the next token or at finish */
    return 0;
}

int textout_text_push(struct textout_text *t, int32_t token, struct strbuf *content,
                  struct strbuf *reasoning)
{
    if (t->stopped) return 0;
    sb_free(&t->piece);
    tok_stream_push(t->tok, &t->ts, token, t->skip_special, &t->piece);
    if (!t->piece.n) return 0;
    return textout_text_push_bytes(t, t->piece.s, t->piece.n, content, reasoning);
}

void textout_text_finish(struct textout_text *t, struct strbuf *content, struct strbuf *reasoning)
{
    if (t->stopped) return;
    sb_free(&t->piece);
    tok_stream_flush(&t->ts, &t->piece);
    if (t->piece.n && textout_text_push_bytes(t, t->piece.s, t->piece.n, content, reasoning)) return;
    if (t->think == TEXTOUT_THINK_START && t->hold.n) t->think = TEXTOUT_THINK_DONE;
    if (t->hold.n) release(t, t->hold.n, content, reasoning);
}

/* ==== Tool calls in the output ====
 * A small state machine over released content: outside a block, text goes out (held
 * whitespace first) up to a possible beginning of "<tool_call>"; inside, the block is kept
 * until "</tool_call>". See textout.h for the rules. */

static const char TOOL_OPEN[] = "<tool_call>", TOOL_CLOSE[] = "</tool_call>";

void textout_tools_init(struct textout_tools *p, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->seed = seed;
}

void textout_tools_destroy(struct textout_tools *p)
{
    if (!p) return;
    for (int32_t i = 0; i < p->n_calls; i++) {
        free(p->calls[i].name);
        free(p->calls[i].arguments);
    }
    free(p->calls);
    sb_free(&p->hold);
    sb_free(&p->ws);
    memset(p, 0, sizeof *p);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Text outside blocks. Before the first tag it goes out as is; after it, a whitespace tail
 * is held until something other than whitespace follows. */
static void tools_outside(struct textout_tools *p, const char *s, size_t n, struct strbuf *content)
{
    if (!p->seen) {
        sb_append(content, s, n);
        return;
    }
    size_t body = n;
    while (body > 0 && is_ws(s[body - 1])) body--;
    if (body > 0) {
        sb_append(content, p->ws.s ? p->ws.s : "", p->ws.n);
        p->ws.n = 0;
        sb_append(content, s, body);
    }
    sb_append(&p->ws, s + body, n - body);
}

static void tool_id(const struct textout_tools *p, char *id)
{
    static const char alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    uint64_t k = (uint64_t)p->n_calls, h = 0;
    memcpy(id, "call_", 5);
    for (int i = 0; i < TEXTOUT_CALL_ID_CHARS; i++) {
        if (i % 8 == 0) h = vlm_hash64(&k, sizeof k, p->seed + (uint64_t)i);
        id[5 + i] = alnum[h % 62];
        h /= 62;
    }
    id[5 + TEXTOUT_CALL_ID_CHARS] = 0;
}

/* One block body: a call if it is a JSON object with a string "name" and an "arguments"
 * member (written back as json.dumps writes it), else the block goes to the content as it
 * was. */
static void tools_block(struct textout_tools *p, const char *s, size_t n, bool closed,
                        struct strbuf *content)
{
    struct pyjson_span block = {s, n}, name, args;
    struct strbuf nm = {0}, a = {0};
    bool ok = !pyjson_dumps(s, n, NULL) && pyjson_member(block, "name", &name) &&
              name.s[0] == '"' && !pyjson_string(name, &nm) &&
              pyjson_member(block, "arguments", &args) && !pyjson_dumps(args.s, args.n, &a);
    if (ok) {
        if (p->n_calls == p->cap) {
            p->cap = p->cap ? 2 * p->cap : 4;
            p->calls = xrealloc(p->calls, sizeof *p->calls * (size_t)p->cap);
        }
        struct textout_call *c = &p->calls[p->n_calls];
        tool_id(p, c->id);
        c->name = nm.s;
        c->arguments = a.s;
        p->n_calls++;
        p->ws.n = 0; /* whitespace up to a parsed block is dropped */
        return;
    }
    sb_free(&nm);
    sb_free(&a);
    sb_append(content, p->ws.s ? p->ws.s : "", p->ws.n);
    p->ws.n = 0;
    sb_puts(content, TOOL_OPEN);
    sb_append(content, s, n);
    if (closed) sb_puts(content, TOOL_CLOSE);
}

static void hold_drop(struct strbuf *b, size_t k)
{
    memmove(b->s, b->s + k, b->n - k);
    b->n -= k;
    b->s[b->n] = 0;
}

void textout_tools_push(struct textout_tools *p, const char *s, size_t n, struct strbuf *content)
{
    if (n) sb_append(&p->hold, s, n);
    while (p->hold.n) {
        if (!p->in_call) {
            const char *q = memmem(p->hold.s, p->hold.n, TOOL_OPEN, strlen(TOOL_OPEN));
            size_t out = q ? (size_t)(q - p->hold.s)
                           : p->hold.n - partial_suffix(p->hold.s, p->hold.n, TOOL_OPEN);
            tools_outside(p, p->hold.s, out, content);
            if (!q) {
                hold_drop(&p->hold, out);
                return;
            }
            hold_drop(&p->hold, out + strlen(TOOL_OPEN));
            p->seen = p->in_call = true;
        } else {
            const char *q = memmem(p->hold.s, p->hold.n, TOOL_CLOSE, strlen(TOOL_CLOSE));
            if (!q) return;
            size_t body = (size_t)(q - p->hold.s);
            tools_block(p, p->hold.s, body, true, content);
            hold_drop(&p->hold, body + strlen(TOOL_CLOSE));
            p->in_call = false;
        }
    }
}

void textout_tools_finish(struct textout_tools *p, struct strbuf *content)
{
    if (p->in_call) tools_block(p, p->hold.s ? p->hold.s : "", p->hold.n, false, content);
    else if (p->hold.n) tools_outside(p, p->hold.s, p->hold.n, content);
    p->hold.n = 0;
    p->ws.n = 0;
    p->in_call = false;
}

/* ==== Both stages ==== */

void textout_init(struct textout *o, const struct tokenizer *tok, bool skip_special,
                  const char *const *stop, int32_t n_stop, bool thinking, bool tools_on,
                  uint64_t tools_seed)
{
    memset(o, 0, sizeof *o);
    textout_text_init(&o->text, tok, skip_special, stop, n_stop, thinking);
    o->tools_on = tools_on;
    textout_tools_init(&o->tools, tools_seed);
}

void textout_destroy(struct textout *o)
{
    textout_text_destroy(&o->text);
    textout_tools_destroy(&o->tools);
    sb_free(&o->raw);
}

/* What the text stage released into raw goes through the tool parser. */
static void tools_feed(struct textout *o, struct strbuf *content)
{
    textout_tools_push(&o->tools, o->raw.s, o->raw.n, content);
    o->raw.n = 0;
}

int textout_push(struct textout *o, int32_t token, struct strbuf *content,
                 struct strbuf *reasoning)
{
    int stopped = textout_text_push(&o->text, token, o->tools_on ? &o->raw : content, reasoning);
    if (o->tools_on) tools_feed(o, content);
    return stopped;
}

int textout_push_bytes(struct textout *o, const char *s, size_t n, struct strbuf *content,
                       struct strbuf *reasoning)
{
    int stopped = textout_text_push_bytes(&o->text, s, n, o->tools_on ? &o->raw : content,
                                          reasoning);
    if (o->tools_on) tools_feed(o, content);
    return stopped;
}

void textout_finish(struct textout *o, struct strbuf *content, struct strbuf *reasoning)
{
    textout_text_finish(&o->text, o->tools_on ? &o->raw : content, reasoning);
    if (!o->tools_on) return;
    tools_feed(o, content);
    textout_tools_finish(&o->tools, content);
}
