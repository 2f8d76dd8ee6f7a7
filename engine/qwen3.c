/*
 * The Qwen3 decoder (and Qwen2.5's, which differs only in q/k/v biases instead of the
 * per-head q/k norms: model_config.qkv_bias / qk_norm), top to bottom, over the backend table (docs/MODEL.md, "Language model", HF
 * transformers 4.51 Qwen3DecoderLayer). All sequences of the step are concatenated into one (n,
 * hidden) activation; only attention (attn_paged, over the block tables of set_step) knows where
 * one sequence ends and the next begins, so every other op is a plain row-wise or GEMM op.
 *
 * Tensor parallelism (tp.h): the two row-parallel projections (o_proj, down_proj) are
 * followed by tp_all_reduce(), a no-op on one engine; with a struct comm it is the one
 * all-reduce per projection, everything else stays as it is (heads and ffn columns are
 * local). The vocab-split embedding is all-reduced too (each rank looked up only its own
 * ids, zeros elsewhere), before the image rows go in; the vocab-split logits are
 * all-gathered into e->logits_all.
 */
#include "engine/qwen3.h"
#include "engine/comm.h"

#include <math.h>

/* ==== Views ====
 * The workspace buffers are reinterpreted per step with the step's token count n:
 * 2-D (n, cols) for products and norms over rows, 3-D (n, heads, head_dim) for the
 * per-head ops (q/k norm, rope, kv_store, attention). */

static struct tensor rows2(void *data, enum dtype t, int64_t n, int64_t cols)
{
    return tensor_make(data, t, cols, n, 1, 1);
}

static struct tensor heads3(void *data, enum dtype t, int64_t n, int64_t heads, int64_t hd)
{
    return tensor_make(data, t, hd, heads, n, 1);
}

/* x = x + d, then d = norm(x; w): the residual add and the following RMS norm, fused when
 * the backend has add_rmsnorm (one pass over the residual stream instead of three). */
static void residual_norm(const struct backend_ops *ops, void *c, struct tensor *x,
                          struct tensor *d, const struct tensor *w, float eps)
{
    if (ops->fused) {
        ops->fused->add_rmsnorm(c, x, d, d, w, eps);
    } else {
        ops->add(c, x, x, d);
        ops->rmsnorm(c, d, x, w, eps);
    }
}

/* y[i] = x · w[i]ᵀ (+ b[i]) for i < n: one pass when the backend fuses products of one x
 * (the CPU: one parallel region instead of n) */
static void matmul_n(const struct backend_ops *ops, void *c, int n, struct tensor *const y[],
                     const struct tensor *x, const struct tensor *const w[],
                     const struct tensor *const b[])
{
    if (ops->fused && ops->fused->matmul_n) {
        ops->fused->matmul_n(c, n, y, x, w, b);
        return;
    }
    for (int i = 0; i < n; i++) ops->matmul(c, y[i], x, w[i], b[i]);
}

/* Per-head RMS norm, then RoPE, in place on x (n, heads, head_dim): fused when the backend
 * has norm_rope. */
static void norm_rope(const struct backend_ops *ops, void *c, struct tensor *x,
                      const struct tensor *w, float theta, float eps)
{
    if (ops->fused) {
        ops->fused->norm_rope(c, x, w, theta, eps);
    } else {
        ops->rmsnorm(c, x, x, w, eps);
        ops->rope_neox(c, x, theta);
    }
}

/* An optional weight (the q/k/v biases): NULL when the checkpoint has none. */
static const struct tensor *bias_or_null(const struct tensor *b)
{
    return b->data ? b : NULL;
}

/* The all-reduce hook after a row-parallel projection (see the file comment). */
static void tp_all_reduce(const struct engine *e, struct tensor *y)
{
    if (e->comm) e->comm->ops->all_reduce_sum(e->comm->ctx, y->data, (size_t)tensor_nelem(y), y->type);
}

/* ==== Forward ==== */

