/*
 * session.c: an OpenAI completion session: request construction, pumping the choices'
 * streams through the text pipeline, finish reasons, usage, and the response or the SSE
 * chunks. See session.h.
 */
#include "server/session.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/structured.h"
#include "server/utf8.h"

static bool is_chat(const struct session *s)
{
    return s->meta.kind == OAI_KIND_CHAT;
}

void sess_init(struct session *s, const struct sess_env *env)
{
    memset(s, 0, sizeof *s);
    s->env = env;
}

void sess_destroy(struct session *s)
{
    for (int32_t i = 0; i < s->n_ch; i++) {
        struct sess_choice *h = &s->ch[i];
        VLM_ASSERT(!h->r);
        textout_destroy(&h->out);
        sb_free(&h->content);
        sb_free(&h->reasoning);
        cJSON_Delete(h->lp);
        cJSON_Delete(h->plp);
        i32_vec_free(&h->ids);
    }
    free(s->ch);
    for (int32_t i = 0; i < s->n_prompts; i++) i32_vec_free(&s->prompt_ids[i]);
    free(s->prompt_ids);
    oai_request_destroy(&s->q);
    memset(s, 0, sizeof *s);
}

static cJSON *new_lp(const struct session *s)
{
    if (!s->q.logprobs) return NULL;
    return is_chat(s) ? cJSON_CreateArray() : oai_logprobs_completion_new();
}

/* ==== Preparation ==== */

void sess_choice_init(struct session *s, struct sess_choice *h, int32_t prompt_idx,
                      bool thinking, uint64_t tools_seed)
{
    const struct oai_request *q = &s->q;
    bool tools_on = is_chat(s) && q->n_tools > 0 &&
                    (q->tool_choice == OAI_TOOL_CHOICE_AUTO || q->forced_tools);
    h->prompt_idx = prompt_idx;
    textout_init(&h->out, s->env->tok, q->skip_special_tokens, (const char *const *)q->stop,
                 q->n_stop, thinking && is_chat(s), tools_on, tools_seed);
    h->lp = new_lp(s);
}

