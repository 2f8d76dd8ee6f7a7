/*
 * fuzz_valley2_config: libFuzzer target for the Valley2 preprocessing settings read from
 * config.json (server/valley2_prep.c): the bytes as config.json text, the grid_pinpoints
 * parser on the bytes as a string, and, when settings come out, the tiling geometry for image
 * sizes taken from the input. Seeds: tests/fuzz/corpus/fuzz_valley2_config/.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/valley2_prep.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct valley2_prep_settings s;
    struct vlm_err err;
    int rc = valley2_prep_settings_from_config((const char *)data, size, &s, &err);
    char *str = malloc(size + 1);
    if (!str) return 0;
    memcpy(str, data, size);
    str[size] = 0;
    if (rc) {
        valley2_prep_settings_default(&s);
        if (valley2_prep_parse_pinpoints(str, &s, &err)) valley2_prep_settings_default(&s);
    }
    free(str);
    /* sizes from the first bytes: 1 .. 65536 a side */
    uint32_t w = 1, h = 1;
    if (size >= 4) {
        w = 1 + (uint32_t)(data[0] | data[1] << 8);
        h = 1 + (uint32_t)(data[2] | data[3] << 8);
    }
    struct valley2_prep_geom g;
    for (int32_t n_images = 1; n_images <= 2; n_images++)
        if (valley2_prep_geometry(&s, (int32_t)w, (int32_t)h, n_images, &g, &err) == 0 &&
            (g.n_tokens < g.base_tokens || g.pool_h < 0 || g.pool_w < 0))
            abort();
    return 0;
}
