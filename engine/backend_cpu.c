/*
 * The CPU backend: backend_ops over kernels/cpu. Activations are f32 in host memory. Weights
 * stay as the checkpoint stores them: map_weight uses a contiguous view of the memory-mapped
 * safetensors in place (bf16, f16 or f32; no copy, so the weights are resident once, as file
 * pages), and load_weight copies other sources keeping their dtype. Only 1-D weights (norm
 * scales, biases: tiny) are widened to f32. Products with 16-bit weights run the blocked
 * kernels of kernels/cpu/gemm16.c at the numerics the backend was created with (exact or
 * fast, struct backend_params); f32 weights go to OpenBLAS. One OpenMP pool owns the cores:
 * OpenBLAS runs single-threaded on each pool thread's slice of the weight rows.
 */
#include "engine/backend.h"
#include "engine/sampler.h"
#include "kernels/cpu.h"

#include <omp.h>
#include <stdlib.h>

struct cpu_ctx {
    int n_threads;
    bool fast;          /* numerics: fast */
    enum cpu_isa isa;   /* the 16-bit product kernels' ISA */
    /* the current step's metadata (borrowed from the caller until the next set_step) */
    struct step_meta step;
    float *attn_scratch; /* (n_threads * cpu_attn_varlen_scratch()) owned */
    void *mm_scratch;    /* (mm_scratch_bytes) owned: the 16-bit products' x blocks */
    size_t mm_scratch_bytes;
    const void **mapped; /* (n_mapped) weights used in place: release() skips them */
    size_t n_mapped, cap_mapped;
};

#define F(t) ((float *)(t)->data)
#define CF(t) ((const float *)(t)->data)

/* ==== Memory ==== */

