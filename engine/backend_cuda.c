/*
 * The CUDA backend: backend_ops over the kernels/cuda launchers and cuBLAS, on one device
 * and one stream. Weights, activations and the KV cache are bf16 on the device; every
 * product and reduction accumulates in f32 (cuBLAS with CUBLAS_COMPUTE_32F, the kernels in
 * registers). Logits come out of the lm_head product in f32 directly.
 *
 * What the step path does (and does not) do:
 *   - set_step() packs the step's metadata into one pinned staging buffer and uploads it with
 *     one async copy into a preallocated device buffer; every op of the step reads it there;
 *   - ops only enqueue kernels or cuBLAS calls: no allocation (cuBLAS gets its workspace at
 *     init), no synchronisation, except download() and sync(), which wait by contract;
 *   - small host arrays handed to single ops (gather/scatter indices, ViT segment bounds,
 *     attention tile lists) go through the same staging buffers.
 *
 * CUDA graphs (struct backend_graph_ops, backend.h): a step with a graph key puts its
 * metadata at fixed addresses (struct cuda_graphs' meta region, refreshed by one async copy
 * per step outside the graph) and shapes its launches from the key's bounds (max_blocks,
 * max_ctx), so one capture per key replays every later step with that key. While capturing,
 * what ops stage (logit-row indices, attention tiles, the RoPE table) goes to the graph's own
 * pinned arena, whose contents the graph's copy nodes read at every replay: those arrays
 * must be the same for every step of the key (engine.c's decode buckets make them so).
 * Called from the one engine thread that owns this backend.
 */
#include "engine/backend.h"
#include "kernels/cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

/* ==== Context ==== */

#define STAGE_BYTES ((size_t)16 << 20)    /* per staging half: step metadata and op arrays */
#define BLAS_WS_BYTES ((size_t)32 << 20)  /* cuBLAS workspace, so it never allocates itself */
#define ATTN_WS_BYTES ((size_t)64 << 20)  /* split-context attention partials */
#define LOAD_CHUNK_BYTES ((size_t)64 << 20) /* host conversion buffer for load_weight */
#define VL_MAX_SEG 65536                    /* ViT segments (images x frame groups) per call */
#define GRAPH_MAX 128                       /* captured graphs kept; more keys run eagerly */
#define GRAPH_META_BYTES ((size_t)8 << 20)  /* fixed step metadata of graph steps */
#define GRAPH_ARENA_BYTES ((size_t)32 << 10) /* per graph: what its ops staged (a decode
                                              * step of b sequences stages ~12b bytes) */

/* Staging: two halves, each a pinned host buffer mirrored by a device buffer of the same
 * size. Uploads bump-allocate in the current half (host memcpy, then one async copy at the
 * same offset). set_step() moves to the other half, first waiting for the event recorded
 * when that half was last left (every copy out of its host side was enqueued before that),
 * so the wait costs nothing in steady state; device-side readers of the old contents are
 * ordered before the new copies by the stream. A step whose uploads overflow a half moves
 * once more and its metadata stays valid in the half it left; a second overflow moves back
 * onto it, so the step's metadata is dead from then on: ops that need it abort (ViT-only
 * work, which needs none, can go on uploading indefinitely). */
struct cuda_stage {
    char *host[2];        /* (STAGE_BYTES) pinned, owned */
    char *dev[2];         /* (STAGE_BYTES) device, owned */
    cudaEvent_t left[2];  /* recorded when the half was last left */
    int cur;
    size_t off;
    int moves_this_step;
};

/* Captured graphs and the fixed metadata region of graph steps. */
struct cuda_graph {
    uint64_t key;
    cudaGraphExec_t exec;       /* owned */
};

struct cuda_graphs {
    struct cuda_graph g[GRAPH_MAX];
    int32_t n;
    /* arenas: graph i stages into row i (what its ops copied, read by its copy nodes) */
    char *arenas_host;          /* (GRAPH_MAX, GRAPH_ARENA_BYTES) pinned, owned */
    char *arenas_dev;           /* (GRAPH_MAX, GRAPH_ARENA_BYTES) device, owned */
    char *meta_host;            /* (GRAPH_META_BYTES) pinned, owned */
    char *meta_dev;             /* (GRAPH_META_BYTES) device, owned */
    cudaEvent_t meta_copied;    /* recorded after each copy out of meta_host */
    uint64_t key;               /* of the current step; 0: eager */
    bool capturing;             /* between graph_begin and graph_end, stream in capture */
    bool passthrough;           /* graph_begin could not capture: ops run eagerly */
    bool capture_bad;           /* an op's staging overflowed the arena: drop the capture */
    size_t arena_off;
};

/* The current step, device copies in the staging area plus the host facts the launchers
 * need for grid sizes (host copies point into the pinned half, valid for the step). */
struct cuda_step {
    int32_t n_seqs, n_tokens, max_blocks;
    int32_t max_q, max_ctx;              /* longest new-token run, longest context */
    const int32_t *h_tokens, *h_q_start; /* (n_tokens), (n_seqs + 1) host (pinned stage) */
    const int32_t *d_tokens, *d_pos, *d_slot, *d_q_start, *d_ctx_len, *d_block_tables;
    /* attention tiles built for (group, rows) this step; rebuilt if another group comes */
    int32_t tiles_group, tiles_rows, n_tiles;
    const struct cuda_attn_tile *d_tiles;
};

