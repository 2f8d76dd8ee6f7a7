/*
 * Valley2's SigLIP tower, projector and AnyRes assembly (docs/MODEL.md, "Valley2 SigLIP
 * forward", "Valley2 projectors") over the backend table. See siglip.h for the forward in one
 * screen; this file follows it top to bottom: weights and buffers, per-call host work
 * (patchify, segments, the assembly's row indices), then the forward.
 */
#include "engine/siglip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of ovis_conv_adapter's visual-vocabulary logits computed per pass: bounds that
 * scratch at OVIS_CHUNK × mlp_hidden_dim (32000 wide in the released config). */
#define OVIS_CHUNK 512

/* nn.LayerNorm's default eps: ovis_conv_adapter's LayerNorm over the visual vocabulary. */
#define OVIS_LN_EPS 1e-5f

struct siglip_layer {                /* backend-resident, owned (released in siglip_destroy) */
    struct tensor ln1_w, ln1_b, ln2_w, ln2_b;       /* (E) */
    struct tensor q_w, q_b, k_w, k_b, v_w, v_b;     /* (E, E), (E) */
    struct tensor o_w, o_b;                         /* (E, E), (E) */
    struct tensor fc1_w, fc1_b, fc2_w, fc2_b;       /* (F, E), (F), (E, F), (E) */
};

struct siglip {
    struct backend *b;           /* borrowed */
    enum dtype act;              /* the backend's activation dtype */
    enum mm_projector proj;
    int32_t E, F, n_layers, n_heads, head_dim, C, P, S, G, T, H, MH;
    float eps;
    int32_t max_tiles;
    int64_t patch_dim;           /* C·P·P */
    int64_t np, nt;              /* patches per tile (G²), projector rows per tile (T²) */
    int32_t ovis_chunk;

    /* weights, backend memory, owned */
    struct tensor patch_w, patch_b;         /* (E, patch_dim), (E) */
    struct siglip_layer *layers;            /* (n_layers), owned host array */
    struct tensor post_w, post_b;           /* (E) */
    struct tensor mlp0_w, mlp0_b;           /* conv_adapter (MH, E), (MH); ovis (MH, E), none */
    struct tensor mlp2_w, mlp2_b;           /* conv_adapter (H, MH), (H) */
    struct tensor conv_w, conv_b;           /* (Cout, 9·Cin), (Cout): H for conv_adapter, E for ovis */
    struct tensor ln_w, ln_b;               /* ovis: (MH) */
    struct tensor emb_t;                    /* ovis: the embedding table transposed, (H, MH) */

    /* scratch, backend memory, owned; sized for max_tiles tiles */
    void *pos;       /* (np, E) act: the position embeddings, added per tile */
    void *pix_f32;   /* (max_tiles·np, patch_dim) f32: the uploaded patch rows */
    void *pix;       /* (max_tiles·np, patch_dim) act; == pix_f32 when act is f32 */
    void *x, *a;     /* (max_tiles·np, E) residual stream, normed input / branch output */
    void *q, *k, *v, *o; /* (max_tiles·np, E) each, viewed (rows, heads, head_dim) */
    void *h;         /* (max_tiles·np, F) MLP hidden */
    void *m1;        /* conv_adapter: (np, MH) one tile's projector hidden */
    void *m2;        /* conv_adapter: (np, H) one tile's projected patch map */
    void *col;       /* (nt, 9·Cin) one tile's im2col rows */
    void *cv;        /* ovis: (max_tiles·nt, E) the convolved map */
    void *lg;        /* ovis: (ovis_chunk, MH) visual-vocabulary logits / probabilities */
    void *tok;       /* (max_tiles·nt, H) projector output, tile by tile */
    void *win;       /* ((max_tiles - 1)·nt, H) the kept window before pooling */

    /* host, owned; rebuilt by every siglip_encode */
    float *pix_host;     /* (max_tiles·np, patch_dim) */
    int32_t *cu_seqlens; /* (max_tiles + 1) one attention segment per tile */
    int32_t *idx;        /* (max_tiles·nt) rows gathered by the assembly */
};

/* ==== Weights and buffers ====
 * Each weight is used in place or converted by the backend once (backend_map_weight); host
 * views in the model are not kept. Scratch is one allocation per buffer, all sized at init. */

