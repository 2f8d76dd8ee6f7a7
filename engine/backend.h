/*
 * backend: the table of operations that every compute backend implements (CPU now, CUDA
 * next), and the tensor view they operate on. The forward passes (qwen3.c, vit.c) are
 * written once over this table. Shape follows ggml-backend (ops + context); ops are
 * called eagerly, in order, on the backend's stream.
 *
 * Rules for implementations:
 *   - ops never allocate and never synchronize; memory comes from alloc() at init time;
 *   - every tensor passed to an op lives in this backend's memory;
 *   - per-step metadata (positions, KV slots, block tables) is handed over once per step
 *     with set_step() and used by rope / kv_store / attn_paged;
 *   - outputs may alias inputs only where an op says so.
 * Called from one engine thread per backend instance.
 */
#ifndef VLM_BACKEND_H
#define VLM_BACKEND_H

#include "engine/base.h"

enum dtype { DT_F32, DT_BF16, DT_F16, DT_I32, DT_COUNT };
size_t dtype_size(enum dtype t);
const char *dtype_name(enum dtype t);

/* A view; never owns memory. ne[0] is the innermost (contiguous) dimension. Tensors handed
 * to ops are contiguous unless an op says otherwise: nb[0] = elem size, nb[i] = nb[i-1]*ne[i-1]. */
struct tensor {
    void *data;     /* borrowed: host or device pointer, per backend */
    enum dtype type;
    int64_t ne[4];  /* elements per dim, innermost first */
    int64_t nb[4];  /* stride in bytes per dim */
};
struct tensor tensor_make(void *data, enum dtype type, int64_t ne0, int64_t ne1, int64_t ne2,
                          int64_t ne3); /* contiguous; pass 1 for unused dims */
static inline int64_t tensor_nelem(const struct tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}
static inline size_t tensor_nbytes(const struct tensor *t)
{
    return (size_t)tensor_nelem(t) * dtype_size(t->type);
}
static inline int64_t tensor_nrows(const struct tensor *t)
{
    return t->ne[1] * t->ne[2] * t->ne[3];
}
/* Rows [r0, r0+n) of a 2-D view (ne[1] = rows), same row width. */
struct tensor tensor_rows(const struct tensor *t, int64_t r0, int64_t n);

/* One layer's paged KV cache. K and V each (n_blocks, block_size, n_kv_heads, head_dim):
 * token slot s = block * block_size + offset lives at row s of a (n_blocks*block_size,
 * n_kv_heads*head_dim) matrix. Block 0 is never handed to a request (the null block). */
struct kv_layer {
    void *k;            /* (n_blocks, block_size, n_kv_heads, head_dim), owned by the engine */
    void *v;            /* same */
    enum dtype type;
    int32_t n_blocks, block_size, n_kv_heads, head_dim;
};

/* Per-step metadata, host arrays, borrowed for the duration of set_step(). Tokens of all
 * sequences are concatenated: sequence s owns rows [q_start[s], q_start[s+1]) of every
 * activation; its first new token has position ctx_len[s] - (q_start[s+1] - q_start[s]).
 * Attention for a token at position p covers positions [0, p] of its own sequence. */
struct step_meta {
    int32_t n_seqs, n_tokens;
    const int32_t *tokens;       /* (n_tokens) ids; image rows hold any valid id (overwritten) */
    const int32_t *pos;          /* (n_tokens) position of each token */
    const int32_t *slot;         /* (n_tokens) KV slot = block * block_size + offset */
    const int32_t *q_start;      /* (n_seqs + 1) prefix sums of new tokens per sequence */
    const int32_t *ctx_len;      /* (n_seqs) tokens in the cache after this step */
    const int32_t *block_tables; /* (n_seqs, max_blocks) block ids, row-major */
    int32_t max_blocks;
    /* Graph steps (see struct backend_graph_ops): nonzero = this step's op sequence and launch
     * shapes depend only on this key, so a graph recorded for it can replay the step. The
     * metadata then goes to fixed addresses, and launch shapes use max_ctx. 0: eager. */
    uint64_t graph_key;
    int32_t max_ctx; /* graph steps: an upper bound of ctx_len[] that shapes the launches */
};

