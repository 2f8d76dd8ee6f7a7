/*
 * The vision tower and projector (docs/MODEL.md, "Vision tower", "Projector") over the backend
 * table. See vit.h for the forward pass in one screen; this file follows it top to bottom: weights
 * and buffers, per-call host metadata (rotary tables, segments), then the forward.
 */
#include "engine/vit.h"

#include <math.h>
#include <stdlib.h>

/* Output rows of the projector's hidden layer computed per pass: bounds the scratch at
 * MERGER_CHUNK × merger_hidden (the real projector's hidden width is ~64k). */
#define MERGER_CHUNK 512

struct vit_block {                   /* backend-resident, owned (released in vit_destroy) */
    struct tensor norm1_w, norm1_b;  /* (dim) */
    struct tensor qkv_w, qkv_b;      /* (3*dim, dim), (3*dim): rows Q | K | V, head-major */
    struct tensor proj_w, proj_b;    /* (dim, dim), (dim) */
    struct tensor norm2_w, norm2_b;  /* (dim) */
    struct tensor fc1_w, fc1_b;      /* (mlp, dim), (mlp) */
    struct tensor fc2_w, fc2_b;      /* (dim, mlp), (dim) */
};

struct vit {
    struct backend *b;           /* borrowed */
    enum dtype act;              /* the backend's activation dtype */
    int32_t dim, n_heads, head_dim, mlp, depth, merge, patch_dim, hidden, merger_hidden;
    bool quick_gelu;
    int32_t max_patches, merger_chunk;

    /* weights, backend memory, owned */
    struct tensor patch_embed;                /* (dim, patch_dim) */
    struct vit_block *blocks;                 /* (depth), owned host array */
    struct tensor ln_q_w, ln_q_b;             /* (dim) */
    struct tensor mfc1_w, mfc1_b;             /* (merger_hidden, merge²·dim), (merger_hidden) */
    struct tensor mfc2_w, mfc2_b;             /* (hidden, merger_hidden), (hidden) */

    /* scratch, backend memory, owned; sized for max_patches rows */
    void *pix_f32;   /* (max_patches, patch_dim) f32: the uploaded pixel rows */
    void *pix;       /* (max_patches, patch_dim) act; == pix_f32 when act is f32 */
    void *x;         /* (max_patches, dim) the residual stream */
    void *a;         /* (max_patches, dim) normed input / branch output */
    void *q, *k, *v; /* (max_patches, n_heads, head_dim) each */
    void *o;         /* (max_patches, n_heads, head_dim) attention output */
    void *h;         /* (max_patches, mlp) MLP hidden */
    void *mh;        /* (merger_chunk, merger_hidden) projector hidden */
    void *cos, *sin; /* (max_patches, head_dim) f32 rotary tables */

    /* host metadata, owned; rebuilt by every vit_encode */
    float *cos_host, *sin_host;  /* (max_patches, head_dim) */
    int32_t *cu_seqlens;         /* (max_patches / merge² + 1) segment starts */
    float *inv_freq;             /* (head_dim / 4) */
};

/* ==== Weights and buffers ====
 * Each weight is used in place or converted by the backend once (backend_map_weight); host
 * views in the model are not kept. Scratch is one allocation per buffer, all sized at init. */

static int scratch(struct vit *v, void **dst, int64_t rows, int64_t cols, enum dtype t,
                   struct vlm_err *err)
{
    return backend_scratch(v->b, dst, rows, cols, t, "vit", err);
}

int vit_init(struct vit **out, struct backend *b, const struct model *m, int32_t max_patches,
             struct vlm_err *err)
{
    const struct model_config *c = &m->cfg;
    const struct model_weights *w = &m->w;
    *out = NULL;
    if (!c->has_vision) return vlm_err_set(err, VLM_EINVAL, 500, "vit: model has no vision tower");
    int32_t m2 = c->spatial_merge_size * c->spatial_merge_size;
    if (max_patches <= 0 || max_patches % m2)
        return vlm_err_set(err, VLM_EINVAL, 500, "vit: max_patches %d is not a positive multiple of %d",
                           max_patches, m2);
    if (c->vit_num_heads <= 0 || c->vit_embed_dim % c->vit_num_heads ||
        (c->vit_embed_dim / c->vit_num_heads) % 4)
        return vlm_err_set(err, VLM_EINVAL, 500, "vit: embed_dim %d / num_heads %d gives a head "
                           "size that is not a multiple of 4", c->vit_embed_dim, c->vit_num_heads);

