/*
 * responses: the OpenAI Responses API (POST /v1/responses, GET and DELETE
 * /v1/responses/{id}) on top of the chat pipeline. docs/HTTP.md, "Responses API", lists the
 * fields.
 *
 * A Responses request is translated into a Chat Completions body (instructions -> a system
 * message, the conversation of previous_response_id, input items -> messages, function_call
 * items -> an assistant message's tool_calls, function_call_output items -> tool messages,
 * flat function tools -> chat tools, max_output_tokens -> max_tokens, text.format ->
 * response_format, reasoning.effort "none" -> enable_thinking false) and parsed by oai_parse,
 * so every chat rule applies. Errors name the Responses field ("input[2].content[0]
 * .image_url", "max_output_tokens", "tools[0].name"): resp_map_err rewrites the chat names.
 *
 * The generated choice comes back as a struct resp_result and is rendered as a response
 * object (output items: "reasoning" for the thinking part, "message" with one output_text,
 * "function_call" per tool call), or, streaming, as the typed SSE events of the Responses
 * API (response.created ... response.completed). The stream's final object is the object a
 * non-streamed call renders.
 *
 * The store keeps finished responses (when "store" is not false) for GET, DELETE and
 * previous_response_id: in memory, least recently used first out, bounded by a number of
 * entries and a number of bytes (--responses-store-size, --responses-store-bytes).
 *
 * Threads: the store is thread-safe (one mutex); a resp_req belongs to one thread at a time.
 */
#ifndef VLM_RESPONSES_H
#define VLM_RESPONSES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"
#include "server/openai.h"
#include "server/session.h"
#include "server/textout.h"

/* ==== The store ==== */

struct resp_store;

/* max_entries 0: nothing is stored (every lookup misses). */
struct resp_store *resp_store_new(int32_t max_entries, int64_t max_bytes);
void resp_store_free(struct resp_store *s); /* NULL ok */
/* A copy of the stored response object (JSON, caller frees), or NULL. Marks it used. */
char *resp_store_get(struct resp_store *s, const char *id);
/* Removes id; false when it was not there. */
bool resp_store_delete(struct resp_store *s, const char *id);
/* DELETE /v1/responses/{id}: removes id and returns {"id", "object": "response", "deleted":
 * true} (malloc'ed), or NULL when it was not there. */
char *resp_deleted_json(struct resp_store *s, const char *id);
int32_t resp_store_count(struct resp_store *s);

/* ==== Requests ==== */

struct resp_req;

/* Parses body[0..len) as a Responses request into *out (a chat request, oai_request_destroy)
 * and *rq (resp_req_free). previous_response_id is looked up in store. Returns 0, or
 * VLM_EINVAL (400 naming the field; 404 for an unknown model or previous response) or
 * VLM_ENOMEM with err filled (nothing to free then). */
int resp_parse(const char *body, size_t len, const struct oai_limits *lim,
               struct resp_store *store, struct oai_request *out, struct resp_req **rq,
               struct vlm_err *err);
void resp_req_free(struct resp_req *rq); /* NULL ok */
/* Rewrites an error about the translated chat request (its "messages[3]...", "max_tokens",
 * ...) to name the Responses field the client sent. */
void resp_map_err(const struct resp_req *rq, struct vlm_err *err);
bool resp_streaming(const struct resp_req *rq);
const char *resp_id(const struct resp_req *rq); /* "resp_..." */

/* ==== Results ==== */

/* The finished (or, streaming, the running) choice. */
struct resp_result {
    const char *reasoning;  /* the thinking text; NULL or "" = none */
    const char *content;    /* the answer text (after the tool-call parser) */
    const struct textout_call *calls; /* borrowed, (n_calls) */
    int32_t n_calls;
    bool length;            /* ended by max_output_tokens (status "incomplete") */
    const char *failed;     /* NULL, or why the output stopped short (status "failed") */
    int32_t input_tokens, output_tokens, cached_tokens, reasoning_tokens;
};

/* The response object for a finished request (malloc'ed JSON); stores it when the request
 * asked to. */
char *resp_finish(struct resp_req *rq, struct resp_store *store, const struct resp_result *res);

/* ==== Streaming ====
 * resp_sse_begin once, resp_sse_delta per pump with what is new (reasoning and content
 * deltas; res->calls holds every call found so far), resp_sse_end once with the final
 * result (it closes the open items and sends response.completed, or response.incomplete /
 * response.failed, with the object resp_finish renders, and stores it). */
void resp_sse_begin(struct strbuf *out, struct resp_req *rq);
void resp_sse_delta(struct strbuf *out, struct resp_req *rq, const char *reasoning,
                    size_t reasoning_len, const char *content, size_t content_len,
                    const struct textout_call *calls, int32_t n_calls);
void resp_sse_end(struct strbuf *out, struct resp_req *rq, struct resp_store *store,
                  const struct resp_result *res);

/* ==== On a chat session (session.h; its one choice) ==== */

/* Streaming: one pump, the events appended to out; after the end, s->eof and the request
 * recorded in the metrics. */
void resp_pump_stream(struct resp_req *rq, struct resp_store *store, struct session *s,
                      struct strbuf *out);
/* Non-streaming, after sess_pump returned true: the response object (resp_finish). */
char *resp_session_json(struct resp_req *rq, struct resp_store *store, struct session *s);

#endif