/* Builds and submits one request per choice: n for each of the n_pp prompts. */
static int make_requests(struct session *s, struct prep_prompt *pps, int32_t n_pp,
                         const struct sess_hooks *hooks, struct vlm_err *err)
{
    const struct sess_env *env = s->env;
    const struct oai_request *q = &s->q;
    int32_t n_ch = n_pp * q->n;
    s->prompt_ids = xcalloc((size_t)n_pp, sizeof *s->prompt_ids);
    s->n_prompts = n_pp;
    s->n_prompt = 0;
    for (int32_t k = 0; k < n_pp; k++) {
        i32_vec_append(&s->prompt_ids[k], pps[k].ids.v, pps[k].ids.n);
        s->n_prompt += (int32_t)pps[k].ids.n;
    }
    struct sess_choice *ch = xcalloc((size_t)n_ch, sizeof *ch);
    struct req_params rp = {0};
    rp.sp = q->sp;
    memcpy(rp.stop_ids, q->stop_ids, sizeof rp.stop_ids);
    rp.n_stop = q->n_stop_ids;
    rp.n_eos = VLM_MIN(env->n_eos, REQ_MAX_EOS);
    memcpy(rp.eos_ids, env->eos_ids, sizeof(int32_t) * (size_t)rp.n_eos);
    rp.ignore_eos = q->ignore_eos;
    rp.prompt_logprobs = q->prompt_logprobs >= 0;
    rp.prompt_top = VLM_MAX(q->prompt_logprobs, q->echo ? q->top_logprobs : 0);
    int rc = 0;
    int32_t n_built = 0;
    for (int32_t i = 0; i < n_ch && !rc; i++) {
        struct prep_prompt *pp = &pps[i / q->n];
        uint64_t id = atomic_fetch_add(env->next_id, 1);
        rp.max_tokens = pp->max_tokens;
        rp.sp.seed = q->has_seed ? q->sp.seed + (uint64_t)(i % q->n)
                                 : vlm_mix64(id ^ (env->seed ? env->seed : vlm_now_ns()));
        struct request *r = req_new(id, pp->ids.v, (int32_t)pp->ids.n, &rp);
        if (!r) {
            rc = vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for the request");
            break;
        }
        for (int32_t k = 0; k < pp->n_items && !rc; k++) {
            struct vision_prep_out *v = &pp->items[k].v;
            struct valley2_prep_out *sg = &pp->items[k].sig;
            size_t bytes = (size_t)v->n_patches * (size_t)v->row_len * sizeof(float);
            size_t sbytes = (size_t)sg->g.n_tiles * 3 * (size_t)sg->tile * (size_t)sg->tile *
                            sizeof(float);
            float *px, *tiles = NULL;
            bool last = i % q->n == q->n - 1; /* the prompt's last choice takes the pixels */
            if (last) {
                px = v->pixels;
                v->pixels = NULL;
                tiles = sg->pixels;
                sg->pixels = NULL;
            } else {
                px = trymalloc(bytes);
                if (px) memcpy(px, v->pixels, bytes);
                if (sg->pixels && (tiles = trymalloc(sbytes))) memcpy(tiles, sg->pixels, sbytes);
            }
            struct mm_item it = {.hash = v->hash, .grid_t = v->grid_t, .grid_h = v->grid_h,
                                 .grid_w = v->grid_w, .n_patches = v->n_patches,
                                 .n_tokens = v->n_tokens};
            if (sg->g.n_tiles > 0) {
                /* Valley2: the SigLIP rows first; the key covers both sides */
                const struct valley2_prep_geom *g = &sg->g;
                it.sig = (struct siglip_input){.tiles = tiles, .n_tiles = g->n_tiles,
                                               .grid_w = g->grid_w, .grid_h = g->grid_h,
                                               .keep_y = g->keep_y, .keep_x = g->keep_x,
                                               .keep_h = g->keep_h, .keep_w = g->keep_w,
                                               .pool_h = g->pool_h, .pool_w = g->pool_w,
                                               .n_tokens = g->n_tokens};
                uint64_t both[2] = {v->hash, sg->hash};
                it.hash = vlm_hash64(both, sizeof both, 0x56324954u);
                it.n_tokens += g->n_tokens;
                if (!tiles) {
                    free(px);
                    px = NULL;
                }
            }
            if (!px) {
                free(tiles);
                rc = vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for the image");
            } else if (req_add_item(r, pp->items[k].offset, &it, px)) {
                rc = vlm_err_set(err, VLM_EINVAL, 400, "bad image placement in the prompt");
            }
        }
        r->notify = hooks->notify;
        r->notify_user = hooks->user;
        r->cleanup = hooks->cleanup;
        r->user = hooks->user;
        hooks->retain(hooks->user); /* given back by the cleanup hook */
        struct sess_choice *h = &ch[i];
        h->r = r;
        if (q->grammar) { /* structured outputs: scheduler/constrain.h */
            r->grammar = q->grammar;
            grammar_retain(r->grammar);
            r->vocab = st_vocab(env->tok, env->vocab_size);
            bool think = pp->thinking && is_chat(s);
            r->grammar_after = think ? tok_find(env->tok, "</think>") : -1;
        }
        sess_choice_init(s, h, i / q->n, pp->thinking,
                         vlm_mix64(id ^ 0x746f6f6c73ull) ^ vlm_now_ns());
        n_built = i + 1;
    }
    for (int32_t i = 0; i < n_built && !rc; i++) {
        rc = loop_submit(env->loop, ch[i].r, err);
        if (!rc) ch[i].submitted = true;
    }
    if (rc) {
        if (err->code == VLM_ETOOBIG && err->http_status < 400) err->http_status = 503;
        for (int32_t i = 0; i < n_built; i++)
            if (ch[i].submitted) loop_abort(env->loop, ch[i].r->id, REQ_FINISHED_ABORT);
    }
    s->ch = ch;
    s->n_ch = n_built;
    return rc;
}