    struct vit *v = xcalloc(1, sizeof *v);
    v->b = b;
    v->act = b->ops->act_type;
    v->dim = c->vit_embed_dim;
    v->n_heads = c->vit_num_heads;
    v->head_dim = c->vit_embed_dim / c->vit_num_heads;
    v->mlp = c->vit_mlp_hidden;
    v->depth = c->vit_depth;
    v->merge = c->spatial_merge_size;
    v->patch_dim = c->in_chans * c->temporal_patch_size * c->patch_size * c->patch_size;
    v->hidden = c->hidden_size;
    v->merger_hidden = c->merger_hidden;
    v->quick_gelu = c->vit_quick_gelu;
    v->max_patches = max_patches;
    v->merger_chunk = VLM_MIN(max_patches / m2, MERGER_CHUNK);
    VLM_ASSERT(w->patch_embed.ne[0] == v->patch_dim && w->patch_embed.ne[1] == v->dim);
    VLM_ASSERT(w->merger_fc1_w.ne[0] == (int64_t)m2 * v->dim);

    int rc = backend_map_weights(v->b, &(struct backend_weight){&v->patch_embed, &w->patch_embed,
                                                                "patch_embed"}, 1, "vit", err);
    v->blocks = xcalloc((size_t)v->depth, sizeof *v->blocks);
    for (int32_t l = 0; l < v->depth && !rc; l++) {
        const struct vit_block_weights *s = &w->vit_blocks[l];
        struct vit_block *d = &v->blocks[l];
        const struct backend_weight block[] = {
            {&d->norm1_w, &s->norm1_w, "norm1.weight"}, {&d->norm1_b, &s->norm1_b, "norm1.bias"},
            {&d->qkv_w, &s->qkv_w, "attn.qkv.weight"},  {&d->qkv_b, &s->qkv_b, "attn.qkv.bias"},
            {&d->proj_w, &s->proj_w, "attn.proj.weight"}, {&d->proj_b, &s->proj_b, "attn.proj.bias"},
            {&d->norm2_w, &s->norm2_w, "norm2.weight"}, {&d->norm2_b, &s->norm2_b, "norm2.bias"},
            {&d->fc1_w, &s->fc1_w, "mlp.fc1.weight"},   {&d->fc1_b, &s->fc1_b, "mlp.fc1.bias"},
            {&d->fc2_w, &s->fc2_w, "mlp.fc2.weight"},   {&d->fc2_b, &s->fc2_b, "mlp.fc2.bias"},
        };
        rc = backend_map_weights(v->b, block, ARRAY_LEN(block), "vit", err);
    }
    const struct backend_weight merger[] = {
        {&v->ln_q_w, &w->merger_ln_w, "merger.ln_q.weight"},
        {&v->ln_q_b, &w->merger_ln_b, "merger.ln_q.bias"},
        {&v->mfc1_w, &w->merger_fc1_w, "merger.mlp.0.weight"},
        {&v->mfc1_b, &w->merger_fc1_b, "merger.mlp.0.bias"},
        {&v->mfc2_w, &w->merger_fc2_w, "merger.mlp.2.weight"},
        {&v->mfc2_b, &w->merger_fc2_b, "merger.mlp.2.bias"},
    };
    if (!rc) rc = backend_map_weights(v->b, merger, ARRAY_LEN(merger), "vit", err);

    int64_t P = max_patches;
    if (!rc) rc = scratch(v, &v->pix_f32, P, v->patch_dim, DT_F32, err);
    if (!rc && v->act != DT_F32) rc = scratch(v, &v->pix, P, v->patch_dim, v->act, err);
    else v->pix = v->pix_f32;
    if (!rc) rc = scratch(v, &v->x, P, v->dim, v->act, err);
    if (!rc) rc = scratch(v, &v->a, P, v->dim, v->act, err);
    if (!rc) rc = scratch(v, &v->q, P, v->dim, v->act, err);
    if (!rc) rc = scratch(v, &v->k, P, v->dim, v->act, err);
    if (!rc) rc = scratch(v, &v->v, P, v->dim, v->act, err);
    if (!rc) rc = scratch(v, &v->o, P, v->dim, v->act, err);
    if (!rc) rc = scratch(v, &v->h, P, v->mlp, v->act, err);
    if (!rc) rc = scratch(v, &v->mh, v->merger_chunk, v->merger_hidden, v->act, err);
    if (!rc) rc = scratch(v, &v->cos, P, v->head_dim, DT_F32, err);
    if (!rc) rc = scratch(v, &v->sin, P, v->head_dim, DT_F32, err);
    if (rc) {
        vit_destroy(v);
        return rc;
    }

