/*
 * request: construction, the two-owner reference count, and the event stream.
 */
#include "scheduler/request.h"

#include <stdlib.h>
#include <string.h>

const char *req_state_name(int s)
{
    switch (s) {
    case REQ_WAITING: return "waiting";
    case REQ_RUNNING: return "running";
    case REQ_PREEMPTED: return "preempted";
    case REQ_FINISHED_STOP: return "stop";
    case REQ_FINISHED_LENGTH: return "length";
    case REQ_FINISHED_ABORT: return "abort";
    case REQ_FINISHED_ERROR: return "error";
    }
    return "?";
}

/* ==== Lifetime ==== */

static void req_free(struct request *r);

struct request *req_new(uint64_t id, const int32_t *prompt, int32_t n_prompt,
                        const struct req_params *params)
{
    VLM_ASSERT(n_prompt >= 0 && params);
    struct request *r = trycalloc(1, sizeof *r);
    if (!r) return NULL;
    r->prompt = trymalloc((size_t)(n_prompt > 0 ? n_prompt : 1) * sizeof(int32_t));
    if (!r->prompt) {
        free(r);
        return NULL;
    }
    if (n_prompt) memcpy(r->prompt, prompt, (size_t)n_prompt * sizeof(int32_t));
    r->id = id;
    r->n_prompt = n_prompt;
    r->params = *params;
    r->params.sp.bias_ids = NULL;
    r->params.sp.bias = NULL;
    r->grammar_after = -1;
    atomic_init(&r->refs, 1);
    pthread_mutex_init(&r->stream.mu, NULL);
    int32_t nb = params->sp.n_bias;
    if (nb > 0) {
        int32_t *ids = trymalloc((size_t)nb * sizeof *ids);
        float *bias = trymalloc((size_t)nb * sizeof *bias);
        r->params.sp.bias_ids = ids;
        r->params.sp.bias = bias;
        if (!ids || !bias) goto fail;
        memcpy(ids, params->sp.bias_ids, (size_t)nb * sizeof *ids);
        memcpy(bias, params->sp.bias, (size_t)nb * sizeof *bias);
    }
    if (params->prompt_logprobs) {
        size_t n = (size_t)(n_prompt > 0 ? n_prompt : 1);
        size_t k = (size_t)VLM_MAX(VLM_MIN(params->prompt_top, VLM_MAX_TOP_LOGPROBS), 0);
        r->plp.n_top = (int32_t)k;
        r->plp.n_done = 1;
        r->plp.lp = trycalloc(n, sizeof(float));
        r->plp.rank = trycalloc(n, sizeof(int32_t));
        r->plp.top_ids = trycalloc(n * k + 1, sizeof(int32_t));
        r->plp.top_lp = trycalloc(n * k + 1, sizeof(float));
        if (!r->plp.lp || !r->plp.rank || !r->plp.top_ids || !r->plp.top_lp) goto fail;
    }
    r->stream.state = REQ_WAITING;
    r->t_arrival_ns = vlm_now_ns();
    r->state = REQ_WAITING;
    r->n_cached_first = -1;
    r->run_idx = -1;
    return r;
fail:
    r->cleanup = NULL;
    req_free(r);
    return NULL;
}

int req_add_item(struct request *r, int32_t offset, const struct mm_item *item, float *pixels)
{
    VLM_ASSERT(r && item);
    int32_t end = offset + item->n_tokens;
    float *tiles = (float *)item->sig.tiles;
    if (item->n_tokens < 1 || offset < 0 || end > r->n_prompt || end < offset) {
        free(pixels);
        free(tiles);
        return VLM_EINVAL;
    }
    if (r->n_mm > 0) {
        const struct mm_span *last = &r->mm[r->n_mm - 1];
        if (offset < last->offset + last->item->n_tokens) {
            free(pixels);
            free(tiles);
            return VLM_EINVAL;
        }
    }
    struct mm_item *it = trymalloc(sizeof *it);
    struct mm_span *spans = tryrealloc(r->mm, (size_t)(r->n_mm + 1) * sizeof *spans);
    if (spans) r->mm = spans;
    struct mm_item **items = tryrealloc(r->items, (size_t)(r->n_items + 1) * sizeof *items);
    if (items) r->items = items;
    if (!it || !spans || !items) {
        free(it);
        free(pixels);
        free(tiles);
        return VLM_ENOMEM;
    }
    *it = *item;
    it->pixels = pixels;
    r->items[r->n_items++] = it;
    r->mm[r->n_mm++] = (struct mm_span){.offset = offset, .item = it};
    return 0;
}