enum op {
    OP_MATMUL, OP_ADD, OP_RMSNORM, OP_LAYERNORM, OP_ROPE_NEOX, OP_ROPE_TABLE, OP_SILU_MUL,
    OP_GELU_ERF, OP_QUICK_GELU, OP_EMBED, OP_KV_STORE, OP_ATTN_PAGED, OP_ATTN_VARLEN,
    OP_GATHER_ROWS, OP_SCATTER_ROWS, OP_CAST, OP_GELU_TANH, OP_IM2COL_3X3S2, OP_AVGPOOL_ADAPTIVE,
    OP_SOFTMAX_ROWS, OP_COUNT
};

/* ---- The optional families. A backend has a family whole or not at all: its pointer in
 * struct backend_ops is NULL, or a table with every entry set. ---- */

/* Fused ops: one pass where the plain ops take two. NULL: the forward passes call the plain
 * ops instead. */
struct backend_fused_ops {
    /* the residual add fused with the next norm, per row of ne[0]:
     * res = res + d; y = w ⊙ res / sqrt(mean(res²) + eps); y may alias d */
    void (*add_rmsnorm)(void *ctx, struct tensor *res, struct tensor *y, const struct tensor *d,
                        const struct tensor *w, float eps);
    /* in place on x(n_tokens, n_heads, head_dim): per-head RMS norm (w (head_dim)) then
     * rope_neox, the q_norm/k_norm + RoPE of a Qwen3 layer in one pass */
    void (*norm_rope)(void *ctx, struct tensor *x, const struct tensor *w, float theta,
                      float eps);
    /* n (1..3) products of one x: y[i] = x · w[i]ᵀ (+ b[i], NULL: none), each element as
     * matmul computes it, in one pass (the CPU: one parallel region, x packed once).
     * NULL: the caller calls matmul n times. */
    void (*matmul_n)(void *ctx, int n, struct tensor *const y[], const struct tensor *x,
                     const struct tensor *const w[], const struct tensor *const b[]);
};

/* Device sampling. NULL: the engine downloads the sampled rows. */
struct backend_sampling_ops {
    /* per row r of logits (n_rows, vocab) f32, the summary the host sampler finishes from
     * (struct sample_summary, kernels/sample.h: max/argmax, raw log-sum-exp, the
     * SAMPLE_SUMMARY_K best in rank order and, where inv_t[r] > 0, the untruncated draw with
     * uniform u[r]) into out (n_rows) in backend memory. inv_t, u are host arrays (n_rows);
     * inv_t[r] < 0: the greedy token alone (sample.h). logits is only read. */
    void (*sample_summary)(void *ctx, void *out, const struct tensor *logits,
                           const float *inv_t, const double *u);
    /* Structured outputs: in logits (n_rows, vocab) f32, every entry of row r whose bit is
     * clear in mask row r becomes -inf (sampler_apply_mask on the backend). mask is a host
     * array (n_rows, (vocab + 31) / 32) uint32, bit t%32 of word t/32, uploaded by the call.
     * NULL: the engine masks downloaded rows instead. */
    void (*mask_logits)(void *ctx, struct tensor *logits, const uint32_t *mask);
};

/* Graphs. A step whose set_step() had a nonzero graph_key can run as a recorded graph (CUDA
 * graphs: one launch instead of hundreds). After set_step():
 *   launch(): true when a graph for the key exists and was enqueued: the step's ops must not
 *     be called. false: the caller records one with
 *   begin(); the step's ops; end(): the ops are recorded, not run, then the graph is enqueued
 *     (true). false: recording failed (or the graph cache is full), the recorded ops were
 *     dropped and the caller must call them again, eagerly.
 * Between begin and end only ops may be called (no alloc, upload, download, sync). What an op
 * copies from host arrays (gather/scatter indices, ViT segments) is frozen in the graph; the
 * step metadata is not (set_step refreshes it at the same addresses). NULL: every step runs
 * eagerly. */
