/*
 * Attention: causal over the paged KV cache (decoder) and full attention inside segments
 * (vision tower), both with an online softmax (running max and denominator, accumulator
 * rescaled when the max grows), so no buffer grows with the context. The paged kernel takes
 * all query heads of a GQA group, for a tile of tokens, against each chunk of keys; the
 * segment kernel works in sgemm-shaped tiles. Scores and sums in f32.
 */
#include "kernels/cpu.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

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

/*
 * AVX-512 item for head_dim a multiple of 16, the same walk as pg_item_body with each row's
 * work in registers: a row's scores for 16 keys at a time (one vector accumulator per key
 * along head_dim, then a transposing reduction to one vector of 16 scores), exponentials 16
 * at a time (exp512, below), and P·V with the row's accumulator slice in registers across
 * the chunk's keys. Same per-row dependence as the reference (batch-invariant).
 */
#define T512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq")))

/* e^x for x <= 0 (x = -inf included): n = round(x / ln 2), r = x - n ln 2 in two parts,
 * a degree-7 Taylor polynomial on |r| <= ln 2 / 2 (truncation < 6e-9 relative), 2^n by
 * vscalefps; inputs below -104 give 0 (e^-104 is below the least f32 subnormal). */
ALWAYS T512 __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* scores of RB rows (q rows qr[0..RB)) against the chunk's keys, kt = the chunk's keys
 * transposed (kt[d * PG_CHUNK + j]); one lane per key, even and odd d summed in order in two
 * accumulators, then added */
ALWAYS T512 void scores_rows(const int RB, const float *const *qr, const float *kt, int64_t hd,
                             __m512 s[4][2])
{
    __m512 t[4][2];
    #pragma GCC unroll 4
    for (int i = 0; i < RB; i++) s[i][0] = s[i][1] = t[i][0] = t[i][1] = _mm512_setzero_ps();
    for (int64_t d = 0; d < hd; d += 2) {
        const float *k = kt + d * PG_CHUNK;
        __m512 k0 = _mm512_load_ps(k), k1 = _mm512_load_ps(k + 16);
        __m512 k2 = _mm512_load_ps(k + PG_CHUNK), k3 = _mm512_load_ps(k + PG_CHUNK + 16);
        #pragma GCC unroll 4
        for (int i = 0; i < RB; i++) {
            __m512 x = _mm512_set1_ps(qr[i][d]), y = _mm512_set1_ps(qr[i][d + 1]);
            s[i][0] = _mm512_fmadd_ps(x, k0, s[i][0]);
            s[i][1] = _mm512_fmadd_ps(x, k1, s[i][1]);
            t[i][0] = _mm512_fmadd_ps(y, k2, t[i][0]);
            t[i][1] = _mm512_fmadd_ps(y, k3, t[i][1]);
        }
    }
    #pragma GCC unroll 4
    for (int i = 0; i < RB; i++) {
        s[i][0] = _mm512_add_ps(s[i][0], t[i][0]);
        s[i][1] = _mm512_add_ps(s[i][1], t[i][1]);
    }
}

/* dst[c * PG_CHUNK + r] = rows[r][c] for r, c < 16 */
ALWAYS T512 void transpose16(float *dst, const float *const rows[16], int64_t c0)
{
    __m512 r[16], t[16], u[16], v[8], w[8];
    #pragma GCC unroll 16
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(rows[i] + c0);
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* u[4i + k]: rows 4i..4i+3, its 128-bit lane L holding column 4L + k */
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        v[k] = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88);
        v[4 + k] = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xdd);
        w[k] = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
        w[4 + k] = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xdd);
    }
    #pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        _mm512_store_ps(dst + k * PG_CHUNK, _mm512_shuffle_f32x4(v[k], w[k], 0x88));
        _mm512_store_ps(dst + (8 + k) * PG_CHUNK, _mm512_shuffle_f32x4(v[k], w[k], 0xdd));
        _mm512_store_ps(dst + (4 + k) * PG_CHUNK, _mm512_shuffle_f32x4(v[4 + k], w[4 + k], 0x88));
        _mm512_store_ps(dst + (12 + k) * PG_CHUNK, _mm512_shuffle_f32x4(v[4 + k], w[4 + k], 0xdd));
    }
}

