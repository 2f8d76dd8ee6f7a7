/*
 * Image+text prompts end to end against the HF reference (tests/golden/vision/prompts.json,
 * made by tests/golden/make_vision_goldens.py --e2e on the gqa4 checkpoint): the engine
 * encodes the images with the vision tower, splices the projector rows at the image spans
 * (docs/MODEL.md, "Splicing and positions"), runs the decoder at positions 0..L-1, and must give
 * the reference logits within 1e-4 × max|logit| and the same 32 greedy tokens. Prompts: one image,
 * three images of different sizes, an image between two text parts; plus a prefill split inside an
 * image. The same again on the release-shaped checkpoint (tests/golden/vision/prompts_release.json,
 * --model release: sharded weights, vocab 151679, every image wrapped as <im_start> IMG <im_end>
 * with the added ids 151669/151670).
 */
// models: gqa4 release
#include "engine/engine.h"
#include "test.h"
#include "vision_golden.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

/* ==== Helpers ==== */

enum { N_IMG = 3, MAX_LEN = 256, N_GREEDY = 32, MAX_ROWS = 8, BLOCK = 16, ENC_ROWS = 64 };

struct prompt {
    int32_t tokens[MAX_LEN];           /* spliced sequence; image rows hold 0 */
    int32_t len;
    struct mm_span spans[N_IMG];
    int32_t span_row[N_IMG];           /* encoder-cache row of each span's item */
    int32_t n_spans;
    const struct mm_item *encode[N_IMG]; /* distinct items, packed from row 0 */
    int32_t encode_row[N_IMG];
    int32_t n_encode;
};

/* Expands golden ids (with -200 sentinels) into the spliced token sequence and its spans. */
static void build_prompt(struct prompt *p, const cJSON *jp, const struct mm_item *items)
{
    memset(p, 0, sizeof *p);
    const cJSON *imgs = cJSON_GetObjectItem(jp, "images");
    int32_t sentinel = 0;
    for (const cJSON *t = cJSON_GetObjectItem(jp, "ids")->child; t; t = t->next) {
        if (t->valueint == -200) {
            const struct mm_item *it = &items[cJSON_GetArrayItem(imgs, sentinel++)->valueint];
            VLM_ASSERT(p->len + it->n_tokens <= MAX_LEN);
            int32_t row = -1, used = 0;
            for (int32_t k = 0; k < p->n_encode; k++) {
                if (p->encode[k] == it) row = p->encode_row[k];
                used += p->encode[k]->n_tokens;
            }
            if (row < 0) {
                row = used;
                VLM_ASSERT(used + it->n_tokens <= ENC_ROWS);
                p->encode_row[p->n_encode] = row;
                p->encode[p->n_encode++] = it;
            }
            p->span_row[p->n_spans] = row;
            p->spans[p->n_spans++] = (struct mm_span){.offset = p->len, .item = it};
            for (int32_t i = 0; i < it->n_tokens; i++) p->tokens[p->len++] = 0;
        } else {
            VLM_ASSERT(p->len < MAX_LEN);
            p->tokens[p->len++] = t->valueint;
        }
    }
}

/* One sequence, blocks 1.. in order, new tokens [pos, pos + n) of p (or one given token). */
static struct batch one_seq(struct batch_seq *s, const struct prompt *p, const int32_t *blocks,
                            int32_t pos, int32_t n, const int32_t *tok, bool encode)
{
    *s = (struct batch_seq){.pos = pos, .n_tokens = n, .tokens = tok ? tok : p->tokens + pos,
                            .blocks = blocks, .n_blocks = (MAX_LEN + N_GREEDY) / BLOCK + 1,
                            .mm = p->spans, .mm_row = p->span_row, .n_mm = p->n_spans};
    return (struct batch){.seqs = s, .n_seqs = 1, .encode = encode ? p->encode : NULL,
                          .encode_row = p->encode_row, .n_encode = encode ? p->n_encode : 0};
}

