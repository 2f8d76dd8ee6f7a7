/*
 * The attention kernel shared by attn_paged.cu (decoder, causal, over block tables) and
 * attn_varlen.cu (ViT, full attention inside segments): flash-attention style, so no score
 * matrix is ever stored, whatever the context.
 *
 * Thread mapping (see kernels/cuda.h for tiles):
 *   grid  = (n_tiles, n_kv_heads, n_splits); block = rows_per_tile / 2 warps;
 *   a block owns one tile: up to 16 query rows of one sequence that share KV head
 *   blockIdx.y; rows r = token_in_seq * group + head_in_group;
 *   warp w owns rows 2w and 2w + 1 (RPW = 2), held as f32 accumulators in registers:
 *   lane l owns output dims (2c, 2c + 1) for c = l, l + 32, ... (NP pairs, hd <= 64 · NP).
 * Per KV tile of 32 keys: the block stages K and V (bf16) in shared memory once for all its
 * rows (one read of each KV block per GQA group); lane j computes the score of key j for
 * both rows of its warp (q broadcast from shared memory), the warp updates the running max
 * and denominator (online softmax) and every lane adds p_j · V[j] for its dims.
 * K rows in shared memory are padded to an odd number of 4-byte words so that 32 lanes
 * reading 32 different keys at the same dim hit 32 different banks.
 * Split-K (decode with few sequences): blockIdx.z covers keys [z·split_len, (z+1)·split_len)
 * and writes its unnormalised accumulator, max and sum to a workspace; attn_combine_kernel
 * merges the splits.
 */
#pragma once

#include "kernels/cuda/common.cuh"

#include <math.h>

#define ATTN_BK 32          /* keys per shared-memory tile (one per lane) */
#define ATTN_RPW 2          /* query rows per warp */
#define ATTN_HD_MAX 256

struct attn_args {
    bf16 *o;                     /* (n_tok, n_heads, hd) */
    const bf16 *q;               /* (n_tok, n_heads, hd) */
    const bf16 *k, *v;           /* paged: (slots, n_kv_heads, hd); varlen: (n_tok, n_heads, hd) */
    const int32_t *q_start;      /* paged: (n_seqs + 1) q_start; varlen: (n_seg + 1) cu */
    const int32_t *ctx_len;      /* paged: (n_seqs) */
    const int32_t *block_tables; /* paged: (n_seqs, max_blocks) */
    int32_t max_blocks, block_size;
    const struct cuda_attn_tile *tiles;
    int32_t rows_per_tile, n_heads, n_kv_heads, hd, group;
    float scale;
    int32_t n_splits, split_len; /* split_len: keys per split, a multiple of ATTN_BK */
    int32_t n_tok;
    float *ws_o;                 /* (n_splits, n_tok, n_heads, hd) f32, when n_splits > 1 */
    float2 *ws_ml;               /* (n_splits, n_tok, n_heads) (max, sum) */
};

/* The K/V cache row of key j of sequence seq: through the block table (paged), or row j
 * itself (varlen: keys are the segment's own rows). */
template <bool PAGED>
static __device__ __forceinline__ int64_t attn_kv_row(const struct attn_args &a, int32_t seq,
                                                      int32_t j)
{
    if (!PAGED) return j;
    int32_t blk = a.block_tables[(int64_t)seq * a.max_blocks + j / a.block_size];
    return (int64_t)blk * a.block_size + j % a.block_size;
}

