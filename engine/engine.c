/*
 * The engine: start-up sizing, the encoder cache, turning a struct batch into the backend's
 * step metadata, and sampling. The decoder math itself is in qwen3.c.
 */
#include "engine/engine.h"
#include "engine/comm.h"
#include "engine/qwen3.h"

#if __has_include("engine/vit.h")
#include "engine/siglip.h"
#include "engine/vit.h"
#define ENGINE_HAVE_VIT 1
#endif

#include <stdio.h>
#include <stdlib.h>

/* ==== Start-up ====
 * Every buffer the step path touches is allocated here, from the config maxima: weights
 * (map_weight: used in place from the memory map where the backend can, else converted to
 * its compute dtype), the KV blocks, the activation workspace for max_batched_tokens rows, the logits for max_logit_rows rows, the host
 * arrays of struct step_meta, the sampler scratch and the batch_out arrays. */

static void *balloc(struct engine *e, size_t bytes, int *rc)
{
    if (*rc) return NULL;
    void *p = e->be.ops->alloc(e->be.ctx, bytes ? bytes : 1);
    if (!p) *rc = VLM_ENOMEM;
    return p;
}

static void bfree(struct engine *e, void *p)
{
    if (p && e->be.ops) e->be.ops->release(e->be.ctx, p);
}

/* src is a view into the mapped checkpoint (the model outlives the engine), so the backend
 * may use it in place (map_weight); load_vocab_slice's temporary rows are copied instead. */
static int load_w_from(struct engine *e, struct tensor *dst, const struct tensor *src,
                       bool mapped, const char *what, int l, struct vlm_err *err)
{
    *dst = mapped ? backend_map_weight(&e->be, src) : e->be.ops->load_weight(e->be.ctx, src);
    if (dst->data) return 0;
    char layer[32] = "", dev[96] = "";
    if (l >= 0) snprintf(layer, sizeof layer, " of layer %d", l);
    if (e->be.ops->mem_info) {
        size_t free_b = 0, total_b = 0;
        e->be.ops->mem_info(e->be.ctx, &free_b, &total_b);
        snprintf(dev, sizeof dev, "; %.2f GiB of %.2f GiB free (tensor parallelism spreads "
                 "the weights)", (double)free_b / (1 << 30), (double)total_b / (1 << 30));
    }
    return vlm_err_set(err, VLM_ENOMEM, 500,
                       "engine: out of backend memory loading %s%s (%.2f MiB in the checkpoint)%s", what, layer,
                       (double)tensor_nbytes(src) / (1 << 20), dev);
}

static int load_w(struct engine *e, struct tensor *dst, const struct tensor *src, const char *what,
                  int l, struct vlm_err *err)
{
    return load_w_from(e, dst, src, true, what, l, err);
}

static bool shape_is(const struct tensor *t, int64_t ne0, int64_t ne1)
{
    return t->data && t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == 1 && t->ne[3] == 1;
}

/* The loader checks tensors against config.json; this re-checks what the forward pass
 * relies on, so a model built some other way fails here and not inside an op. */
static int check_model(const struct model *m, struct vlm_err *err)
{
    const struct model_config *c = &m->cfg;
    int64_t H = c->hidden_size, hd = c->head_dim, F = c->intermediate_size;
    if (c->n_layers <= 0 || H <= 0 || F <= 0 || c->vocab_size <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0)
        return vlm_err_set(err, VLM_EINVAL, 500, "engine: config has a non-positive dimension");
    if (c->n_heads % c->n_kv_heads)
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "engine: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                           c->n_heads, c->n_kv_heads);
    if (hd <= 0 || hd % 2 || hd > 512)
        return vlm_err_set(err, VLM_EINVAL, 500, "engine: head_dim %lld must be even and <= 512",
                           (long long)hd);
    const struct model_weights *w = &m->w;
    if (!shape_is(&w->embed, H, c->vocab_size) || !shape_is(&w->lm_head, H, c->vocab_size) ||
        !shape_is(&w->final_norm, H, 1))
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "engine: embed_tokens / lm_head / norm do not match vocab %d x hidden %lld",
                           c->vocab_size, (long long)H);
    for (int32_t l = 0; l < c->n_layers; l++) {
        const struct layer_weights *L = &w->layers[l];
        bool ok = shape_is(&L->attn_norm, H, 1) && shape_is(&L->mlp_norm, H, 1) &&
                  shape_is(&L->wq, H, c->n_heads * hd) && shape_is(&L->wk, H, c->n_kv_heads * hd) &&
                  shape_is(&L->wv, H, c->n_kv_heads * hd) && shape_is(&L->wo, c->n_heads * hd, H) &&
                  (!c->qk_norm || (shape_is(&L->q_norm, hd, 1) && shape_is(&L->k_norm, hd, 1))) &&
                  (!c->qkv_bias || (shape_is(&L->bq, c->n_heads * hd, 1) &&
                                    shape_is(&L->bk, c->n_kv_heads * hd, 1) &&
                                    shape_is(&L->bv, c->n_kv_heads * hd, 1))) &&
                  shape_is(&L->w_gate, H, F) && shape_is(&L->w_up, H, F) &&
                  shape_is(&L->w_down, F, H);
        if (!ok)
            return vlm_err_set(err, VLM_EINVAL, 500,
                               "engine: layer %d tensors do not match the config (hidden %lld, heads "
                               "%d/%d, head_dim %lld, ffn %lld)",
                               l, (long long)H, c->n_heads, c->n_kv_heads, (long long)hd, (long long)F);
    }
    return 0;
}

/* ---- tensor-parallel slices: views into the memory map, so each rank reads only its part */

/* Output rows [r0, r0 + n) of a host weight (out, in): a pointer offset. */
static struct tensor slice_rows(const struct tensor *t, int64_t r0, int64_t n)
{
    return tensor_rows(t, r0, n);
}

/* Input columns [c0, c0 + n) of a host weight (out, in): a view with ne[0] = n and the full
 * row stride; load_weight copies the strided rows. */
static struct tensor slice_cols(const struct tensor *t, int64_t c0, int64_t n)
{
    VLM_ASSERT(c0 >= 0 && n > 0 && c0 + n <= t->ne[0]);
    struct tensor v = *t;
    v.data = (char *)t->data + c0 * t->nb[0];
    v.ne[0] = n;
    return v;
}

/* Elements [i0, i0 + n) of a host vector (a bias): a pointer offset. */
static struct tensor slice_vec(const struct tensor *t, int64_t i0, int64_t n)
{
    VLM_ASSERT(i0 >= 0 && n > 0 && i0 + n <= t->ne[0] && tensor_nrows(t) == 1);
    return tensor_make((char *)t->data + i0 * t->nb[0], t->type, n, 1, 1, 1);
}

