/*
 * bench_vit: vision tower + projector time for one image on the CPU backend.
 *
 *   bench_vit [model_dir] [image_px] [iters] [threads]
 *
 * Defaults: $VLM_MODELS/gqa4 (the tiny test tower), a 448x448 image (32x32 patches, 1024
 * rows, 256 tokens), 5 timed iterations after one warm-up, all cores. Pixel rows are
 * pseudo-random: the tower's cost does not depend on their values. Prints figures, never
 * asserts on them.
 */
#include "engine/vit.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    char def[4096];
    const char *models = getenv("VLM_MODELS");
    snprintf(def, sizeof def, "%s/gqa4", models ? models : "models");
    const char *dir = argc > 1 ? argv[1] : def;
    int px = argc > 2 ? atoi(argv[2]) : 448;
    int iters = argc > 3 ? atoi(argv[3]) : 5;
    int threads = argc > 4 ? atoi(argv[4]) : 0;

    struct vlm_err err = {0};
    struct model m = {0};
    if (model_load(&m, dir, &err)) {
        fprintf(stderr, "bench_vit: %s\n", err.msg);
        return 1;
    }
    const struct model_config *c = &m.cfg;
    int unit = c->patch_size * c->spatial_merge_size;
    int gh = px / unit * c->spatial_merge_size, gw = gh;
    if (gh < c->spatial_merge_size || iters < 1) {
        fprintf(stderr, "bench_vit: image must be at least %d px, iters >= 1\n", unit);
        return 1;
    }
    int32_t P = gh * gw, pd = c->in_chans * c->temporal_patch_size * c->patch_size * c->patch_size;
    float *pix = xmalloc((size_t)P * (size_t)pd * sizeof *pix);
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < (int64_t)P * pd; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        pix[i] = (float)((s >> 40) & 0xffff) / 16384.0f - 2.0f;
    }
    int32_t m2 = c->spatial_merge_size * c->spatial_merge_size;
    struct mm_item it = {.pixels = pix, .grid_t = 1, .grid_h = gh, .grid_w = gw, .n_patches = P,
                         .n_tokens = P / m2};
    const struct mm_item *items[1] = {&it};

    struct backend b = {0};
    struct backend_params bp = {.n_threads = threads};
    struct vit *v = NULL;
    if (backend_cpu_init(&b, &bp, &err) || vit_init(&v, &b, &m, P, &err)) {
        fprintf(stderr, "bench_vit: %s\n", err.msg);
        return 1;
    }
    float *out = b.ops->alloc(b.ctx, (size_t)it.n_tokens * (size_t)c->hidden_size * sizeof(float));
    struct tensor ot = tensor_make(out, DT_F32, c->hidden_size, it.n_tokens, 1, 1);
    VLM_ASSERT(vit_encode(v, items, 1, &ot) == 0); /* warm-up */
    b.ops->sync(b.ctx);

    uint64_t t0 = vlm_now_ns();
    for (int i = 0; i < iters; i++) VLM_ASSERT(vit_encode(v, items, 1, &ot) == 0);
    b.ops->sync(b.ctx);
    double ms = (double)(vlm_now_ns() - t0) / 1e6 / iters;

    /* multiply-adds x 2: patch embed, per block qkv + proj + mlp + attention, projector */
    double d = c->vit_embed_dim, mlp = c->vit_mlp_hidden, p = P;
    double blk = 2 * p * d * 3 * d + 2 * p * d * d + 4 * p * d * mlp + 4 * p * p * d;
    double flop = 2 * p * pd * d + c->vit_depth * blk +
                  2 * (p / m2) * (m2 * d) * c->merger_hidden + 2 * (p / m2) * c->merger_hidden * c->hidden_size;
    printf("bench_vit: %s: depth %d dim %d heads %d, %dx%d px = %d patches -> %d tokens, "
           "%d threads: %.2f ms/image, %.2f GFLOP, %.1f GFLOP/s\n",
           dir, c->vit_depth, c->vit_embed_dim, c->vit_num_heads, px, px, P, it.n_tokens,
           threads ? threads : 0, ms, flop / 1e9, flop / 1e9 / (ms / 1e3));

    b.ops->release(b.ctx, out);
    vit_destroy(v);
    backend_destroy(&b);
    free(pix);
    model_destroy(&m);
    return 0;
}
