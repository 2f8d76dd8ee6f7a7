/* Matrix products with f32 weights: OpenBLAS sgemm, row-major, weights stored [out, in].
 * OpenBLAS runs single-threaded (cpu_set_blas_threads(1)) on each OpenMP thread's slice of
 * the weight rows, so one pool owns the cores (docs/PERF.md, "CPU products"). */
#include "kernels/cpu.h"

#include <cblas.h>
#include <omp.h>

void cpu_set_blas_threads(int n)
{
    openblas_set_num_threads(n);
}

void cpu_matmul(float *y, const float *x, const float *w, const float *bias, int64_t M, int64_t N,
                int64_t K, int n_threads)
{
    /* slices of 64 weight rows (whole cache lines of y, no false sharing) */
    int64_t n_slices = (N + 63) / 64;
    int nt = (int)(n_slices < n_threads ? n_slices : n_threads);
#pragma omp parallel num_threads(nt > 0 ? nt : 1)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t n0 = n_slices * t / T * 64, n1 = n_slices * (t + 1) / T * 64;
        if (n1 > N) n1 = N;
        if (n0 < n1) {
            int nn = (int)(n1 - n0);
            if (M == 1)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, nn, (int)K, 1.0f, w + n0 * K, (int)K, x,
                            1, 0.0f, y + n0, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, nn, (int)K, 1.0f, x,
                            (int)K, w + n0 * K, (int)K, 0.0f, y + n0, (int)N);
        }
    }
    if (bias) {
        for (int64_t m = 0; m < M; m++) {
            float *row = y + m * N;
            for (int64_t n = 0; n < N; n++) row[n] += bias[n];
        }
    }
}
