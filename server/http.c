/*
 * http.c: the transport: libmicrohttpd daemon, routing, body reading, the API key, CORS,
 * suspend/resume, the SSE response, error replies. A completion's content is its session's
 * (session.h). See http.h for the request lifecycle.
 */
#include "server/http.h"

#include <cjson/cJSON.h>
#include <libavutil/base64.h>
#include <libavutil/mem.h>
#include <libavutil/sha.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "server/fetch.h"
#include "server/openai.h"
#include "server/responses.h"
#include "server/session.h"
#include "server/utf8.h"
#include "server/web.h"

/* ==== Data structures ====
 * struct conn is one HTTP request (MHD's per-request context). Its owners, counted in refs:
 * MHD (until the completion callback), a queued worker job, each struct request its session
 * built (sess_hooks; released by the request's cleanup, so the engine thread's notify never sees a freed
 * conn), and a streaming response (released by its free callback). The mutex guards the
 * suspend/resume handshake and the closed flag; everything else is touched by one thread at
 * a time (the worker before it resumes the connection, the HTTP thread after). */

enum route {
    ROUTE_NONE, ROUTE_CHAT, ROUTE_COMPLETION, ROUTE_TOKENIZE, ROUTE_DETOKENIZE, ROUTE_MODELS,
    ROUTE_HEALTH, ROUTE_READY, ROUTE_METRICS, ROUTE_PAGE, ROUTE_BAD_METHOD, ROUTE_PREFLIGHT,
    ROUTE_VERSION, ROUTE_PING, ROUTE_INVOCATIONS, ROUTE_MODEL, ROUTE_TOKENIZER_INFO,
    ROUTE_RESPONSES, ROUTE_RESPONSE_GET, ROUTE_RESPONSE_DELETE /* server/responses.h */
};

#define HTTP_SERVER_VERSION "0.1.0" /* GET /version */

enum phase { PHASE_BODY, PHASE_PREP, PHASE_RUN, PHASE_SENT };

#define HTTP_INLINE_PARSE_BYTES 65536 /* bodies above this are parsed by a worker */

struct conn {
    _Atomic int refs;
    struct http_server *srv;    /* borrowed */
    struct MHD_Connection *mhd; /* borrowed while !closed */
    enum route route;
    enum phase phase;
    struct strbuf body;         /* owned */
    int64_t body_held;          /* bytes of body counted in srv->body_bytes */
    bool too_big;               /* the body passed --max-body-bytes: dropped, 413 at its end */
    bool over_budget;           /* all bodies together passed the server's cap: dropped, 503 */
    struct session sess;        /* the request (sess.q) and, for completions, its choices */
    /* written by the worker, read after resume */
    int prep_rc;
    struct vlm_err err;
    char *result;               /* owned JSON for tokenize / detokenize */
    char *req_id;               /* owned; the client's X-Request-Id, echoed */
    char *url_tail;             /* owned; /v1/models/{id}, /v1/responses/{id}: the id */
    struct resp_req *resp;      /* owned; POST /v1/responses: its shapes around the session */
    bool ch_ready;              /* sess.ch[] complete (guarded by mu) */
    bool prep_done;             /* the worker is finished with the fields above (mu) */
    /* suspend / resume */
    pthread_mutex_t mu;
    bool suspended, wake, closed;
    /* response */
    struct strbuf out;          /* SSE bytes not yet handed to MHD */
    size_t out_off;
    bool inflight;
    bool parse_later;           /* a big body: the worker parses it */
    bool gone;                  /* the client left (seen by client_gone) */
    bool close;                 /* answered before the body was read: the connection closes */
    struct conn *prev, *next;   /* the server's live list (inflight ones) */
};

struct http_server {
    struct http_deps d;
    struct sess_env env;        /* what every session borrows (from d) */
    struct oai_limits lim;
    struct MHD_Daemon *mhd;
    uint16_t port;
    atomic_bool draining;
    atomic_bool aborting;       /* the drain deadline passed: everything ends now */
    _Atomic int64_t body_bytes; /* request body bytes buffered by all connections */
    _Atomic int32_t inflight;
    _Atomic uint64_t next_id;
    pthread_mutex_t live_mu;
    struct conn *live;          /* conns with work under way */
    char *models_json;          /* owned, GET /v1/models body */
    struct resp_store *responses; /* owned; finished Responses API objects */
    char csp[512];              /* the page's Content-Security-Policy */
};

/* The body buffer and its share of the server-wide count. */
static void body_free(struct conn *c)
{
    sb_free(&c->body);
    if (c->body_held) atomic_fetch_sub(&c->srv->body_bytes, c->body_held);
    c->body_held = 0;
}

/* Counts `more` body bytes against --max-buffered-body-bytes; false (nothing counted) when
 * they would pass it. */
static bool body_hold(struct conn *c, int64_t more)
{
    struct http_server *s = c->srv;
    int64_t cap = s->d.http->max_buffered_body_bytes;
    int64_t before = atomic_fetch_add(&s->body_bytes, more);
    if (before + more > cap) {
        atomic_fetch_sub(&s->body_bytes, more);
        return false;
    }
    c->body_held += more;
    return true;
}

/* Appends to the body, growing its buffer (counted whole) within the server-wide cap;
 * false when the cap would be passed. The caller has checked --max-body-bytes. */
