/*
 * valley2_prep: an RGB image (media.h) -> the SigLIP input of a Valley2 checkpoint
 * (Valley-Eagle-7B, Valley2-DPO), exactly as the reference processor builds it, plus what the
 * model needs afterwards and what the server needs before running anything
 * (docs/MODEL.md, "Valley2 image preprocessing"):
 *
 *   - the tiles: float32, channels first, (n_tiles, 3, tile, tile), tile 0 the whole image
 *     squashed to tile x tile, then the AnyRes crops row by row; each is transformers 4.51.2
 *     SiglipImageProcessor's output (Pillow bicubic to 384x384, value/255, (v - 0.5) / 0.5);
 *   - the tile geometry: the grid pinpoint chosen, the crop grid, and the window of the
 *     stitched crop token map that survives unpadding (computed from the original size);
 *   - the token count: the base tile's tokens plus the crop map's after unpadding and, above
 *     the vision-token cap, adaptive average pooling. valley2_prep_geometry gives it from the
 *     image size alone, so a request can be accounted before decoding.
 *
 * The same image's Qwen2-VL input is vision_prep.h's; valley2_prep_both runs both branches.
 * The settings come from the checkpoint's config.json (valley2_prep_settings_from_config) or
 * from the defaults below. Every function is thread-safe (no global state).
 */
#ifndef VLM_VALLEY2_PREP_H
#define VLM_VALLEY2_PREP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"
#include "server/media.h"
#include "server/vision_prep.h"

/* ==== Settings ==== */

#define VALLEY2_PREP_MAX_PINPOINTS 64
#define VALLEY2_PREP_TILE 384              /* the reference processor's fixed input size */
#define VALLEY2_PREP_TOKENS_PER_SIDE 14    /* 27x27 patch map, 3x3 stride-2 conv -> 14x14 */
#define VALLEY2_PREP_MAX_VISION_TOKEN 900  /* project default when config.json has none */
#define VALLEY2_PREP_PINPOINTS "(1x1),...,(3x3)"
#define VALLEY2_PREP_MAX_GRID 8            /* crops per side, at most */
/* The Qwen2-VL branch of a Valley2 image: the reference builds its Qwen2VLImageProcessor with
 * max_pixels 1280 * 28 * 28 (at most 1280 tokens); the server's --max-pixels may only lower it
 * (docs/MODEL.md, "Valley2 image preprocessing") */
#define VALLEY2_PREP_QWEN2VL_MAX_PIXELS (1280 * 28 * 28)

struct valley2_prep_settings {
    bool anyres;                /* "anyres"; absent: true. false: one tile per image */
    bool only_crop_single_image; /* absent: true: with several images, one tile each */
    int32_t tile;               /* "vit_crop_size"; absent: 384, and only 384 is accepted */
    int32_t tokens_per_side;    /* "num_patches_per_side"; absent: 14 (196 tokens a tile) */
    int32_t max_vision_token;   /* "max_vision_token": base + crop tokens above which the crop
                                   map is pooled; absent: VALLEY2_PREP_MAX_VISION_TOKEN */
    int32_t n_pinpoints;
    int32_t pinpoints[VALLEY2_PREP_MAX_PINPOINTS][2]; /* (width, height) px, in the order the
                                                          reference tries them */
    int32_t order;              /* enum vision_prep_order (the Pillow version's pass order) */
};

/* The defaults above, pinpoints "(1x1),...,(3x3)" (9 candidates, 384..1152 per side). */
void valley2_prep_settings_default(struct valley2_prep_settings *s);
/* VLM_EINVAL (status 500: these come from the checkpoint, not from a request) unless
 * tile == 384, 1 <= tokens_per_side <= 64, tokens_per_side^2 < max_vision_token <= 1<<20,
 * 1 <= n_pinpoints <= max, and every pinpoint is a positive multiple of tile with at most
 * VALLEY2_PREP_MAX_GRID tiles per side. */
int valley2_prep_settings_check(const struct valley2_prep_settings *s, struct vlm_err *err);

/* Parses a grid_pinpoints string as the reference does, into s->pinpoints (s->tile must be
 * set): a string holding "x" is a range "(a x b),...,(c x d)" whose first and last "(NxM)"
 * count (every (i, j) with a <= i <= c, b <= j <= d, i outer, as (i*tile, j*tile)); any other
 * string is a literal list of (width, height) pairs, "[(384, 768), ...]". VLM_EINVAL with a
 * message on anything else. */
int valley2_prep_parse_pinpoints(const char *spec, struct valley2_prep_settings *s,
                                 struct vlm_err *err);

