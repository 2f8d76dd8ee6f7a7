/*
 * test_vision_prep: parity of decode + preprocessing with the reference pipeline (PIL +
 * qwen-vl-utils fetch_image + transformers Qwen2VLImageProcessor) on the committed images
 * of tests/golden/images/goldens.json (written by tests/golden/make_image_goldens.py).
 *
 * Lossless inputs: decoded RGB, the 8-bit resized image (vlm_hash64 of the bytes) and the
 * grid equal the reference exactly; sampled pixel values within 1e-6 and the float64 sum
 * of all values within 1e-6 relative. JPEG: decoded pixels within 1 level of PIL's decode
 * (<file>.ref.png) and the same grid; when the decode happens to be identical (same IDCT),
 * everything else must match exactly too. Inputs the reference rejects must be rejected.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/media.h"
#include "server/vision_prep.h"
#include "test.h"

static uint8_t *read_golden(const char *name, size_t *n)
{
    char rel[512];
    snprintf(rel, sizeof rel, "tests/golden/images/%s", name);
    return (uint8_t *)vlm_read_file(test_path("VLM_SOURCE_DIR", rel), n);
}

static uint64_t hex64(const char *s) { return strtoull(s, NULL, 16); }

static int64_t jint(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

static bool built_in(const char *fmt)
{
#ifndef VLM_HAVE_GIF
    if (!strcmp(fmt, "gif")) return false;
#endif
#ifndef VLM_HAVE_WEBP
    if (!strcmp(fmt, "webp")) return false;
#endif
    (void)fmt;
    return true;
}

/* Max |a - b| over two images of the same size, or 256 when the sizes differ. */
static int max_diff(const struct media_image *a, const struct media_image *b, size_t *n_diff)
{
    if (a->w != b->w || a->h != b->h) return 256;
    int m = 0;
    size_t n = (size_t)a->w * a->h * 3;
    *n_diff = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a->rgb[i] - (int)b->rgb[i]);
        if (d) (*n_diff)++;
        if (d > m) m = d;
    }
    return m;
}

static void run_case(const cJSON *g, int *n_checked);

static void check_case(const cJSON *g, int *n_checked)
{
    const char *file = cJSON_GetObjectItemCaseSensitive(g, "file")->valuestring;
    const char *fmt = cJSON_GetObjectItemCaseSensitive(g, "format")->valuestring;
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(g, "params");
    char name[300];
    snprintf(name, sizeof name, "golden %s (%s) fetch %lld..%lld proc %lld..%lld", file, fmt,
             (long long)jint(params, "fetch_min_pixels"),
             (long long)jint(params, "fetch_max_pixels"),
             (long long)jint(params, "proc_min_pixels"),
             (long long)jint(params, "proc_max_pixels"));
    if (!built_in(fmt)) {
        printf("   %s: skipped (decoder not built)\n", name);
        return;
    }
    TEST(name) run_case(g, n_checked);
}

