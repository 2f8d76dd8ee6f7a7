/*
 * Device emulation: a backend that wraps another (the CPU backend, in tests) and gives it
 * what only device backends have, so the engine's device paths run in CI, where there is no
 * GPU, through the same table entries the CUDA backend implements:
 *   - graphs: the graph ops of backend.h, by recording op calls and replaying them (the
 *     engine's padding of a decode batch to its bucket, fixed-stride block tables, the
 *     identity logit rows, the cache of recorded steps);
 *   - a device of a given size: alloc fails past it and mem_info reports it (the engine's
 *     memory plan: KV pool from --gpu-memory-utilization, out-of-memory at start-up).
 *
 * The recording is faithful where a recorded graph differs from eager calls:
 *   - ops are recorded, not run, between graphs->begin and graphs->end; end runs the
 *     recording once (as CUDA's launch after instantiation);
 *   - host arrays an op copies (gather/scatter indices, ViT segment bounds) are copied at
 *     record time and the copy is what a replay uses, as the CUDA backend's staged copies
 *     are frozen into the graph's memcpy nodes;
 *   - step metadata is read at replay time from wherever set_step() last pointed, as the
 *     CUDA backend's fixed metadata addresses are;
 *   - alloc, upload, download and sync while recording are bugs (illegal during CUDA
 *     stream capture): they abort.
 * It is not faithful in one way: the wrapped CPU ops recompute launch-like decisions from
 * the current metadata on every replay, where CUDA freezes grid sizes; the engine's keys
 * cover those (backend_cuda.c).
 */
#include "engine/backend.h"

#include <stdlib.h>

#define GRAPH_MAX 64 /* recorded steps kept; further keys run eagerly */

enum rec_kind {
    R_MATMUL, R_ADD, R_RMSNORM, R_ADD_RMSNORM, R_LAYERNORM, R_ROPE_NEOX, R_NORM_ROPE,
    R_ROPE_TABLE, R_SILU_MUL, R_GELU_ERF, R_QUICK_GELU, R_EMBED, R_KV_STORE, R_ATTN_PAGED,
    R_ATTN_VARLEN, R_GATHER_ROWS, R_SCATTER_ROWS, R_CAST, R_GELU_TANH, R_IM2COL_3X3S2,
    R_AVGPOOL_ADAPTIVE, R_SOFTMAX_ROWS
};

/* One recorded call: tensors by value (views of memory that outlives the graph), host
 * arrays by copy. Unused fields are zero. */
struct rec_call {
    enum rec_kind kind;
    struct tensor t[5];
    bool has_t4;       /* matmul bias / layernorm b present */
    float f[2];
    int32_t i[4];      /* integer arguments (map sizes) */
    struct kv_layer *kv;
    const int32_t *idx; /* owned copy in a recorded graph (borrowed in an eager call) */
    int32_t n;
};

/* What a key must fix: CUDA launches are shaped by these (grid sizes, strides). */
struct step_shape {
    int32_t n_seqs, n_tokens, max_blocks, max_ctx;
};

struct rec_graph {
    uint64_t key;
    struct step_shape shape;
    struct rec_call *calls; /* owned */
    int32_t n_calls, cap;
};

struct emu_ctx {
    struct backend inner;          /* owned */
    struct backend_ops ops;        /* inner's table with the op entries replaced */
    struct backend_fused_ops fused;       /* ops.fused when inner has the family */
    struct backend_sampling_ops sampling; /* ops.sampling when inner has the family */
    struct backend_graph_ops graph_ops;   /* ops.graphs when graphs are emulated */
    size_t device_bytes, used;     /* emulated device size (0: none) and bytes allocated */
    uint64_t key;                  /* of the last set_step */
    struct step_shape shape;       /* of the last set_step */
    bool recording;
    struct rec_graph graphs[GRAPH_MAX];
    int32_t n_graphs;
};

#define IN(c) ((c)->inner.ops)
#define ICTX(c) ((c)->inner.ctx)

