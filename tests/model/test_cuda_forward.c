// models: gqa4 mha valley2
/*
 * test_cuda_forward: the engine on the CUDA backend against the engine on the CPU backend,
 * end to end, on the generated gqa4 (GQA ratio 4), mha (ratio 1) and valley2 checkpoints:
 *  - logits at every prompt position (prompts of 1, 37 and 300 tokens, prefill in chunks
 *    of 96 so later chunks read KV written by earlier steps, contexts across many blocks):
 *    max |cuda - cpu| / max |cpu| per position within a bf16 bound;
 *  - 16 greedy decode steps from each prompt: the same tokens (each engine follows its own
 *    argmax; the first divergence is reported with both logits' margins);
 *  - image+text: two images (8x8 and 4x12 patches) between text, encoded by the vision
 *    tower in the step that prefills them and spliced at their spans: logits at every
 *    position within the same bound (exercises layernorm, rope_table, attn_varlen, GELU,
 *    cast and scatter_rows on the device);
 *  - Valley2 (the valley2 checkpoint: Qwen2.5 decoder with q/k/v biases, SigLIP tower,
 *    conv_adapter projector, Qwen2-VL tower): the text prompts above, and one image with both
 *    towers (a base tile plus 1x2 AnyRes crops whose 14x28 map is cropped to 14x20 and pooled
 *    to 9x13, then 8x8 Qwen2-VL patches) between text in one prefill step: logits at rows
 *    across the whole prompt within the same bound (exercises gelu_tanh, im2col_3x3s2,
 *    avgpool_adaptive and the biases on the device);
 *  - the final logits' hash of each run is printed, so drift shows in the logs;
 *  - CUDA graphs: three sequences (5, 37 and 250 tokens) decoded together for 16 steps on a
 *    CUDA engine with graphs (batch padded to 4, block tables to 16/32 columns, replayed from
 *    the second step) and one with enforce_eager: same tokens, logits within the bound (the
 *    graph's attention splits by the bucket's context, so rounding may differ).
 * Exits 77 without a GPU (or without CUDA in the build); the CPU half still needs the models.
 */
#include "engine/engine.h"
#include "engine/model.h"
#include "test.h"

#include <math.h>
#include <stdlib.h>

#define CHUNK 96
#define BS 16
#define N_BLOCKS 40      /* > (300 + 16) / 16 + 1 */
#define N_GEN 16
#define BOUND 3e-2       /* bf16 activations through 3 layers: ~1e-2 expected */

static int32_t argmax(const float *x, int64_t n)
{
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

/* top-1 minus top-2 logit: how close a greedy choice was to flipping */
static double margin(const float *x, int64_t n)
{
    float a = -INFINITY, b = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (x[i] > a) b = a, a = x[i];
        else if (x[i] > b) b = x[i];
    }
    return (double)a - (double)b;
}

/* max |got - ref| / max |ref| over one logits row (infinite when got has a non-finite) */
static double rel_diff(const float *ref, const float *got, int64_t n)
{
    double mx = 0, d = 0;
    for (int64_t v = 0; v < n; v++) {
        mx = fmax(mx, fabs(ref[v]));
        d = fmax(d, isfinite(got[v]) ? fabs((double)got[v] - ref[v]) : INFINITY);
    }
    return mx > 0 ? d / mx : d;
}

static char *tname_next(void)
{
    static char names[64][160];
    static int i;
    return names[i++ % 64];
}

/* Prefill ids (n) in chunks on e, logits of every position into lg (n, V). */
static void prefill(struct engine *e, const int32_t *ids, int n, const int32_t *blocks,
                    float *lg, int64_t V)
{
    int32_t rows[CHUNK];
    for (int i = 0; i < CHUNK; i++) rows[i] = i;
    for (int p0 = 0; p0 < n; p0 += CHUNK) {
        int c = VLM_MIN(CHUNK, n - p0);
        struct batch_seq s = {.pos = p0, .n_tokens = c, .tokens = ids + p0, .blocks = blocks,
                              .n_blocks = N_BLOCKS - 1};
        struct batch b = {.seqs = &s, .n_seqs = 1};
        VLM_ASSERT(engine_forward_rows(e, &b, rows, c, lg + (size_t)p0 * V) == 0);
    }
}