static int scratch(struct siglip *s, void **dst, int64_t rows, int64_t cols, enum dtype t,
                   struct vlm_err *err)
{
    return backend_scratch(s->b, dst, rows, cols, t, "siglip", err);
}

/* A contiguous (rows, cols) view of a buffer. */
static struct tensor mat(void *data, enum dtype t, int64_t rows, int64_t cols)
{
    return tensor_make(data, t, cols, rows, 1, 1);
}

/* ovis_conv_adapter multiplies the probabilities (n, MH) by the embedding table (MH, H); the
 * backend's product takes its weight as (out, in), so the table is transposed once, on the
 * host, in its own dtype, and copied to the backend. */
static int load_transposed(struct siglip *s, struct tensor *dst, const struct tensor *src,
                           struct vlm_err *err)
{
    int64_t rows = src->ne[1], cols = src->ne[0];
    size_t es = dtype_size(src->type);
    char *t = xmalloc((size_t)(rows * cols) * es);
    for (int64_t r = 0; r < rows; r++) {
        const char *row = (const char *)src->data + r * src->nb[1];
        for (int64_t c = 0; c < cols; c++) memcpy(t + (size_t)(c * rows + r) * es, row + c * es, es);
    }
    struct tensor host = tensor_make(t, src->type, rows, cols, 1, 1);
    *dst = s->b->ops->load_weight(s->b->ctx, &host);
    free(t);
    if (!dst->data)
        return vlm_err_set(err, VLM_ENOMEM, 503, "siglip: out of backend memory loading embedding");
    return 0;
}

static int load_layers(struct siglip *s, const struct valley2_weights *w, struct vlm_err *err)
{
    int rc = 0;
    s->layers = xcalloc((size_t)s->n_layers, sizeof *s->layers);
    for (int32_t l = 0; l < s->n_layers && !rc; l++) {
        const struct siglip_layer_weights *f = &w->layers[l];
        struct siglip_layer *d = &s->layers[l];
        const struct backend_weight layer[] = {
            {&d->ln1_w, &f->ln1_w, "layer_norm1.weight"}, {&d->ln1_b, &f->ln1_b, "layer_norm1.bias"},
            {&d->q_w, &f->q_w, "q_proj.weight"},          {&d->q_b, &f->q_b, "q_proj.bias"},
            {&d->k_w, &f->k_w, "k_proj.weight"},          {&d->k_b, &f->k_b, "k_proj.bias"},
            {&d->v_w, &f->v_w, "v_proj.weight"},          {&d->v_b, &f->v_b, "v_proj.bias"},
            {&d->o_w, &f->o_w, "out_proj.weight"},        {&d->o_b, &f->o_b, "out_proj.bias"},
            {&d->ln2_w, &f->ln2_w, "layer_norm2.weight"}, {&d->ln2_b, &f->ln2_b, "layer_norm2.bias"},
            {&d->fc1_w, &f->fc1_w, "mlp.fc1.weight"},     {&d->fc1_b, &f->fc1_b, "mlp.fc1.bias"},
            {&d->fc2_w, &f->fc2_w, "mlp.fc2.weight"},     {&d->fc2_b, &f->fc2_b, "mlp.fc2.bias"},
        };
        rc = backend_map_weights(s->b, layer, ARRAY_LEN(layer), "siglip", err);
    }
    return rc;
}

static int load_projector(struct siglip *s, const struct valley2_weights *w, struct vlm_err *err)
{
    const struct backend_weight common[] = {
        {&s->conv_w, &w->conv_w, "mm_projector.conv.weight"},
        {&s->conv_b, &w->conv_b, "mm_projector.conv.bias"},
        {&s->mlp0_w, &w->mlp0_w, "mm_projector.mlp.0.weight"},
    };
    const struct backend_weight conv_adapter[] = {
        {&s->mlp0_b, &w->mlp0_b, "mm_projector.mlp.0.bias"},
        {&s->mlp2_w, &w->mlp2_w, "mm_projector.mlp.2.weight"},
        {&s->mlp2_b, &w->mlp2_b, "mm_projector.mlp.2.bias"},
    };
    const struct backend_weight ovis[] = {
        {&s->ln_w, &w->ln_w, "mm_projector.mlp.1.weight"},
        {&s->ln_b, &w->ln_b, "mm_projector.mlp.1.bias"},
    };
    int rc = backend_map_weights(s->b, common, ARRAY_LEN(common), "siglip", err);
    if (s->proj == MM_PROJ_CONV_ADAPTER) {
        if (!rc) rc = backend_map_weights(s->b, conv_adapter, ARRAY_LEN(conv_adapter), "siglip", err);
    } else {
        if (!rc) rc = backend_map_weights(s->b, ovis, ARRAY_LEN(ovis), "siglip", err);
        if (!rc) rc = load_transposed(s, &s->emb_t, &w->embedding, err);
    }
    return rc;
}

