/*
 * CUDA kernels: C-callable host launchers over device arrays (kernels/cuda/<op>.cu, one op
 * family per file). Called by engine/backend_cuda.c, and directly by tests/ops/test_ops.c for
 * the fused variants the backend table does not have yet.
 *
 * Conventions shared by every launcher:
 *   - pointers are device pointers; activations, weights and the KV cache are bf16 (passed as
 *     void *, __nv_bfloat16 on the device side), with f32 accumulation everywhere;
 *   - shapes are in the comments, innermost last, as in kernels/cpu.h;
 *   - a launcher only enqueues on the given stream: it never allocates and never syncs;
 *   - launch errors are caught by CUDA_CHECK(cudaGetLastError()) after each launch in debug
 *     builds (NDEBUG unset) and once per step by the backend in release builds.
 * Semantics match the CPU kernels (kernels/cpu.h) element for element, up to bf16 rounding
 * of the outputs.
 */
#ifndef VLM_KERNELS_CUDA_H
#define VLM_KERNELS_CUDA_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "kernels/sample.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Aborts with the call, file, line and CUDA error name: a failed CUDA call is a broken
 * invariant here (bad launch, illegal address), never bad input. */
#define CUDA_CHECK(call)                                                                     \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "valley: %s failed at %s:%d: %s (%s)\n", #call, __FILE__,        \
                    __LINE__, cudaGetErrorString(e_), cudaGetErrorName(e_));                 \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* Same for cuBLAS(Lt); the user includes <cublas_v2.h> (or cublasLt.h). */