/* This rank's vocabulary rows [vocab0, vocab0 + vocab_local) of embed or lm_head, padded
 * with zero rows past the real vocabulary, plus `extra` more zero rows (the embedding's
 * row for tokens of other ranks). Copied through a host buffer of just those rows. */
static int load_vocab_slice(struct engine *e, struct tensor *dst, const struct tensor *src,
                            int32_t extra, const char *what, struct vlm_err *err)
{
    int64_t H = src->ne[0], rows = (int64_t)e->vocab_local + extra;
    int64_t real = VLM_MAX(0, VLM_MIN((int64_t)e->vocab_local, e->cfg.vocab_size - e->vocab0));
    size_t rb = (size_t)H * dtype_size(src->type);
    char *tmp = xcalloc((size_t)rows, rb);
    for (int64_t r = 0; r < real; r++)
        memcpy(tmp + (size_t)r * rb, (const char *)src->data + (e->vocab0 + r) * src->nb[1], rb);
    struct tensor view = tensor_make(tmp, src->type, H, rows, 1, 1);
    int rc = load_w_from(e, dst, &view, false, what, -1, err);
    free(tmp);
    return rc;
}

static int load_weights(struct engine *e, struct vlm_err *err)
{
    const struct model_weights *w = &e->m->w;
    int rc;
    bool tied = e->cfg.tie_word_embeddings || w->lm_head.data == w->embed.data;
    if (!e->comm) {
        if ((rc = load_w(e, &e->embed, &w->embed, "embed_tokens", -1, err))) return rc;
        if (tied) e->lm_head = e->embed;
        else if ((rc = load_w(e, &e->lm_head, &w->lm_head, "lm_head", -1, err))) return rc;
    } else {
        if ((rc = load_vocab_slice(e, &e->embed, &w->embed, 1, "embed_tokens", err))) return rc;
        if (tied) e->lm_head = tensor_rows(&e->embed, 0, e->vocab_local);
        else if ((rc = load_vocab_slice(e, &e->lm_head, &w->lm_head, 0, "lm_head", err))) return rc;
    }
    if ((rc = load_w(e, &e->final_norm, &w->final_norm, "norm", -1, err))) return rc;
    /* rank r: heads [r*nh, (r+1)*nh), KV heads [r*nkv, ...), ffn rows [r*F, ...) (local sizes) */
    int64_t r = e->comm ? e->p.tp_rank : 0, hd = e->cfg.head_dim;
    int64_t q0 = r * e->n_heads * hd, nq = (int64_t)e->n_heads * hd;
    int64_t k0 = r * e->n_kv_heads * hd, nk = (int64_t)e->n_kv_heads * hd;
    int64_t f0 = r * e->ffn, nf = e->ffn;
    e->layers = xcalloc((size_t)e->cfg.n_layers, sizeof *e->layers);
    for (int32_t l = 0; l < e->cfg.n_layers; l++) {
        const struct layer_weights *s = &w->layers[l];
        struct layer_weights *d = &e->layers[l];
        struct tensor wq = slice_rows(&s->wq, q0, nq), wk = slice_rows(&s->wk, k0, nk);
        struct tensor wv = slice_rows(&s->wv, k0, nk), wo = slice_cols(&s->wo, q0, nq);
        struct tensor wg = slice_rows(&s->w_gate, f0, nf), wu = slice_rows(&s->w_up, f0, nf);
        struct tensor wd = slice_cols(&s->w_down, f0, nf);
        if (e->cfg.qkv_bias) { /* this rank's heads of each bias */
            struct tensor bq = slice_vec(&s->bq, q0, nq), bk = slice_vec(&s->bk, k0, nk);
            struct tensor bv = slice_vec(&s->bv, k0, nk);
            if ((rc = load_w(e, &d->bq, &bq, "q_proj.bias", l, err)) ||
                (rc = load_w(e, &d->bk, &bk, "k_proj.bias", l, err)) ||
                (rc = load_w(e, &d->bv, &bv, "v_proj.bias", l, err)))
                return rc;
        }
        if (e->cfg.qk_norm && ((rc = load_w(e, &d->q_norm, &s->q_norm, "q_norm", l, err)) ||
                               (rc = load_w(e, &d->k_norm, &s->k_norm, "k_norm", l, err))))
            return rc;
        if ((rc = load_w(e, &d->attn_norm, &s->attn_norm, "input_layernorm", l, err)) ||
            (rc = load_w(e, &d->wq, &wq, "q_proj", l, err)) ||
            (rc = load_w(e, &d->wk, &wk, "k_proj", l, err)) ||
            (rc = load_w(e, &d->wv, &wv, "v_proj", l, err)) ||
            (rc = load_w(e, &d->wo, &wo, "o_proj", l, err)) ||
            (rc = load_w(e, &d->mlp_norm, &s->mlp_norm, "post_attention_layernorm", l, err)) ||
            (rc = load_w(e, &d->w_gate, &wg, "gate_proj", l, err)) ||
            (rc = load_w(e, &d->w_up, &wu, "up_proj", l, err)) ||
            (rc = load_w(e, &d->w_down, &wd, "down_proj", l, err)))
            return rc;
    }
    return 0;
}

/* Bytes of one KV block in one layer (K or V). */
static size_t kv_block_layer_bytes(const struct engine *e)
{
    return (size_t)e->block_size * (size_t)e->n_kv_heads * (size_t)e->cfg.head_dim *
           dtype_size(e->be.ops->act_type);
}

/* Is the KV pool sized from the device's free memory (after everything else)? */
static bool kv_from_device(const struct engine *e)
{
    return e->p.n_blocks <= 0 && e->p.kv_bytes == 0 && e->p.gpu_memory_utilization > 0 &&
           e->be.ops->mem_info;
}

/* Blocks for a byte budget. */
static void kv_blocks_for(struct engine *e, size_t bytes)
{
    size_t per_block = 2 * kv_block_layer_bytes(e) * (size_t)e->cfg.n_layers;
    size_t n = bytes / per_block;
    e->n_blocks = n > INT32_MAX ? INT32_MAX : (int32_t)n;
}

/* The device memory plan: weights, workspace and encoder cache are already placed; the KV
 * pool gets what remains of gpu_memory_utilization × total. */