/* acc rows ar[i][d0 .. d0 + 16 NC) = ar * c[i] + sum_j p[i][j] V[j] for RB rows, the slices
 * in registers, each V slice loaded once for all rows */
ALWAYS T512 void pv_rows(const int RB, const int NC, float *const *ar, int64_t d0, const float *c,
                         const float *const *p, const float *V, int64_t kv_row, int32_t nk)
{
    __m512 acc[4][4];
    #pragma GCC unroll 4
    for (int i = 0; i < RB; i++) {
        __m512 cv = _mm512_set1_ps(c[i]);
        #pragma GCC unroll 4
        for (int k = 0; k < NC; k++) acc[i][k] = _mm512_mul_ps(_mm512_load_ps(ar[i] + d0 + 16 * k), cv);
    }
    for (int32_t j = 0; j < nk; j++) {
        __m512 v[4];
        const float *vj = V + j * kv_row + d0;
        #pragma GCC unroll 4
        for (int k = 0; k < NC; k++) v[k] = _mm512_loadu_ps(vj + 16 * k);
        #pragma GCC unroll 4
        for (int i = 0; i < RB; i++) {
            __m512 w = _mm512_set1_ps(p[i][j]);
            #pragma GCC unroll 4
            for (int k = 0; k < NC; k++) acc[i][k] = _mm512_fmadd_ps(w, v[k], acc[i][k]);
        }
    }
    #pragma GCC unroll 4
    for (int i = 0; i < RB; i++)
        #pragma GCC unroll 4
        for (int k = 0; k < NC; k++) _mm512_store_ps(ar[i] + d0 + 16 * k, acc[i][k]);
}

struct pg16 {
    float acc[PG_ROWS][HD_MAX] __attribute__((aligned(64)));
    float kt[HD_MAX * PG_CHUNK] __attribute__((aligned(64)));
    float p[PG_ROWS][PG_CHUNK] __attribute__((aligned(64)));
    float mx[PG_ROWS], sum[PG_ROWS], c[PG_ROWS];
};

/* rows [r0, r0 + RB) of one chunk: scores, softmax update, P·V */
ALWAYS T512 void pg16_rows(const int RB, struct pg16 *W, const struct pg_args *A, int64_t r0,
                           const float *const *qr, const int32_t *pos, int32_t j0, int32_t nk,
                           const float *V, int64_t kv_row)
{
    __m512 s[4][2];
    scores_rows(RB, qr + r0, W->kt, A->hd, s);
    __m512 sc = _mm512_set1_ps(A->scale), ninf = _mm512_set1_ps(-INFINITY);
    float *ar[4];
    const float *pr[4];
    #pragma GCC unroll 4
    for (int i = 0; i < RB; i++) {
        int64_t r = r0 + i;
        int32_t n = pos[r] - j0 + 1 < nk ? pos[r] - j0 + 1 : nk; /* keys <= pos[r] */
        __mmask16 m0 = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
        __mmask16 m1 = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1 : 0);
        __m512 a = _mm512_mask_blend_ps(m0, ninf, _mm512_mul_ps(s[i][0], sc));
        __m512 b = _mm512_mask_blend_ps(m1, ninf, _mm512_mul_ps(s[i][1], sc));
        float m = _mm512_reduce_max_ps(_mm512_max_ps(a, b));
        m = m > W->mx[r] ? m : W->mx[r];
        __m512 mv = _mm512_set1_ps(m);
        __m512 e0 = exp512(_mm512_sub_ps(a, mv)), e1 = exp512(_mm512_sub_ps(b, mv));
        _mm512_store_ps(W->p[r], e0);
        _mm512_store_ps(W->p[r] + 16, e1);
        W->c[r] = expf(W->mx[r] - m); /* 0 on the row's first chunk */
        W->sum[r] = W->sum[r] * W->c[r] + _mm512_reduce_add_ps(_mm512_add_ps(e0, e1));
        W->mx[r] = m;
        ar[i] = W->acc[r];
        pr[i] = W->p[r];
    }
    int64_t d = 0, hd = A->hd;
    for (; d + 64 <= hd; d += 64) pv_rows(RB, 4, ar, d, W->c + r0, pr, V, kv_row, nk);
    for (; d < hd; d += 16) pv_rows(RB, 1, ar, d, W->c + r0, pr, V, kv_row, nk);
}