static bool body_append(struct conn *c, const char *d, size_t n)
{
    struct strbuf *b = &c->body;
    size_t need = b->n + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < need) cap *= 2;
        cap = VLM_MAX(need, VLM_MIN(cap, (size_t)c->srv->d.http->max_body_bytes + 1));
        if (!body_hold(c, (int64_t)(cap - b->cap))) return false;
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
    memcpy(b->s + b->n, d, n);
    b->n += n;
    b->s[b->n] = 0;
    return true;
}

static void conn_retain(struct conn *c)
{
    atomic_fetch_add(&c->refs, 1);
}

static void conn_release(struct conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    sess_destroy(&c->sess);
    free(c->req_id);
    free(c->url_tail);
    resp_req_free(c->resp);
    body_free(c);
    sb_free(&c->out);
    free(c->result);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ==== Suspend / resume ====
 * The handshake that keeps the HTTP thread from blocking: when a reader finds nothing to
 * do it suspends the connection, unless a wake-up arrived since it last looked; a notifier
 * (engine thread, worker) resumes a suspended connection or leaves a wake-up. */

static void conn_wake(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->closed && c->suspended) {
        c->suspended = false;
        MHD_resume_connection(c->mhd);
    } else {
        c->wake = true;
    }
    pthread_mutex_unlock(&c->mu);
}

/* HTTP thread. Returns true if the connection was suspended, false if a wake-up was
 * pending (the caller looks again). */
static bool conn_suspend(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    bool woken = c->wake;
    c->wake = false;
    if (!woken) {
        c->suspended = true;
        MHD_suspend_connection(c->mhd);
    }
    pthread_mutex_unlock(&c->mu);
    return !woken;
}

static void clear_wake(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->wake = false;
    pthread_mutex_unlock(&c->mu);
}

/* engine thread, once per step per touched request */
static void on_notify(struct request *r, void *user)
{
    (void)r;
    conn_wake(user);
}

/* last req_release: the request's reference on its conn goes */
static void on_req_cleanup(struct request *r, void *user)
{
    (void)r;
    conn_release(user);
}

/* ==== CORS and the chat page ====
 * CORS follows --allowed-origins/methods/headers (vLLM's names; "*" in a list allows any).
 * A request whose Origin is allowed gets Access-Control-Allow-Origin: that origin (also under
 * a wildcard: as valid as "*" since credentials are never allowed, and what clients written
 * against the first version of this server see). A preflight (OPTIONS) also gets the allowed
 * methods, the allowed headers (the requested ones that are allowed; a wildcard allows every
 * requested one) and Access-Control-Max-Age. An origin that is not allowed gets no
 * Access-Control-* header at all, so the browser refuses to hand the answer to the page.
 * Every response carries Vary: Origin, since all of them may depend on it. The preflight
 * needs no API key; the real request does, and its 401 still carries the CORS headers so
 * the page can read the error. */

#define HTTP_CORS_MAX_AGE "600"

static bool list_star(const struct config_list *l)
{
    for (int32_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], "*")) return true;
    return false;
}

static bool list_has(const struct config_list *l, const char *v, size_t n)
{
    for (int32_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], "*") || (strlen(l->v[i]) == n && !strncasecmp(l->v[i], v, n)))
            return true;
    return false;
}

/* Appends "item" to out (", "-separated) if it fits; items that would not fit are dropped. */
static void append_item(char *out, size_t cap, const char *item, size_t n)
{
    size_t len = strlen(out);
    size_t need = (len ? 2 : 0) + n;
    if (len + need + 1 > cap) return;
    if (len) {
        memcpy(out + len, ", ", 2);
        len += 2;
    }
    memcpy(out + len, item, n);
    out[len + n] = 0;
}

/* Access-Control-Allow-Headers: the requested headers that are allowed, in request order (the
 * CORS-safelisted names always are, as browsers may still list Content-Type); without a
 * request list, the configured list (a wildcard: the headers this API uses). */
static void allow_headers(const struct config_list *allowed, const char *req, char *out,
                          size_t cap)
{
    static char *safe_names[] = {"Accept", "Accept-Language", "Content-Language", "Content-Type"};
    static const struct config_list safe = {.v = safe_names, .n = (int32_t)ARRAY_LEN(safe_names)};
    out[0] = 0;
    if (!req) {
        for (int32_t i = 0; i < allowed->n; i++) {
            const char *v = strcmp(allowed->v[i], "*") ? allowed->v[i] : "Authorization, Content-Type";
            append_item(out, cap, v, strlen(v));
        }
        return;
    }
    for (const char *p = req; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *b = e;
        while (b > p && (b[-1] == ' ' || b[-1] == '\t')) b--;
        size_t n = (size_t)(b - p);
        if (n && (list_has(allowed, p, n) || list_has(&safe, p, n))) append_item(out, cap, p, n);
        p = e;
    }
}

static void add_cors(struct conn *c, struct MHD_Response *resp)
{
    const struct config_http *h = c->srv->d.http;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    const char *origin = MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, "Origin");
    if (!origin || !list_has(&h->allowed_origins, origin, strlen(origin))) return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    if (c->route != ROUTE_PREFLIGHT) return;
    char buf[1024] = "";
    if (list_star(&h->allowed_methods)) {
        snprintf(buf, sizeof buf, "GET, POST, OPTIONS");
    } else {
        for (int32_t i = 0; i < h->allowed_methods.n; i++)
            append_item(buf, sizeof buf, h->allowed_methods.v[i], strlen(h->allowed_methods.v[i]));
    }
    if (buf[0]) MHD_add_response_header(resp, "Access-Control-Allow-Methods", buf);
    allow_headers(&h->allowed_headers,
                  MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND,
                                              "Access-Control-Request-Headers"),
                  buf, sizeof buf);
    if (buf[0]) MHD_add_response_header(resp, "Access-Control-Allow-Headers", buf);
    MHD_add_response_header(resp, "Access-Control-Max-Age", HTTP_CORS_MAX_AGE);
}

