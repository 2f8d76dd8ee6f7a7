/*
 * Attention: causal over the paged KV cache (decoder) and full attention inside segments
 * (vision tower), both with an online softmax (running max and denominator, accumulator
 * rescaled when the max grows), so no buffer grows with the context. The paged kernel takes
 * all query heads of a GQA group, for a tile of tokens, against each chunk of keys; the
 * segment kernel works in sgemm-shaped tiles. Scores and sums in f32.
 */
#include "kernels/cpu.h"

#include <math.h>

#define HD_MAX 512

/*
 * Paged attention, one work item per (sequence, KV head, tile of query tokens): the item's
 * rows are every query head of the GQA group for each token of the tile (up to PG_ROWS), and
 * it walks the sequence's keys once, in chunks of up to PG_CHUNK keys that never cross a
 * KV block, each key and value row loaded once for all rows. Per row and chunk: scores,
 * causal mask, the running max / sum / accumulator rescaled once (not per key).
 * A row's arithmetic depends only on its own position and the fixed chunk boundaries (a
 * row stops at the last chunk that holds its position; masked keys never enter the sums),
 * not on the tile it shares or the other sequences of the step: batch-invariant.
 */
enum { PG_ROWS = 32, PG_CHUNK = 32 };

#define ALWAYS static inline __attribute__((always_inline))
#define VLM_MIN_I64(a, b) ((int64_t)(a) < (int64_t)(b) ? (int64_t)(a) : (int64_t)(b))

struct pg_args {
    float *o;
    const float *q, *kc, *vc;
    const int32_t *q_start, *ctx_len, *block_tables;
    int32_t max_blocks, block_size;
    int64_t n_heads, n_kv_heads, hd, group;
    int64_t gn;   /* query heads per item: the group, or PG_ROWS of it when it is larger */
    int64_t n_sub; /* items per (token tile, KV head): ceil(group / gn) */
    int64_t tile; /* tokens per item: PG_ROWS / gn */
    float scale;
};

ALWAYS float pg_dot(const float *a, const float *b, int64_t n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < n; d++) s += a[d] * b[d];
    return s;
}

/* One item: sequence s, query heads [h0, h0 + G) (all of KV head kh), query tokens
 * [t0, t0 + nt) of the sequence. */
ALWAYS void pg_item_body(const struct pg_args *A, int32_t s, int64_t kh, int64_t h0, int64_t G,
                         int64_t t0, int64_t nt)
{
    int64_t hd = A->hd, R = nt * G, kv_row = A->n_kv_heads * hd;
    int32_t n_s = A->q_start[s + 1] - A->q_start[s];
    int32_t p0 = A->ctx_len[s] - n_s + (int32_t)t0; /* position of the tile's first token */
    const int32_t *bt = A->block_tables + (int64_t)s * A->max_blocks;
    float acc[PG_ROWS][HD_MAX], mx[PG_ROWS], sum[PG_ROWS], sc[PG_CHUNK];
    const float *qr[PG_ROWS];
    int32_t pos[PG_ROWS];
    for (int64_t r = 0; r < R; r++) {
        int64_t tok = A->q_start[s] + t0 + r / G, h = h0 + r % G;
        qr[r] = A->q + (tok * A->n_heads + h) * hd;
        pos[r] = p0 + (int32_t)(r / G);
        mx[r] = -INFINITY;
        sum[r] = 0.0f;
        for (int64_t d = 0; d < hd; d++) acc[r][d] = 0.0f;
    }
    int32_t last = p0 + (int32_t)nt - 1;
    for (int32_t j0 = 0; j0 <= last;) {
        int32_t in_block = A->block_size - j0 % A->block_size;
        int32_t nk = in_block < PG_CHUNK ? in_block : PG_CHUNK;
        if (nk > last + 1 - j0) nk = last + 1 - j0;
        int64_t slot0 = (int64_t)bt[j0 / A->block_size] * A->block_size + j0 % A->block_size;
        const float *K = A->kc + slot0 * kv_row + kh * hd, *V = A->vc + slot0 * kv_row + kh * hd;
        for (int64_t r = 0; r < R; r++) {
            if (pos[r] < j0) continue; /* the chunk is past this row */
            int32_t n = pos[r] - j0 + 1 < nk ? pos[r] - j0 + 1 : nk; /* keys <= pos[r] */
            float m = mx[r];
            for (int32_t j = 0; j < n; j++) {
                sc[j] = pg_dot(qr[r], K + j * kv_row, hd) * A->scale;
                m = sc[j] > m ? sc[j] : m;
            }
            float c = expf(mx[r] - m), l = 0.0f; /* c = 0 on the first chunk */
            float *ar = acc[r];
            if (c != 1.0f) {
#pragma omp simd
                for (int64_t d = 0; d < hd; d++) ar[d] *= c;
            }
            for (int32_t j = 0; j < n; j++) {
                float w = expf(sc[j] - m);
                const float *vj = V + j * kv_row;
                l += w;
#pragma omp simd
                for (int64_t d = 0; d < hd; d++) ar[d] += w * vj[d];
            }
            sum[r] = sum[r] * c + l;
            mx[r] = m;
        }
        j0 += nk;
    }
    for (int64_t r = 0; r < R; r++) {
        float *ov = A->o + (qr[r] - A->q), inv = 1.0f / sum[r];
        for (int64_t d = 0; d < hd; d++) ov[d] = acc[r][d] * inv;
    }
}