struct backend_graph_ops {
    bool (*launch)(void *ctx);
    void (*begin)(void *ctx);
    bool (*end)(void *ctx);
};

/* The table: every entry is required except those marked optional (mem_info, map_weight)
 * and the three optional families at the end. */
struct backend_ops {
    const char *name;
    enum dtype act_type;          /* dtype activations are computed in (CPU: f32) */
    void  (*destroy)(void *ctx);
    /* memory; init time only. alloc returns NULL on failure. */
    void *(*alloc)(void *ctx, size_t bytes);
    void  (*release)(void *ctx, void *p);
    void  (*upload)(void *ctx, void *dst, const void *src_host, size_t n);
    void  (*download)(void *ctx, void *dst_host, const void *src, size_t n);
    void  (*zero)(void *ctx, void *dst, size_t n);
    void  (*sync)(void *ctx);
    bool  (*supports)(void *ctx, enum op op, enum dtype type);
    /* (optional, NULL on host backends) free and total bytes of device memory now */
    void  (*mem_info)(void *ctx, size_t *free_bytes, size_t *total_bytes);
    /* Makes a backend-resident copy of a host weight (any of f32/bf16/f16), converted to the
     * dtype this backend computes weights in. Returns a tensor with .data from alloc(), or
     * .data == NULL on failure. src may be a strided view of rows (TP slices). */
    struct tensor (*load_weight)(void *ctx, const struct tensor *src_host);
    /* (optional) load_weight for a src that stays valid and unchanged until the backend is
     * destroyed (a view into the memory-mapped checkpoint): the backend may use it in place
     * instead of copying it. release() of the result is still called (and then ignored).
     * NULL: the caller uses load_weight (backend_map_weight() below picks). */
    struct tensor (*map_weight)(void *ctx, const struct tensor *src_host);