/* The page's Content-Security-Policy: nothing may load but the page itself; its one inline
 * script is allowed by its SHA-256 (computed here, so editing index.html needs no other
 * change), styles inline, images from data:/blob: URLs (attachments), fetch to this origin. */
static void page_csp(char *out, size_t cap)
{
    const char *page = (const char *)web_index_html;
    const char *a = strstr(page, "<script>"), *b = a ? strstr(a, "</script>") : NULL;
    char src[80] = "'none'";
    struct AVSHA *sha = av_sha_alloc();
    if (a && b && sha && !av_sha_init(sha, 256)) {
        a += strlen("<script>");
        uint8_t digest[32];
        char b64[AV_BASE64_SIZE(32)];
        av_sha_update(sha, (const uint8_t *)a, (size_t)(b - a));
        av_sha_final(sha, digest);
        if (av_base64_encode(b64, (int)sizeof b64, digest, (int)sizeof digest))
            snprintf(src, sizeof src, "'sha256-%s'", b64);
    }
    av_free(sha);
    snprintf(out, cap,
             "default-src 'none'; script-src %s; style-src 'unsafe-inline'; "
             "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
             "frame-ancestors 'none'",
             src);
}

/* Every response leaves through here: CORS headers, queued, counted by status, and the
 * connection marked sent. Takes resp's reference. */
static enum MHD_Result queue(struct conn *c, int status, struct MHD_Response *resp)
{
    add_cors(c, resp);
    if (c->close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (c->req_id) MHD_add_response_header(resp, "X-Request-Id", c->req_id);
    enum MHD_Result r = MHD_queue_response(c->mhd, (unsigned)status, resp);
    MHD_destroy_response(resp);
    metrics_status(c->srv->d.metrics, status);
    c->phase = PHASE_SENT;
    return r;
}

/* GET / : the embedded page (static bytes, never freed). */
static enum MHD_Result serve_page(struct conn *c)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        (size_t)web_index_html_len, (void *)web_index_html, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/html; charset=utf-8");
    MHD_add_response_header(resp, "Content-Security-Policy", c->srv->csp);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return queue(c, MHD_HTTP_OK, resp);
}

/* ==== Responses ==== */

static enum MHD_Result send_buf(struct conn *c, int status, const char *ctype, char *body,
                                size_t n, bool retry_after)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, body, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    if (ctype) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (retry_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return queue(c, status, resp);
}

static enum MHD_Result send_json(struct conn *c, int status, char *json)
{
    return send_buf(c, status, "application/json", json, strlen(json), false);
}

static enum MHD_Result send_error(struct conn *c, const struct vlm_err *e)
{
    struct vlm_err e2 = *e;
    if (e2.http_status < 400) e2.http_status = 500;
    if (!e2.msg[0]) snprintf(e2.msg, sizeof e2.msg, "%s", vlm_strerror(e2.code));
    char *s = oai_error_json(&e2);
    log_debug("http: %d %s", e2.http_status, e2.msg);
    return send_buf(c, e2.http_status, "application/json", s, strlen(s),
                    e2.http_status == 429 || e2.http_status == 503);
}

static enum MHD_Result send_error_msg(struct conn *c, int status, int code, const char *param,
                                      const char *msg)
{
    struct vlm_err e;
    vlm_err_param(&e, code, status, param ? param : "", "%s", msg);
    return send_error(c, &e);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct conn *c = cls;
    for (;;) {
        if (c->out.n > c->out_off) {
            size_t n = VLM_MIN(max, c->out.n - c->out_off);
            memcpy(buf, c->out.s + c->out_off, n);
            c->out_off += n;
            if (c->out_off == c->out.n) c->out.n = c->out_off = 0;
            return (ssize_t)n;
        }
        if (c->sess.eof) return MHD_CONTENT_READER_END_OF_STREAM;
        clear_wake(c);
        if (c->resp) resp_pump_stream(c->resp, c->srv->responses, &c->sess, &c->out);
        else sess_pump_stream(&c->sess, &c->out);
        if (c->out.n > c->out_off || c->sess.eof) continue;
        if (conn_suspend(c)) return 0;
    }
}

static void stream_free(void *cls)
{
    conn_release(cls);
}

static enum MHD_Result start_stream(struct conn *c)
{
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, c, stream_free);
    if (!resp) return MHD_NO;
    conn_retain(c);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    return queue(c, MHD_HTTP_OK, resp);
}

/* A suspended connection is not watched by MHD, and a non-streaming one writes nothing
 * until the end, so a client that left is only noticed here: the socket reads EOF (HTTP
 * clients do not half-close while waiting for an answer). One recv(MSG_PEEK) per pump. */