/* Fills *s from config.json text (json, n bytes): the keys anyres, only_crop_single_image,
 * vit_crop_size, num_patches_per_side, max_vision_token, grid_pinpoints (a string as above, or
 * a JSON array of [width, height] pairs). Absent keys keep the defaults; a key of the wrong
 * type or value is VLM_EINVAL naming it. The result is checked (valley2_prep_settings_check). */
int valley2_prep_settings_from_config(const char *json, size_t n,
                                      struct valley2_prep_settings *s, struct vlm_err *err);

/* ==== Geometry and token count ==== */

struct valley2_prep_geom {
    int32_t n_tiles;           /* 1 (base only) or 1 + grid_w * grid_h */
    int32_t grid_w, grid_h;    /* crop columns and rows; 0 when base only */
    int32_t res_w, res_h;      /* the pinpoint chosen (grid * tile); 0 when base only */
    int32_t fit_w, fit_h;      /* the image resized inside it, pasted at (pad_x, pad_y) on */
    int32_t pad_x, pad_y;      /* black */
    int32_t map_h, map_w;      /* stitched crop token map: grid * tokens_per_side */
    int32_t keep_y, keep_x;    /* its window kept by unpadding (the original aspect ratio; 0 */
    int32_t keep_h, keep_w;    /* when empty): rows keep_y.., columns keep_x.. */
    int32_t pool_h, pool_w;    /* the window after adaptive average pooling (= keep_h/w when
                                  not pooled; may be 0, then no crop tokens) */
    bool pooled;
    bool transposed;           /* single tile of a 3-pixel-high image: see valley2_prep.c */
    int32_t base_tokens;       /* tokens_per_side^2 */
    int32_t n_tokens;          /* base_tokens + pool_h * pool_w */
};

/* The tiling of a w x h image in a request of n_images images, from the size alone.
 * VLM_EINVAL (400) for an image the reference processor cannot take (a one-pixel-high image
 * when it gets a single tile: docs/MODEL.md, "Valley2 image preprocessing"). */
int valley2_prep_geometry(const struct valley2_prep_settings *s, int32_t w, int32_t h,
                          int32_t n_images, struct valley2_prep_geom *g, struct vlm_err *err);

/* The reference's select_best_resolution over s->pinpoints: the most effective pixels after
 * an aspect-preserving downscale, ties to the least waste, then to the earlier pinpoint. */
void valley2_prep_select(const struct valley2_prep_settings *s, int32_t w, int32_t h,
                         int32_t *res_w, int32_t *res_h);

/* ==== Pixels ==== */

struct valley2_prep_out {
    float *pixels;             /* (n_tiles, 3, tile, tile) f32, owned; tile 0 = base */
    int32_t tile;
    int32_t orig_w, orig_h;    /* the image's size, for unpadding */
    struct valley2_prep_geom g;
    uint64_t hash;             /* vlm_hash64 over the 8-bit tiles, chained with the geometry */
};
void valley2_prep_out_free(struct valley2_prep_out *o); /* accepts a zeroed struct */

/* The SigLIP tiles of one decoded image in a request of n_images (>= 1) images. Errors as
 * valley2_prep_geometry, VLM_EINVAL (400) for an empty image, VLM_ENOMEM (503). *out is owned
 * by the caller (valley2_prep_out_free) and zeroed on failure. */
int valley2_prep_image(const struct media_image *im, const struct valley2_prep_settings *s,
                       int32_t n_images, struct valley2_prep_out *out, struct vlm_err *err);

/* One image through both towers' preprocessing: the SigLIP tiles, then the Qwen2-VL patches
 * of vision_prep_image with qp. n_tokens = siglip.g.n_tokens + qwen2vl.n_tokens, the LLM
 * positions the image takes (SigLIP block first). */
struct valley2_prep_item {
    struct valley2_prep_out siglip;
    struct vision_prep_out qwen2vl;
    int32_t n_tokens;
};
int valley2_prep_both(const struct media_image *im, const struct valley2_prep_settings *s,
                      const struct vision_prep_params *qp, int32_t n_images,
                      struct valley2_prep_item *out, struct vlm_err *err);
void valley2_prep_item_free(struct valley2_prep_item *it); /* accepts a zeroed struct */

/* The implicit 3x3 black image of a request without images ("Implicit image"), through both
 * branches as the only image of its request. */
int valley2_prep_placeholder(const struct valley2_prep_settings *s,
                             const struct vision_prep_params *qp, struct valley2_prep_item *out,
                             struct vlm_err *err);

#endif
