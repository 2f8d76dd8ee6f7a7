/*
 * Valley2's SigLIP side (engine/siglip.h) against the reference (tests/golden/siglip/
 * goldens.json, made by tests/golden/make_siglip_goldens.py: transformers' SiglipVisionModel,
 * the projector and the AnyRes assembly in PyTorch) on the CPU backend in f32: one base tile,
 * base + 2×2 crops unpadded in the columns, base + 3×1 crops unpadded in the rows and pooled
 * (conv_adapter, valley2, bf16 weights); 1×2 crops unpadded in the rows from f16 weights
 * (valley2_f16); a base tile and a pooled 2×1 case with ovis_conv_adapter (valley2_ovis).
 * Then the error returns of siglip_init and siglip_encode, and the window's row order.
 */
// models: valley2 valley2_f16 valley2_ovis gqa4
#include "engine/siglip.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The bound: max |out - ref| ≤ TOL × max |ref| (docs/MODEL.md, "Valley2 SigLIP forward"). */
#define TOL 1e-4

/* tests/golden/siglip/goldens.json parsed (aborts if it cannot be read or parsed) */
static cJSON *golden_read(void)
{
    char *txt = vlm_read_file(test_path("VLM_SOURCE_DIR", "tests/golden/siglip/goldens.json"), NULL);
    cJSON *gold = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    VLM_ASSERT(gold);
    return gold;
}

/* The script's test_tiles(): element i of the flat (n, 3, S, S) array is
 * (((i + seed·1000003)·2654435761) mod 2³²) >> 20, minus 2048, over 1024 (exact in f32). */
static float *test_tiles(int32_t n_tiles, int32_t size, int64_t seed)
{
    size_t n = (size_t)n_tiles * 3 * (size_t)size * (size_t)size;
    float *t = xmalloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) {
        uint64_t k = (((uint64_t)i + (uint64_t)seed * 1000003u) * 2654435761u) & 0xFFFFFFFFu;
        t[i] = (float)(((double)(k >> 20) - 2048.0) / 1024.0);
    }
    return t;
}

static int32_t geti(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);
    VLM_ASSERT(cJSON_IsNumber(v));
    return v->valueint;
}

static struct siglip_input input_of(const cJSON *cs, const float *tiles)
{
    return (struct siglip_input){
        .tiles = tiles, .n_tiles = geti(cs, "n_tiles"), .grid_w = geti(cs, "grid_w"),
        .grid_h = geti(cs, "grid_h"), .keep_y = geti(cs, "keep_y"), .keep_x = geti(cs, "keep_x"),
        .keep_h = geti(cs, "keep_h"), .keep_w = geti(cs, "keep_w"), .pool_h = geti(cs, "pool_h"),
        .pool_w = geti(cs, "pool_w"), .n_tokens = geti(cs, "n_tokens")};
}

/* The worst of: the recorded whole rows against max|ref| of the whole output, the row sums
 * and the column sums against the largest sum of each; printed. */
