/*
 * http: the HTTP front end on libmicrohttpd. One internal polling thread (epoll, or poll
 * where epoll is missing) runs every callback; none of them blocks (slow work goes to other
 * threads):
 *
 *   headers  framing (400), the API key (401), a declared body over max_body_bytes (413) or
 *            over the server-wide body cap (503), the drain (503): answered before any body
 *            byte is read, the connection then closed (on_headers in http.c);
 *   body     accumulated up to max_body_bytes (beyond: 413 once the body is read), counted
 *            against max_buffered_body_bytes;
 *   parse    openai.c on the HTTP thread (JSON only), 400/404 at once on errors;
 *   prepare  the connection is suspended and the job goes to the worker pool: tokenize and
 *            detokenize are answered from there; a completion becomes a session
 *            (session.h: chat template, tokenizer, media, one scheduler request per
 *            choice), and the worker resumes the connection;
 *   stream   the engine thread's notify hook resumes the connection once per step; the
 *            content reader pumps the session, which writes SSE chunks, or, for a
 *            non-streaming request, pumps until every choice is done and then answers;
 *   complete MHD's completion callback runs for normal ends and for clients that went
 *            away: unfinished requests are aborted, and the HTTP side's references dropped.
 *
 * Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health,
 * GET /ready, POST /tokenize, POST /detokenize, GET /metrics, GET /v1/models/{id},
 * GET /version, GET|POST /ping, POST /invocations, GET /tokenizer_info (docs/HTTP.md). A
 * client's X-Request-Id is echoed on the answer. With an API key configured, every route but
 * /health, /ready, /ping, the preflight, the page and (metrics_open) /metrics requires
 * "Authorization: Bearer <key>" (401 otherwise, before 404 and 405).
 *
 * Threads: http_start/http_stop from the main thread; http_drain_begin, http_inflight and
 * http_abort_all from any thread.
 */
#ifndef VLM_HTTP_H
#define VLM_HTTP_H

#include <stdint.h>

#include "config/config.h"
#include "engine/base.h"
#include "scheduler/loop.h"
#include "server/metrics.h"
#include "server/prep.h"
#include "server/workers.h"
#include "server/tokenizer.h"

/* What the server borrows; everything outlives the server. */
struct http_deps {
    const struct config_http *http;
    const struct config_api *api;
    const struct config_media *media;
    const char *model_name;        /* served name */
    int32_t max_model_len;
    int32_t vocab_size;
    const int32_t *eos_ids;        /* (n_eos) */
    int32_t n_eos;
    uint64_t seed;                 /* --seed: requests without a seed draw from mix64(seed ^
                                      request id); 0: from the clock */
    const struct tokenizer *tok;
    const struct prep_ctx *prep_ctx;
    struct workers *workers;
    struct sched_loop *loop;
    struct metrics *metrics;
};

struct http_server;

/* Starts listening on http->host:http->port (port 0: any free port). VLM_EIO with a
 * message when the daemon cannot start (address in use, ...). */
int http_start(struct http_server **out, const struct http_deps *d, struct vlm_err *err);
/* The bound port (useful with port 0). */
uint16_t http_port(const struct http_server *s);
/* Graceful shutdown begins: /ready answers 503 and new work requests get 503 at once. */
void http_drain_begin(struct http_server *s);
/* HTTP requests with preparation or generation under way. */
int32_t http_inflight(const struct http_server *s);
/* The end of the drain: cancels media fetches and decode-budget waits, aborts every request
 * still generating (streams end with "abort" + [DONE], others get 503) and refuses those
 * still being prepared (503). Connections then end as their requests do. */
void http_abort_all(struct http_server *s);
/* Stops the daemon and frees the server. Call only after http_inflight() is 0 and the prep
 * pool is idle: libmicrohttpd aborts the process if a connection is still suspended. NULL
 * ok. */
void http_stop(struct http_server *s);

#endif
