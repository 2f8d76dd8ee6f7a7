/*
 * vision_golden.h: inputs for the tests that compare the vision tower with the goldens of
 * tests/golden/make_vision_goldens.py (tests/model/test_vit.c, tests/model/test_vision_e2e.c):
 * the checkpoint and the JSON files of the goldens, the script's pixel recipe (the same pixels
 * for the same image index and grid), and the item for a golden grid [t, h, w]. Static inline
 * helpers: include from the test .c.
 */
#ifndef VLM_TEST_VISION_GOLDEN_H
#define VLM_TEST_VISION_GOLDEN_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/batch.h"
#include "engine/model.h"
#include "test.h"

/* Loads the checkpoint name of tests/models.txt into m; exits the program (1) if it cannot. */
static inline void golden_model_load_named(struct model *m, const char *name)
{
    struct vlm_err err = {0};
    if (model_load(m, test_path("VLM_MODELS", name), &err)) {
        fprintf(stderr, "model_load %s: %s\n", name, err.msg);
        exit(1);
    }
}

/* Loads the checkpoint the goldens were made on (gqa4) into m; exits the program (1) if it
 * cannot. */
static inline void golden_model_load(struct model *m)
{
    struct vlm_err err = {0};
    if (model_load(m, test_path("VLM_MODELS", "gqa4"), &err)) {
        fprintf(stderr, "model_load: %s\n", err.msg);
        exit(1);
    }
}

/* tests/golden/vision/<name> parsed (aborts if it cannot be read or parsed); the caller
 * frees it with cJSON_Delete. */
static inline cJSON *golden_read(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tests/golden/vision/%s", name);
    char *txt = vlm_read_file(test_path("VLM_SOURCE_DIR", rel), NULL);
    cJSON *gold = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    VLM_ASSERT(gold);
    return gold;
}

/* channel c, in-patch pixel yx of patch row `row` of image img; exact in f32, in [-2, 2) */
static inline float pixel_value(uint64_t img, uint64_t row, uint64_t c, uint64_t yx)
{
    uint64_t k = vlm_mix64((img << 40) | (row << 16) | (c * 1024 + yx)) >> 40;
    return (float)(((double)k - (double)(1 << 23)) / (double)(1 << 22));
}

/* pixels (t·h·w, ch·tps·ps²) of image img with all temporal slices equal, as the script's
 * make_pixels(); owned by the caller */
static inline float *make_pixels(int img, int t, int h, int w, int ch, int tps, int ps)
{
    int rows = t * h * w, pd = ch * tps * ps * ps;
    float *p = xmalloc((size_t)rows * (size_t)pd * sizeof *p);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ch; c++)
            for (int yx = 0; yx < ps * ps; yx++) {
                float val = pixel_value((uint64_t)img, (uint64_t)r, (uint64_t)c, (uint64_t)yx);
                for (int ts = 0; ts < tps; ts++) p[(size_t)r * pd + (c * tps + ts) * ps * ps + yx] = val;
            }
    return p;
}

/* The item of image img on golden grid g (a JSON array [t, h, w]) for a model of config c:
 * hash 0, n_tokens after the spatial merge. Its pixels are new in *pix, owned by the caller. */
static inline struct mm_item golden_item(const cJSON *g, int img, const struct model_config *c,
                                         float **pix)
{
    int t = cJSON_GetArrayItem(g, 0)->valueint, h = cJSON_GetArrayItem(g, 1)->valueint;
    int w = cJSON_GetArrayItem(g, 2)->valueint;
    int32_t m2 = c->spatial_merge_size * c->spatial_merge_size;
    *pix = make_pixels(img, t, h, w, c->in_chans, c->temporal_patch_size, c->patch_size);
    return (struct mm_item){.pixels = *pix, .grid_t = t, .grid_h = h, .grid_w = w,
                            .n_patches = t * h * w, .n_tokens = t * h * w / m2};
}

/* Index of the largest logit (the first of equals). */
static inline int32_t golden_argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* max |logits[ids] - values| / max_abs of one golden logits row ({"ids", "values", "max_abs",
 * "argmax"}); *argmax_ok: the engine's argmax is the golden's. NaN counts as infinitely off. */
static inline double golden_row_err(const float *logits, int32_t vocab, const cJSON *row,
                                    bool *argmax_ok)
{
    const cJSON *i = cJSON_GetObjectItem(row, "ids")->child;
    const cJSON *v = cJSON_GetObjectItem(row, "values")->child;
    double dmax = 0, mabs = cJSON_GetObjectItem(row, "max_abs")->valuedouble;
    for (; i && v; i = i->next, v = v->next) {
        double d = fabs((double)logits[i->valueint] - v->valuedouble);
        if (!(d <= dmax)) dmax = isnan(d) ? INFINITY : d;
    }
    *argmax_ok = golden_argmax(logits, vocab) == cJSON_GetObjectItem(row, "argmax")->valueint;
    return dmax / mabs;
}

#endif
