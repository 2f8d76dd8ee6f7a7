/*
 * CPU kernels: pure functions over f32 host arrays (the readable reference every other
 * backend is checked against). No allocation, no global state; threads via OpenMP (one
 * pool), OpenBLAS single-threaded inside it for f32 weights. Shapes are given innermost
 * last in the comments. Called by engine/backend_cpu.c.
 */
#ifndef VLM_KERNELS_CPU_H
#define VLM_KERNELS_CPU_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/sample.h"

/* y(M, N) = x(M, K) · w(N, K)ᵀ (+ bias(N) if non-NULL), f32 weights: OpenBLAS sgemm on
 * n_threads OpenMP threads, each a slice of the weight rows (OpenBLAS itself set to one
 * thread by the caller: cpu_set_blas_threads(1)). */
void cpu_matmul(float *y, const float *x, const float *w, const float *bias,
                int64_t M, int64_t N, int64_t K, int n_threads);
void cpu_set_blas_threads(int n);

/* ---- Products with 16-bit weights used in place (kernels/cpu/gemm16.c) ---- */

/* The instruction sets the vectorized kernels come in; CPU_ISA_REF is the plain C loop. */
enum cpu_isa { CPU_ISA_REF, CPU_ISA_AVX2, CPU_ISA_AVX512, CPU_ISA_AVX512BF16, CPU_ISA_COUNT };
/* The best this CPU runs (cpuid, once), capped by the environment variable VLM_CPU_ISA
 * (c, avx2, avx512, avx512bf16) when it names a lower one. */
enum cpu_isa cpu_isa_best(void);
const char *cpu_isa_name(enum cpu_isa isa);
/* The variant cpu_matmul_w16 runs for bf16 weights at isa (exact mode has no use for the
 * bf16 dot product: AVX-512 BF16 runs the AVX-512 widening tile). */
enum cpu_isa cpu_matmul_w16_path(enum cpu_isa isa, bool fast);
/* f rounded to the nearest bf16 (ties to even), as f32: how fast mode rounds activations */
float cpu_round_bf16(float f);

/* y(M, N) = x(M, K) · w(N, K)ᵀ (+ bias(N)), w bf16 (w_f16 false) or f16 bits. fast false:
 * exact (f32 x times the widened w, f32 sums); fast true: x rounded to bf16 first (products
 * of bf16 pairs, f32 sums; vdpbf16ps on CPU_ISA_AVX512BF16). isa: any level up to
 * cpu_isa_best(). scratch: n_threads * cpu_matmul_w16_scratch(K) bytes, 64-byte aligned
 * (unused by CPU_ISA_REF). Runs on up to n_threads OpenMP threads, split over weight rows.
 * Each y element's arithmetic does not depend on M or on its row (batch-invariant). */
void cpu_matmul_w16(float *y, const float *x, const uint16_t *w, bool w_f16, const float *bias,
                    int64_t M, int64_t N, int64_t K, bool fast, enum cpu_isa isa, void *scratch,
                    int n_threads);
int64_t cpu_matmul_w16_scratch(int64_t K);
/* Up to CPU_W16_MAX_PRODUCTS products of the same x (M, K), weights of one type (the q, k, v
 * or gate, up projections of a layer), in one OpenMP parallel region instead of one each:
 * p[q].y (M, p[q].N) = x · p[q].wᵀ (+ p[q].bias). Each y element bit-identical to
 * cpu_matmul_w16's. */
#define CPU_W16_MAX_PRODUCTS 3
struct cpu_w16_product {
    float *y;
    const uint16_t *w;
    const float *bias; /* NULL: none */
    int64_t N;
};
void cpu_matmul_w16_multi(const struct cpu_w16_product *p, int n_products, const float *x,
                          bool w_f16, int64_t M, int64_t K, bool fast, enum cpu_isa isa,
                          void *scratch, int n_threads);

/* y = a + b, n elements; y may alias a or b. */
void cpu_add(float *y, const float *a, const float *b, int64_t n);

/* per row: y = w ⊙ x / sqrt(mean(x²) + eps). x, y (rows, dim); y may alias x. */
void cpu_rmsnorm(float *y, const float *x, const float *w, int64_t rows, int64_t dim, float eps);
/* per row: y = (x - mean)/sqrt(var + eps) ⊙ w + b (biased variance). y may alias x. */
void cpu_layernorm(float *y, const float *x, const float *w, const float *b, int64_t rows,
                   int64_t dim, float eps);

/* In place on x(n_tok, n_heads, hd): rotate-half RoPE at positions pos(n_tok),
 * inv_freq_i = 1 / theta^(2i/hd). */
void cpu_rope_neox(float *x, const int32_t *pos, int64_t n_tok, int64_t n_heads, int64_t hd,
                   float theta);
/* In place on x(n, n_heads, hd): x = x·cos + rot_half(x)·sin, tables cos, sin (n, hd). */
void cpu_rope_table(float *x, const float *cos, const float *sin, int64_t n, int64_t n_heads,
                    int64_t hd);

