// models: valley2
/*
 * test_forward_valley2_images: Valley2 image prompts end to end against the PyTorch reference
 * (tests/golden/valley2/e2e.json, made by tests/golden/make_valley2_goldens.py --images on the
 * "valley2" checkpoint). Each image is prepared by the server's code (server/valley2_prep.h:
 * SigLIP tiles + Qwen2-VL patches from the committed PNG), becomes one struct mm_item with both
 * sides, is encoded by the engine (the SigLIP rows, then the Qwen2-VL rows, docs/MODEL.md,
 * "Valley2") and spliced at its sentinel. Checked per prompt: the token count of each branch
 * and the spliced length as the reference's, logits at the golden rows within
 * 1e-4 x max|logit|, the 32 greedy tokens identical. Prompts: text only (the implicit 3x3
 * black image through both branches), one image, three images (one SigLIP tile each), a wide
 * image (three AnyRes crops, unpadded, pooled under the folder's cap of 500), the same with
 * the released cap (100000) that keeps the crop map; and a prefill split inside the combined item.
 */
#include "engine/engine.h"
#include "server/media.h"
#include "server/valley2_prep.h"
#include "server/vision_prep.h"
#include "test.h"
#include "vision_golden.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_IMG = 3, MAX_LEN = 1200, N_GREEDY = 32, MAX_ROWS = 8, BLOCK = 16, ENC_ROWS = 2400 };
#define N_BLOCKS ((MAX_LEN + N_GREEDY) / BLOCK + 2)

/* One prompt's images prepared by the server code, as struct mm_item (session.c's mapping). */
struct images {
    struct mm_item items[MAX_IMG];
    struct valley2_prep_item prep[MAX_IMG];
    int32_t n;
};

static void images_free(struct images *im)
{
    for (int32_t i = 0; i < im->n; i++) valley2_prep_item_free(&im->prep[i]);
    memset(im, 0, sizeof *im);
}

static struct mm_item to_item(const struct valley2_prep_item *p)
{
    const struct vision_prep_out *v = &p->qwen2vl;
    const struct valley2_prep_geom *g = &p->siglip.g;
    uint64_t both[2] = {v->hash, p->siglip.hash};
    return (struct mm_item){
        .hash = vlm_hash64(both, sizeof both, 0), .pixels = v->pixels, .grid_t = v->grid_t,
        .grid_h = v->grid_h, .grid_w = v->grid_w, .n_patches = v->n_patches,
        .n_tokens = p->n_tokens,
        .sig = {.tiles = p->siglip.pixels, .n_tiles = g->n_tiles, .grid_w = g->grid_w,
                .grid_h = g->grid_h, .keep_y = g->keep_y, .keep_x = g->keep_x,
                .keep_h = g->keep_h, .keep_w = g->keep_w, .pool_h = g->pool_h,
                .pool_w = g->pool_w, .n_tokens = g->n_tokens}};
}

/* The prompt's images (the implicit black image when it names none), through both branches. */
static int prepare(struct images *im, const cJSON *jp, const struct valley2_prep_settings *s,
                   const struct vision_prep_params *qp)
{
    memset(im, 0, sizeof *im);
    const cJSON *files = cJSON_GetObjectItem(jp, "files");
    int32_t n = cJSON_GetArraySize(files);
    struct vlm_err err = {0};
    if (n == 0) {
        if (valley2_prep_placeholder(s, qp, &im->prep[0], &err)) return -1;
        im->items[0] = to_item(&im->prep[0]);
        im->n = 1;
        return 0;
    }
    VLM_ASSERT(n <= MAX_IMG);
    for (int32_t i = 0; i < n; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/golden/%s", cJSON_GetArrayItem(files, i)->valuestring);
        size_t len = 0;
        char *bytes = vlm_read_file(test_path("VLM_SOURCE_DIR", rel), &len);
        struct media_limits lim = {.max_pixels = 1 << 24, .max_bytes = 1 << 24};
        struct media_image img = {0};
        int rc = bytes ? media_decode_image((const uint8_t *)bytes, len, &lim, &img, &err) : -1;
        free(bytes);
        if (!rc) rc = valley2_prep_both(&img, s, qp, n, &im->prep[i], &err);
        media_image_free(&img);
        if (rc) {
            fprintf(stderr, "  %s: %s\n", rel, err.msg);
            return -1;
        }
        im->items[i] = to_item(&im->prep[i]);
        im->n++;
    }
    return 0;
}

struct prompt {
    int32_t tokens[MAX_LEN];  /* spliced sequence; image rows hold 0 */
    int32_t len;
    struct mm_span spans[MAX_IMG];
    int32_t span_row[MAX_IMG];
    const struct mm_item *encode[MAX_IMG];
    int32_t n_spans;
};

