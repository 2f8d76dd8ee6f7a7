/*
 * vision_prep: an RGB image (media.h) -> the Qwen2-VL vision input, exactly as the reference
 * pipeline computes it (docs/MODEL.md, "Image preprocessing"): qwen-vl-utils 0.0.8 fetch_image
 * (smart_resize + Pillow bicubic resize), then transformers 4.51.2 Qwen2VLImageProcessor
 * (smart_resize again, a second resize only if the size changed, rescale 1/255, CLIP mean/std
 * normalisation in float32, temporal duplication, patch rows in merge-window order).
 * Called by the workers (workers.h), one image at a time; every function is thread-safe.
 *
 * Output rows ("Patchify"), outer -> inner: block row bh, block col bw, dy (2), dx (2); each
 * row holds 1176 floats ordered channel (3), temporal slice (2, identical), y (14), x (14)
 * for pixel (14*(2*bh+dy)+y, 14*(2*bw+dx)+x). grid = (1, H'/14, W'/14); the projector
 * turns every 4 rows into one LLM token, so n_tokens = n_patches / 4.
 *
 * The resize is Pillow's (Resample.c) reproduced bit for bit on 8-bit data: separable,
 * one pass per axis, bicubic a = -0.5 with the support widened by the scale
 * when shrinking, per-pixel coefficients normalised in double then rounded to 22-bit fixed
 * point, half added before the shift, clipped to 0..255 after each pass; an axis whose size
 * does not change is not filtered, and an unchanged size is a copy. The pass order follows
 * Pillow 13: vertical first when in_h - out_h > max(0, 2 * (in_w - out_w)), else horizontal.
 */
#ifndef VLM_VISION_PREP_H
#define VLM_VISION_PREP_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/base.h"
#include "server/media.h"

/* Both smart-resize stages take (min, max) pixel limits; the reference defaults are
 * 3136 = 4*28*28 and 12845056 = 16384*28*28 for both ("The two resize stages"). */
struct vision_prep_params {
    int64_t fetch_min_pixels, fetch_max_pixels; /* stage 1: fetch_image */
    int64_t proc_min_pixels, proc_max_pixels;   /* stage 2: Qwen2VLImageProcessor */
    int32_t patch;    /* 14 */
    int32_t merge;    /* 2 (factor = patch * merge = 28) */
    int32_t temporal; /* 2 */
    int32_t order;    /* enum vision_prep_order: resize pass order (Pillow version) */
};
/* Pillow 13 (the installed reference) may run the vertical pass first; older Pillow releases
 * always ran the horizontal pass first. The two differ by a level on some pixels. */
enum vision_prep_order {
    VISION_PREP_ORDER_PILLOW13 = 0,
    VISION_PREP_ORDER_H_FIRST = 1,
};
#define VISION_PREP_MIN_PIXELS 3136
#define VISION_PREP_MAX_PIXELS 12845056
#define VISION_PREP_MAX_RATIO 200
/* No limit may exceed this (4x the reference maximum): a larger one would let a request
 * ask for rasters of many GB. */
#define VISION_PREP_LIMIT_PIXELS (4 * (int64_t)VISION_PREP_MAX_PIXELS)
void vision_prep_params_default(struct vision_prep_params *p);
/* VLM_EINVAL (400, param "min_pixels"/"max_pixels" etc.) unless 0 < min <= max <=
 * VISION_PREP_LIMIT_PIXELS for both stages, 1 <= patch <= 64, 1 <= merge, temporal <= 8.
 * The pipeline functions below call it; callers applying per-request overrides may call it
 * first to report the field. */
int vision_prep_params_check(const struct vision_prep_params *p, struct vlm_err *err);

/* What the vision tower consumes for one image. */
struct vision_prep_out {
    float *pixels;              /* (n_patches, temporal * 3 * patch * patch) f32, owned */
    int32_t row_len;            /* 1176 with the defaults */
    int32_t grid_t, grid_h, grid_w; /* image_grid_thw row; grid_t = 1 for an image */
    int32_t n_patches;          /* grid_t * grid_h * grid_w */
    int32_t n_tokens;           /* n_patches / merge^2: LLM positions for this image */
    int32_t width, height;      /* the resized image W', H' */
    uint64_t hash;              /* vlm_hash64 over the resized RGB bytes, chained with grid */
};
void vision_prep_out_free(struct vision_prep_out *o);

/* The whole pipeline for one decoded image. VLM_EINVAL (400) for images the reference
 * rejects (aspect ratio over 200, an empty size after resizing), VLM_ENOMEM (503) when the
 * output cannot be allocated. *out is owned by the caller (vision_prep_out_free). */
int vision_prep_image(const struct media_image *im, const struct vision_prep_params *p,
                      struct vision_prep_out *out, struct vlm_err *err);

/* The implicit image of text-only requests ("Implicit image"): a 3x3 black RGB image through the
 * pipeline (56x56, grid 1x4x4, 4 tokens with the defaults). */
int vision_prep_placeholder(const struct vision_prep_params *p, struct vision_prep_out *out,
                            struct vlm_err *err);

/* ==== Pieces, exposed for tests and benchmarks ==== */

enum vision_prep_variant {
    VISION_PREP_FETCH,     /* qwen-vl-utils: rounded sizes clamped to >= factor */
    VISION_PREP_PROCESSOR, /* transformers: rejects height or width < factor */
};
/* smart_resize (docs/MODEL.md, "smart_resize") in double precision with Python's
 * round-half-to-even. Writes the target (h, w). VLM_EINVAL with a message when the reference
 * raises, or when a side would come out 0 (Pillow would refuse to resize to it). */
int vision_prep_smart_resize(int64_t h, int64_t w, int32_t factor, int64_t min_pixels,
                             int64_t max_pixels, enum vision_prep_variant v, int32_t *out_h,
                             int32_t *out_w, struct vlm_err *err);

/* Pillow's Image.resize((w, h), BICUBIC) on an RGB image, bit for bit. *out is new
 * (media_image_free); the same size gives a copy. VLM_ENOMEM on allocation failure. */
int vision_prep_resize(const struct media_image *in, int32_t w, int32_t h,
                       enum vision_prep_order order, struct media_image *out,
                       struct vlm_err *err);

/* Both resize stages: the 8-bit image the processor rescales (before rescale/normalise). */
int vision_prep_resized(const struct media_image *im, const struct vision_prep_params *p,
                        struct media_image *out, struct vlm_err *err);

/* Rescale + normalise + patchify an image whose sides are multiples of patch * merge
 * (the output of vision_prep_resized). */
int vision_prep_patchify(const struct media_image *resized, const struct vision_prep_params *p,
                         struct vision_prep_out *out, struct vlm_err *err);

#endif
