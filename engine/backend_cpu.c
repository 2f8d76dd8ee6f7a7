/*
 * The CPU backend: backend_ops over kernels/cpu. Activations and weights are f32 in host
 * memory; bf16/f16 weights are converted once at load (measured in docs/PERF.md: the
 * conversion costs one pass at start-up and doubles weight memory, and keeps every product
 * a plain sgemm). This backend is the reference every other backend is checked against,
 * so it favours clarity.
 */
#include "engine/backend.h"
#include "kernels/cpu.h"

#include <omp.h>
#include <stdlib.h>

struct cpu_ctx {
    int n_threads;
    /* the current step's metadata (borrowed from the caller until the next set_step) */
    struct step_meta step;
    float *attn_scratch; /* (cpu_attn_varlen_scratch()) owned */
};

#define F(t) ((float *)(t)->data)
#define CF(t) ((const float *)(t)->data)

/* ==== Memory ==== */

static void cpu_destroy(void *ctx)
{
    if (ctx) free(((struct cpu_ctx *)ctx)->attn_scratch);
    free(ctx);
}

static void *cpu_alloc(void *ctx, size_t bytes)
{
    (void)ctx;
    /* 64-byte aligned for vector loads */
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? (bytes + 63) & ~(size_t)63 : 64)) return NULL;
    return p;
}

static void cpu_release(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

static void cpu_copy(void *ctx, void *dst, const void *src, size_t n)
{
    (void)ctx;
    memcpy(dst, src, n);
}

static void cpu_zero(void *ctx, void *dst, size_t n)
{
    (void)ctx;
    memset(dst, 0, n);
}

static void cpu_sync(void *ctx)
{
    (void)ctx;
}

static bool cpu_supports(void *ctx, enum op op, enum dtype type)
{
    (void)ctx;
    (void)op;
    return type == DT_F32;
}

/* Converts one element of any float dtype to f32. */
static float load_elem(const void *row, enum dtype t, int64_t i)
{
    switch (t) {
    case DT_F32: return ((const float *)row)[i];
    case DT_BF16: return bf16_to_f32(((const uint16_t *)row)[i]);
    case DT_F16: return f16_to_f32(((const uint16_t *)row)[i]);
    default: VLM_ASSERT(!"weights must be f32, bf16 or f16");
    }
    return 0.0f;
}

static struct tensor cpu_load_weight(void *ctx, const struct tensor *src)
{
    struct tensor t = tensor_make(NULL, DT_F32, src->ne[0], src->ne[1], src->ne[2], src->ne[3]);
    float *dst = cpu_alloc(ctx, tensor_nbytes(&t));
    if (!dst) return t;
    int64_t rows = tensor_nrows(src), n0 = src->ne[0];
#pragma omp parallel for if (rows > 64)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i1 = r % src->ne[1], i2 = (r / src->ne[1]) % src->ne[2], i3 = r / (src->ne[1] * src->ne[2]);
        const char *row = (const char *)src->data + i1 * src->nb[1] + i2 * src->nb[2] + i3 * src->nb[3];
        for (int64_t i = 0; i < n0; i++) dst[r * n0 + i] = load_elem(row, src->type, i);
    }
    t.data = dst;
    return t;
}

/* ==== Ops ==== */

static void cpu_set_step(void *ctx, const struct step_meta *m)
{
    ((struct cpu_ctx *)ctx)->step = *m;
}

static void cpu_op_matmul(void *ctx, struct tensor *y, const struct tensor *x,
                          const struct tensor *w, const struct tensor *bias)
{
    (void)ctx;
    int64_t M = tensor_nrows(x), K = x->ne[0], N = w->ne[1];
    VLM_ASSERT(w->ne[0] == K && y->ne[0] == N && tensor_nrows(y) == M);
    VLM_ASSERT(x->type == DT_F32 && w->type == DT_F32 && y->type == DT_F32);
    cpu_matmul(F(y), CF(x), CF(w), bias ? CF(bias) : NULL, M, N, K);
}

static void cpu_op_add(void *ctx, struct tensor *y, const struct tensor *a, const struct tensor *b)
{
    (void)ctx;
    VLM_ASSERT(tensor_nelem(a) == tensor_nelem(b) && tensor_nelem(y) == tensor_nelem(a));
    cpu_add(F(y), CF(a), CF(b), tensor_nelem(y));
}