static int plan_kv_device(struct engine *e, struct vlm_err *err)
{
    size_t free_b = 0, total_b = 0;
    e->be.ops->mem_info(e->be.ctx, &free_b, &total_b);
    double util = e->p.gpu_memory_utilization;
    size_t reserve = (size_t)((1.0 - util) * (double)total_b); /* left to others and to cuBLAS */
    size_t budget = free_b > reserve ? free_b - reserve : 0;
    kv_blocks_for(e, budget);
    log_info("engine: device memory %.2f GiB total, %.2f GiB free after weights and workspace; "
             "KV pool %.2f GiB (--gpu-memory-utilization %.2f)",
             (double)total_b / (1 << 30), (double)free_b / (1 << 30), (double)budget / (1 << 30),
             util);
    if (e->n_blocks < 2)
        return vlm_err_set(err, VLM_ENOMEM, 500,
                           "engine: out of device memory: %.2f GiB free after weights and "
                           "workspace, %.2f GiB must stay unused at --gpu-memory-utilization "
                           "%.2f; no room for a KV cache (lower --max-num-batched-tokens, "
                           "--encoder-cache-tokens or raise the utilization)",
                           (double)free_b / (1 << 30), (double)reserve / (1 << 30), util);
    return 0;
}

static int alloc_kv(struct engine *e, struct vlm_err *err)
{
    const struct model_config *c = &e->cfg;
    enum dtype at = e->be.ops->act_type;
    size_t per_block_layer = kv_block_layer_bytes(e);
    if (e->n_blocks <= 0) kv_blocks_for(e, e->p.kv_bytes);
    if (e->n_blocks < 2)
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "engine: KV budget of %zu bytes holds fewer than 2 blocks of %d tokens",
                           e->p.kv_bytes, e->block_size);
    e->kv = xcalloc((size_t)c->n_layers, sizeof *e->kv);
    int rc = 0;
    for (int32_t l = 0; l < c->n_layers; l++) {
        struct kv_layer *kv = &e->kv[l];
        *kv = (struct kv_layer){.type = at, .n_blocks = e->n_blocks, .block_size = e->block_size,
                                .n_kv_heads = e->n_kv_heads, .head_dim = c->head_dim};
        kv->k = balloc(e, per_block_layer * (size_t)e->n_blocks, &rc);
        kv->v = balloc(e, per_block_layer * (size_t)e->n_blocks, &rc);
        if (rc)
            return vlm_err_set(err, rc, 500, "engine: out of backend memory for %d KV blocks",
                               e->n_blocks);
        e->be.ops->zero(e->be.ctx, kv->k, per_block_layer * (size_t)e->n_blocks);
        e->be.ops->zero(e->be.ctx, kv->v, per_block_layer * (size_t)e->n_blocks);
    }
    return 0;
}

/* Device sampling: on when asked for, or by default on a device backend; needs the op and
 * no TP (rank 0 samples from all-gathered rows there). The summaries for max_logit_rows rows
 * live in backend memory and come back in one download per step. */
static int alloc_summaries(struct engine *e, struct vlm_err *err)
{
    const struct backend_ops *ops = e->be.ops;
    int want = e->p.sample_on_device;
    e->dev_sampling = ops->sampling && !e->comm && (want > 0 || (want == 0 && ops->mem_info));
    if (!e->dev_sampling) return 0;
    size_t R = (size_t)e->p.max_logit_rows;
    int rc = 0;
    e->d_summary = balloc(e, R * sizeof(struct sample_summary), &rc);
    if (rc)
        return vlm_err_set(err, rc, 500, "engine: out of backend memory for %zu sampling rows", R);
    e->h_summary = xmalloc(R * sizeof *e->h_summary);
    e->h_inv_t = xmalloc(R * sizeof *e->h_inv_t);
    e->h_u = xmalloc(R * sizeof *e->h_u);
    if (ops->sampling->mask_logits)
        e->h_mask = xmalloc(R * (size_t)((e->cfg.vocab_size + 31) / 32) * sizeof *e->h_mask);
    return 0;
}

static int alloc_workspace(struct engine *e, struct vlm_err *err)
{
    const struct model_config *c = &e->cfg;
    size_t T = (size_t)e->p.max_batched_tokens, R = (size_t)e->p.max_logit_rows;
    size_t S = (size_t)e->p.max_seqs, es = dtype_size(e->be.ops->act_type);
    size_t H = (size_t)c->hidden_size, F = (size_t)e->ffn, hd = (size_t)c->head_dim;
    size_t V = (size_t)c->vocab_size, VL = (size_t)e->vocab_local;
    int rc = 0;
    e->x = balloc(e, T * H * es, &rc);
    e->xn = balloc(e, T * H * es, &rc);
    e->q = balloc(e, T * (size_t)e->n_heads * hd * es, &rc);
    e->att = balloc(e, T * (size_t)e->n_heads * hd * es, &rc);
    e->k = balloc(e, T * (size_t)e->n_kv_heads * hd * es, &rc);
    e->v = balloc(e, T * (size_t)e->n_kv_heads * hd * es, &rc);
    e->gate = balloc(e, T * F * es, &rc);
    e->up = balloc(e, T * F * es, &rc);
    e->xs = balloc(e, R * H * es, &rc);
    e->logits = balloc(e, R * VL * sizeof(float), &rc);
    if (e->comm) {
        e->logits_all = balloc(e, (size_t)e->comm->size * R * VL * sizeof(float), &rc);
        e->tp_flag = balloc(e, sizeof(float), &rc);
    }
    if (rc)
        return vlm_err_set(err, rc, 500, "engine: out of backend memory for the workspace "
                           "(%zu tokens, %zu logit rows)", T, R);

    int32_t mb = c->max_position_embeddings > 0
                     ? (c->max_position_embeddings + e->block_size - 1) / e->block_size + 1
                 : e->n_blocks > 0 ? e->n_blocks
                                   : 65536 / e->block_size + 1;
    /* the KV pool may be sized later (from device memory); it only ever lowers this */
    e->max_blocks_per_seq = e->n_blocks > 0 ? VLM_MIN(mb, e->n_blocks) : mb;
    VLM_ASSERT(e->max_blocks_per_seq > 0);
    e->h_tokens = xmalloc(T * sizeof(int32_t));
    e->h_pos = xmalloc(T * sizeof(int32_t));
    e->h_slot = xmalloc(T * sizeof(int32_t));
    e->h_q_start = xmalloc((S + 1) * sizeof(int32_t));
    e->h_ctx_len = xmalloc(S * sizeof(int32_t));
    e->h_block_tables = xmalloc(S * (size_t)e->max_blocks_per_seq * sizeof(int32_t));
    e->h_rows = xmalloc(R * sizeof(int32_t));
    e->h_rows_id = xmalloc(S * sizeof(int32_t));
    for (size_t i = 0; i < S; i++) e->h_rows_id[i] = (int32_t)i;
    e->h_splice_idx = xmalloc(T * sizeof(int32_t));
    e->splices = xmalloc(T * sizeof(struct qwen3_splice));
    e->h_logits = xmalloc(R * V * sizeof(float));
    if (e->comm && e->comm->rank == 0)
        e->h_gather = xmalloc((size_t)e->comm->size * R * VL * sizeof(float));
    sampler_ws_init(&e->sws, c->vocab_size);
    e->out_token = xmalloc(S * sizeof(int32_t));
    e->out_logprob = xmalloc(S * sizeof(float));
    e->out_top_ids = xmalloc(S * VLM_MAX_TOP_LOGPROBS * sizeof(int32_t));
    e->out_top_lp = xmalloc(S * VLM_MAX_TOP_LOGPROBS * sizeof(float));
    e->plp_seq = xmalloc(T * sizeof(int32_t));
    e->plp_row = xmalloc(T * sizeof(int32_t));
    e->plp_rank = xmalloc(T * sizeof(int32_t));
    e->plp_pos = xmalloc(T * sizeof(int32_t));
    e->plp_lp = xmalloc(T * sizeof(float));
    e->plp_top_ids = xmalloc(T * VLM_MAX_TOP_LOGPROBS * sizeof(int32_t));
    e->plp_top_lp = xmalloc(T * VLM_MAX_TOP_LOGPROBS * sizeof(float));
    return alloc_summaries(e, err);
}