struct cuda_ctx {
    int device;
    bool multi_gpu;            /* more than one device: make ours current on every call */
    int n_sms;
    cudaStream_t stream;       /* owned; every op is enqueued here */
    cublasHandle_t blas;       /* owned, bound to stream */
    void *blas_ws;             /* (BLAS_WS_BYTES) device, owned */
    void *attn_ws;             /* (ATTN_WS_BYTES) device, owned */
    struct cuda_stage st;
    struct cuda_step step;
    /* the last ViT segment list uploaded (attn_varlen is called once per layer with the
     * same bounds): host copy, device copy, tiles */
    int32_t *vl_cu_host;       /* (VL_MAX_SEG + 1) owned */
    int32_t vl_n_seg, vl_n_tiles, vl_rows, vl_hd;
    const int32_t *vl_cu_dev;  /* in the staging half current at vl_stage_gen */
    const struct cuda_attn_tile *vl_tiles;
    uint64_t vl_stage_gen;
    uint64_t stage_gen;        /* counts moves between halves */
    bool step_live;            /* the step's metadata is still in the staging area */
    void *load_buf;            /* (LOAD_CHUNK_BYTES) host, owned: load_weight conversion */
    /* RoPE inverse frequencies for (rope_theta, rope_hd); remade when either changes (once
     * per model in practice) */
    float *rope_inv_freq;      /* (512) device, owned */
    float *rope_host;          /* (512) host, owned */
    float rope_theta;
    int32_t rope_hd;
    struct cuda_graphs gr;
};

static enum cuda_dtype cdt(enum dtype t)
{
    switch (t) {
    case DT_F32: return CUDA_DT_F32;
    case DT_BF16: return CUDA_DT_BF16;
    case DT_F16: return CUDA_DT_F16;
    default: VLM_ASSERT(!"no CUDA element type for this dtype");
    }
    return CUDA_DT_F32;
}

/* The current device is per host thread; with several GPUs (tensor parallelism) each rank's
 * thread may not have ours current, so every entry point makes it so (a no-op call when it
 * already is; skipped entirely on one GPU). */
static inline void bind(const struct cuda_ctx *c)
{
    if (c->multi_gpu) CUDA_CHECK(cudaSetDevice(c->device));
}

/* ==== Staging ==== */

static void stage_move(struct cuda_ctx *c)
{
    struct cuda_stage *s = &c->st;
    CUDA_CHECK(cudaEventRecord(s->left[s->cur], c->stream));
    s->cur ^= 1;
    /* a never-recorded event counts as complete */
    CUDA_CHECK(cudaEventSynchronize(s->left[s->cur]));
    s->off = 0;
    c->stage_gen++;
}

/* Reserves n bytes (16-byte aligned) in the current half; returns the host pointer and sets
 * *dev to the device pointer at the same offset. The caller fills the host side, then calls
 * stage_commit() to enqueue the copy. */
static void *stage_reserve(struct cuda_ctx *c, size_t n, void **dev)
{
    struct cuda_stage *s = &c->st;
    if (c->gr.capturing) { /* into the graph's arena: no moving between halves in a capture */
        size_t arena = (size_t)c->gr.n * GRAPH_ARENA_BYTES; /* the graph being captured */
        size_t off = (c->gr.arena_off + 15) & ~(size_t)15;
        if (off + n > GRAPH_ARENA_BYTES) {
            /* too much for a graph (a very large batch): graph_end drops the capture, so the
             * contents do not matter, but the caller writes n bytes: hand it the stage half */
            c->gr.capture_bad = true;
            VLM_ASSERT(n <= STAGE_BYTES);
            *dev = s->dev[s->cur];
            return s->host[s->cur];
        }
        c->gr.arena_off = off + n;
        *dev = c->gr.arenas_dev + arena + off;
        return c->gr.arenas_host + arena + off;
    }
    VLM_ASSERT(n <= STAGE_BYTES);
    size_t off = (s->off + 15) & ~(size_t)15;
    if (off + n > STAGE_BYTES) {
        if (s->moves_this_step++ > 0) c->step_live = false; /* moving back onto it */
        stage_move(c);
        off = 0;
    }
    s->off = off + n;
    *dev = s->dev[s->cur] + off;
    return s->host[s->cur] + off;
}

static void stage_commit(struct cuda_ctx *c, void *dev, const void *host, size_t n)
{
    if (n) CUDA_CHECK(cudaMemcpyAsync(dev, host, n, cudaMemcpyHostToDevice, c->stream));
}

/* Copies a host array to the device through the staging area; returns the device copy,
 * valid for the current step. */
static const void *stage_put(struct cuda_ctx *c, const void *src, size_t n)
{
    void *dev;
    void *h = stage_reserve(c, n, &dev);
    memcpy(h, src, n);
    stage_commit(c, dev, h, n);
    return dev;
}

/* ==== Memory ==== */

static void cuda_destroy(void *ctx)
{
    struct cuda_ctx *c = ctx;
    if (!c) return;
    bind(c);
    if (c->stream) cudaStreamSynchronize(c->stream);
    for (int32_t i = 0; i < GRAPH_MAX; i++)
        if (c->gr.g[i].exec) cudaGraphExecDestroy(c->gr.g[i].exec);
    if (c->gr.arenas_host) cudaFreeHost(c->gr.arenas_host);
    if (c->gr.arenas_dev) cudaFree(c->gr.arenas_dev);
    if (c->gr.meta_host) cudaFreeHost(c->gr.meta_host);
    if (c->gr.meta_dev) cudaFree(c->gr.meta_dev);
    if (c->gr.meta_copied) cudaEventDestroy(c->gr.meta_copied);
    for (int i = 0; i < 2; i++) {
        if (c->st.host[i]) cudaFreeHost(c->st.host[i]);
        if (c->st.dev[i]) cudaFree(c->st.dev[i]);
        if (c->st.left[i]) cudaEventDestroy(c->st.left[i]);
    }
    if (c->blas) cublasDestroy(c->blas);
    if (c->blas_ws) cudaFree(c->blas_ws);
    if (c->attn_ws) cudaFree(c->attn_ws);
    if (c->rope_inv_freq) cudaFree(c->rope_inv_freq);
    free(c->rope_host);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c->vl_cu_host);
    free(c->load_buf);
    free(c);
}

static void *cuda_alloc(void *ctx, size_t bytes)
{
    bind(ctx);
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 256) != cudaSuccess) {
        (void)cudaGetLastError(); /* OOM is not sticky; clear it so sync() does not trip */
        return NULL;
    }
    return p;
}

static void cuda_release(void *ctx, void *p)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    if (!p) return;
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaFree(p));
}