static void cpu_op_rmsnorm(void *ctx, struct tensor *y, const struct tensor *x,
                           const struct tensor *w, float eps)
{
    (void)ctx;
    VLM_ASSERT(w->ne[0] == x->ne[0]);
    cpu_rmsnorm(F(y), CF(x), CF(w), tensor_nrows(x), x->ne[0], eps);
}

/* The reference for the fused op is the two ops in sequence. */
static void cpu_op_add_rmsnorm(void *ctx, struct tensor *res, struct tensor *y,
                               const struct tensor *d, const struct tensor *w, float eps)
{
    (void)ctx;
    VLM_ASSERT(tensor_nelem(res) == tensor_nelem(d) && w->ne[0] == res->ne[0]);
    cpu_add(F(res), CF(res), CF(d), tensor_nelem(res));
    cpu_rmsnorm(F(y), CF(res), CF(w), tensor_nrows(res), res->ne[0], eps);
}

static void cpu_op_layernorm(void *ctx, struct tensor *y, const struct tensor *x,
                             const struct tensor *w, const struct tensor *b, float eps)
{
    (void)ctx;
    VLM_ASSERT(w->ne[0] == x->ne[0] && b->ne[0] == x->ne[0]);
    cpu_layernorm(F(y), CF(x), CF(w), CF(b), tensor_nrows(x), x->ne[0], eps);
}

static void cpu_op_rope_neox(void *ctx, struct tensor *x, float theta)
{
    struct cpu_ctx *c = ctx;
    VLM_ASSERT(x->ne[2] == c->step.n_tokens && x->ne[0] <= 1024);
    cpu_rope_neox(F(x), c->step.pos, x->ne[2], x->ne[1], x->ne[0], theta);
}

static void cpu_op_norm_rope(void *ctx, struct tensor *x, const struct tensor *w, float theta,
                             float eps)
{
    cpu_op_rmsnorm(ctx, x, x, w, eps);
    cpu_op_rope_neox(ctx, x, theta);
}

static void cpu_op_rope_table(void *ctx, struct tensor *x, const struct tensor *cos,
                              const struct tensor *sin)
{
    (void)ctx;
    VLM_ASSERT(cos->ne[0] == x->ne[0] && cos->ne[1] == x->ne[2]);
    cpu_rope_table(F(x), CF(cos), CF(sin), x->ne[2], x->ne[1], x->ne[0]);
}

static void cpu_op_silu_mul(void *ctx, struct tensor *y, const struct tensor *g,
                            const struct tensor *u)
{
    (void)ctx;
    cpu_silu_mul(F(y), CF(g), CF(u), tensor_nelem(y));
}

static void cpu_op_gelu_erf(void *ctx, struct tensor *y, const struct tensor *x)
{
    (void)ctx;
    cpu_gelu_erf(F(y), CF(x), tensor_nelem(y));
}

static void cpu_op_quick_gelu(void *ctx, struct tensor *y, const struct tensor *x)
{
    (void)ctx;
    cpu_quick_gelu(F(y), CF(x), tensor_nelem(y));
}

static void cpu_op_embed(void *ctx, struct tensor *y, const struct tensor *table)
{
    struct cpu_ctx *c = ctx;
    VLM_ASSERT(tensor_nrows(y) == c->step.n_tokens && y->ne[0] == table->ne[0]);
    for (int32_t i = 0; i < c->step.n_tokens; i++)
        VLM_ASSERT(c->step.tokens[i] >= 0 && c->step.tokens[i] < table->ne[1]);
    cpu_embed(F(y), CF(table), c->step.tokens, c->step.n_tokens, y->ne[0]);
}

static void cpu_op_kv_store(void *ctx, struct kv_layer *kv, const struct tensor *k,
                            const struct tensor *v)
{
    struct cpu_ctx *c = ctx;
    int64_t row = (int64_t)kv->n_kv_heads * kv->head_dim;
    VLM_ASSERT(k->ne[0] * k->ne[1] == row && tensor_nrows(k) / k->ne[1] == c->step.n_tokens);
    cpu_kv_store(kv->k, kv->v, CF(k), CF(v), c->step.slot, c->step.n_tokens, row);
}

static void cpu_op_attn_paged(void *ctx, struct tensor *o, const struct tensor *q,
                              const struct kv_layer *kv, float scale)
{
    struct cpu_ctx *c = ctx;
    const struct step_meta *m = &c->step;
    VLM_ASSERT(q->ne[0] == kv->head_dim && q->ne[2] == m->n_tokens && q->ne[0] <= 512);
    VLM_ASSERT(q->ne[1] % kv->n_kv_heads == 0);
    cpu_attn_paged(F(o), CF(q), kv->k, kv->v, m->q_start, m->ctx_len, m->block_tables,
                   m->n_seqs, m->max_blocks, kv->block_size, q->ne[1], kv->n_kv_heads,
                   kv->head_dim, scale);
}