static int alloc_scratch(struct siglip *s, struct vlm_err *err)
{
    enum dtype t = s->act;
    int64_t R = (int64_t)s->max_tiles * s->np, N = (int64_t)s->max_tiles * s->nt;
    int64_t cin = s->proj == MM_PROJ_CONV_ADAPTER ? s->H : s->E;
    int rc = scratch(s, &s->pos, s->np, s->E, t, err);
    if (!rc) rc = scratch(s, &s->pix_f32, R, s->patch_dim, DT_F32, err);
    if (!rc && t != DT_F32) rc = scratch(s, &s->pix, R, s->patch_dim, t, err);
    else s->pix = s->pix_f32;
    if (!rc) rc = scratch(s, &s->x, R, s->E, t, err);
    if (!rc) rc = scratch(s, &s->a, R, s->E, t, err);
    if (!rc) rc = scratch(s, &s->q, R, s->E, t, err);
    if (!rc) rc = scratch(s, &s->k, R, s->E, t, err);
    if (!rc) rc = scratch(s, &s->v, R, s->E, t, err);
    if (!rc) rc = scratch(s, &s->o, R, s->E, t, err);
    if (!rc) rc = scratch(s, &s->h, R, s->F, t, err);
    if (s->proj == MM_PROJ_CONV_ADAPTER) {
        if (!rc) rc = scratch(s, &s->m1, s->np, s->MH, t, err);
        if (!rc) rc = scratch(s, &s->m2, s->np, s->H, t, err);
    } else {
        if (!rc) rc = scratch(s, &s->cv, N, s->E, t, err);
        if (!rc) rc = scratch(s, &s->lg, s->ovis_chunk, s->MH, t, err);
    }
    if (!rc) rc = scratch(s, &s->col, s->nt, 9 * cin, t, err);
    if (!rc) rc = scratch(s, &s->tok, N, s->H, t, err);
    if (!rc) rc = scratch(s, &s->win, N - s->nt, s->H, t, err);
    return rc;
}

/* The position table, once, in the activation dtype (the add op takes two activations): a
 * temporary backend copy of the weight, cast into s->pos. */
static int load_positions(struct siglip *s, const struct tensor *src, struct vlm_err *err)
{
    struct tensor pw = s->b->ops->load_weight(s->b->ctx, src);
    if (!pw.data)
        return vlm_err_set(err, VLM_ENOMEM, 503, "siglip: out of backend memory loading "
                           "position_embedding");
    struct tensor pos = mat(s->pos, s->act, s->np, s->E);
    s->b->ops->cast(s->b->ctx, &pos, &pw);
    s->b->ops->sync(s->b->ctx);
    backend_release_tensor(s->b, &pw);
    return 0;
}