/* ==== Recording ==== */

/* A host array an op reads: copied while recording (the copy is what replays use, as CUDA
 * graphs freeze staged copies), borrowed for an eager call. */
static const int32_t *keep_idx(const struct emu_ctx *c, const int32_t *idx, int64_t n)
{
    if (!c->recording) return idx;
    int32_t *d = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *d);
    if (n > 0) memcpy(d, idx, (size_t)n * sizeof *d);
    return d;
}

static void play(struct emu_ctx *c, const struct rec_call *r)
{
    const struct backend_ops *o = IN(c);
    void *x = ICTX(c);
    struct tensor t[5];
    memcpy(t, r->t, sizeof t);
    switch (r->kind) {
    case R_MATMUL: o->matmul(x, &t[0], &t[1], &t[2], r->has_t4 ? &t[3] : NULL); break;
    case R_ADD: o->add(x, &t[0], &t[1], &t[2]); break;
    case R_RMSNORM: o->rmsnorm(x, &t[0], &t[1], &t[2], r->f[0]); break;
    case R_ADD_RMSNORM: o->fused->add_rmsnorm(x, &t[0], &t[1], &t[2], &t[3], r->f[0]); break;
    case R_LAYERNORM: o->layernorm(x, &t[0], &t[1], &t[2], r->has_t4 ? &t[3] : NULL, r->f[0]); break;
    case R_ROPE_NEOX: o->rope_neox(x, &t[0], r->f[0]); break;
    case R_NORM_ROPE: o->fused->norm_rope(x, &t[0], &t[1], r->f[0], r->f[1]); break;
    case R_ROPE_TABLE: o->rope_table(x, &t[0], &t[1], &t[2]); break;
    case R_SILU_MUL: o->silu_mul(x, &t[0], &t[1], &t[2]); break;
    case R_GELU_ERF: o->gelu_erf(x, &t[0], &t[1]); break;
    case R_QUICK_GELU: o->quick_gelu(x, &t[0], &t[1]); break;
    case R_EMBED: o->embed(x, &t[0], &t[1]); break;
    case R_KV_STORE: o->kv_store(x, r->kv, &t[0], &t[1]); break;
    case R_ATTN_PAGED: o->attn_paged(x, &t[0], &t[1], r->kv, r->f[0]); break;
    case R_ATTN_VARLEN: o->attn_varlen(x, &t[0], &t[1], &t[2], &t[3], r->idx, r->n, r->f[0]); break;
    case R_GATHER_ROWS: o->gather_rows(x, &t[0], &t[1], r->idx); break;
    case R_SCATTER_ROWS: o->scatter_rows(x, &t[0], &t[1], r->idx); break;
    case R_CAST: o->cast(x, &t[0], &t[1]); break;
    case R_GELU_TANH: o->gelu_tanh(x, &t[0], &t[1]); break;
    case R_IM2COL_3X3S2: o->im2col_3x3s2(x, &t[0], &t[1], r->i[0], r->i[1]); break;
    case R_AVGPOOL_ADAPTIVE:
        o->avgpool_adaptive(x, &t[0], &t[1], r->i[0], r->i[1], r->i[2], r->i[3]);
        break;
    case R_SOFTMAX_ROWS: o->softmax_rows(x, &t[0], &t[1]); break;
    }
}

/* Appends r to the graph being recorded, or runs it now. */
static void submit(struct emu_ctx *c, const struct rec_call *r)
{
    if (!c->recording) {
        play(c, r);
        return;
    }
    struct rec_graph *g = &c->graphs[c->n_graphs];
    if (g->n_calls == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->calls = xrealloc(g->calls, (size_t)g->cap * sizeof *g->calls);
    }
    g->calls[g->n_calls++] = *r;
}

/* ==== Wrapped entries ==== */