template <int NP, bool PAGED>
static __global__ void __launch_bounds__(256) attn_kernel(const struct attn_args a)
{
    /* sized for hd <= 64·NP, so smaller heads leave room for more blocks per SM */
    constexpr int HW_MAX = 32 * NP;
    __shared__ uint32_t s_k[ATTN_BK * (HW_MAX + 1)];   /* (BK, kw) bf16 pairs, padded */
    __shared__ uint32_t s_v[ATTN_BK * HW_MAX];         /* (BK, hd/2) bf16 pairs */
    __shared__ uint32_t s_q[CUDA_ATTN_ROWS * HW_MAX];  /* (rows, hd/2) */

    const struct cuda_attn_tile tile = a.tiles[blockIdx.x];
    const int32_t kh = blockIdx.y, split = blockIdx.z;
    const int32_t hw = a.hd / 2, kw = (hw % 2 == 0) ? hw + 1 : hw;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

    const int32_t q0 = a.q_start[tile.seq];
    const int32_t n_s = a.q_start[tile.seq + 1] - q0;
    const int32_t n_rows = min(a.rows_per_tile, n_s * a.group - tile.row0);
    /* keys of this sequence: paged = positions [0, ctx), varlen = rows [q0, q0 + n_s) */
    const int32_t ctx = PAGED ? a.ctx_len[tile.seq] : 0;
    int32_t kbeg = PAGED ? 0 : q0;
    int32_t kend = PAGED ? ctx - n_s + (tile.row0 + n_rows - 1) / a.group + 1 : q0 + n_s;
    if (a.n_splits > 1) {
        kbeg += split * a.split_len;
        kend = min(kend, kbeg + a.split_len);
    }

    /* my rows: token, head and last visible key (causal limit) */
    int32_t tok[ATTN_RPW], head[ATTN_RPW], lim[ATTN_RPW];
#pragma unroll
    for (int r = 0; r < ATTN_RPW; r++) {
        int32_t lr = warp * ATTN_RPW + r;
        int32_t sr = tile.row0 + lr;
        bool ok = lr < n_rows;
        tok[r] = q0 + sr / a.group;
        head[r] = kh * a.group + sr % a.group;
        lim[r] = !ok ? -1 : PAGED ? ctx - n_s + sr / a.group : kend - 1;
    }

    /* stage q rows (zeros for missing rows) */
    for (int32_t w = threadIdx.x; w < a.rows_per_tile * hw; w += blockDim.x) {
        int32_t lr = w / hw, c = w % hw;
        int32_t sr = tile.row0 + lr;
        uint32_t val = 0;
        if (lr < n_rows) {
            int64_t t = q0 + sr / a.group, h = kh * a.group + sr % a.group;
            val = ((const uint32_t *)(a.q + (t * a.n_heads + h) * a.hd))[c];
        }
        s_q[lr * hw + c] = val;
    }

    float acc[ATTN_RPW][NP][2];
    float m[ATTN_RPW], l[ATTN_RPW];
#pragma unroll
    for (int r = 0; r < ATTN_RPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < NP; i++) acc[r][i][0] = acc[r][i][1] = 0.0f;
    }

    const int32_t kv_heads = PAGED ? a.n_kv_heads : a.n_heads;
    /* loads of 4 words (16 bytes) when rows allow it (hd % 8 == 0), else of 1 word */
    const int32_t vw = (a.hd % 8 == 0) ? 4 : 1, hu = hw / vw;
    for (int32_t j0 = kbeg; j0 < kend; j0 += ATTN_BK) {
        __syncthreads(); /* previous tile fully consumed (and s_q written, first time) */
        for (int32_t u = threadIdx.x; u < ATTN_BK * hu; u += blockDim.x) {
            int32_t jj = u / hu, c = (u % hu) * vw, j = j0 + jj;
            uint4 kx = make_uint4(0, 0, 0, 0), vx = make_uint4(0, 0, 0, 0);
            if (j < kend) {
                int64_t row = attn_kv_row<PAGED>(a, tile.seq, j);
                const uint32_t *kp = (const uint32_t *)(a.k + (row * kv_heads + kh) * a.hd) + c;
                const uint32_t *vp = (const uint32_t *)(a.v + (row * kv_heads + kh) * a.hd) + c;
                if (vw == 4) {
                    kx = *(const uint4 *)kp;
                    vx = *(const uint4 *)vp;
                } else {
                    kx.x = *kp;
                    vx.x = *vp;
                }
            }
            uint32_t *sk = s_k + jj * kw + c, *sv = s_v + jj * hw + c;
            sk[0] = kx.x;
            sv[0] = vx.x;
            if (vw == 4) {
                sk[1] = kx.y, sk[2] = kx.z, sk[3] = kx.w;
                sv[1] = vx.y, sv[2] = vx.z, sv[3] = vx.w;
            }
        }
        __syncthreads();

        /* scores: lane = key */
        int32_t j = j0 + lane;
        float sc[ATTN_RPW];
#pragma unroll
        for (int r = 0; r < ATTN_RPW; r++) sc[r] = 0.0f;
        const uint32_t *kr = s_k + lane * kw;
        const uint32_t *q_a = s_q + (warp * ATTN_RPW) * hw;
        for (int32_t c = 0; c < hw; c++) {
            uint32_t kx = kr[c];
            float2 kf = __bfloat1622float2(*(const bf162 *)&kx);
#pragma unroll
            for (int r = 0; r < ATTN_RPW; r++) {
                uint32_t qx = q_a[r * hw + c];
                float2 qf = __bfloat1622float2(*(const bf162 *)&qx);
                sc[r] += qf.x * kf.x + qf.y * kf.y;
            }
        }

        /* online softmax per row, then acc += p · V */
        float p[ATTN_RPW];
#pragma unroll
        for (int r = 0; r < ATTN_RPW; r++) {
            bool valid = j < kend && j <= lim[r];
            float s = valid ? sc[r] * a.scale : -INFINITY;
            float mn = fmaxf(m[r], warp_max(s));
            if (mn == -INFINITY) { /* nothing visible yet for this row */
                p[r] = 0.0f;
                continue;
            }
            float corr = expf(m[r] - mn); /* 0 when m was -inf */
            p[r] = valid ? expf(s - mn) : 0.0f;
            l[r] = l[r] * corr + warp_sum(p[r]);
            m[r] = mn;
#pragma unroll
            for (int i = 0; i < NP; i++) {
                acc[r][i][0] *= corr;
                acc[r][i][1] *= corr;
            }
        }
        int32_t n_keys = min(ATTN_BK, kend - j0);
        for (int32_t jj = 0; jj < n_keys; jj++) {
            float pj[ATTN_RPW];
#pragma unroll
            for (int r = 0; r < ATTN_RPW; r++) pj[r] = __shfl_sync(0xffffffffu, p[r], jj);
#pragma unroll
            for (int i = 0; i < NP; i++) {
                int32_t c = lane + 32 * i;
                if (c < hw) {
                    uint32_t vx = s_v[jj * hw + c];
                    float2 vf = __bfloat1622float2(*(const bf162 *)&vx);
#pragma unroll
                    for (int r = 0; r < ATTN_RPW; r++) {
                        acc[r][i][0] += pj[r] * vf.x;
                        acc[r][i][1] += pj[r] * vf.y;
                    }
                }
            }
        }
    }

    /* write: normalised bf16 output, or this split's partial state */
