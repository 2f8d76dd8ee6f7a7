/*
 * The vision tower + projector against the HF reference (tests/golden/vision/embeddings.json,
 * made by tests/golden/make_vision_goldens.py on the gqa4 checkpoint): one image, three
 * images of different sizes in one call, each image alone equal to its rows of the batch,
 * an item of two temporal slices, and the error returns of vit_encode. Then a second tower
 * with the real head size 80 (embeddings_hd80.json), written here with testmodel_write().
 */
// models: gqa4
#include "engine/testmodel.h"
#include "engine/vit.h"
#include "test.h"
#include "vision_golden.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

/* ==== Comparison ==== */

/* max |a - ref| / max |ref| over n values; also prints NMSE */
static double rel_err(const float *a, const float *ref, int64_t n, const char *what)
{
    double dmax = 0, rmax = 0, se = 0, sr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= dmax)) dmax = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > rmax) rmax = fabs(ref[i]);
        se += d * d;
        sr += (double)ref[i] * ref[i];
    }
    printf("  %s: max|diff| %.3g, max|ref| %.3g, rel %.3g, nmse %.3g, hash %016llx\n", what, dmax,
           rmax, dmax / rmax, se / sr, (unsigned long long)vlm_hash64(a, (size_t)n * 4, 0));
    return rmax > 0 ? dmax / rmax : dmax;
}

/* rows of a JSON array of arrays into a new (rows, cols) buffer; NULL on a shape mismatch */
static float *json_rows(const cJSON *arr, int64_t rows, int64_t cols)
{
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != rows) return NULL;
    float *out = xmalloc((size_t)(rows * cols) * sizeof *out);
    int64_t r = 0;
    for (const cJSON *row = arr->child; row; row = row->next, r++) {
        if (!cJSON_IsArray(row) || cJSON_GetArraySize(row) != cols) {
            free(out);
            return NULL;
        }
        int64_t c = 0;
        for (const cJSON *e = row->child; e; e = e->next) out[r * cols + c++] = (float)e->valuedouble;
    }
    return out;
}

/* The hd80 golden: the tower geometry of make_vision_goldens.py's HD80_ARGS. */
static void check_hd80(struct backend *b)
{
    struct testmodel_params tp;
    testmodel_defaults(&tp);
    tp.seed = 7, tp.hidden = 64, tp.layers = 1, tp.heads = 2, tp.kv_heads = 1, tp.ffn = 128;
    tp.vit_depth = 2, tp.vit_dim = 160, tp.vit_heads = 2, tp.merger_hidden = 96;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_path("VLM_BUILD_DIR", "models/hd80"));
    struct vlm_err err = {0};
    struct model m = {0};
    if (testmodel_write(dir, &tp, &err) || model_load(&m, dir, &err)) {
        fprintf(stderr, "  %s: %s\n", dir, err.msg);
        CHECK(0);
        return;
    }
    cJSON *gold = golden_read("embeddings_hd80.json");
    const struct model_config *c = &m.cfg;
    CHECK_EQ(c->vit_embed_dim / c->vit_num_heads, 80);
    const cJSON *grids = cJSON_GetObjectItem(gold, "grids");
    int n = cJSON_GetArraySize(grids);
    VLM_ASSERT(n <= 4);
    struct mm_item items[4];
    const struct mm_item *ptrs[4];
    float *pix[4];
    int64_t n_tok = 0, hidden = c->hidden_size;
    for (int i = 0; i < n; i++) {
        items[i] = golden_item(cJSON_GetArrayItem(grids, i), i, c, &pix[i]);
        ptrs[i] = &items[i];
        n_tok += items[i].n_tokens;
    }
    float *ref = json_rows(cJSON_GetObjectItem(gold, "embeddings"), n_tok, hidden);
    CHECK(ref != NULL);
    float *out = xcalloc((size_t)(n_tok * hidden), sizeof *out);
    struct tensor ot = tensor_make(out, DT_F32, hidden, n_tok, 1, 1);
    struct vit *v = NULL;
    CHECK_EQ(vit_init(&v, b, &m, 128, &err), 0);
    if (v && ref) {
        CHECK_EQ(vit_encode(v, ptrs, n, &ot), 0);
        CHECK(rel_err(out, ref, n_tok * hidden, "hd80 batch") <= 1e-4);
    }
    vit_destroy(v);
    free(out);
    free(ref);
    for (int i = 0; i < n; i++) free(pix[i]);
    cJSON_Delete(gold);
    model_destroy(&m);
}