#define PG_PARAMS const struct pg_args *A, int32_t s, int64_t kh, int64_t h0, int64_t G, int64_t t0, int64_t nt
static void pg_item_c(PG_PARAMS)
{
    pg_item_body(A, s, kh, h0, G, t0, nt);
}

__attribute__((target("avx2,fma"))) static void pg_item_avx2(PG_PARAMS)
{
    pg_item_body(A, s, kh, h0, G, t0, nt);
}

__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl"))) static void pg_item_avx512(PG_PARAMS)
{
    pg_item_body(A, s, kh, h0, G, t0, nt);
}

void cpu_attn_paged(float *o, const float *q, const float *kc, const float *vc,
                    const int32_t *q_start, const int32_t *ctx_len, const int32_t *block_tables,
                    int32_t n_seqs, int32_t max_blocks, int32_t block_size, int64_t n_heads,
                    int64_t n_kv_heads, int64_t hd, float scale)
{
    int64_t group = n_heads / n_kv_heads, gn = group < PG_ROWS ? group : PG_ROWS;
    int64_t n_sub = (group + gn - 1) / gn, tile = PG_ROWS / gn;
    struct pg_args A = {o, q, kc, vc, q_start, ctx_len, block_tables, max_blocks, block_size,
                        n_heads, n_kv_heads, hd, group, gn, n_sub, tile, scale};
    enum cpu_isa isa = cpu_isa_best();
    void (*item)(PG_PARAMS) =
        isa >= CPU_ISA_AVX512 ? pg_item_avx512 : isa == CPU_ISA_AVX2 ? pg_item_avx2 : pg_item_c;
    /* items: per sequence, ceil(n_s / tile) token tiles x n_kv_heads x n_sub head ranges */
    int64_t per_tile = n_kv_heads * n_sub, n_items = 0;
    for (int32_t s = 0; s < n_seqs; s++)
        n_items += per_tile * ((q_start[s + 1] - q_start[s] + tile - 1) / tile);
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_items; it++) {
        int64_t i = it;
        int32_t s = 0;
        for (;; s++) {
            int64_t n = per_tile * ((q_start[s + 1] - q_start[s] + tile - 1) / tile);
            if (i < n) break;
            i -= n;
        }
        int64_t n_s = q_start[s + 1] - q_start[s], t0 = i / per_tile * tile;
        int64_t kh = i % per_tile / n_sub, h0 = kh * group + i % n_sub * gn;
        item(&A, s, kh, h0, VLM_MIN_I64(gn, kh * group + group - h0), t0,
             VLM_MIN_I64(tile, n_s - t0));
    }
}

