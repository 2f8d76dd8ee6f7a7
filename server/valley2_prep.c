/*
 * valley2_prep.c: Valley2's SigLIP tiles (AnyRes), their geometry and token count.
 * See valley2_prep.h for the contract and docs/MODEL.md, "Valley2 image preprocessing" for
 * the reference behaviour reproduced here. The resampling is vision_prep_resize (Pillow's
 * bicubic, bit for bit); everything else is integer or double arithmetic done in the same
 * order as the reference's Python, so the sizes it derives come out identical.
 */
#include "server/valley2_prep.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V2_HTTP_BAD 400
#define V2_HTTP_CONFIG 500

/* ==== Settings ==== */

void valley2_prep_settings_default(struct valley2_prep_settings *s)
{
    memset(s, 0, sizeof *s);
    s->anyres = true;
    s->only_crop_single_image = true;
    s->tile = VALLEY2_PREP_TILE;
    s->tokens_per_side = VALLEY2_PREP_TOKENS_PER_SIDE;
    s->max_vision_token = VALLEY2_PREP_MAX_VISION_TOKEN;
    s->order = VISION_PREP_ORDER_PILLOW13;
    struct vlm_err err;
    int rc = valley2_prep_parse_pinpoints(VALLEY2_PREP_PINPOINTS, s, &err);
    VLM_ASSERT(rc == VLM_OK);
}

int valley2_prep_settings_check(const struct valley2_prep_settings *s, struct vlm_err *err)
{
    if (s->tile != VALLEY2_PREP_TILE)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                           "vit_crop_size %d: the Valley2 image processor tiles at %d pixels",
                           (int)s->tile, VALLEY2_PREP_TILE);
    const int32_t tps = s->tokens_per_side;
    if (tps < 1 || tps > 64)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                           "num_patches_per_side %d is not in 1..64", (int)tps);
    /* the reference pools the crops to max_vision_token - tps^2 tokens: a cap at or under
     * one tile's tokens makes it take the square root of a negative number */
    if (s->max_vision_token <= tps * tps || s->max_vision_token > (1 << 20))
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                           "max_vision_token %d must be over %d (one tile) and at most %d",
                           (int)s->max_vision_token, (int)(tps * tps), 1 << 20);
    if (s->n_pinpoints < 1 || s->n_pinpoints > VALLEY2_PREP_MAX_PINPOINTS)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG, "%d grid pinpoints (1..%d)",
                           (int)s->n_pinpoints, VALLEY2_PREP_MAX_PINPOINTS);
    for (int32_t i = 0; i < s->n_pinpoints; i++) {
        int32_t pw = s->pinpoints[i][0], ph = s->pinpoints[i][1];
        if (pw <= 0 || ph <= 0 || pw % s->tile || ph % s->tile ||
            pw / s->tile > VALLEY2_PREP_MAX_GRID || ph / s->tile > VALLEY2_PREP_MAX_GRID)
            return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                               "grid pinpoint %dx%d is not 1..%d tiles of %d pixels a side",
                               (int)pw, (int)ph, VALLEY2_PREP_MAX_GRID, (int)s->tile);
    }
    if ((uint32_t)s->order > VISION_PREP_ORDER_H_FIRST)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG, "invalid resize order %d",
                           (int)s->order);
    return VLM_OK;
}

/* A non-negative decimal at *p (advanced past it); -1 when there is none, -2 when it is over
 * a million (no pinpoint can be that large). */
static int64_t v2_number(const char **p)
{
    const char *q = *p;
    if (!isdigit((unsigned char)*q)) return -1;
    int64_t v = 0;
    while (isdigit((unsigned char)*q)) {
        v = v * 10 + (*q++ - '0');
        if (v > 1000000) return -2;
    }
    *p = q;
    return v;
}