static double compare(const float *out, int64_t n, int64_t hidden, const cJSON *cs,
                      const char *what)
{
    double ref_max = cJSON_GetObjectItem(cs, "max_abs")->valuedouble, worst = 0, dmax = 0;
    const cJSON *rows = cJSON_GetObjectItem(cs, "rows"), *vals = cJSON_GetObjectItem(cs, "row_values");
    for (int i = 0; i < cJSON_GetArraySize(rows); i++) {
        int64_t r = cJSON_GetArrayItem(rows, i)->valueint;
        const cJSON *rv = cJSON_GetArrayItem(vals, i);
        VLM_ASSERT(r < n && cJSON_GetArraySize(rv) == hidden);
        for (int64_t c = 0; c < hidden; c++) {
            double d = fabs((double)out[r * hidden + c] - cJSON_GetArrayItem(rv, (int)c)->valuedouble);
            if (!(d <= dmax)) dmax = isnan(d) ? INFINITY : d;
        }
    }
    worst = dmax / ref_max;
    double local_max = 0;
    for (int64_t i = 0; i < n * hidden; i++) local_max = fmax(local_max, fabs((double)out[i]));
    /* sums in double over the whole output */
    const cJSON *rs = cJSON_GetObjectItem(cs, "row_sums"), *cls = cJSON_GetObjectItem(cs, "col_sums");
    VLM_ASSERT(cJSON_GetArraySize(rs) == n && cJSON_GetArraySize(cls) == hidden);
    double *col = xcalloc((size_t)hidden, sizeof *col), rmax = 0, rdiff = 0, cmax = 0, cdiff = 0;
    const cJSON *e = rs->child;
    for (int64_t r = 0; r < n; r++, e = e->next) {
        double s = 0;
        for (int64_t c = 0; c < hidden; c++) {
            s += out[r * hidden + c];
            col[c] += out[r * hidden + c];
        }
        rmax = fmax(rmax, fabs(e->valuedouble));
        double d = fabs(s - e->valuedouble);
        if (!(d <= rdiff)) rdiff = isnan(d) ? INFINITY : d;
    }
    e = cls->child;
    for (int64_t c = 0; c < hidden; c++, e = e->next) {
        cmax = fmax(cmax, fabs(e->valuedouble));
        double d = fabs(col[c] - e->valuedouble);
        if (!(d <= cdiff)) cdiff = isnan(d) ? INFINITY : d;
    }
    free(col);
    printf("  %s: %lld rows; recorded rows max|diff| %.3g (rel %.3g of max|ref| %.4g, ours %.4g); "
           "row sums rel %.3g, column sums rel %.3g\n", what, (long long)n, dmax, worst, ref_max,
           local_max, rdiff / rmax, cdiff / cmax);
    worst = fmax(worst, fmax(rdiff / rmax, cdiff / cmax));
    if (fabs(local_max - ref_max) > TOL * ref_max) worst = fmax(worst, 1.0);
    return worst;
}

static double check_model(const char *name, const cJSON *gm, int32_t max_tiles)
{
    struct vlm_err err = {0};
    struct model m = {0};
    if (model_load(&m, test_path("VLM_MODELS", name), &err)) {
        fprintf(stderr, "model_load %s: %s\n", name, err.msg);
        exit(1);
    }
    struct backend b = {0};
    struct backend_params bp = {.n_threads = 2};
    VLM_ASSERT(backend_cpu_init(&b, &bp, &err) == 0);
    struct siglip *s = NULL;
    double worst = 0;
    TEST(name) {
        CHECK_EQ(siglip_init(&s, &b, &m, max_tiles, &err), 0);
        CHECK_EQ(siglip_max_tiles(s), max_tiles);
        CHECK_EQ(geti(gm, "hidden"), m.cfg.hidden_size);
        CHECK_EQ(geti(gm, "image_size"), m.cfg.sig_image);
    }
    VLM_ASSERT(s);
    int64_t H = m.cfg.hidden_size;
    int32_t S = m.cfg.sig_image;
    for (const cJSON *cs = cJSON_GetObjectItem(gm, "cases")->child; cs; cs = cs->next) {
        char what[128];
        snprintf(what, sizeof what, "%s: %s matches the reference within %g", name, cs->string, TOL);
        TEST(what) {
            float *tiles = test_tiles(geti(cs, "n_tiles"), S, geti(cs, "seed"));
            struct siglip_input in = input_of(cs, tiles);
            float *out = xcalloc((size_t)(in.n_tokens * H), sizeof *out);
            struct tensor ot = tensor_make(out, DT_F32, H, in.n_tokens, 1, 1);
            CHECK_EQ(siglip_encode(s, &in, &ot), 0);
            double rel = compare(out, in.n_tokens, H, cs, cs->string);
            CHECK(rel <= TOL);
            worst = fmax(worst, rel);
            free(out);
            free(tiles);
        }
    }
    siglip_destroy(s);
    backend_destroy(&b);
    model_destroy(&m);
    return worst;
}