/* golden ids with -200 sentinels -> the spliced sequence; image k packed at its own rows */
static void build_prompt(struct prompt *p, const cJSON *jp, const struct images *im)
{
    memset(p, 0, sizeof *p);
    int32_t row = 0;
    for (const cJSON *t = cJSON_GetObjectItem(jp, "ids")->child; t; t = t->next) {
        if (t->valueint == -200) {
            VLM_ASSERT(p->n_spans < im->n);
            const struct mm_item *it = &im->items[p->n_spans];
            VLM_ASSERT(p->len + it->n_tokens <= MAX_LEN && row + it->n_tokens <= ENC_ROWS);
            p->span_row[p->n_spans] = row;
            p->encode[p->n_spans] = it;
            p->spans[p->n_spans++] = (struct mm_span){.offset = p->len, .item = it};
            row += it->n_tokens;
            for (int32_t i = 0; i < it->n_tokens; i++) p->tokens[p->len++] = 0;
        } else {
            VLM_ASSERT(p->len < MAX_LEN);
            p->tokens[p->len++] = t->valueint;
        }
    }
}

static struct batch one_seq(struct batch_seq *s, const struct prompt *p, const int32_t *blocks,
                            int32_t pos, int32_t n, const int32_t *tok, bool encode)
{
    *s = (struct batch_seq){.pos = pos, .n_tokens = n, .tokens = tok ? tok : p->tokens + pos,
                            .blocks = blocks, .n_blocks = N_BLOCKS - 1, .mm = p->spans,
                            .mm_row = p->span_row, .n_mm = p->n_spans};
    return (struct batch){.seqs = s, .n_seqs = 1, .encode = encode ? p->encode : NULL,
                          .encode_row = p->span_row, .n_encode = encode ? p->n_spans : 0};
}

static char *title(const char *fmt, const char *a, const char *b)
{
    static char buf[24][200];
    static int n;
    char *t = buf[n++ % 24];
    snprintf(t, 200, fmt, a, b);
    return t;
}