static int init_encoder_cache(struct engine *e, struct vlm_err *err)
{
    if (!e->cfg.has_vision || e->p.encoder_cache_tokens <= 0) return 0;
#ifdef ENGINE_HAVE_VIT
    int32_t merge2 = e->cfg.spatial_merge_size * e->cfg.spatial_merge_size;
    int32_t max_patches = e->p.max_image_patches;
    if (max_patches <= 0) max_patches = e->p.encoder_cache_tokens * merge2;
    int rc = vit_init(&e->vit, &e->be, e->m, max_patches, err);
    if (!rc && e->cfg.has_siglip) {
        int32_t max_tiles = e->p.max_siglip_tiles > 0 ? e->p.max_siglip_tiles : 10;
        rc = siglip_init(&e->sig, &e->be, e->m, max_tiles, err);
    }
    if (rc) return rc;
    e->enc_arena = balloc(e, (size_t)e->p.encoder_cache_tokens * (size_t)e->cfg.hidden_size *
                                 dtype_size(e->be.ops->act_type), &rc);
    if (rc)
        return vlm_err_set(err, rc, 500, "engine: out of backend memory for %d encoder-cache rows",
                           e->p.encoder_cache_tokens);
    return 0;
#else
    (void)err;
    log_warn("engine: built without the vision tower; images are not supported");
    return 0;
#endif
}

int engine_init(struct engine *e, const struct model *m, const struct engine_params *p,
                struct vlm_err *err)
{
    memset(e, 0, sizeof *e);
    e->m = m;
    e->cfg = m->cfg;
    e->p = *p;
    if (e->p.block_size <= 0) e->p.block_size = 16;
    if (e->p.max_batched_tokens <= 0) e->p.max_batched_tokens = 2048;
    if (e->p.max_seqs <= 0) e->p.max_seqs = 64;
    /* engine_execute needs one logits row per sequence */
    e->p.max_logit_rows = VLM_MAX(e->p.max_logit_rows, e->p.max_seqs);
    e->block_size = e->p.block_size;
    e->n_blocks = e->p.n_blocks;

    int rc = check_model(m, err);
    if (rc) return rc;
    /* tensor parallel: local head, ffn and vocabulary counts (tp.h; one engine: tp = 1) */
    int tp = e->p.tp_size > 1 ? e->p.tp_size : 1;
    if (tp > 1 && !e->p.comm)
        rc = vlm_err_set(err, VLM_EINVAL, 500,
                         "engine: tp_size %d needs a communicator (use tp_group_create)", tp);
    else if (e->p.comm && (e->p.comm->size != tp || e->p.comm->rank != e->p.tp_rank))
        rc = vlm_err_set(err, VLM_EINVAL, 500, "engine: communicator rank %d/%d != tp rank %d/%d",
                         e->p.comm->rank, e->p.comm->size, e->p.tp_rank, tp);
    else if (e->cfg.n_kv_heads % tp || e->cfg.n_heads % tp || e->cfg.intermediate_size % tp)
        rc = vlm_err_set(err, VLM_EINVAL, 500, "engine: tp_size %d must divide "
                         "num_key_value_heads, num_attention_heads and intermediate_size", tp);
    if (rc) {
        memset(e, 0, sizeof *e);
        return rc;
    }
    e->comm = e->p.comm;
    e->n_heads = e->cfg.n_heads / tp;
    e->n_kv_heads = e->cfg.n_kv_heads / tp;
    e->ffn = e->cfg.intermediate_size / tp;
    e->vocab_local = (e->cfg.vocab_size + tp - 1) / tp;
    e->vocab0 = e->comm ? e->p.tp_rank * e->vocab_local : 0;

    if (e->p.backend == ENGINE_BACKEND_CPU) rc = backend_cpu_init(&e->be, &e->p.bp, err);
#ifdef VLM_HAVE_CUDA
    else if (e->p.backend == ENGINE_BACKEND_CUDA) rc = backend_cuda_init(&e->be, &e->p.bp, err);
#endif
    else rc = vlm_err_set(err, VLM_EUNSUPPORTED, 500, "engine: backend %d not available", e->p.backend);
    if (rc) {
        memset(e, 0, sizeof *e);
        return rc;
    }
    if (e->p.emulate.graphs || e->p.emulate.device_bytes) backend_emulate(&e->be, &e->p.emulate);
    e->graphs = e->be.ops->graphs && !e->p.enforce_eager && !e->comm;
    /* the memory plan: weights, then the workspace for the largest step and the encoder cache
     * (with the vision tower's scratch for the largest image), then the KV pool; when it is
     * sized from device memory it goes last and takes what is left */
    if (!kv_from_device(e) && e->n_blocks <= 0 && e->p.kv_bytes == 0)
        e->p.kv_bytes = (size_t)64 << 20; /* no budget given (engine.h: 64 MiB) */
    if (!kv_from_device(e) && e->n_blocks <= 0) kv_blocks_for(e, e->p.kv_bytes);
    if ((rc = load_weights(e, err)) || (rc = alloc_workspace(e, err)) ||
        (rc = init_encoder_cache(e, err)) ||
        (kv_from_device(e) && (rc = plan_kv_device(e, err))) || (rc = alloc_kv(e, err))) {
        engine_destroy(e);
        return rc;
    }
    e->max_blocks_per_seq = VLM_MIN(e->max_blocks_per_seq, e->n_blocks);
    char tp_note[48] = "";
    if (e->comm) snprintf(tp_note, sizeof tp_note, ", tp rank %d of %d", e->comm->rank, e->comm->size);
    log_info("engine: backend %s, %d layers, KV %d blocks x %d tokens (%lld tokens), "
             "%d tokens/step, %d seqs/step%s%s",
             e->be.ops->name, e->cfg.n_layers, e->n_blocks, e->block_size,
             (long long)(e->n_blocks - 1) * e->block_size, e->p.max_batched_tokens, e->p.max_seqs,
             e->vit ? ", vision on" : "", tp_note);
    return 0;
}

