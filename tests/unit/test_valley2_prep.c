/*
 * test_valley2_prep: Valley2's SigLIP preprocessing against the goldens of
 * tests/golden/make_valley2_prep_goldens.py (tests/golden/valley2/goldens.json), which runs
 * transformers 4.51.2 SiglipImageProcessor and a re-implementation of the Valley2 processor's
 * AnyRes tiling on 50+ images of odd sizes (1x1 to 5000x4000, 1 and 3 pixels high, 2400x160,
 * grayscale, palette, RGBA, 16-bit, interlaced PNGs, PIL's decode of JPEGs).
 *
 * Bit for bit: every tile's float32 values (vlm_hash64 of the array, plus sampled values
 * compared with ==), for an image that gets one tile and for the AnyRes tiling under several
 * pinpoint lists; the grid pinpoint, fit, padding, tile count, unpadding window, pooled shape
 * and token count, also for other vision-token caps and from the size alone
 * (valley2_prep_geometry). Images the reference processor rejects are rejected with 400.
 * Then the settings: config.json keys, defaults, malformed values; and both branches.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/media.h"
#include "server/valley2_prep.h"
#include "server/vision_prep.h"
#include "test.h"

static uint64_t hex64(const char *s) { return strtoull(s, NULL, 16); }

static const cJSON *jget(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static int jint_at(const cJSON *arr, int i) { return cJSON_GetArrayItem(arr, i)->valueint; }

static bool decode_golden(const char *rel, struct media_image *im)
{
    char path[512];
    snprintf(path, sizeof path, "tests/golden/%s", rel);
    size_t n = 0;
    uint8_t *bytes = (uint8_t *)vlm_read_file(test_path("VLM_SOURCE_DIR", path), &n);
    if (!bytes) return false;
    struct vlm_err err = {0};
    int rc = media_decode_image(bytes, n, NULL, im, &err);
    free(bytes);
    if (rc) fprintf(stderr, "  decode %s: %s\n", rel, err.msg);
    return rc == 0;
}

/* Settings for a golden run: the defaults with its pinpoints (a string, or a JSON list that
 * goes through the config.json reader) and cap. */
static bool run_settings(const cJSON *run, struct valley2_prep_settings *s)
{
    struct vlm_err err = {0};
    const cJSON *spec = jget(run, "pinpoints");
    int rc;
    if (cJSON_IsString(spec)) {
        valley2_prep_settings_default(s);
        rc = valley2_prep_parse_pinpoints(spec->valuestring, s, &err);
    } else {
        cJSON *cfg = cJSON_CreateObject();
        cJSON_AddItemToObject(cfg, "grid_pinpoints", cJSON_Duplicate(spec, 1));
        char *txt = cJSON_PrintUnformatted(cfg);
        rc = valley2_prep_settings_from_config(txt, strlen(txt), s, &err);
        free(txt);
        cJSON_Delete(cfg);
    }
    s->max_vision_token = jget(run, "max_vision_token")->valueint;
    if (rc) fprintf(stderr, "  settings: %s\n", err.msg);
    return rc == 0;
}

static void check_samples(const float *pix, const cJSON *samples)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, samples)
    {
        size_t i = (size_t)cJSON_GetArrayItem(s, 0)->valuedouble;
        double want = cJSON_GetArrayItem(s, 1)->valuedouble;
        if ((double)pix[i] != want) {
            fprintf(stderr, "  value %zu: %.9g, want %.9g\n", i, (double)pix[i], want);
            CHECK(false);
        }
    }
}

/* keep / pool / n_tokens of a geometry against a golden object holding them */
static void check_tokens(const struct valley2_prep_geom *g, const cJSON *want)
{
    const cJSON *map = jget(want, "map"), *keep = jget(want, "keep"), *pool = jget(want, "pool");
    CHECK_EQ(g->map_h, jint_at(map, 0));
    CHECK_EQ(g->map_w, jint_at(map, 1));
    CHECK_EQ(g->keep_y, jint_at(keep, 0));
    CHECK_EQ(g->keep_x, jint_at(keep, 1));
    CHECK_EQ(g->keep_h, jint_at(keep, 2));
    CHECK_EQ(g->keep_w, jint_at(keep, 3));
    CHECK_EQ(g->pool_h, jint_at(pool, 0));
    CHECK_EQ(g->pool_w, jint_at(pool, 1));
    CHECK_EQ(g->pooled, cJSON_IsTrue(jget(want, "pooled")));
    CHECK_EQ(g->n_tokens, jget(want, "n_tokens")->valueint);
}

