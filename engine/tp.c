/*
 * tp: the tensor-parallel group: N engines (one per rank), their communicators, and the
 * threads that run ranks 1..N-1. Rank 0 runs on the caller's thread (the scheduler's
 * engine thread), so a step is: publish the job, wake the workers, run rank 0's share,
 * wait for the workers. The collectives inside the step keep the ranks in lock step; the
 * final wait only guarantees that no rank still reads the borrowed struct batch when
 * engine_execute returns.
 */
#include "engine/tp.h"

#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef VLM_HAVE_CUDA
#include <cuda_runtime.h>
#endif

/* ==== Group ==== */

struct tp_job {
    bool execute;             /* engine_execute, else engine_forward_rows */
    const struct batch *b;    /* borrowed for the step */
    const int32_t *rows;      /* (n_rows) borrowed */
    int32_t n_rows;
};

struct tp_worker {
    struct tp_group *g;
    int rank;
    pthread_t th;
    bool started;
};

struct tp_group {
    int size;
    struct engine *eng;        /* (size) owned */
    struct comm *comms;        /* (size) owned */
    struct tp_worker *workers; /* (size) owned; [1..size) have threads */
    pthread_mutex_t mu;
    pthread_cond_t go;         /* gen changed or stop */
    pthread_cond_t done;       /* n_done reached size - 1 */
    uint64_t gen;              /* job number; a worker runs each gen once */
    int n_done;
    int worker_rc;             /* first nonzero code of a worker in this job */
    bool stop;
    struct tp_job job;
};

static int tp_run_rank(struct engine *e, const struct tp_job *j, struct batch_out *out,
                       float *logits)
{
    return j->execute ? engine_execute(e, j->b, out)
                      : engine_forward_rows(e, j->b, j->rows, j->n_rows, logits);
}

static void *tp_worker_main(void *arg)
{
    struct tp_worker *w = arg;
    struct tp_group *g = w->g;
    struct engine *e = &g->eng[w->rank];
#ifdef VLM_HAVE_CUDA
    if (e->p.backend == ENGINE_BACKEND_CUDA) cudaSetDevice(e->p.bp.device);
#endif
    if (e->p.backend == ENGINE_BACKEND_CPU) omp_set_num_threads(VLM_MAX(1, e->p.bp.n_threads));
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&g->mu);
        while (!g->stop && g->gen == seen) pthread_cond_wait(&g->go, &g->mu);
        if (g->stop) {
            pthread_mutex_unlock(&g->mu);
            return NULL;
        }
        seen = g->gen;
        struct tp_job j = g->job;
        pthread_mutex_unlock(&g->mu);

        int rc = tp_run_rank(e, &j, NULL, NULL);

        pthread_mutex_lock(&g->mu);
        if (rc && !g->worker_rc) g->worker_rc = rc;
        if (++g->n_done == g->size - 1) pthread_cond_signal(&g->done);
        pthread_mutex_unlock(&g->mu);
    }
}

/* One step on every rank (rank 0 on the calling thread); returns rank 0's code. */
static int tp_group_run(struct tp_group *g, const struct batch *b, struct batch_out *out,
                        const int32_t *rows, int32_t n_rows, float *logits, bool execute)
{
    struct tp_job j = {.execute = execute, .b = b, .rows = rows, .n_rows = n_rows};
    pthread_mutex_lock(&g->mu);
    g->job = j;
    g->n_done = 0;
    g->worker_rc = 0;
    g->gen++;
    pthread_cond_broadcast(&g->go);
    pthread_mutex_unlock(&g->mu);

#ifdef VLM_HAVE_CUDA
    /* the caller's thread (the scheduler's) may not have rank 0's device current */
    if (g->eng[0].p.backend == ENGINE_BACKEND_CUDA) cudaSetDevice(g->eng[0].p.bp.device);
#endif
    int rc = tp_run_rank(&g->eng[0], &j, out, logits);

    pthread_mutex_lock(&g->mu);
    while (g->n_done < g->size - 1) pthread_cond_wait(&g->done, &g->mu);
    int wrc = g->worker_rc;
    pthread_mutex_unlock(&g->mu);
    /* every failure a step can have is the same on every rank (they see the same batch and
     * the encoder's error flag is all-reduced); a difference is a broken invariant */
    if (wrc != rc) log_error("tp: rank 0 returned %d but a worker returned %d", rc, wrc);
    return rc ? rc : wrc;
}

/* ==== Start-up ==== */

