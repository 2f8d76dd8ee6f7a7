/*
 * bench_membw: the machine's memory read bandwidth, the floor of batch-1 decode (every
 * weight byte is read once per token: decode can run no faster than weight bytes ÷ this).
 * Each of T OpenMP threads sums its own contiguous part of a buffer much larger than the
 * caches (256-bit loads, four independent sums); bytes read ÷ wall time, best and median of
 * the repeats, and per CPU-second (bytes ÷ (process CPU time ÷ T): what T cores read while
 * they run, the figure that holds up when other processes share the machine). Prints
 * figures, asserts nothing.
 *
 *   bench_membw [--mib N (1024)] [--threads T (all cores)] [--reps R (15)]
 */
#include "engine/base.h"

#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

__attribute__((target("avx2"))) static uint64_t sum_part(const uint64_t *p, size_t n)
{
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(p + i + 4)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(p + i + 8)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out, s);
    uint64_t t = out[0] + out[1] + out[2] + out[3];
    for (; i < n; i++) t += p[i];
    return t;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    size_t mib = 1024;
    int threads = omp_get_num_procs(), reps = 15;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mib")) mib = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    if (mib < 64 || threads < 1 || reps < 1 || reps > 1000) {
        fprintf(stderr, "usage: bench_membw [--mib N >= 64] [--threads T] [--reps R]\n");
        return 2;
    }
    size_t n = mib << 17; /* uint64 words */
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 64, n * sizeof *buf)) return 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9e3779b97f4a7c15ull; /* first touch per thread */
    double *gbs = xmalloc((size_t)reps * sizeof *gbs), *gbc = xmalloc((size_t)reps * sizeof *gbc);
    uint64_t check = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t total = 0;
        double t0 = (double)vlm_now_ns(), c0 = cpu_s();
#pragma omp parallel num_threads(threads) reduction(+ : total)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            size_t a = n * (size_t)t / (size_t)T / 16 * 16, b = n * (size_t)(t + 1) / (size_t)T / 16 * 16;
            if (t == T - 1) b = n;
            total += sum_part(buf + a, b - a);
        }
        gbs[r] = (double)(n * sizeof *buf) / ((double)vlm_now_ns() - t0);
        gbc[r] = (double)(n * sizeof *buf) * 1e-9 / ((cpu_s() - c0) / threads);
        check += total;
    }
    qsort(gbs, (size_t)reps, sizeof *gbs, cmp_d);
    qsort(gbc, (size_t)reps, sizeof *gbc, cmp_d);
    printf("read bandwidth, %zu MiB, %d threads: best %.1f GB/s, median %.1f GB/s; per "
           "CPU-second best %.1f GB/s, median %.1f GB/s (%d runs; checksum %llx)\n",
           mib, threads, gbs[reps - 1], gbs[reps / 2], gbc[reps - 1], gbc[reps / 2], reps,
           (unsigned long long)check);
    free(gbs);
    free(gbc);
    free(buf);
    return 0;
}