#pragma unroll
    for (int r = 0; r < ATTN_RPW; r++) {
        if (lim[r] < 0) continue;
        int64_t th = (int64_t)tok[r] * a.n_heads + head[r];
        if (a.n_splits == 1) {
            float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
            bf162 *out = (bf162 *)(a.o + th * a.hd);
#pragma unroll
            for (int i = 0; i < NP; i++) {
                int32_t c = lane + 32 * i;
                if (c < hw) out[c] = __floats2bfloat162_rn(acc[r][i][0] * inv, acc[r][i][1] * inv);
            }
        } else {
            int64_t ws_row = (int64_t)split * a.n_tok * a.n_heads + th;
            float2 *wo = (float2 *)(a.ws_o + ws_row * a.hd);
#pragma unroll
            for (int i = 0; i < NP; i++) {
                int32_t c = lane + 32 * i;
                if (c < hw) wo[c] = make_float2(acc[r][i][0], acc[r][i][1]);
            }
            if (lane == 0) a.ws_ml[ws_row] = make_float2(m[r], l[r]);
        }
    }
}

/* grid = n_tok · n_heads; block = 64; thread c merges dims (2c, 2c + 1) of one (token, head)
 * over the splits: o = Σ e^(m_z - M) acc_z / Σ e^(m_z - M) l_z. */
