/* The pieces of a small convolution and of adaptive pooling over channels-last maps (the
 * ConvAdapter projector and the vision-token cap of Valley2, docs/MODEL.md). */
#include "kernels/cpu.h"

#include <stddef.h>

void cpu_im2col_3x3s2(float *y, const float *x, int32_t h, int32_t w, int64_t C)
{
    int32_t oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
#pragma omp parallel for if ((int64_t)oh * ow * C > 16384)
    for (int64_t r = 0; r < (int64_t)oh * ow; r++) {
        int32_t oy = (int32_t)(r / ow), ox = (int32_t)(r % ow);
        float *yr = y + r * 9 * C;
        for (int32_t ky = 0; ky < 3; ky++)
            for (int32_t kx = 0; kx < 3; kx++) {
                int32_t iy = 2 * oy - 1 + ky, ix = 2 * ox - 1 + kx;
                bool in = iy >= 0 && iy < h && ix >= 0 && ix < w;
                const float *xr = in ? x + ((int64_t)iy * w + ix) * C : NULL;
                for (int64_t c = 0; c < C; c++) yr[c * 9 + ky * 3 + kx] = in ? xr[c] : 0.0f;
            }
    }
}

void cpu_avgpool_adaptive(float *y, const float *x, int32_t ih, int32_t iw, int32_t oh,
                          int32_t ow, int64_t C)
{
#pragma omp parallel for if ((int64_t)oh * ow * C > 16384)
    for (int64_t r = 0; r < (int64_t)oh * ow; r++) {
        int32_t i = (int32_t)(r / ow), j = (int32_t)(r % ow);
        int32_t y0 = (int32_t)((int64_t)i * ih / oh);
        int32_t y1 = (int32_t)(((int64_t)(i + 1) * ih + oh - 1) / oh);
        int32_t x0 = (int32_t)((int64_t)j * iw / ow);
        int32_t x1 = (int32_t)(((int64_t)(j + 1) * iw + ow - 1) / ow);
        float *yr = y + r * C;
        for (int64_t c = 0; c < C; c++) yr[c] = 0.0f;
        for (int32_t iy = y0; iy < y1; iy++)
            for (int32_t ix = x0; ix < x1; ix++) {
                const float *xr = x + ((int64_t)iy * iw + ix) * C;
                for (int64_t c = 0; c < C; c++) yr[c] += xr[c];
            }
        float cnt = (float)((y1 - y0) * (x1 - x0));
        for (int64_t c = 0; c < C; c++) yr[c] /= cnt;
    }
}