void engine_destroy(struct engine *e)
{
    if (!e || !e->be.ops) {
        if (e) memset(e, 0, sizeof *e);
        return;
    }
#ifdef ENGINE_HAVE_VIT
    vit_destroy(e->vit);
    siglip_destroy(e->sig);
#endif
    bfree(e, e->enc_arena);
    if (e->lm_head.data != e->embed.data) bfree(e, e->lm_head.data);
    bfree(e, e->embed.data);
    bfree(e, e->final_norm.data);
    for (int32_t l = 0; e->layers && l < e->cfg.n_layers; l++) {
        struct layer_weights *d = &e->layers[l];
        struct tensor *all[] = {&d->attn_norm, &d->wq, &d->wk, &d->wv, &d->wo, &d->q_norm,
                                &d->k_norm, &d->mlp_norm, &d->w_gate, &d->w_up, &d->w_down,
                                &d->bq, &d->bk, &d->bv};
        for (size_t i = 0; i < ARRAY_LEN(all); i++) bfree(e, all[i]->data);
    }
    free(e->layers);
    for (int32_t l = 0; e->kv && l < e->cfg.n_layers; l++) {
        bfree(e, e->kv[l].k);
        bfree(e, e->kv[l].v);
    }
    free(e->kv);
    void *bufs[] = {e->x,  e->xn, e->q,  e->att,    e->k,         e->v,
                    e->gate, e->up, e->xs, e->logits, e->logits_all, e->tp_flag};
    for (size_t i = 0; i < ARRAY_LEN(bufs); i++) bfree(e, bufs[i]);
    bfree(e, e->d_summary);
    free(e->h_summary);
    free(e->h_inv_t);
    free(e->h_u);
    free(e->h_mask);
    free(e->h_tokens);
    free(e->h_pos);
    free(e->h_slot);
    free(e->h_q_start);
    free(e->h_ctx_len);
    free(e->h_block_tables);
    free(e->h_rows);
    free(e->h_rows_id);
    free(e->h_splice_idx);
    free(e->splices);
    free(e->h_logits);
    free(e->h_gather);
    sampler_ws_destroy(&e->sws);
    free(e->out_token);
    free(e->out_logprob);
    free(e->out_top_ids);
    free(e->out_top_lp);
    free(e->plp_seq);
    free(e->plp_row);
    free(e->plp_rank);
    free(e->plp_pos);
    free(e->plp_lp);
    free(e->plp_top_ids);
    free(e->plp_top_lp);
    backend_destroy(&e->be);
    memset(e, 0, sizeof *e);
}

int32_t engine_kv_blocks(const struct engine *e)
{
    return e->n_blocks;
}

int32_t engine_block_size(const struct engine *e)
{
    return e->block_size;
}

static int exec_step(void *e, const struct batch *b, struct batch_out *out)
{
    return engine_execute(e, b, out);
}

static int exec_rows(void *e, const struct batch *b, const int32_t *rows, int32_t n_rows,
                     float *logits)
{
    return engine_forward_rows(e, b, rows, n_rows, logits);
}

struct executor engine_executor(struct engine *e)
{
    VLM_ASSERT(!e->comm); /* a rank alone would wait forever in its collectives */
    return (struct executor){.impl = e, .execute = exec_step, .forward_rows = exec_rows,
                             .kv_blocks = e->n_blocks, .block_size = e->block_size,
                             .vocab_size = e->cfg.vocab_size};
}

/* ==== Encoder cache ====
 * A fixed arena of encoder_cache_tokens rows. The scheduler owns the placement (which rows
 * hold which item, what is evicted); the engine encodes b->encode[i] into rows
 * [b->encode_row[i], + n_tokens) and splices a span's rows from b->seqs[s].mm_row. */

static struct tensor enc_rows(const struct engine *e, int32_t row0, int32_t n)
{
    VLM_ASSERT(row0 >= 0 && n > 0 && row0 + n <= e->p.encoder_cache_tokens);
    struct tensor all = tensor_make(e->enc_arena, e->be.ops->act_type, e->cfg.hidden_size,
                                    e->p.encoder_cache_tokens, 1, 1);
    return tensor_rows(&all, row0, n);
}

/* Tensor parallel: the vision tower is data-parallel with replicated weights; item i of the
 * step is encoded by rank i % tp only. Then one all-reduce of an error flag (so a rank whose
 * encode failed cannot leave the others waiting in a broadcast) and one broadcast per item
 * from its owner. */
static int enc_share(struct engine *e, const struct batch *b, int failed)
{
    const struct backend_ops *ops = e->be.ops;
    float flag = failed ? 1.0f : 0.0f;
    ops->upload(e->be.ctx, e->tp_flag, &flag, sizeof flag);
    e->comm->ops->all_reduce_sum(e->comm->ctx, e->tp_flag, 1, DT_F32);
    ops->download(e->be.ctx, &flag, e->tp_flag, sizeof flag);
    ops->sync(e->be.ctx);
    if (flag != 0.0f) return failed ? failed : VLM_EINVAL;
    for (int32_t i = 0; i < b->n_encode; i++) {
        struct tensor rows = enc_rows(e, b->encode_row[i], b->encode[i]->n_tokens);
        e->comm->ops->broadcast(e->comm->ctx, rows.data, tensor_nbytes(&rows), i % e->comm->size);
    }
    return 0;
}

#ifdef ENGINE_HAVE_VIT
/* One item into its encoder-cache rows. A Valley2 image (docs/MODEL.md, "Valley2 images"): the
 * SigLIP rows first, then the Qwen2-VL rows; a Valley2 model takes no item without its
 * SigLIP side, and a Valley2.5 model none with one. */