/* Host → device: returns once src may be reused (pageable memory is staged by the driver). */
static void cuda_upload(void *ctx, void *dst, const void *src, size_t n)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    if (n) CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream));
}

/* Device → host: waits for the stream, so dst holds the result on return. */
static void cuda_download(void *ctx, void *dst, const void *src, size_t n)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    if (n) CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaGetLastError());
}

static void cuda_zero(void *ctx, void *dst, size_t n)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    if (n) CUDA_CHECK(cudaMemsetAsync(dst, 0, n, c->stream));
}

/* Waits for everything enqueued; the once-per-step launch-error check of release builds. */
static void cuda_sync(void *ctx)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    CUDA_CHECK(cudaGetLastError());
}

static bool cuda_supports(void *ctx, enum op op, enum dtype type)
{
    (void)ctx;
    if (op == OP_MATMUL) return type == DT_BF16 || type == DT_F32; /* f32: output (logits) */
    if (op == OP_CAST) return type == DT_BF16 || type == DT_F32 || type == DT_F16;
    if (op == OP_GATHER_ROWS || op == OP_SCATTER_ROWS) return type != DT_COUNT;
    return type == DT_BF16;
}

/* Host row r of a (possibly strided) 4-D view, as a byte pointer. */
static const char *host_row(const struct tensor *t, int64_t r)
{
    int64_t i1 = r % t->ne[1], i2 = (r / t->ne[1]) % t->ne[2], i3 = r / (t->ne[1] * t->ne[2]);
    return (const char *)t->data + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
}

static struct tensor cuda_load_weight(void *ctx, const struct tensor *src)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    struct tensor t = tensor_make(NULL, DT_BF16, src->ne[0], src->ne[1], src->ne[2], src->ne[3]);
    uint16_t *dst = cuda_alloc(ctx, tensor_nbytes(&t));
    if (!dst) return t;
    int64_t rows = tensor_nrows(src), n0 = src->ne[0];
    size_t row_bytes = (size_t)n0 * 2;
    VLM_ASSERT(row_bytes <= LOAD_CHUNK_BYTES);
    int64_t chunk = (int64_t)(LOAD_CHUNK_BYTES / row_bytes);
    uint16_t *buf = c->load_buf;
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t nr = VLM_MIN(chunk, rows - r0);
        for (int64_t r = 0; r < nr; r++) {
            const char *row = host_row(src, r0 + r);
            uint16_t *o = buf + r * n0;
            switch (src->type) {
            case DT_BF16: memcpy(o, row, row_bytes); break;
            case DT_F32:
                for (int64_t i = 0; i < n0; i++) o[i] = f32_to_bf16(((const float *)row)[i]);
                break;
            case DT_F16:
                for (int64_t i = 0; i < n0; i++)
                    o[i] = f32_to_bf16(f16_to_f32(((const uint16_t *)row)[i]));
                break;
            default: VLM_ASSERT(!"weights must be f32, bf16 or f16");
            }
        }
        /* synchronous: buf is reused by the next chunk */
        CUDA_CHECK(cudaMemcpy(dst + r0 * n0, buf, (size_t)nr * row_bytes, cudaMemcpyHostToDevice));
    }
    t.data = dst;
    return t;
}

/* ==== Ops ==== */

#define BF(t) VLM_ASSERT((t)->type == DT_BF16)
/* ops that read the step's metadata */
#define STEP_LIVE(c) VLM_ASSERT((c)->step_live && "no live step: call set_step() first")

static void cuda_set_step(void *ctx, const struct step_meta *m)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    struct cuda_step *s = &c->step;
    VLM_ASSERT(m->n_tokens >= 0 && m->n_seqs >= 0 && m->max_blocks >= 0);
    VLM_ASSERT(!c->gr.capturing && "set_step inside a graph capture");
    c->st.moves_this_step = 0;
    stage_move(c);
    c->step_live = true;
    size_t nt = (size_t)m->n_tokens, ns = (size_t)m->n_seqs;
    size_t nbt = ns * (size_t)m->max_blocks;
    size_t words = 3 * nt + (ns + 1) + ns + nbt;
    int32_t *h, *d;
    c->gr.key = m->graph_key;
    if (c->gr.key && words * sizeof(int32_t) > GRAPH_META_BYTES) c->gr.key = 0; /* eager */
    if (c->gr.key) {
        /* fixed addresses; the last copy out of the host side must be done first (it is: the
         * step that made it has downloaded its logits since) */
        CUDA_CHECK(cudaEventSynchronize(c->gr.meta_copied));
        h = (int32_t *)c->gr.meta_host;
        d = (int32_t *)c->gr.meta_dev;
    } else {
        void *dev;
        h = stage_reserve(c, words * sizeof(int32_t), &dev);
        d = dev;
    }
    /* arrays an op of this step will not read may be NULL (tests): zeros */
    const int32_t *src3[3] = {m->tokens, m->pos, m->slot};
    for (int i = 0; i < 3; i++) {
        if (src3[i]) memcpy(h + (size_t)i * nt, src3[i], nt * 4);
        else memset(h + (size_t)i * nt, 0, nt * 4);
    }
    memcpy(h + 3 * nt, m->q_start, (ns + 1) * 4);
    memcpy(h + 3 * nt + ns + 1, m->ctx_len, ns * 4);
    if (nbt) memcpy(h + 3 * nt + 2 * ns + 1, m->block_tables, nbt * 4);
    stage_commit(c, d, h, words * sizeof(int32_t));
    if (c->gr.key) CUDA_CHECK(cudaEventRecord(c->gr.meta_copied, c->stream));

    *s = (struct cuda_step){.n_seqs = m->n_seqs, .n_tokens = m->n_tokens,
                            .max_blocks = m->max_blocks};
    s->d_tokens = d;
    s->d_pos = d + nt;
    s->d_slot = d + 2 * nt;
    s->d_q_start = d + 3 * nt;
    s->h_q_start = h + 3 * nt;
    s->h_tokens = h;
    s->d_ctx_len = d + 3 * nt + ns + 1;
    s->d_block_tables = d + 3 * nt + 2 * ns + 1;
    for (int32_t i = 0; i < m->n_seqs; i++) {
        s->max_q = VLM_MAX(s->max_q, m->q_start[i + 1] - m->q_start[i]);
        s->max_ctx = VLM_MAX(s->max_ctx, m->ctx_len[i]);
    }
    if (c->gr.key) { /* launch shapes from the key's bound, not from this step's contexts */
        VLM_ASSERT(m->max_ctx >= s->max_ctx);
        s->max_ctx = m->max_ctx;
    }
}