/*
 * Full attention in tiles shaped for sgemm (the ViT's segments are long: 1 024 patches for a
 * 448×448 image, 16 384 for the largest): for each segment, head and tile of VT_Q queries,
 * walk the keys in tiles of VT_K with an online softmax. S = Q·Kᵀ and O += P·V are sgemm
 * calls on strided views of the (n, n_heads, hd) arrays; the output rows serve as the
 * accumulator. Items (head, query tile) run in parallel on the OpenMP pool, OpenBLAS
 * single-threaded inside each; each thread's scratch holds S plus the running max and sum:
 * cpu_attn_varlen_scratch() floats.
 */
#include <cblas.h>
#include <omp.h>

enum { VT_Q = 128, VT_K = 512 };

int64_t cpu_attn_varlen_scratch(void)
{
    return (int64_t)VT_Q * VT_K + 2 * VT_Q;
}

void cpu_attn_varlen(float *o, const float *q, const float *k, const float *v,
                     const int32_t *cu, int32_t n_seg, int64_t n_heads, int64_t hd, float scale,
                     float *scratch, int n_threads)
{
    int64_t row = n_heads * hd;
    for (int32_t s = 0; s < n_seg; s++) {
        int64_t base = cu[s], L = cu[s + 1] - cu[s], n_qt = (L + VT_Q - 1) / VT_Q;
        /* items: (head, query tile), one thread each, each with its own scratch */
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
        for (int64_t it = 0; it < n_heads * n_qt; it++) {
            int64_t h = it / n_qt, q0 = it % n_qt * VT_Q;
            float *S = scratch + (int64_t)omp_get_thread_num() * cpu_attn_varlen_scratch();
            float *mx = S + VT_Q * VT_K, *sum = mx + VT_Q;
            int64_t nq = L - q0 < VT_Q ? L - q0 : VT_Q;
            const float *qt = q + (base + q0) * row + h * hd;
            float *ot = o + (base + q0) * row + h * hd;
            for (int64_t i = 0; i < nq; i++) {
                mx[i] = -INFINITY;
                sum[i] = 0.0f;
                for (int64_t d = 0; d < hd; d++) ot[i * row + d] = 0.0f;
            }
            for (int64_t k0 = 0; k0 < L; k0 += VT_K) {
                int64_t nk = L - k0 < VT_K ? L - k0 : VT_K;
                const float *kt = k + (base + k0) * row + h * hd;
                const float *vt = v + (base + k0) * row + h * hd;
                /* S(nq, nk) = scale · Q(nq, hd) · K(nk, hd)ᵀ */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)nk, (int)hd,
                            scale, qt, (int)row, kt, (int)row, 0.0f, S, (int)nk);
                for (int64_t i = 0; i < nq; i++) {
                    float *si = S + i * nk, m = mx[i];
                    for (int64_t j = 0; j < nk; j++) m = si[j] > m ? si[j] : m;
                    float c = expf(mx[i] - m), l = 0.0f; /* c = 0 on the first tile */
                    for (int64_t j = 0; j < nk; j++) {
                        si[j] = expf(si[j] - m);
                        l += si[j];
                    }
                    float *oi = ot + i * row;
                    for (int64_t d = 0; d < hd; d++) oi[d] *= c;
                    sum[i] = sum[i] * c + l;
                    mx[i] = m;
                }
                /* O(nq, hd) += P(nq, nk) · V(nk, hd) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)hd, (int)nk,
                            1.0f, S, (int)nk, vt, (int)row, 1.0f, ot, (int)row);
            }
            for (int64_t i = 0; i < nq; i++) {
                float inv = 1.0f / sum[i];
                for (int64_t d = 0; d < hd; d++) ot[i * row + d] *= inv;
            }
        }
    }
}
