/* RMS norm and LayerNorm, one row per iteration, statistics in double for a stable reference. */
#include "kernels/cpu.h"

#include <math.h>

void cpu_rmsnorm(float *y, const float *x, const float *w, int64_t rows, int64_t dim, float eps)
{
#pragma omp parallel for if (rows > 16)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        float ss = 0.0f;
        for (int64_t d = 0; d < dim; d++) ss += xr[d] * xr[d];
        /* torch: x * rsqrt(mean(x²) + eps), in f32 */
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int64_t d = 0; d < dim; d++) yr[d] = w[d] * (xr[d] * inv);
    }
}

void cpu_layernorm(float *y, const float *x, const float *w, const float *b, int64_t rows,
                   int64_t dim, float eps)
{
#pragma omp parallel for if (rows > 16)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        float mean = 0.0f, var = 0.0f;
        for (int64_t d = 0; d < dim; d++) mean += xr[d];
        mean /= (float)dim;
        for (int64_t d = 0; d < dim; d++) var += (xr[d] - mean) * (xr[d] - mean);
        var /= (float)dim;
        float inv = 1.0f / sqrtf(var + eps);
        for (int64_t d = 0; d < dim; d++) yr[d] = (xr[d] - mean) * inv * w[d] + b[d];
    }
}