static void cuda_op_matmul(void *ctx, struct tensor *y, const struct tensor *x,
                           const struct tensor *w, const struct tensor *bias)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    int64_t M = tensor_nrows(x), K = x->ne[0], N = w->ne[1];
    VLM_ASSERT(w->ne[0] == K && y->ne[0] == N && tensor_nrows(y) == M);
    BF(x);
    BF(w);
    VLM_ASSERT(y->type == DT_BF16 || y->type == DT_F32);
    if (M == 0) return;
    /* rows may be strided (views of rows); elements within a row are contiguous */
    int64_t ldx = x->nb[1] / 2, ldw = w->nb[1] / 2, ldy = y->nb[1] / (int64_t)dtype_size(y->type);
    VLM_ASSERT(x->ne[2] * x->ne[3] == 1 || x->nb[2] == x->nb[1] * x->ne[1]);
    VLM_ASSERT(y->ne[2] * y->ne[3] == 1 || y->nb[2] == y->nb[1] * y->ne[1]);
    float one = 1.0f, zero = 0.0f;
    /* row-major y(M, N) = x(M, K)·w(N, K)ᵀ is column-major yᵀ(N, M) = wᵀ·xᵀ with w, x read as
     * column-major (K, N) and (K, M): op(A) = Aᵀ on w, op(B) = B on x. */
    CUBLAS_CHECK(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one,
                              w->data, CUDA_R_16BF, (int)ldw, x->data, CUDA_R_16BF, (int)ldx,
                              &zero, y->data, y->type == DT_F32 ? CUDA_R_32F : CUDA_R_16BF,
                              (int)ldy, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias) {
        BF(bias);
        VLM_ASSERT(bias->ne[0] == N && ldy == N);
        cuda_add_bias(y->data, cdt(y->type), bias->data, M, (int32_t)N, c->stream);
    }
}

static void cuda_op_add(void *ctx, struct tensor *y, const struct tensor *a, const struct tensor *b)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(tensor_nelem(a) == tensor_nelem(b) && tensor_nelem(y) == tensor_nelem(a));
    BF(y);
    BF(a);
    BF(b);
    cuda_add(y->data, a->data, b->data, tensor_nelem(y), c->stream);
}

static void cuda_op_rmsnorm(void *ctx, struct tensor *y, const struct tensor *x,
                            const struct tensor *w, float eps)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(w->ne[0] == x->ne[0] && tensor_nelem(y) == tensor_nelem(x));
    BF(y);
    BF(x);
    BF(w);
    cuda_rmsnorm(y->data, x->data, w->data, tensor_nrows(x), (int32_t)x->ne[0], eps, c->stream);
}

static void cuda_op_add_rmsnorm(void *ctx, struct tensor *res, struct tensor *y,
                                const struct tensor *d, const struct tensor *w, float eps)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(w->ne[0] == res->ne[0] && tensor_nelem(res) == tensor_nelem(d) &&
               tensor_nelem(y) == tensor_nelem(res));
    BF(res);
    BF(y);
    BF(d);
    BF(w);
    cuda_add_rmsnorm(res->data, y->data, d->data, w->data, tensor_nrows(res),
                     (int32_t)res->ne[0], eps, c->stream);
}

static void cuda_op_layernorm(void *ctx, struct tensor *y, const struct tensor *x,
                              const struct tensor *w, const struct tensor *b, float eps)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(w->ne[0] == x->ne[0] && b->ne[0] == x->ne[0]);
    BF(y);
    BF(x);
    BF(w);
    BF(b);
    cuda_layernorm(y->data, x->data, w->data, b->data, tensor_nrows(x), (int32_t)x->ne[0], eps,
                   c->stream);
}

/* The inverse-frequency table for (theta, head_dim), made on first use (once per model in
 * practice): staged, then copied to its own buffer, so nothing waits (a capture may be on). */
static void rope_table_for(struct cuda_ctx *c, int32_t hd, float theta)
{
    if (c->rope_hd == hd && c->rope_theta == theta) return;
    cuda_rope_inv_freq(c->rope_host, hd, theta);
    size_t n = (size_t)hd / 2 * sizeof(float);
    const void *staged = stage_put(c, c->rope_host, n);
    CUDA_CHECK(cudaMemcpyAsync(c->rope_inv_freq, staged, n, cudaMemcpyDeviceToDevice, c->stream));
    c->rope_hd = hd;
    c->rope_theta = theta;
}

/* Per-head norm + RoPE: the fused kernel for head_dim <= 256, else the two kernels. */
static void cuda_op_norm_rope(void *ctx, struct tensor *x, const struct tensor *w, float theta,
                              float eps)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    STEP_LIVE(c);
    int32_t hd = (int32_t)x->ne[0];
    VLM_ASSERT(x->ne[2] == c->step.n_tokens && hd <= 1024 && hd % 2 == 0 && w->ne[0] == hd);
    BF(x);
    BF(w);
    rope_table_for(c, hd, theta);
    if (hd <= 256) {
        cuda_qk_norm_rope(x->data, w->data, c->step.d_pos, c->rope_inv_freq, (int32_t)x->ne[2],
                          (int32_t)x->ne[1], hd, eps, c->stream);
    } else {
        cuda_rmsnorm(x->data, x->data, w->data, tensor_nrows(x), hd, eps, c->stream);
        cuda_rope_neox(x->data, c->step.d_pos, c->rope_inv_freq, (int32_t)x->ne[2],
                       (int32_t)x->ne[1], hd, c->stream);
    }
}