static int v2_add_pinpoint(struct valley2_prep_settings *s, int64_t w, int64_t h,
                           struct vlm_err *err)
{
    if (s->n_pinpoints >= VALLEY2_PREP_MAX_PINPOINTS)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                           "grid_pinpoints: more than %d candidates", VALLEY2_PREP_MAX_PINPOINTS);
    s->pinpoints[s->n_pinpoints][0] = (int32_t)w;
    s->pinpoints[s->n_pinpoints][1] = (int32_t)h;
    s->n_pinpoints++;
    return VLM_OK;
}

int valley2_prep_parse_pinpoints(const char *spec, struct valley2_prep_settings *s,
                                 struct vlm_err *err)
{
    s->n_pinpoints = 0;
    if (strchr(spec, 'x')) {
        /* the range form: only the first and the last "(NxM)" count */
        int64_t first[2] = {-1, -1}, last[2] = {-1, -1};
        for (const char *p = spec; *p; p++) {
            if (*p != '(') continue;
            const char *q = p + 1;
            int64_t a = v2_number(&q), b = -1;
            if (a >= 0 && *q == 'x') {
                q++;
                b = v2_number(&q);
            }
            if (a == -2 || b == -2)
                return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                                   "grid_pinpoints \"%.60s\": a number is too large", spec);
            if (a < 0 || b < 0 || *q != ')') continue;
            if (first[0] < 0) {
                first[0] = a;
                first[1] = b;
            }
            last[0] = a;
            last[1] = b;
        }
        if (first[0] < 0)
            return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                               "grid_pinpoints \"%.60s\": no (NxM) in it", spec);
        if (last[0] < first[0] || last[1] < first[1] ||
            (last[0] - first[0] + 1) * (last[1] - first[1] + 1) > VALLEY2_PREP_MAX_PINPOINTS)
            return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                               "grid_pinpoints \"%.60s\": not a range of 1..%d grids", spec,
                               VALLEY2_PREP_MAX_PINPOINTS);
        for (int64_t i = first[0]; i <= last[0]; i++)
            for (int64_t j = first[1]; j <= last[1]; j++) {
                int rc = v2_add_pinpoint(s, i * s->tile, j * s->tile, err);
                if (rc) return rc;
            }
        return VLM_OK;
    }
    /* a literal list of (width, height) pairs: the numbers in order, two by two; only
     * brackets, parentheses, commas and spaces may separate them */
    int64_t pending = -1;
    for (const char *p = spec; *p;) {
        if (isdigit((unsigned char)*p)) {
            int64_t v = v2_number(&p);
            if (v < 0) {
                s->n_pinpoints = 0;
                break;
            }
            if (pending < 0) {
                pending = v;
            } else {
                int rc = v2_add_pinpoint(s, pending, v, err);
                if (rc) return rc;
                pending = -1;
            }
            continue;
        }
        if (!strchr("[](), \t\n", *p)) {
            s->n_pinpoints = 0;
            break;
        }
        p++;
    }
    if (s->n_pinpoints == 0 || pending >= 0)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                           "grid_pinpoints \"%.60s\" is neither a range nor a list of pairs",
                           spec);
    return VLM_OK;
}

static int v2_cfg_int(const cJSON *root, const char *key, int32_t *v, struct vlm_err *err)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!o || cJSON_IsNull(o)) return VLM_OK;
    if (!cJSON_IsNumber(o) || o->valuedouble != floor(o->valuedouble) ||
        fabs(o->valuedouble) > 1e9)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG, "config.json: %s is not an integer",
                           key);
    *v = (int32_t)o->valuedouble;
    return VLM_OK;
}

static int v2_cfg_bool(const cJSON *root, const char *key, bool *v, struct vlm_err *err)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!o || cJSON_IsNull(o)) return VLM_OK;
    if (!cJSON_IsBool(o))
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG, "config.json: %s is not a boolean",
                           key);
    *v = cJSON_IsTrue(o);
    return VLM_OK;
}