/* One greedy decode step at position pos with token tok; logits into lg (V). */
static void decode(struct engine *e, int32_t tok, int pos, const int32_t *blocks, float *lg)
{
    int32_t row = 0;
    struct batch_seq s = {.pos = pos, .n_tokens = 1, .tokens = &tok, .blocks = blocks,
                          .n_blocks = N_BLOCKS - 1};
    struct batch b = {.seqs = &s, .n_seqs = 1};
    VLM_ASSERT(engine_forward_rows(e, &b, &row, 1, lg) == 0);
}

/* Pixels in [-1, 1) from a hash of (image, element), for an item of t x h x w patches. */
static float *make_pixels(int img, const struct model_config *c, int t, int h, int w)
{
    int64_t pd = (int64_t)c->in_chans * c->temporal_patch_size * c->patch_size * c->patch_size;
    int64_t n = (int64_t)t * h * w * pd;
    float *p = xmalloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = ((uint64_t)img << 40) + (uint64_t)i * 0x9E3779B97F4A7C15ull;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        p[i] = (float)((double)((z ^ (z >> 31)) >> 40) / (double)(1 << 23)) - 1.0f;
    }
    return p;
}

/* One prefill step of a prompt with images (spans, encoded this step into encoder-cache rows
 * enc_row) on the CPU and the CUDA engine: rcs[] their return codes, the worst relative
 * difference of the nr requested logits rows returned. */
static double image_step(struct engine *cpu, struct engine *gpu, const int32_t *tok, int32_t n,
                         const int32_t *blocks, const struct mm_span *spans,
                         const struct mm_item *const *enc, int32_t *enc_row, int32_t n_items,
                         const int32_t *rows, int32_t nr, int64_t V, float *lc, float *lg,
                         int rcs[2])
{
    struct engine *es[2] = {cpu, gpu};
    float *outs[2] = {lc, lg};
    for (int k = 0; k < 2; k++) {
        struct batch_seq s = {.pos = 0, .n_tokens = n, .tokens = tok, .blocks = blocks,
                              .n_blocks = N_BLOCKS - 1, .mm = spans, .mm_row = enc_row,
                              .n_mm = n_items};
        struct batch b = {.seqs = &s, .n_seqs = 1, .encode = enc, .encode_row = enc_row,
                          .n_encode = n_items};
        rcs[k] = engine_forward_rows(es[k], &b, rows, nr, outs[k]);
    }
    double worst = 0;
    for (int32_t i = 0; i < nr && !rcs[0] && !rcs[1]; i++)
        worst = fmax(worst, rel_diff(lc + (size_t)i * V, lg + (size_t)i * V, V));
    return worst;
}

/* Two images between text in one prefill step on both engines; every position compared. */
static void check_image(const char *name, const struct model *m, struct engine *cpu,
                        struct engine *gpu, const int32_t *blocks, float *lc, float *lg)
{
    const struct model_config *c = &m->cfg;
    int32_t m2 = c->spatial_merge_size * c->spatial_merge_size;
    int grids[2][3] = {{1, 8, 8}, {1, 4, 12}};
    struct mm_item items[2];
    float *pix[2];
    for (int i = 0; i < 2; i++) {
        int t = grids[i][0], h = grids[i][1], w = grids[i][2];
        pix[i] = make_pixels(i, c, t, h, w);
        items[i] = (struct mm_item){.hash = 77 + (uint64_t)i, .pixels = pix[i], .grid_t = t,
                                    .grid_h = h, .grid_w = w, .n_patches = t * h * w,
                                    .n_tokens = t * h * w / m2};
    }
    /* text 5 | image 0 | text 3 | image 1 | text 6 */
    int32_t tok[CHUNK], n = 0;
    struct mm_span spans[2];
    const struct mm_item *enc[2] = {&items[0], &items[1]};
    for (int i = 0; i < 5; i++) tok[n++] = 100 + i;
    spans[0] = (struct mm_span){.offset = n, .item = &items[0]};
    for (int i = 0; i < items[0].n_tokens; i++) tok[n++] = 7;
    for (int i = 0; i < 3; i++) tok[n++] = 200 + i;
    spans[1] = (struct mm_span){.offset = n, .item = &items[1]};
    for (int i = 0; i < items[1].n_tokens; i++) tok[n++] = 7;
    for (int i = 0; i < 6; i++) tok[n++] = 300 + i;
    VLM_ASSERT(n <= CHUNK && items[0].n_tokens + items[1].n_tokens <= 64);
    int32_t enc_row[2] = {0, items[0].n_tokens}; /* packed into the encoder cache */
    int32_t rows[CHUNK];
    for (int i = 0; i < n; i++) rows[i] = i;
    int rcs[2];
    double worst = image_step(cpu, gpu, tok, n, blocks, spans, enc, enc_row, 2, rows, n,
                              c->vocab_size, lc, lg, rcs);
    char *tn = tname_next();
    snprintf(tn, 160, "%s: image+text prompt of %d: logits within %.0e of the CPU", name, n,
             BOUND);
    TEST(tn) {
        CHECK_EQ(rcs[0], 0);
        CHECK_EQ(rcs[1], 0);
        CHECK(worst <= BOUND);
        printf("  %s image+text n=%d: worst max|d|/max|ref| = %.3e\n", name, n, worst);
    }
    free(pix[0]), free(pix[1]);
}

