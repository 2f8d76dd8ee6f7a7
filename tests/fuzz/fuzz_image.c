/*
 * fuzz_image: libFuzzer target for the image path: the bytes as an image (every decoder,
 * the bomb limits), a successful decode through the whole preprocessing (both resizes,
 * patchify) with small pixel limits so each input stays fast, and the bytes as a data URL.
 * Seeds: tests/fuzz/corpus/fuzz_image/ (small PNG/JPEG/GIF/WebP files, one data URL).
 */
#include <stdint.h>
#include <stdlib.h>

#include "server/media.h"
#include "server/vision_prep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct media_limits lim = {1 << 22, 1 << 20};
    struct media_image im;
    struct vlm_err err;
    if (media_decode_image(data, size, &lim, &im, &err) == 0) {
        struct vision_prep_params p;
        vision_prep_params_default(&p);
        p.fetch_max_pixels = p.proc_max_pixels = 28 * 28 * 64;
        struct vision_prep_out o;
        if (vision_prep_image(&im, &p, &o, &err) == 0) vision_prep_out_free(&o);
        media_image_free(&im);
    }
    if (media_decode_data_url((const char *)data, size, &lim, &im, &err) == 0)
        media_image_free(&im);
    return 0;
}
