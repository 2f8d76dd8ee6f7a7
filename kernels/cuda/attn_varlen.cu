/*
 * Vision-tower attention: full (non-causal) attention inside each image's segment of rows,
 * over contiguous q, k, v. The same tiled online-softmax kernel as the decoder (attn.cuh),
 * with group 1 and the segment as the key range, so memory stays O(rows · hd) for any image.
 */
#include "kernels/cuda/attn.cuh"

extern "C" void cuda_attn_varlen(void *o, const void *q, const void *k, const void *v,
                                 const int32_t *cu, const struct cuda_attn_tile *tiles,
                                 int32_t n_tiles, int32_t rows_per_tile, int32_t n_heads,
                                 int32_t hd, float scale, cudaStream_t s)
{
    if (n_tiles <= 0) return;
    struct attn_args a = {};
    a.o = (bf16 *)o;
    a.q = (const bf16 *)q;
    a.k = (const bf16 *)k;
    a.v = (const bf16 *)v;
    a.q_start = cu;
    a.tiles = tiles;
    a.rows_per_tile = rows_per_tile;
    a.n_heads = n_heads;
    a.n_kv_heads = n_heads;
    a.hd = hd;
    a.group = 1;
    a.scale = scale;
    a.n_splits = 1;
    attn_launch<false>(a, n_tiles, s);
}