/* Valley2 (docs/MODEL.md, "Valley2 images"): one item with a SigLIP side (3 tiles: the base
 * and 1x2 crops, the 14x28 crop map cropped and pooled) and a Qwen2-VL side, between text,
 * in one prefill step on both engines; logits compared at VROWS rows: spread over the
 * prompt, plus the image's first row, its first Qwen2-VL row, the row after it and the last. */
enum { VROWS = 64 };
static void check_valley2_image(const char *name, const struct model *m, struct engine *cpu,
                                struct engine *gpu, const int32_t *blocks, float *lc, float *lg)
{
    const struct model_config *c = &m->cfg;
    int32_t S = c->sig_image, T = (c->sig_image / c->sig_patch - 1) / 2 + 1;
    int32_t m2 = c->spatial_merge_size * c->spatial_merge_size;
    int gh = 8, gw = 8;
    struct mm_item it = {.hash = 91, .grid_t = 1, .grid_h = gh, .grid_w = gw,
                         .n_patches = gh * gw};
    float *pix = make_pixels(3, c, 1, gh, gw);
    /* tiles in [-1, 1) as the processor's (x - 0.5) / 0.5 leaves them */
    int32_t n_tiles = 3;
    float *tiles = xmalloc((size_t)n_tiles * 3 * (size_t)S * (size_t)S * sizeof *tiles);
    for (size_t i = 0; i < (size_t)n_tiles * 3 * (size_t)S * (size_t)S; i++)
        tiles[i] = (float)((i * 2654435761u) % 2048u) / 1024.0f - 1.0f;
    it.pixels = pix;
    it.sig = (struct siglip_input){.tiles = tiles, .n_tiles = n_tiles, .grid_w = 2, .grid_h = 1,
                                   .keep_y = 0, .keep_x = 4, .keep_h = T, .keep_w = 20,
                                   .pool_h = 9, .pool_w = 13};
    it.sig.n_tokens = T * T + it.sig.pool_h * it.sig.pool_w;
    it.n_tokens = it.sig.n_tokens + it.n_patches / m2;
    /* text 7 | image | text 9 */
    int32_t n = 7 + it.n_tokens + 9;
    int32_t *tok = xmalloc((size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++) tok[i] = i < 7 ? 100 + i : i < 7 + it.n_tokens ? 7 : 300 + i % 50;
    struct mm_span span = {.offset = 7, .item = &it};
    const struct mm_item *enc[1] = {&it};
    int32_t enc_row[1] = {0};
    int32_t rows[VROWS], nr = 0;
    for (int i = 0; i < VROWS - 4; i++) rows[nr++] = (int32_t)((int64_t)i * n / (VROWS - 4));
    rows[nr++] = 7;
    rows[nr++] = 7 + it.sig.n_tokens;
    rows[nr++] = 7 + it.n_tokens;
    rows[nr++] = n - 1;
    int rcs[2];
    double worst = image_step(cpu, gpu, tok, n, blocks, &span, enc, enc_row, 1, rows, nr,
                              c->vocab_size, lc, lg, rcs);
    char *tn = tname_next();
    snprintf(tn, 160, "%s: image (%d SigLIP + %d Qwen2-VL rows) in a prompt of %d: logits within "
             "%.0e of the CPU", name, it.sig.n_tokens, it.n_patches / m2, n, BOUND);
    TEST(tn) {
        CHECK_EQ(rcs[0], 0);
        CHECK_EQ(rcs[1], 0);
        CHECK(worst <= BOUND);
        printf("  %s image+text n=%d: worst max|d|/max|ref| = %.3e\n", name, n, worst);
    }
    free(tok), free(tiles), free(pix);
}

/* Three sequences decoded together on a graph engine and an eager one (both CUDA). */
static void check_graphs(const char *name, const struct model *m, struct engine *gr,
                         struct engine *eager, float *l1, float *l2)
{
    enum { NS = 3 };
    const int lens[NS] = {5, 37, 250};
    int64_t V = m->cfg.vocab_size;
    static int32_t ids[NS][300], blocks[NS][20];
    int next = 1;
    struct batch_seq seqs[NS];
    int32_t tok[2][NS];
    for (int s = 0; s < NS; s++) {
        for (int i = 0; i < lens[s]; i++) ids[s][i] = (int32_t)((i * 31 + 1000 * s + 5) % V);
        for (int j = 0; j < 20; j++) blocks[s][j] = next + j;
        next += (lens[s] + N_GEN) / BS + 1;
        VLM_ASSERT(next < N_BLOCKS);
    }
    struct engine *es[2] = {gr, eager};
    float *outs[2] = {l1, l2};
    for (int k = 0; k < 2; k++)
        for (int s = 0; s < NS; s++) {
            prefill(es[k], ids[s], lens[s], blocks[s], outs[k], V);
            tok[k][s] = argmax(outs[k] + (size_t)(lens[s] - 1) * V, V);
        }
    int64_t graph_steps0 = gr->n_graph_steps;
    int same = 0;
    double worst = 0;
    int32_t rows[NS] = {0, 1, 2};
    for (int step = 0; step < N_GEN; step++) {
        for (int k = 0; k < 2; k++) {
            for (int s = 0; s < NS; s++)
                seqs[s] = (struct batch_seq){.pos = lens[s] + step, .n_tokens = 1,
                                             .tokens = &tok[k][s], .blocks = blocks[s],
                                             .n_blocks = 20};
            struct batch b = {.seqs = seqs, .n_seqs = NS};
            VLM_ASSERT(engine_forward_rows(es[k], &b, rows, NS, outs[k]) == 0);
        }
        bool all = true;
        for (int s = 0; s < NS; s++) {
            const float *a = l2 + (size_t)s * V, *b = l1 + (size_t)s * V;
            worst = fmax(worst, rel_diff(a, b, V));
            tok[0][s] = argmax(b, V);
            tok[1][s] = argmax(a, V);
            all = all && tok[0][s] == tok[1][s];
        }
        if (!all) break;
        same++;
    }
    char *tn = tname_next();
    snprintf(tn, 160, "%s: 3 sequences, %d decode steps as CUDA graphs == eager", name, N_GEN);
    TEST(tn) {
        CHECK_EQ(gr->n_graph_steps - graph_steps0, (int64_t)N_GEN);
        CHECK_EQ(eager->n_graph_steps, 0);
        CHECK(same == N_GEN);
        CHECK(worst <= BOUND);
        printf("  %s graphs vs eager: %d steps agree, worst max|d|/max|ref| = %.3e\n", name,
               same, worst);
    }
}

static void check_model(const char *name)
{
    struct model m = {0};
    struct vlm_err err = {0};
    int rc = model_load(&m, test_path("VLM_MODELS", name), &err);
    char *tn = tname_next();
    snprintf(tn, 160, "%s: checkpoint loads", name);
    TEST(tn) {
        CHECK_EQ(rc, 0);
        if (rc) fprintf(stderr, "  model_load: %s\n", err.msg);
    }
    if (rc) return;

    /* Valley2's image step prefills the whole prompt (345 tokens) at once */
    bool v2 = m.cfg.has_siglip;
    struct engine_params ep = {.block_size = BS, .n_blocks = N_BLOCKS,
                               .max_batched_tokens = v2 ? 512 : CHUNK, .max_seqs = 4,
                               .max_logit_rows = CHUNK,
                               .encoder_cache_tokens = m.cfg.has_vision ? (v2 ? 512 : 64) : 0,
                               .max_image_patches = 256, .max_siglip_tiles = v2 ? 3 : 0};
    struct engine cpu, gpu;
    VLM_ASSERT(engine_init(&cpu, &m, &ep, &err) == 0);
    ep.backend = ENGINE_BACKEND_CUDA;
    rc = engine_init(&gpu, &m, &ep, &err);
    if (rc) {
        printf("no CUDA engine: %s\n", err.msg);
        engine_destroy(&cpu);
        model_destroy(&m);
        test_report();
        TEST_SKIP("the CUDA engine needs a GPU");
    }

    int64_t V = m.cfg.vocab_size;
    int32_t blocks[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS - 1; i++) blocks[i] = i + 1;
    int lens[] = {1, 37, 300};
    int32_t *ids = xmalloc(300 * sizeof *ids);
    float *lc = xmalloc((size_t)300 * (size_t)V * sizeof(float));
    float *lg = xmalloc((size_t)300 * (size_t)V * sizeof(float));
    for (size_t pi = 0; pi < ARRAY_LEN(lens); pi++) {
        int n = lens[pi];
        for (int i = 0; i < n; i++) ids[i] = (int32_t)((i * 7919 + 17 * (int)pi + 3) % V);
        prefill(&cpu, ids, n, blocks, lc, V);
        prefill(&gpu, ids, n, blocks, lg, V);
        double worst = 0;
        int argmax_diff = 0;
        for (int i = 0; i < n; i++) {
            const float *a = lc + (size_t)i * V, *b = lg + (size_t)i * V;
            worst = fmax(worst, rel_diff(a, b, V));
            argmax_diff += argmax(a, V) != argmax(b, V);
        }
        tn = tname_next();
        snprintf(tn, 160, "%s: prompt of %d: logits within %.0e of the CPU", name, n, BOUND);
        TEST(tn) {
            CHECK(worst <= BOUND);
            printf("  %s n=%d: worst max|d|/max|ref| = %.3e, argmax differs at %d of %d\n", name,
                   n, worst, argmax_diff, n);
        }

        /* greedy: each engine follows its own choices; they must agree */
        int32_t tc = argmax(lc + (size_t)(n - 1) * V, V), tg = argmax(lg + (size_t)(n - 1) * V, V);
        int same = 0;
        const float *row_c = lc + (size_t)(n - 1) * V;
        double m_c = margin(row_c, V);
        for (int k = 0; k < N_GEN && tc == tg; k++) {
            same++;
            decode(&cpu, tc, n + k, blocks, lc);
            decode(&gpu, tg, n + k, blocks, lg);
            row_c = lc;
            m_c = margin(lc, V);
            tc = argmax(lc, V);
            tg = argmax(lg, V);
        }
        /* a near tie may go either way in bf16: the engines may part only where the CPU's
         * top two are closer than the logits bound (BOUND x max|logit| of that row) */
        double scale = 0;
        for (int64_t v = 0; v < V; v++) scale = fmax(scale, fabs((double)row_c[v]));
        bool tie = same < N_GEN && m_c < BOUND * scale;
        tn = tname_next();
        snprintf(tn, 160, "%s: prompt of %d: %d greedy tokens identical (or parted at a near tie)", name, n, N_GEN);
        TEST(tn) {
            CHECK(same >= N_GEN || tie);
            if (same < N_GEN)
                printf("  %s n=%d: diverged after %d tokens (cpu margin %.3g, bound %.3g: %s)\n",
                       name, n, same, m_c, BOUND * scale, tie ? "a near tie" : "a real difference");
        }
        printf("  %s n=%d: final logits hash cpu %016llx cuda %016llx\n", name, n,
               (unsigned long long)vlm_hash64(lc, (size_t)V * sizeof(float), 0),
               (unsigned long long)vlm_hash64(lg, (size_t)V * sizeof(float), 0));
    }
    if (v2) check_valley2_image(name, &m, &cpu, &gpu, blocks, lc, lg);
    else if (m.cfg.has_vision) check_image(name, &m, &cpu, &gpu, blocks, lc, lg);
    engine_destroy(&cpu); /* its memory is the eager CUDA engine's now */
    ep.enforce_eager = true;
    struct engine eager;
    VLM_ASSERT(engine_init(&eager, &m, &ep, &err) == 0);
    check_graphs(name, &m, &gpu, &eager, lc, lg);
    engine_destroy(&eager);
    free(ids), free(lc), free(lg);
    engine_destroy(&gpu);
    model_destroy(&m);
}

int main(void)
{
    check_model("gqa4");
    check_model("mha");
    check_model("valley2");
    return test_report();
}