static void check_single(const struct media_image *im, const cJSON *want, int *n_exact)
{
    struct valley2_prep_settings s;
    valley2_prep_settings_default(&s);
    struct valley2_prep_out o;
    struct vlm_err err = {0};
    /* two images in the request: one tile each (only_crop_single_image) */
    int rc = valley2_prep_image(im, &s, 2, &o, &err);
    if (cJSON_IsString(jget(want, "error"))) {
        CHECK_EQ(rc, VLM_EINVAL);
        CHECK_EQ(err.http_status, 400);
        CHECK(o.pixels == NULL);
        return;
    }
    CHECK_EQ(rc, 0);
    if (rc) return;
    CHECK_EQ(o.g.n_tiles, 1);
    CHECK_EQ(o.g.n_tokens, 196);
    const size_t n = (size_t)3 * 384 * 384;
    uint64_t h = vlm_hash64(o.pixels, n * sizeof(float), 0);
    CHECK(h == hex64(jget(want, "hash")->valuestring));
    check_samples(o.pixels, jget(want, "samples"));
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += o.pixels[i];
    CHECK(sum == jget(want, "sum")->valuedouble);
    /* the same with AnyRes switched off */
    struct valley2_prep_out o2;
    s.anyres = false;
    CHECK_EQ(valley2_prep_image(im, &s, 1, &o2, &err), 0);
    CHECK(o2.pixels && memcmp(o2.pixels, o.pixels, n * sizeof(float)) == 0);
    valley2_prep_out_free(&o2);
    valley2_prep_out_free(&o);
    (*n_exact)++;
}

static void check_anyres(const struct media_image *im, const cJSON *run, int *n_tiles_checked)
{
    struct valley2_prep_settings s;
    if (!run_settings(run, &s)) {
        CHECK(false);
        return;
    }
    struct valley2_prep_out o;
    struct vlm_err err = {0};
    int rc = valley2_prep_image(im, &s, 1, &o, &err);
    CHECK_EQ(rc, 0);
    if (rc) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    const struct valley2_prep_geom *g = &o.g;
    CHECK_EQ(g->res_w, jint_at(jget(run, "res"), 0));
    CHECK_EQ(g->res_h, jint_at(jget(run, "res"), 1));
    CHECK_EQ(g->grid_w, jint_at(jget(run, "grid"), 0));
    CHECK_EQ(g->grid_h, jint_at(jget(run, "grid"), 1));
    CHECK_EQ(g->fit_w, jint_at(jget(run, "fit"), 0));
    CHECK_EQ(g->fit_h, jint_at(jget(run, "fit"), 1));
    CHECK_EQ(g->pad_x, jint_at(jget(run, "pad"), 0));
    CHECK_EQ(g->pad_y, jint_at(jget(run, "pad"), 1));
    CHECK_EQ(g->n_tiles, jget(run, "n_tiles")->valueint);
    check_tokens(g, run);
    const cJSON *hashes = jget(run, "tile_hashes");
    CHECK_EQ(cJSON_GetArraySize(hashes), g->n_tiles);
    const size_t per = (size_t)3 * 384 * 384;
    for (int t = 0; t < g->n_tiles && t < cJSON_GetArraySize(hashes); t++) {
        uint64_t h = vlm_hash64(o.pixels + (size_t)t * per, per * sizeof(float), 0);
        if (h != hex64(cJSON_GetArrayItem(hashes, t)->valuestring)) {
            fprintf(stderr, "  tile %d differs\n", t);
            CHECK(false);
        }
        (*n_tiles_checked)++;
    }
    check_samples(o.pixels, jget(run, "samples"));
    /* the geometry from the size alone is the same */
    struct valley2_prep_geom g2;
    CHECK_EQ(valley2_prep_geometry(&s, im->w, im->h, 1, &g2, &err), 0);
    CHECK(memcmp(&g2, g, sizeof g2) == 0);
    valley2_prep_out_free(&o);
}