/* The error returns: nothing is written to out. */
static void check_errors(void)
{
    struct vlm_err err = {0};
    struct model m = {0};
    VLM_ASSERT(model_load(&m, test_path("VLM_MODELS", "valley2"), &err) == 0);
    struct backend b = {0};
    struct backend_params bp = {.n_threads = 2};
    VLM_ASSERT(backend_cpu_init(&b, &bp, &err) == 0);
    struct siglip *s = NULL;
    VLM_ASSERT(siglip_init(&s, &b, &m, 4, &err) == 0);
    int64_t H = m.cfg.hidden_size;
    int32_t T = 14;
    float *tiles = test_tiles(5, m.cfg.sig_image, 9);
    float *out = xmalloc((size_t)(2000 * H) * sizeof *out);
    /* 2×1 crops, a 14×28 map, all of it kept */
    struct siglip_input ok = {.tiles = tiles, .n_tiles = 3, .grid_w = 2, .grid_h = 1,
                              .keep_h = T, .keep_w = 2 * T, .pool_h = T, .pool_w = 2 * T,
                              .n_tokens = T * T + 2 * T * T};
    struct tensor ot = tensor_make(out, DT_F32, H, ok.n_tokens, 1, 1);
    TEST("siglip_encode refuses what it cannot follow, writing nothing") {
        struct siglip_input in;
        memset(out, 0x7f, (size_t)(2000 * H) * sizeof *out);
#define BAD(rc, field, value)                                                                   \
    do {                                                                                       \
        in = ok;                                                                               \
        in.field = value;                                                                      \
        CHECK_EQ(siglip_encode(s, &in, &ot), rc);                                              \
    } while (0)
        in = ok;
        in.n_tiles = 5, in.grid_w = 2, in.grid_h = 2, in.keep_h = 2 * T;
        in.pool_h = 2 * T, in.n_tokens = T * T + 4 * T * T;
        CHECK_EQ(siglip_encode(s, &in, &ot), VLM_ETOOBIG);    /* 5 tiles, at most 4 */
        BAD(VLM_EINVAL, tiles, NULL);
        BAD(VLM_EINVAL, n_tiles, 2);                          /* 1 + 2·1 tiles */
        BAD(VLM_EINVAL, n_tiles, 0);
        BAD(VLM_EINVAL, grid_h, 0);
        BAD(VLM_EINVAL, keep_y, 1);                           /* past the 14-row map */
        BAD(VLM_EINVAL, keep_x, -1);
        BAD(VLM_EINVAL, keep_w, 2 * T + 1);
        BAD(VLM_EINVAL, pool_h, T + 1);                       /* pooling never enlarges */
        BAD(VLM_EINVAL, n_tokens, ok.n_tokens - 1);
        /* out of the wrong shape or dtype */
        struct tensor short_out = tensor_make(out, DT_F32, H, ok.n_tokens - 1, 1, 1);
        CHECK_EQ(siglip_encode(s, &ok, &short_out), VLM_EINVAL);
        struct tensor narrow = tensor_make(out, DT_F32, H - 1, ok.n_tokens, 1, 1);
        CHECK_EQ(siglip_encode(s, &ok, &narrow), VLM_EINVAL);
        struct tensor bf = tensor_make(out, DT_BF16, H, ok.n_tokens, 1, 1);
        CHECK_EQ(siglip_encode(s, &ok, &bf), VLM_EINVAL);
        bool untouched = true;
        for (int64_t i = 0; i < 2000 * H; i++) {
            uint32_t u;
            memcpy(&u, &out[i], 4);
            untouched &= u == 0x7f7f7f7fu;
        }
        CHECK(untouched);
#undef BAD
    }
    TEST("an empty kept window gives the base tile's rows alone; the window in order") {
        /* a window of no rows: only the base tile's T² rows, equal to the base-only call */
        float *base = xmalloc((size_t)(T * T * H) * sizeof *base);
        struct siglip_input one = {.tiles = tiles, .n_tiles = 1, .n_tokens = T * T};
        struct tensor bt = tensor_make(base, DT_F32, H, T * T, 1, 1);
        CHECK_EQ(siglip_encode(s, &one, &bt), 0);
        struct siglip_input flat = ok;
        flat.keep_y = 7, flat.keep_h = 0, flat.pool_h = 0, flat.pool_w = 0, flat.n_tokens = T * T;
        struct tensor ft = tensor_make(out, DT_F32, H, T * T, 1, 1);
        CHECK_EQ(siglip_encode(s, &flat, &ft), 0);
        CHECK(!memcmp(out, base, (size_t)(T * T * H) * sizeof *out));
        /* the whole 14×28 map, then its right half alone: row y of the half is row y,
         * columns 14..27 of the whole */
        float *whole = xmalloc((size_t)(ok.n_tokens * H) * sizeof *whole);
        CHECK_EQ(siglip_encode(s, &ok, &ot), 0);
        memcpy(whole, out, (size_t)(ok.n_tokens * H) * sizeof *out);
        CHECK(!memcmp(whole, base, (size_t)(T * T * H) * sizeof *out));
        struct siglip_input half = ok;
        half.keep_x = T, half.keep_w = T, half.pool_w = T, half.n_tokens = 2 * T * T;
        struct tensor ht = tensor_make(out, DT_F32, H, half.n_tokens, 1, 1);
        CHECK_EQ(siglip_encode(s, &half, &ht), 0);
        bool same = true;
        for (int32_t y = 0; y < T; y++)
            same &= !memcmp(out + (size_t)((T * T + y * T) * H),
                            whole + (size_t)((T * T + y * 2 * T + T) * H), (size_t)(T * H) * 4);
        CHECK(same);
        free(whole);
        free(base);
    }
    free(out);
    free(tiles);
    siglip_destroy(s);
    siglip_destroy(NULL);
    backend_destroy(&b);
    model_destroy(&m);

    TEST("siglip_init refuses a model without SigLIP and a max_tiles below 1") {
        struct model q = {0};
        VLM_ASSERT(model_load(&q, test_path("VLM_MODELS", "gqa4"), &err) == 0);
        struct backend b2 = {0};
        VLM_ASSERT(backend_cpu_init(&b2, &bp, &err) == 0);
        struct siglip *s2 = NULL;
        CHECK_EQ(siglip_init(&s2, &b2, &q, 4, &err), VLM_EINVAL);
        CHECK(s2 == NULL);
        model_destroy(&q);
        VLM_ASSERT(model_load(&q, test_path("VLM_MODELS", "valley2"), &err) == 0);
        CHECK_EQ(siglip_init(&s2, &b2, &q, 0, &err), VLM_EINVAL);
        CHECK(s2 == NULL);
        backend_destroy(&b2);
        model_destroy(&q);
    }
}

int main(void)
{
    cJSON *gold = golden_read();
    const cJSON *models = cJSON_GetObjectItem(gold, "models");
    double w1 = check_model("valley2", cJSON_GetObjectItem(models, "valley2"), 5);
    w1 = fmax(w1, check_model("valley2_f16", cJSON_GetObjectItem(models, "valley2_f16"), 3));
    double w2 = check_model("valley2_ovis", cJSON_GetObjectItem(models, "valley2_ovis"), 3);
    printf("worst max|diff| / max|ref|: conv_adapter %.3g, ovis_conv_adapter %.3g (bound %g)\n",
           w1, w2, TOL);
    check_errors();
    cJSON_Delete(gold);
    return test_report();
}