    /* ---- ops ---- */
    void (*set_step)(void *ctx, const struct step_meta *m);
    /* y(n, N) = x(n, K) · w(N, K)ᵀ (+ bias(N)) */
    void (*matmul)(void *ctx, struct tensor *y, const struct tensor *x, const struct tensor *w,
                   const struct tensor *bias);
    /* y = a + b (same shape; y may alias a or b) */
    void (*add)(void *ctx, struct tensor *y, const struct tensor *a, const struct tensor *b);
    /* per row of ne[0]: y = w ⊙ x / sqrt(mean(x²) + eps); y may alias x */
    void (*rmsnorm)(void *ctx, struct tensor *y, const struct tensor *x, const struct tensor *w,
                    float eps);
    /* per row of ne[0]: y = (x - mean) / sqrt(var + eps) ⊙ w + b; y may alias x */
    void (*layernorm)(void *ctx, struct tensor *y, const struct tensor *x, const struct tensor *w,
                      const struct tensor *b, float eps);
    /* in place on x(n_tokens, n_heads, head_dim): rotate-half RoPE, positions from set_step,
     * inv_freq_i = theta^(-2i/head_dim) */
    void (*rope_neox)(void *ctx, struct tensor *x, float theta);
    /* in place on x(n, n_heads, head_dim): x = x·cos + rot_half(x)·sin with per-row tables
     * cos, sin (n, head_dim) f32 */
    void (*rope_table)(void *ctx, struct tensor *x, const struct tensor *cos,
                       const struct tensor *sin);
    /* y(n, F) = silu(gate) ⊙ up; y may alias gate */
    void (*silu_mul)(void *ctx, struct tensor *y, const struct tensor *gate,
                     const struct tensor *up);
    void (*gelu_erf)(void *ctx, struct tensor *y, const struct tensor *x);   /* may alias */
    void (*quick_gelu)(void *ctx, struct tensor *y, const struct tensor *x); /* may alias */
    /* y(n_tokens, dim) = table[tokens[i]] with tokens from set_step */
    void (*embed)(void *ctx, struct tensor *y, const struct tensor *table);
    /* writes k, v (n_tokens, n_kv_heads, head_dim) into the cache at the step's slots */
    void (*kv_store)(void *ctx, struct kv_layer *kv, const struct tensor *k,
                     const struct tensor *v);
    /* o(n_tokens, n_heads, head_dim) = causal softmax(q·Kᵀ·scale)·V over each sequence's
     * block table (positions [0, pos]); query head h reads KV head h / (n_heads/n_kv_heads) */
    void (*attn_paged)(void *ctx, struct tensor *o, const struct tensor *q,
                       const struct kv_layer *kv, float scale);
    /* o(n, n_heads, head_dim): full (non-causal) attention inside each segment
     * [cu_seqlens[i], cu_seqlens[i+1]); q, k, v (n, n_heads, head_dim); cu_seqlens is a host
     * array of n_seg + 1 entries */
    void (*attn_varlen)(void *ctx, struct tensor *o, const struct tensor *q,
                        const struct tensor *k, const struct tensor *v,
                        const int32_t *cu_seqlens, int32_t n_seg, float scale);
    /* dst row i = src row idx[i] (idx host, n = dst rows) */
    void (*gather_rows)(void *ctx, struct tensor *dst, const struct tensor *src,
                        const int32_t *idx);
    /* dst row idx[i] = src row i (idx host, n = src rows) */
    void (*scatter_rows)(void *ctx, struct tensor *dst, const struct tensor *src,
                         const int32_t *idx);
    /* y = x converted to y's dtype (same shape) */
    void (*cast)(void *ctx, struct tensor *y, const struct tensor *x);

    /* ---- the SigLIP tower and the ConvAdapter projector (Valley2) ---- */
    /* y = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), PyTorch's gelu(approximate="tanh");
     * may alias */
    void (*gelu_tanh)(void *ctx, struct tensor *y, const struct tensor *x);
    /* The patches of a 3×3 convolution with stride 2 and zero padding 1, so that y · Wᵀ with
     * the conv weight [Cout, Cin, 3, 3] viewed as [Cout, Cin·9] is that convolution.
     * x (h·w, C): a channels-last map, row iy·w + ix. y (oh·ow, 9·C), oh = (h - 1)/2 + 1,
     * ow = (w - 1)/2 + 1: column c·9 + ky·3 + kx of row oy·ow + ox holds x at
     * (2·oy - 1 + ky, 2·ox - 1 + kx), channel c, or 0 outside the map. y must not alias x. */
    void (*im2col_3x3s2)(void *ctx, struct tensor *y, const struct tensor *x, int32_t h,
                         int32_t w);
    /* Adaptive average pooling of x (ih·iw, C), channels-last, to y (oh·ow, C): output (i, j)
     * is the mean over rows floor(i·ih/oh) .. ceil((i+1)·ih/oh) - 1 and columns
     * floor(j·iw/ow) .. ceil((j+1)·iw/ow) - 1 (PyTorch's adaptive_avg_pool2d; bins may
     * overlap). Sums in f32. y must not alias x. */
    void (*avgpool_adaptive)(void *ctx, struct tensor *y, const struct tensor *x, int32_t ih,
                             int32_t iw, int32_t oh, int32_t ow);
    /* per row of ne[0]: y = exp(x - max) / Σ exp(x - max), f32 accumulation; may alias */
    void (*softmax_rows)(void *ctx, struct tensor *y, const struct tensor *x);

    /* ---- optional families (above) ---- */
    const struct backend_fused_ops *fused;
    const struct backend_sampling_ops *sampling;
    const struct backend_graph_ops *graphs;
};

struct backend {
    const struct backend_ops *ops;
    void *ctx; /* owned; ops->destroy frees it */
};

