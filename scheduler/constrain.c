/*
 * constrain: masks, the helper thread and matcher advances for structured outputs (see
 * constrain.h).
 */
#include "scheduler/constrain.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler/request.h"

enum {
    CM_IDLE,   /* nothing posted; the owner's */
    CM_QUEUED, /* posted, waiting for the helper */
    CM_BUSY,   /* being computed (by the helper or a joining thread) */
    CM_READY,  /* computed; the owner's until the next post */
};

struct mask_helper {
    pthread_t *threads;   /* n_threads, all taking jobs from one queue */
    int n_threads;
    pthread_mutex_t mu;   /* guards everything below and every posted cmask's st/ok/next */
    pthread_cond_t work;  /* a job was queued, or stop */
    pthread_cond_t done;  /* a job left CM_BUSY */
    struct cmask *head, *tail;
    bool stop;
};

static void set_bit(uint32_t *m, int32_t V, int32_t t)
{
    if (t >= 0 && t < V) m[t >> 5] |= 1u << (t & 31);
}

int32_t cmask_fill(struct cmask *c)
{
    int32_t n = gm_fill_mask(c->gm, c->vocab, c->bits);
    if (n < 0) return -1;
    if (n == 0 || gm_can_end(c->gm)) {
        int32_t V = gv_size(c->vocab);
        for (int k = 0; k < 2; k++)
            for (int32_t i = 0; i < c->n_end[k]; i++) set_bit(c->bits, V, c->end_ids[k][i]);
    }
    return n;
}

/* ==== The helper ==== */

/* Computes c's mask with h->mu held on entry and on return, released while it works; c is
 * CM_BUSY meanwhile, then CM_READY. */
static void run_job(struct mask_helper *h, struct cmask *c)
{
    c->st = CM_BUSY;
    pthread_mutex_unlock(&h->mu);
    bool ok = cmask_fill(c) >= 0;
    pthread_mutex_lock(&h->mu);
    c->ok = ok;
    c->st = CM_READY;
}

static void *helper_main(void *arg)
{
    struct mask_helper *h = arg;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->stop && !h->head) pthread_cond_wait(&h->work, &h->mu);
        if (h->stop) break;
        struct cmask *c = h->head;
        h->head = c->next;
        if (!h->head) h->tail = NULL;
        c->next = NULL;
        run_job(h, c);
        pthread_cond_broadcast(&h->done);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Stops and joins the started threads. */
static void stop_threads(struct mask_helper *h)
{
    pthread_mutex_lock(&h->mu);
    VLM_ASSERT(!h->head);
    h->stop = true;
    pthread_cond_broadcast(&h->work);
    pthread_mutex_unlock(&h->mu);
    for (int i = 0; i < h->n_threads; i++) pthread_join(h->threads[i], NULL);
}

struct mask_helper *mask_helper_new(int n_threads)
{
    struct mask_helper *h = trycalloc(1, sizeof *h);
    pthread_t *t = trycalloc((size_t)VLM_MAX(n_threads, 1), sizeof *t);
    if (!h || !t) {
        free(h);
        free(t);
        return NULL;
    }
    h->threads = t;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->work, NULL);
    pthread_cond_init(&h->done, NULL);
    while (h->n_threads < VLM_MAX(n_threads, 1) &&
           pthread_create(&h->threads[h->n_threads], NULL, helper_main, h) == 0)
        h->n_threads++;
    if (h->n_threads == 0) {
        mask_helper_free(h);
        log_warn("constrain: cannot start a mask helper thread; masks are computed serially");
        return NULL;
    }
    if (h->n_threads < n_threads)
        log_warn("constrain: %d of %d mask helper threads started", h->n_threads, n_threads);
    return h;
}

void mask_helper_free(struct mask_helper *h)
{
    if (!h) return;
    stop_threads(h);
    free(h->threads);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->work);
    pthread_cond_destroy(&h->done);
    free(h);
}

/* Under h->mu: removes c from the queue. */
static void unqueue(struct mask_helper *h, struct cmask *c)
{
    struct cmask **p = &h->head, *prev = NULL;
    while (*p && *p != c) prev = *p, p = &(*p)->next;
    VLM_ASSERT(*p == c);
    *p = c->next;
    if (h->tail == c) h->tail = prev;
    c->next = NULL;
}