int sess_prepare(struct session *s, const struct sess_hooks *hooks, struct vlm_err *err)
{
    /* a completions batch: each prompt prepared on its own (chat: one) */
    const struct oai_request *q = &s->q;
    int32_t n = q->n_prompts > 0 ? q->n_prompts : 1, k = 0;
    struct prep_prompt *pp = xcalloc((size_t)n, sizeof *pp);
    int rc = 0;
    for (; k < n && !rc; k++) {
        struct oai_request one = *q;
        if (q->n_prompts > 0) {
            one.prompt = q->prompts[k].text;
            one.prompt_len = q->prompts[k].len;
            one.prompt_ids = q->prompts[k].ids;
            one.n_prompt_ids = q->prompts[k].n_ids;
        }
        rc = prep_prompt_build(s->env->prep_ctx, &one, false, &pp[k], err);
        if (rc && n > 1 && err->param[0] && !strncmp(err->param, "prompt", 6))
            snprintf(err->param, sizeof err->param, "prompt[%d]", (int)k);
    }
    if (!rc) rc = make_requests(s, pp, n, hooks, err);
    for (int32_t i = 0; i < n; i++) prep_prompt_destroy(&pp[i]);
    free(pp);
    return rc;
}

/* ==== Choices: from stream events to text ==== */

static const char *finish_name(const struct sess_choice *h)
{
    bool calls = textout_n_calls(&h->out) > 0;
    if (calls && (h->stop_hit || h->state == REQ_FINISHED_STOP || h->state == REQ_FINISHED_LENGTH))
        return "tool_calls";
    if (h->stop_hit) return "stop";
    switch (h->state) {
    case REQ_FINISHED_STOP: return "stop";
    case REQ_FINISHED_LENGTH: return "length";
    case REQ_FINISHED_ABORT: return "abort";
    default: return "error";
    }
}

static void consume(struct session *s, struct sess_choice *h, const struct req_event *ev)
{
    const struct sess_env *env = s->env;
    if (h->stop_hit) return;
    uint64_t now = vlm_now_ns();
    if (!s->t_first_ns) {
        s->t_first_ns = now;
        metrics_hist_observe(&env->metrics->ttft, (double)(now - s->t_start_ns) / 1e9);
    } else if (h->t_last_ns) {
        metrics_hist_observe(&env->metrics->itl, (double)(now - h->t_last_ns) / 1e9);
    }
    h->t_last_ns = now;
    h->n_tokens++;
    if (s->q.echo_only) return; /* the one token generated under echo + max_tokens 0 */
    i32_vec_push(&h->ids, ev->token);
    if (ev->is_stop) {
        for (int32_t i = 0; i < s->q.n_stop_ids; i++)
            if (ev->token == s->q.stop_ids[i]) h->stop_token_hit = true;
        for (int32_t i = 0; i < env->n_eos && !s->q.ignore_eos; i++)
            if (ev->token == env->eos_ids[i]) h->stop_token_hit = false; /* EOS: null */
        h->stop_token = ev->token;
        return;
    }
    size_t before = h->content.n;
    if (h->lp) {
        int32_t n_top = VLM_MIN(ev->n_top, s->q.top_logprobs);
        if (is_chat(s))
            oai_logprob_add_chat(h->lp, env->tok, ev->token, ev->logprob, n_top, ev->top_ids,
                                 ev->top_lp, s->q.tokens_as_ids);
        else
            oai_logprob_add_completion(h->lp, env->tok, ev->token, ev->logprob, n_top,
                                       ev->top_ids, ev->top_lp, h->text_len, s->q.tokens_as_ids);
        h->n_lp++;
    }
    int think_before = h->out.text.think;
    int stopped = textout_push(&h->out, ev->token, &h->content, &h->reasoning);
    if (think_before == TEXTOUT_THINK_IN || h->out.text.think == TEXTOUT_THINK_IN) h->n_think++;
    if (!s->q.include_reasoning) { /* include_reasoning: false drops the thinking text */
        h->reasoning.n = 0;
        if (h->reasoning.s) h->reasoning.s[0] = 0;
    }
    if (stopped) {
        h->stop_hit = true;
        loop_abort(env->loop, h->r->id, REQ_FINISHED_STOP);
    }
    h->text_len += (int32_t)(h->content.n - before);
}