static void cpu_destroy(void *ctx)
{
    struct cpu_ctx *c = ctx;
    if (c) {
        free(c->attn_scratch);
        free(c->mm_scratch);
        free(c->mapped);
    }
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
    struct cpu_ctx *c = ctx;
    for (size_t i = 0; i < c->n_mapped; i++)
        if (c->mapped[i] == p) {
            c->mapped[i] = c->mapped[--c->n_mapped];
            return;
        }
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

static bool is_matrix(const struct tensor *t)
{
    return tensor_nrows(t) > 1;
}

static bool is_contiguous(const struct tensor *t)
{
    struct tensor c = tensor_make(NULL, t->type, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    return !memcmp(c.nb, t->nb, sizeof c.nb);
}

/* The x-block scratch of the 16-bit products grows (at load time) to the widest K. */
static bool reserve_mm_scratch(struct cpu_ctx *c, int64_t K)
{
    size_t need = (size_t)c->n_threads * (size_t)cpu_matmul_w16_scratch(K);
    if (need <= c->mm_scratch_bytes) return true;
    void *p = cpu_alloc(c, need);
    if (!p) return false;
    free(c->mm_scratch);
    c->mm_scratch = p;
    c->mm_scratch_bytes = need;
    return true;
}

/* A copy: matrices keep their dtype, vectors become f32. */
static struct tensor cpu_load_weight(void *ctx, const struct tensor *src)
{
    struct cpu_ctx *c = ctx;
    enum dtype dt = is_matrix(src) ? src->type : DT_F32;
    struct tensor t = tensor_make(NULL, dt, src->ne[0], src->ne[1], src->ne[2], src->ne[3]);
    VLM_ASSERT(src->type == DT_F32 || src->type == DT_BF16 || src->type == DT_F16);
    if (dt != DT_F32 && !reserve_mm_scratch(c, src->ne[0])) return t;
    char *dst = cpu_alloc(ctx, tensor_nbytes(&t));
    if (!dst) return t;
    int64_t rows = tensor_nrows(src), n0 = src->ne[0];
    size_t rb = (size_t)n0 * dtype_size(dt);
#pragma omp parallel for if (rows > 64)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i1 = r % src->ne[1], i2 = (r / src->ne[1]) % src->ne[2], i3 = r / (src->ne[1] * src->ne[2]);
        const char *row = (const char *)src->data + i1 * src->nb[1] + i2 * src->nb[2] + i3 * src->nb[3];
        if (dt == src->type) memcpy(dst + (size_t)r * rb, row, rb);
        else
            for (int64_t i = 0; i < n0; i++) ((float *)dst)[r * n0 + i] = load_elem(row, src->type, i);
    }
    t.data = dst;
    return t;
}

/* In place when the view is contiguous and already in the dtype the ops read (matrices: any
 * of f32/bf16/f16; vectors: f32), else a copy. */
static struct tensor cpu_map_weight(void *ctx, const struct tensor *src)
{
    struct cpu_ctx *c = ctx;
    bool in_place = is_contiguous(src) && (is_matrix(src) || src->type == DT_F32) &&
                    (src->type == DT_F32 || src->type == DT_BF16 || src->type == DT_F16) &&
                    (uintptr_t)src->data % dtype_size(src->type) == 0;
    if (!in_place) return cpu_load_weight(ctx, src);
    struct tensor t = *src;
    if (src->type != DT_F32 && !reserve_mm_scratch(c, src->ne[0])) {
        t.data = NULL;
        return t;
    }
    if (c->n_mapped == c->cap_mapped) {
        c->cap_mapped = c->cap_mapped ? 2 * c->cap_mapped : 256;
        c->mapped = xrealloc(c->mapped, c->cap_mapped * sizeof *c->mapped);
    }
    c->mapped[c->n_mapped++] = src->data;
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
    struct cpu_ctx *c = ctx;
    int64_t M = tensor_nrows(x), K = x->ne[0], N = w->ne[1];
    VLM_ASSERT(w->ne[0] == K && y->ne[0] == N && tensor_nrows(y) == M);
    VLM_ASSERT(x->type == DT_F32 && y->type == DT_F32 && (!bias || bias->type == DT_F32));
    if (w->type == DT_F32) {
        cpu_matmul(F(y), CF(x), CF(w), bias ? CF(bias) : NULL, M, N, K, c->n_threads);
        return;
    }
    VLM_ASSERT(w->type == DT_BF16 || w->type == DT_F16);
    VLM_ASSERT(c->mm_scratch_bytes >= (size_t)c->n_threads * (size_t)cpu_matmul_w16_scratch(K));
    cpu_matmul_w16(F(y), CF(x), w->data, w->type == DT_F16, bias ? CF(bias) : NULL, M, N, K,
                   c->fast, c->isa, c->mm_scratch, c->n_threads);
}

/* One parallel region for all n when the weights are 16-bit of one type; else one each. */
static void cpu_op_matmul_n(void *ctx, int n, struct tensor *const y[], const struct tensor *x,
                            const struct tensor *const w[], const struct tensor *const b[])
{
    struct cpu_ctx *c = ctx;
    VLM_ASSERT(n >= 1 && n <= CPU_W16_MAX_PRODUCTS);
    bool same = w[0]->type == DT_BF16 || w[0]->type == DT_F16;
    for (int i = 1; i < n; i++) same = same && w[i]->type == w[0]->type;
    if (!same) {
        for (int i = 0; i < n; i++) cpu_op_matmul(ctx, y[i], x, w[i], b[i]);
        return;
    }
    int64_t M = tensor_nrows(x), K = x->ne[0];
    VLM_ASSERT(x->type == DT_F32);
    VLM_ASSERT(c->mm_scratch_bytes >= (size_t)c->n_threads * (size_t)cpu_matmul_w16_scratch(K));
    struct cpu_w16_product p[CPU_W16_MAX_PRODUCTS];
    for (int i = 0; i < n; i++) {
        int64_t N = w[i]->ne[1];
        VLM_ASSERT(w[i]->ne[0] == K && y[i]->ne[0] == N && tensor_nrows(y[i]) == M);
        VLM_ASSERT(y[i]->type == DT_F32 && (!b[i] || b[i]->type == DT_F32));
        p[i] = (struct cpu_w16_product){.y = F(y[i]), .w = w[i]->data,
                                        .bias = b[i] ? CF(b[i]) : NULL, .N = N};
    }
    cpu_matmul_w16_multi(p, n, CF(x), w[0]->type == DT_F16, M, K, c->fast, c->isa, c->mm_scratch,
                         c->n_threads);
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
    int64_t dim = y->ne[0];
    VLM_ASSERT(tensor_nrows(y) == c->step.n_tokens && dim == table->ne[0]);
    for (int32_t i = 0; i < c->step.n_tokens; i++)
        VLM_ASSERT(c->step.tokens[i] >= 0 && c->step.tokens[i] < table->ne[1]);
    if (table->type == DT_F32) {
        cpu_embed(F(y), CF(table), c->step.tokens, c->step.n_tokens, dim);
        return;
    }
    for (int32_t i = 0; i < c->step.n_tokens; i++) {
        const char *row = (const char *)table->data + (int64_t)c->step.tokens[i] * table->nb[1];
        for (int64_t d = 0; d < dim; d++) F(y)[i * dim + d] = load_elem(row, table->type, d);
    }
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
                    c->attn_scratch, c->n_threads);
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

static void cpu_op_gelu_tanh(void *ctx, struct tensor *y, const struct tensor *x)
{
    (void)ctx;
    VLM_ASSERT(tensor_nelem(x) == tensor_nelem(y));
    cpu_gelu_tanh(F(y), CF(x), tensor_nelem(y));
}

static void cpu_op_im2col_3x3s2(void *ctx, struct tensor *y, const struct tensor *x, int32_t h,
                                int32_t w)
{
    (void)ctx;
    int64_t C = x->ne[0], oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
    VLM_ASSERT(h > 0 && w > 0 && tensor_nrows(x) == (int64_t)h * w);
    VLM_ASSERT(y->ne[0] == 9 * C && tensor_nrows(y) == oh * ow && y->data != x->data);
    cpu_im2col_3x3s2(F(y), CF(x), h, w, C);
}

static void cpu_op_avgpool_adaptive(void *ctx, struct tensor *y, const struct tensor *x,
                                    int32_t ih, int32_t iw, int32_t oh, int32_t ow)
{
    (void)ctx;
    VLM_ASSERT(ih > 0 && iw > 0 && oh > 0 && ow > 0);
    VLM_ASSERT(tensor_nrows(x) == (int64_t)ih * iw && tensor_nrows(y) == (int64_t)oh * ow);
    VLM_ASSERT(y->ne[0] == x->ne[0] && y->data != x->data);
    cpu_avgpool_adaptive(F(y), CF(x), ih, iw, oh, ow, x->ne[0]);
}

static void cpu_op_softmax_rows(void *ctx, struct tensor *y, const struct tensor *x)
{
    (void)ctx;
    VLM_ASSERT(tensor_nelem(x) == tensor_nelem(y) && y->ne[0] == x->ne[0]);
    cpu_softmax_rows(F(y), CF(x), tensor_nrows(x), x->ne[0]);
}

static void cpu_op_sample_summary(void *ctx, void *out, const struct tensor *logits,
                                  const float *inv_t, const double *u)
{
    (void)ctx;
    VLM_ASSERT(logits->type == DT_F32 && logits->ne[2] == 1 && logits->ne[3] == 1);
    cpu_sample_summary(out, CF(logits), logits->ne[1], logits->ne[0],
                       logits->nb[1] / (int64_t)sizeof(float), inv_t, u);
}

static const struct backend_fused_ops cpu_fused = {
    .add_rmsnorm = cpu_op_add_rmsnorm,
    .norm_rope = cpu_op_norm_rope,
    .matmul_n = cpu_op_matmul_n,
};

static void cpu_op_mask_logits(void *ctx, struct tensor *logits, const uint32_t *mask)
{
    (void)ctx;
    VLM_ASSERT(logits->type == DT_F32 && logits->ne[2] == 1 && logits->ne[3] == 1);
    int32_t V = (int32_t)logits->ne[0], W = (V + 31) / 32;
    for (int64_t r = 0; r < logits->ne[1]; r++)
        sampler_apply_mask((float *)((char *)logits->data + r * logits->nb[1]),
                           mask + (size_t)r * (size_t)W, V);
}

static const struct backend_sampling_ops cpu_sampling = {
    .sample_summary = cpu_op_sample_summary,
    .mask_logits = cpu_op_mask_logits,
};

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
    .map_weight = cpu_map_weight,
    .set_step = cpu_set_step,
    .matmul = cpu_op_matmul,
    .add = cpu_op_add,
    .rmsnorm = cpu_op_rmsnorm,
    .layernorm = cpu_op_layernorm,
    .rope_neox = cpu_op_rope_neox,
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
    .gelu_tanh = cpu_op_gelu_tanh,
    .im2col_3x3s2 = cpu_op_im2col_3x3s2,
    .avgpool_adaptive = cpu_op_avgpool_adaptive,
    .softmax_rows = cpu_op_softmax_rows,
    .fused = &cpu_fused,
    .sampling = &cpu_sampling,
};

int backend_cpu_init(struct backend *b, const struct backend_params *p, struct vlm_err *err)
{
    (void)err;
    struct cpu_ctx *c = xcalloc(1, sizeof *c);
    c->n_threads = p && p->n_threads > 0 ? p->n_threads : omp_get_num_procs();
    c->fast = p && p->numerics == NUMERICS_FAST;
    c->isa = cpu_isa_best();
    c->attn_scratch =
        xmalloc((size_t)c->n_threads * (size_t)cpu_attn_varlen_scratch() * sizeof(float));
    omp_set_num_threads(c->n_threads);
    /* the OpenMP pool owns the cores; OpenBLAS runs inside it, one thread per call */
    cpu_set_blas_threads(1);
    log_info("cpu backend: %d threads, numerics %s, %s kernels for bf16/f16 weights (used "
             "in place), OpenBLAS for f32 weights",
             c->n_threads, c->fast ? "fast" : "exact",
             cpu_isa_name(cpu_matmul_w16_path(c->isa, c->fast)));
    b->ops = &cpu_ops;
    b->ctx = c;
    return 0;
}