static void g_destroy(void *ctx)
{
    struct emu_ctx *c = ctx;
    for (int32_t i = 0; i <= c->n_graphs && i < GRAPH_MAX; i++) {
        for (int32_t j = 0; j < c->graphs[i].n_calls; j++) free((void *)c->graphs[i].calls[j].idx);
        free(c->graphs[i].calls);
    }
    backend_destroy(&c->inner);
    free(c);
}

static void not_recording(const struct emu_ctx *c, const char *what)
{
    if (c->recording) {
        log_error("backend_emulate: %s while recording a graph", what);
        abort();
    }
}

/* With an emulated device size, each block carries its size in a 64-byte header (keeping
 * the inner backend's 64-byte alignment). */
#define MEM_HDR 64

static void *g_alloc(void *ctx, size_t n)
{
    struct emu_ctx *c = ctx;
    not_recording(c, "alloc");
    if (!c->device_bytes) return IN(c)->alloc(ICTX(c), n);
    if (n > c->device_bytes - c->used) return NULL;
    char *p = IN(c)->alloc(ICTX(c), n + MEM_HDR);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    c->used += n;
    return p + MEM_HDR;
}

static void g_release(void *ctx, void *p)
{
    struct emu_ctx *c = ctx;
    not_recording(c, "release");
    if (!c->device_bytes || !p) {
        IN(c)->release(ICTX(c), p);
        return;
    }
    size_t n;
    memcpy(&n, (char *)p - MEM_HDR, sizeof n);
    c->used -= n;
    IN(c)->release(ICTX(c), (char *)p - MEM_HDR);
}

static void g_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes)
{
    struct emu_ctx *c = ctx;
    *total_bytes = c->device_bytes;
    *free_bytes = c->device_bytes - c->used;
}

static void g_upload(void *ctx, void *dst, const void *src, size_t n)
{
    not_recording(ctx, "upload");
    IN((struct emu_ctx *)ctx)->upload(ICTX((struct emu_ctx *)ctx), dst, src, n);
}

static void g_download(void *ctx, void *dst, const void *src, size_t n)
{
    not_recording(ctx, "download");
    IN((struct emu_ctx *)ctx)->download(ICTX((struct emu_ctx *)ctx), dst, src, n);
}

static void g_zero(void *ctx, void *dst, size_t n)
{
    not_recording(ctx, "zero");
    IN((struct emu_ctx *)ctx)->zero(ICTX((struct emu_ctx *)ctx), dst, n);
}

static void g_sync(void *ctx)
{
    not_recording(ctx, "sync");
    IN((struct emu_ctx *)ctx)->sync(ICTX((struct emu_ctx *)ctx));
}

static bool g_supports(void *ctx, enum op op, enum dtype type)
{
    return IN((struct emu_ctx *)ctx)->supports(ICTX((struct emu_ctx *)ctx), op, type);
}

static void g_sample_summary(void *ctx, void *out, const struct tensor *logits,
                             const float *inv_t, const double *u)
{
    struct emu_ctx *c = ctx;
    not_recording(c, "sample_summary"); /* the engine samples after the step's graph */
    IN(c)->sampling->sample_summary(ICTX(c), out, logits, inv_t, u);
}

static void g_mask_logits(void *ctx, struct tensor *logits, const uint32_t *mask)
{
    struct emu_ctx *c = ctx;
    not_recording(c, "mask_logits");
    IN(c)->sampling->mask_logits(ICTX(c), logits, mask);
}

/* The inner backend allocates weights itself: with an emulated device size the result is
 * copied into a counted block. */
static struct tensor g_load_weight(void *ctx, const struct tensor *src)
{
    struct emu_ctx *c = ctx;
    not_recording(c, "load_weight");
    struct tensor t = IN(c)->load_weight(ICTX(c), src);
    if (!c->device_bytes || !t.data) return t;
    void *p = g_alloc(c, tensor_nbytes(&t));
    if (p) memcpy(p, t.data, tensor_nbytes(&t));
    IN(c)->release(ICTX(c), t.data);
    t.data = p;
    return t;
}