#define CUBLAS_CHECK(call)                                                                   \
    do {                                                                                     \
        int s_ = (int)(call);                                                                \
        if (s_ != 0) {                                                                       \
            fprintf(stderr, "valley: %s failed at %s:%d: cublas status %d\n", #call,         \
                    __FILE__, __LINE__, s_);                                                 \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* Element types the generic launchers (cast, bias) accept. */
enum cuda_dtype { CUDA_DT_F32 = 0, CUDA_DT_BF16 = 1, CUDA_DT_F16 = 2 };

/* ==== norm.cu ==== */

/* per row: y = w ⊙ x / sqrt(mean(x²) + eps). x, y (rows, dim) bf16, w (dim) bf16; y may
 * alias x. */
void cuda_rmsnorm(void *y, const void *x, const void *w, int64_t rows, int32_t dim, float eps,
                  cudaStream_t s);
/* Fused residual add + RMS norm: res = res + d (rounded to bf16, as add then norm would);
 * y = rmsnorm(res) ⊙ w. res, d, y (rows, dim) bf16; y may alias d (not res). */
void cuda_add_rmsnorm(void *res, void *y, const void *d, const void *w, int64_t rows,
                      int32_t dim, float eps, cudaStream_t s);
/* per row: y = (x - mean)/sqrt(var + eps) ⊙ w + b (biased variance). bf16; y may alias x. */
void cuda_layernorm(void *y, const void *x, const void *w, const void *b, int64_t rows,
                    int32_t dim, float eps, cudaStream_t s);

/* ==== rope.cu ==== */

/* In place on x (n_tok, n_heads, hd) bf16: rotate-half RoPE at positions pos (n_tok) device
 * i32 with inv_freq (hd/2) device f32, inv_freq_i = 1/theta^(2i/hd) computed on the host by
 * cuda_rope_inv_freq() (the CPU's powf: angles then match the reference bit for bit before
 * sincosf, which matters at positions in the tens of thousands). hd even, <= 1024. */
void cuda_rope_neox(void *x, const int32_t *pos, const float *inv_freq, int32_t n_tok,
                    int32_t n_heads, int32_t hd, cudaStream_t s);
/* Fills inv_freq (hd/2) on the host: 1 / powf(theta, 2i/hd), as kernels/cpu/rope.c. */
void cuda_rope_inv_freq(float *inv_freq, int32_t hd, float theta);
/* In place on x (n, n_heads, hd) bf16: x = x·cos + rot_half(x)·sin, cos, sin (n, hd) f32. */
void cuda_rope_table(void *x, const float *cos, const float *sin, int32_t n, int32_t n_heads,
                     int32_t hd, cudaStream_t s);
/* Fused per-head RMS norm (w (hd) bf16) then rotate-half RoPE, in place on x (n_tok,
 * n_heads, hd) bf16: the q_norm/k_norm + rope of a Qwen3 layer in one pass. hd <= 256. */
void cuda_qk_norm_rope(void *x, const void *w, const int32_t *pos, const float *inv_freq,
                       int32_t n_tok, int32_t n_heads, int32_t hd, float eps, cudaStream_t s);

/* ==== act.cu ==== */

/* y = a + b, n elements bf16; y may alias a or b. */
void cuda_add(void *y, const void *a, const void *b, int64_t n, cudaStream_t s);
/* y = silu(g) ⊙ u, n elements bf16; y may alias g or u. */
void cuda_silu_mul(void *y, const void *g, const void *u, int64_t n, cudaStream_t s);
/* y = 0.5 x (1 + erf(x/√2)), bf16, may alias. */
void cuda_gelu_erf(void *y, const void *x, int64_t n, cudaStream_t s);
/* y = x · sigmoid(1.702 x), bf16, may alias. */
void cuda_quick_gelu(void *y, const void *x, int64_t n, cudaStream_t s);
/* y = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), bf16, may alias. */
void cuda_gelu_tanh(void *y, const void *x, int64_t n, cudaStream_t s);

/* y (rows, cols) of type yt += bias (cols) bf16, in place. */
void cuda_add_bias(void *y, enum cuda_dtype yt, const void *bias, int64_t rows, int32_t cols,
                   cudaStream_t s);

/* Fills p (n bf16) with a deterministic hash of (seed, i) mapped to [lo, hi): random
 * weights for benchmarks, made on the device so 16 GB need no host round trip. */
void cuda_fill_uniform(void *p, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t s);

/* ==== softmax.cu ==== */

/* per row of x, y (rows, dim) bf16: y = exp(x - max) / Σ exp(x - max), f32 sums; one block
 * per row; y may alias x. */
void cuda_softmax_rows(void *y, const void *x, int64_t rows, int32_t dim, cudaStream_t s);

/* ==== conv.cu: channels-last maps x (h·w, C) bf16, row iy·w + ix ==== */

/* The 3×3 stride-2 padding-1 patches, semantics of cpu_im2col_3x3s2: y (oh·ow, 9·C) bf16,
 * oh = (h-1)/2 + 1, ow = (w-1)/2 + 1. y must not alias x. */
void cuda_im2col_3x3s2(void *y, const void *x, int32_t h, int32_t w, int32_t C, cudaStream_t s);
/* Adaptive average pooling (ih, iw) -> (oh, ow), semantics of cpu_avgpool_adaptive (f32
 * sums in the same order): y (oh·ow, C) bf16, must not alias x (ih·iw, C). */
void cuda_avgpool_adaptive(void *y, const void *x, int32_t ih, int32_t iw, int32_t oh,
                           int32_t ow, int32_t C, cudaStream_t s);

/* ==== embed.cu ==== */

/* y (n, dim) bf16 = table[ids[i]], table (vocab, dim) bf16, ids (n) device i32. */
void cuda_embed(void *y, const void *table, const int32_t *ids, int32_t n, int32_t dim,
                cudaStream_t s);
/* dst row i = src row idx[i], i < n; rows of row_bytes bytes; idx (n) device i32. */
void cuda_gather_rows(void *dst, const void *src, const int32_t *idx, int32_t n,
                      int64_t row_bytes, cudaStream_t s);
/* dst row idx[i] = src row i, i < n. */
void cuda_scatter_rows(void *dst, const void *src, const int32_t *idx, int32_t n,
                       int64_t row_bytes, cudaStream_t s);
/* y = x converted from xt to yt, n elements (round to nearest even). */
void cuda_cast(void *y, enum cuda_dtype yt, const void *x, enum cuda_dtype xt, int64_t n,
               cudaStream_t s);

/* ==== kv.cu ==== */

/* kc, vc (n_slots, row) bf16; writes k, v (n_tok, row) bf16 at rows slot[i] (device i32). */
void cuda_kv_store(void *kc, void *vc, const void *k, const void *v, const int32_t *slot,
                   int32_t n_tok, int32_t row, cudaStream_t s);

/* ==== attn_paged.cu / attn_varlen.cu ====
 *
 * Both attention launchers run the same tiled kernel (online softmax, f32 accumulation, K/V
 * tiles staged in shared memory and shared by every query row of the tile). Work is a list
 * of tiles, built on the host by cuda_attn_tiles() and uploaded by the caller: one tile =
 * up to CUDA_ATTN_ROWS query rows of one sequence (or segment) that share one KV head,
 * rows numbered r = token_in_seq * group + head_in_group, so a decode step with GQA group g
 * reads each KV block once for its g query heads. */
#define CUDA_ATTN_ROWS 16     /* query rows per tile, CUDA-core kernel (max) */
#define CUDA_ATTN_MMA 1       /* 0: never use the tensor-core kernel (64/128-row tiles) */
#define CUDA_ATTN_MAX_SPLITS 32

struct cuda_attn_tile {
    int32_t seq;  /* sequence (paged) or segment (varlen) */
    int32_t row0; /* first row of the tile in that sequence's row numbering */
};

/* Fills tiles for n_seqs sequences whose new-token counts are q_start[s+1] - q_start[s]
 * (host), with rows_per_tile rows each, group query heads per KV head. Returns the count;
 * tiles must hold cuda_attn_tiles_max(...) entries. */
int32_t cuda_attn_tiles(struct cuda_attn_tile *tiles, const int32_t *q_start, int32_t n_seqs,
                        int32_t group, int32_t rows_per_tile);
int32_t cuda_attn_tiles_max(int32_t n_tokens, int32_t n_seqs, int32_t group,
                            int32_t rows_per_tile);
/* The rows per tile the launchers use for a step whose longest sequence has max_q new
 * tokens: 128 (hd 80, 128), else 64, when that many rows exist and hd suits the
 * tensor-core kernel (prefill, ViT), else up to 16 for the CUDA-core kernel (decode: just
 * the group, so no warp is wasted on missing rows). The tile size picks the kernel. */
int32_t cuda_attn_rows_per_tile(int32_t max_q, int32_t group, int32_t hd);

/* Causal attention over the paged cache, semantics of cpu_attn_paged. o, q (n_tok, n_heads,
 * hd) bf16; kc, vc (n_blocks * block_size, n_kv_heads, hd) bf16; q_start (n_seqs + 1),
 * ctx_len (n_seqs), block_tables (n_seqs, max_blocks), tiles (n_tiles): device arrays.
 * max_ctx: the largest ctx_len (host-known). n_splits > 1 splits every tile's context into
 * n_splits ranges computed by separate blocks (decode with few sequences), whose partial
 * results go to ws (at least cuda_attn_ws_bytes(n_tok, n_heads, hd, n_splits) bytes) and are
 * merged by a second kernel. hd even, <= 256. */
void cuda_attn_paged(void *o, const void *q, const void *kc, const void *vc,
                     const int32_t *q_start, const int32_t *ctx_len,
                     const int32_t *block_tables, int32_t max_blocks, int32_t block_size,
                     const struct cuda_attn_tile *tiles, int32_t n_tiles, int32_t rows_per_tile,
                     int32_t n_tok, int32_t n_heads, int32_t n_kv_heads, int32_t hd,
                     int32_t max_ctx, float scale, int32_t n_splits, void *ws, cudaStream_t s);
size_t cuda_attn_ws_bytes(int32_t n_tok, int32_t n_heads, int32_t hd, int32_t n_splits);

/* Full attention inside each segment [cu[i], cu[i+1]), semantics of cpu_attn_varlen.
 * o, q, k, v (n, n_heads, hd) bf16; cu (n_seg + 1) and tiles (built with group 1) device
 * arrays. hd even, <= 256. */
void cuda_attn_varlen(void *o, const void *q, const void *k, const void *v, const int32_t *cu,
                      const struct cuda_attn_tile *tiles, int32_t n_tiles,
                      int32_t rows_per_tile, int32_t n_heads, int32_t hd, float scale,
                      cudaStream_t s);

/* ==== sample.cu ==== */

/* Per row r of logits (n_rows, vocab) f32 with row stride `stride` floats: the struct
 * summary (struct sample_summary, kernels/sample.h) into out[r]; inv_t, u (n_rows) device arrays,
 * inv_t[r] <= 0: no draw. One block per row. Semantics of cpu_sample_summary; the sums are
 * associated differently (lse and total within double rounding; a draw whose target lies
 * within rounding of a boundary may pick the neighbouring token). */
void cuda_sample_summary(struct sample_summary *out, const float *logits, int32_t n_rows,
                         int32_t vocab, int64_t stride, const float *inv_t, const double *u,
                         cudaStream_t s);

/* The greedy token alone (kernels/sample.h, inv_t < 0) for every row: argmax and max of each
 * row into out[r], the other fields as cpu_sample_summary leaves them. Many blocks per row
 * (coalesced slices), their partials combined in out[r]'s own candidate arrays. */
void cuda_argmax_rows(struct sample_summary *out, const float *logits, int32_t n_rows,
                      int32_t vocab, int64_t stride, cudaStream_t s);

/* Structured outputs: logits (n_rows, vocab) f32 with row stride `stride` floats; entry t
 * of row r becomes -inf where bit t%32 of mask[r * ((vocab + 31) / 32) + t/32] is clear
 * (mask: device array). */
void cuda_mask_logits(float *logits, int32_t n_rows, int32_t vocab, int64_t stride,
                      const uint32_t *mask, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