static bool client_gone(struct conn *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Non-streaming: pump; answer once every choice is done, else suspend. */
static enum MHD_Result continue_plain(struct conn *c)
{
    for (;;) {
        clear_wake(c);
        if (sess_pump(&c->sess)) break;
        if (!c->gone && client_gone(c)) {
            c->gone = true;
            atomic_fetch_add(&c->srv->d.metrics->client_disconnects, 1);
            sess_abort_running(&c->sess);
            log_info("http: client went away; %d request(s) aborted", (int)c->sess.n_ch);
        }
        if (conn_suspend(c)) return MHD_YES;
    }
    sess_record_finish(&c->sess);
    if (sess_failed(&c->sess))
        return send_error_msg(c, 500, VLM_EDEVICE, NULL, "the engine failed while generating");
    /* cut short by the end of the drain: no partial answer, the client may retry elsewhere */
    if (sess_aborted(&c->sess) && atomic_load(&c->srv->aborting))
        return send_error_msg(c, 503, VLM_EINVAL, NULL,
                              "the server is shutting down; the request was aborted");
    if (c->resp) return send_json(c, 200, resp_session_json(c->resp, c->srv->responses, &c->sess));
    return send_json(c, 200, sess_response_json(&c->sess));
}

/* ==== Preparation (worker threads) ==== */

static void conn_retain_hook(void *user)
{
    conn_retain(user);
}

/* Prepares and submits the session's choices, then publishes them to http_abort_all. */
static int start_session(struct conn *c)
{
    struct http_server *s = c->srv;
    const struct sess_hooks hooks = {.notify = on_notify, .cleanup = on_req_cleanup,
                                     .retain = conn_retain_hook, .user = c};
    int rc = sess_prepare(&c->sess, &hooks, &c->err);
    pthread_mutex_lock(&c->mu);
    c->ch_ready = true;
    pthread_mutex_unlock(&c->mu);
    /* http_abort_all sets aborting before it looks at ch_ready: either it saw these
     * requests, or they are aborted here (a second abort is a no-op) */
    if (!rc && atomic_load(&s->aborting)) sess_abort_submitted(&c->sess);
    return rc;
}

static char *tokenize_json(struct conn *c, const struct prep_prompt *pp)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)pp->ids.n);
    cJSON_AddNumberToObject(o, "max_model_len", c->srv->d.max_model_len);
    cJSON *t = cJSON_AddArrayToObject(o, "tokens");
    for (size_t i = 0; i < pp->ids.n; i++) cJSON_AddItemToArray(t, cJSON_CreateNumber(pp->ids.v[i]));
    cJSON_AddNullToObject(o, "token_strs");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static enum oai_kind route_kind(enum route r)
{
    return r == ROUTE_CHAT || r == ROUTE_RESPONSES ? OAI_KIND_CHAT
           : r == ROUTE_COMPLETION ? OAI_KIND_COMPLETION
           : r == ROUTE_TOKENIZE   ? OAI_KIND_TOKENIZE
                                   : OAI_KIND_DETOKENIZE;
}

/* The body as the route's request (a Responses API request: a chat request and c->resp). */
static int parse_body(struct conn *c, struct vlm_err *err)
{
    struct http_server *s = c->srv;
    const char *b = c->body.s ? c->body.s : "";
    if (c->route == ROUTE_RESPONSES)
        return resp_parse(b, c->body.n, &s->lim, s->responses, &c->sess.q, &c->resp, err);
    return oai_parse(route_kind(c->route), b, c->body.n, &s->lim, &c->sess.q, err);
}

static void prep_job(void *arg)
{
    struct conn *c = arg;
    struct http_server *s = c->srv;
    int rc = 0;
    if (atomic_load(&s->aborting)) { /* answered 503 on resume */
        rc = VLM_EINVAL;
        goto done;
    }
    if (c->parse_later) {
        rc = parse_body(c, &c->err);
        body_free(c);
        if (rc) goto done;
    }
    if (c->route == ROUTE_DETOKENIZE) {
        struct strbuf text = {0}, clean = {0};
        tok_decode(s->d.tok, c->sess.q.prompt_ids, (size_t)c->sess.q.n_prompt_ids, false, &text);
        utf8_sanitize(&clean, text.s ? text.s : "", text.n);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "prompt", clean.s);
        c->result = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        sb_free(&text);
        sb_free(&clean);
    } else if (c->route == ROUTE_TOKENIZE) {
        struct prep_prompt pp;
        rc = prep_prompt_build(s->d.prep_ctx, &c->sess.q, true, &pp, &c->err);
        if (!rc) c->result = tokenize_json(c, &pp);
        prep_prompt_destroy(&pp);
    } else {
        rc = start_session(c);
    }
done:
    c->prep_rc = rc;
    /* publish: the HTTP thread acts on a resume in the prep phase only once prep_done is set
     * (a step's notify may resume the connection before this point) */
    pthread_mutex_lock(&c->mu);
    c->prep_done = true;
    pthread_mutex_unlock(&c->mu);
    conn_wake(c);
    conn_release(c);
}

/* ==== Routing and the access handler ==== */