void cmask_post(struct mask_helper *h, struct cmask *c)
{
    bool cold = !gm_mask_cached(c->gm, c->vocab);
    if (!h) {
        c->cold = cold;
        c->ok = cmask_fill(c) >= 0;
        c->st = CM_READY;
        return;
    }
    pthread_mutex_lock(&h->mu);
    VLM_ASSERT(c->st == CM_IDLE || c->st == CM_READY);
    c->cold = cold;
    c->st = CM_QUEUED;
    c->next = NULL;
    if (h->tail) h->tail->next = c;
    else h->head = c;
    h->tail = c;
    pthread_cond_signal(&h->work);
    pthread_mutex_unlock(&h->mu);
}

bool cmask_pending_cold(struct mask_helper *h, const struct cmask *c)
{
    if (!h) return false;
    pthread_mutex_lock(&h->mu);
    bool yes = c->cold && (c->st == CM_QUEUED || c->st == CM_BUSY);
    pthread_mutex_unlock(&h->mu);
    return yes;
}

const uint32_t *cmask_join(struct mask_helper *h, struct cmask *c)
{
    if (!h) return c->st == CM_READY && c->ok ? c->bits : NULL;
    pthread_mutex_lock(&h->mu);
    if (c->st == CM_QUEUED) { /* not started: do it here rather than wait behind others */
        unqueue(h, c);
        run_job(h, c);
    }
    while (c->st == CM_BUSY) pthread_cond_wait(&h->done, &h->mu);
    const uint32_t *bits = c->st == CM_READY && c->ok ? c->bits : NULL;
    pthread_mutex_unlock(&h->mu);
    return bits;
}

void cmask_cancel(struct mask_helper *h, struct cmask *c)
{
    if (!h) {
        c->st = CM_IDLE;
        return;
    }
    pthread_mutex_lock(&h->mu);
    if (c->st == CM_QUEUED) unqueue(h, c);
    while (c->st == CM_BUSY) pthread_cond_wait(&h->done, &h->mu);
    c->st = CM_IDLE;
    pthread_mutex_unlock(&h->mu);
}

/* ==== Requests ==== */

static bool is_eos(const struct request *r, int32_t tok)
{
    const struct req_params *p = &r->params;
    for (int32_t i = 0; i < p->n_eos; i++)
        if (tok == p->eos_ids[i]) return true;
    for (int32_t i = 0; i < p->n_stop; i++)
        if (tok == p->stop_ids[i]) return true;
    return false;
}

void constrain_start(struct mask_helper *h, struct request *r)
{
    if (!r->grammar || r->gm) return;
    struct cmask *c = &r->cm;
    r->gm_on = r->grammar_after < 0;
    r->gm = gm_new(r->grammar);
    r->mask = trymalloc((size_t)gv_mask_words(r->vocab) * sizeof *r->mask);
    if (!r->gm || !r->mask) {
        gm_free(r->gm);
        r->gm = NULL;
        return;
    }
    *c = (struct cmask){.gm = r->gm, .vocab = r->vocab, .bits = r->mask,
                        .end_ids = {r->params.eos_ids, r->params.stop_ids},
                        .n_end = {r->params.n_eos, r->params.n_stop}};
    if (r->gm_on) cmask_post(h, c);
}

bool constrain_hold(struct mask_helper *h, const struct request *r)
{
    return r->gm && r->gm_on && cmask_pending_cold(h, &r->cm);
}

const uint32_t *constrain_mask(struct mask_helper *h, struct request *r)
{
    if (!r->grammar || !r->gm || !r->gm_on) return NULL;
    return cmask_join(h, &r->cm);
}

int constrain_advance(struct mask_helper *h, struct request *r, int32_t tok)
{
    if (!r->grammar) return 0;
    if (!r->gm) return REQ_FINISHED_ERROR;
    if (!r->gm_on) {
        if (tok != r->grammar_after) return 0;
        r->gm_on = true;
        cmask_post(h, &r->cm);
        return 0;
    }
    /* the step's mask was joined before sampling; this only makes the matcher ours again
     * (an executor that does not sample leaves it unjoined) */
    if (!cmask_join(h, &r->cm)) return REQ_FINISHED_ERROR;
    if (is_eos(r, tok)) return 0; /* the usual stop handling applies */
    if (!gm_accept_token(r->gm, r->vocab, tok)) return REQ_FINISHED_ERROR;
    if (gm_done(r->gm)) return REQ_FINISHED_STOP;
    cmask_post(h, &r->cm);
    return 0;
}

void constrain_stop(struct mask_helper *h, struct request *r)
{
    if (r->gm) cmask_cancel(h, &r->cm);
}