int main(void)
{
    struct vlm_err err = {0};
    struct model m;
    int rc = model_load(&m, test_path("VLM_MODELS", "valley2"), &err);
    char path[4096];
    snprintf(path, sizeof path, "%s", test_path("VLM_SOURCE_DIR", "tests/golden/valley2/e2e.json"));
    char *txt = vlm_read_file(path, NULL);
    cJSON *gold = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    char cfg_path[4200];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", test_path("VLM_MODELS", "valley2"));
    size_t cfg_len = 0;
    char *cfg = vlm_read_file(cfg_path, &cfg_len);
    struct valley2_prep_settings set;
    valley2_prep_settings_default(&set);
    struct engine e;
    struct engine_params ep = {.bp = {.n_threads = 2}, .backend = ENGINE_BACKEND_CPU,
                               .block_size = BLOCK, .n_blocks = N_BLOCKS,
                               .max_batched_tokens = MAX_LEN, .max_seqs = 1,
                               .max_logit_rows = MAX_ROWS, .encoder_cache_tokens = ENC_ROWS,
                               .max_image_patches = 2048};
    TEST("valley2: the model, its tiling settings and the goldens load; the engine runs both towers") {
        CHECK_EQ(rc, 0);
        CHECK(gold != NULL && cfg != NULL);
        if (!rc) CHECK(m.cfg.has_vision && m.cfg.has_siglip && m.cfg.has_eagle_tower);
        if (cfg) CHECK_EQ(valley2_prep_settings_from_config(cfg, cfg_len, &set, &err), 0);
        if (!rc) rc = engine_init(&e, &m, &ep, &err);
        CHECK_EQ(rc, 0);
        if (!rc) CHECK(e.vit != NULL && e.sig != NULL);
        if (rc) fprintf(stderr, "  %s\n", err.msg);
    }
    free(cfg);
    if (rc || !gold) {
        cJSON_Delete(gold);
        return test_report();
    }

    struct vision_prep_params qp;
    vision_prep_params_default(&qp);
    qp.patch = m.cfg.patch_size;
    qp.merge = m.cfg.spatial_merge_size;
    qp.temporal = m.cfg.temporal_patch_size;
    int32_t vocab = m.cfg.vocab_size;
    int32_t blocks[N_BLOCKS - 1];
    for (int32_t i = 0; i < N_BLOCKS - 1; i++) blocks[i] = i + 1;
    float *logits = xmalloc((size_t)MAX_ROWS * (size_t)vocab * sizeof *logits);
    static struct prompt p;
    struct images im;
    struct batch_seq s;
    int n_prompts = 0;

    for (const cJSON *jp = cJSON_GetObjectItem(gold, "prompts")->child; jp; jp = jp->next) {
        const char *name = cJSON_GetObjectItem(jp, "name")->valuestring;
        struct valley2_prep_settings ps = set;
        ps.max_vision_token = cJSON_GetObjectItem(jp, "max_vision_token")->valueint;
        const cJSON *gi = cJSON_GetObjectItem(jp, "images");
        bool ok = prepare(&im, jp, &ps, &qp) == 0;
        TEST(title("valley2, %s: each image's SigLIP and Qwen2-VL token counts and the spliced "
                   "length as the reference's%s", name, "")) {
            CHECK(ok);
            CHECK_EQ(im.n, cJSON_GetArraySize(gi));
            for (int32_t i = 0; ok && i < im.n; i++) {
                const cJSON *g = cJSON_GetArrayItem(gi, i);
                CHECK_EQ(mm_item_sig_tokens(&im.items[i]),
                         cJSON_GetObjectItem(g, "siglip_tokens")->valueint);
                CHECK_EQ(mm_item_vit_tokens(&im.items[i]),
                         cJSON_GetObjectItem(g, "qwen2vl_tokens")->valueint);
            }
            if (ok) {
                build_prompt(&p, jp, &im);
                CHECK_EQ(p.len, cJSON_GetObjectItem(jp, "length")->valueint);
            }
        }
        if (!ok) {
            images_free(&im);
            continue;
        }

        const cJSON *rows = cJSON_GetObjectItem(jp, "rows");
        int32_t n_rows = cJSON_GetArraySize(rows), ridx[MAX_ROWS];
        VLM_ASSERT(n_rows <= MAX_ROWS);
        for (int32_t r = 0; r < n_rows; r++)
            ridx[r] = cJSON_GetObjectItem(cJSON_GetArrayItem(rows, r), "row")->valueint;
        VLM_ASSERT(ridx[n_rows - 1] == p.len - 1);
        struct batch b = one_seq(&s, &p, blocks, 0, p.len, NULL, true);
        TEST(title("valley2, %s: logits within 1e-4 x max|logit|%s", name, "")) {
            CHECK_EQ(engine_forward_rows(&e, &b, ridx, n_rows, logits), 0);
            for (int32_t r = 0; r < n_rows; r++) {
                bool am;
                double rel = golden_row_err(logits + (size_t)r * vocab, vocab,
                                             cJSON_GetArrayItem(rows, r), &am);
                printf("# %s row %d: rel %.3g\n", name, ridx[r], rel);
                CHECK(rel <= 1e-4);
                CHECK(am);
            }
        }
        TEST(title("valley2, %s: 32 greedy tokens as the reference%s", name, "")) {
            const cJSON *g = cJSON_GetObjectItem(jp, "greedy");
            int32_t tok = golden_argmax(logits + (size_t)(n_rows - 1) * vocab, vocab), n_same = 0;
            for (int32_t k = 0; k < N_GREEDY; k++) {
                if (tok != cJSON_GetArrayItem(g, k)->valueint) break;
                n_same++;
                if (k + 1 == N_GREEDY) break;
                int32_t row0 = 0;
                struct batch bd = one_seq(&s, &p, blocks, p.len + k, 1, &tok, false);
                CHECK_EQ(engine_forward_rows(&e, &bd, &row0, 1, logits), 0);
                tok = golden_argmax(logits, vocab);
            }
            printf("# %s: %d of %d greedy tokens equal\n", name, n_same, N_GREEDY);
            CHECK_EQ(n_same, N_GREEDY);
        }
        if (!strcmp(name, "wide")) {
            /* two prefill chunks, cut inside the Qwen2-VL block of the combined item: the
             * second chunk reads the rest of the item's rows from the encoder cache */
            TEST("valley2, wide (pooled): a prefill split inside the image gives the same last-row logits") {
                const cJSON *last = cJSON_GetArrayItem(rows, n_rows - 1);
                int32_t cut = p.spans[0].offset + mm_item_sig_tokens(p.spans[0].item) + 7;
                int32_t rlast = p.len - 1 - cut;
                struct batch b1 = one_seq(&s, &p, blocks, 0, cut, NULL, true);
                CHECK_EQ(engine_forward_rows(&e, &b1, NULL, 0, logits), 0);
                struct batch b2 = one_seq(&s, &p, blocks, cut, p.len - cut, NULL, false);
                CHECK_EQ(engine_forward_rows(&e, &b2, &rlast, 1, logits), 0);
                bool am;
                double rel = golden_row_err(logits, vocab, last, &am);
                printf("# split at %d: rel %.3g\n", cut, rel);
                CHECK(rel <= 1e-4);
                CHECK(am);
            }
        }
        images_free(&im);
        n_prompts++;
    }
    TEST("valley2: every golden prompt ran (text, one, three, wide, wide unpooled)") {
        CHECK_EQ(n_prompts, 5);
    }
    free(logits);
    engine_destroy(&e);
    model_destroy(&m);
    cJSON_Delete(gold);
    return test_report();
}