/*
 * AVX-512 item for head_dim a multiple of 16: the walk of pg_item_body, shaped as small
 * matrix products. Per chunk the keys are transposed once (kt, for all rows of the item);
 * then per group of up to 4 rows, S = Q·Kᵀ with one lane per key (32 keys in two vectors,
 * sums along head_dim in order), the masked softmax update with exponentials 16 at a time
 * (exp512), and O += P·V with each V slice loaded once for the group and the rows' slices
 * in registers. Keys past a row's position get weight exactly 0 (their V rows are written
 * positions of the chunk, finite), so a row's result does not depend on the rows it is
 * grouped with: batch-invariant like the reference.
 */
static T512 void pg_item_avx512_16(PG_PARAMS)
{
    int64_t hd = A->hd, R = nt * G, kv_row = A->n_kv_heads * hd;
    int32_t n_s = A->q_start[s + 1] - A->q_start[s];
    int32_t p0 = A->ctx_len[s] - n_s + (int32_t)t0;
    const int32_t *bt = A->block_tables + (int64_t)s * A->max_blocks;
    static _Thread_local struct pg16 W;
    const float *qr[PG_ROWS];
    int32_t pos[PG_ROWS];
    for (int64_t r = 0; r < R; r++) {
        int64_t tok = A->q_start[s] + t0 + r / G, h = h0 + r % G;
        qr[r] = A->q + (tok * A->n_heads + h) * hd;
        pos[r] = p0 + (int32_t)(r / G);
        W.mx[r] = -INFINITY;
        W.sum[r] = 0.0f;
        memset(W.acc[r], 0, (size_t)hd * sizeof(float));
    }
    int32_t last = p0 + (int32_t)nt - 1;
    for (int32_t j0 = 0; j0 <= last;) {
        int32_t in_block = A->block_size - j0 % A->block_size;
        int32_t nk = in_block < PG_CHUNK ? in_block : PG_CHUNK;
        if (nk > last + 1 - j0) nk = last + 1 - j0;
        int64_t slot0 = (int64_t)bt[j0 / A->block_size] * A->block_size + j0 % A->block_size;
        const float *K = A->kc + slot0 * kv_row + kh * hd, *V = A->vc + slot0 * kv_row + kh * hd;
        for (int32_t j = 0; j < PG_CHUNK; j += 16) {
            const float *kr[16];
            for (int i = 0; i < 16; i++) /* lanes past nk: a valid row, masked */
                kr[i] = K + (j + i < nk ? j + i : 0) * kv_row;
            for (int64_t d = 0; d < hd; d += 16) transpose16(W.kt + d * PG_CHUNK + j, kr, d);
        }
        int64_t r = 0;
        while (r < R && pos[r] < j0) r++; /* rows are in position order: skip those before */
        for (; r + 4 <= R; r += 4) pg16_rows(4, &W, A, r, qr, pos, j0, nk, V, kv_row);
        switch (R - r) {
        case 3: pg16_rows(3, &W, A, r, qr, pos, j0, nk, V, kv_row); break;
        case 2: pg16_rows(2, &W, A, r, qr, pos, j0, nk, V, kv_row); break;
        case 1: pg16_rows(1, &W, A, r, qr, pos, j0, nk, V, kv_row); break;
        default: break;
        }
        j0 += nk;
    }
    for (int64_t r = 0; r < R; r++) {
        float *ov = A->o + (qr[r] - A->q), inv = 1.0f / W.sum[r];
        for (int64_t d = 0; d < hd; d++) ov[d] = W.acc[r][d] * inv;
    }
}

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
    void (*item)(PG_PARAMS) = isa >= CPU_ISA_AVX512 && hd % 16 == 0 ? pg_item_avx512_16
                              : isa >= CPU_ISA_AVX512                 ? pg_item_avx512
                              : isa == CPU_ISA_AVX2                   ? pg_item_avx2
                                                                      : pg_item_c;
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