static enum route find_route(const char *method, const char *url)
{
    if (!strcmp(method, "OPTIONS")) return ROUTE_PREFLIGHT;
    static const struct { const char *path; const char *method; enum route r; } table[] = {
        {"/v1/chat/completions", "POST", ROUTE_CHAT},
        {"/v1/completions", "POST", ROUTE_COMPLETION},
        {"/tokenize", "POST", ROUTE_TOKENIZE},
        {"/detokenize", "POST", ROUTE_DETOKENIZE},
        {"/v1/models", "GET", ROUTE_MODELS},
        {"/health", "GET", ROUTE_HEALTH},
        {"/ready", "GET", ROUTE_READY},
        {"/metrics", "GET", ROUTE_METRICS},
        {"/", "GET", ROUTE_PAGE},
        {"/version", "GET", ROUTE_VERSION},
        {"/ping", "GET", ROUTE_PING},
        {"/invocations", "POST", ROUTE_INVOCATIONS},
        {"/tokenizer_info", "GET", ROUTE_TOKENIZER_INFO},
        {"/v1/responses", "POST", ROUTE_RESPONSES},
    };
    if (!strcmp(method, "POST") && !strcmp(url, "/ping")) return ROUTE_PING; /* vLLM: both */
    if (!strncmp(url, "/v1/responses/", 14) && url[14])
        return !strcmp(method, "GET") || !strcmp(method, "HEAD") ? ROUTE_RESPONSE_GET
               : !strcmp(method, "DELETE")                       ? ROUTE_RESPONSE_DELETE
                                                                 : ROUTE_BAD_METHOD;
    if (!strncmp(url, "/v1/models/", 11) && url[11])
        return strcmp(method, "GET") && strcmp(method, "HEAD") ? ROUTE_BAD_METHOD : ROUTE_MODEL;
    for (size_t i = 0; i < ARRAY_LEN(table); i++) {
        size_t n = strlen(table[i].path);
        if (strncmp(url, table[i].path, n) || (url[n] && !(url[n] == '/' && !url[n + 1])))
            continue;
        if (!strcmp(method, table[i].method)) return table[i].r;
        if (!strcmp(method, "HEAD") && !strcmp(table[i].method, "GET")) return table[i].r;
        return ROUTE_BAD_METHOD;
    }
    return ROUTE_NONE;
}

/* Routes open without the API key: the probes (/health, /ready, /ping), the CORS preflight, the static page (it
 * holds no data; what it fetches needs the key) and /metrics unless --no-metrics-open.
 * Everything else, unknown routes and wrong methods included, needs the key (vLLM answers
 * 401 before 404 or 405 too). */
static bool needs_key(const struct conn *c)
{
    switch (c->route) {
    case ROUTE_HEALTH: case ROUTE_READY: case ROUTE_PING: case ROUTE_PREFLIGHT: case ROUTE_PAGE:
        return false;
    case ROUTE_METRICS:
        return !c->srv->d.http->metrics_open;
    default:
        return true;
    }
}

