/*
 * bench_gemm16: the 16-bit-weight products (kernels/cpu/gemm16.c) at the 0.6B decoder's
 * shapes, per ISA variant and numerics, next to OpenBLAS sgemm on an f32 copy of the same
 * weights: GFLOP/s and GB/s of weight bytes. Random bf16 weights (never zeros). On a shared
 * machine wall time counts time other processes held the cores, so each figure is given
 * from the best wall time and from process CPU time (CPU-s / threads). Asserts nothing.
 *
 * --stream MIB: the decode case as the engine sees it. The weights are MIB of bf16 (far more
 * than the caches hold: 1200 is one 0.6B token's worth), cut into consecutive matrices of the
 * 0.6B layer's shapes in layer order (qkv, o, gate+up, down; the lm_head slice last), and one
 * pass of products walks all of them once at the given M, so every weight byte comes from
 * memory, as in a decode step. Prints weight GB/s by wall time and per CPU-second, and the
 * pass time; compare with bench_membw. The first M's rows start with "read": a plain read of the
 * same bytes, matrix by matrix, each thread its contiguous share (what the products could
 * reach).
 *
 * --shapes 8b: the 8B decoder's shapes instead (hidden 4096, 32/8 heads x 128, ffn 12288):
 * qkv N 6144 K 4096, o N 4096 K 4096, gate+up N 24576 K 4096, down N 4096 K 12288. The
 * f32 copy for sgemm is not made at these sizes (0.4 GB per matrix); sgemm is left out.
 *
 *   bench_gemm16 [--threads T (all cores)] [--m M,M,... (1,8,512)] [--stream MIB]
 *                [--shapes 0.6b|8b] [--only VARIANT (e.g. "avx512bf16 fast")] [--runs R (5)]
 */
#include "engine/base.h"
#include "kernels/cpu.h"

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

struct shape {
    const char *name;
    int64_t N, K;
};

/* The plain read the products are compared with: each of the threads sums its contiguous
 * share of w[0, n) with 256-bit loads into four independent sums (as bench_membw), in one
 * parallel region per matrix, as the products have. */
__attribute__((target("avx2"))) static uint64_t read_range(const uint16_t *w, int64_t a,
                                                            int64_t b)
{
    int64_t i = a;
    uint64_t total = 0;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (; i + 64 <= b; i += 64) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(w + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(w + i + 16)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(w + i + 32)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(w + i + 48)));
    }
    uint64_t out[4];
    _mm256_storeu_si256((__m256i *)out,
                        _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
    total += out[0] + out[1] + out[2] + out[3];
    for (; i < b; i++) total += w[i];
    return total;
}

/* (the region itself is plain code: an OpenMP region outlined from an AVX2 function is not
 * compiled for AVX2 by clang) */
static uint64_t read_part(const uint16_t *w, int64_t n, int threads)
{
    uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t a = n * t / T / 64 * 64, b = t == T - 1 ? n : n * (t + 1) / T / 64 * 64;
        total += read_range(w, a, b);
    }
    return total;
}

