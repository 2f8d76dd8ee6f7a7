/*
 * bench_comm: latency per collective call for the message sizes tensor parallelism sends
 * (issue 8): all_reduce_sum of 1 .. 262144 f32 (one decode row of hidden 4096 is 4096; a
 * 64-token step of it 262144) and all_gather of one logits row share. Every rank is a
 * thread calling the same collective `iters` times; the figure is rank 0's wall time per
 * call, the median of 5 runs. Prints figures; asserts nothing.
 *
 *   bench_comm [iters=2000]           the thread communicator (comm_local), 2 and 4 ranks
 *   bench_comm --nccl [ranks=1] [iters=2000]   NCCL over GPUs 0..ranks-1 (CUDA builds):
 *                                     calls enqueued back to back on each rank's stream and
 *                                     synchronized at the end, as the engine issues them
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/comm.h"

#ifdef VLM_HAVE_NCCL
#include <cuda_runtime.h>
#endif

enum { KIND_ALL_REDUCE, KIND_ALL_GATHER };

struct job {
    struct comm *c;
    void *buf, *recv;   /* rank's buffers (host, or device for NCCL) */
    size_t count;
    int iters, kind;
    void *stream;       /* NCCL: the rank's cudaStream_t; NULL for comm_local */
    int device;         /* NCCL: the rank's GPU */
    uint64_t ns;        /* out: wall time of the loop */
};

static void *rank_main(void *arg)
{
    struct job *j = arg;
    const struct comm_ops *o = j->c->ops;
#ifdef VLM_HAVE_NCCL
    if (j->stream) cudaSetDevice(j->device);
#endif
    o->barrier(j->c->ctx);
    uint64_t t0 = vlm_now_ns();
    for (int i = 0; i < j->iters; i++) {
        if (j->kind == KIND_ALL_REDUCE) o->all_reduce_sum(j->c->ctx, j->buf, j->count, DT_F32);
        else o->all_gather(j->c->ctx, j->recv, j->buf, j->count, DT_F32);
    }
#ifdef VLM_HAVE_NCCL
    if (j->stream) cudaStreamSynchronize((cudaStream_t)j->stream);
#endif
    j->ns = vlm_now_ns() - t0;
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* median over 5 runs of rank 0's ns per call */
static double run(struct comm *c, struct job *jobs, int n)
{
    uint64_t t[5];
    for (int k = 0; k < 5; k++) {
        pthread_t th[64];
        for (int r = 1; r < n; r++) pthread_create(&th[r], NULL, rank_main, &jobs[r]);
        rank_main(&jobs[0]);
        for (int r = 1; r < n; r++) pthread_join(th[r], NULL);
        t[k] = jobs[0].ns;
    }
    (void)c;
    qsort(t, 5, sizeof t[0], cmp_u64);
    return (double)t[2] / jobs[0].iters;
}

static const size_t counts[] = {1, 256, 4096, 65536, 262144};

static void bench_local(int iters)
{
    printf("comm_local (threads over shared memory), %d calls per run, median of 5\n", iters);
    printf("%-6s %-14s %10s %12s\n", "ranks", "op", "f32", "us/call");
    for (int n = 2; n <= 4; n += 2) {
        struct comm c[4];
        struct vlm_err err = {0};
        if (comm_local_create(c, n, 262144, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return;
        }
        struct job jobs[4];
        float *bufs[4], *recv[4];
        for (int r = 0; r < n; r++) {
            bufs[r] = xcalloc(262144, sizeof(float));
            recv[r] = xcalloc((size_t)n * 262144, sizeof(float));
        }
        for (size_t s = 0; s < ARRAY_LEN(counts); s++) {
            int it = counts[s] >= 65536 ? VLM_MAX(1, iters / 20) : iters;
            for (int r = 0; r < n; r++)
                jobs[r] = (struct job){.c = &c[r], .buf = bufs[r], .recv = recv[r],
                                       .count = counts[s], .iters = it, .kind = KIND_ALL_REDUCE};
            printf("%-6d %-14s %10zu %12.2f\n", n, "all_reduce_sum", counts[s], run(c, jobs, n) / 1e3);
        }
        /* one logits row: vocab 151936 split n ways */
        size_t row = (151936 + (size_t)n - 1) / (size_t)n;
        for (int r = 0; r < n; r++)
            jobs[r] = (struct job){.c = &c[r], .buf = bufs[r], .recv = recv[r], .count = row,
                                   .iters = VLM_MAX(1, iters / 20), .kind = KIND_ALL_GATHER};
        printf("%-6d %-14s %10zu %12.2f\n", n, "all_gather", row, run(c, jobs, n) / 1e3);
        for (int r = 0; r < n; r++) {
            comm_destroy(&c[r]);
            free(bufs[r]);
            free(recv[r]);
        }
    }
}

#ifdef VLM_HAVE_NCCL
static void bench_nccl(int n, int iters)
{
    int have = 0;
    if (cudaGetDeviceCount(&have) != cudaSuccess || have < n) {
        fprintf(stderr, "bench_comm: %d GPUs asked, %d visible\n", n, have);
        return;
    }
    int dev[64];
    void *streams[64], *bufs[64], *recv[64];
    for (int r = 0; r < n; r++) {
        dev[r] = r;
        cudaSetDevice(r);
        cudaStreamCreate((cudaStream_t *)&streams[r]);
        cudaMalloc(&bufs[r], 262144 * sizeof(float));
        cudaMalloc(&recv[r], (size_t)n * 262144 * sizeof(float));
        cudaMemset(bufs[r], 0, 262144 * sizeof(float));
    }
    struct comm c[64];
    struct vlm_err err = {0};
    if (comm_nccl_create(c, n, dev, streams, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    printf("NCCL, %d rank(s), %d calls per run enqueued back to back, median of 5\n", n, iters);
    printf("%-6s %-14s %10s %12s\n", "ranks", "op", "f32", "us/call");
    struct job jobs[64];
    for (size_t s = 0; s < ARRAY_LEN(counts); s++) {
        for (int r = 0; r < n; r++)
            jobs[r] = (struct job){.c = &c[r], .buf = bufs[r], .count = counts[s], .iters = iters,
                                   .kind = KIND_ALL_REDUCE, .stream = streams[r], .device = r};
        printf("%-6d %-14s %10zu %12.2f\n", n, "all_reduce_sum", counts[s], run(c, jobs, n) / 1e3);
    }
    for (int r = 0; r < n; r++) {
        comm_destroy(&c[r]);
        cudaFree(bufs[r]);
        cudaFree(recv[r]);
        cudaStreamDestroy((cudaStream_t)streams[r]);
    }
}
#endif

int main(int argc, char **argv)
{
    vlm_log_level = VLM_LOG_WARN;
    if (argc > 1 && !strcmp(argv[1], "--nccl")) {
#ifdef VLM_HAVE_NCCL
        int n = argc > 2 ? atoi(argv[2]) : 1, iters = argc > 3 ? atoi(argv[3]) : 2000;
        bench_nccl(VLM_MAX(1, VLM_MIN(n, 64)), VLM_MAX(1, iters));
        return 0;
#else
        fprintf(stderr, "bench_comm: built without NCCL\n");
        return 2;
#endif
    }
    int iters = argc > 1 ? atoi(argv[1]) : 2000;
    bench_local(VLM_MAX(1, iters));
    return 0;
}