static struct tensor g_map_weight(void *ctx, const struct tensor *src)
{
    struct emu_ctx *c = ctx;
    if (c->device_bytes) return g_load_weight(ctx, src); /* a device holds its own copy */
    not_recording(c, "map_weight");
    return IN(c)->map_weight(ICTX(c), src);
}

static void g_set_step(void *ctx, const struct step_meta *m)
{
    struct emu_ctx *c = ctx;
    not_recording(c, "set_step");
    c->key = m->graph_key;
    c->shape = (struct step_shape){m->n_seqs, m->n_tokens, m->max_blocks, m->max_ctx};
    IN(c)->set_step(ICTX(c), m);
}

#define T(i, p) (r->t[i] = *(p))

static void g_matmul(void *ctx, struct tensor *y, const struct tensor *x, const struct tensor *w,
                     const struct tensor *bias)
{
    struct rec_call call = {.kind = R_MATMUL}, *r = &call;
    T(0, y);
    T(1, x);
    T(2, w);
    if (bias) {
        T(3, bias);
        r->has_t4 = true;
    }
    submit(ctx, r);
}

static void g_add(void *ctx, struct tensor *y, const struct tensor *a, const struct tensor *b)
{
    struct rec_call call = {.kind = R_ADD}, *r = &call;
    T(0, y);
    T(1, a);
    T(2, b);
    submit(ctx, r);
}

static void g_rmsnorm(void *ctx, struct tensor *y, const struct tensor *x, const struct tensor *w,
                      float eps)
{
    struct rec_call call = {.kind = R_RMSNORM}, *r = &call;
    T(0, y);
    T(1, x);
    T(2, w);
    r->f[0] = eps;
    submit(ctx, r);
}

static void g_add_rmsnorm(void *ctx, struct tensor *res, struct tensor *y, const struct tensor *d,
                          const struct tensor *w, float eps)
{
    struct rec_call call = {.kind = R_ADD_RMSNORM}, *r = &call;
    T(0, res);
    T(1, y);
    T(2, d);
    T(3, w);
    r->f[0] = eps;
    submit(ctx, r);
}

static void g_layernorm(void *ctx, struct tensor *y, const struct tensor *x, const struct tensor *w,
                        const struct tensor *b, float eps)
{
    struct rec_call call = {.kind = R_LAYERNORM}, *r = &call;
    T(0, y);
    T(1, x);
    T(2, w);
    if (b) {
        T(3, b);
        r->has_t4 = true;
    }
    r->f[0] = eps;
    submit(ctx, r);
}

static void g_rope_neox(void *ctx, struct tensor *x, float theta)
{
    struct rec_call call = {.kind = R_ROPE_NEOX}, *r = &call;
    T(0, x);
    r->f[0] = theta;
    submit(ctx, r);
}

static void g_norm_rope(void *ctx, struct tensor *x, const struct tensor *w, float theta, float eps)
{
    struct rec_call call = {.kind = R_NORM_ROPE}, *r = &call;
    T(0, x);
    T(1, w);
    r->f[0] = theta;
    r->f[1] = eps;
    submit(ctx, r);
}

static void g_rope_table(void *ctx, struct tensor *x, const struct tensor *cos,
                         const struct tensor *sin)
{
    struct rec_call call = {.kind = R_ROPE_TABLE}, *r = &call;
    T(0, x);
    T(1, cos);
    T(2, sin);
    submit(ctx, r);
}

static void g_silu_mul(void *ctx, struct tensor *y, const struct tensor *g, const struct tensor *u)
{
    struct rec_call call = {.kind = R_SILU_MUL}, *r = &call;
    T(0, y);
    T(1, g);
    T(2, u);
    submit(ctx, r);
}

static void g_gelu_erf(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct rec_call call = {.kind = R_GELU_ERF}, *r = &call;
    T(0, y);
    T(1, x);
    submit(ctx, r);
}

