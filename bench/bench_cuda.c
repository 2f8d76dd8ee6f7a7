/*
 * bench_cuda: the decoder and vision-tower forward passes at the real shapes (Qwen3-8B,
 * Qwen2-VL's 675M ViT) with random bf16 weights made on the device, through the CUDA
 * backend table op for op as engine/qwen3.c and engine/vit.c call it (no checkpoint, no
 * engine, no scheduler): the GPU figures before the engine runs on CUDA.
 * Prints figures, asserts nothing; exits 77 without a GPU.
 *
 *   bench_cuda [--layers N] [--steps N] [--fused] [--graphs] [--ctx N]
 *
 *   decode b=1/8/64/256 at context --ctx (512): ms per step and tok/s; at b=1 next to the
 *       floor = bytes of weights read per token / measured device copy bandwidth;
 *   prefill: one 2048-token chunk, tok/s;
 *   vit: one 1024x1024 image (74 x 74 patches of 14 after Qwen2-VL's resize), ms.
 * --fused runs the residual add + RMS norm and the q/k norm + RoPE through the fused
 * launchers (kernels/cuda.h) instead of the table's separate ops. --graphs runs decode steps
 * as the engine does on CUDA: recorded once into a CUDA graph (graphs->begin/end, with
 * block tables padded to a power of two of columns), replayed after. Each figure is the median
 * of --steps timed steps (10) after 2 warm-up steps; a step ends with the logits download,
 * as in serving.
 */
#include "engine/backend.h"

#ifdef VLM_HAVE_CUDA
#include "kernels/cuda.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef VLM_HAVE_CUDA
int main(void)
{
    printf("bench_cuda: skipped: built without CUDA\n");
    return 77;
}
#else

/* Qwen3-8B */
#define H 4096
#define NH 32
#define NKV 8
#define HD 128
#define FF 12288
#define VOCAB 151936
#define BS 16
/* Qwen2-VL vision tower */
#define V_DIM 1280
#define V_HEADS 16
#define V_HD 80
#define V_MLP 5120
#define V_DEPTH 32
#define V_PATCH 1176 /* 3 x 2 x 14 x 14 */
#define V_OUT 4096

#define T_MAX 2048   /* tokens in one step (prefill chunk) */
#define B_MAX 256    /* sequences in one decode step */

struct layer {
    struct tensor attn_norm, wq, wk, wv, wo, q_norm, k_norm, mlp_norm, w_gate, w_up, w_down;
};

struct bench {
    struct backend be;
    const struct backend_ops *o;
    void *c;
    cudaStream_t s;
    uint64_t seed;
    int n_layers, ctx;
    bool fused;
    bool graphs;                         /* decode steps as CUDA graphs */
    size_t weight_bytes;                 /* read per decode step */
    struct layer *layers;
    struct tensor embed, final_norm, lm_head;
    struct kv_layer *kv;
    int32_t n_blocks;
    void *x, *xn, *q, *k, *v, *att, *gate, *up, *xs, *logits; /* activations (device) */
    float *h_logits;
    int32_t *d_pos;                      /* (T_MAX) device copy of positions (fused rope) */
    float *d_inv_freq;                   /* (HD/2) */
    /* step metadata (host) */
    int32_t tokens[T_MAX], pos[T_MAX], slot[T_MAX], q_start[B_MAX + 1], ctx_len[B_MAX];
    int32_t *block_tables, max_blocks, rows[B_MAX];
    int32_t *graph_tables;               /* (B_MAX, max_blocks) --graphs: narrower stride */
};

