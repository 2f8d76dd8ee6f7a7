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

/* ==== Tensor-core variant (prefill, ViT) ====
 * The same tiles, online softmax and causal limits, with the two products on the tensor
 * cores (mma.sync m16n8k16, bf16 in, f32 accumulate; sm_80 and later), for tiles of
 * ATTN_MMA_ROWS = 64 query rows (4 warps) or ATTN_MMA_ROWS_WIDE = 128 (8 warps, hd 80 and
 * 128, when a sequence or segment has that many rows): what a prefill chunk or a ViT
 * segment gives.
 * Flash-attention-2 style.
 *
 * Thread mapping: grid = (n_tiles, kv heads, 1), block x taking tile n_tiles - 1 - x;
 * block = NW warps; warp w owns rows 16w .. 16w + 15 of the tile. In mma terms
 * (g = lane / 4, q = lane % 4), a lane holds the rows g and g + 8 of its warp's 16: Q as A
 * fragments (registers, loaded once), and for each 64-key tile the scores S = Q·Kᵀ
 * (8 n-tiles of 8 keys: keys 8n + 2q, 8n + 2q + 1), then P = softmax part of S, reused in
 * registers as the A fragments of O += P·V; O is hd/8 n-tiles of 8 dims (dims 8n + 2q,
 * 8n + 2q + 1). Row max and sum are reduced over the 4 lanes of a quad (the lanes that
 * share a row); the max is kept in log2 units (scores times scale·log2 e, so every
 * exponential is one exp2f).
 * K/V tiles: 64 keys, copied from global memory (block table or segment rows) with cp.async
 * (16 bytes per copy, zero-filled past the last key) into two shared-memory stages: the copy
 * of tile t + 1 runs while tile t is computed. Both K and V are stored as they are in memory,
 * (key, dim) rows of hd bf16 padded by 16 bytes, so the 8 row addresses of each ldmatrix
 * phase fall on 8 different 16-byte bank groups for every hd here. B fragments come from
 * ldmatrix.x4: K's directly (rows = keys), V's with .trans (rows = keys, columns = dims,
 * transposed into the k-major B layout). P is rounded to bf16 for the second product (as
 * flash attention does).
 * Causal limits at tile level: a warp skips every key tile past its rows' last visible key,
 * and masks only the tiles that cross a row's limit or the end of the keys.
 * tests/gpu/attn_mma_emulate.py replays this indexing lane by lane in numpy.
 */
#define ATTN_MMA_ROWS 64        /* rows per tile, 4 warps */
#define ATTN_MMA_ROWS_WIDE 128  /* rows per tile, 8 warps */
#define ATTN_MMA_BK 64          /* keys per K/V tile */

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