int siglip_init(struct siglip **out, struct backend *b, const struct model *m,
                int32_t max_tiles, struct vlm_err *err)
{
    const struct model_config *c = &m->cfg;
    const struct valley2_weights *w = &m->w.v2;
    *out = NULL;
    if (!c->has_siglip || c->mm_projector == MM_PROJ_NONE)
        return vlm_err_set(err, VLM_EINVAL, 500, "siglip: model has no SigLIP tower");
    if (max_tiles < 1)
        return vlm_err_set(err, VLM_EINVAL, 500, "siglip: max_tiles %d is not positive", max_tiles);
    if (c->sig_heads <= 0 || c->sig_hidden % c->sig_heads)
        return vlm_err_set(err, VLM_EINVAL, 500, "siglip: width %d is not a multiple of %d heads",
                           c->sig_hidden, c->sig_heads);

    struct siglip *s = xcalloc(1, sizeof *s);
    s->b = b;
    s->act = b->ops->act_type;
    s->proj = c->mm_projector;
    s->E = c->sig_hidden;
    s->F = c->sig_ffn;
    s->n_layers = c->sig_layers;
    s->n_heads = c->sig_heads;
    s->head_dim = c->sig_hidden / c->sig_heads;
    s->C = c->sig_channels;
    s->P = c->sig_patch;
    s->S = c->sig_image;
    s->G = c->sig_image / c->sig_patch;          /* Conv2d drops the last S mod P pixels */
    s->T = (s->G - 1) / 2 + 1;                    /* the 3×3 stride-2 pad-1 convolution */
    s->H = c->hidden_size;
    s->MH = (int32_t)w->mlp0_w.ne[1];             /* mlp_hidden_dim as bound */
    s->eps = c->sig_eps;
    s->max_tiles = max_tiles;
    s->patch_dim = (int64_t)s->C * s->P * s->P;
    s->np = (int64_t)s->G * s->G;
    s->nt = (int64_t)s->T * s->T;
    s->ovis_chunk = (int32_t)VLM_MIN((int64_t)max_tiles * s->nt, (int64_t)OVIS_CHUNK);
    VLM_ASSERT(w->patch_w.ne[0] == s->patch_dim && w->patch_w.ne[1] == s->E);
    VLM_ASSERT(w->pos_embed.ne[1] == s->np && w->pos_embed.ne[0] == s->E);

    const struct backend_weight outer[] = {
        {&s->patch_w, &w->patch_w, "patch_embedding.weight"},
        {&s->patch_b, &w->patch_b, "patch_embedding.bias"},
        {&s->post_w, &w->post_ln_w, "post_layernorm.weight"},
        {&s->post_b, &w->post_ln_b, "post_layernorm.bias"},
    };
    int rc = backend_map_weights(s->b, outer, ARRAY_LEN(outer), "siglip", err);
    if (!rc) rc = load_layers(s, w, err);
    if (!rc) rc = load_projector(s, w, err);
    if (!rc) rc = alloc_scratch(s, err);
    if (!rc) rc = load_positions(s, &w->pos_embed, err);
    if (rc) {
        siglip_destroy(s);
        return rc;
    }
    s->pix_host = xmalloc((size_t)max_tiles * (size_t)s->np * (size_t)s->patch_dim * sizeof(float));
    s->cu_seqlens = xmalloc(((size_t)max_tiles + 1) * sizeof(int32_t));
    s->idx = xmalloc((size_t)max_tiles * (size_t)s->nt * sizeof(int32_t));

    log_info("siglip: %d layers, width %d, %d heads x %d, mlp %d, %d-pixel tiles (%dx%d patches "
             "-> %dx%d), %s projector -> %d, max %d tiles", s->n_layers, s->E, s->n_heads,
             s->head_dim, s->F, s->S, s->G, s->G, s->T, s->T,
             s->proj == MM_PROJ_CONV_ADAPTER ? "conv_adapter" : "ovis_conv_adapter", s->H,
             max_tiles);
    *out = s;
    return 0;
}

int32_t siglip_max_tiles(const struct siglip *s)
{
    return s->max_tiles;
}

void siglip_destroy(struct siglip *s)
{
    if (!s) return;
    backend_release_tensor(s->b, &s->patch_w);
    backend_release_tensor(s->b, &s->patch_b);
    for (int32_t l = 0; s->layers && l < s->n_layers; l++) {
        struct siglip_layer *d = &s->layers[l];
        struct tensor *all[] = {&d->ln1_w, &d->ln1_b, &d->ln2_w, &d->ln2_b, &d->q_w, &d->q_b,
                                &d->k_w,   &d->k_b,   &d->v_w,   &d->v_b,   &d->o_w, &d->o_b,
                                &d->fc1_w, &d->fc1_b, &d->fc2_w, &d->fc2_b};
        for (size_t i = 0; i < ARRAY_LEN(all); i++) backend_release_tensor(s->b, all[i]);
    }
    free(s->layers);
    struct tensor *wts[] = {&s->post_w, &s->post_b, &s->mlp0_w, &s->mlp0_b, &s->mlp2_w,
                            &s->mlp2_b, &s->conv_w, &s->conv_b, &s->ln_w,   &s->ln_b,
                            &s->emb_t};
    for (size_t i = 0; i < ARRAY_LEN(wts); i++) backend_release_tensor(s->b, wts[i]);
    if (s->pix != s->pix_f32) backend_release(s->b, s->pix);
    backend_release(s->b, s->pix_f32);
    void *bufs[] = {s->pos, s->x,  s->a,  s->q,  s->k,   s->v,   s->o,  s->h,
                    s->m1,  s->m2, s->col, s->cv, s->lg, s->tok, s->win};
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) backend_release(s->b, bufs[i]);
    free(s->pix_host);
    free(s->cu_seqlens);
    free(s->idx);
    free(s);
}