static int enc_item(struct engine *e, const struct mm_item *it, int32_t row0)
{
    int32_t ns = mm_item_sig_tokens(it), nv = mm_item_vit_tokens(it);
    if (!e->sig != !ns || nv < 1) return VLM_EINVAL;
    int rc = 0;
    if (ns) {
        struct tensor so = enc_rows(e, row0, ns);
        rc = siglip_encode(e->sig, &it->sig, &so);
    }
    struct tensor out = enc_rows(e, row0 + ns, nv);
    if (!rc) rc = vit_encode(e->vit, &it, 1, &out);
    return rc;
}
#endif

/* Encodes the items of b->encode, one vit_encode call per item (items are few per step and
 * the ViT cost is in the patches, not the calls), after siglip_encode for a Valley2 item.
 * With TP, each rank encodes its share and the rows are exchanged (enc_share). */
static int enc_run(struct engine *e, const struct batch *b)
{
    if (b->n_encode == 0) return 0;
#ifdef ENGINE_HAVE_VIT
    if (!e->vit) return VLM_EUNSUPPORTED;
    int failed = 0;
    for (int32_t i = 0; i < b->n_encode && !failed; i++) {
        if (e->comm && i % e->comm->size != e->comm->rank) continue;
        failed = enc_item(e, b->encode[i], b->encode_row[i]);
    }
    if (e->comm) return enc_share(e, b, failed);
    return failed;
#else
    return VLM_EUNSUPPORTED;
#endif
}

/* ==== Step ====
 * The batch becomes struct step_meta: the sequences' new tokens concatenated, each token's
 * position and KV slot (from its sequence's block table), q_start prefix sums, context
 * lengths and the block tables flattened with a common row stride. Image spans inside the
 * scheduled range become splices from the encoder cache. */

static int32_t build_step(struct engine *e, const struct batch *b, int32_t *n_splices,
                          struct step_meta *m)
{
    VLM_ASSERT(b->n_seqs > 0 && b->n_seqs <= e->p.max_seqs);
    int32_t bs = e->block_size, n = 0, stride = 1, ns = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const struct batch_seq *q = &b->seqs[s];
        int32_t ctx = q->pos + q->n_tokens, need = (ctx + bs - 1) / bs;
        VLM_ASSERT(q->n_tokens > 0 && q->pos >= 0 && q->n_blocks >= need);
        VLM_ASSERT(need <= e->max_blocks_per_seq);
        stride = VLM_MAX(stride, need);
        n += q->n_tokens;
        VLM_ASSERT(n <= e->p.max_batched_tokens);
    }
    n = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const struct batch_seq *q = &b->seqs[s];
        int32_t ctx = q->pos + q->n_tokens, need = (ctx + bs - 1) / bs;
        int32_t *bt = e->h_block_tables + (size_t)s * stride;
        for (int32_t j = 0; j < need; j++) {
            VLM_ASSERT(q->blocks[j] > 0 && q->blocks[j] < e->n_blocks);
            bt[j] = q->blocks[j];
        }
        for (int32_t j = need; j < stride; j++) bt[j] = 0;
        e->h_q_start[s] = n;
        e->h_ctx_len[s] = ctx;
        for (int32_t i = 0; i < q->n_tokens; i++) {
            int32_t p = q->pos + i;
            e->h_tokens[n + i] = q->tokens[i];
            e->h_pos[n + i] = p;
            e->h_slot[n + i] = bt[p / bs] * bs + p % bs;
        }
        /* image rows: overlap of [offset, offset + n_tokens) with [pos, pos + n_tokens) */
        for (int32_t k = 0; k < q->n_mm; k++) {
            const struct mm_span *sp = &q->mm[k];
            int32_t lo = VLM_MAX(sp->offset, q->pos);
            int32_t hi = VLM_MIN(sp->offset + sp->item->n_tokens, ctx);
            if (lo >= hi) continue;
            int32_t *idx = e->h_splice_idx + n + (lo - q->pos);
            for (int32_t p = lo; p < hi; p++) {
                idx[p - lo] = n + (p - q->pos);
                e->h_tokens[n + (p - q->pos)] = 0; /* any valid id; the row is overwritten */
            }
            e->splices[ns++] = (struct qwen3_splice){
                .src = enc_rows(e, q->mm_row[k] + (lo - sp->offset), hi - lo), .idx = idx};
        }
        n += q->n_tokens;
    }
    e->h_q_start[b->n_seqs] = n;
    if (e->comm) { /* vocab-split embedding: own rows local, other ranks' ids to the zero row */
        for (int32_t i = 0; i < n; i++) {
            int32_t t = e->h_tokens[i] - e->vocab0;
            e->h_tokens[i] = t >= 0 && t < e->vocab_local ? t : e->vocab_local;
        }
    }
    *m = (struct step_meta){
        .n_seqs = b->n_seqs,
        .n_tokens = n,
        .tokens = e->h_tokens,
        .pos = e->h_pos,
        .slot = e->h_slot,
        .q_start = e->h_q_start,
        .ctx_len = e->h_ctx_len,
        .block_tables = e->h_block_tables,
        .max_blocks = stride,
    };
    *n_splices = ns;
    return n;
}

/* ==== Graph steps ====
 * A decode step becomes a graph step by padding: sequences up to a bucket (1, 2, 4, 8, then
 * multiples of 8 to 64, then of 32) with dummy sequences that read and write only slot 0 of
 * the null block, block-table columns up to a power of two (at least 16). The backend
 * shapes its launches from these bounds, so the key (sequence bucket, column bucket) fixes
 * the whole op sequence. Padding costs little: decode products are bound by weight reads,
 * not rows, and a dummy's attention covers one key. */

static int32_t graph_seq_bucket(int32_t n)
{
    if (n <= 8) return n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : 8;
    if (n <= 64) return (n + 7) / 8 * 8;
    return (n + 31) / 32 * 32;
}

/* The step in m/e's host arrays as a graph step, if it is a decode step that fits: pads
 * it in place and returns true. */