static __global__ void attn_combine_kernel(bf16 *o, const float *ws_o, const float2 *ws_ml,
                                           int32_t n_splits, int64_t n_rows, int32_t hd)
{
    int64_t th = blockIdx.x;
    float mx = -INFINITY;
    for (int32_t z = 0; z < n_splits; z++) mx = fmaxf(mx, ws_ml[z * n_rows + th].x);
    float den = 0.0f;
    for (int32_t z = 0; z < n_splits; z++) {
        float2 ml = ws_ml[z * n_rows + th];
        den += ml.y > 0.0f ? expf(ml.x - mx) * ml.y : 0.0f;
    }
    float inv = den > 0.0f ? 1.0f / den : 0.0f;
    for (int32_t c = threadIdx.x; c < hd / 2; c += blockDim.x) {
        float x0 = 0.0f, x1 = 0.0f;
        for (int32_t z = 0; z < n_splits; z++) {
            float2 ml = ws_ml[z * n_rows + th];
            if (!(ml.y > 0.0f)) continue;
            float w = expf(ml.x - mx);
            float2 v = ((const float2 *)(ws_o + (z * n_rows + th) * hd))[c];
            x0 += w * v.x;
            x1 += w * v.y;
        }
        ((bf162 *)(o + th * hd))[c] = __floats2bfloat162_rn(x0 * inv, x1 * inv);
    }
}

/* ==== Tensor-core variant (prefill) ====
 * The same tiles, online softmax and causal limits, with the two products on the tensor
 * cores (mma.sync m16n8k16, bf16 in, f32 accumulate; sm_80 and later), for tiles of
 * ATTN_MMA_ROWS = 64 query rows: what a prefill chunk or a ViT segment gives.
 *
 * Thread mapping: grid = (n_tiles, kv heads, 1); block = 4 warps; warp w owns rows
 * 16w .. 16w + 15 of the tile. In mma terms (g = lane / 4, q = lane % 4), a lane holds the
 * rows g and g + 8 of its warp's 16: Q as A fragments (registers, loaded once), and for each
 * 32-key tile the scores S = Q·Kᵀ (4 n-tiles of 8 keys: keys 8n + 2q, 8n + 2q + 1), then
 * P = softmax part of S, reused in registers as the A fragments of O += P·V; O is hd/8
 * n-tiles of 8 dims (dims 8n + 2q, 8n + 2q + 1). Row max and sum are reduced over the 4
 * lanes of a quad (the lanes that share a row).
 * Shared memory per 32-key tile: K as (32 keys, hd/2 + 4 words), V transposed as (hd dims,
 * 20 words = 32 keys + pad); both paddings make the fragment loads of a warp hit 32
 * different banks. P is rounded to bf16 for the second product (as flash attention does).
 */
#define ATTN_MMA_ROWS 64
#define ATTN_MMA_BK 32

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi)
{
    bf162 v = __floats2bfloat162_rn(lo, hi); /* .x (lo) in the low 16 bits */
    return *(uint32_t *)&v;
}