int valley2_prep_settings_from_config(const char *json, size_t n,
                                      struct valley2_prep_settings *s, struct vlm_err *err)
{
    valley2_prep_settings_default(s);
    cJSON *root = cJSON_ParseWithLength(json, n);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG, "config.json is not a JSON object");
    }
    int rc = v2_cfg_bool(root, "anyres", &s->anyres, err);
    if (!rc) rc = v2_cfg_bool(root, "only_crop_single_image", &s->only_crop_single_image, err);
    if (!rc) rc = v2_cfg_int(root, "vit_crop_size", &s->tile, err);
    if (!rc) rc = v2_cfg_int(root, "num_patches_per_side", &s->tokens_per_side, err);
    if (!rc) rc = v2_cfg_int(root, "max_vision_token", &s->max_vision_token, err);
    const cJSON *gp = cJSON_GetObjectItemCaseSensitive(root, "grid_pinpoints");
    if (!rc && cJSON_IsString(gp)) {
        if (s->tile == VALLEY2_PREP_TILE) rc = valley2_prep_parse_pinpoints(gp->valuestring, s, err);
    } else if (!rc && cJSON_IsArray(gp)) {
        s->n_pinpoints = 0;
        const cJSON *pair;
        cJSON_ArrayForEach(pair, gp)
        {
            const cJSON *a = cJSON_GetArrayItem(pair, 0), *b = cJSON_GetArrayItem(pair, 1);
            if (!cJSON_IsArray(pair) || cJSON_GetArraySize(pair) != 2 || !cJSON_IsNumber(a) ||
                !cJSON_IsNumber(b) || a->valuedouble != floor(a->valuedouble) ||
                b->valuedouble != floor(b->valuedouble) || a->valuedouble < 0 ||
                b->valuedouble < 0 || a->valuedouble > 1e6 || b->valuedouble > 1e6) {
                rc = vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                                 "config.json: grid_pinpoints must hold [width, height] pairs");
                break;
            }
            rc = v2_add_pinpoint(s, (int64_t)a->valuedouble, (int64_t)b->valuedouble, err);
            if (rc) break;
        }
    } else if (!rc && gp && !cJSON_IsNull(gp)) {
        rc = vlm_err_set(err, VLM_EINVAL, V2_HTTP_CONFIG,
                         "config.json: grid_pinpoints is neither a string nor a list");
    }
    cJSON_Delete(root);
    if (!rc) rc = valley2_prep_settings_check(s, err);
    return rc;
}

/* ==== Geometry ====
 * The reference computes these sizes in Python: int / int is a correctly rounded double
 * division, int(x) truncates, math.ceil rounds up, // floors, and a slice a[i:j] clamps its
 * bounds. The same operations on doubles here give the same integers. */

static int64_t v2_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* Python's len(range(n)[i:j]) and its first index (0 for an empty slice), step 1. */
static void v2_slice(int64_t n, int64_t i, int64_t j, int32_t *start, int32_t *len)
{
    if (i < 0) i = VLM_MAX(i + n, 0);
    if (j < 0) j = VLM_MAX(j + n, 0);
    i = VLM_MIN(i, n);
    j = VLM_MIN(j, n);
    *len = (int32_t)VLM_MAX(j - i, 0);
    *start = *len ? (int32_t)i : 0;
}

void valley2_prep_select(const struct valley2_prep_settings *s, int32_t w, int32_t h,
                         int32_t *res_w, int32_t *res_h)
{
    VLM_ASSERT(w > 0 && h > 0 && s->n_pinpoints > 0);
    int64_t best_eff = 0, best_waste = 0;
    bool have_waste = false; /* the reference starts from an infinite waste */
    *res_w = *res_h = 0;
    for (int32_t i = 0; i < s->n_pinpoints; i++) {
        const int64_t pw = s->pinpoints[i][0], ph = s->pinpoints[i][1];
        double sw = (double)pw / (double)w, sh = (double)ph / (double)h;
        double scale = sh < sw ? sh : sw;
        int64_t dw = (int64_t)((double)w * scale), dh = (int64_t)((double)h * scale);
        int64_t eff = VLM_MIN(dw * dh, (int64_t)w * h);
        int64_t waste = pw * ph - eff;
        if (eff > best_eff || (eff == best_eff && (!have_waste || waste < best_waste))) {
            best_eff = eff;
            best_waste = waste;
            have_waste = true;
            *res_w = (int32_t)pw;
            *res_h = (int32_t)ph;
        }
    }
}