static void cuda_op_rope_neox(void *ctx, struct tensor *x, float theta)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    STEP_LIVE(c);
    int32_t hd = (int32_t)x->ne[0];
    VLM_ASSERT(x->ne[2] == c->step.n_tokens && hd <= 1024 && hd % 2 == 0);
    BF(x);
    rope_table_for(c, hd, theta);
    cuda_rope_neox(x->data, c->step.d_pos, c->rope_inv_freq, (int32_t)x->ne[2],
                   (int32_t)x->ne[1], hd, c->stream);
}

static void cuda_op_rope_table(void *ctx, struct tensor *x, const struct tensor *cos,
                               const struct tensor *sin)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(cos->ne[0] == x->ne[0] && cos->ne[1] == x->ne[2] && x->ne[0] % 2 == 0);
    VLM_ASSERT(cos->type == DT_F32 && sin->type == DT_F32);
    BF(x);
    cuda_rope_table(x->data, cos->data, sin->data, (int32_t)x->ne[2], (int32_t)x->ne[1],
                    (int32_t)x->ne[0], c->stream);
}

static void cuda_op_silu_mul(void *ctx, struct tensor *y, const struct tensor *g,
                             const struct tensor *u)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(tensor_nelem(g) == tensor_nelem(y) && tensor_nelem(u) == tensor_nelem(y));
    BF(y);
    BF(g);
    BF(u);
    cuda_silu_mul(y->data, g->data, u->data, tensor_nelem(y), c->stream);
}

static void cuda_op_gelu_erf(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(tensor_nelem(x) == tensor_nelem(y));
    BF(y);
    BF(x);
    cuda_gelu_erf(y->data, x->data, tensor_nelem(y), c->stream);
}

static void cuda_op_quick_gelu(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(tensor_nelem(x) == tensor_nelem(y));
    BF(y);
    BF(x);
    cuda_quick_gelu(y->data, x->data, tensor_nelem(y), c->stream);
}

static void cuda_op_gelu_tanh(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(tensor_nelem(x) == tensor_nelem(y));
    BF(y);
    BF(x);
    cuda_gelu_tanh(y->data, x->data, tensor_nelem(y), c->stream);
}

static void cuda_op_softmax_rows(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(tensor_nelem(x) == tensor_nelem(y) && y->ne[0] == x->ne[0]);
    VLM_ASSERT(x->ne[0] <= INT32_MAX);
    BF(y);
    BF(x);
    cuda_softmax_rows(y->data, x->data, tensor_nrows(x), (int32_t)x->ne[0], c->stream);
}

static void cuda_op_im2col_3x3s2(void *ctx, struct tensor *y, const struct tensor *x, int32_t h,
                                 int32_t w)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    int64_t C = x->ne[0], oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
    VLM_ASSERT(h > 0 && w > 0 && tensor_nrows(x) == (int64_t)h * w && C <= INT32_MAX / 9);
    VLM_ASSERT(y->ne[0] == 9 * C && tensor_nrows(y) == oh * ow && y->data != x->data);
    BF(y);
    BF(x);
    cuda_im2col_3x3s2(y->data, x->data, h, w, (int32_t)C, c->stream);
}

static void cuda_op_avgpool_adaptive(void *ctx, struct tensor *y, const struct tensor *x,
                                     int32_t ih, int32_t iw, int32_t oh, int32_t ow)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(ih > 0 && iw > 0 && oh > 0 && ow > 0 && x->ne[0] <= INT32_MAX);
    VLM_ASSERT(tensor_nrows(x) == (int64_t)ih * iw && tensor_nrows(y) == (int64_t)oh * ow);
    VLM_ASSERT(y->ne[0] == x->ne[0] && y->data != x->data);
    BF(y);
    BF(x);
    cuda_avgpool_adaptive(y->data, x->data, ih, iw, oh, ow, (int32_t)x->ne[0], c->stream);
}

static void cuda_op_embed(void *ctx, struct tensor *y, const struct tensor *table)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    STEP_LIVE(c);
    VLM_ASSERT(tensor_nrows(y) == c->step.n_tokens && y->ne[0] == table->ne[0]);
    BF(y);
    BF(table);
    /* ids are checked on the host side of set_step's copy (bad ids never reach a kernel) */
    const int32_t *ids = c->step.h_tokens;
    for (int32_t i = 0; i < c->step.n_tokens; i++)
        VLM_ASSERT(ids[i] >= 0 && ids[i] < table->ne[1]);
    cuda_embed(y->data, table->data, c->step.d_tokens, c->step.n_tokens, (int32_t)y->ne[0],
               c->stream);
}

static void cuda_op_kv_store(void *ctx, struct kv_layer *kv, const struct tensor *k,
                             const struct tensor *v)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    STEP_LIVE(c);
    int64_t row = (int64_t)kv->n_kv_heads * kv->head_dim;
    VLM_ASSERT(k->ne[0] * k->ne[1] == row && tensor_nrows(k) / k->ne[1] == c->step.n_tokens);
    VLM_ASSERT(kv->type == DT_BF16);
    BF(k);
    BF(v);
    cuda_kv_store(kv->k, kv->v, k->data, v->data, c->step.d_slot, c->step.n_tokens,
                  (int32_t)row, c->stream);
}

/* Context splits for a launch of n_blocks blocks: enough to give every SM two blocks when
 * the step has few sequences (decode), none when the tiles already fill the GPU. */
static int32_t attn_splits(const struct cuda_ctx *c, int64_t n_blocks, int32_t max_ctx,
                           int32_t n_tok, int32_t n_heads, int32_t hd)
{
    if (n_blocks >= c->n_sms || max_ctx < 256) return 1;
    int64_t z = (2 * (int64_t)c->n_sms + n_blocks - 1) / n_blocks;
    z = VLM_MIN(z, (int64_t)(max_ctx / 128));
    z = VLM_MIN(z, (int64_t)CUDA_ATTN_MAX_SPLITS);
    while (z > 1 && cuda_attn_ws_bytes(n_tok, n_heads, hd, (int32_t)z) > ATTN_WS_BYTES) z--;
    return (int32_t)VLM_MAX(z, 1);
}

