/*
 * model_util.h: deterministic inputs for tests that run the engine on a generated checkpoint
 * (tests/models.txt): pseudo-random token ids and image pixels from a counter, and image
 * items. Static inline helpers: include from any test .c that uses them.
 */
#ifndef VLM_TEST_MODEL_UTIL_H
#define VLM_TEST_MODEL_UTIL_H

#include <stdint.h>

#include "engine/batch.h"
#include "engine/model.h"
#include "test.h"

/* Deterministic pixels in [-1, 1) for image img: (n_patches, in_chans * temporal_patch_size
 * * patch_size²) f32, as the vision tower takes them. Owned by the caller. */
static inline float *test_pixels(const struct model_config *c, int img, int32_t n_patches)
{
    size_t n = (size_t)n_patches * (size_t)(c->in_chans * c->temporal_patch_size * c->patch_size *
                                            c->patch_size);
    float *px = xmalloc(n * sizeof *px);
    for (size_t i = 0; i < n; i++)
        px[i] = (float)((double)(vlm_mix64((uint64_t)img << 32 | i) >> 40) / (double)(1 << 23)) - 1.0f;
    return px;
}

/* An image item of one temporal slice of grid x grid patches, n_tokens after the spatial
 * merge; px (may be NULL) is borrowed. */
static inline struct mm_item test_image_item(const struct model_config *c, uint64_t hash,
                                             int32_t grid, const float *px)
{
    int32_t m2 = c->spatial_merge_size * c->spatial_merge_size;
    int32_t n_patches = grid * grid;
    return (struct mm_item){.hash = hash, .pixels = px, .grid_t = 1, .grid_h = grid,
                            .grid_w = grid, .n_patches = n_patches, .n_tokens = n_patches / m2};
}

/* Loads the generated checkpoint name from $VLM_MODELS as the test "load <name>". Returns 0,
 * or the loader's code with its message on stderr (the caller reports and returns). */
static inline int test_load_model(struct model *m, const char *name)
{
    struct vlm_err err = {0};
    char tname[64];
    snprintf(tname, sizeof tname, "load %s", name);
    int rc = model_load(m, test_path("VLM_MODELS", name), &err);
    TEST(tname) {
        CHECK_EQ(rc, 0);
    }
    if (rc) fprintf(stderr, "  %s\n", err.msg);
    return rc;
}

#endif