/* y = silu(g) ⊙ u; y may alias g or u. n elements. */
void cpu_silu_mul(float *y, const float *g, const float *u, int64_t n);
/* y = 0.5 x (1 + erf(x / √2)) */
void cpu_gelu_erf(float *y, const float *x, int64_t n);
/* y = x · sigmoid(1.702 x) */
void cpu_quick_gelu(float *y, const float *x, int64_t n);

/* y = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))); y may alias x. n elements. */
void cpu_gelu_tanh(float *y, const float *x, int64_t n);
/* per row of x, y (rows, dim): y = exp(x - max) / Σ exp(x - max), f32 sums; y may alias x */
void cpu_softmax_rows(float *y, const float *x, int64_t rows, int64_t dim);

/* ---- Channels-last maps (kernels/cpu/conv.c): x (h·w, C), row iy·w + ix ---- */

/* The 3×3, stride 2, padding 1 patches: y (oh·ow, 9·C), oh = (h-1)/2 + 1, ow = (w-1)/2 + 1;
 * column c·9 + ky·3 + kx of row oy·ow + ox = x(2·oy - 1 + ky, 2·ox - 1 + kx, c), 0 outside.
 * y must not alias x. */
void cpu_im2col_3x3s2(float *y, const float *x, int32_t h, int32_t w, int64_t C);
/* Adaptive average pooling (ih, iw) -> (oh, ow): output (i, j) is the mean of rows
 * floor(i·ih/oh) .. ceil((i+1)·ih/oh) - 1, columns likewise; sums in f32 in row-major order
 * of the bin. y (oh·ow, C) must not alias x (ih·iw, C). */
void cpu_avgpool_adaptive(float *y, const float *x, int32_t ih, int32_t iw, int32_t oh,
                          int32_t ow, int64_t C);

/* y(n, dim) = table[ids[i]] */
void cpu_embed(float *y, const float *table, const int32_t *ids, int64_t n, int64_t dim);

/* kc, vc (n_slots, row); row = n_kv_heads * hd. Writes k, v (n_tok, row) at slot[i]. */
void cpu_kv_store(float *kc, float *vc, const float *k, const float *v, const int32_t *slot,
                  int64_t n_tok, int64_t row);

/* Causal attention over paged KV, hd <= 512. q, o (n_tokens, n_heads, hd). Sequence s owns token rows
 * [q_start[s], q_start[s+1]); its token i is at position ctx_len[s] - n_s + i and attends to
 * positions [0, that]. Position p of sequence s is cache slot
 * block_tables[s * max_blocks + p / block_size] * block_size + p % block_size. */
void cpu_attn_paged(float *o, const float *q, const float *kc, const float *vc,
                    const int32_t *q_start, const int32_t *ctx_len, const int32_t *block_tables,
                    int32_t n_seqs, int32_t max_blocks, int32_t block_size, int64_t n_heads,
                    int64_t n_kv_heads, int64_t hd, float scale);

/* Full attention inside each segment [cu[i], cu[i+1]). q, k, v, o (n, n_heads, hd); o must
 * not alias q, k or v. Runs on up to n_threads OpenMP threads; scratch: n_threads *
 * cpu_attn_varlen_scratch() floats (a fixed size per thread, whatever n). */
void cpu_attn_varlen(float *o, const float *q, const float *k, const float *v,
                     const int32_t *cu, int32_t n_seg, int64_t n_heads, int64_t hd, float scale,
                     float *scratch, int n_threads);
int64_t cpu_attn_varlen_scratch(void);

/* Per row r of logits (n_rows, vocab) with row stride `stride` floats: the struct
 * summary (struct sample_summary, kernels/sample.h) into out[r], with the exact loops of
 * engine/sampler.c (sequential, index order, sums in double), so sampling from it gives
 * what sampler_sample gives on the row. inv_t, u (n_rows); inv_t[r] <= 0: no draw. */
void cpu_sample_summary(struct sample_summary *out, const float *logits, int64_t n_rows,
                        int64_t vocab, int64_t stride, const float *inv_t, const double *u);

/* Greedy: the lowest index of the largest value of l (n >= 1); NaNs never win (the loop
 * `if (l[i] > l[best]) best = i` from best = 0, vectorized for isa >= CPU_ISA_AVX512). */
int32_t cpu_argmax(const float *l, int32_t n, enum cpu_isa isa);

/* Structured outputs: row[t] = -inf where bit t % 32 of mask[t / 32] is clear (the token is
 * not allowed), row (vocab) in place. Words of all ones are skipped; the rest is branch-free
 * (AVX-512 or AVX2 blends for isa at those levels, up to cpu_isa_best(); the scalar loop
 * for CPU_ISA_REF), the same floats in every variant. */
void cpu_mask_row(float *row, const uint32_t *mask, int32_t vocab, enum cpu_isa isa);

#endif