template <int KC, bool PAGED>
static __global__ void __launch_bounds__(128) attn_mma_kernel(const struct attn_args a)
{
    constexpr int HD = KC * 16, HW = HD / 2, NT = HD / 8;
    constexpr int KS = HW + 4;               /* s_k row stride, words */
    constexpr int VS = ATTN_MMA_BK / 2 + 4;  /* s_vt row stride, words */
    __shared__ uint32_t s_k[ATTN_MMA_BK * KS];
    __shared__ uint32_t s_vt[HD * VS];

    const struct cuda_attn_tile tile = a.tiles[blockIdx.x];
    const int32_t kh = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, qd = lane & 3;
    const int32_t q0 = a.q_start[tile.seq];
    const int32_t n_s = a.q_start[tile.seq + 1] - q0;
    const int32_t n_rows = min(ATTN_MMA_ROWS, n_s * a.group - tile.row0);
    const int32_t ctx = PAGED ? a.ctx_len[tile.seq] : 0;
    const int32_t kbeg = PAGED ? 0 : q0;
    const int32_t kend = PAGED ? ctx - n_s + (tile.row0 + n_rows - 1) / a.group + 1 : q0 + n_s;
    const int32_t kv_heads = PAGED ? a.n_kv_heads : a.n_heads;

    /* my rows g and g + 8: (token, head) and causal limit (-1: no such row) */
    int32_t lim[2];
    int64_t th[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int32_t lr = warp * 16 + g + 8 * i, sr = tile.row0 + lr;
        int64_t tok = q0 + sr / a.group, head = kh * a.group + sr % a.group;
        th[i] = tok * a.n_heads + head;
        lim[i] = lr >= n_rows ? -1 : PAGED ? ctx - n_s + sr / a.group : kend - 1;
    }

    /* Q as A fragments: a0/a1 = rows g/g+8 at dims 16kc + 2qd (+1), a2/a3 = the same + 8 */
    uint32_t qf[KC][4];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const uint32_t *qr = (const uint32_t *)(a.q + th[i] * HD);
#pragma unroll
        for (int kc = 0; kc < KC; kc++) {
            qf[kc][i] = lim[i] >= 0 ? qr[kc * 8 + qd] : 0u;
            qf[kc][2 + i] = lim[i] >= 0 ? qr[kc * 8 + 4 + qd] : 0u;
        }
    }

    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    uint16_t *vt16 = (uint16_t *)s_vt;

    for (int32_t j0 = kbeg; j0 < kend; j0 += ATTN_MMA_BK) {
        __syncthreads(); /* the previous tile is consumed */
        /* 16-byte loads: unit u = key jj, words c .. c + 3 (dims 2c .. 2c + 7) */
        for (int32_t u = threadIdx.x; u < ATTN_MMA_BK * (HW / 4); u += blockDim.x) {
            int32_t jj = u / (HW / 4), c = (u % (HW / 4)) * 4, j = j0 + jj;
            bf16x8 kx, vx;
            kx.u = vx.u = make_uint4(0, 0, 0, 0);
            if (j < kend) {
                int64_t row = attn_kv_row<PAGED>(a, tile.seq, j);
                int64_t off = (row * kv_heads + kh) * HD + 2 * c;
                kx.u = *(const uint4 *)(a.k + off);
                vx.u = *(const uint4 *)(a.v + off);
            }
            uint32_t *sk = s_k + jj * KS + c;
            sk[0] = kx.u.x, sk[1] = kx.u.y, sk[2] = kx.u.z, sk[3] = kx.u.w;
            const uint16_t *v16 = (const uint16_t *)&vx;
#pragma unroll
            for (int e = 0; e < 8; e++) vt16[(2 * c + e) * (2 * VS) + jj] = v16[e];
        }
        __syncthreads();

        /* S = Q·Kᵀ: n-tile n covers keys j0 + 8n .. + 7; B fragment = K[key 8n + g][dims] */
        float sc[ATTN_MMA_BK / 8][4];
#pragma unroll
        for (int n = 0; n < ATTN_MMA_BK / 8; n++) {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
            const uint32_t *kr = s_k + (n * 8 + g) * KS;
#pragma unroll
            for (int kc = 0; kc < KC; kc++)
                mma_bf16_16816(sc[n], qf[kc], kr[kc * 8 + qd], kr[kc * 8 + 4 + qd]);
        }

        /* online softmax for rows g (i = 0: elements 0, 1) and g + 8 (i = 1: elements 2, 3) */
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < ATTN_MMA_BK / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int32_t j = j0 + n * 8 + qd * 2 + e;
                    float v = (j < kend && j <= lim[i]) ? sc[n][2 * i + e] * a.scale : -INFINITY;
                    sc[n][2 * i + e] = v;
                    mx = fmaxf(mx, v);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float mn = fmaxf(m[i], mx);
            float corr = mn == -INFINITY ? 1.0f : expf(m[i] - mn);
            float ls = 0.0f;
#pragma unroll
            for (int n = 0; n < ATTN_MMA_BK / 8; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float v = sc[n][2 * i + e];
                    float p = v == -INFINITY ? 0.0f : expf(v - mn);
                    sc[n][2 * i + e] = p;
                    ls += p;
                }
            l[i] = l[i] * corr + ls; /* this lane's part; the quad's parts add up at the end */
            m[i] = mn;
#pragma unroll
            for (int n = 0; n < NT; n++) {
                o[n][2 * i] *= corr;
                o[n][2 * i + 1] *= corr;
            }
        }

        /* O += P·V: k-chunk kc2 = keys 16kc2 .. + 15 = score n-tiles 2kc2 and 2kc2 + 1 */