static bool authorized(struct conn *c)
{
    const char *key = c->srv->d.http->api_key;
    if (!key || !key[0] || !needs_key(c)) return true;
    const char *h = MHD_lookup_connection_value(c->mhd, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t a = strlen(h), b = strlen(key);
    unsigned diff = (unsigned)(a ^ b);
    for (size_t i = 0; i < a; i++) diff |= (unsigned)(h[i] ^ key[i % (b ? b : 1)]);
    return diff == 0;
}

/* GET /tokenizer_info (vLLM's, behind its --enable-tokenizer-info-endpoint): the special
 * tokens as text and the context length; no chat_template (the template is built in). */
static char *tokenizer_info_json(const struct http_deps *d)
{
    cJSON *o = cJSON_CreateObject();
    size_t n = 0;
    const char *b = d->n_eos > 0 ? tok_bytes(d->tok, d->eos_ids[0], &n) : NULL;
    struct strbuf eos = {0};
    if (b) utf8_sanitize(&eos, b, n);
    if (eos.s) cJSON_AddStringToObject(o, "eos_token", eos.s);
    else cJSON_AddNullToObject(o, "eos_token");
    sb_free(&eos);
    cJSON_AddNullToObject(o, "bos_token");
    cJSON_AddNumberToObject(o, "model_max_length", d->max_model_len);
    cJSON_AddStringToObject(o, "tokenizer_class", "Qwen2TokenizerFast");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static enum MHD_Result serve_get(struct conn *c)
{
    struct http_server *s = c->srv;
    switch (c->route) {
    case ROUTE_HEALTH:
        return send_buf(c, 200, "application/json", xstrdup("{}"), 2, false);
    case ROUTE_READY:
        if (atomic_load(&s->draining))
            return send_error_msg(c, 503, VLM_EINVAL, NULL, "the server is shutting down");
        return send_json(c, 200, xstrdup("{\"status\":\"ready\"}"));
    case ROUTE_MODELS:
        return send_json(c, 200, xstrdup(s->models_json));
    case ROUTE_PING: /* vLLM's SageMaker probe: /health's answer */
        return send_buf(c, 200, "application/json", xstrdup("{}"), 2, false);
    case ROUTE_VERSION:
        return send_json(c, 200, xstrdup("{\"version\":\"" HTTP_SERVER_VERSION "\"}"));
    case ROUTE_TOKENIZER_INFO: /* what a remote-tokenizer client needs (lm-eval-harness) */
        return send_json(c, 200, tokenizer_info_json(&s->d));
    case ROUTE_MODEL: { /* GET /v1/models/{id}: the one entry of /v1/models, or 404 */
        const char *id = c->url_tail;
        if (strcmp(id, s->d.model_name)) {
            char msg[160];
            snprintf(msg, sizeof msg, "The model `%.100s` does not exist.", id);
            return send_error_msg(c, 404, VLM_ENOTFOUND, "model", msg);
        }
        cJSON *all = cJSON_Parse(s->models_json);
        cJSON *m = cJSON_DetachItemFromArray(cJSON_GetObjectItem(all, "data"), 0);
        char *js = cJSON_PrintUnformatted(m);
        cJSON_Delete(m);
        cJSON_Delete(all);
        return send_json(c, 200, js);
    }
    case ROUTE_RESPONSE_GET: case ROUTE_RESPONSE_DELETE: { /* server/responses.h */
        char *js = c->route == ROUTE_RESPONSE_GET ? resp_store_get(s->responses, c->url_tail)
                                                  : resp_deleted_json(s->responses, c->url_tail);
        if (js) return send_json(c, 200, js);
        char msg[160];
        snprintf(msg, sizeof msg, "Response with id '%.100s' not found.", c->url_tail);
        return send_error_msg(c, 404, VLM_ENOTFOUND, "response_id", msg);
    }
    case ROUTE_METRICS: {
        struct sched_stats st;
        loop_get_stats(s->d.loop, &st);
        struct strbuf b = {0};
        struct media_budget *mb = s->d.prep_ctx ? s->d.prep_ctx->budget : NULL;
        metrics_render(s->d.metrics, &st, s->d.model_name, mb ? media_budget_used(mb) : -1, &b);
        return send_buf(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.s, b.n, false);
    }
    default:
        VLM_ASSERT(0);
    }
}

/* POST /invocations (vLLM's SageMaker route): a body with "messages" is a chat request,
 * anything else a completions request (whose parser names what is missing). */
static enum route invocation_route(const struct strbuf *body)
{
    if (body->n > HTTP_INLINE_PARSE_BYTES) { /* not parsed on this thread: a "messages" key */
        const char *e = body->s + body->n;
        for (const char *p = body->s; (p = memmem(p, (size_t)(e - p), "\"messages\"", 10)); p++) {
            const char *q = p + 10;
            while (q < e && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) q++;
            if (q < e && *q == ':') return ROUTE_CHAT;
        }
        return ROUTE_COMPLETION;
    }
    cJSON *root = body->n ? cJSON_ParseWithLength(body->s, body->n) : NULL;
    bool chat = root && cJSON_GetObjectItemCaseSensitive(root, "messages");
    cJSON_Delete(root);
    return chat ? ROUTE_CHAT : ROUTE_COMPLETION;
}

/* The body is complete: answer at once, or start preparing. */
static enum MHD_Result on_body_done(struct conn *c)
{
    struct http_server *s = c->srv;
    switch (c->route) {
    case ROUTE_NONE:
        return send_error_msg(c, 404, VLM_ENOTFOUND, NULL, "Not Found");
    case ROUTE_BAD_METHOD:
        return send_error_msg(c, 405, VLM_EINVAL, NULL, "Method Not Allowed");
    case ROUTE_PREFLIGHT:
        return send_buf(c, 204, NULL, NULL, 0, false);
    case ROUTE_PAGE:
        return serve_page(c);
    case ROUTE_HEALTH: case ROUTE_READY: case ROUTE_MODELS: case ROUTE_METRICS:
    case ROUTE_PING: case ROUTE_VERSION: case ROUTE_MODEL: case ROUTE_TOKENIZER_INFO:
    case ROUTE_RESPONSE_GET: case ROUTE_RESPONSE_DELETE:
        return serve_get(c);
    default:
        break;
    }
    if (atomic_load(&s->draining))
        return send_error_msg(c, 503, VLM_EINVAL, NULL, "the server is shutting down");
    if (c->over_budget)
        return send_error_msg(c, 503, VLM_ETOOBIG, NULL,
                              "the server holds too many request bodies; retry later");
    if (c->too_big) {
        char msg[120];
        snprintf(msg, sizeof msg, "request body larger than the limit of %lld bytes",
                 (long long)s->d.http->max_body_bytes);
        return send_error_msg(c, 413, VLM_ETOOBIG, NULL, msg);
    }
    if (c->route == ROUTE_INVOCATIONS) /* SageMaker: chat when there are messages */
        c->route = invocation_route(&c->body);
    /* small bodies are parsed here (microseconds; errors answered without a thread hop);
     * big ones (inline images) by the worker, so the event loop never parses megabytes */
    c->parse_later = c->body.n > HTTP_INLINE_PARSE_BYTES;
    if (!c->parse_later) {
        struct vlm_err err = {0};
        if (parse_body(c, &err)) return send_error(c, &err);
        body_free(c);
    }
    if (c->route == ROUTE_CHAT || c->route == ROUTE_COMPLETION || c->route == ROUTE_RESPONSES)
        oai_meta_init(&c->sess.meta, route_kind(c->route),
                      s->d.model_name, atomic_fetch_add(&s->next_id, 1));
    c->sess.meta.model = s->d.model_name;
    /* in flight from here until the completion callback */
    c->inflight = true;
    atomic_fetch_add(&s->inflight, 1);
    atomic_fetch_add(&s->d.metrics->inflight, 1);
    pthread_mutex_lock(&s->live_mu);
    c->next = s->live;
    if (s->live) s->live->prev = c;
    s->live = c;
    pthread_mutex_unlock(&s->live_mu);
    c->phase = PHASE_PREP;
    pthread_mutex_lock(&c->mu);
    c->suspended = true;
    MHD_suspend_connection(c->mhd);
    pthread_mutex_unlock(&c->mu);
    conn_retain(c); /* the job's */
    workers_submit(s->d.workers, prep_job, c);
    return MHD_YES;
}

/* ==== The header stage ====
 * Everything that can be decided from the request line and headers is answered before a
 * body byte is read (and so before libmicrohttpd sends "100 Continue"): framing that two
 * parsers could read differently (400), a missing or wrong API key (401), a declared body
 * over --max-body-bytes (413), the drain (503), and a declared body that would pass the
 * server-wide --max-buffered-body-bytes (503). Such an answer closes the connection, since
 * the body that may follow is never read. A body of known length gets its whole buffer here,
 * counted against the server-wide cap; a chunked one is counted as it grows. */

struct header_scan {
    int n_length, n_encoding, n_host;
    const char *length;
};

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    struct header_scan *h = cls;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
        h->n_length++;
        h->length = value;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        h->n_encoding++;
    } else if (!strcasecmp(key, MHD_HTTP_HEADER_HOST)) {
        h->n_host++;
    }
    return MHD_YES;
}