static void run_case(const cJSON *g, int *n_checked)
{
    {
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(g, "params");
        const char *file = cJSON_GetObjectItemCaseSensitive(g, "file")->valuestring;
        size_t n = 0;
        uint8_t *bytes = read_golden(file, &n);
        CHECK(bytes != NULL);
        if (!bytes) return;
        struct vlm_err err = {0};
        struct media_image im;
        int rc = media_decode_image(bytes, n, NULL, &im, &err);
        free(bytes);
        CHECK_EQ(rc, 0);
        if (rc) {
            fprintf(stderr, "  decode: %s\n", err.msg);
            return;
        }
        const cJSON *dsz = cJSON_GetObjectItemCaseSensitive(g, "decoded");
        CHECK_EQ(im.w, cJSON_GetArrayItem(dsz, 0)->valueint);
        CHECK_EQ(im.h, cJSON_GetArrayItem(dsz, 1)->valueint);
        uint64_t dh = vlm_hash64(im.rgb, (size_t)im.w * im.h * 3, 0);
        bool exact = dh == hex64(cJSON_GetObjectItemCaseSensitive(g, "decoded_hash")->valuestring);
        const cJSON *ref = cJSON_GetObjectItemCaseSensitive(g, "decoded_ref");
        if (cJSON_IsString(ref)) {
            /* lossy: within one level of PIL's decode */
            size_t rn = 0, nd = 0;
            uint8_t *rb = read_golden(ref->valuestring, &rn);
            struct media_image ri;
            CHECK(rb && media_decode_image(rb, rn, NULL, &ri, &err) == 0);
            free(rb);
            int md = max_diff(&im, &ri, &nd);
            CHECK(md <= 1);
            printf("   %s: decode max diff %d, %zu samples differ, exact=%d\n", file, md, nd,
                   exact);
            media_image_free(&ri);
        } else {
            CHECK(exact); /* lossless: bit for bit */
        }
        struct vision_prep_params p;
        vision_prep_params_default(&p);
        p.fetch_min_pixels = jint(params, "fetch_min_pixels");
        p.fetch_max_pixels = jint(params, "fetch_max_pixels");
        p.proc_min_pixels = jint(params, "proc_min_pixels");
        p.proc_max_pixels = jint(params, "proc_max_pixels");

        const cJSON *gerr = cJSON_GetObjectItemCaseSensitive(g, "error");
        struct vision_prep_out o;
        if (cJSON_IsString(gerr)) {
            rc = vision_prep_image(&im, &p, &o, &err);
            CHECK_EQ(rc, VLM_EINVAL);
            CHECK_EQ(err.http_status, 400);
            CHECK(err.msg[0] != 0);
            printf("   %s: rejected: %s (reference: %s)\n", file, err.msg, gerr->valuestring);
            media_image_free(&im);
            (*n_checked)++;
            return;
        }
        struct media_image r;
        rc = vision_prep_resized(&im, &p, &r, &err);
        CHECK_EQ(rc, 0);
        const cJSON *rsz = cJSON_GetObjectItemCaseSensitive(g, "resized");
        const cJSON *grid = cJSON_GetObjectItemCaseSensitive(g, "grid");
        if (!rc) {
            CHECK_EQ(r.w, cJSON_GetArrayItem(rsz, 0)->valueint);
            CHECK_EQ(r.h, cJSON_GetArrayItem(rsz, 1)->valueint);
            uint64_t rh = vlm_hash64(r.rgb, (size_t)r.w * r.h * 3, 0);
            uint64_t want = hex64(cJSON_GetObjectItemCaseSensitive(g, "resized_hash")->valuestring);
            if (exact) CHECK(rh == want);
            media_image_free(&r);
        }
        rc = vision_prep_image(&im, &p, &o, &err);
        CHECK_EQ(rc, 0);
        if (!rc) {
            CHECK_EQ(o.grid_t, cJSON_GetArrayItem(grid, 0)->valueint);
            CHECK_EQ(o.grid_h, cJSON_GetArrayItem(grid, 1)->valueint);
            CHECK_EQ(o.grid_w, cJSON_GetArrayItem(grid, 2)->valueint);
            CHECK_EQ(o.n_patches, jint(g, "n_rows"));
            CHECK_EQ(o.row_len, jint(g, "row_len"));
            CHECK_EQ(o.n_tokens * 4, o.n_patches);
            if (exact) {
                const cJSON *s;
                cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(g, "samples"))
                {
                    int64_t i = (int64_t)cJSON_GetArrayItem(s, 0)->valuedouble;
                    double v = cJSON_GetArrayItem(s, 1)->valuedouble;
                    CHECK_NEAR(o.pixels[i], v, 1e-6);
                }
                double sum = 0, want = cJSON_GetObjectItemCaseSensitive(g, "sum")->valuedouble;
                size_t total = (size_t)o.n_patches * o.row_len;
                for (size_t i = 0; i < total; i++) sum += o.pixels[i];
                CHECK_NEAR(sum, want, 1e-6 * (fabs(want) + (double)total * 1e-3));
            }
            vision_prep_out_free(&o);
        }
        media_image_free(&im);
        (*n_checked)++;
    }
}

