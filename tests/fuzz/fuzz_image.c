/*
 * fuzz_image: libFuzzer target for the image path: the bytes as an image (every decoder,
 * the bomb limits), a successful decode through the whole preprocessing (both resizes,
 * patchify) with small pixel limits so each input stays fast, and through Valley2's SigLIP
 * tiling (AnyRes alone in its request, one tile among several), and the bytes as a data URL.
 * Seeds: tests/fuzz/corpus/fuzz_image/ (small PNG/JPEG/GIF/WebP files, one data URL).
 */
#include <stdint.h>
#include <stdlib.h>

#include "server/media.h"
#include "server/valley2_prep.h"
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
        struct valley2_prep_settings s;
        valley2_prep_settings_default(&s);
        for (int32_t n_images = 1; n_images <= 2; n_images++) {
            struct valley2_prep_out t;
            if (valley2_prep_image(&im, &s, n_images, &t, &err) == 0) valley2_prep_out_free(&t);
        }
        media_image_free(&im);
    }
    if (media_decode_data_url((const char *)data, size, &lim, &im, &err) == 0)
        media_image_free(&im);
    return 0;
}