/* ==== Per-call host work ==== */

/* A geometry the assembly can follow (docs/MODEL.md, "Valley2 image preprocessing"). */
static bool input_ok(const struct siglip *s, const struct siglip_input *in)
{
    int32_t T = s->T;
    if (!in->tiles || in->n_tiles < 1) return false;
    if ((in->grid_w == 0) != (in->grid_h == 0) || in->grid_w < 0 || in->grid_h < 0) return false;
    if ((int64_t)in->n_tiles != 1 + (int64_t)in->grid_w * in->grid_h) return false;
    int64_t map_h = (int64_t)in->grid_h * T, map_w = (int64_t)in->grid_w * T;
    if (in->keep_y < 0 || in->keep_x < 0 || in->keep_h < 0 || in->keep_w < 0) return false;
    if (in->keep_y + (int64_t)in->keep_h > map_h || in->keep_x + (int64_t)in->keep_w > map_w)
        return false;
    if (in->pool_h < 0 || in->pool_w < 0) return false;
    int64_t crop = (int64_t)in->pool_h * in->pool_w;
    if (crop > 0 && (in->pool_h > in->keep_h || in->pool_w > in->keep_w)) return false;
    return in->n_tokens == s->nt + crop;
}

/* Tiles (C, S, S) → patch rows (tile, py, px) of C·P·P values in the Conv2d weight's
 * (c, ky, kx) order; the last S mod P pixel rows and columns are not read. */
static void patchify(struct siglip *s, const float *tiles, int32_t n_tiles)
{
    int32_t C = s->C, P = s->P, S = s->S, G = s->G;
    for (int32_t t = 0; t < n_tiles; t++) {
        const float *tile = tiles + (size_t)t * (size_t)C * (size_t)S * (size_t)S;
        for (int32_t py = 0; py < G; py++)
            for (int32_t px = 0; px < G; px++) {
                float *row = s->pix_host + ((size_t)t * (size_t)s->np + (size_t)(py * G + px)) *
                                               (size_t)s->patch_dim;
                for (int32_t c = 0; c < C; c++)
                    for (int32_t ky = 0; ky < P; ky++)
                        memcpy(row + ((size_t)c * P + ky) * P,
                               tile + ((size_t)c * S + (size_t)(py * P + ky)) * S + (size_t)px * P,
                               (size_t)P * sizeof(float));
            }
    }
}

/* Row indices into the projector output (tile-major, T² rows a tile) of the kept window of the
 * stitched crop map: map row y, column x is tile 1 + (y/T)·grid_w + x/T, row (y mod T)·T + x mod T. */
static void window_rows(const struct siglip *s, const struct siglip_input *in, int32_t *idx)
{
    int32_t T = s->T;
    int64_t i = 0;
    for (int32_t y = in->keep_y; y < in->keep_y + in->keep_h; y++)
        for (int32_t x = in->keep_x; x < in->keep_x + in->keep_w; x++) {
            int64_t tile = 1 + (int64_t)(y / T) * in->grid_w + x / T;
            idx[i++] = (int32_t)(tile * s->nt + (int64_t)(y % T) * T + x % T);
        }
}

/* ==== Forward ==== */

/* Rows [r0, r0 + n) of a buffer of rows of cols values. */
static struct tensor rows_of(void *data, enum dtype t, int64_t r0, int64_t n, int64_t cols)
{
    return mat((char *)data + (size_t)(r0 * cols) * dtype_size(t), t, n, cols);
}