#pragma unroll
        for (int kc2 = 0; kc2 < ATTN_MMA_BK / 16; kc2++) {
            uint32_t pf[4] = {pack_bf16x2(sc[2 * kc2][0], sc[2 * kc2][1]),
                              pack_bf16x2(sc[2 * kc2][2], sc[2 * kc2][3]),
                              pack_bf16x2(sc[2 * kc2 + 1][0], sc[2 * kc2 + 1][1]),
                              pack_bf16x2(sc[2 * kc2 + 1][2], sc[2 * kc2 + 1][3])};
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const uint32_t *vr = s_vt + (n * 8 + g) * VS;
                mma_bf16_16816(o[n], pf, vr[kc2 * 8 + qd], vr[kc2 * 8 + 4 + qd]);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (lim[i] < 0) continue;
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        uint32_t *out = (uint32_t *)(a.o + th[i] * HD);
#pragma unroll
        for (int n = 0; n < NT; n++)
            out[n * 4 + qd] = pack_bf16x2(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
    }
}

/* Whether the tensor-core kernel takes tiles of head size hd (its register arrays are sized
 * at compile time: these instances exist). */
static inline bool attn_mma_hd(int32_t hd)
{
    return CUDA_ATTN_MMA && (hd == 32 || hd == 64 || hd == 80 || hd == 128);
}

template <bool PAGED>
static void attn_mma_launch(const struct attn_args &a, int32_t n_tiles, cudaStream_t s)
{
    dim3 grid((unsigned)n_tiles, (unsigned)(PAGED ? a.n_kv_heads : a.n_heads), 1);
    switch (a.hd) {
    case 32: attn_mma_kernel<2, PAGED><<<grid, 128, 0, s>>>(a); break;
    case 64: attn_mma_kernel<4, PAGED><<<grid, 128, 0, s>>>(a); break;
    case 80: attn_mma_kernel<5, PAGED><<<grid, 128, 0, s>>>(a); break;
    default: attn_mma_kernel<8, PAGED><<<grid, 128, 0, s>>>(a); break;
    }
    CUDA_LAUNCH_CHECK();
}

/* Launches attn_kernel with the instance for hd (pairs per lane NP = ceil(hd / 64)). */
template <bool PAGED>
static void attn_launch(const struct attn_args &a, int32_t n_tiles, cudaStream_t s)
{
    if (a.rows_per_tile == ATTN_MMA_ROWS) { /* tiles made for the tensor-core kernel */
        if (a.n_splits != 1 || !attn_mma_hd(a.hd)) {
            fprintf(stderr, "valley: attention tiles of 64 rows need hd 32/64/80/128, no split\n");
            abort();
        }
        attn_mma_launch<PAGED>(a, n_tiles, s);
        return;
    }
    dim3 grid((unsigned)n_tiles, (unsigned)(PAGED ? a.n_kv_heads : a.n_heads),
              (unsigned)a.n_splits);
    int threads = 32 * ((a.rows_per_tile + ATTN_RPW - 1) / ATTN_RPW);
    int np = (a.hd + 63) / 64;
    switch (np) {
    case 1: attn_kernel<1, PAGED><<<grid, threads, 0, s>>>(a); break;
    case 2: attn_kernel<2, PAGED><<<grid, threads, 0, s>>>(a); break;
    case 3: attn_kernel<3, PAGED><<<grid, threads, 0, s>>>(a); break;
    default: attn_kernel<4, PAGED><<<grid, threads, 0, s>>>(a); break;
    }
    CUDA_LAUNCH_CHECK();
}