static bool graph_pad(struct engine *e, struct step_meta *m, int32_t n_splices,
                      const int32_t *rows, int32_t n_rows)
{
    int32_t n = m->n_seqs;
    if (!e->graphs || n_splices || m->n_tokens != n || n_rows != n) return false;
    for (int32_t i = 0; i < n; i++)
        if (rows[i] != i) return false;
    int32_t cap = VLM_MIN(VLM_MIN(e->p.max_seqs, e->p.max_batched_tokens), e->p.max_logit_rows);
    int32_t B = VLM_MIN(graph_seq_bucket(n), cap);
    int32_t cols = 16;
    while (cols < m->max_blocks) cols *= 2;
    cols = VLM_MIN(cols, e->max_blocks_per_seq);
    VLM_ASSERT(cols >= m->max_blocks && B >= n);
    /* block tables to the wider stride, last row first (rows only move right) */
    for (int32_t s = n - 1; s >= 0; s--) {
        int32_t *dst = e->h_block_tables + (size_t)s * cols;
        memmove(dst, e->h_block_tables + (size_t)s * m->max_blocks,
                (size_t)m->max_blocks * sizeof *dst);
        memset(dst + m->max_blocks, 0, (size_t)(cols - m->max_blocks) * sizeof *dst);
    }
    for (int32_t s = n; s < B; s++) { /* dummies: token 0 at position 0 in the null block */
        e->h_tokens[s] = 0;
        e->h_pos[s] = 0;
        e->h_slot[s] = 0;
        e->h_ctx_len[s] = 1;
        e->h_q_start[s + 1] = s + 1;
        memset(e->h_block_tables + (size_t)s * cols, 0, (size_t)cols * sizeof(int32_t));
    }
    m->n_seqs = m->n_tokens = B;
    m->max_blocks = cols;
    m->max_ctx = cols * e->block_size;
    m->graph_key = (uint64_t)B << 32 | (uint64_t)cols;
    return true;
}

/* The decoder for a padded graph step: replayed, recorded, or (recording failed) eager. */
static void graph_forward(struct engine *e, int32_t n)
{
    const struct backend_ops *ops = e->be.ops;
    void *c = e->be.ctx;
    e->n_graph_steps++;
    if (ops->graphs->launch(c)) return;
    ops->graphs->begin(c);
    qwen3_forward(e, n, NULL, 0, e->h_rows_id, n);
    if (!ops->graphs->end(c)) qwen3_forward(e, n, NULL, 0, e->h_rows_id, n);
}

/* encode, then the decoder; logits for rows[0..n_rows) left in e->logits (n_rows may
 * be 0: a prefill chunk that only fills the KV cache) */
static int forward(struct engine *e, const struct batch *b, const int32_t *rows, int32_t n_rows)
{
    VLM_ASSERT(n_rows >= 0 && n_rows <= e->p.max_logit_rows);
    int rc = enc_run(e, b);
    if (rc) return rc;
    int32_t n_splices;
    struct step_meta m;
    int32_t n = build_step(e, b, &n_splices, &m);
    for (int32_t i = 0; i < n_rows; i++) VLM_ASSERT(rows[i] >= 0 && rows[i] < n);
    bool graph = graph_pad(e, &m, n_splices, rows, n_rows);
    e->be.ops->set_step(e->be.ctx, &m);
    if (graph) graph_forward(e, m.n_tokens);
    else qwen3_forward(e, n, e->splices, n_splices, rows, n_rows);
    return 0;
}

/* TP rank 0: e->logits_all holds (tp, n_rows, vocab_local), rank after rank; logits gets
 * (n_rows, vocab) with the padding past the vocabulary dropped. */
static void gather_logits(struct engine *e, int32_t n_rows, float *logits)
{
    size_t VL = (size_t)e->vocab_local, V = (size_t)e->cfg.vocab_size, R = (size_t)n_rows;
    int tp = e->comm->size;
    e->be.ops->download(e->be.ctx, e->h_gather, e->logits_all, (size_t)tp * R * VL * sizeof(float));
    e->be.ops->sync(e->be.ctx);
    for (int r = 0; r < tp; r++) {
        size_t v0 = (size_t)r * VL, nv = v0 >= V ? 0 : VLM_MIN(VL, V - v0);
        for (size_t i = 0; i < R; i++)
            memcpy(logits + i * V + v0, e->h_gather + ((size_t)r * R + i) * VL, nv * sizeof(float));
    }
}

/* The forward pass's logits rows (e->logits) into logits on the host. */
static void fetch_logits(struct engine *e, int32_t n_rows, float *logits)
{
    if (!e->comm)
        e->be.ops->download(e->be.ctx, logits, e->logits,
                            (size_t)n_rows * (size_t)e->cfg.vocab_size * sizeof(float));
    else if (logits) /* rank 0; the other ranks only took part in the all-gather */
        gather_logits(e, n_rows, logits);
    e->be.ops->sync(e->be.ctx);
}

int engine_forward_rows(struct engine *e, const struct batch *b, const int32_t *rows,
                        int32_t n_rows, float *logits)
{
    int rc = forward(e, b, rows, n_rows);
    if (rc || n_rows == 0) return rc;
    fetch_logits(e, n_rows, logits);
    return 0;
}

/* Rows of the last token of every sequence with sampling params; returns their count. */
static int32_t sampled_rows(struct engine *e, const struct batch *b)
{
    int32_t n = 0, end = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        end += b->seqs[s].n_tokens;
        if (b->seqs[s].sp) e->h_rows[n++] = end - 1;
    }
    return n;
}

/* Device sampling, first half: the step's logits rows (left in e->logits by forward())
 * reduced on the backend to one struct sample_summary each, downloaded into e->h_summary. */
static void summarize_rows(struct engine *e, const struct batch *b, int32_t n)
{
    int32_t r = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const struct sampling_params *sp = b->seqs[s].sp;
        if (!sp) continue;
        /* a greedy row without logprobs needs only its argmax (-1: kernels/sample.h); one
         * with penalties or a bias falls back to the row anyway */
        e->h_inv_t[r] = sp->temperature > 1e-5f ? 1.0f / sp->temperature
                      : sp->logprobs < 0        ? -1.0f
                                                : 0.0f;
        e->h_u[r] = sampler_uniform(sp->seed, (uint64_t)b->seqs[s].n_out);
        r++;
    }
    VLM_ASSERT(r == n);
    struct tensor lg = tensor_make(e->logits, DT_F32, e->cfg.vocab_size, n, 1, 1);
    e->be.ops->sampling->sample_summary(e->be.ctx, e->d_summary, &lg, e->h_inv_t, e->h_u);
    e->be.ops->download(e->be.ctx, e->h_summary, e->d_summary, (size_t)n * sizeof *e->h_summary);
    e->be.ops->sync(e->be.ctx);
}

/* Device sampling with structured outputs: the masks of the step's sampled rows (all ones
 * for a row without) go up in one array and the backend sets the disallowed logits to -inf,
 * so that the summaries, and any row fetched for the fallback, are of the masked rows. */