/* How the CPU backend computes its products (--numerics). exact: f32 activations times
 * weights widened to f32 as they are read (bf16 and f16 widen exactly), f32 sums: the f32
 * reference. fast: activations rounded to bf16 at each product, bf16 products summed in f32
 * (vdpbf16ps where the CPU has it), as the GPUs compute. Other backends ignore it. */
enum numerics { NUMERICS_EXACT, NUMERICS_FAST };
const char *numerics_name(enum numerics n);
/* "exact" / "fast" -> *out; false for anything else */
bool numerics_parse(const char *s, enum numerics *out);

struct backend_params {
    int n_threads;          /* CPU: worker threads (0 = all cores) */
    int device;             /* CUDA: device ordinal */
    enum numerics numerics; /* CPU: products (zero value: exact) */
};

/* What backend_emulate() adds to a host backend, so that device-only paths of the engine
 * run, and are tested, on the CPU (backend_emulate.c). */
struct backend_emulation {
    bool graphs;         /* graph ops that record op calls and replay them, freezing copied
                          * host arrays as CUDA graphs do */
    size_t device_bytes; /* > 0: a device of this many bytes: alloc fails past it, mem_info
                          * reports it (the engine's memory plan) */
};
/* Wraps b (which keeps working underneath) in a backend with what e asks for. b must not
 * have graph ops or mem_info. Never fails. */
void backend_emulate(struct backend *b, const struct backend_emulation *e);

int backend_cpu_init(struct backend *b, const struct backend_params *p, struct vlm_err *err);

/* What the user asked for (--backend), and the one rule both valley-server and
 * valley-generate follow: auto is CUDA when this build has it and a device is visible,
 * else the CPU; cuda insists (VLM_EINVAL in a build without CUDA). Sets *use_cuda. */
enum backend_choice { BACKEND_AUTO, BACKEND_CPU, BACKEND_CUDA };
int backend_pick(enum backend_choice want, bool *use_cuda, struct vlm_err *err);

#ifdef VLM_HAVE_CUDA
int backend_cuda_init(struct backend *b, const struct backend_params *p, struct vlm_err *err);
/* Visible CUDA devices; 0 when there is no driver or no device (never an error). */
int backend_cuda_device_count(void);
/* The CUDA backend's stream (a cudaStream_t), for work that must be ordered with its ops:
 * NCCL collectives, and tests calling kernels/cuda.h launchers directly. */
void *backend_cuda_stream(const struct backend *b);
#endif
/* ops->map_weight when the backend has one, else ops->load_weight. */
struct tensor backend_map_weight(const struct backend *b, const struct tensor *src_host);

/* ==== Helpers for the encoders (engine/vit.c, engine/siglip.c) ====
 * `who` names the caller in error messages ("vit: out of backend memory ..."). */

/* One checkpoint tensor to map or convert (backend_map_weight) into *dst; `name` for errors. */
struct backend_weight {
    struct tensor *dst;
    const struct tensor *src;
    const char *name;
};
/* Maps the n weights in order; on failure the ones already mapped stay in their dst (the
 * caller's destroy releases them) and err names the first that failed (503). */
int backend_map_weights(const struct backend *b, const struct backend_weight *w, size_t n,
                        const char *who, struct vlm_err *err);
/* One scratch allocation of max(rows, 1) x cols elements of type t; 503 when out of memory. */
int backend_scratch(const struct backend *b, void **dst, int64_t rows, int64_t cols, enum dtype t,
                    const char *who, struct vlm_err *err);
/* ops->release for a buffer from ops->alloc, load_weight or map_weight; NULL is a no-op. */
void backend_release(const struct backend *b, void *p);
/* backend_release of t->data, then t->data = NULL. */
void backend_release_tensor(const struct backend *b, struct tensor *t);
/* Frees the backend; accepts a zeroed struct. */
void backend_destroy(struct backend *b);

#endif
