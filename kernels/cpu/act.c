/* Elementwise activations and adds, and the row softmax. */
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

void cpu_gelu_tanh(float *y, const float *x, int64_t n)
{
    const float k = 0.7978845608028654f; /* √(2/π) */
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void cpu_softmax_rows(float *y, const float *x, int64_t rows, int64_t dim)
{
#pragma omp parallel for if (rows * dim > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        float mx = -INFINITY, sum = 0.0f;
        for (int64_t i = 0; i < dim; i++) mx = fmaxf(mx, xr[i]);
        for (int64_t i = 0; i < dim; i++) {
            float e = expf(xr[i] - mx);
            yr[i] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
        for (int64_t i = 0; i < dim; i++) yr[i] *= inv;
    }
}