__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16 bytes global -> shared, asynchronous; zeros when !full (src is not read then) */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool full)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(full ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* waits until at most N of this thread's committed groups are still in flight */
template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* four 8x8 bf16 matrices; lanes 8i .. 8i + 7 give the row addresses of matrix i, register i
 * gets (row lane / 4, columns 2 (lane % 4), + 1) of matrix i, or with .trans (rows 2 (lane % 4)
 * and + 1, column lane / 4) */
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* shared memory of one instance: 2 stages x (K, V) x 64 keys x (hd + 8) bf16 */
static constexpr size_t attn_mma_smem(int hd)
{
    return (size_t)2 * 2 * ATTN_MMA_BK * (size_t)(hd + 8) * sizeof(bf16);
}

template <int KC, int NW, bool PAGED>
static __global__ void __launch_bounds__(NW * 32, 1) attn_mma_kernel(const struct attn_args a)
{
    constexpr int HD = KC * 16, NT = HD / 8, ROWS = NW * 16;
    constexpr int BK = ATTN_MMA_BK, NS = BK / 8; /* score n-tiles per key tile */
    constexpr int RS = HD + 8;                   /* shared row stride, bf16 (16 bytes pad) */
    constexpr int TILE = BK * RS;                /* one K or V tile, bf16 */
    constexpr int CH = HD / 8;                   /* 16-byte chunks per row */
    extern __shared__ uint4 attn_smem[];         /* [stage][K, V][BK][RS] bf16 */
    bf16 *s_kv = (bf16 *)attn_smem;

    /* tiles in reverse: a sequence's last tiles see the most keys (causal), so they start
     * first and the short ones fill the tail of the grid */
    const struct cuda_attn_tile tile = a.tiles[gridDim.x - 1 - blockIdx.x];
    const int32_t kh = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, qd = lane & 3;
    const int32_t q0 = a.q_start[tile.seq];
    const int32_t n_s = a.q_start[tile.seq + 1] - q0;
    const int32_t n_rows = min(ROWS, n_s * a.group - tile.row0);
    const int32_t ctx = PAGED ? a.ctx_len[tile.seq] : 0;
    const int32_t kbeg = PAGED ? 0 : q0;
    const int32_t kend = PAGED ? ctx - n_s + (tile.row0 + n_rows - 1) / a.group + 1 : q0 + n_s;
    const int32_t kv_heads = PAGED ? a.n_kv_heads : a.n_heads;
    const float scale = a.scale * 1.4426950408889634f; /* log2 e: exp(x) = exp2(x log2 e) */

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
    /* the warp's last key seen by any of its rows (wmax; -1: no rows) and by all of them
     * (wmin; every limit is < kend, so keys <= wmin need no mask) */
    int32_t wmax = max(lim[0], lim[1]);
    int32_t wmin = min(lim[0] < 0 ? INT32_MAX : lim[0], lim[1] < 0 ? INT32_MAX : lim[1]);
#pragma unroll
    for (int d = 16; d >= 1; d >>= 1) {
        wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, d));
        wmin = min(wmin, __shfl_xor_sync(0xffffffffu, wmin, d));
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

    /* K/V tile t into stage st: chunk u = key u / CH, dims 8 (u % CH) .. + 7 */
    auto load_tile = [&](int32_t t, int st) {
        bf16 *sk = s_kv + st * 2 * TILE, *sv = sk + TILE;
        const int32_t j0 = kbeg + t * BK;
        for (int u = threadIdx.x; u < BK * CH; u += NW * 32) {
            const int jj = u / CH, c = u % CH;
            const int32_t j = j0 + jj;
            const bool ok = j < kend;
            const int64_t row = ok ? attn_kv_row<PAGED>(a, tile.seq, j) : 0;
            const int64_t off = (row * kv_heads + kh) * HD + 8 * c;
            cp_async16(smem_addr(sk + jj * RS + 8 * c), a.k + off, ok);
            cp_async16(smem_addr(sv + jj * RS + 8 * c), a.v + off, ok);
        }
        cp_async_commit();
    };

    /* ldmatrix row addresses: lane gives row mr of matrix mi */
    const int mi = lane >> 3, mr = lane & 7;
    const int32_t n_kt = (kend - kbeg + BK - 1) / BK;
    if (n_kt > 0) load_tile(0, 0);
    for (int32_t t = 0; t < n_kt; t++) {
        if (t + 1 < n_kt) { /* next tile in flight while this one is computed */
            load_tile(t + 1, (t + 1) & 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); /* tile t is in shared memory for every thread */

        const int32_t j0 = kbeg + t * BK;
        if (j0 <= wmax) { /* else every row of this warp is past its causal limit */
            const bf16 *sk = s_kv + (t & 1) * 2 * TILE, *sv = sk + TILE;

            /* S = Q·Kᵀ: x4 matrix mi = keys 8 (2p + mi / 2) .. + 7, dims 16kc + 8 (mi % 2)
             * .. + 7: registers b0, b1 of n-tile 2p, then of n-tile 2p + 1 */
            float sc[NS][4];
#pragma unroll
            for (int p = 0; p < NS / 2; p++) {
                sc[2 * p][0] = sc[2 * p][1] = sc[2 * p][2] = sc[2 * p][3] = 0.0f;
                sc[2 * p + 1][0] = sc[2 * p + 1][1] = sc[2 * p + 1][2] = sc[2 * p + 1][3] = 0.0f;
                const uint32_t ka =
                    smem_addr(sk + (16 * p + 8 * (mi >> 1) + mr) * RS + 8 * (mi & 1));
#pragma unroll
                for (int kc = 0; kc < KC; kc++) {
                    uint32_t b[4];
                    ldmatrix_x4(b, ka + kc * 32); /* 16 dims = 32 bytes */
                    mma_bf16_16816(sc[2 * p], qf[kc], b[0], b[1]);
                    mma_bf16_16816(sc[2 * p + 1], qf[kc], b[2], b[3]);
                }
            }

            /* online softmax for rows g (i = 0: elements 0, 1) and g + 8 (i = 1: 2, 3) */
            const bool mask = j0 + BK - 1 > wmin;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                float mx = -INFINITY;
#pragma unroll
                for (int n = 0; n < NS; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = sc[n][2 * i + e] * scale;
                        if (mask && j0 + n * 8 + qd * 2 + e > lim[i]) v = -INFINITY;
                        sc[n][2 * i + e] = v;
                        mx = fmaxf(mx, v);
                    }
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float mn = fmaxf(m[i], mx);
                const float corr = mn == -INFINITY ? 1.0f : exp2f(m[i] - mn);
                float ls = 0.0f;
#pragma unroll
                for (int n = 0; n < NS; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        float v = sc[n][2 * i + e];
                        float p = v == -INFINITY ? 0.0f : exp2f(v - mn);
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

            /* O += P·V: k-chunk kc2 = keys 16kc2 .. + 15 = score n-tiles 2kc2 and 2kc2 + 1;
             * x4.trans matrix mi = keys 16kc2 + 8 (mi % 2) .. + 7, dims 8 (2p + mi / 2) .. + 7:
             * registers b0, b1 of dim n-tile 2p, then of 2p + 1 */
#pragma unroll
            for (int kc2 = 0; kc2 < BK / 16; kc2++) {
                uint32_t pf[4] = {pack_bf16x2(sc[2 * kc2][0], sc[2 * kc2][1]),
                                  pack_bf16x2(sc[2 * kc2][2], sc[2 * kc2][3]),
                                  pack_bf16x2(sc[2 * kc2 + 1][0], sc[2 * kc2 + 1][1]),
                                  pack_bf16x2(sc[2 * kc2 + 1][2], sc[2 * kc2 + 1][3])};
                const uint32_t va =
                    smem_addr(sv + (16 * kc2 + 8 * (mi & 1) + mr) * RS + 8 * (mi >> 1));
#pragma unroll
                for (int p = 0; p < NT / 2; p++) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, va + p * 32); /* 16 dims = 32 bytes */
                    mma_bf16_16816(o[2 * p], pf, b[0], b[1]);
                    mma_bf16_16816(o[2 * p + 1], pf, b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* stage t & 1 is consumed before tile t + 2 is copied into it */
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

/* Whether tiles of this many rows were made for the tensor-core kernel. */
static inline bool attn_mma_rows(int32_t rows_per_tile)
{
    return rows_per_tile == ATTN_MMA_ROWS || rows_per_tile == ATTN_MMA_ROWS_WIDE;
}

template <int KC, int NW, bool PAGED>
static void attn_mma_go(const struct attn_args &a, dim3 grid, cudaStream_t s)
{
    constexpr size_t smem = attn_mma_smem(KC * 16);
    /* over the 48 KiB default (hd 128): raise the limit (per device, so on every call) */
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(attn_mma_kernel<KC, NW, PAGED>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    attn_mma_kernel<KC, NW, PAGED><<<grid, NW * 32, smem, s>>>(a);
}

template <int NW, bool PAGED>
static void attn_mma_launch_nw(const struct attn_args &a, dim3 grid, cudaStream_t s)
{
    switch (a.hd) {
    case 32: attn_mma_go<2, NW, PAGED>(a, grid, s); break;
    case 64: attn_mma_go<4, NW, PAGED>(a, grid, s); break;
    case 80: attn_mma_go<5, NW, PAGED>(a, grid, s); break;
    default: attn_mma_go<8, NW, PAGED>(a, grid, s); break;
    }
}

template <bool PAGED>
static void attn_mma_launch(const struct attn_args &a, int32_t n_tiles, cudaStream_t s)
{
    dim3 grid((unsigned)n_tiles, (unsigned)(PAGED ? a.n_kv_heads : a.n_heads), 1);
    if (a.rows_per_tile == ATTN_MMA_ROWS_WIDE)
        attn_mma_launch_nw<8, PAGED>(a, grid, s);
    else
        attn_mma_launch_nw<4, PAGED>(a, grid, s);
    CUDA_LAUNCH_CHECK();
}

/* Launches attn_kernel with the instance for hd (pairs per lane NP = ceil(hd / 64)). */
template <bool PAGED>
static void attn_launch(const struct attn_args &a, int32_t n_tiles, cudaStream_t s)
{
    if (attn_mma_rows(a.rows_per_tile)) { /* tiles made for the tensor-core kernel */
        if (a.n_splits != 1 || !attn_mma_hd(a.hd)) {
            fprintf(stderr,
                    "valley: attention tiles of 64/128 rows need hd 32/64/80/128, no split\n");
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