static enum MHD_Result on_headers(struct conn *c, const char *version)
{
    struct http_server *s = c->srv;
    struct header_scan h = {0};
    MHD_get_connection_values(c->mhd, MHD_HEADER_KIND, scan_header, &h);
    uint64_t length = 0;
    bool bad_length = false;
    if (h.length) {
        const char *p = h.length;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) bad_length = true;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (length > (UINT64_MAX - 9) / 10) bad_length = true;
            else length = length * 10 + (uint64_t)(*p - '0');
        }
        while (*p == ' ' || *p == '\t') p++;
        if (*p) bad_length = true;
    }
    const char *framing = NULL;
    if (h.n_length > 1) framing = "more than one Content-Length header";
    else if (h.n_length && h.n_encoding) framing = "both Content-Length and Transfer-Encoding";
    else if (bad_length) framing = "a Content-Length that is not a number";
    else if (h.n_encoding > 1) framing = "more than one Transfer-Encoding header";
    else if (!strcmp(version, MHD_HTTP_VERSION_1_1) && h.n_host != 1)
        framing = h.n_host ? "more than one Host header" : "an HTTP/1.1 request without Host";
    bool body_follows = h.n_encoding || length > 0;
    c->close = body_follows || framing;
    if (framing) {
        char msg[128];
        snprintf(msg, sizeof msg, "malformed HTTP request: %s", framing);
        return send_error_msg(c, 400, VLM_EINVAL, NULL, msg);
    }
    if (!authorized(c))
        return send_error_msg(c, 401, VLM_EINVAL, NULL, "Incorrect or missing API key.");
    if (c->route == ROUTE_NONE || c->route == ROUTE_BAD_METHOD) return on_body_done(c);
    if (length > (uint64_t)s->d.http->max_body_bytes) {
        char msg[120];
        snprintf(msg, sizeof msg, "request body larger than the limit of %lld bytes",
                 (long long)s->d.http->max_body_bytes);
        return send_error_msg(c, 413, VLM_ETOOBIG, NULL, msg);
    }
    bool work = c->route == ROUTE_CHAT || c->route == ROUTE_COMPLETION ||
                c->route == ROUTE_TOKENIZE || c->route == ROUTE_DETOKENIZE ||
                c->route == ROUTE_RESPONSES;
    if (work && atomic_load(&s->draining))
        return send_error_msg(c, 503, VLM_EINVAL, NULL, "the server is shutting down");
    if (length > 0 && work) {
        if (!body_hold(c, (int64_t)length + 1))
            return send_error_msg(c, 503, VLM_ETOOBIG, NULL,
                                  "the server holds too many request bodies; retry later");
        c->body.s = trymalloc((size_t)length + 1);
        if (!c->body.s) {
            body_free(c);
            return send_error_msg(c, 503, VLM_ENOMEM, NULL, "out of memory for the body");
        }
        c->body.s[0] = 0;
        c->body.cap = (size_t)length + 1;
    }
    c->close = false; /* from here the body is read: keep-alive as the client asks */
    return MHD_YES;
}