static void cuda_op_attn_paged(void *ctx, struct tensor *o, const struct tensor *q,
                               const struct kv_layer *kv, float scale)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    STEP_LIVE(c);
    struct cuda_step *s = &c->step;
    int32_t hd = kv->head_dim, nh = (int32_t)q->ne[1], nkv = kv->n_kv_heads;
    VLM_ASSERT(q->ne[0] == hd && q->ne[2] == s->n_tokens && hd <= 256 && hd % 2 == 0);
    VLM_ASSERT(nh % nkv == 0 && kv->type == DT_BF16);
    BF(o);
    BF(q);
    if (s->n_tokens == 0) return;
    int32_t group = nh / nkv;
    int32_t rows = cuda_attn_rows_per_tile(s->max_q, group, hd);
    if (!s->d_tiles || s->tiles_group != group || s->tiles_rows != rows) {
        int32_t cap = cuda_attn_tiles_max(s->n_tokens, s->n_seqs, group, rows);
        void *dev;
        struct cuda_attn_tile *h = stage_reserve(c, (size_t)cap * sizeof *h, &dev);
        s->n_tiles = cuda_attn_tiles(h, s->h_q_start, s->n_seqs, group, rows);
        stage_commit(c, dev, h, (size_t)s->n_tiles * sizeof *h);
        s->d_tiles = dev;
        s->tiles_group = group;
        s->tiles_rows = rows;
    }
    int32_t z = attn_splits(c, (int64_t)s->n_tiles * nkv, s->max_ctx, s->n_tokens, nh, hd);
    cuda_attn_paged(o->data, q->data, kv->k, kv->v, s->d_q_start, s->d_ctx_len,
                    s->d_block_tables, s->max_blocks, kv->block_size, s->d_tiles, s->n_tiles,
                    rows, s->n_tokens, nh, nkv, hd, s->max_ctx, scale, z, c->attn_ws, c->stream);
}

static void cuda_op_attn_varlen(void *ctx, struct tensor *o, const struct tensor *q,
                                const struct tensor *k, const struct tensor *v,
                                const int32_t *cu, int32_t n_seg, float scale)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    int32_t hd = (int32_t)q->ne[0], nh = (int32_t)q->ne[1];
    VLM_ASSERT(hd <= 256 && hd % 2 == 0 && cu[n_seg] == q->ne[2] && n_seg >= 0);
    BF(o);
    BF(q);
    BF(k);
    BF(v);
    /* the same segments as the previous layer, in a staging half still in use: reuse */
    bool same = c->vl_cu_dev && c->vl_n_seg == n_seg && c->vl_stage_gen == c->stage_gen &&
                c->vl_hd == hd &&
                !memcmp(c->vl_cu_host, cu, (size_t)(n_seg + 1) * sizeof *cu);
    if (!same) {
        VLM_ASSERT(n_seg <= VL_MAX_SEG);
        memcpy(c->vl_cu_host, cu, (size_t)(n_seg + 1) * sizeof *cu);
        int32_t max_len = 0;
        for (int32_t i = 0; i < n_seg; i++) max_len = VLM_MAX(max_len, cu[i + 1] - cu[i]);
        int32_t rows = cuda_attn_rows_per_tile(max_len, 1, hd);
        int32_t cap = cuda_attn_tiles_max(cu[n_seg], n_seg, 1, rows);
        size_t cu_bytes = ((size_t)(n_seg + 1) * sizeof *cu + 15) & ~(size_t)15;
        void *dev;
        char *h = stage_reserve(c, cu_bytes + (size_t)cap * sizeof(struct cuda_attn_tile), &dev);
        memcpy(h, cu, (size_t)(n_seg + 1) * sizeof *cu);
        struct cuda_attn_tile *ht = (struct cuda_attn_tile *)(h + cu_bytes);
        c->vl_n_tiles = cuda_attn_tiles(ht, cu, n_seg, 1, rows);
        stage_commit(c, dev, h, cu_bytes + (size_t)c->vl_n_tiles * sizeof *ht);
        c->vl_cu_dev = dev;
        c->vl_tiles = (const struct cuda_attn_tile *)((char *)dev + cu_bytes);
        c->vl_n_seg = n_seg;
        c->vl_rows = rows;
        c->vl_hd = hd;
        c->vl_stage_gen = c->stage_gen;
    }
    cuda_attn_varlen(o->data, q->data, k->data, v->data, c->vl_cu_dev, c->vl_tiles,
                     c->vl_n_tiles, c->vl_rows, nh, hd, scale, c->stream);
}

static void cuda_op_gather_rows(void *ctx, struct tensor *dst, const struct tensor *src,
                                const int32_t *idx)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(dst->nb[1] == src->nb[1] && dst->type == src->type);
    int64_t n = tensor_nrows(dst);
    for (int64_t i = 0; i < n; i++) VLM_ASSERT(idx[i] >= 0 && idx[i] < tensor_nrows(src));
    if (n == 0) return;
    const int32_t *d = stage_put(c, idx, (size_t)n * sizeof *idx);
    cuda_gather_rows(dst->data, src->data, d, (int32_t)n, src->nb[1], c->stream);
}

static void cuda_op_scatter_rows(void *ctx, struct tensor *dst, const struct tensor *src,
                                 const int32_t *idx)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(dst->nb[1] == src->nb[1] && dst->type == src->type);
    int64_t n = tensor_nrows(src);
    for (int64_t i = 0; i < n; i++) VLM_ASSERT(idx[i] >= 0 && idx[i] < tensor_nrows(dst));
    if (n == 0) return;
    const int32_t *d = stage_put(c, idx, (size_t)n * sizeof *idx);
    cuda_scatter_rows(dst->data, src->data, d, (int32_t)n, src->nb[1], c->stream);
}

