/* Elementwise activations and adds. */
#include "kernels/cpu.h"

#include <math.h>

void cpu_add(float *y, const float *a, const float *b, int64_t n)
{
#pragma omp parallel for simd if (n > 65536)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void cpu_silu_mul(float *y, const float *g, const float *u, int64_t n)
{
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float x = g[i];
        y[i] = x / (1.0f + expf(-x)) * u[i];
    }
}

void cpu_gelu_erf(float *y, const float *x, int64_t n)
{
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

void cpu_quick_gelu(float *y, const float *x, int64_t n)
{
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}