static void check_case(const cJSON *c, int *n_exact, int *n_tiles_checked)
{
    const char *file = jget(c, "file")->valuestring;
    struct media_image im;
    if (!decode_golden(file, &im)) {
        CHECK(false);
        return;
    }
    CHECK_EQ(im.w, jint_at(jget(c, "size"), 0));
    CHECK_EQ(im.h, jint_at(jget(c, "size"), 1));
    check_single(&im, jget(c, "single"), n_exact);
    const cJSON *run;
    cJSON_ArrayForEach(run, jget(c, "anyres")) check_anyres(&im, run, n_tiles_checked);
    struct valley2_prep_settings s;
    valley2_prep_settings_default(&s);
    cJSON_ArrayForEach(run, jget(c, "tokens"))
    {
        struct valley2_prep_geom g;
        struct vlm_err err = {0};
        s.max_vision_token = jget(run, "max_vision_token")->valueint;
        CHECK_EQ(valley2_prep_geometry(&s, im.w, im.h, 1, &g, &err), 0);
        check_tokens(&g, run);
    }
    media_image_free(&im);
}

static int cfg(const char *json, struct valley2_prep_settings *s, struct vlm_err *err)
{
    return valley2_prep_settings_from_config(json, strlen(json), s, err);
}

int main(void)
{
    char *txt = vlm_read_file(test_path("VLM_SOURCE_DIR", "tests/golden/valley2/goldens.json"),
                              NULL);
    cJSON *gold = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    TEST("goldens.json is readable") CHECK(gold != NULL);
    if (!gold) return test_report();

    int n_exact = 0, n_tiles = 0, n_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, jget(gold, "cases"))
    {
        char name[300];
        snprintf(name, sizeof name, "golden %s", jget(c, "file")->valuestring);
        TEST(name) check_case(c, &n_exact, &n_tiles);
        n_cases++;
    }
    printf("   %d images, %d single-tile arrays and %d AnyRes tiles bit-identical\n", n_cases,
           n_exact, n_tiles);
    TEST("at least 20 images of odd sizes, bit-identical") {
        CHECK(n_exact >= 20);
        CHECK(n_tiles >= 100);
    }
    cJSON_Delete(gold);

    TEST("defaults: anyres, (1x1)..(3x3) width-major, 384 px tiles, 14x14 tokens, cap 900") {
        struct valley2_prep_settings s;
        valley2_prep_settings_default(&s);
        CHECK(s.anyres && s.only_crop_single_image);
        CHECK_EQ(s.n_pinpoints, 9);
        CHECK_EQ(s.pinpoints[0][0], 384);
        CHECK_EQ(s.pinpoints[0][1], 384);
        CHECK_EQ(s.pinpoints[1][0], 384);
        CHECK_EQ(s.pinpoints[1][1], 768);
        CHECK_EQ(s.pinpoints[3][0], 768);
        CHECK_EQ(s.pinpoints[3][1], 384);
        CHECK_EQ(s.pinpoints[8][0], 1152);
        CHECK_EQ(s.max_vision_token, 900);
        struct vlm_err err = {0};
        CHECK_EQ(valley2_prep_settings_check(&s, &err), 0);
    }

    TEST("config.json: the Valley2 keys are read, absent ones keep the defaults") {
        struct valley2_prep_settings s;
        struct vlm_err err = {0};
        CHECK_EQ(cfg("{\"anyres\": true, \"grid_pinpoints\": \"(1x1),...,(2x3)\", "
                     "\"max_vision_token\": 1200, \"num_patches_per_side\": 14, "
                     "\"vit_crop_size\": 384, \"only_crop_single_image\": false, "
                     "\"mm_projector_type\": \"conv_adapter\"}",
                     &s, &err), 0);
        CHECK_EQ(s.n_pinpoints, 6);
        CHECK_EQ(s.pinpoints[5][0], 768);
        CHECK_EQ(s.pinpoints[5][1], 1152);
        CHECK_EQ(s.max_vision_token, 1200);
        CHECK(!s.only_crop_single_image);
        CHECK_EQ(cfg("{\"architectures\": [\"ValleyQwen2ForCausalLM\"]}", &s, &err), 0);
        CHECK_EQ(s.n_pinpoints, 9);
        CHECK_EQ(s.max_vision_token, 900);
        CHECK(s.anyres);
        CHECK_EQ(cfg("{\"anyres\": false, \"grid_pinpoints\": null}", &s, &err), 0);
        CHECK(!s.anyres);
        CHECK_EQ(s.n_pinpoints, 9);
        CHECK_EQ(cfg("{\"grid_pinpoints\": [[384, 768], [768, 384]]}", &s, &err), 0);
        CHECK_EQ(s.n_pinpoints, 2);
        CHECK_EQ(cfg("{\"grid_pinpoints\": \"[(384, 768), (1152, 384)]\"}", &s, &err), 0);
        CHECK_EQ(s.n_pinpoints, 2);
        CHECK_EQ(s.pinpoints[1][0], 1152);
        /* the range form counts only its first and last (NxM) */
        CHECK_EQ(cfg("{\"grid_pinpoints\": \"(2x1),(9x9),(3x2)\"}", &s, &err), 0);
        CHECK_EQ(s.n_pinpoints, 4);
        CHECK_EQ(s.pinpoints[0][0], 768);
        CHECK_EQ(s.pinpoints[3][1], 768);
    }

    TEST("config.json: malformed or unsupported Valley2 keys are load errors naming them") {
        static const struct {
            const char *json, *needle;
        } bad[] = {
            {"[1, 2]", "object"},
            {"{\"anyres\": 1}", "anyres"},
            {"{\"max_vision_token\": \"900\"}", "max_vision_token"},
            {"{\"max_vision_token\": 196}", "max_vision_token"},
            {"{\"max_vision_token\": 12.5}", "max_vision_token"},
            {"{\"vit_crop_size\": 336}", "vit_crop_size"},
            {"{\"num_patches_per_side\": 0}", "num_patches_per_side"},
            {"{\"grid_pinpoints\": \"(3x3),...,(1x1)\"}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": \"(1x1),...,(99999999x1)\"}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": \"(1x1),...,(9x9)\"}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": \"[(384, 768), (1152)]\"}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": \"[(384, 700)]\"}", "grid pinpoint"},
            {"{\"grid_pinpoints\": \"anyres\"}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": 3}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": [[384, 768, 1]]}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": [[384, -768]]}", "grid_pinpoints"},
            {"{\"grid_pinpoints\": []}", "pinpoints"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            struct valley2_prep_settings s;
            struct vlm_err err = {0};
            int rc = cfg(bad[i].json, &s, &err);
            if (rc != VLM_EINVAL || !strstr(err.msg, bad[i].needle)) {
                fprintf(stderr, "  %s -> %d \"%s\"\n", bad[i].json, rc, err.msg);
                CHECK(false);
            }
        }
    }

    TEST("tiling rules: one tile per image with several images, unless configured") {
        struct valley2_prep_settings s;
        valley2_prep_settings_default(&s);
        struct valley2_prep_geom g;
        struct vlm_err err = {0};
        CHECK_EQ(valley2_prep_geometry(&s, 1000, 300, 1, &g, &err), 0);
        CHECK_EQ(g.n_tiles, 4);
        CHECK_EQ(valley2_prep_geometry(&s, 1000, 300, 3, &g, &err), 0);
        CHECK_EQ(g.n_tiles, 1);
        CHECK_EQ(g.n_tokens, 196);
        s.only_crop_single_image = false;
        CHECK_EQ(valley2_prep_geometry(&s, 1000, 300, 3, &g, &err), 0);
        CHECK_EQ(g.n_tiles, 4);
        s.anyres = false;
        CHECK_EQ(valley2_prep_geometry(&s, 1000, 300, 1, &g, &err), 0);
        CHECK_EQ(g.n_tiles, 1);
        /* a 1-pixel-high image cannot take the single-tile path; a 3-pixel-high one is read
         * transposed there; both are plain images for AnyRes */
        CHECK_EQ(valley2_prep_geometry(&s, 40, 1, 1, &g, &err), VLM_EINVAL);
        CHECK_EQ(err.http_status, 400);
        CHECK_EQ(valley2_prep_geometry(&s, 40, 3, 1, &g, &err), 0);
        CHECK(g.transposed);
        s.anyres = true;
        CHECK_EQ(valley2_prep_geometry(&s, 40, 1, 1, &g, &err), 0);
        CHECK(!g.transposed);
        CHECK_EQ(valley2_prep_geometry(&s, 0, 10, 1, &g, &err), VLM_EINVAL);
        struct media_image empty = {0};
        struct valley2_prep_out o;
        CHECK_EQ(valley2_prep_image(&empty, &s, 1, &o, &err), VLM_EINVAL);
        CHECK_EQ(err.http_status, 400);
    }

    TEST("both branches: SigLIP tiles then the Qwen2-VL patches, tokens added") {
        struct valley2_prep_settings s;
        valley2_prep_settings_default(&s);
        struct vision_prep_params qp;
        vision_prep_params_default(&qp);
        struct valley2_prep_item it;
        struct vlm_err err = {0};
        CHECK_EQ(valley2_prep_placeholder(&s, &qp, &it, &err), 0);
        /* 3x3 black: one crop (1x1), 14x14 kept, 196 + 196; Qwen2-VL 56x56, 4 tokens */
        CHECK_EQ(it.siglip.g.n_tiles, 2);
        CHECK_EQ(it.siglip.g.n_tokens, 392);
        CHECK_EQ(it.qwen2vl.n_tokens, 4);
        CHECK_EQ(it.n_tokens, 396);
        CHECK(it.siglip.pixels[0] == -1.0f);
        valley2_prep_item_free(&it);

        struct media_image im;
        CHECK(decode_golden("valley2/wide_1000x300.png", &im));
        CHECK_EQ(valley2_prep_both(&im, &s, &qp, 1, &it, &err), 0);
        struct vision_prep_out q;
        CHECK_EQ(vision_prep_image(&im, &qp, &q, &err), 0);
        CHECK_EQ(it.qwen2vl.n_tokens, q.n_tokens);
        CHECK(it.qwen2vl.hash == q.hash);
        CHECK_EQ(it.n_tokens, it.siglip.g.n_tokens + q.n_tokens);
        vision_prep_out_free(&q);
        struct valley2_prep_item it2;
        CHECK_EQ(valley2_prep_both(&im, &s, &qp, 1, &it2, &err), 0);
        CHECK(it2.siglip.hash == it.siglip.hash);
        valley2_prep_item_free(&it2);
        valley2_prep_item_free(&it);
        /* a Qwen2-VL refusal (aspect ratio over 200) fails the item and frees the tiles */
        struct media_image thin;
        CHECK_EQ(media_image_fill(&thin, 2000, 9, 10, 20, 30, &err), 0);
        CHECK_EQ(valley2_prep_both(&thin, &s, &qp, 1, &it, &err), VLM_EINVAL);
        CHECK(it.siglip.pixels == NULL);
        media_image_free(&thin);
        media_image_free(&im);
    }
    TEST("allocation failures: 503, nothing left allocated, then success") {
        struct valley2_prep_settings s;
        valley2_prep_settings_default(&s);
        struct vision_prep_params qp;
        vision_prep_params_default(&qp);
        struct media_image im;
        CHECK(decode_golden("valley2/rgb_50x3.png", &im));
        bool ok = false;
        int n_failed = 0;
        for (long k = 0; k < 200 && !ok; k++) {
            for (int32_t n_images = 1; n_images <= 2; n_images++) {
                struct valley2_prep_item it;
                struct vlm_err err = {0};
                vlm_fail_alloc_after(k);
                int rc = valley2_prep_both(&im, &s, &qp, n_images, &it, &err);
                vlm_fail_alloc_after(-1);
                CHECK(rc == 0 || rc == VLM_ENOMEM);
                if (rc == VLM_ENOMEM) {
                    CHECK_EQ(err.http_status, 503);
                    CHECK(it.siglip.pixels == NULL && it.qwen2vl.pixels == NULL);
                    n_failed++;
                }
                if (n_images == 1) ok = rc == 0;
                valley2_prep_item_free(&it);
            }
        }
        CHECK(ok);
        CHECK(n_failed >= 5);
        media_image_free(&im);
    }
    return test_report();
}
