/*
 * Decoder attention over the paged KV cache: causal, GQA-aware, split along the context for
 * decode steps with few sequences (see attn.cuh for the kernel and its thread mapping), and
 * the host helpers that build the tile list both attention launchers consume.
 */
#include "kernels/cuda/attn.cuh"

extern "C" int32_t cuda_attn_rows_per_tile(int32_t max_q, int32_t group, int32_t hd)
{
    int64_t rows = (int64_t)max_q * group;
    /* 8 warps where the registers allow no more resident warps per SM with 4 (hd 80: 169
     * registers, hd 128: 215); each K/V tile then serves twice the rows */
    if (rows >= ATTN_MMA_ROWS_WIDE && attn_mma_hd(hd) && hd >= 80) return ATTN_MMA_ROWS_WIDE;
    if (rows >= ATTN_MMA_ROWS && attn_mma_hd(hd)) return ATTN_MMA_ROWS;
    if (rows >= CUDA_ATTN_ROWS) return CUDA_ATTN_ROWS;
    return (int32_t)((rows + 1) / 2 * 2); /* whole warps of ATTN_RPW rows */
}

extern "C" int32_t cuda_attn_tiles_max(int32_t n_tokens, int32_t n_seqs, int32_t group,
                                       int32_t rows_per_tile)
{
    return (int32_t)(((int64_t)n_tokens * group + rows_per_tile - 1) / rows_per_tile + n_seqs);
}

extern "C" int32_t cuda_attn_tiles(struct cuda_attn_tile *tiles, const int32_t *q_start,
                                   int32_t n_seqs, int32_t group, int32_t rows_per_tile)
{
    int32_t n = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        int64_t rows = (int64_t)(q_start[s + 1] - q_start[s]) * group;
        for (int64_t r0 = 0; r0 < rows; r0 += rows_per_tile)
            tiles[n++] = (struct cuda_attn_tile){.seq = s, .row0 = (int32_t)r0};
    }
    return n;
}

extern "C" size_t cuda_attn_ws_bytes(int32_t n_tok, int32_t n_heads, int32_t hd, int32_t n_splits)
{
    size_t rows = (size_t)n_splits * (size_t)n_tok * (size_t)n_heads;
    return rows * (size_t)hd * sizeof(float) + rows * sizeof(float2);
}

extern "C" void cuda_attn_paged(void *o, const void *q, const void *kc, const void *vc,
                                const int32_t *q_start, const int32_t *ctx_len,
                                const int32_t *block_tables, int32_t max_blocks,
                                int32_t block_size, const struct cuda_attn_tile *tiles,
                                int32_t n_tiles, int32_t rows_per_tile, int32_t n_tok,
                                int32_t n_heads, int32_t n_kv_heads, int32_t hd, int32_t max_ctx,
                                float scale, int32_t n_splits, void *ws, cudaStream_t s)
{
    if (n_tiles <= 0 || n_tok <= 0) return;
    struct attn_args a = {};
    a.o = (bf16 *)o;
    a.q = (const bf16 *)q;
    a.k = (const bf16 *)kc;
    a.v = (const bf16 *)vc;
    a.q_start = q_start;
    a.ctx_len = ctx_len;
    a.block_tables = block_tables;
    a.max_blocks = max_blocks;
    a.block_size = block_size;
    a.tiles = tiles;
    a.rows_per_tile = rows_per_tile;
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv_heads;
    a.hd = hd;
    a.group = n_heads / n_kv_heads;
    a.scale = scale;
    a.n_tok = n_tok;
    a.n_splits = 1;
    a.split_len = max_ctx;
    if (n_splits > 1 && ws && !attn_mma_rows(rows_per_tile)) {
        /* keys per split: a whole number of shared-memory tiles; drop empty splits */
        int32_t len = (int32_t)cdiv(cdiv(max_ctx, n_splits), ATTN_BK) * ATTN_BK;
        int32_t z = (int32_t)cdiv(max_ctx, len);
        if (z > 1) {
            a.n_splits = z;
            a.split_len = len;
            size_t rows = (size_t)z * (size_t)n_tok * (size_t)n_heads;
            a.ws_o = (float *)ws;
            a.ws_ml = (float2 *)((char *)ws + rows * (size_t)hd * sizeof(float));
        }
    }
    attn_launch<true>(a, n_tiles, s);
    if (a.n_splits > 1) {
        int64_t rows = (int64_t)n_tok * n_heads;
        attn_combine_kernel<<<(unsigned)rows, 64, 0, s>>>(a.o, a.ws_o, a.ws_ml, a.n_splits, rows,
                                                         hd);
        CUDA_LAUNCH_CHECK();
    }
}
