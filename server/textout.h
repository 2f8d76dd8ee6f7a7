/*
 * textout: what a client sees of a choice's sampled tokens. Two stages, each usable alone,
 * and struct textout chaining them the way every completion choice uses them:
 *
 *   text   incremental detokenizing, stop strings matched on the text across token
 *          boundaries (never included in the output), and the <think>...</think> split of
 *          the output's start into reasoning (struct textout_text);
 *   tools  with tools and tool_choice "auto" (or a forced one), the tool-call parser over the
 *          content the first stage releases (struct textout_tools, vLLM's hermes parser).
 *
 * Callers: server/session.c (one struct textout per choice) and the tests. No function here
 * blocks or touches shared state; every function is thread-safe on distinct objects.
 */
#ifndef VLM_TEXTOUT_H
#define VLM_TEXTOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"
#include "server/tokenizer.h"

/* ==== Stop strings and the <think> split ==== */

enum textout_think { TEXTOUT_THINK_OFF, TEXTOUT_THINK_START, TEXTOUT_THINK_IN, TEXTOUT_THINK_DONE };

/* One choice's text state. Text is released only when it can no longer become part of a
 * stop string or a think tag; what is held back is in hold. */
struct textout_text {
    const struct tokenizer *tok;       /* borrowed; NULL when only bytes are pushed */
    struct tok_stream ts;
    bool skip_special;
    const char *const *stop;           /* borrowed, (n_stop) */
    int32_t n_stop;
    int think;                         /* enum textout_think */
    struct strbuf hold;                /* owned; decoded, not yet released */
    struct strbuf piece;               /* owned; scratch */
    bool stopped;                      /* a stop string matched: nothing more is released */
    int32_t stop_idx;                  /* which one (stop[stop_idx]) once stopped */
};

/* thinking: route <think>...</think> at the start of the output to reasoning. */
void textout_text_init(struct textout_text *t, const struct tokenizer *tok, bool skip_special,
                       const char *const *stop, int32_t n_stop, bool thinking);
void textout_text_destroy(struct textout_text *t);
/* Feeds one sampled token. Released text is appended to content or reasoning. Returns 1 when
 * a stop string completed (the text before it was released, the rest dropped), else 0. */
int textout_text_push(struct textout_text *t, int32_t token, struct strbuf *content,
                      struct strbuf *reasoning);
/* Same as textout_text_push for already-decoded bytes. */
int textout_text_push_bytes(struct textout_text *t, const char *s, size_t n,
                            struct strbuf *content, struct strbuf *reasoning);
/* End of output: releases what is held back (an incomplete character becomes U+FFFD). */
void textout_text_finish(struct textout_text *t, struct strbuf *content,
                         struct strbuf *reasoning);

/* ==== Tool calls in the output (vLLM's hermes parser) ====
 * A choice's content (after the <think> split and the stop strings) goes through struct
 * textout_tools. Text before the first "<tool_call>" is content and streams as usual (only a
 * possible beginning of the tag is held back). From the tag on, each
 * "<tool_call>...</tool_call>" block (or an unterminated one at the end) is parsed as
 * {"name": string, "arguments": any}: a block that parses becomes a call with arguments
 * written as json.dumps(arguments, ensure_ascii=False) and an id "call_" + 24 letters or
 * digits; one that does not stays in the content as it was. Text outside blocks after the
 * first tag is content too, except whitespace that runs up to a parsed block or the end.
 * The result does not depend on how the text is cut into pushes. */

#define TEXTOUT_CALL_ID_CHARS 24

struct textout_call {
    char id[8 + TEXTOUT_CALL_ID_CHARS]; /* "call_" + 24 alphanumerics */
    char *name;                         /* owned */
    char *arguments;                    /* owned; a JSON text */
};

struct textout_tools {
    bool seen;                   /* a "<tool_call>" tag was seen */
    bool in_call;                /* inside a block */
    struct strbuf hold;          /* outside: a possible start of the tag; inside: the block */
    struct strbuf ws;            /* whitespace after the first tag, not yet released */
    struct textout_call *calls;  /* owned, (n_calls) */
    int32_t n_calls, cap;
    uint64_t seed;               /* for the ids */
};

void textout_tools_init(struct textout_tools *p, uint64_t seed);
void textout_tools_destroy(struct textout_tools *p); /* accepts a zeroed struct */
/* Feeds content text; content released by the parser is appended to content, complete calls
 * to p->calls. */
void textout_tools_push(struct textout_tools *p, const char *s, size_t n,
                        struct strbuf *content);
/* End of output: an unterminated block is parsed as if it were closed; held text released. */
void textout_tools_finish(struct textout_tools *p, struct strbuf *content);

/* ==== Both stages ==== */

/* A choice's output: text, then (tools_on) the tool parser. */
struct textout {
    struct textout_text text;
    bool tools_on;               /* content goes through tools */
    struct textout_tools tools;  /* owned; the calls found so far */
    struct strbuf raw;           /* owned; scratch: content before the tool parser */
};

/* tok, skip_special, stop, n_stop, thinking: as textout_text_init; tools_seed: the call
 * ids' seed (tools_on only). */
void textout_init(struct textout *o, const struct tokenizer *tok, bool skip_special,
                  const char *const *stop, int32_t n_stop, bool thinking, bool tools_on,
                  uint64_t tools_seed);
void textout_destroy(struct textout *o); /* accepts a zeroed struct */
/* One token (textout_push) or decoded bytes (textout_push_bytes) through both stages;
 * released text is appended to content or reasoning. Returns 1 when a stop string
 * completed: nothing more is released (textout_finish still releases held tool text). */
int textout_push(struct textout *o, int32_t token, struct strbuf *content,
                 struct strbuf *reasoning);
int textout_push_bytes(struct textout *o, const char *s, size_t n, struct strbuf *content,
                       struct strbuf *reasoning);
/* End of output (after a stop string too): releases everything held. */
void textout_finish(struct textout *o, struct strbuf *content, struct strbuf *reasoning);
/* The calls found (none unless tools_on). */
static inline int32_t textout_n_calls(const struct textout *o)
{
    return o->tools_on ? o->tools.n_calls : 0;
}

#endif