int valley2_prep_geometry(const struct valley2_prep_settings *s, int32_t w, int32_t h,
                          int32_t n_images, struct valley2_prep_geom *g, struct vlm_err *err)
{
    memset(g, 0, sizeof *g);
    int rc = valley2_prep_settings_check(s, err);
    if (rc) return rc;
    if (w <= 0 || h <= 0)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_BAD, "image size %dx%d is invalid", (int)w,
                           (int)h);
    const int32_t tps = s->tokens_per_side;
    g->base_tokens = tps * tps;
    g->n_tokens = g->base_tokens;
    g->n_tiles = 1;
    if (!s->anyres || (s->only_crop_single_image && n_images > 1)) {
        /* One tile, straight through SigLIP's image processor, which guesses the channel axis
         * of the (h, w, 3) array: a first axis of size 1 or 3 is taken for the channels. A
         * 3-pixel-high image is then read transposed; a 1-pixel-high one has "1 channel" and
         * the normalisation with 3 means raises. */
        if (h == 1)
            return vlm_err_set(err, VLM_EINVAL, V2_HTTP_BAD,
                               "image %dx%d: the Valley2 image processor cannot read an image "
                               "1 pixel high",
                               (int)w, (int)h);
        g->transposed = h == 3;
        return VLM_OK;
    }
    valley2_prep_select(s, w, h, &g->res_w, &g->res_h);
    g->grid_w = g->res_w / s->tile;
    g->grid_h = g->res_h / s->tile;
    g->n_tiles = 1 + g->grid_w * g->grid_h;
    /* resize_and_pad_image: fill the side that limits, round the other up */
    double sw = (double)g->res_w / (double)w, sh = (double)g->res_h / (double)h;
    if (sw < sh) {
        g->fit_w = g->res_w;
        g->fit_h = (int32_t)VLM_MIN((int64_t)ceil((double)h * sw), (int64_t)g->res_h);
    } else {
        g->fit_h = g->res_h;
        g->fit_w = (int32_t)VLM_MIN((int64_t)ceil((double)w * sh), (int64_t)g->res_w);
    }
    g->pad_x = (g->res_w - g->fit_w) / 2;
    g->pad_y = (g->res_h - g->fit_h) / 2;
    /* unpad_image on the stitched (map_h, map_w) token map with the original size */
    g->map_h = g->grid_h * tps;
    g->map_w = g->grid_w * tps;
    g->keep_y = g->keep_x = 0;
    g->keep_h = g->map_h;
    g->keep_w = g->map_w;
    double orig_ar = (double)w / (double)h, cur_ar = (double)g->map_w / (double)g->map_h;
    if (orig_ar > cur_ar) {
        double f = (double)g->map_w / (double)w;
        int64_t new_h = (int64_t)((double)h * f);
        int64_t pad = v2_floordiv(g->map_h - new_h, 2);
        v2_slice(g->map_h, pad, g->map_h - pad, &g->keep_y, &g->keep_h);
    } else {
        double f = (double)g->map_h / (double)h;
        int64_t new_w = (int64_t)((double)w * f);
        int64_t pad = v2_floordiv(g->map_w - new_w, 2);
        v2_slice(g->map_w, pad, g->map_w - pad, &g->keep_x, &g->keep_w);
    }
    /* adaptive average pooling above the cap, keeping the aspect ratio */
    g->pool_h = g->keep_h;
    g->pool_w = g->keep_w;
    int64_t max_sub = (int64_t)s->max_vision_token - g->base_tokens;
    if ((int64_t)g->keep_h * g->keep_w > max_sub) {
        double ar = (double)g->keep_h / (double)g->keep_w;
        double r = pow((double)max_sub / ar, 0.5);
        g->pool_h = (int32_t)(r * ar);
        g->pool_w = (int32_t)r;
        g->pooled = true;
    }
    g->n_tokens = g->base_tokens + g->pool_h * g->pool_w;
    return VLM_OK;
}