static int gcd(int a, int b)
{
    while (b) {
        int t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int tp_check(const struct model_config *c, int tp, int backend, int devices, struct vlm_err *err)
{
    if (tp < 1)
        return vlm_err_set(err, VLM_EINVAL, 400, "--tensor-parallel-size must be >= 1, got %d", tp);
    if (c->n_kv_heads % tp || c->n_heads % tp || c->intermediate_size % tp) {
        /* the sizes that would work: divisors of gcd(kv heads, heads, ffn) */
        char ok[256] = "";
        size_t len = 0;
        int g = gcd(gcd(c->n_kv_heads, c->n_heads), c->intermediate_size);
        for (int d = 1; d <= g && d <= 64 && len < sizeof ok - 8; d++)
            if (g % d == 0) len += (size_t)snprintf(ok + len, sizeof ok - len, " %d", d);
        return vlm_err_set(err, VLM_EINVAL, 400,
                           "--tensor-parallel-size %d must divide num_key_value_heads (%d), "
                           "num_attention_heads (%d) and intermediate_size (%d); valid sizes "
                           "for this model:%s",
                           tp, c->n_kv_heads, c->n_heads, c->intermediate_size, ok);
    }
    if (backend == ENGINE_BACKEND_CUDA) {
        if (devices < 0) {
            devices = 0;
#ifdef VLM_HAVE_CUDA
            if (cudaGetDeviceCount(&devices) != cudaSuccess) devices = 0;
#endif
        }
        if (tp > devices)
            return vlm_err_set(err, VLM_EINVAL, 400,
                               "--tensor-parallel-size %d needs %d CUDA devices, %d visible "
                               "(see CUDA_VISIBLE_DEVICES)",
                               tp, tp, devices);
#if defined(VLM_HAVE_CUDA) && !defined(VLM_HAVE_NCCL)
        if (tp > 1)
            return vlm_err_set(err, VLM_EUNSUPPORTED, 400,
                               "--tensor-parallel-size %d with CUDA needs NCCL; this build has none",
                               tp);
#endif
    }
    return 0;
}

static int tp_create_comms(struct tp_group *g, struct vlm_err *err)
{
    const struct engine *e0 = &g->eng[0];
#ifdef VLM_HAVE_NCCL
    if (e0->p.backend == ENGINE_BACKEND_CUDA) {
        int *dev = xcalloc((size_t)g->size, sizeof *dev);
        void **streams = xcalloc((size_t)g->size, sizeof *streams);
        for (int r = 0; r < g->size; r++) {
            dev[r] = g->eng[r].p.bp.device;
            streams[r] = backend_cuda_stream(&g->eng[r].be);
        }
        int rc = comm_nccl_create(g->comms, g->size, dev, (void *const *)streams, err);
        free(dev);
        free(streams);
        return rc;
    }
#endif
    /* the largest all-reduce is the residual stream of one step */
    size_t max_count = (size_t)e0->p.max_batched_tokens * (size_t)e0->cfg.hidden_size;
    return comm_local_create(g->comms, g->size, max_count, err);
}

int tp_group_create(struct tp_group **out, const struct model *m, const struct engine_params *p,
                    struct vlm_err *err)
{
    *out = NULL;
    int n = p->tp_size > 1 ? p->tp_size : 1;
    int rc = tp_check(&m->cfg, n, p->backend, -1, err);
    if (rc) return rc;
    struct tp_group *g = xcalloc(1, sizeof *g);
    g->size = n;
    g->eng = xcalloc((size_t)n, sizeof *g->eng);
    g->comms = xcalloc((size_t)n, sizeof *g->comms);
    g->workers = xcalloc((size_t)n, sizeof *g->workers);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->go, NULL);
    pthread_cond_init(&g->done, NULL);

    int threads = p->bp.n_threads > 0 ? p->bp.n_threads : omp_get_num_procs();
    for (int r = 0; r < n && !rc; r++) {
        struct engine_params pr = *p;
        pr.tp_rank = r;
        pr.tp_size = n;
        /* the engine only records the pointer; the collectives are created below, once the
         * backends (and their streams) exist, so rank and size are filled in ahead */
        g->comms[r].rank = r;
        g->comms[r].size = n;
        pr.comm = &g->comms[r];
        if (p->backend == ENGINE_BACKEND_CPU) pr.bp.n_threads = VLM_MAX(1, threads / n);
        else pr.bp.device = p->bp.device + r;
        rc = engine_init(&g->eng[r], m, &pr, err);
    }
    if (!rc) rc = tp_create_comms(g, err);
    for (int r = 1; r < n && !rc; r++) {
        g->workers[r] = (struct tp_worker){.g = g, .rank = r};
        if (pthread_create(&g->workers[r].th, NULL, tp_worker_main, &g->workers[r]))
            rc = vlm_err_set(err, VLM_ENOMEM, 500, "tp: cannot start the thread of rank %d", r);
        else g->workers[r].started = true;
    }
    if (rc) {
        tp_group_destroy(g);
        return rc;
    }
    const struct engine *e = &g->eng[0];
    log_info("tp: %d ranks over %s; per rank %d/%d heads, %d/%d KV heads, ffn %d/%d, vocab %d "
             "(of %d, padded to %d)",
             n, e->be.ops->name, e->n_heads, e->cfg.n_heads, e->n_kv_heads, e->cfg.n_kv_heads,
             e->ffn, e->cfg.intermediate_size, e->vocab_local, e->cfg.vocab_size,
             e->vocab_local * n);
    *out = g;
    return 0;
}

static int tp_execute(void *g, const struct batch *b, struct batch_out *out)
{
    return tp_group_run(g, b, out, NULL, 0, NULL, true);
}

static int tp_forward_rows(void *g, const struct batch *b, const int32_t *rows, int32_t n_rows,
                           float *logits)
{
    return tp_group_run(g, b, NULL, rows, n_rows, logits, false);
}

struct executor tp_group_executor(struct tp_group *g)
{
    const struct engine *e = &g->eng[0]; /* every rank has the same pool and vocabulary */
    return (struct executor){.impl = g, .execute = tp_execute, .forward_rows = tp_forward_rows,
                             .kv_blocks = engine_kv_blocks(e), .block_size = engine_block_size(e),
                             .vocab_size = e->cfg.vocab_size};
}

void tp_group_destroy(struct tp_group *g)
{
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->go);
    pthread_mutex_unlock(&g->mu);
    for (int r = 1; r < g->size; r++)
        if (g->workers[r].started) pthread_join(g->workers[r].th, NULL);
    /* collectives first: an NCCL communicator uses its rank's stream */
    for (int r = 0; r < g->size; r++) comm_destroy(&g->comms[r]);
    for (int r = 0; r < g->size; r++) engine_destroy(&g->eng[r]);
    pthread_cond_destroy(&g->done);
    pthread_cond_destroy(&g->go);
    pthread_mutex_destroy(&g->mu);
    free(g->workers);
    free(g->comms);
    free(g->eng);
    free(g);
}
