/*
 * session: one OpenAI completion request (POST /v1/chat/completions or /v1/completions)
 * from its parsed form to the answer, independent of the transport:
 *
 *   prepare  (a worker) each prompt through the chat template, tokenizer and media
 *            (prep.h), then one scheduler request per choice: n for each prompt, choice
 *            index prompt * n + sample (vLLM's order), submitted to the loop;
 *   pump     (the caller's thread, after the notify hook) each choice's stream is drained:
 *            events are counted for usage, get their logprob entries, and go through the
 *            text pipeline (textout.h); a stop string found there aborts the request in
 *            the scheduler (the only way text flows back);
 *   answer   streaming: SSE chunks per pump (role, deltas, tool calls, the finish reason
 *            on a choice's last chunk, usage, [DONE]); else one response once every choice
 *            is done.
 *
 * The transport (http.c) owns the session and its thread hand-offs: it calls
 * sess_prepare on a worker and everything else on its own thread, one call at a time,
 * except sess_abort_submitted (any thread, see there).
 */
#ifndef VLM_SESSION_H
#define VLM_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/base.h"
#include "scheduler/loop.h"
#include "scheduler/request.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/prep.h"
#include "server/textout.h"
#include "server/tokenizer.h"

struct cJSON;

/* What sessions borrow; everything outlives them. */
struct sess_env {
    const struct tokenizer *tok;
    int32_t vocab_size;
    const int32_t *eos_ids;        /* (n_eos) */
    int32_t n_eos;
    uint64_t seed;                 /* --seed: requests without a seed draw from mix64(seed ^
                                      request id); 0: from the clock */
    const struct prep_ctx *prep_ctx;
    struct sched_loop *loop;
    struct metrics *metrics;
    _Atomic uint64_t *next_id;     /* request ids (shared with the transport's ids) */
};

/* How a choice's scheduler request reaches the transport: notify and cleanup become the
 * request's hooks (request.h) with user, and retain takes one reference on user for each
 * request built (its cleanup gives it back). */
struct sess_hooks {
    req_notify_fn notify;
    req_cleanup_fn cleanup;
    void (*retain)(void *user);
    void *user;
};

/* One choice. */
struct sess_choice {
    struct request *r;          /* the session's reference; NULL once released */
    bool submitted;
    struct textout out;         /* the text pipeline (owned) */
    struct strbuf content, reasoning; /* stream: this pump's delta; else everything */
    int32_t n_calls_sent;       /* stream: tool calls already sent */
    struct cJSON *lp;           /* logprobs being built (owned), NULL without logprobs */
    int32_t n_lp;               /* entries in lp */
    int32_t n_tokens;           /* completion tokens counted so far */
    int32_t text_len;           /* bytes of text released (completion text_offset) */
    int state;                  /* final enum req_state, 0 while running */
    bool stop_hit;              /* a stop string ended this choice */
    bool done, role_sent;
    struct req_usage usage;     /* from the stream when it finished */
    uint64_t t_last_ns;
    int32_t prompt_idx;         /* the prompt of the batch this choice continues */
    struct i32_vec ids;         /* output ids so far (return_token_ids) */
    int32_t ids_sent;           /* stream: ids already sent */
    bool prelude_done;          /* the echoed prompt / prompt logprobs taken */
    struct cJSON *plp;          /* prompt_logprobs being returned (owned) */
    bool stop_token_hit;        /* a stop_token_ids entry ended the choice */
    int32_t stop_token;
    int32_t n_think;            /* tokens from <think> through </think> (Responses usage) */
};

struct session {
    const struct sess_env *env; /* borrowed */
    struct oai_request q;       /* owned; filled by the caller (oai_parse) */
    struct oai_meta meta;       /* filled by the caller (oai_meta_init) */
    uint64_t t_start_ns, t_first_ns; /* t_start_ns: set by the caller when the request came */
    struct sess_choice *ch;     /* owned, (n_ch) */
    int32_t n_ch;
    struct i32_vec *prompt_ids; /* owned, (n_prompts): each prompt as submitted */
    int32_t n_prompts;
    int32_t n_prompt;           /* prompt tokens of all prompts */
    bool eof;                   /* stream: [DONE] written */
    bool error_sent;            /* stream: an error event written */
    bool recorded;              /* counted in the metrics */
};

/* A zeroed session on env. */
void sess_init(struct session *s, const struct sess_env *env);
/* Frees everything; the requests must have been released (sess_release_requests). */
void sess_destroy(struct session *s);

/* ==== Preparation (a worker thread) ==== */

/* Prepares every prompt of s->q and builds and submits one request per choice into s->ch.
 * On failure err is filled (400, 503, ...); the choices built so far stay in s->ch (their
 * submitted ones aborted), to be released as usual. */
int sess_prepare(struct session *s, const struct sess_hooks *hooks, struct vlm_err *err);
/* Choice h (of s->ch, or standalone in tests) ready for output: its text pipeline, tool
 * parser (chat with tools under tool_choice "auto" or a forced one; call ids from
 * tools_seed) and logprobs. thinking: the prompt opened a <think> block to route. */
void sess_choice_init(struct session *s, struct sess_choice *h, int32_t prompt_idx,
                      bool thinking, uint64_t tools_seed);

/* ==== Pumping and answering (the transport's thread) ==== */

/* Non-streaming: drains every choice once; true when all are done. */
bool sess_pump(struct session *s);
/* Streaming: one pump over all choices, the SSE events appended to out; after the last
 * choice's end, usage (stream_options.include_usage) and [DONE] too (s->eof). */
void sess_pump_stream(struct session *s, struct strbuf *out);
/* The parts of one streaming pump for choice i, for callers that feed the text themselves
 * (tests): the role chunk when not sent yet (chat), then what the choice released since the
 * last call (content, reasoning, logprobs, new tool calls; the finish reason once done). */
void sess_stream_role(struct session *s, int32_t i, struct strbuf *out);
void sess_stream_delta(struct session *s, int32_t i, struct strbuf *out);

/* After sess_pump returned true: a choice ended by an engine failure (500), one aborted
 * (by the drain or a client that left), or else the response body (malloc'ed). */
bool sess_failed(const struct session *s);
bool sess_aborted(const struct session *s);
char *sess_response_json(struct session *s);
/* Counts the finished request in the metrics and logs it (once). */
void sess_record_finish(struct session *s);

/* ==== Ending early ==== */

/* Aborts every submitted choice that is not done; returns how many. */
int32_t sess_abort_running(struct session *s);
/* The client left for good: aborts what runs; if anything did, the unfinished choices count
 * as aborted and the request is recorded. Returns whether anything was aborted. */
bool sess_cancel(struct session *s);
/* Aborts every submitted request (finished ones ignore it). Any thread, while the caller
 * guarantees that the requests are not released meanwhile. */
void sess_abort_submitted(struct session *s);
/* Drops the session's request references (a request's cleanup hook may run here). */
void sess_release_requests(struct session *s);

#endif