/* Before a choice's first output: what comes from the prompt. echo (completions) puts the
 * prompt's text in front of the output and, with logprobs, the prompt tokens' entries in
 * front of the output's (the first one null, as vLLM writes it); prompt_logprobs builds
 * vLLM's list. Both read the request's prompt logprobs, complete once the request has an
 * event or has finished (request.h). */
static void prelude(struct session *s, struct sess_choice *h)
{
    const struct tokenizer *tok = s->env->tok;
    const struct request *r = h->r;
    const struct i32_vec *p = &s->prompt_ids[h->prompt_idx];
    const struct req_prompt_lp *pl = &r->plp;
    bool have = pl->lp && pl->n_done >= (int32_t)p->n;
    bool as_ids = s->q.tokens_as_ids;
    h->prelude_done = true;
    if (s->q.prompt_logprobs >= 0 && have) {
        h->plp = cJSON_CreateArray();
        cJSON_AddItemToArray(h->plp, cJSON_CreateNull());
        for (size_t t = 1; t < p->n; t++)
            cJSON_AddItemToArray(h->plp, oai_prompt_logprob_entry(
                tok, p->v[t], pl->lp[t], pl->rank[t], pl->n_top,
                pl->top_ids + t * (size_t)pl->n_top, pl->top_lp + t * (size_t)pl->n_top, as_ids));
    }
    if (!s->q.echo) return;
    if (is_chat(s)) {
        /* vLLM: the reply starts with the last message when that has the reply's role, i.e.
         * an assistant message continued with add_generation_prompt false */
        const struct oai_message *last = &s->q.msgs[s->q.n_msgs - 1];
        if (!s->q.add_generation_prompt && last->role == OAI_ROLE_ASSISTANT)
            utf8_sanitize(&h->content, last->text, strlen(last->text));
        return;
    }
    const struct oai_prompt *op = &s->q.prompts[h->prompt_idx];
    if (op->text && !s->q.truncate_prompt_tokens) {
        sb_append(&h->content, op->text, op->len);
    } else {
        struct strbuf t = {0};
        tok_decode(tok, p->v, p->n, s->q.skip_special_tokens, &t);
        utf8_sanitize(&h->content, t.s ? t.s : "", t.n);
        sb_free(&t);
    }
    if (h->lp && have) {
        int32_t off = 0;
        for (size_t t = 0; t < p->n; t++) {
            size_t nb = 0;
            tok_bytes(tok, p->v[t], &nb);
            int32_t k = VLM_MIN(pl->n_top, s->q.top_logprobs);
            oai_logprob_add_completion(h->lp, tok, p->v[t], t ? pl->lp[t] : NAN, t ? k : 0,
                                       pl->top_ids + t * (size_t)pl->n_top,
                                       pl->top_lp + t * (size_t)pl->n_top, off, as_ids);
            off += (int32_t)nb;
            h->n_lp++;
        }
    }
    h->text_len = (int32_t)h->content.n;
}