/* The tower over R = n_tiles·G² patch rows: x then a = post_layernorm(x) (R, E). */
static void tower(struct siglip *s, int32_t n_tiles)
{
    const struct backend_ops *ops = s->b->ops;
    void *ctx = s->b->ctx;
    enum dtype t = s->act;
    int64_t R = (int64_t)n_tiles * s->np;
    int32_t E = s->E, hd = s->head_dim, nh = s->n_heads;

    struct tensor pix = mat(s->pix, t, R, s->patch_dim);
    if (s->pix != s->pix_f32) {
        struct tensor pf = mat(s->pix_f32, DT_F32, R, s->patch_dim);
        ops->cast(ctx, &pix, &pf);
    }
    struct tensor x = mat(s->x, t, R, E), a = mat(s->a, t, R, E);
    struct tensor q = mat(s->q, t, R, E), k = mat(s->k, t, R, E), v = mat(s->v, t, R, E);
    struct tensor o = mat(s->o, t, R, E), h = mat(s->h, t, R, s->F);
    struct tensor q3 = tensor_make(s->q, t, hd, nh, R, 1), k3 = tensor_make(s->k, t, hd, nh, R, 1);
    struct tensor v3 = tensor_make(s->v, t, hd, nh, R, 1), o3 = tensor_make(s->o, t, hd, nh, R, 1);
    float scale = 1.0f / sqrtf((float)hd);

    /* patch embedding (Conv2d, kernel = stride = P, with bias) as one product, then the
     * learned position of each patch, tile by tile */
    ops->matmul(ctx, &x, &pix, &s->patch_w, &s->patch_b);
    struct tensor pos = mat(s->pos, t, s->np, E);
    for (int32_t i = 0; i < n_tiles; i++) {
        struct tensor xt = rows_of(s->x, t, i * s->np, s->np, E);
        ops->add(ctx, &xt, &xt, &pos);
    }

    for (int32_t l = 0; l < s->n_layers; l++) {
        const struct siglip_layer *L = &s->layers[l];
        ops->layernorm(ctx, &a, &x, &L->ln1_w, &L->ln1_b, s->eps);
        ops->matmul(ctx, &q, &a, &L->q_w, &L->q_b);
        ops->matmul(ctx, &k, &a, &L->k_w, &L->k_b);
        ops->matmul(ctx, &v, &a, &L->v_w, &L->v_b);
        ops->attn_varlen(ctx, &o3, &q3, &k3, &v3, s->cu_seqlens, n_tiles, scale);
        ops->matmul(ctx, &a, &o, &L->o_w, &L->o_b);
        ops->add(ctx, &x, &x, &a);
        ops->layernorm(ctx, &a, &x, &L->ln2_w, &L->ln2_b, s->eps);
        ops->matmul(ctx, &h, &a, &L->fc1_w, &L->fc1_b);
        ops->gelu_tanh(ctx, &h, &h);
        ops->matmul(ctx, &a, &h, &L->fc2_w, &L->fc2_b);
        ops->add(ctx, &x, &x, &a);
    }
    ops->layernorm(ctx, &a, &x, &s->post_w, &s->post_b, s->eps);
}

/* The 3×3 stride-2 pad-1 convolution of one tile's G×G map x (G², cin) into y (T², cout):
 * im2col, then a product with bias (the im2col rows are 9·cin wide, 32256 for conv_adapter at
 * H = 3584, so one tile's worth is what is kept). */
static void conv_tile(struct siglip *s, struct tensor *y, const struct tensor *x, int64_t cin)
{
    struct tensor col = mat(s->col, s->act, s->nt, 9 * cin);
    s->b->ops->im2col_3x3s2(s->b->ctx, &col, x, s->G, s->G);
    s->b->ops->matmul(s->b->ctx, y, &col, &s->conv_w, &s->conv_b);
}

/* The projector: a (n_tiles·G², E) → tok (n_tiles·T², H) (docs/MODEL.md, "Valley2 projectors").
 * cls_patch puts a copy of each tile's first row in front of its G² rows and both projectors
 * drop that row before the convolution; conv_adapter's MLP is row-wise, so the copy never
 * reaches the output and is not computed. */