/* The prompts of one golden file on the checkpoint it was made on. */
static void run_golden(const char *model_name, const char *golden_name)
{
    struct vlm_err err = {0};
    struct model m = {0};
    golden_model_load_named(&m, model_name);
    cJSON *gold = golden_read(golden_name);
    printf("  %s on %s\n", golden_name, model_name);

    struct engine e;
    struct engine_params ep = {.bp = {.n_threads = 2}, .backend = ENGINE_BACKEND_CPU,
                               .block_size = BLOCK, .n_blocks = (MAX_LEN + N_GREEDY) / BLOCK + 2,
                               .max_batched_tokens = MAX_LEN, .max_seqs = 2,
                               .max_logit_rows = MAX_ROWS, .encoder_cache_tokens = ENC_ROWS,
                               .max_image_patches = 256};
    TEST("engine_init with the vision tower") {
        CHECK_EQ(engine_init(&e, &m, &ep, &err), 0);
        CHECK(e.vit != NULL);
    }
    if (!e.vit) {
        fprintf(stderr, "engine has no vision tower: %s\n", err.msg);
        cJSON_Delete(gold);
        model_destroy(&m);
        return;
    }

    const struct model_config *c = &m.cfg;
    int32_t vocab = c->vocab_size;
    const cJSON *grids = cJSON_GetObjectItem(gold, "grids");
    struct mm_item items[N_IMG];
    float *pix[N_IMG];
    for (int i = 0; i < N_IMG; i++) {
        items[i] = golden_item(cJSON_GetArrayItem(grids, i), i, c, &pix[i]);
        items[i].hash = 1000 + (uint64_t)i;
    }
    int32_t blocks[(MAX_LEN + N_GREEDY) / BLOCK + 1];
    for (size_t i = 0; i < ARRAY_LEN(blocks); i++) blocks[i] = (int32_t)i + 1;
    float *logits = xmalloc((size_t)MAX_ROWS * (size_t)vocab * sizeof *logits);
    static struct prompt p;
    struct batch_seq s;

    for (const cJSON *jp = cJSON_GetObjectItem(gold, "prompts")->child; jp; jp = jp->next) {
        const char *name = cJSON_GetObjectItem(jp, "name")->valuestring;
        build_prompt(&p, jp, items);
        /* the harness prints a test's name when the next one begins: one buffer per test */
        static char titles[3 * 3][200];
        static int n_titles;
        char *title = titles[n_titles++ % 9];
        snprintf(title, 200, "%s, %s: spliced length and image spans as the reference",
                 model_name, name);
        TEST(title) {
            CHECK_EQ(p.len, cJSON_GetObjectItem(jp, "length")->valueint);
            const cJSON *sp = cJSON_GetObjectItem(jp, "spans");
            CHECK_EQ(cJSON_GetArraySize(sp), p.n_spans);
            for (int32_t k = 0; k < p.n_spans && k < cJSON_GetArraySize(sp); k++)
                CHECK_EQ(cJSON_GetArrayItem(cJSON_GetArrayItem(sp, k), 0)->valueint, p.spans[k].offset);
        }

        /* prefill, logits at the golden rows */
        const cJSON *rows = cJSON_GetObjectItem(jp, "rows");
        int32_t n_rows = cJSON_GetArraySize(rows), ridx[MAX_ROWS];
        VLM_ASSERT(n_rows <= MAX_ROWS);
        for (int32_t r = 0; r < n_rows; r++)
            ridx[r] = cJSON_GetObjectItem(cJSON_GetArrayItem(rows, r), "row")->valueint;
        VLM_ASSERT(ridx[n_rows - 1] == p.len - 1);
        struct batch b = one_seq(&s, &p, blocks, 0, p.len, NULL, true);
        title = titles[n_titles++ % 9];
        snprintf(title, 200, "%s, %s: logits within 1e-4 x max|logit|", model_name, name);
        TEST(title) {
            CHECK_EQ(engine_forward_rows(&e, &b, ridx, n_rows, logits), 0);
            for (int32_t r = 0; r < n_rows; r++) {
                bool am;
                double rel = golden_row_err(logits + (size_t)r * vocab, vocab,
                                             cJSON_GetArrayItem(rows, r), &am);
                printf("  %s row %d: rel %.3g, hash %016llx\n", name, ridx[r], rel,
                       (unsigned long long)vlm_hash64(logits + (size_t)r * vocab, (size_t)vocab * 4, 0));
                CHECK(rel <= 1e-4);
                CHECK(am);
            }
        }

        /* greedy continuation: one token per step at positions L, L+1, ... */
        title = titles[n_titles++ % 9];
        snprintf(title, 200, "%s, %s: 32 greedy tokens as the reference", model_name, name);
        TEST(title) {
            const cJSON *g = cJSON_GetObjectItem(jp, "greedy");
            int32_t tok = golden_argmax(logits + (size_t)(n_rows - 1) * vocab, vocab), n_same = 0;
            for (int32_t k = 0; k < N_GREEDY; k++) {
                if (tok == cJSON_GetArrayItem(g, k)->valueint) n_same++;
                else break;
                if (k + 1 == N_GREEDY) break;
                int32_t row0 = 0;
                struct batch bd = one_seq(&s, &p, blocks, p.len + k, 1, &tok, false);
                CHECK_EQ(engine_forward_rows(&e, &bd, &row0, 1, logits), 0);
                tok = golden_argmax(logits, vocab);
            }
            printf("  %s: %d of %d greedy tokens equal\n", name, n_same, N_GREEDY);
            CHECK_EQ(n_same, N_GREEDY);
        }
    }

    /* the three-image prompt again, prefilled in two chunks that split image 1's span */
    static char split_title[2][120];
    static int n_split;
    char *st = split_title[n_split++ % 2];
    snprintf(st, 120, "%s: prefill split inside an image gives the same last-row logits",
             model_name);
    TEST(st) {
        const cJSON *jp = cJSON_GetArrayItem(cJSON_GetObjectItem(gold, "prompts"), 1);
        build_prompt(&p, jp, items);
        const cJSON *rows = cJSON_GetObjectItem(jp, "rows");
        const cJSON *last = cJSON_GetArrayItem(rows, cJSON_GetArraySize(rows) - 1);
        int32_t cut = p.spans[1].offset + p.spans[1].item->n_tokens / 2, rlast = p.len - 1 - cut;
        struct batch b1 = one_seq(&s, &p, blocks, 0, cut, NULL, true);
        CHECK_EQ(engine_forward_rows(&e, &b1, NULL, 0, logits), 0);
        struct batch b2 = one_seq(&s, &p, blocks, cut, p.len - cut, NULL, false);
        CHECK_EQ(engine_forward_rows(&e, &b2, &rlast, 1, logits), 0);
        bool am;
        double rel = golden_row_err(logits, vocab, last, &am);
        printf("  split at %d: rel %.3g\n", cut, rel);
        CHECK(rel <= 1e-4);
        CHECK(am);
    }

    free(logits);
    for (int i = 0; i < N_IMG; i++) free(pix[i]);
    engine_destroy(&e);
    cJSON_Delete(gold);
    model_destroy(&m);
}

int main(void)
{
    run_golden("gqa4", "prompts.json");
    run_golden("release", "prompts_release.json");
    return test_report();
}