/* ==== Pixels ====
 * Each 8-bit tile becomes (3, tile, tile) floats through a 256-entry table: value/255 in
 * double rounded to float32 (transformers' rescale), then (v - 0.5) / 0.5 in float32 (its
 * normalize). */

static void v2_lut(float lut[256])
{
    for (int v = 0; v < 256; v++) {
        float f = (float)((double)v * (1.0 / 255.0));
        lut[v] = (f - 0.5f) / 0.5f;
    }
}

/* tile x tile pixels at (x0, y0) of an RGB raster of width stride_w -> (3, tile, tile). */
static void v2_planar(const float lut[256], const uint8_t *rgb, int32_t stride_w, int32_t x0,
                      int32_t y0, int32_t tile, float *restrict dst)
{
    const size_t plane = (size_t)tile * tile;
    for (int32_t y = 0; y < tile; y++) {
        const uint8_t *src = rgb + ((size_t)(y0 + y) * stride_w + x0) * 3;
        float *d0 = dst + (size_t)y * tile, *d1 = d0 + plane, *d2 = d1 + plane;
        for (int32_t x = 0; x < tile; x++) {
            d0[x] = lut[src[3 * x + 0]];
            d1[x] = lut[src[3 * x + 1]];
            d2[x] = lut[src[3 * x + 2]];
        }
    }
}

void valley2_prep_out_free(struct valley2_prep_out *o)
{
    if (!o) return;
    free(o->pixels);
    memset(o, 0, sizeof *o);
}

/* The base tile's 8-bit pixels: the image squashed to tile x tile (read transposed when the
 * geometry says so). */
static int v2_base_tile(const struct media_image *im, const struct valley2_prep_settings *s,
                        bool transposed, struct media_image *out, struct vlm_err *err)
{
    if (!transposed)
        return vision_prep_resize(im, s->tile, s->tile, (enum vision_prep_order)s->order, out,
                                  err);
    /* the (3, w, 3) array read as channels-first: an image w high and 3 wide whose pixel
     * (y, x) channel c is the original's row c, column y, channel x */
    struct media_image t = {.w = 3, .h = im->w, .rgb = trymalloc((size_t)im->w * 9)};
    if (!t.rgb)
        return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for a %dx3 image", (int)im->w);
    for (int32_t y = 0; y < im->w; y++)
        for (int x = 0; x < 3; x++)
            for (int c = 0; c < 3; c++)
                t.rgb[((size_t)y * 3 + x) * 3 + c] = im->rgb[((size_t)c * im->w + y) * 3 + x];
    int rc = vision_prep_resize(&t, s->tile, s->tile, (enum vision_prep_order)s->order, out, err);
    media_image_free(&t);
    return rc;
}