static void mask_rows(struct engine *e, const struct batch *b, int32_t n)
{
    e->dev_masked = false;
    bool any = false;
    for (int32_t s = 0; s < b->n_seqs; s++) any |= b->seqs[s].sp && b->seqs[s].mask;
    if (!any || !e->h_mask) return;
    size_t W = (size_t)(e->cfg.vocab_size + 31) / 32;
    int32_t r = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const struct batch_seq *q = &b->seqs[s];
        if (!q->sp) continue;
        if (q->mask) memcpy(e->h_mask + (size_t)r * W, q->mask, W * sizeof *e->h_mask);
        else memset(e->h_mask + (size_t)r * W, 0xff, W * sizeof *e->h_mask);
        r++;
    }
    VLM_ASSERT(r == n);
    struct tensor lg = tensor_make(e->logits, DT_F32, e->cfg.vocab_size, n, 1, 1);
    e->be.ops->sampling->mask_logits(e->be.ctx, &lg, e->h_mask);
    e->dev_masked = true;
}

/* Row r of the step's logits into e->h_logits (a device-sampling fallback). */
static float *fetch_row(struct engine *e, int32_t r)
{
    size_t V = (size_t)e->cfg.vocab_size;
    float *dst = e->h_logits + (size_t)r * V;
    const float *src = (const float *)e->logits + (size_t)r * V;
    e->be.ops->download(e->be.ctx, dst, src, V * sizeof(float));
    e->be.ops->sync(e->be.ctx);
    return dst;
}

/* Prompt logprobs (batch_seq.prompt_lp): after the step's sampling, the head runs again over
 * the rows of the prompt positions asked for, max_logit_rows at a time (every TP rank takes
 * part in each head; rank 0 scores the rows). Fills out->plp_*. */
static void prompt_logprobs(struct engine *e, const struct batch *b, bool sampler,
                            struct batch_out *out)
{
    int32_t R = e->p.max_logit_rows, V = e->cfg.vocab_size, n = 0, start = 0;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const struct batch_seq *q = &b->seqs[s];
        for (int32_t i = 0; q->prompt_lp && i < q->n_tokens && q->pos + i + 1 < q->n_prompt; i++) {
            e->plp_seq[n] = s;
            e->plp_pos[n] = q->pos + i + 1;
            e->plp_row[n++] = start + i;
        }
        start += q->n_tokens;
    }
    if (out) { /* rank 0 only */
        out->n_plp = n;
        out->plp_seq = e->plp_seq;
        out->plp_pos = e->plp_pos;
        out->plp_lp = e->plp_lp;
        out->plp_rank = e->plp_rank;
        out->plp_top_ids = e->plp_top_ids;
        out->plp_top_lp = e->plp_top_lp;
    }
    for (int32_t r0 = 0; r0 < n; r0 += R) {
        int32_t m = VLM_MIN(R, n - r0);
        qwen3_logits(e, e->plp_row + r0, m);
        if (!e->comm)
            e->be.ops->download(e->be.ctx, e->h_logits, e->logits, (size_t)m * (size_t)V * sizeof(float));
        else if (sampler)
            gather_logits(e, m, e->h_logits);
        e->be.ops->sync(e->be.ctx);
        for (int32_t j = 0; sampler && j < m; j++) {
            int32_t k = r0 + j;
            const struct batch_seq *q = &b->seqs[e->plp_seq[k]];
            struct sampler_result res;
            const float *row = e->h_logits + (size_t)j * (size_t)V;
            int32_t tok = q->prompt[e->plp_pos[k]], rank = 1;
            sampler_logprobs(row, V, tok, VLM_MIN(q->prompt_top, VLM_MAX_TOP_LOGPROBS), &res);
            for (int32_t v = 0; v < V; v++) rank += row[v] > row[tok];
            e->plp_lp[k] = res.logprob;
            e->plp_rank[k] = rank;
            for (int32_t t = 0; t < VLM_MAX_TOP_LOGPROBS; t++) {
                bool has = t < res.n_top;
                e->plp_top_ids[(size_t)k * VLM_MAX_TOP_LOGPROBS + t] = has ? res.top_ids[t] : -1;
                e->plp_top_lp[(size_t)k * VLM_MAX_TOP_LOGPROBS + t] = has ? res.top_lp[t] : 0.0f;
            }
        }
    }
}

int engine_execute(struct engine *e, const struct batch *b, struct batch_out *out)
{
    bool sampler = !e->comm || e->comm->rank == 0; /* only rank 0 samples */
    int32_t n = sampled_rows(e, b);
    int rc = forward(e, b, e->h_rows, n);
    if (rc < 0) return rc;
    /* the masks (structured outputs) are joined here: on an asynchronous backend the forward
     * pass is still running, on the CPU one the masks were computed beside it */
    if (sampler && b->masks_ready) b->masks_ready(b->masks_arg);
    if (n > 0 && e->dev_sampling) { /* the rows stay on the backend; their summaries come down */
        mask_rows(e, b, n);
        summarize_rows(e, b, n);
    } else if (n > 0) {
        fetch_logits(e, n, sampler ? e->h_logits : NULL);
    }
    if (!sampler) {
        prompt_logprobs(e, b, false, out);
        return 0;
    }
    int32_t r = 0, V = e->cfg.vocab_size;
    for (int32_t s = 0; s < b->n_seqs; s++) {
        const struct batch_seq *q = &b->seqs[s];
        if (!q->sp) continue;
        struct sampler_result res;
        if (!e->dev_sampling || (q->mask && !e->dev_masked) ||
            sampler_sample_summary(&e->h_summary[r], V, q->sp, q->n_prompt, q->n_out, &res) < 0) {
            float *row = e->dev_sampling ? fetch_row(e, r) : e->h_logits + (size_t)r * (size_t)V;
            /* a scratch copy of the row (already masked when dev_masked: no change) */
            if (q->mask) sampler_apply_mask(row, q->mask, V);
            sampler_sample(&e->sws, row, q->sp, q->prompt, q->n_prompt, q->output, q->n_out, &res);
        }
        if (q->mask) { /* vLLM writes a masked token's -inf as -9999 */
            res.logprob = VLM_MAX(res.logprob, -9999.0f);
            for (int32_t j = 0; j < res.n_top; j++)
                res.top_lp[j] = VLM_MAX(res.top_lp[j], -9999.0f);
        }
        e->out_token[r] = res.token;
        e->out_logprob[r] = res.logprob;
        for (int32_t j = 0; j < VLM_MAX_TOP_LOGPROBS; j++) {
            bool has = j < res.n_top;
            e->out_top_ids[r * VLM_MAX_TOP_LOGPROBS + j] = has ? res.top_ids[j] : -1;
            e->out_top_lp[r * VLM_MAX_TOP_LOGPROBS + j] = has ? res.top_lp[j] : 0.0f;
        }
        r++;
    }
    out->n = r;
    out->token = e->out_token;
    out->logprob = e->out_logprob;
    out->top_ids = e->out_top_ids;
    out->top_lp = e->out_top_lp;
    prompt_logprobs(e, b, true, out);
    return 0;
}