int main(void)
{
    struct vlm_err err = {0};
    struct model m = {0};
    golden_model_load(&m);
    cJSON *gold = golden_read("embeddings.json");

    struct backend b = {0};
    struct backend_params bp = {.n_threads = 2};
    VLM_ASSERT(backend_cpu_init(&b, &bp, &err) == 0);
    struct vit *v = NULL;
    const int32_t max_patches = 160;
    TEST("vit_init") {
        CHECK_EQ(vit_init(&v, &b, &m, max_patches, &err), 0);
        CHECK_EQ(vit_max_patches(v), max_patches);
    }
    VLM_ASSERT(v);

    /* the three golden images */
    const struct model_config *c = &m.cfg;
    const cJSON *grids = cJSON_GetObjectItem(gold, "grids");
    enum { N_IMG = 3 };
    struct mm_item items[N_IMG];
    const struct mm_item *ptrs[N_IMG];
    float *pix[N_IMG];
    int64_t n_tok = 0, hidden = c->hidden_size;
    VLM_ASSERT(cJSON_GetArraySize(grids) == N_IMG);
    for (int i = 0; i < N_IMG; i++) {
        items[i] = golden_item(cJSON_GetArrayItem(grids, i), i, c, &pix[i]);
        ptrs[i] = &items[i];
        n_tok += items[i].n_tokens;
    }
    float *ref = json_rows(cJSON_GetObjectItem(gold, "embeddings"), n_tok, hidden);
    float *ref1 = json_rows(cJSON_GetObjectItem(gold, "single"), items[0].n_tokens, hidden);
    VLM_ASSERT(ref && ref1 && cJSON_GetObjectItem(gold, "hidden")->valueint == hidden);

    float *out = xcalloc((size_t)(n_tok * hidden), sizeof *out);
    struct tensor ot = tensor_make(out, DT_F32, hidden, n_tok, 1, 1);

    TEST("one image matches the reference within 1e-4") {
        struct tensor o1 = tensor_make(out, DT_F32, hidden, items[0].n_tokens, 1, 1);
        CHECK_EQ(vit_encode(v, ptrs, 1, &o1), 0);
        CHECK(rel_err(out, ref1, items[0].n_tokens * hidden, "one image") <= 1e-4);
    }
    TEST("three images of different sizes in one call match within 1e-4") {
        CHECK_EQ(vit_encode(v, ptrs, N_IMG, &ot), 0);
        CHECK(rel_err(out, ref, n_tok * hidden, "three images") <= 1e-4);
    }
    TEST("each image alone gives its rows of the batch") {
        float *batch = xmalloc((size_t)(n_tok * hidden) * sizeof *batch);
        memcpy(batch, out, (size_t)(n_tok * hidden) * sizeof *batch);
        int64_t r0 = 0;
        for (int i = 0; i < N_IMG; i++) {
            struct tensor oi = tensor_make(out, DT_F32, hidden, items[i].n_tokens, 1, 1);
            CHECK_EQ(vit_encode(v, &ptrs[i], 1, &oi), 0);
            CHECK(rel_err(out, batch + r0 * hidden, items[i].n_tokens * hidden, "alone vs batch") <= 1e-5);
            r0 += items[i].n_tokens;
        }
        /* and in another order: rows move with their image */
        const struct mm_item *rev[N_IMG] = {ptrs[2], ptrs[0], ptrs[1]};
        CHECK_EQ(vit_encode(v, rev, N_IMG, &ot), 0);
        int64_t n2 = items[2].n_tokens, n0 = items[0].n_tokens, n1 = items[1].n_tokens;
        CHECK(rel_err(out, ref + (n0 + n1) * hidden, n2 * hidden, "reordered img2") <= 1e-4);
        CHECK(rel_err(out + n2 * hidden, ref, n0 * hidden, "reordered img0") <= 1e-4);
        CHECK(rel_err(out + (n2 + n0) * hidden, ref + n0 * hidden, n1 * hidden, "reordered img1") <= 1e-4);
        free(batch);
    }
    TEST("an item of two temporal slices (one segment per slice) matches within 1e-4") {
        float *pt;
        struct mm_item it = golden_item(cJSON_GetObjectItem(gold, "temporal_grid"), 3, c, &pt);
        const struct mm_item *pi = &it;
        float *reft = json_rows(cJSON_GetObjectItem(gold, "temporal"), it.n_tokens, hidden);
        CHECK(reft != NULL);
        struct tensor o1 = tensor_make(out, DT_F32, hidden, it.n_tokens, 1, 1);
        CHECK_EQ(vit_encode(v, &pi, 1, &o1), 0);
        if (reft) CHECK(rel_err(out, reft, it.n_tokens * hidden, "two slices") <= 1e-4);
        free(reft);
        free(pt);
    }
    TEST("over max_patches is VLM_ETOOBIG, bad grids VLM_EINVAL, out untouched") {
        const struct mm_item *many[3] = {ptrs[1], ptrs[1], ptrs[1]}; /* 192 > 160 patches */
        struct tensor o3 = tensor_make(out, DT_F32, hidden, 3 * items[1].n_tokens, 1, 1);
        CHECK_EQ(vit_encode(v, many, 3, &o3), VLM_ETOOBIG);
        struct mm_item bad = items[0];
        bad.grid_h = 5; /* odd: not a whole number of merge windows */
        bad.n_patches = 5 * bad.grid_w;
        const struct mm_item *pb = &bad;
        out[0] = 12345.0f;
        CHECK_EQ(vit_encode(v, &pb, 1, &ot), VLM_EINVAL);
        bad = items[0];
        bad.n_tokens++;
        CHECK_EQ(vit_encode(v, &pb, 1, &ot), VLM_EINVAL);
        bad = items[0];
        bad.pixels = NULL;
        CHECK_EQ(vit_encode(v, &pb, 1, &ot), VLM_EINVAL);
        CHECK_EQ(vit_encode(v, ptrs, 0, &ot), VLM_EINVAL);
        /* out of the wrong shape */
        CHECK_EQ(vit_encode(v, ptrs, 1, &ot), VLM_EINVAL);
        CHECK(out[0] == 12345.0f);
    }
    TEST("vit_init refuses max_patches that is not a multiple of merge²") {
        struct vit *v2 = NULL;
        CHECK_EQ(vit_init(&v2, &b, &m, 6, &err), VLM_EINVAL);
        CHECK(v2 == NULL);
    }

    free(out);
    free(ref);
    free(ref1);
    for (int i = 0; i < N_IMG; i++) free(pix[i]);
    vit_destroy(v);
    cJSON_Delete(gold);
    model_destroy(&m);

    TEST("head size 80: three items (one of two slices) in one call match within 1e-4") {
        check_hd80(&b);
    }
    backend_destroy(&b);
    return test_report();
}