/* Called again after a resume. */
static enum MHD_Result on_resumed(struct conn *c)
{
    if (c->phase == PHASE_PREP) {
        pthread_mutex_lock(&c->mu);
        bool ready = c->prep_done;
        if (!ready) { /* woken by a step before the worker finished: wait for the worker */
            c->suspended = true;
            MHD_suspend_connection(c->mhd);
        }
        pthread_mutex_unlock(&c->mu);
        if (!ready) return MHD_YES;
        if (c->prep_rc && atomic_load(&c->srv->aborting))
            return send_error_msg(c, 503, VLM_EINVAL, NULL, "the server is shutting down");
        if (c->prep_rc && c->resp) resp_map_err(c->resp, &c->err);
        if (c->prep_rc) return send_error(c, &c->err);
        if (c->result) {
            char *r = c->result;
            c->result = NULL;
            return send_json(c, 200, r);
        }
        c->phase = PHASE_RUN;
        if (c->sess.q.stream) return start_stream(c);
    }
    return continue_plain(c);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct conn *c = *con_cls;
    if (!c) {
        c = xcalloc(1, sizeof *c);
        atomic_init(&c->refs, 1); /* MHD's, dropped in on_completed */
        c->srv = s;
        c->mhd = mc;
        pthread_mutex_init(&c->mu, NULL);
        c->route = find_route(method, url);
        if (c->route == ROUTE_MODEL) c->url_tail = xstrdup(url + strlen("/v1/models/"));
        if (c->route == ROUTE_RESPONSE_GET || c->route == ROUTE_RESPONSE_DELETE)
            c->url_tail = xstrdup(url + strlen("/v1/responses/"));
        const char *rid = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "X-Request-Id");
        if (rid && rid[0] && strlen(rid) <= 256 && !strpbrk(rid, "\r\n")) c->req_id = xstrdup(rid);
        sess_init(&c->sess, &s->env);
        c->sess.t_start_ns = vlm_now_ns();
        *con_cls = c;
        return on_headers(c, version);
    }
    if (*upload_size) {
        if (!c->too_big && !c->over_budget) {
            size_t n = *upload_size;
            if (c->body.n + n > (size_t)s->d.http->max_body_bytes) {
                c->too_big = true;
                body_free(c);
            } else if (!body_append(c, upload_data, n)) {
                c->over_budget = true;
                body_free(c);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->phase == PHASE_BODY) return on_body_done(c);
    if (c->phase == PHASE_SENT) return MHD_YES;
    return on_resumed(c);
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)mc;
    struct http_server *s = cls;
    struct conn *c = *con_cls;
    if (!c) return;
    *con_cls = NULL;
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    pthread_mutex_unlock(&c->mu);
    bool gone = sess_cancel(&c->sess); /* choices still running: the client went away */
    if (gone && !c->gone) {
        atomic_fetch_add(&s->d.metrics->client_disconnects, 1);
        log_info("http: client went away (%s); %d request(s) aborted",
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "completed" : "error", (int)c->sess.n_ch);
    }
    if (c->inflight) {
        pthread_mutex_lock(&s->live_mu);
        if (c->prev) c->prev->next = c->next;
        else s->live = c->next;
        if (c->next) c->next->prev = c->prev;
        pthread_mutex_unlock(&s->live_mu);
        atomic_fetch_sub(&s->inflight, 1);
        atomic_fetch_sub(&s->d.metrics->inflight, 1);
    }
    sess_release_requests(&c->sess); /* may drop the last reference on c: ours goes last */
    conn_release(c);
}

/* ==== Daemon ==== */

static char *models_json(const struct http_deps *d)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", d->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)vlm_wall_s());
    cJSON_AddStringToObject(m, "owned_by", "valley");
    cJSON_AddStringToObject(m, "root", d->model_name);
    cJSON_AddNullToObject(m, "parent");
    cJSON_AddNumberToObject(m, "max_model_len", d->max_model_len);
    cJSON_AddItemToArray(data, m);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

int http_start(struct http_server **out, const struct http_deps *d, struct vlm_err *err)
{
    *out = NULL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", (int)d->http->port);
    const char *host = d->http->host && d->http->host[0] ? d->http->host : NULL;
    if (getaddrinfo(host, port, &hints, &ai) || !ai)
        return vlm_err_set(err, VLM_EINVAL, 0, "cannot resolve --host '%s'", host ? host : "");
    struct http_server *s = xcalloc(1, sizeof *s);
    s->d = *d;
    s->lim = (struct oai_limits){.model_name = d->model_name,
                                 .max_n = d->api->max_n,
                                 .max_images = d->media->max_images_per_request,
                                 .min_pixels = d->media->min_pixels,
                                 .max_pixels = d->media->max_pixels,
                                 .vocab_size = d->vocab_size,
                                 .max_model_len = d->max_model_len};
    atomic_init(&s->next_id, 1);
    s->env = (struct sess_env){.tok = d->tok, .vocab_size = d->vocab_size, .eos_ids = d->eos_ids,
                               .n_eos = d->n_eos, .seed = d->seed, .prep_ctx = d->prep_ctx,
                               .loop = d->loop, .metrics = d->metrics, .next_id = &s->next_id};
    pthread_mutex_init(&s->live_mu, NULL);
    s->models_json = models_json(d);
    s->responses = resp_store_new(d->api->responses_store_size, d->api->responses_store_bytes);
    page_csp(s->csp, sizeof s->csp);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL : MHD_USE_POLL;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                              MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)d->http->idle_timeout,
                              MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                              (unsigned)d->http->max_connections_per_client,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)4000,
                              MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                              MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                              MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        free(s->models_json);
        resp_store_free(s->responses);
        free(s);
        return vlm_err_set(err, VLM_EIO, 0, "cannot listen on %s:%d (address in use?)",
                           host ? host : "*", (int)d->http->port);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : (uint16_t)d->http->port;
    *out = s;
    return 0;
}

uint16_t http_port(const struct http_server *s)
{
    return s->port;
}

void http_drain_begin(struct http_server *s)
{
    atomic_store(&s->draining, true);
}

int32_t http_inflight(const struct http_server *s)
{
    return atomic_load(&((struct http_server *)s)->inflight);
}

void http_abort_all(struct http_server *s)
{
    atomic_store(&s->draining, true);
    atomic_store(&s->aborting, true);
    fetch_cancel_all();
    media_budget_cancel(s->d.prep_ctx->budget);
    pthread_mutex_lock(&s->live_mu);
    for (struct conn *c = s->live; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        if (c->ch_ready && !c->closed) sess_abort_submitted(&c->sess);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&s->live_mu);
}

void http_stop(struct http_server *s)
{
    if (!s) return;
    /* libmicrohttpd aborts the process when stopped with a suspended connection: the
     * caller waits for http_inflight() == 0 */
    MHD_stop_daemon(s->mhd);
    pthread_mutex_destroy(&s->live_mu);
    free(s->models_json);
    resp_store_free(s->responses);
    free(s);
}