static void g_quick_gelu(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct rec_call call = {.kind = R_QUICK_GELU}, *r = &call;
    T(0, y);
    T(1, x);
    submit(ctx, r);
}

static void g_embed(void *ctx, struct tensor *y, const struct tensor *table)
{
    struct rec_call call = {.kind = R_EMBED}, *r = &call;
    T(0, y);
    T(1, table);
    submit(ctx, r);
}

static void g_kv_store(void *ctx, struct kv_layer *kv, const struct tensor *k, const struct tensor *v)
{
    struct rec_call call = {.kind = R_KV_STORE}, *r = &call;
    T(0, k);
    T(1, v);
    r->kv = kv;
    submit(ctx, r);
}

static void g_attn_paged(void *ctx, struct tensor *o, const struct tensor *q,
                         const struct kv_layer *kv, float scale)
{
    struct rec_call call = {.kind = R_ATTN_PAGED}, *r = &call;
    T(0, o);
    T(1, q);
    r->kv = (struct kv_layer *)kv; /* handed back as const */
    r->f[0] = scale;
    submit(ctx, r);
}

static void g_attn_varlen(void *ctx, struct tensor *o, const struct tensor *q,
                          const struct tensor *k, const struct tensor *v, const int32_t *cu,
                          int32_t n_seg, float scale)
{
    struct rec_call call = {.kind = R_ATTN_VARLEN}, *r = &call;
    T(0, o);
    T(1, q);
    T(2, k);
    T(3, v);
    r->idx = keep_idx(ctx, cu, (int64_t)n_seg + 1);
    r->n = n_seg;
    r->f[0] = scale;
    submit(ctx, r);
}

static void g_gather_rows(void *ctx, struct tensor *dst, const struct tensor *src,
                          const int32_t *idx)
{
    struct rec_call call = {.kind = R_GATHER_ROWS}, *r = &call;
    T(0, dst);
    T(1, src);
    r->idx = keep_idx(ctx, idx, tensor_nrows(dst));
    submit(ctx, r);
}

static void g_scatter_rows(void *ctx, struct tensor *dst, const struct tensor *src,
                           const int32_t *idx)
{
    struct rec_call call = {.kind = R_SCATTER_ROWS}, *r = &call;
    T(0, dst);
    T(1, src);
    r->idx = keep_idx(ctx, idx, tensor_nrows(src));
    submit(ctx, r);
}

static void g_cast(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct rec_call call = {.kind = R_CAST}, *r = &call;
    T(0, y);
    T(1, x);
    submit(ctx, r);
}

static void g_gelu_tanh(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct rec_call call = {.kind = R_GELU_TANH}, *r = &call;
    T(0, y);
    T(1, x);
    submit(ctx, r);
}

static void g_im2col_3x3s2(void *ctx, struct tensor *y, const struct tensor *x, int32_t h,
                           int32_t w)
{
    struct rec_call call = {.kind = R_IM2COL_3X3S2, .i = {h, w}}, *r = &call;
    T(0, y);
    T(1, x);
    submit(ctx, r);
}

static void g_avgpool_adaptive(void *ctx, struct tensor *y, const struct tensor *x, int32_t ih,
                               int32_t iw, int32_t oh, int32_t ow)
{
    struct rec_call call = {.kind = R_AVGPOOL_ADAPTIVE, .i = {ih, iw, oh, ow}}, *r = &call;
    T(0, y);
    T(1, x);
    submit(ctx, r);
}

static void g_softmax_rows(void *ctx, struct tensor *y, const struct tensor *x)
{
    struct rec_call call = {.kind = R_SOFTMAX_ROWS}, *r = &call;
    T(0, y);
    T(1, x);
    submit(ctx, r);
}

#undef T

/* ==== Graph entries ==== */

static void replay(struct emu_ctx *c, const struct rec_graph *g)
{
    for (int32_t i = 0; i < g->n_calls; i++) play(c, &g->calls[i]);
}