int main(void)
{
    /* ---- smart_resize: the rounding and limit rules of docs/MODEL.md, "smart_resize" ---- */
    TEST("smart_resize: round half to even, clamp, min/max pixels") {
        int32_t h, w;
        struct vlm_err e = {0};
        /* 70/28 = 2.5 -> 2 (half to even), 98/28 = 3.5 -> 4 */
        CHECK_EQ(vision_prep_smart_resize(70, 98 * 30, 28, 3136, 12845056, VISION_PREP_FETCH, &h,
                                          &w, &e), 0);
        CHECK_EQ(h, 56);
        CHECK_EQ(w, 2940);
        CHECK_EQ(vision_prep_smart_resize(98, 98, 28, 3136, 12845056, VISION_PREP_FETCH, &h, &w,
                                          &e), 0);
        CHECK_EQ(h, 112);
        /* 1x1 -> 56x56 through fetch_image; the processor alone refuses it */
        CHECK_EQ(vision_prep_smart_resize(1, 1, 28, 3136, 12845056, VISION_PREP_FETCH, &h, &w,
                                          &e), 0);
        CHECK_EQ(h, 56);
        CHECK_EQ(w, 56);
        CHECK_EQ(vision_prep_smart_resize(1, 1, 28, 3136, 12845056, VISION_PREP_PROCESSOR, &h,
                                          &w, &e), VLM_EINVAL);
        /* 1920x1080 -> 1932x1092 (docs/MODEL.md, "The two resize stages"), and 6000x4000 ->
         * 4368x2912 */
        CHECK_EQ(vision_prep_smart_resize(1080, 1920, 28, 3136, 12845056, VISION_PREP_FETCH, &h,
                                          &w, &e), 0);
        CHECK_EQ(h, 1092);
        CHECK_EQ(w, 1932);
        CHECK_EQ(vision_prep_smart_resize(4000, 6000, 28, 3136, 12845056, VISION_PREP_FETCH, &h,
                                          &w, &e), 0);
        CHECK_EQ(h, 2912);
        CHECK_EQ(w, 4368);
        CHECK_EQ(vision_prep_smart_resize(1092, 1932, 28, 3136, 200704, VISION_PREP_PROCESSOR, &h,
                                          &w, &e), 0);
        CHECK_EQ(h, 336);
        CHECK_EQ(w, 588);
        /* ratio: 200 passes, 200.5 does not */
        CHECK_EQ(vision_prep_smart_resize(10, 2000, 28, 3136, 12845056, VISION_PREP_FETCH, &h,
                                          &w, &e), 0);
        CHECK_EQ(vision_prep_smart_resize(400, 80200, 28, 3136, 12845056, VISION_PREP_FETCH, &h,
                                          &w, &e), VLM_EINVAL);
        CHECK(strstr(e.msg, "aspect ratio") != NULL);
        /* a max_pixels too small for the factor gives an empty side: refused, not 0 */
        CHECK_EQ(vision_prep_smart_resize(100, 1000, 28, 1, 784, VISION_PREP_FETCH, &h, &w, &e),
                 VLM_EINVAL);
    }

    TEST("parameter checks: bad limits are a 400, never an assert") {
        struct vision_prep_params p;
        struct vlm_err e = {0};
        struct media_image im;
        struct vision_prep_out o;
        CHECK_EQ(media_image_fill(&im, 30, 30, 9, 9, 9, &e), 0);
        int64_t bad[][2] = {{0, 100000}, {5000, 4000}, {3136, VISION_PREP_LIMIT_PIXELS + 1},
                            {-1, 3136}};
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            for (int stage = 0; stage < 2; stage++) {
                vision_prep_params_default(&p);
                if (stage) {
                    p.proc_min_pixels = bad[i][0];
                    p.proc_max_pixels = bad[i][1];
                } else {
                    p.fetch_min_pixels = bad[i][0];
                    p.fetch_max_pixels = bad[i][1];
                }
                memset(&e, 0, sizeof e);
                CHECK_EQ(vision_prep_image(&im, &p, &o, &e), VLM_EINVAL);
                CHECK(e.http_status == 400 && e.param[0] && o.pixels == NULL);
            }
        }
        vision_prep_params_default(&p);
        p.patch = 0;
        CHECK_EQ(vision_prep_image(&im, &p, &o, &e), VLM_EINVAL);
        int32_t h, w;
        CHECK_EQ(vision_prep_smart_resize(30, 30, 28, 3136, 0, VISION_PREP_FETCH, &h, &w, &e),
                 VLM_EINVAL);
        /* the limit itself is accepted */
        vision_prep_params_default(&p);
        p.fetch_max_pixels = p.proc_max_pixels = VISION_PREP_LIMIT_PIXELS;
        CHECK_EQ(vision_prep_image(&im, &p, &o, &e), 0);
        vision_prep_out_free(&o);
        media_image_free(&im);
    }

    TEST("user limits bind stage 2 only: 1080p at max 200704 is resampled twice, 252 tokens") {
        /* tests/golden/images/goldens.json has the reference's output for this case; here:
         * the sizes, and that resizing once (the limit given to fetch_image too) gives other
         * pixels, so the golden tells the two apart */
        size_t n = 0;
        uint8_t *bytes = read_golden("hd_1920x1080.png", &n);
        struct media_image im, two, one;
        struct vlm_err e = {0};
        CHECK(bytes && media_decode_image(bytes, n, NULL, &im, &e) == 0);
        free(bytes);
        struct vision_prep_params p;
        vision_prep_params_default(&p);
        p.proc_max_pixels = 200704;
        struct vision_prep_out o;
        CHECK_EQ(vision_prep_image(&im, &p, &o, &e), 0);
        CHECK_EQ(o.width, 588);
        CHECK_EQ(o.height, 336);
        CHECK_EQ(o.n_tokens, 252);
        vision_prep_out_free(&o);
        CHECK_EQ(vision_prep_resized(&im, &p, &two, &e), 0);
        p.fetch_max_pixels = 200704;
        CHECK_EQ(vision_prep_resized(&im, &p, &one, &e), 0);
        CHECK_EQ(one.w, 588);
        CHECK_EQ(one.h, 336);
        CHECK(memcmp(one.rgb, two.rgb, (size_t)588 * 336 * 3) != 0);
        CHECK(vlm_hash64(two.rgb, (size_t)588 * 336 * 3, 0) == 0x723eb1102141fb6cull);
        media_image_free(&one);
        media_image_free(&two);
        media_image_free(&im);
    }

    TEST("placeholder image: 3x3 black -> 56x56, grid 1x4x4, 4 tokens") {
        struct vision_prep_out o;
        struct vlm_err e = {0};
        CHECK_EQ(vision_prep_placeholder(NULL, &o, &e), 0);
        CHECK_EQ(o.width, 56);
        CHECK_EQ(o.height, 56);
        CHECK_EQ(o.grid_t, 1);
        CHECK_EQ(o.grid_h, 4);
        CHECK_EQ(o.grid_w, 4);
        CHECK_EQ(o.n_patches, 16);
        CHECK_EQ(o.n_tokens, 4);
        CHECK_EQ(o.row_len, 1176);
        /* black: (0 - mean) / std per channel, channel-major within a row */
        CHECK_NEAR(o.pixels[0], -0.48145466 / 0.26862954, 1e-6);
        CHECK_NEAR(o.pixels[392], -0.4578275 / 0.26130258, 1e-6);
        CHECK_NEAR(o.pixels[1175], -0.40821073 / 0.27577711, 1e-6);
        uint64_t h1 = o.hash;
        vision_prep_out_free(&o);
        CHECK_EQ(vision_prep_placeholder(NULL, &o, &e), 0);
        CHECK(o.hash == h1);
        vision_prep_out_free(&o);
    }

    TEST("patch row order: merge windows, channel-major rows, temporal copy") {
        /* 56x56 image whose pixel (y, x) encodes its position */
        struct media_image im;
        struct vlm_err e = {0};
        CHECK_EQ(media_image_fill(&im, 56, 56, 0, 0, 0, &e), 0);
        for (int y = 0; y < 56; y++)
            for (int x = 0; x < 56; x++) {
                im.rgb[(y * 56 + x) * 3 + 0] = (uint8_t)y;
                im.rgb[(y * 56 + x) * 3 + 1] = (uint8_t)x;
                im.rgb[(y * 56 + x) * 3 + 2] = (uint8_t)(y + x);
            }
        struct vision_prep_params p;
        vision_prep_params_default(&p);
        struct vision_prep_out o;
        CHECK_EQ(vision_prep_patchify(&im, &p, &o, &e), 0);
        /* row 5 = (bh 0, bw 1, dy 0, dx 1): pixel origin (0, 42) */
        const float *row = o.pixels + 5 * 1176;
        float g42 = (float)((float)(42 * (1.0 / 255)) - 0.4578275f) / 0.26130258f;
        CHECK_NEAR(row[392 + 0], g42, 1e-6);         /* G, t 0, y 0, x 0 */
        CHECK_NEAR(row[392 + 196], g42, 1e-6);       /* G, t 1: the duplicate */
        float r3 = (float)((float)(3 * (1.0 / 255)) - 0.48145466f) / 0.26862954f;
        CHECK_NEAR(row[3 * 14 + 7], r3, 1e-6);       /* R, y 3 */
        /* row 8 = (bh 1, bw 0, dy 0, dx 0): origin (28, 0) */
        float r28 = (float)((float)(28 * (1.0 / 255)) - 0.48145466f) / 0.26862954f;
        CHECK_NEAR(o.pixels[8 * 1176], r28, 1e-6);
        vision_prep_out_free(&o);
        /* not a multiple of 28: refused */
        struct media_image odd = {55, 56, im.rgb};
        CHECK_EQ(vision_prep_patchify(&odd, &p, &o, &e), VLM_EINVAL);
        media_image_free(&im);
    }

    TEST("resize: same size is a copy; one-axis resizes") {
        struct media_image im, r;
        struct vlm_err e = {0};
        CHECK_EQ(media_image_fill(&im, 9, 5, 10, 20, 30, &e), 0);
        im.rgb[7] = 200;
        CHECK_EQ(vision_prep_resize(&im, 9, 5, VISION_PREP_ORDER_PILLOW13, &r, &e), 0);
        CHECK(r.rgb != im.rgb && !memcmp(r.rgb, im.rgb, 9 * 5 * 3));
        media_image_free(&r);
        /* a constant image stays constant whatever the scale (weights sum to 1) */
        struct media_image c;
        CHECK_EQ(media_image_fill(&c, 13, 7, 77, 0, 255, &e), 0);
        int sizes[][2] = {{13, 30}, {40, 7}, {3, 2}, {1, 1}, {100, 100}};
        for (size_t i = 0; i < ARRAY_LEN(sizes); i++) {
            CHECK_EQ(vision_prep_resize(&c, sizes[i][0], sizes[i][1], i % 2, &r, &e), 0);
            for (int k = 0; k < r.w * r.h; k++)
                if (r.rgb[3 * k] != 77 || r.rgb[3 * k + 1] != 0 || r.rgb[3 * k + 2] != 255) {
                    CHECK(!"constant image changed");
                    break;
                }
            media_image_free(&r);
        }
        media_image_free(&c);
        media_image_free(&im);
    }

    TEST("allocation failures: clean ENOMEM, no leak") {
        struct media_image im;
        struct vlm_err e = {0};
        CHECK_EQ(media_image_fill(&im, 300, 200, 1, 2, 3, &e), 0);
        int ok = 0;
        for (long n = 0; n < 40 && !ok; n++) {
            struct vision_prep_out o;
            vlm_fail_alloc_after(n);
            int rc = vision_prep_image(&im, NULL, &o, &e);
            vlm_fail_alloc_after(-1);
            CHECK(rc == 0 || rc == VLM_ENOMEM);
            if (rc == VLM_ENOMEM) CHECK_EQ(e.http_status, 503);
            if (rc == 0) ok = 1;
            vision_prep_out_free(&o);
        }
        CHECK(ok);
        media_image_free(&im);
    }

    /* ---- parity with the reference on the committed images ---- */
    size_t n = 0;
    char *json = vlm_read_file(test_path("VLM_SOURCE_DIR", "tests/golden/images/goldens.json"), &n);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    TEST("goldens.json loads") { CHECK(root != NULL); }
    int checked = 0;
    if (root) {
        const cJSON *g;
        cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(root, "cases"))
            check_case(g, &checked);
    }
    TEST("at least 30 golden images checked") { CHECK(checked >= 30); }
    cJSON_Delete(root);
    free(json);
    return test_report();
}