    v->cos_host = xmalloc((size_t)P * (size_t)v->head_dim * sizeof(float));
    v->sin_host = xmalloc((size_t)P * (size_t)v->head_dim * sizeof(float));
    v->cu_seqlens = xmalloc(((size_t)P / (size_t)m2 + 1) * sizeof(int32_t));
    /* as VisionRotaryEmbedding(head_dim/2): inv_freq_j = 1 / 10000^(2j / (head_dim/2)),
     * j < head_dim/4, in f32 */
    int32_t rdim = v->head_dim / 2;
    v->inv_freq = xmalloc((size_t)(rdim / 2) * sizeof(float));
    for (int32_t j = 0; j < rdim / 2; j++)
        v->inv_freq[j] = 1.0f / powf(10000.0f, (float)(2 * j) / (float)rdim);

    log_info("vit: depth %d dim %d heads %d mlp %d merger %d -> %d, max %d patches",
             v->depth, v->dim, v->n_heads, v->mlp, v->merger_hidden, v->hidden, max_patches);
    *out = v;
    return 0;
}

int32_t vit_max_patches(const struct vit *v)
{
    return v->max_patches;
}

void vit_destroy(struct vit *v)
{
    if (!v) return;
    backend_release_tensor(v->b, &v->patch_embed);
    for (int32_t l = 0; v->blocks && l < v->depth; l++) {
        struct vit_block *d = &v->blocks[l];
        struct tensor *all[] = {&d->norm1_w, &d->norm1_b, &d->qkv_w, &d->qkv_b, &d->proj_w,
                                &d->proj_b, &d->norm2_w, &d->norm2_b, &d->fc1_w, &d->fc1_b,
                                &d->fc2_w, &d->fc2_b};
        for (size_t i = 0; i < ARRAY_LEN(all); i++) backend_release_tensor(v->b, all[i]);
    }
    free(v->blocks);
    backend_release_tensor(v->b, &v->ln_q_w);
    backend_release_tensor(v->b, &v->ln_q_b);
    backend_release_tensor(v->b, &v->mfc1_w);
    backend_release_tensor(v->b, &v->mfc1_b);
    backend_release_tensor(v->b, &v->mfc2_w);
    backend_release_tensor(v->b, &v->mfc2_b);
    if (v->pix != v->pix_f32) backend_release(v->b, v->pix);
    backend_release(v->b, v->pix_f32);
    void *bufs[] = {v->x, v->a, v->q, v->k, v->v, v->o, v->h, v->mh, v->cos, v->sin};
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) backend_release(v->b, bufs[i]);
    free(v->cos_host);
    free(v->sin_host);
    free(v->cu_seqlens);
    free(v->inv_freq);
    free(v);
}

/* ==== Per-call metadata ====
 * Host side, into the preallocated arrays: the rotary angle table of every patch row and the
 * attention segments. Patch rows are stored in merge-window order (docs/MODEL.md, "Patchify"): for
 * each temporal slice, windows (bh, bw) row-major, and inside a window (dy, dx) row-major; the
 * patch sits at grid (row, col) = (m·bh + dy, m·bw + dx). Positions restart per item. */