static void projector(struct siglip *s, int32_t n_tiles)
{
    const struct backend_ops *ops = s->b->ops;
    void *ctx = s->b->ctx;
    enum dtype t = s->act;
    int64_t N = (int64_t)n_tiles * s->nt;
    if (s->proj == MM_PROJ_CONV_ADAPTER) {
        /* per tile: Linear → GELU (nn.GELU(): the exact erf form) → Linear, then the
         * convolution of the resulting map */
        struct tensor m1 = mat(s->m1, t, s->np, s->MH), m2 = mat(s->m2, t, s->np, s->H);
        for (int32_t i = 0; i < n_tiles; i++) {
            struct tensor at = rows_of(s->a, t, i * s->np, s->np, s->E);
            struct tensor ot = rows_of(s->tok, t, i * s->nt, s->nt, s->H);
            ops->matmul(ctx, &m1, &at, &s->mlp0_w, &s->mlp0_b);
            ops->gelu_erf(ctx, &m1, &m1);
            ops->matmul(ctx, &m2, &m1, &s->mlp2_w, &s->mlp2_b);
            conv_tile(s, &ot, &m2, s->H);
        }
        return;
    }
    /* ovis_conv_adapter: the convolution on the tower's width, then per row a probability
     * over the visual vocabulary, softmax(LayerNorm(cv · W0ᵀ)), times the embedding table */
    for (int32_t i = 0; i < n_tiles; i++) {
        struct tensor at = rows_of(s->a, t, i * s->np, s->np, s->E);
        struct tensor ct = rows_of(s->cv, t, i * s->nt, s->nt, s->E);
        conv_tile(s, &ct, &at, s->E);
    }
    for (int64_t r0 = 0; r0 < N; r0 += s->ovis_chunk) {
        int64_t nr = VLM_MIN(N - r0, (int64_t)s->ovis_chunk);
        struct tensor cv = rows_of(s->cv, t, r0, nr, s->E);
        struct tensor lg = mat(s->lg, t, nr, s->MH);
        struct tensor out = rows_of(s->tok, t, r0, nr, s->H);
        ops->matmul(ctx, &lg, &cv, &s->mlp0_w, NULL);
        ops->layernorm(ctx, &lg, &lg, &s->ln_w, &s->ln_b, OVIS_LN_EPS);
        ops->softmax_rows(ctx, &lg, &lg);
        ops->matmul(ctx, &out, &lg, &s->emb_t, NULL);
    }
}

int siglip_encode(struct siglip *s, const struct siglip_input *in, struct tensor *out)
{
    const struct backend_ops *ops = s->b->ops;
    void *ctx = s->b->ctx;
    enum dtype t = s->act;

    /* 1. validate */
    if (in->n_tiles > s->max_tiles) return VLM_ETOOBIG;
    if (!input_ok(s, in)) return VLM_EINVAL;
    if (out->type != t || out->ne[0] != s->H || tensor_nrows(out) != in->n_tokens)
        return VLM_EINVAL;

    /* 2. host work: patch rows up, one attention segment per tile */
    int32_t n = in->n_tiles;
    patchify(s, in->tiles, n);
    ops->upload(ctx, s->pix_f32, s->pix_host,
                (size_t)n * (size_t)s->np * (size_t)s->patch_dim * sizeof(float));
    for (int32_t i = 0; i <= n; i++) s->cu_seqlens[i] = (int32_t)(i * s->np);

    /* 3. tower and projector over all tiles at once */
    tower(s, n);
    projector(s, n);

    /* 4. assembly: the base tile's T² rows, then the kept window of the stitched crop map,
     * pooled when its shape changes (unpadding before pooling, as the reference) */
    struct tensor o_all = mat(out->data, t, in->n_tokens, s->H);
    struct tensor tok = mat(s->tok, t, (int64_t)n * s->nt, s->H);
    for (int64_t i = 0; i < s->nt; i++) s->idx[i] = (int32_t)i;
    int64_t crop = (int64_t)in->pool_h * in->pool_w;
    bool pooled = crop > 0 && (in->pool_h != in->keep_h || in->pool_w != in->keep_w);
    if (crop > 0 && !pooled) {
        window_rows(s, in, s->idx + s->nt);
        ops->gather_rows(ctx, &o_all, &tok, s->idx);
        return 0;
    }
    struct tensor base = tensor_rows(&o_all, 0, s->nt);
    ops->gather_rows(ctx, &base, &tok, s->idx);
    if (pooled) {
        int64_t nk = (int64_t)in->keep_h * in->keep_w;
        window_rows(s, in, s->idx + s->nt);
        struct tensor win = mat(s->win, t, nk, s->H);
        struct tensor rest = tensor_rows(&o_all, s->nt, crop);
        ops->gather_rows(ctx, &win, &tok, s->idx + s->nt);
        ops->avgpool_adaptive(ctx, &rest, &win, in->keep_h, in->keep_w, in->pool_h, in->pool_w);
    }
    return 0;
}