void qwen3_forward(struct engine *e, int32_t n, const struct qwen3_splice *splices,
                   int32_t n_splices, const int32_t *rows, int32_t n_rows)
{
    const struct backend_ops *ops = e->be.ops;
    void *c = e->be.ctx;
    const struct model_config *cfg = &e->cfg;
    enum dtype at = ops->act_type;
    int64_t H = cfg->hidden_size, F = e->ffn, hd = cfg->head_dim;
    int64_t nh = e->n_heads, nkv = e->n_kv_heads;
    float eps = cfg->rms_norm_eps, scale = 1.0f / sqrtf((float)hd);

    VLM_ASSERT(n > 0 && n <= e->p.max_batched_tokens);
    VLM_ASSERT(n_rows >= 0 && n_rows <= e->p.max_logit_rows);

    struct tensor x = rows2(e->x, at, n, H);     /* residual stream */
    struct tensor xn = rows2(e->xn, at, n, H);   /* normed input, then projection outputs */
    struct tensor q2 = rows2(e->q, at, n, nh * hd), q3 = heads3(e->q, at, n, nh, hd);
    struct tensor k2 = rows2(e->k, at, n, nkv * hd), k3 = heads3(e->k, at, n, nkv, hd);
    struct tensor v2 = rows2(e->v, at, n, nkv * hd), v3 = heads3(e->v, at, n, nkv, hd);
    struct tensor a2 = rows2(e->att, at, n, nh * hd), a3 = heads3(e->att, at, n, nh, hd);
    struct tensor gate = rows2(e->gate, at, n, F), up = rows2(e->up, at, n, F);

    /* x = embed_tokens(ids); image placeholder rows replaced by projector rows */
    ops->embed(c, &x, &e->embed);
    tp_all_reduce(e, &x);
    for (int32_t i = 0; i < n_splices; i++) ops->scatter_rows(c, &x, &splices[i].src, splices[i].idx);

    /* a = input_layernorm(x) of layer 0; later layers get theirs from residual_norm() */
    ops->rmsnorm(c, &xn, &x, &e->layers[0].attn_norm, eps);
    for (int32_t l = 0; l < cfg->n_layers; l++) {
        const struct layer_weights *w = &e->layers[l];

        /* attention block: a (in xn) = input_layernorm(x); q, k, v = a·Wqᵀ (+ bq), ...
         * (the biases: Qwen2.5, docs/MODEL.md, "Valley2") */
        matmul_n(ops, c, 3, (struct tensor *const[]){&q2, &k2, &v2}, &xn,
                 (const struct tensor *const[]){&w->wq, &w->wk, &w->wv},
                 (const struct tensor *const[]){bias_or_null(&w->bq), bias_or_null(&w->bk),
                                                bias_or_null(&w->bv)});
        /* Qwen3: per-head q_norm / k_norm over head_dim, before RoPE; Qwen2.5: RoPE only */
        if (cfg->qk_norm) {
            norm_rope(ops, c, &q3, &w->q_norm, cfg->rope_theta, eps);
            norm_rope(ops, c, &k3, &w->k_norm, cfg->rope_theta, eps);
        } else {
            ops->rope_neox(c, &q3, cfg->rope_theta);
            ops->rope_neox(c, &k3, cfg->rope_theta);
        }
        /* cache this step's k, v, then causal attention over each sequence's blocks */
        ops->kv_store(c, &e->kv[l], &k3, &v3);
        ops->attn_paged(c, &a3, &q3, &e->kv[l], scale);
        /* x = x + o_proj(attn); m (in xn) = post_attention_layernorm(x) */
        ops->matmul(c, &xn, &a2, &w->wo, NULL);
        tp_all_reduce(e, &xn);
        residual_norm(ops, c, &x, &xn, &w->mlp_norm, eps);

        /* MLP block: x = x + down(silu(gate(m)) ⊙ up(m)) */
        matmul_n(ops, c, 2, (struct tensor *const[]){&gate, &up}, &xn,
                 (const struct tensor *const[]){&w->w_gate, &w->w_up},
                 (const struct tensor *const[]){NULL, NULL});
        ops->silu_mul(c, &gate, &gate, &up);
        ops->matmul(c, &xn, &gate, &w->w_down, NULL);
        tp_all_reduce(e, &xn);
        if (l + 1 < cfg->n_layers) /* and the next layer's input_layernorm, into xn */
            residual_norm(ops, c, &x, &xn, &e->layers[l + 1].attn_norm, eps);
        else
            ops->add(c, &x, &x, &xn); /* the final norm runs on the gathered rows only */
    }

    /* logits = lm_head(norm(x)) only for the rows that need them (norm is row-wise) */
    qwen3_logits(e, rows, n_rows);
}

void qwen3_logits(struct engine *e, const int32_t *rows, int32_t n_rows)
{
    const struct backend_ops *ops = e->be.ops;
    void *c = e->be.ctx;
    enum dtype at = ops->act_type;
    int64_t H = e->cfg.hidden_size;
    VLM_ASSERT(n_rows >= 0 && n_rows <= e->p.max_logit_rows);
    if (n_rows == 0) return;
    struct tensor x = rows2(e->x, at, e->p.max_batched_tokens, H);
    struct tensor xs = rows2(e->xs, at, n_rows, H);
    struct tensor lg = rows2(e->logits, DT_F32, n_rows, e->vocab_local);
    /* lg is f32 whatever the activation dtype: bf16 backends accumulate the lm_head product
     * in f32 and write f32 logits (the sampler and the host read f32) */
    ops->gather_rows(c, &xs, &x, rows);
    ops->rmsnorm(c, &xs, &xs, &e->final_norm, e->cfg.rms_norm_eps);
    ops->matmul(c, &lg, &xs, &e->lm_head, NULL);
    if (e->comm) /* (tp, n_rows, vocab_local), rank order; engine.c reorders on the host */
        e->comm->ops->all_gather(e->comm->ctx, e->logits_all, e->logits,
                                 (size_t)n_rows * (size_t)e->vocab_local, DT_F32);
}