/* Fills cos/sin rows [r0, r0 + t·h·w) of item it and its t segments. Returns the new row. */
static int64_t item_meta(struct vit *v, const struct mm_item *it, int64_t r0, int32_t *n_seg)
{
    int32_t mg = v->merge, hd = v->head_dim, q4 = hd / 4;
    int64_t r = r0;
    for (int32_t t = 0; t < it->grid_t; t++) {
        v->cu_seqlens[++*n_seg] = (int32_t)(r + (int64_t)it->grid_h * it->grid_w);
        for (int32_t bh = 0; bh < it->grid_h / mg; bh++)
            for (int32_t bw = 0; bw < it->grid_w / mg; bw++)
                for (int32_t dy = 0; dy < mg; dy++)
                    for (int32_t dx = 0; dx < mg; dx++, r++) {
                        float row = (float)(mg * bh + dy), col = (float)(mg * bw + dx);
                        float *c = v->cos_host + r * hd, *s = v->sin_host + r * hd;
                        /* φ = [θ_row(hd/4), θ_col(hd/4)] repeated twice */
                        for (int32_t j = 0; j < q4; j++) {
                            float ar = row * v->inv_freq[j], ac = col * v->inv_freq[j];
                            c[j] = c[j + 2 * q4] = cosf(ar);
                            s[j] = s[j + 2 * q4] = sinf(ar);
                            c[j + q4] = c[j + 3 * q4] = cosf(ac);
                            s[j + q4] = s[j + 3 * q4] = sinf(ac);
                        }
                    }
    }
    return r;
}

/* Checks one item's grid against the tower's geometry. */
static bool item_ok(const struct vit *v, const struct mm_item *it)
{
    int32_t mg = v->merge;
    if (!it->pixels || it->grid_t < 1 || it->grid_h < mg || it->grid_w < mg) return false;
    if (it->grid_h % mg || it->grid_w % mg) return false;
    int64_t p = (int64_t)it->grid_t * it->grid_h * it->grid_w;
    return p == it->n_patches && p / (mg * mg) == mm_item_vit_tokens(it);
}

/* ==== Forward ==== */

/* A contiguous (rows, cols) view of a scratch buffer. */
static struct tensor mat(void *data, enum dtype t, int64_t rows, int64_t cols)
{
    return tensor_make(data, t, cols, rows, 1, 1);
}

/* Elements [off, off + n) of a 1-D weight (a bias slice). */
static struct tensor slice1(const struct tensor *w, int64_t off, int64_t n)
{
    return tensor_make((char *)w->data + off * (int64_t)dtype_size(w->type), w->type, n, 1, 1, 1);
}

