/*
 * comm: the collective operations tensor parallelism needs (all-reduce sum, all-gather,
 * broadcast, barrier), behind one table with two implementations:
 *   - comm_local.c: ranks are threads of this process sharing host memory (the CPU backend,
 *     and the tests that check sharding everywhere);
 *   - comm_nccl.c: NCCL, one process, one engine thread per GPU, one communicator per rank
 *     (built only with CUDA).
 * Every rank calls the same collectives in the same order (SPMD); each call returns when the
 * rank's output is ready to use (CPU), or is enqueued on the rank's stream (NCCL). Buffers
 * live in the rank's backend memory. A struct comm is used by its own rank's thread only.
 */
#ifndef VLM_COMM_H
#define VLM_COMM_H

#include "engine/backend.h"

struct comm_ops {
    /* buf(count) = sum over ranks of buf(count), in place; every rank gets bit-identical
     * results (ranks are summed in rank order). */
    void (*all_reduce_sum)(void *ctx, void *buf, size_t count, enum dtype type);
    /* recv(size * count) = concatenation over ranks of send(count), rank order */
    void (*all_gather)(void *ctx, void *recv, const void *send, size_t count, enum dtype type);
    /* buf(bytes) = root's buf(bytes) */
    void (*broadcast)(void *ctx, void *buf, size_t bytes, int root);
    void (*barrier)(void *ctx);
    void (*destroy)(void *ctx);
};

struct comm {
    const struct comm_ops *ops;
    void *ctx;     /* owned; ops->destroy frees it (the last rank frees the shared group) */
    int rank, size;
};

/* Creates `size` communicators (out[0..size)) over one group of threads. max_count bounds the
 * elements of any all_reduce_sum (its scratch is sized here, not per call). */
int comm_local_create(struct comm *out, int size, size_t max_count, struct vlm_err *err);

#ifdef VLM_HAVE_NCCL
/* One NCCL communicator per device (ncclCommInitAll); streams[i] is rank i's cudaStream_t. */
int comm_nccl_create(struct comm *out, int size, const int *devices, void *const *streams,
                     struct vlm_err *err);
#endif

void comm_destroy(struct comm *c); /* accepts a zeroed struct */

#endif