static void cpu_op_attn_varlen(void *ctx, struct tensor *o, const struct tensor *q,
                               const struct tensor *k, const struct tensor *v,
                               const int32_t *cu, int32_t n_seg, float scale)
{
    struct cpu_ctx *c = ctx;
    VLM_ASSERT(cu[n_seg] == q->ne[2] && o->data != q->data && o->data != k->data &&
               o->data != v->data);
    cpu_attn_varlen(F(o), CF(q), CF(k), CF(v), cu, n_seg, q->ne[1], q->ne[0], scale,
                    c->attn_scratch);
}

static void cpu_op_gather_rows(void *ctx, struct tensor *dst, const struct tensor *src,
                               const int32_t *idx)
{
    (void)ctx;
    size_t row = (size_t)src->nb[1];
    VLM_ASSERT(dst->nb[1] == src->nb[1]);
    for (int64_t i = 0; i < tensor_nrows(dst); i++)
        memcpy((char *)dst->data + i * row, (const char *)src->data + (int64_t)idx[i] * row, row);
}

static void cpu_op_scatter_rows(void *ctx, struct tensor *dst, const struct tensor *src,
                                const int32_t *idx)
{
    (void)ctx;
    size_t row = (size_t)src->nb[1];
    VLM_ASSERT(dst->nb[1] == src->nb[1]);
    for (int64_t i = 0; i < tensor_nrows(src); i++)
        memcpy((char *)dst->data + (int64_t)idx[i] * row, (const char *)src->data + i * row, row);
}

static void cpu_op_cast(void *ctx, struct tensor *y, const struct tensor *x)
{
    (void)ctx;
    int64_t n = tensor_nelem(x);
    VLM_ASSERT(tensor_nelem(y) == n);
    if (y->type == x->type) {
        memcpy(y->data, x->data, tensor_nbytes(x));
        return;
    }
    VLM_ASSERT(y->type == DT_F32);
    for (int64_t i = 0; i < n; i++) F(y)[i] = load_elem(x->data, x->type, i);
}

static void cpu_op_sample_prep(void *ctx, void *out, const struct tensor *logits,
                               const float *inv_t, const double *u)
{
    (void)ctx;
    VLM_ASSERT(logits->type == DT_F32 && logits->ne[2] == 1 && logits->ne[3] == 1);
    cpu_sample_prep(out, CF(logits), logits->ne[1], logits->ne[0],
                    logits->nb[1] / (int64_t)sizeof(float), inv_t, u);
}

static const struct backend_ops cpu_ops = {
    .name = "cpu",
    .act_type = DT_F32,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .supports = cpu_supports,
    .load_weight = cpu_load_weight,
    .set_step = cpu_set_step,
    .matmul = cpu_op_matmul,
    .add = cpu_op_add,
    .rmsnorm = cpu_op_rmsnorm,
    .add_rmsnorm = cpu_op_add_rmsnorm,
    .layernorm = cpu_op_layernorm,
    .rope_neox = cpu_op_rope_neox,
    .norm_rope = cpu_op_norm_rope,
    .rope_table = cpu_op_rope_table,
    .silu_mul = cpu_op_silu_mul,
    .gelu_erf = cpu_op_gelu_erf,
    .quick_gelu = cpu_op_quick_gelu,
    .embed = cpu_op_embed,
    .kv_store = cpu_op_kv_store,
    .attn_paged = cpu_op_attn_paged,
    .attn_varlen = cpu_op_attn_varlen,
    .gather_rows = cpu_op_gather_rows,
    .scatter_rows = cpu_op_scatter_rows,
    .cast = cpu_op_cast,
    .sample_prep = cpu_op_sample_prep,
};

int backend_cpu_init(struct backend *b, const struct backend_params *p, struct vlm_err *err)
{
    (void)err;
    struct cpu_ctx *c = xcalloc(1, sizeof *c);
    c->n_threads = p && p->n_threads > 0 ? p->n_threads : omp_get_num_procs();
    c->attn_scratch = xmalloc((size_t)cpu_attn_varlen_scratch() * sizeof(float));
    omp_set_num_threads(c->n_threads);
    cpu_set_blas_threads(c->n_threads);
    b->ops = &cpu_ops;
    b->ctx = c;
    return 0;
}