static void cuda_op_cast(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    int64_t n = tensor_nelem(x);
    VLM_ASSERT(tensor_nelem(y) == n);
    if (y->type == x->type) {
        if (n)
            CUDA_CHECK(cudaMemcpyAsync(y->data, x->data, tensor_nbytes(x),
                                       cudaMemcpyDeviceToDevice, c->stream));
        return;
    }
    cuda_cast(y->data, cdt(y->type), x->data, cdt(x->type), n, c->stream);
}

/* ==== Graphs ==== */

static bool cuda_graph_launch(void *ctx)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(!c->gr.capturing);
    if (!c->gr.key) return false;
    for (int32_t i = 0; i < c->gr.n; i++) {
        if (c->gr.g[i].key != c->gr.key) continue;
        CUDA_CHECK(cudaGraphLaunch(c->gr.g[i].exec, c->stream));
        return true;
    }
    return false;
}

static void cuda_graph_begin(void *ctx)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(!c->gr.capturing);
    /* a step too big for the meta region, or a full cache: the ops run eagerly */
    c->gr.passthrough = !c->gr.key || c->gr.n == GRAPH_MAX;
    if (c->gr.passthrough) return;
    CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    c->gr.capturing = true;
    c->gr.capture_bad = false;
    c->gr.arena_off = 0;
    c->step.d_tiles = NULL; /* rebuilt into the arena by the first attention op */
}

static bool cuda_graph_end(void *ctx)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    if (c->gr.passthrough) {
        c->gr.passthrough = false;
        return true; /* the ops ran eagerly: the step is done */
    }
    VLM_ASSERT(c->gr.capturing);
    c->gr.capturing = false;
    c->step.d_tiles = NULL; /* in the arena: an eager rerun must stage its own */
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    struct cuda_graph *g = &c->gr.g[c->gr.n];
    if (e == cudaSuccess && !c->gr.capture_bad)
        e = cudaGraphInstantiate(&g->exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess || c->gr.capture_bad) {
        (void)cudaGetLastError();
        log_warn("cuda: graph capture failed (%s); this batch bucket runs eagerly",
                 c->gr.capture_bad ? "staging arena full" : cudaGetErrorString(e));
        g->exec = NULL;
        return false;
    }
    g->key = c->gr.key;
    c->gr.n++;
    CUDA_CHECK(cudaGraphLaunch(g->exec, c->stream));
    return true;
}

static void cuda_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes)
{
    struct cuda_ctx *c = ctx;
    cudaSetDevice(c->device);
    if (cudaMemGetInfo(free_bytes, total_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        *free_bytes = *total_bytes = 0;
    }
}

/* The step's per-row temperatures and draws go up through the staging area. */
static void cuda_op_sample_summary(void *ctx, void *out, const struct tensor *logits,
                                   const float *inv_t, const double *u)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    int32_t n = (int32_t)logits->ne[1];
    VLM_ASSERT(logits->type == DT_F32 && logits->ne[2] == 1 && logits->ne[3] == 1);
    if (n <= 0) return;
    bool argmax_only = true; /* every row greedy without logprobs: many blocks per row */
    for (int32_t r = 0; r < n; r++) argmax_only &= inv_t[r] < 0.0f;
    if (argmax_only) {
        cuda_argmax_rows(out, logits->data, n, (int32_t)logits->ne[0],
                         logits->nb[1] / (int64_t)sizeof(float), c->stream);
        return;
    }
    const float *d_inv_t = stage_put(c, inv_t, (size_t)n * sizeof *inv_t);
    const double *d_u = stage_put(c, u, (size_t)n * sizeof *u);
    cuda_sample_summary(out, logits->data, n, (int32_t)logits->ne[0],
                        logits->nb[1] / (int64_t)sizeof(float), d_inv_t, d_u, c->stream);
}

static const struct backend_fused_ops cuda_fused = {
    .add_rmsnorm = cuda_op_add_rmsnorm,
    .norm_rope = cuda_op_norm_rope,
};

/* Structured outputs: the step's bitmask goes up through the staging area (in pieces of
 * rows that fit half of it) and one kernel sets the disallowed logits to -inf. */
static void cuda_op_mask_logits(void *ctx, struct tensor *logits, const uint32_t *mask)
{
    struct cuda_ctx *c = ctx;
    bind(c);
    VLM_ASSERT(logits->type == DT_F32 && logits->ne[2] == 1 && logits->ne[3] == 1);
    int32_t n = (int32_t)logits->ne[1], V = (int32_t)logits->ne[0], W = (V + 31) / 32;
    int64_t ld = logits->nb[1] / (int64_t)sizeof(float);
    size_t row_bytes = (size_t)W * sizeof *mask;
    int32_t piece = (int32_t)VLM_MAX((size_t)1, STAGE_BYTES / 2 / row_bytes);
    for (int32_t r0 = 0; r0 < n; r0 += piece) {
        int32_t m = VLM_MIN(piece, n - r0);
        const uint32_t *d_mask = stage_put(c, mask + (size_t)r0 * W, (size_t)m * row_bytes);
        cuda_mask_logits((float *)logits->data + (size_t)r0 * (size_t)ld, m, V, ld, d_mask,
                         c->stream);
    }
}

static const struct backend_sampling_ops cuda_sampling = {
    .sample_summary = cuda_op_sample_summary,
    .mask_logits = cuda_op_mask_logits,
};

static const struct backend_graph_ops cuda_graphs = {
    .launch = cuda_graph_launch,
    .begin = cuda_graph_begin,
    .end = cuda_graph_end,
};

