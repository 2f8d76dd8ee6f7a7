/*
 * comm_nccl: the same collectives over NCCL, for one process driving several GPUs with one
 * engine thread each (ncclCommInitAll). Calls are enqueued on the rank's stream and return at
 * once; ordering against the rank's kernels comes from sharing that stream.
 * Built only when CUDA and NCCL are found (VLM_HAVE_NCCL).
 */
#include "engine/comm.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>

#define NCCL_CHECK(call)                                                                   \
    do {                                                                                   \
        ncclResult_t r_ = (call);                                                          \
        if (r_ != ncclSuccess) {                                                           \
            fprintf(stderr, "valley: %s failed at %s:%d: %s\n", #call, __FILE__, __LINE__, \
                    ncclGetErrorString(r_));                                               \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

struct nccl_ctx {
    ncclComm_t comm;
    cudaStream_t stream; /* borrowed: the rank's backend stream */
    float *one;          /* (1) device scratch for barrier(), owned */
};

static ncclDataType_t nccl_type(enum dtype t)
{
    switch (t) {
    case DT_F32: return ncclFloat32;
    case DT_BF16: return ncclBfloat16;
    case DT_F16: return ncclFloat16;
    case DT_I32: return ncclInt32;
    default: VLM_ASSERT(!"dtype without an NCCL type");
    }
    return ncclFloat32;
}

static void nccl_all_reduce_sum(void *ctx, void *buf, size_t count, enum dtype type)
{
    struct nccl_ctx *c = ctx;
    NCCL_CHECK(ncclAllReduce(buf, buf, count, nccl_type(type), ncclSum, c->comm, c->stream));
}

static void nccl_all_gather(void *ctx, void *recv, const void *send, size_t count,
                            enum dtype type)
{
    struct nccl_ctx *c = ctx;
    NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(type), c->comm, c->stream));
}

static void nccl_broadcast(void *ctx, void *buf, size_t bytes, int root)
{
    struct nccl_ctx *c = ctx;
    NCCL_CHECK(ncclBroadcast(buf, buf, bytes, ncclUint8, root, c->comm, c->stream));
}

static void nccl_barrier(void *ctx)
{
    /* a one-element all-reduce, then wait for it: every rank has reached this point */
    struct nccl_ctx *c = ctx;
    NCCL_CHECK(ncclAllReduce(c->one, c->one, 1, ncclFloat32, ncclSum, c->comm, c->stream));
    cudaStreamSynchronize(c->stream);
}

static void nccl_destroy(void *ctx)
{
    struct nccl_ctx *c = ctx;
    if (!c) return;
    ncclCommDestroy(c->comm);
    cudaFree(c->one);
    free(c);
}

static const struct comm_ops nccl_ops = {
    .all_reduce_sum = nccl_all_reduce_sum,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .barrier = nccl_barrier,
    .destroy = nccl_destroy,
};

int comm_nccl_create(struct comm *out, int size, const int *devices, void *const *streams,
                     struct vlm_err *err)
{
    ncclComm_t *comms = xcalloc((size_t)size, sizeof *comms);
    ncclResult_t r = ncclCommInitAll(comms, size, devices);
    if (r != ncclSuccess) {
        free(comms);
        return vlm_err_set(err, VLM_EDEVICE, 500, "NCCL init over %d devices failed: %s", size,
                           ncclGetErrorString(r));
    }
    for (int i = 0; i < size; i++) {
        struct nccl_ctx *c = xcalloc(1, sizeof *c);
        cudaSetDevice(devices[i]);
        if (cudaMalloc((void **)&c->one, sizeof(float)) != cudaSuccess) {
            free(c);
            free(comms);
            return vlm_err_set(err, VLM_EDEVICE, 500, "cudaMalloc on device %d failed", devices[i]);
        }
        c->comm = comms[i];
        c->stream = (cudaStream_t)streams[i];
        out[i] = (struct comm){.ops = &nccl_ops, .ctx = c, .rank = i, .size = size};
    }
    free(comms);
    return 0;
}