int vit_encode(struct vit *v, const struct mm_item *const *items, int32_t n, struct tensor *out)
{
    const struct backend_ops *ops = v->b->ops;
    void *ctx = v->b->ctx;
    int32_t m2 = v->merge * v->merge;

    /* 1. validate and size */
    int64_t P = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!item_ok(v, items[i])) return VLM_EINVAL;
        P += items[i]->n_patches;
        if (P > v->max_patches) return VLM_ETOOBIG;
    }
    if (n <= 0 || P == 0) return VLM_EINVAL;
    int64_t N = P / m2;
    if (out->type != v->act || out->ne[0] != v->hidden || tensor_nrows(out) != N) return VLM_EINVAL;

    /* 2. host metadata, then pixel rows and tables up */
    int32_t n_seg = 0;
    v->cu_seqlens[0] = 0;
    int64_t r = 0;
    size_t row_bytes = (size_t)v->patch_dim * sizeof(float);
    for (int32_t i = 0; i < n; i++) {
        ops->upload(ctx, (char *)v->pix_f32 + (size_t)r * row_bytes, items[i]->pixels,
                    (size_t)items[i]->n_patches * row_bytes);
        r = item_meta(v, items[i], r, &n_seg);
    }
    VLM_ASSERT(r == P && v->cu_seqlens[n_seg] == P);
    size_t tab_bytes = (size_t)P * (size_t)v->head_dim * sizeof(float);
    ops->upload(ctx, v->cos, v->cos_host, tab_bytes);
    ops->upload(ctx, v->sin, v->sin_host, tab_bytes);

    enum dtype t = v->act;
    int32_t hd = v->head_dim, nh = v->n_heads, dim = v->dim;
    struct tensor pix = mat(v->pix, t, P, v->patch_dim);
    if (v->pix != v->pix_f32) {
        struct tensor pf = mat(v->pix_f32, DT_F32, P, v->patch_dim);
        ops->cast(ctx, &pix, &pf);
    }
    struct tensor x = mat(v->x, t, P, dim), a = mat(v->a, t, P, dim);
    struct tensor q = mat(v->q, t, P, dim), k = mat(v->k, t, P, dim), vv = mat(v->v, t, P, dim);
    struct tensor o = mat(v->o, t, P, dim), h = mat(v->h, t, P, v->mlp);
    /* the same buffers as (P, n_heads, head_dim) for rope and attention */
    struct tensor q3 = tensor_make(v->q, t, hd, nh, P, 1), k3 = tensor_make(v->k, t, hd, nh, P, 1);
    struct tensor v3 = tensor_make(v->v, t, hd, nh, P, 1), o3 = tensor_make(v->o, t, hd, nh, P, 1);
    struct tensor cs = mat(v->cos, DT_F32, P, hd), sn = mat(v->sin, DT_F32, P, hd);
    float scale = 1.0f / sqrtf((float)hd);

    /* 3. patch embedding: the Conv3d (kernel = stride) is one product, no bias */
    ops->matmul(ctx, &x, &pix, &v->patch_embed, NULL);

    /* 4. pre-LN blocks */
    for (int32_t l = 0; l < v->depth; l++) {
        struct vit_block *bl = &v->blocks[l];
        /* a = norm1(x); q|k|v = a·W_qkvᵀ + b, the three row blocks of W_qkv as one product each */
        ops->layernorm(ctx, &a, &x, &bl->norm1_w, &bl->norm1_b, 1e-6f);
        struct tensor wq = tensor_rows(&bl->qkv_w, 0, dim), wk = tensor_rows(&bl->qkv_w, dim, dim);
        struct tensor wv = tensor_rows(&bl->qkv_w, 2 * dim, dim);
        struct tensor bq = slice1(&bl->qkv_b, 0, dim), bk = slice1(&bl->qkv_b, dim, dim);
        struct tensor bv = slice1(&bl->qkv_b, 2 * dim, dim);
        ops->matmul(ctx, &q, &a, &wq, &bq);
        ops->matmul(ctx, &k, &a, &wk, &bk);
        ops->matmul(ctx, &vv, &a, &wv, &bv);
        /* 2-D rotary on q and k; attention inside each item's segment */
        ops->rope_table(ctx, &q3, &cs, &sn);
        ops->rope_table(ctx, &k3, &cs, &sn);
        ops->attn_varlen(ctx, &o3, &q3, &k3, &v3, v->cu_seqlens, n_seg, scale);
        /* x = x + proj(o) */
        ops->matmul(ctx, &a, &o, &bl->proj_w, &bl->proj_b);
        ops->add(ctx, &x, &x, &a);
        /* x = x + fc2(act(fc1(norm2(x)))) */
        ops->layernorm(ctx, &a, &x, &bl->norm2_w, &bl->norm2_b, 1e-6f);
        ops->matmul(ctx, &h, &a, &bl->fc1_w, &bl->fc1_b);
        if (v->quick_gelu) ops->quick_gelu(ctx, &h, &h);
        else ops->gelu_erf(ctx, &h, &h);
        ops->matmul(ctx, &a, &h, &bl->fc2_w, &bl->fc2_b);
        ops->add(ctx, &x, &x, &a);
    }

    /* 5. projector: per-patch ln_q, then m² consecutive rows (one merge window) form one
     * (m²·dim) row; fc1 → exact GELU → fc2, in chunks of merger_chunk output rows */
    ops->layernorm(ctx, &a, &x, &v->ln_q_w, &v->ln_q_b, 1e-6f);
    struct tensor y = mat(v->a, t, N, (int64_t)m2 * dim), o_all = mat(out->data, t, N, v->hidden);
    for (int64_t r0 = 0; r0 < N; r0 += v->merger_chunk) {
        int64_t nr = VLM_MIN(N - r0, (int64_t)v->merger_chunk);
        struct tensor yr = tensor_rows(&y, r0, nr);
        struct tensor mh = mat(v->mh, t, nr, v->merger_hidden);
        struct tensor outr = tensor_rows(&o_all, r0, nr);
        ops->matmul(ctx, &mh, &yr, &v->mfc1_w, &v->mfc1_b);
        ops->gelu_erf(ctx, &mh, &mh);
        ops->matmul(ctx, &outr, &mh, &v->mfc2_w, &v->mfc2_b);
    }
    return 0;
}