static void *dalloc(struct bench *B, size_t n)
{
    void *p = B->o->alloc(B->c, n);
    if (!p) {
        fprintf(stderr, "bench_cuda: out of device memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* A bf16 weight (rows, cols) with values in [lo, hi). */
static struct tensor weight(struct bench *B, int64_t cols, int64_t rows, float lo, float hi)
{
    struct tensor t = tensor_make(NULL, DT_BF16, cols, rows, 1, 1);
    t.data = dalloc(B, tensor_nbytes(&t));
    cuda_fill_uniform(t.data, tensor_nelem(&t), B->seed++ * 1000003u, lo, hi, B->s);
    return t;
}

static struct tensor mat(void *p, enum dtype t, int64_t rows, int64_t cols)
{
    return tensor_make(p, t, cols, rows, 1, 1);
}

static struct tensor heads3(void *p, int64_t n, int64_t heads, int64_t hd)
{
    return tensor_make(p, DT_BF16, hd, heads, n, 1);
}

static double now_ms(void)
{
    return (double)vlm_now_ns() * 1e-6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ==== Decoder ==== */

static void dec_init(struct bench *B)
{
    float a = 0.02f; /* weight scale: keeps activations O(1) through 36 layers */
    B->layers = xcalloc((size_t)B->n_layers, sizeof *B->layers);
    for (int l = 0; l < B->n_layers; l++) {
        struct layer *w = &B->layers[l];
        w->attn_norm = weight(B, H, 1, 0.9f, 1.1f);
        w->wq = weight(B, H, NH * HD, -a, a);
        w->wk = weight(B, H, NKV * HD, -a, a);
        w->wv = weight(B, H, NKV * HD, -a, a);
        w->wo = weight(B, NH * HD, H, -a, a);
        w->q_norm = weight(B, HD, 1, 0.9f, 1.1f);
        w->k_norm = weight(B, HD, 1, 0.9f, 1.1f);
        w->mlp_norm = weight(B, H, 1, 0.9f, 1.1f);
        w->w_gate = weight(B, H, FF, -a, a);
        w->w_up = weight(B, H, FF, -a, a);
        w->w_down = weight(B, FF, H, -a, a);
        B->weight_bytes += (size_t)2 * ((size_t)H * (NH + 2 * NKV) * HD + (size_t)NH * HD * H +
                                        3 * (size_t)H * FF + 2 * H + 2 * HD);
    }
    B->embed = weight(B, H, VOCAB, -1.0f, 1.0f);
    B->final_norm = weight(B, H, 1, 0.9f, 1.1f);
    B->lm_head = weight(B, H, VOCAB, -a, a);
    B->weight_bytes += (size_t)2 * VOCAB * H + 2 * H;

    /* KV: every decode sequence owns ctx/BS blocks of its own (the prefill sequence reuses
     * the first ones); block 0 is the null block */
    int32_t per_seq = (B->ctx + BS - 1) / BS;
    B->max_blocks = VLM_MAX(per_seq, (T_MAX + BS - 1) / BS);
    B->n_blocks = 1 + VLM_MAX(B_MAX * per_seq, B->max_blocks);
    B->kv = xcalloc((size_t)B->n_layers, sizeof *B->kv);
    size_t kv_bytes = (size_t)B->n_blocks * BS * NKV * HD * 2;
    for (int l = 0; l < B->n_layers; l++) {
        B->kv[l] = (struct kv_layer){.k = dalloc(B, kv_bytes), .v = dalloc(B, kv_bytes),
                                     .type = DT_BF16, .n_blocks = B->n_blocks,
                                     .block_size = BS, .n_kv_heads = NKV, .head_dim = HD};
        cuda_fill_uniform(B->kv[l].k, (int64_t)(kv_bytes / 2), B->seed++, -1.0f, 1.0f, B->s);
        cuda_fill_uniform(B->kv[l].v, (int64_t)(kv_bytes / 2), B->seed++, -1.0f, 1.0f, B->s);
    }
    B->block_tables = xmalloc((size_t)B_MAX * (size_t)B->max_blocks * sizeof(int32_t));
    B->graph_tables = xmalloc((size_t)B_MAX * (size_t)B->max_blocks * sizeof(int32_t));
    for (int32_t s = 0; s < B_MAX; s++)
        for (int32_t b = 0; b < B->max_blocks; b++)
            B->block_tables[s * B->max_blocks + b] = 1 + (s * per_seq + b) % (B->n_blocks - 1);

    size_t T = T_MAX, es = 2;
    B->x = dalloc(B, T * H * es);
    B->xn = dalloc(B, T * H * es);
    B->q = dalloc(B, T * NH * HD * es);
    B->att = dalloc(B, T * NH * HD * es);
    B->k = dalloc(B, T * NKV * HD * es);
    B->v = dalloc(B, T * NKV * HD * es);
    B->gate = dalloc(B, T * FF * es);
    B->up = dalloc(B, T * FF * es);
    B->xs = dalloc(B, (size_t)B_MAX * H * es);
    B->logits = dalloc(B, (size_t)B_MAX * VOCAB * sizeof(float));
    B->h_logits = xmalloc((size_t)B_MAX * VOCAB * sizeof(float));
    B->d_pos = dalloc(B, T_MAX * sizeof(int32_t));
    B->d_inv_freq = dalloc(B, HD / 2 * sizeof(float));
    float inv[HD / 2];
    cuda_rope_inv_freq(inv, HD, 1e6f);
    B->o->upload(B->c, B->d_inv_freq, inv, sizeof inv);
    B->o->sync(B->c);
}

/* One step: n_seqs sequences with q_len new tokens each at context ctx; logits for the last
 * row of each sequence. Returns milliseconds, logits downloaded. */
static void dec_ops(struct bench *B, int32_t n, int32_t n_seqs);

static double dec_step(struct bench *B, int32_t n_seqs, int32_t q_len, int32_t ctx)
{
    int32_t n = n_seqs * q_len;
    VLM_ASSERT(n <= T_MAX && n_seqs <= B_MAX && ctx <= B->max_blocks * BS);
    for (int32_t s = 0; s <= n_seqs; s++) B->q_start[s] = s * q_len;
    for (int32_t s = 0; s < n_seqs; s++) {
        B->ctx_len[s] = ctx;
        B->rows[s] = (s + 1) * q_len - 1;
        for (int32_t i = 0; i < q_len; i++) {
            int32_t t = s * q_len + i, p = ctx - q_len + i;
            B->tokens[t] = (int32_t)((t * 7919u + 13u) % VOCAB);
            B->pos[t] = p;
            B->slot[t] = B->block_tables[s * B->max_blocks + p / BS] * BS + p % BS;
        }
    }
    const struct backend_ops *o = B->o;
    void *c = B->c;
    double t0 = now_ms();
    struct step_meta m = {.n_seqs = n_seqs, .n_tokens = n, .tokens = B->tokens, .pos = B->pos,
                          .slot = B->slot, .q_start = B->q_start, .ctx_len = B->ctx_len,
                          .block_tables = B->block_tables, .max_blocks = B->max_blocks};
    if (B->graphs && q_len == 1) { /* as engine.c's graph_pad, minus the batch padding */
        int32_t cols = 16;
        while (cols < (ctx + BS - 1) / BS) cols *= 2;
        cols = VLM_MIN(cols, B->max_blocks);
        m.max_blocks = cols; /* the first cols columns of each row: a narrower stride */
        for (int32_t s = 0; s < n_seqs; s++)
            memcpy(B->graph_tables + (size_t)s * cols, B->block_tables + (size_t)s * B->max_blocks,
                   (size_t)cols * sizeof(int32_t));
        m.block_tables = B->graph_tables;
        m.max_ctx = cols * BS;
        m.graph_key = (uint64_t)n_seqs << 32 | (uint64_t)cols;
    }
    o->set_step(c, &m);
    if (B->fused) o->upload(c, B->d_pos, B->pos, (size_t)n * sizeof(int32_t));
    if (m.graph_key) {
        if (!o->graphs->launch(c)) {
            o->graphs->begin(c);
            dec_ops(B, n, n_seqs);
            VLM_ASSERT(o->graphs->end(c));
        }
    } else {
        dec_ops(B, n, n_seqs);
    }
    o->download(c, B->h_logits, B->logits, (size_t)n_seqs * VOCAB * sizeof(float));
    return now_ms() - t0;
}

/* The decoder's ops for n tokens of n_seqs sequences (logits for each sequence's last row). */
static void dec_ops(struct bench *B, int32_t n, int32_t n_seqs)
{
    const struct backend_ops *o = B->o;
    void *c = B->c;

    struct tensor x = mat(B->x, DT_BF16, n, H), xn = mat(B->xn, DT_BF16, n, H);
    struct tensor q2 = mat(B->q, DT_BF16, n, NH * HD), q3 = heads3(B->q, n, NH, HD);
    struct tensor k2 = mat(B->k, DT_BF16, n, NKV * HD), k3 = heads3(B->k, n, NKV, HD);
    struct tensor v2 = mat(B->v, DT_BF16, n, NKV * HD), v3 = heads3(B->v, n, NKV, HD);
    struct tensor a2 = mat(B->att, DT_BF16, n, NH * HD), a3 = heads3(B->att, n, NH, HD);
    struct tensor gate = mat(B->gate, DT_BF16, n, FF), up = mat(B->up, DT_BF16, n, FF);
    float eps = 1e-6f, scale = 1.0f / sqrtf((float)HD);

    o->embed(c, &x, &B->embed);
    for (int l = 0; l < B->n_layers; l++) {
        const struct layer *w = &B->layers[l];
        /* the previous layer's MLP residual add is fused into this norm when --fused */
        if (!B->fused || l == 0) o->rmsnorm(c, &xn, &x, &w->attn_norm, eps);
        o->matmul(c, &q2, &xn, &w->wq, NULL);
        o->matmul(c, &k2, &xn, &w->wk, NULL);
        o->matmul(c, &v2, &xn, &w->wv, NULL);
        if (B->fused) {
            cuda_qk_norm_rope(B->q, w->q_norm.data, B->d_pos, B->d_inv_freq, n, NH, HD, eps, B->s);
            cuda_qk_norm_rope(B->k, w->k_norm.data, B->d_pos, B->d_inv_freq, n, NKV, HD, eps, B->s);
        } else {
            o->rmsnorm(c, &q3, &q3, &w->q_norm, eps);
            o->rmsnorm(c, &k3, &k3, &w->k_norm, eps);
            o->rope_neox(c, &q3, 1e6f);
            o->rope_neox(c, &k3, 1e6f);
        }
        o->kv_store(c, &B->kv[l], &k3, &v3);
        o->attn_paged(c, &a3, &q3, &B->kv[l], scale);
        o->matmul(c, &xn, &a2, &w->wo, NULL);
        if (B->fused) {
            cuda_add_rmsnorm(B->x, B->xn, B->xn, w->mlp_norm.data, n, H, eps, B->s);
        } else {
            o->add(c, &x, &x, &xn);
            o->rmsnorm(c, &xn, &x, &w->mlp_norm, eps);
        }
        o->matmul(c, &gate, &xn, &w->w_gate, NULL);
        o->matmul(c, &up, &xn, &w->w_up, NULL);
        o->silu_mul(c, &gate, &gate, &up);
        o->matmul(c, &xn, &gate, &w->w_down, NULL);
        if (B->fused && l + 1 < B->n_layers) {
            cuda_add_rmsnorm(B->x, B->xn, B->xn, B->layers[l + 1].attn_norm.data, n, H, eps, B->s);
        } else {
            o->add(c, &x, &x, &xn);
        }
    }
    struct tensor xs = mat(B->xs, DT_BF16, n_seqs, H);
    struct tensor lg = mat(B->logits, DT_F32, n_seqs, VOCAB);
    o->gather_rows(c, &xs, &x, B->rows);
    o->rmsnorm(c, &xs, &xs, &B->final_norm, eps);
    o->matmul(c, &lg, &xs, &B->lm_head, NULL);
}

static double median_step(struct bench *B, int steps, int32_t n_seqs, int32_t q_len, int32_t ctx)
{
    double t[64];
    steps = VLM_MIN(steps, 64);
    for (int i = 0; i < 2; i++) dec_step(B, n_seqs, q_len, ctx);
    for (int i = 0; i < steps; i++) t[i] = dec_step(B, n_seqs, q_len, ctx);
    qsort(t, (size_t)steps, sizeof *t, cmp_d);
    int bad = 0;
    for (int64_t i = 0; i < (int64_t)n_seqs * VOCAB; i++) bad += !isfinite(B->h_logits[i]);
    if (bad) printf("  (warning: %d non-finite logits)\n", bad);
    return t[steps / 2];
}

/* ==== Vision tower ==== */

static double vit_run(struct bench *B, int steps)
{
    const int32_t side = 74, P = side * side, N = P / 4;
    const struct backend_ops *o = B->o;
    void *c = B->c;
    float a = 0.02f;
    struct tensor patch = weight(B, V_PATCH, V_DIM, -a, a);
    struct tensor ln_w[2 * V_DEPTH], ln_b[2 * V_DEPTH], qkv_w[V_DEPTH], qkv_b[V_DEPTH];
    struct tensor proj_w[V_DEPTH], proj_b[V_DEPTH], fc1_w[V_DEPTH], fc1_b[V_DEPTH];
    struct tensor fc2_w[V_DEPTH], fc2_b[V_DEPTH];
    for (int l = 0; l < V_DEPTH; l++) {
        ln_w[2 * l] = weight(B, V_DIM, 1, 0.9f, 1.1f);
        ln_b[2 * l] = weight(B, V_DIM, 1, -0.1f, 0.1f);
        ln_w[2 * l + 1] = weight(B, V_DIM, 1, 0.9f, 1.1f);
        ln_b[2 * l + 1] = weight(B, V_DIM, 1, -0.1f, 0.1f);
        qkv_w[l] = weight(B, V_DIM, 3 * V_DIM, -a, a);
        qkv_b[l] = weight(B, 3 * V_DIM, 1, -a, a);
        proj_w[l] = weight(B, V_DIM, V_DIM, -a, a);
        proj_b[l] = weight(B, V_DIM, 1, -a, a);
        fc1_w[l] = weight(B, V_DIM, V_MLP, -a, a);
        fc1_b[l] = weight(B, V_MLP, 1, -a, a);
        fc2_w[l] = weight(B, V_MLP, V_DIM, -a, a);
        fc2_b[l] = weight(B, V_DIM, 1, -a, a);
    }
    struct tensor lnq_w = weight(B, V_DIM, 1, 0.9f, 1.1f), lnq_b = weight(B, V_DIM, 1, -0.1f, 0.1f);
    struct tensor m1_w = weight(B, 4 * V_DIM, 4 * V_DIM, -a, a);
    struct tensor m1_b = weight(B, 4 * V_DIM, 1, -a, a);
    struct tensor m2_w = weight(B, 4 * V_DIM, V_OUT, -a, a), m2_b = weight(B, V_OUT, 1, -a, a);

    /* pixels (f32, as uploaded by vit.c), rotary tables, activations */
    float *h = xmalloc((size_t)P * V_PATCH * sizeof(float));
    for (int64_t i = 0; i < (int64_t)P * V_PATCH; i++)
        h[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    void *pix_f32 = dalloc(B, (size_t)P * V_PATCH * 4), *pix = dalloc(B, (size_t)P * V_PATCH * 2);
    float *cs = xmalloc((size_t)P * V_HD * sizeof(float)), *sn = xmalloc((size_t)P * V_HD * sizeof(float));
    for (int64_t i = 0; i < (int64_t)P * V_HD; i++) {
        float ang = (float)(i % 977) * 0.37f;
        cs[i] = cosf(ang);
        sn[i] = sinf(ang);
    }
    void *d_cs = dalloc(B, (size_t)P * V_HD * 4), *d_sn = dalloc(B, (size_t)P * V_HD * 4);
    o->upload(c, d_cs, cs, (size_t)P * V_HD * 4);
    o->upload(c, d_sn, sn, (size_t)P * V_HD * 4);
    void *xb = dalloc(B, (size_t)P * V_DIM * 2), *ab = dalloc(B, (size_t)P * V_DIM * 2);
    void *qb = dalloc(B, (size_t)P * V_DIM * 2), *kb = dalloc(B, (size_t)P * V_DIM * 2);
    void *vb = dalloc(B, (size_t)P * V_DIM * 2), *ob = dalloc(B, (size_t)P * V_DIM * 2);
    void *hb = dalloc(B, (size_t)P * V_MLP * 2), *mh = dalloc(B, (size_t)N * 4 * V_DIM * 2);
    void *out = dalloc(B, (size_t)N * V_OUT * 2);
    int32_t cu[2] = {0, P};

    double t[64];
    steps = VLM_MIN(steps, 64);
    for (int it = -2; it < steps; it++) {
        double t0 = now_ms();
        o->upload(c, pix_f32, h, (size_t)P * V_PATCH * 4);
        struct tensor pf = mat(pix_f32, DT_F32, P, V_PATCH), pb = mat(pix, DT_BF16, P, V_PATCH);
        o->cast(c, &pb, &pf);
        struct tensor x = mat(xb, DT_BF16, P, V_DIM), av = mat(ab, DT_BF16, P, V_DIM);
        struct tensor q = mat(qb, DT_BF16, P, V_DIM), k = mat(kb, DT_BF16, P, V_DIM);
        struct tensor v = mat(vb, DT_BF16, P, V_DIM), ov = mat(ob, DT_BF16, P, V_DIM);
        struct tensor hh = mat(hb, DT_BF16, P, V_MLP);
        struct tensor q3 = heads3(qb, P, V_HEADS, V_HD), k3 = heads3(kb, P, V_HEADS, V_HD);
        struct tensor v3 = heads3(vb, P, V_HEADS, V_HD), o3 = heads3(ob, P, V_HEADS, V_HD);
        struct tensor ct = mat(d_cs, DT_F32, P, V_HD), st = mat(d_sn, DT_F32, P, V_HD);
        o->matmul(c, &x, &pb, &patch, NULL);
        for (int l = 0; l < V_DEPTH; l++) {
            o->layernorm(c, &av, &x, &ln_w[2 * l], &ln_b[2 * l], 1e-6f);
            struct tensor wq = tensor_rows(&qkv_w[l], 0, V_DIM);
            struct tensor wk = tensor_rows(&qkv_w[l], V_DIM, V_DIM);
            struct tensor wv = tensor_rows(&qkv_w[l], 2 * V_DIM, V_DIM);
            struct tensor bq = qkv_b[l], bk = qkv_b[l], bv = qkv_b[l];
            bq.ne[0] = bk.ne[0] = bv.ne[0] = V_DIM;
            bk.data = (char *)qkv_b[l].data + V_DIM * 2;
            bv.data = (char *)qkv_b[l].data + 2 * V_DIM * 2;
            o->matmul(c, &q, &av, &wq, &bq);
            o->matmul(c, &k, &av, &wk, &bk);
            o->matmul(c, &v, &av, &wv, &bv);
            o->rope_table(c, &q3, &ct, &st);
            o->rope_table(c, &k3, &ct, &st);
            o->attn_varlen(c, &o3, &q3, &k3, &v3, cu, 1, 1.0f / sqrtf((float)V_HD));
            o->matmul(c, &av, &ov, &proj_w[l], &proj_b[l]);
            o->add(c, &x, &x, &av);
            o->layernorm(c, &av, &x, &ln_w[2 * l + 1], &ln_b[2 * l + 1], 1e-6f);
            o->matmul(c, &hh, &av, &fc1_w[l], &fc1_b[l]);
            o->quick_gelu(c, &hh, &hh);
            o->matmul(c, &av, &hh, &fc2_w[l], &fc2_b[l]);
            o->add(c, &x, &x, &av);
        }
        o->layernorm(c, &av, &x, &lnq_w, &lnq_b, 1e-6f);
        struct tensor y = mat(ab, DT_BF16, N, 4 * V_DIM), mhv = mat(mh, DT_BF16, N, 4 * V_DIM);
        struct tensor ot = mat(out, DT_BF16, N, V_OUT);
        o->matmul(c, &mhv, &y, &m1_w, &m1_b);
        o->gelu_erf(c, &mhv, &mhv);
        o->matmul(c, &ot, &mhv, &m2_w, &m2_b);
        o->sync(c);
        if (it >= 0) t[it] = now_ms() - t0;
    }
    qsort(t, (size_t)steps, sizeof *t, cmp_d);
    free(h), free(cs), free(sn);
    return t[steps / 2];
}

/* ==== Main ==== */

/* Device-to-device copy bandwidth, bytes read + written per second (median of 10). */
static double copy_bw(struct bench *B)
{
    size_t n = (size_t)1 << 30;
    void *a = dalloc(B, n), *b = dalloc(B, n);
    cuda_fill_uniform(a, (int64_t)(n / 2), 7, -1.0f, 1.0f, B->s);
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    double t[10];
    for (int i = -2; i < 10; i++) {
        CUDA_CHECK(cudaEventRecord(e0, B->s));
        CUDA_CHECK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, B->s));
        CUDA_CHECK(cudaEventRecord(e1, B->s));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (i >= 0) t[i] = ms;
    }
    qsort(t, 10, sizeof *t, cmp_d);
    B->o->release(B->c, a);
    B->o->release(B->c, b);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 2.0 * (double)n / (t[5] * 1e-3);
}

int main(int argc, char **argv)
{
    struct bench B = {.n_layers = 36, .ctx = 512, .seed = 1};
    int steps = 10;
    bool only_vit = false, no_vit = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc) B.n_layers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) B.ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fused")) B.fused = true;
        else if (!strcmp(argv[i], "--graphs")) B.graphs = true;
        else if (!strcmp(argv[i], "--vit-only")) only_vit = true;
        else if (!strcmp(argv[i], "--no-vit")) no_vit = true;
        else {
            fprintf(stderr, "usage: bench_cuda [--layers N] [--steps N] [--ctx N] [--fused] "
                            "[--graphs] [--vit-only] [--no-vit]\n");
            return 2;
        }
    }
    struct vlm_err err = {0};
    struct backend_params bp = {0};
    if (backend_cuda_init(&B.be, &bp, &err)) {
        printf("bench_cuda: skipped: %s\n", err.msg);
        return 77;
    }
    B.o = B.be.ops;
    B.c = B.be.ctx;
    B.s = (cudaStream_t)backend_cuda_stream(&B.be);
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    double bw = copy_bw(&B);
    printf("device %s, %d SMs; copy bandwidth %.0f GB/s (read + write)\n", prop.name,
           prop.multiProcessorCount, bw / 1e9);

    if (!only_vit) {
        dec_init(&B);
        double floor_ms = (double)B.weight_bytes / bw * 1e3;
        printf("decoder: %d layers, %s; weights read per step %.2f GB -> floor %.2f ms/token\n",
               B.n_layers,
               B.fused && B.graphs ? "fused add+norm and q/k norm+rope, CUDA graphs"
               : B.fused           ? "fused add+norm and q/k norm+rope"
               : B.graphs          ? "table ops only, CUDA graphs"
                                   : "table ops only",
               (double)B.weight_bytes / 1e9, floor_ms);
        int batches[] = {1, 8, 64, 256};
        for (size_t i = 0; i < ARRAY_LEN(batches); i++) {
            double ms = median_step(&B, steps, batches[i], 1, B.ctx);
            printf("  decode  b=%-3d ctx=%-5d %8.2f ms/step %9.1f tok/s", batches[i], B.ctx, ms,
                   batches[i] / ms * 1e3);
            if (batches[i] == 1) printf("   %.2fx floor", ms / floor_ms);
            printf("\n");
            fflush(stdout);
        }
        double ms = median_step(&B, VLM_MAX(steps / 2, 3), 1, T_MAX, T_MAX);
        printf("  prefill 1 x %d tokens   %8.2f ms      %9.1f tok/s\n", T_MAX, ms,
               T_MAX / ms * 1e3);
        fflush(stdout);
    }
    if (!no_vit) {
        double ms = vit_run(&B, VLM_MAX(steps / 2, 3));
        printf("vit: 1024x1024 image (74x74 patches, 32 blocks + merger) %.2f ms\n", ms);
    }
    backend_destroy(&B.be); /* frees the context; device memory goes with the process */
    return 0;
}

#endif