int valley2_prep_image(const struct media_image *im, const struct valley2_prep_settings *s,
                       int32_t n_images, struct valley2_prep_out *out, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    if (!im->rgb || im->w <= 0 || im->h <= 0)
        return vlm_err_set(err, VLM_EINVAL, V2_HTTP_BAD, "image is empty");
    struct valley2_prep_geom g;
    int rc = valley2_prep_geometry(s, im->w, im->h, n_images, &g, err);
    if (rc) return rc;
    const int32_t t = s->tile;
    const size_t tile_floats = (size_t)3 * t * t;
    const size_t bytes = (size_t)g.n_tiles * tile_floats * sizeof(float);
    float *pix = trymalloc(bytes);
    if (!pix)
        return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for %d image tiles",
                           (int)g.n_tiles);
    media_hint_huge_pages(pix, bytes);
    float lut[256];
    v2_lut(lut);

    struct media_image base = {0}, fit = {0};
    uint8_t *canvas = NULL;
    rc = v2_base_tile(im, s, g.transposed, &base, err);
    if (rc) goto fail;
    v2_planar(lut, base.rgb, t, 0, 0, t, pix);
    uint64_t hsh = vlm_hash64(base.rgb, (size_t)t * t * 3, 0);
    if (g.n_tiles > 1) {
        /* resize_and_pad_image, then divide_to_patches (row by row) */
        rc = vision_prep_resize(im, g.fit_w, g.fit_h, (enum vision_prep_order)s->order, &fit,
                                err);
        if (rc) goto fail;
        const size_t cbytes = (size_t)g.res_w * g.res_h * 3;
        canvas = trymalloc(cbytes);
        if (!canvas) {
            rc = vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for a %dx%d image",
                             (int)g.res_w, (int)g.res_h);
            goto fail;
        }
        memset(canvas, 0, cbytes);
        for (int32_t y = 0; y < g.fit_h; y++)
            memcpy(canvas + ((size_t)(g.pad_y + y) * g.res_w + g.pad_x) * 3,
                   fit.rgb + (size_t)y * g.fit_w * 3, (size_t)g.fit_w * 3);
        for (int32_t i = 0; i < g.grid_h; i++)
            for (int32_t j = 0; j < g.grid_w; j++)
                v2_planar(lut, canvas, g.res_w, j * t, i * t, t,
                          pix + (size_t)(1 + i * g.grid_w + j) * tile_floats);
        hsh = vlm_hash64(canvas, cbytes, hsh);
    }
    int32_t ints[6] = {im->w, im->h, g.n_tiles, g.grid_w, g.grid_h, g.n_tokens};
    out->hash = vlm_hash64(ints, sizeof ints, hsh);
    out->pixels = pix;
    out->tile = t;
    out->orig_w = im->w;
    out->orig_h = im->h;
    out->g = g;
    media_image_free(&base);
    media_image_free(&fit);
    free(canvas);
    return VLM_OK;
fail:
    media_image_free(&base);
    media_image_free(&fit);
    free(canvas);
    free(pix);
    return rc;
}

/* ==== Both branches ==== */

void valley2_prep_item_free(struct valley2_prep_item *it)
{
    if (!it) return;
    valley2_prep_out_free(&it->siglip);
    vision_prep_out_free(&it->qwen2vl);
    it->n_tokens = 0;
}

int valley2_prep_both(const struct media_image *im, const struct valley2_prep_settings *s,
                      const struct vision_prep_params *qp, int32_t n_images,
                      struct valley2_prep_item *out, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = valley2_prep_image(im, s, n_images, &out->siglip, err);
    if (rc) return rc;
    rc = vision_prep_image(im, qp, &out->qwen2vl, err);
    if (rc) {
        valley2_prep_item_free(out);
        return rc;
    }
    out->n_tokens = out->siglip.g.n_tokens + out->qwen2vl.n_tokens;
    return VLM_OK;
}

int valley2_prep_placeholder(const struct valley2_prep_settings *s,
                             const struct vision_prep_params *qp, struct valley2_prep_item *out,
                             struct vlm_err *err)
{
    struct media_image black;
    memset(out, 0, sizeof *out);
    int rc = media_image_fill(&black, 3, 3, 0, 0, 0, err);
    if (rc) return rc;
    rc = valley2_prep_both(&black, s, qp, 1, out, err);
    media_image_free(&black);
    return rc;
}
