/* Matrix products: OpenBLAS sgemm, row-major, weights stored [out, in]. */
#include "kernels/cpu.h"

#include <cblas.h>

void cpu_set_blas_threads(int n)
{
    openblas_set_num_threads(n);
}

void cpu_matmul(float *y, const float *x, const float *w, const float *bias, int64_t M, int64_t N,
                int64_t K)
{
    if (M == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)N, (int)K, 1.0f, w, (int)K, x, 1, 0.0f, y, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x,
                    (int)K, w, (int)K, 0.0f, y, (int)N);
    }
    if (bias) {
        for (int64_t m = 0; m < M; m++) {
            float *row = y + m * N;
            for (int64_t n = 0; n < N; n++) row[n] += bias[n];
        }
    }
}