static const struct backend_ops cuda_ops = {
    .name = "cuda",
    .act_type = DT_BF16,
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .release = cuda_release,
    .upload = cuda_upload,
    .download = cuda_download,
    .zero = cuda_zero,
    .sync = cuda_sync,
    .supports = cuda_supports,
    .mem_info = cuda_mem_info,
    .load_weight = cuda_load_weight,
    .set_step = cuda_set_step,
    .matmul = cuda_op_matmul,
    .add = cuda_op_add,
    .rmsnorm = cuda_op_rmsnorm,
    .layernorm = cuda_op_layernorm,
    .rope_neox = cuda_op_rope_neox,
    .rope_table = cuda_op_rope_table,
    .silu_mul = cuda_op_silu_mul,
    .gelu_erf = cuda_op_gelu_erf,
    .quick_gelu = cuda_op_quick_gelu,
    .embed = cuda_op_embed,
    .kv_store = cuda_op_kv_store,
    .attn_paged = cuda_op_attn_paged,
    .attn_varlen = cuda_op_attn_varlen,
    .gather_rows = cuda_op_gather_rows,
    .scatter_rows = cuda_op_scatter_rows,
    .cast = cuda_op_cast,
    .gelu_tanh = cuda_op_gelu_tanh,
    .im2col_3x3s2 = cuda_op_im2col_3x3s2,
    .avgpool_adaptive = cuda_op_avgpool_adaptive,
    .softmax_rows = cuda_op_softmax_rows,
    .fused = &cuda_fused,
    .sampling = &cuda_sampling,
    .graphs = &cuda_graphs,
};

/* ==== Init ==== */

/* Each step of init either succeeds or leaves c for cuda_destroy to clean up. */
static int init_fail(struct cuda_ctx *c, struct vlm_err *err, const char *what, cudaError_t e)
{
    (void)cudaGetLastError();
    cuda_destroy(c);
    return vlm_err_set(err, VLM_EDEVICE, 500, "cuda: %s failed: %s", what,
                       cudaGetErrorString(e));
}

int backend_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

int backend_cuda_init(struct backend *b, const struct backend_params *p, struct vlm_err *err)
{
    int n_dev = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        (void)cudaGetLastError();
        return vlm_err_set(err, VLM_EDEVICE, 500, "cuda: no CUDA device (%s)",
                           e != cudaSuccess ? cudaGetErrorString(e) : "count 0");
    }
    int dev = p ? p->device : 0;
    if (dev < 0 || dev >= n_dev)
        return vlm_err_set(err, VLM_EINVAL, 500, "cuda: device %d out of range (%d devices)",
                           dev, n_dev);
    struct cuda_ctx *c = xcalloc(1, sizeof *c);
    c->device = dev;
    if ((e = cudaSetDevice(dev)) != cudaSuccess) return init_fail(c, err, "cudaSetDevice", e);
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
        return init_fail(c, err, "cudaGetDeviceProperties", e);
    c->n_sms = prop.multiProcessorCount;
    c->multi_gpu = n_dev > 1;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return init_fail(c, err, "cudaStreamCreate", e);
    for (int i = 0; i < 2; i++) {
        if ((e = cudaHostAlloc((void **)&c->st.host[i], STAGE_BYTES, cudaHostAllocDefault)))
            return init_fail(c, err, "cudaHostAlloc (staging)", e);
        if ((e = cudaMalloc((void **)&c->st.dev[i], STAGE_BYTES)))
            return init_fail(c, err, "cudaMalloc (staging)", e);
        if ((e = cudaEventCreateWithFlags(&c->st.left[i], cudaEventDisableTiming)))
            return init_fail(c, err, "cudaEventCreate", e);
    }
    if ((e = cudaHostAlloc((void **)&c->gr.meta_host, GRAPH_META_BYTES, cudaHostAllocDefault)))
        return init_fail(c, err, "cudaHostAlloc (graph metadata)", e);
    if ((e = cudaMalloc((void **)&c->gr.meta_dev, GRAPH_META_BYTES)))
        return init_fail(c, err, "cudaMalloc (graph metadata)", e);
    if ((e = cudaEventCreateWithFlags(&c->gr.meta_copied, cudaEventDisableTiming)))
        return init_fail(c, err, "cudaEventCreate", e);
    size_t arenas = GRAPH_MAX * GRAPH_ARENA_BYTES;
    if ((e = cudaHostAlloc((void **)&c->gr.arenas_host, arenas, cudaHostAllocDefault)))
        return init_fail(c, err, "cudaHostAlloc (graph arenas)", e);
    if ((e = cudaMalloc((void **)&c->gr.arenas_dev, arenas)))
        return init_fail(c, err, "cudaMalloc (graph arenas)", e);
    if ((e = cudaMalloc(&c->blas_ws, BLAS_WS_BYTES)))
        return init_fail(c, err, "cudaMalloc (cuBLAS workspace)", e);
    if ((e = cudaMalloc(&c->attn_ws, ATTN_WS_BYTES)))
        return init_fail(c, err, "cudaMalloc (attention workspace)", e);
    if ((e = cudaMalloc((void **)&c->rope_inv_freq, 512 * sizeof(float))))
        return init_fail(c, err, "cudaMalloc (rope table)", e);
    c->rope_host = xmalloc(512 * sizeof(float));
    if (cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS) {
        c->blas = NULL;
        return init_fail(c, err, "cublasCreate", cudaErrorUnknown);
    }
    CUBLAS_CHECK(cublasSetStream(c->blas, c->stream));
    CUBLAS_CHECK(cublasSetWorkspace(c->blas, c->blas_ws, BLAS_WS_BYTES));
    c->load_buf = xmalloc(LOAD_CHUNK_BYTES);
    c->vl_cu_host = xmalloc((VL_MAX_SEG + 1) * sizeof *c->vl_cu_host);
    log_info("cuda: device %d %s, %.1f GiB, %d SMs, cc %d.%d", dev, prop.name,
             (double)prop.totalGlobalMem / (1 << 30), prop.multiProcessorCount, prop.major,
             prop.minor);
    b->ops = &cuda_ops;
    b->ctx = c;
    return 0;
}

/* The backend's stream, for collectives that must be ordered with its kernels (NCCL). */
void *backend_cuda_stream(const struct backend *b)
{
    return ((const struct cuda_ctx *)b->ctx)->stream;
}