/* Drains choice h. Returns true if it is done. */
static bool pump_choice(struct session *s, struct sess_choice *h)
{
    if (h->done) return true;
    struct req_event ev[16];
    int state = 0;
    struct req_usage u = {0};
    int32_t k;
    do {
        k = req_stream_read(h->r, ev, (int32_t)ARRAY_LEN(ev), &state, &u);
        if (!h->prelude_done && (k > 0 || req_state_finished(state))) prelude(s, h);
        for (int32_t j = 0; j < k; j++) consume(s, h, &ev[j]);
    } while (k == (int32_t)ARRAY_LEN(ev));
    if (h->stop_hit || req_state_finished(state)) {
        size_t before = h->content.n;
        textout_finish(&h->out, &h->content, &h->reasoning);
        h->text_len += (int32_t)(h->content.n - before);
        h->state = req_state_finished(state) ? state : REQ_FINISHED_STOP;
        if (req_state_finished(state)) h->usage = u;
        h->done = true;
    }
    return h->done;
}

bool sess_pump(struct session *s)
{
    bool all = true;
    for (int32_t i = 0; i < s->n_ch; i++) all &= pump_choice(s, &s->ch[i]);
    return all;
}

static struct oai_usage usage_of(const struct session *s)
{
    struct oai_usage u = {.prompt_tokens = s->n_prompt, .cached_tokens = -1};
    for (int32_t i = 0; i < s->n_ch; i++) {
        u.completion_tokens += s->ch[i].n_tokens;
        if (s->ch[i].state && !s->ch[i].stop_hit && u.cached_tokens < 0)
            u.cached_tokens = s->ch[i].usage.cached_tokens;
    }
    if (u.cached_tokens < 0) u.cached_tokens = 0;
    return u;
}

void sess_record_finish(struct session *s)
{
    struct metrics *m = s->env->metrics;
    if (s->recorded) return;
    s->recorded = true;
    struct oai_usage u = usage_of(s);
    atomic_fetch_add(&m->prompt_tokens, (uint64_t)u.prompt_tokens);
    atomic_fetch_add(&m->generation_tokens, (uint64_t)u.completion_tokens);
    for (int32_t i = 0; i < s->n_ch; i++) {
        const struct sess_choice *h = &s->ch[i];
        int f = h->stop_hit || h->state == REQ_FINISHED_STOP ? METRICS_FINISH_STOP
                : h->state == REQ_FINISHED_LENGTH           ? METRICS_FINISH_LENGTH
                : h->state == REQ_FINISHED_ABORT            ? METRICS_FINISH_ABORT
                                                            : METRICS_FINISH_ERROR;
        atomic_fetch_add(&m->finished[f], 1);
    }
    double ms = (double)(vlm_now_ns() - s->t_start_ns) / 1e6;
    metrics_hist_observe(&m->e2e, ms / 1e3);
    const struct sess_choice *h0 = s->n_ch ? &s->ch[0] : NULL;
    uint64_t id = h0 && h0->r ? h0->r->id : 0;
    bool bad = h0 && !h0->stop_hit && h0->state >= REQ_FINISHED_ABORT;
    if (bad) log_info("req=%llu %s n=%d prompt=%d completion=%d finish=%s %.1f ms",
                      (unsigned long long)id, is_chat(s) ? "chat" : "completion",
                      (int)s->n_ch, (int)u.prompt_tokens, (int)u.completion_tokens,
                      finish_name(h0), ms);
    else log_debug("req=%llu %s n=%d prompt=%d completion=%d finish=%s %.1f ms",
                   (unsigned long long)id, is_chat(s) ? "chat" : "completion",
                   (int)s->n_ch, (int)u.prompt_tokens, (int)u.completion_tokens,
                   h0 ? finish_name(h0) : "-", ms);
}

/* ==== Streaming ==== */

/* A stream chunk's extras for choice h (vLLM's): the usage so far
 * (continuous_usage_stats), the ids since the last chunk and, on the first chunk, the
 * prompt's ids (return_token_ids), the stop_reason. */