static bool g_graph_launch(void *ctx)
{
    struct emu_ctx *c = ctx;
    VLM_ASSERT(c->key != 0 && !c->recording);
    for (int32_t i = 0; i < c->n_graphs; i++) {
        if (c->graphs[i].key != c->key) continue;
        /* a replay with other launch shapes would be wrong on CUDA: the key is too coarse */
        VLM_ASSERT(!memcmp(&c->graphs[i].shape, &c->shape, sizeof c->shape));
        replay(c, &c->graphs[i]);
        return true;
    }
    return false;
}

static void g_graph_begin(void *ctx)
{
    struct emu_ctx *c = ctx;
    VLM_ASSERT(c->key != 0 && !c->recording);
    c->recording = true;
    c->graphs[c->n_graphs].n_calls = 0; /* the slot past the kept graphs records */
}

static bool g_graph_end(void *ctx)
{
    struct emu_ctx *c = ctx;
    VLM_ASSERT(c->recording);
    c->recording = false;
    struct rec_graph *g = &c->graphs[c->n_graphs];
    if (c->n_graphs + 1 >= GRAPH_MAX) { /* the last slot only records: keep nothing new */
        for (int32_t j = 0; j < g->n_calls; j++) free((void *)g->calls[j].idx);
        g->n_calls = 0;
        return false;
    }
    g->key = c->key;
    g->shape = c->shape;
    c->n_graphs++;
    replay(c, g);
    return true;
}

void backend_emulate(struct backend *b, const struct backend_emulation *e)
{
    VLM_ASSERT(b->ops && !b->ops->graphs && !b->ops->mem_info);
    struct emu_ctx *c = xcalloc(1, sizeof *c);
    c->inner = *b;
    c->device_bytes = e->device_bytes;
    const struct backend_ops *in = b->ops;
    struct backend_ops *o = &c->ops;
    *o = (struct backend_ops){
        .name = in->name, .act_type = in->act_type, .destroy = g_destroy, .alloc = g_alloc,
        .release = g_release, .upload = g_upload, .download = g_download, .zero = g_zero,
        .sync = g_sync, .supports = g_supports,
        .mem_info = e->device_bytes ? g_mem_info : NULL,
        .load_weight = g_load_weight, .map_weight = in->map_weight ? g_map_weight : NULL,
        .set_step = g_set_step, .matmul = g_matmul, .add = g_add,
        .rmsnorm = g_rmsnorm,
        .layernorm = g_layernorm, .rope_neox = g_rope_neox,
        .rope_table = g_rope_table,
        .silu_mul = g_silu_mul, .gelu_erf = g_gelu_erf, .quick_gelu = g_quick_gelu,
        .embed = g_embed, .kv_store = g_kv_store, .attn_paged = g_attn_paged,
        .attn_varlen = g_attn_varlen, .gather_rows = g_gather_rows,
        .scatter_rows = g_scatter_rows, .cast = g_cast, .gelu_tanh = g_gelu_tanh,
        .im2col_3x3s2 = g_im2col_3x3s2, .avgpool_adaptive = g_avgpool_adaptive,
        .softmax_rows = g_softmax_rows,
    };
    if (in->fused) {
        c->fused = (struct backend_fused_ops){.add_rmsnorm = g_add_rmsnorm,
                                              .norm_rope = g_norm_rope};
        o->fused = &c->fused;
    }
    if (in->sampling) {
        c->sampling = (struct backend_sampling_ops){
            .sample_summary = g_sample_summary,
            .mask_logits = in->sampling->mask_logits ? g_mask_logits : NULL};
        o->sampling = &c->sampling;
    }
    if (e->graphs) {
        c->graph_ops = (struct backend_graph_ops){.launch = g_graph_launch,
                                                  .begin = g_graph_begin, .end = g_graph_end};
        o->graphs = &c->graph_ops;
    }
    b->ops = o;
    b->ctx = c;
}