void req_retain(struct request *r)
{
    int old = atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    VLM_ASSERT(old > 0);
}

static void req_free(struct request *r)
{
    if (r->cleanup) r->cleanup(r, r->user);
    for (int32_t i = 0; i < r->n_items; i++) {
        free((void *)r->items[i]->pixels);
        free((void *)r->items[i]->sig.tiles);
        free(r->items[i]);
    }
    free(r->items);
    free(r->mm);
    free(r->prompt);
    free(r->tokens);
    free(r->blocks);
    free(r->block_hash);
    free(r->mm_row);
    free(r->stream.ev);
    free((void *)r->params.sp.bias_ids);
    free((void *)r->params.sp.bias);
    free(r->plp.lp);
    free(r->plp.rank);
    free(r->plp.top_ids);
    free(r->plp.top_lp);
    gm_free(r->gm);
    free(r->mask);
    grammar_release(r->grammar);
    pthread_mutex_destroy(&r->stream.mu);
    free(r);
}

void req_release(struct request *r)
{
    if (!r) return;
    int old = atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel);
    VLM_ASSERT(old > 0);
    if (old == 1) req_free(r);
}

/* ==== Stream ====
 * A queue that only grows while the reader lags: the writer appends at n, the reader takes
 * from head, and when the reader has caught up both go back to 0. Growth doubles, so a
 * request allocates O(log n_out) times over its life, not once per token. */

void req_stream_push(struct request *r, const struct req_event *e)
{
    struct req_stream *st = &r->stream;
    pthread_mutex_lock(&st->mu);
    if (st->head == st->n) st->head = st->n = 0;
    if (st->n == st->cap) {
        if (st->head > 0) {
            memmove(st->ev, st->ev + st->head, (size_t)(st->n - st->head) * sizeof *st->ev);
            st->n -= st->head;
            st->head = 0;
        }
        if (st->n == st->cap) {
            st->cap = st->cap ? st->cap * 2 : 16;
            st->ev = xrealloc(st->ev, (size_t)st->cap * sizeof *st->ev);
        }
    }
    st->ev[st->n++] = *e;
    pthread_mutex_unlock(&st->mu);
}

void req_stream_finish(struct request *r, int state, const struct req_usage *usage)
{
    VLM_ASSERT(req_state_finished(state));
    pthread_mutex_lock(&r->stream.mu);
    r->stream.state = state;
    r->stream.usage = *usage;
    pthread_mutex_unlock(&r->stream.mu);
}

int32_t req_stream_read(struct request *r, struct req_event *out, int32_t max, int *state,
                        struct req_usage *usage)
{
    struct req_stream *st = &r->stream;
    pthread_mutex_lock(&st->mu);
    int32_t n = VLM_MIN(max, st->n - st->head);
    if (n > 0) {
        memcpy(out, st->ev + st->head, (size_t)n * sizeof *out);
        st->head += n;
    }
    /* Report the final state only together with (or after) the last event. */
    int s = st->head == st->n ? st->state : REQ_RUNNING;
    if (state) *state = s;
    if (usage && req_state_finished(s)) *usage = st->usage;
    pthread_mutex_unlock(&st->mu);
    return n;
}

int req_stream_state(struct request *r)
{
    pthread_mutex_lock(&r->stream.mu);
    int s = r->stream.state;
    pthread_mutex_unlock(&r->stream.mu);
    return s;
}