static struct oai_chunk_extra chunk_extra(struct session *s, struct sess_choice *h,
                                          struct oai_usage *u)
{
    struct oai_chunk_extra x = {.stop_str = h->stop_hit ? s->q.stop[h->out.text.stop_idx] : NULL,
                                .has_stop_token = h->stop_token_hit,
                                .stop_token = h->stop_token};
    if (s->q.continuous_usage) {
        *u = (struct oai_usage){.prompt_tokens = (int32_t)s->prompt_ids[h->prompt_idx].n,
                                .completion_tokens = h->n_tokens, .cached_tokens = -1};
        x.usage = u;
    }
    if (s->q.return_token_ids) {
        x.token_ids = h->ids.v + h->ids_sent;
        x.n_token_ids = (int32_t)h->ids.n - h->ids_sent;
        h->ids_sent = (int32_t)h->ids.n;
        if (!h->role_sent) {
            x.prompt_ids = s->prompt_ids[h->prompt_idx].v;
            x.n_prompt_ids = (int32_t)s->prompt_ids[h->prompt_idx].n;
        }
    }
    return x;
}

void sess_stream_role(struct session *s, int32_t i, struct strbuf *out)
{
    struct sess_choice *h = &s->ch[i];
    if (!is_chat(s) || h->role_sent) return;
    struct oai_usage cu;
    struct oai_chunk_extra x = chunk_extra(s, h, &cu);
    oai_sse_chunk_x(out, &s->meta, i, "assistant", "", 0, NULL, 0, NULL, NULL, &x);
    h->role_sent = true;
}

void sess_stream_delta(struct session *s, int32_t i, struct strbuf *out)
{
    struct sess_choice *h = &s->ch[i];
    bool done = h->done;
    struct oai_usage cu;
    if (done && h->state == REQ_FINISHED_ERROR && !h->stop_hit) {
        if (!s->error_sent) {
            struct vlm_err e;
            vlm_err_set(&e, VLM_EDEVICE, 500, "the engine failed while generating");
            oai_sse_error(out, &e);
            s->error_sent = true;
        }
    } else {
        /* content first, then the calls completed in this pump; the finish reason rides on
         * the last chunk */
        int32_t n_calls = textout_n_calls(&h->out), new_calls = n_calls - h->n_calls_sent;
        const char *fin = done ? finish_name(h) : NULL;
        if (h->content.n || h->reasoning.n || h->n_lp || (done && !new_calls)) {
            struct oai_chunk_extra x = chunk_extra(s, h, &cu);
            oai_sse_chunk_x(out, &s->meta, i, NULL, h->content.n ? h->content.s : NULL,
                            h->content.n, h->reasoning.n ? h->reasoning.s : NULL,
                            h->reasoning.n, new_calls ? NULL : fin, h->n_lp ? h->lp : NULL, &x);
            h->role_sent = true;
            if (h->n_lp) {
                h->lp = new_lp(s);
                h->n_lp = 0;
            }
        }
        if (new_calls) {
            oai_sse_tool_calls(out, &s->meta, i, h->out.tools.calls, h->n_calls_sent, new_calls,
                               fin);
            h->n_calls_sent = n_calls;
        }
    }
    h->content.n = 0;
    if (h->content.s) h->content.s[0] = 0;
    h->reasoning.n = 0;
    if (h->reasoning.s) h->reasoning.s[0] = 0;
}

void sess_pump_stream(struct session *s, struct strbuf *out)
{
    bool all = true;
    for (int32_t i = 0; i < s->n_ch; i++) {
        struct sess_choice *h = &s->ch[i];
        if (h->done) continue;
        sess_stream_role(s, i, out);
        pump_choice(s, h);
        sess_stream_delta(s, i, out);
        if (!h->done) all = false;
    }
    if (all && !s->eof) {
        if (s->q.include_usage && !s->error_sent) {
            struct oai_usage u = usage_of(s);
            oai_sse_usage(out, &s->meta, &u);
        }
        oai_sse_done(out);
        s->eof = true;
        sess_record_finish(s);
    }
}

