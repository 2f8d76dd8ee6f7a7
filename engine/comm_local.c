/*
 * comm_local: collectives between threads of one process over shared host memory. Each
 * collective is: publish my pointer, barrier, read everyone's, barrier. Sums run in rank order
 * on every rank, so all ranks hold bit-identical results (what NCCL's ring also guarantees
 * for a fixed topology).
 */
#include "engine/comm.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

struct local_group {
    int size;
    pthread_barrier_t bar;
    const void **ptr;      /* (size) pointer each rank published for the current collective */
    _Atomic int refs;      /* ranks not yet destroyed */
};

struct local_ctx {
    struct local_group *g; /* shared */
    int rank;
    float *scratch;        /* (max_count) owned: this rank's all-reduce result before copy-back */
    size_t max_count;
};

static void local_publish_and_wait(struct local_ctx *c, const void *p)
{
    c->g->ptr[c->rank] = p;
    pthread_barrier_wait(&c->g->bar);
}

static void local_all_reduce_sum(void *ctx, void *buf, size_t count, enum dtype type)
{
    struct local_ctx *c = ctx;
    VLM_ASSERT(type == DT_F32 && count <= c->max_count);
    local_publish_and_wait(c, buf);
    for (size_t i = 0; i < count; i++) {
        float s = 0.0f;
        for (int r = 0; r < c->g->size; r++) s += ((const float *)c->g->ptr[r])[i];
        c->scratch[i] = s;
    }
    pthread_barrier_wait(&c->g->bar); /* everyone has read every buffer */
    memcpy(buf, c->scratch, count * sizeof(float));
    pthread_barrier_wait(&c->g->bar); /* no rank reuses ptr[] before all copied back */
}

static void local_all_gather(void *ctx, void *recv, const void *send, size_t count,
                             enum dtype type)
{
    struct local_ctx *c = ctx;
    size_t bytes = count * dtype_size(type);
    local_publish_and_wait(c, send);
    for (int r = 0; r < c->g->size; r++)
        memcpy((char *)recv + (size_t)r * bytes, c->g->ptr[r], bytes);
    pthread_barrier_wait(&c->g->bar);
}

static void local_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    struct local_ctx *c = ctx;
    local_publish_and_wait(c, buf);
    if (c->rank != root) memcpy(buf, c->g->ptr[root], bytes);
    pthread_barrier_wait(&c->g->bar);
}

static void local_barrier(void *ctx)
{
    pthread_barrier_wait(&((struct local_ctx *)ctx)->g->bar);
}

static void local_destroy(void *ctx)
{
    struct local_ctx *c = ctx;
    if (!c) return;
    if (atomic_fetch_sub(&c->g->refs, 1) == 1) {
        pthread_barrier_destroy(&c->g->bar);
        free(c->g->ptr);
        free(c->g);
    }
    free(c->scratch);
    free(c);
}

static const struct comm_ops local_ops = {
    .all_reduce_sum = local_all_reduce_sum,
    .all_gather = local_all_gather,
    .broadcast = local_broadcast,
    .barrier = local_barrier,
    .destroy = local_destroy,
};

int comm_local_create(struct comm *out, int size, size_t max_count, struct vlm_err *err)
{
    if (size < 1) return vlm_err_set(err, VLM_EINVAL, 400, "comm: size must be >= 1, got %d", size);
    struct local_group *g = xcalloc(1, sizeof *g);
    g->size = size;
    g->ptr = xcalloc((size_t)size, sizeof *g->ptr);
    atomic_store(&g->refs, size);
    pthread_barrier_init(&g->bar, NULL, (unsigned)size);
    for (int r = 0; r < size; r++) {
        struct local_ctx *c = xcalloc(1, sizeof *c);
        c->g = g;
        c->rank = r;
        c->max_count = max_count;
        c->scratch = xmalloc((max_count ? max_count : 1) * sizeof(float));
        out[r] = (struct comm){.ops = &local_ops, .ctx = c, .rank = r, .size = size};
    }
    return 0;
}

void comm_destroy(struct comm *c)
{
    if (c && c->ops) c->ops->destroy(c->ctx);
    if (c) memset(c, 0, sizeof *c);
}
