/*
 * loop: the engine thread and its inbox.
 */
#include "scheduler/loop.h"

#include <pthread.h>
#include <stdlib.h>

struct inbox_abort {
    uint64_t id;
    int why;
};

/* Growable arrays filled by submitters and swapped out whole by the engine thread, so
 * the lock is held only for a push or a swap. */
struct inbox {
    struct request **req;   /* owned array; each entry holds the scheduler's reference */
    int32_t n_req, cap_req;
    struct inbox_abort *ab;  /* owned */
    int32_t n_ab, cap_ab;
};

struct sched_loop {
    struct sched_config cfg;   /* read-only after start: submitters validate against it */
    struct sched *s;           /* engine thread only */
    struct executor ex;
    pthread_t thread;
    pthread_mutex_t mu;        /* guards in, stop */
    pthread_cond_t cv;
    struct inbox in;
    bool stop;
};

/* ==== Submitters ==== */

int loop_submit(struct sched_loop *l, struct request *r, struct vlm_err *err)
{
    int rc = sched_validate(&l->cfg, r, err);
    if (rc) return rc;
    struct sched_stats st;
    sched_get_stats_raw(l->s, &st);
    pthread_mutex_lock(&l->mu);
    if (l->stop) {
        pthread_mutex_unlock(&l->mu);
        return vlm_err_set(err, VLM_EINVAL, 503, "the server is shutting down");
    }
    if (l->cfg.max_waiting > 0 && st.waiting + l->in.n_req >= l->cfg.max_waiting) {
        pthread_mutex_unlock(&l->mu);
        return vlm_err_set(err, VLM_ETOOBIG, 503, "too many requests waiting (%d)",
                           l->cfg.max_waiting);
    }
    if (l->in.n_req == l->in.cap_req) {
        l->in.cap_req = l->in.cap_req ? l->in.cap_req * 2 : 64;
        l->in.req = xrealloc(l->in.req, (size_t)l->in.cap_req * sizeof *l->in.req);
    }
    req_retain(r);
    l->in.req[l->in.n_req++] = r;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

void loop_abort(struct sched_loop *l, uint64_t req_id, int why)
{
    VLM_ASSERT(req_state_finished(why));
    pthread_mutex_lock(&l->mu);
    if (l->in.n_ab == l->in.cap_ab) {
        l->in.cap_ab = l->in.cap_ab ? l->in.cap_ab * 2 : 64;
        l->in.ab = xrealloc(l->in.ab, (size_t)l->in.cap_ab * sizeof *l->in.ab);
    }
    l->in.ab[l->in.n_ab++] = (struct inbox_abort){.id = req_id, .why = why};
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void loop_get_stats(struct sched_loop *l, struct sched_stats *out)
{
    sched_get_stats_raw(l->s, out);
}

/* ==== The engine thread ====
 * Step time: with max_step_ms set, the prefill chunk follows the measured time of steps that
 * prefilled: scaled by target / measured (at most doubled, at least quartered per step)
 * within [LOOP_MIN_CHUNK, max_num_batched_tokens]. It starts at LOOP_FIRST_CHUNK, so the
 * first long prompt after start-up cannot make a step of minutes; attention grows with the
 * context, so a long prompt's later chunks come out smaller. A request that arrives while a
 * long prompt prefills waits for at most the step under way, and decodes keep going. */

#define LOOP_MIN_CHUNK 16
#define LOOP_FIRST_CHUNK 256

static void adapt_chunk(struct sched_loop *l, const struct batch *b, uint64_t ns)
{
    int32_t chunk = sched_prefill_chunk(l->s), most = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) most = VLM_MAX(most, b->seqs[i].n_tokens);
    if (most <= 1) return; /* decodes only: nothing learned about chunks */
    double ratio = l->cfg.max_step_ms * 1e6 / (double)VLM_MAX(ns, 1);
    if (most < chunk && ratio > 1) return; /* the chunk did not bind: no reason to grow it */
    ratio = VLM_MAX(0.25, VLM_MIN(2.0, ratio));
    int32_t next = (int32_t)VLM_MAX((double)LOOP_MIN_CHUNK, (double)chunk * ratio);
    sched_set_prefill_chunk(l->s, next);
}

static void *loop_main(void *arg)
{
    struct sched_loop *l = arg;
    struct inbox mine = {0};
    bool idle = false;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && l->in.n_req == 0 && l->in.n_ab == 0 &&
               (idle || sched_n_live(l->s) == 0))
            pthread_cond_wait(&l->cv, &l->mu);
        struct inbox t = l->in; /* swap: take the filled arrays, leave the drained ones */
        l->in = mine;
        mine = t;
        bool stop = l->stop;
        pthread_mutex_unlock(&l->mu);

        for (int32_t i = 0; i < mine.n_req; i++) sched_add(l->s, mine.req[i]);
        for (int32_t i = 0; i < mine.n_ab; i++) sched_abort_id(l->s, mine.ab[i].id, mine.ab[i].why);
        mine.n_req = mine.n_ab = 0;
        if (stop) break;

        struct batch b;
        struct batch_out out = {0};
        idle = sched_schedule(l->s, &b) == 0;
        if (idle) {
            if (sched_n_live(l->s) > 0)
                log_warn("scheduler: %d requests held but none can run; waiting for input",
                         sched_n_live(l->s));
            continue;
        }
        uint64_t t0 = vlm_now_ns();
        int rc = l->ex.execute(l->ex.impl, &b, &out);
        if (!rc && l->cfg.max_step_ms > 0) adapt_chunk(l, &b, vlm_now_ns() - t0);
        if (rc) {
            log_error("engine: step failed (%s); failing %d requests", vlm_strerror(rc),
                      b.n_seqs);
            sched_fail(l->s, &b);
        } else {
            sched_update(l->s, &b, &out);
        }
    }
    free(mine.req);
    free(mine.ab);
    return NULL;
}

int loop_start(struct sched_loop **out, const struct sched_config *cfg,
               struct executor ex, struct vlm_err *err)
{
    *out = NULL;
    VLM_ASSERT(ex.execute);
    struct sched *s = sched_new(cfg, err);
    if (!s) return err ? err->code : VLM_EINVAL;
    struct sched_loop *l = xcalloc(1, sizeof *l);
    l->cfg = *cfg;
    l->s = s;
    if (cfg->max_step_ms > 0) sched_set_prefill_chunk(s, LOOP_FIRST_CHUNK);
    l->ex = ex;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
        sched_free(s);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        free(l);
        return vlm_err_set(err, VLM_ENOMEM, 500, "cannot start the engine thread");
    }
    log_info("scheduler: %d KV blocks x %d tokens, max_num_seqs %d, max_num_batched_tokens %d, "
             "max_model_len %d, prefix caching %s, encoder cache %d tokens, step target %g ms",
             cfg->n_blocks - 1, cfg->block_size, cfg->max_num_seqs, cfg->max_num_batched_tokens,
             cfg->max_model_len, cfg->enable_prefix_caching ? "on" : "off",
             cfg->encoder_cache_tokens, cfg->max_step_ms);
    *out = l;
    return 0;
}

void loop_stop(struct sched_loop *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    /* The thread drained the inbox before leaving; submit refuses once stop is set. */
    VLM_ASSERT(l->in.n_req == 0);
    sched_free(l->s);
    free(l->in.req);
    free(l->in.ab);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