/* ==== The non-streaming answer ==== */

bool sess_failed(const struct session *s)
{
    for (int32_t i = 0; i < s->n_ch; i++)
        if (s->ch[i].state == REQ_FINISHED_ERROR && !s->ch[i].stop_hit) return true;
    return false;
}

bool sess_aborted(const struct session *s)
{
    for (int32_t i = 0; i < s->n_ch; i++)
        if (s->ch[i].state == REQ_FINISHED_ABORT && !s->ch[i].stop_hit) return true;
    return false;
}

char *sess_response_json(struct session *s)
{
    struct oai_choice_out *co = xcalloc((size_t)s->n_ch, sizeof *co);
    for (int32_t i = 0; i < s->n_ch; i++) {
        struct sess_choice *h = &s->ch[i];
        co[i].content = h->content.s ? h->content.s : "";
        if (textout_n_calls(&h->out) > 0) {
            /* vLLM: the text before the calls, null when there is none */
            bool blank = true;
            for (size_t k = 0; k < h->content.n && blank; k++)
                blank = h->content.s[k] == ' ' || h->content.s[k] == '\n' ||
                        h->content.s[k] == '\t' || h->content.s[k] == '\r';
            if (blank) co[i].content = NULL;
            co[i].tool_calls = h->out.tools.calls;
            co[i].n_tool_calls = h->out.tools.n_calls;
        }
        co[i].reasoning = h->reasoning.s;
        co[i].finish = finish_name(h);
        co[i].logprobs = h->lp;
        h->lp = NULL;
        co[i].stop_str = h->stop_hit ? s->q.stop[h->out.text.stop_idx] : NULL;
        co[i].has_stop_token = h->stop_token_hit;
        co[i].stop_token = h->stop_token;
        if (s->q.return_token_ids) {
            static const int32_t no_ids[1];
            co[i].token_ids = h->ids.v ? h->ids.v : no_ids;
            co[i].n_token_ids = (int32_t)h->ids.n;
            co[i].prompt_ids = s->prompt_ids[h->prompt_idx].v;
            co[i].n_prompt_ids = (int32_t)s->prompt_ids[h->prompt_idx].n;
        }
        co[i].prompt_logprobs = h->plp;
        h->plp = NULL;
    }
    struct oai_usage u = usage_of(s);
    char *json = oai_response_json(&s->meta, co, s->n_ch, &u);
    free(co);
    return json;
}

/* ==== Ending early ==== */

int32_t sess_abort_running(struct session *s)
{
    int32_t n = 0;
    for (int32_t i = 0; i < s->n_ch; i++) {
        struct sess_choice *h = &s->ch[i];
        if (h->submitted && !h->done) {
            loop_abort(s->env->loop, h->r->id, REQ_FINISHED_ABORT);
            n++;
        }
    }
    return n;
}

bool sess_cancel(struct session *s)
{
    if (!sess_abort_running(s)) return false;
    /* also when the transport saw the client leave first: the connection may close before
     * the aborted choices come back, and they must still be counted */
    for (int32_t i = 0; i < s->n_ch; i++)
        if (!s->ch[i].done) s->ch[i].state = REQ_FINISHED_ABORT;
    sess_record_finish(s);
    return true;
}

void sess_abort_submitted(struct session *s)
{
    for (int32_t i = 0; i < s->n_ch; i++)
        if (s->ch[i].submitted && s->ch[i].r)
            loop_abort(s->env->loop, s->ch[i].r->id, REQ_FINISHED_ABORT);
}

void sess_release_requests(struct session *s)
{
    for (int32_t i = 0; i < s->n_ch; i++) {
        struct request *r = s->ch[i].r;
        s->ch[i].r = NULL;
        if (r) req_release(r);
    }
}