static int stream(int64_t mib, const int64_t *Ms, int nM, int threads)
{
    static const struct shape layer[] = {{"qkv", 4096, 1024}, {"o", 1024, 2048},
                                         {"gate+up", 6144, 1024}, {"down", 1024, 3072}};
    int64_t n = mib << 19, K = 3072, maxM = 16; /* bf16 elements */
    uint16_t *w = NULL;
    if (posix_memalign((void **)&w, 64, (size_t)n * 2)) return 1;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) w[i] = f32_to_bf16((float)((i * 7919) % 1000) * 1e-3f - 0.5f);
    float *x = xmalloc((size_t)(maxM * K) * 4), *y = xmalloc((size_t)maxM * 151936 * 4);
    for (int64_t i = 0; i < maxM * K; i++) x[i] = (float)((i * 31) % 1000) * 1e-3f - 0.5f;
    void *scratch = NULL;
    if (posix_memalign(&scratch, 64, (size_t)threads * (size_t)cpu_matmul_w16_scratch(K))) return 1;
    enum cpu_isa best = cpu_isa_best();
    uint64_t check = 0;
    printf("%d threads; %lld MiB of bf16 weights streamed per pass; kernels up to %s\n", threads,
           (long long)mib, cpu_isa_name(best));
    printf("%4s  %-16s %9s %9s %10s %10s\n", "M", "variant", "GB/s", "(CPU)", "ms/pass",
           "products");
    for (int mi = 0; mi < nM; mi++) {
        int64_t M = Ms[mi];
        if (M > maxM) continue;
        /* v = -1 (first M only): the plain read of the same bytes; else isa = v / 2, fast = v % 2 */
        for (int v = mi == 0 ? -1 : 2 * (int)CPU_ISA_AVX2; v < 2 * (int)best + 2; v++) {
            if (v >= 0 && v < 2 * (int)CPU_ISA_AVX2) continue;
            enum cpu_isa isa = (enum cpu_isa)(v / 2);
            bool fast = v % 2;
            if (v >= 0 && isa == CPU_ISA_AVX512BF16 && !fast) continue; /* exact: avx512 */
            double bw = 1e30, bc = 1e30;
            int64_t calls = 0;
            for (int r = 0; r < 5; r++) {
                double t0 = (double)vlm_now_ns() * 1e-9, c0 = cpu_s();
                int64_t off = 0;
                calls = 0;
                for (int64_t l = 0;; l = (l + 1) % 4, calls++) {
                    int64_t N = layer[l].N, Kl = layer[l].K;
                    if (off + N * Kl > n) break;
                    if (v < 0) check += read_part(w + off, N * Kl, threads);
                    else cpu_matmul_w16(y, x, w + off, false, NULL, M, N, Kl, fast, isa, scratch, threads);
                    off += N * Kl;
                }
                if (n - off >= 1024 * 16) { /* the rest as one lm_head-shaped product */
                    if (v < 0) check += read_part(w + off, (n - off) / 1024 * 1024, threads);
                    else cpu_matmul_w16(y, x, w + off, false, NULL, M, (n - off) / 1024, 1024,
                                        fast, isa, scratch, threads);
                    calls++;
                }
                bw = VLM_MIN(bw, (double)vlm_now_ns() * 1e-9 - t0);
                bc = VLM_MIN(bc, (cpu_s() - c0) / threads);
            }
            char name[32];
            if (v < 0) snprintf(name, sizeof name, "read");
            else snprintf(name, sizeof name, "%s %s", cpu_isa_name(isa), fast ? "fast" : "exact");
            printf("%4lld  %-16s %9.1f %9.1f %10.1f %10lld\n", (long long)M, name,
                   (double)n * 2 / bw * 1e-9, (double)n * 2 / bc * 1e-9, bw * 1e3,
                   (long long)calls);
        }
    }
    printf("(checksum of the reads: %llx)\n", (unsigned long long)check);
    free(scratch), free(w), free(x), free(y);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = omp_get_num_procs();
    int64_t Ms[8] = {1, 8, 512};
    int nM = 3;
    int64_t stream_mib = 0;
    bool big = false;
    const char *only = NULL;
    int runs = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--stream")) stream_mib = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--shapes")) big = !strcmp(argv[i + 1], "8b");
        else if (!strcmp(argv[i], "--only")) only = argv[i + 1];
        else if (!strcmp(argv[i], "--runs")) runs = VLM_MAX(1, atoi(argv[i + 1]));
        else if (!strcmp(argv[i], "--m")) {
            nM = 0;
            for (char *p = argv[i + 1]; *p && nM < 8;) {
                Ms[nM++] = strtol(p, &p, 10);
                if (*p == ',') p++;
            }
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    cpu_set_blas_threads(1);
    if (stream_mib > 0) return stream(stream_mib, Ms, nM, threads);
    static const struct shape small[] = {
        {"qkv", 4096, 1024}, {"o", 1024, 2048}, {"gate+up", 6144, 1024}, {"down", 1024, 3072}};
    static const struct shape large[] = {
        {"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate+up", 24576, 4096}, {"down", 4096, 12288}};
    const struct shape *shapes = big ? large : small;
    int64_t maxNK = big ? 24576 * 4096 : 6144 * 1024, maxM = 512, maxK = big ? 12288 : 3072;
    int64_t maxN = big ? 24576 : 6144;
    uint16_t *w = xmalloc((size_t)maxNK * 2);
    float *w32 = big ? NULL : xmalloc((size_t)maxNK * 4), *x = xmalloc((size_t)(maxM * maxK) * 4);
    float *y = xmalloc((size_t)(maxM * maxN) * 4);
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < maxNK; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        w[i] = f32_to_bf16((float)(s >> 40) / 16777216.0f - 0.5f);
        if (w32) w32[i] = bf16_to_f32(w[i]);
    }
    for (int64_t i = 0; i < maxM * maxK; i++) x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    void *scratch = NULL;
    if (posix_memalign(&scratch, 64, (size_t)threads * (size_t)cpu_matmul_w16_scratch(maxK))) return 1;
    enum cpu_isa best = cpu_isa_best();
    printf("%d threads; kernels up to %s\n", threads, cpu_isa_name(best));
    printf("%-8s %4s %5s %5s  %-16s %9s %9s %8s\n", "shape", "M", "N", "K", "variant",
           "GFLOP/s", "(CPU)", "GB/s w");
    for (int mi = 0; mi < nM; mi++)
        for (size_t si = 0; si < ARRAY_LEN(small); si++) {
            int64_t M = Ms[mi], N = shapes[si].N, K = shapes[si].K;
            if (M > maxM) continue;
            double flop = 2.0 * (double)(M * N * K);
            int reps = (int)VLM_MAX(1, VLM_MIN(200, 1e9 / flop));
            for (int v = w32 ? -1 : 0; v < 2 * (int)best; v++) {
                /* v = -1: sgemm; else isa = 1 + v / 2, fast = v % 2 */
                enum cpu_isa isa = (enum cpu_isa)(1 + v / 2);
                bool fast = v >= 0 && v % 2;
                char name[32];
                if (v < 0) snprintf(name, sizeof name, "sgemm f32");
                else snprintf(name, sizeof name, "%s %s", cpu_isa_name(isa), fast ? "fast" : "exact");
                if (only && strcmp(only, name)) continue;
                double bw = 1e30, bc = 1e30;
                for (int r = 0; r < runs; r++) {
                    double t0 = (double)vlm_now_ns() * 1e-9, c0 = cpu_s();
                    for (int i = 0; i < reps; i++) {
                        if (v < 0) cpu_matmul(y, x, w32, NULL, M, N, K, threads);
                        else cpu_matmul_w16(y, x, w, false, NULL, M, N, K, fast, isa, scratch, threads);
                    }
                    bw = VLM_MIN(bw, ((double)vlm_now_ns() * 1e-9 - t0) / reps);
                    bc = VLM_MIN(bc, (cpu_s() - c0) / reps / threads);
                }
                double wb = (double)(N * K) * (v < 0 ? 4 : 2);
                printf("%-8s %4lld %5lld %5lld  %-16s %9.1f %9.1f %8.1f\n", shapes[si].name,
                       (long long)M, (long long)N, (long long)K, name, flop / bw * 1e-9,
                       flop / bc * 1e-9, wb / bw * 1e-9);
            }
        }
    free(scratch), free(w), free(w32), free(x), free(y);
    return 0;
}
