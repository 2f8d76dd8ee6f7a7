/*
 * Products with 16-bit weights used in place: y(M, N) = x(M, K) · w(N, K)ᵀ with w bf16 or
 * f16 exactly as the checkpoint stores it ([out, in], rows contiguous in K), x f32.
 *
 * One micro-kernel shape for every M: a register tile of up to MR rows of x by NR rows of w
 * (8x3 for vdpbf16ps, 4x4 for the f32 FMA tiles), each accumulator a vector of partial dot
 * products along K, reduced at the end.
 * Because the weight rows are already contiguous along K they are the kernel's B panels as
 * they lie in the file (no packed copy of the weights); x is the panel that gets packed
 * (bf16 or bf16-rounded f32, per thread, MC rows at a time) when the numerics ask for it.
 * Every y element is then computed by the same instruction sequence whatever M is and
 * wherever its row sits in the step, so results are batch-invariant bit for bit.
 *
 *   decode (M <= 16): one block of x rows; each thread walks its own range of weight rows
 *     once, every weight row loaded once and used for all M rows (from L1) before the next;
 *   prefill (M > 16): blocks of MC rows of x sized to stay in L2 (MC * row size <=
 *     PX_BYTES), the rows padded apart so they do not share L1 sets (prefill_multi); the
 *     weights are streamed once per block.
 *
 * Numerics: exact = f32 x times widened w (bf16 -> f32 is exact), f32 sums; fast = x rounded
 * to bf16 (nearest even) then bf16 products summed in f32: vdpbf16ps on AVX-512 BF16; on the
 * other ISAs the rounded x times the widened w with f32 FMAs (the same products; only the
 * summation order differs). f16 weights have no bf16 form, so fast mode rounds x and widens w.
 *
 * ISA variants are compiled with target attributes and chosen at run time (cpu_isa_best);
 * CPU_ISA_REF is the plain loop every variant is tested against (tests/ops/test_gemm16.c).
 */
#include "kernels/cpu.h"
#include "kernels/fp.h"

#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MC_BYTES ((int64_t)512 << 10) /* x block per thread: half of a Zen 4 L2 */
#define PX_BYTES ((int64_t)768 << 10) /* prefill x block per thread: 3/4 of a Zen 4 L2 */
#define PX_PAD 256                     /* bytes after each packed prefill x row */
#define ALWAYS static inline __attribute__((always_inline))
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define T_512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define T_BF16 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")))

/* ==== ISA selection ==== */

static const char *const isa_names[CPU_ISA_COUNT] = {"c", "avx2", "avx512", "avx512bf16"};

const char *cpu_isa_name(enum cpu_isa isa)
{
    return isa >= 0 && isa < CPU_ISA_COUNT ? isa_names[isa] : "?";
}

static enum cpu_isa detect(void)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return CPU_ISA_REF;
    unsigned a, b, c, d;
    /* F16C: leaf 1 ecx bit 29 */
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 29))) return CPU_ISA_REF;
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl"))
        return CPU_ISA_AVX2;
    /* AVX512_BF16: leaf 7 subleaf 1, eax bit 5 */
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) return CPU_ISA_AVX512BF16;
    return CPU_ISA_AVX512;
}

enum cpu_isa cpu_isa_best(void)
{
    static enum cpu_isa cached = CPU_ISA_COUNT;
    if (cached != CPU_ISA_COUNT) return cached;
    enum cpu_isa isa = detect();
    const char *cap = getenv("VLM_CPU_ISA"); /* a cap, for benchmarks and tests */
    for (int i = 0; cap && i < CPU_ISA_COUNT; i++)
        if (!strcmp(cap, isa_names[i]) && i < (int)isa) isa = (enum cpu_isa)i;
    cached = isa;
    return isa;
}

enum cpu_isa cpu_matmul_w16_path(enum cpu_isa isa, bool fast)
{
    return isa == CPU_ISA_AVX512BF16 && !fast ? CPU_ISA_AVX512 : isa;
}

/* ==== Scalar helpers ==== */

static inline int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static inline int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static inline float widen(uint16_t h, bool f16)
{
    return f16 ? f16_to_f32(h) : bf16_to_f32(h);
}

static inline float round_bf16(float f)
{
    return bf16_to_f32(f32_to_bf16(f));
}

float cpu_round_bf16(float f)
{
    return round_bf16(f);
}

/* ==== The reference ==== */

static void ref_matmul(float *y, const float *x, const uint16_t *w, bool f16, int64_t M,
                       int64_t N, int64_t K, bool fast)
{
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        for (int64_t m = 0; m < M; m++) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                float xv = fast ? round_bf16(x[m * K + k]) : x[m * K + k];
                s += xv * widen(w[n * K + k], f16);
            }
            y[m * N + n] = s;
        }
    }
}

/* ==== Tiles ====
 * tile(mr, nb): y[i * ldy + j] = dot(x row i, w row j) for i < mr <= MR, j < nb <= NR, over
 * all K. x rows are ldx elements apart, w rows K apart. */

typedef void (*tile_fn)(int mr, int nb, const void *x, int64_t ldx, const uint16_t *w,
                        int64_t K, float *y, int64_t ldy, bool f16, const uint16_t *pf);

/* pf: weight rows this thread will read PF_ROWS rows later (rows K apart, NULL if none):
 * prefetched into L2 line by line at the same k as the loads, so that the next rows arrive
 * while this group's products run. The rows are short (2 KiB at K 1024, 6 KiB at 3072) and
 * read four at a time, and the hardware prefetchers learn a stream too late to keep up with
 * them: at batch 1 the tile read 11-17 GB/s per core without this and 17-22 with it (the
 * plain read of bench_membw: 23-28). L2, not L1: two groups are up to 48 KiB. */
#define PF_HINT _MM_HINT_T1
#define PF_ROWS 8
ALWAYS void prefetch_rows(const int NB, const uint16_t *pf, int64_t K, int64_t k)
{
    if (pf && (k & 31) == 0)
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) _mm_prefetch((const char *)(pf + j * K + k), PF_HINT);
}

#define TILE_SWITCH(body_fn, ...)                                                               \
    switch ((mr - 1) * 4 + (nb - 1)) {                                                        \
    case 0: body_fn(1, 1, __VA_ARGS__); break;                                                \
    case 1: body_fn(1, 2, __VA_ARGS__); break;                                                \
    case 2: body_fn(1, 3, __VA_ARGS__); break;                                                \
    case 3: body_fn(1, 4, __VA_ARGS__); break;                                                \
    case 4: body_fn(2, 1, __VA_ARGS__); break;                                                \
    case 5: body_fn(2, 2, __VA_ARGS__); break;                                                \
    case 6: body_fn(2, 3, __VA_ARGS__); break;                                                \
    case 7: body_fn(2, 4, __VA_ARGS__); break;                                                \
    case 8: body_fn(3, 1, __VA_ARGS__); break;                                                \
    case 9: body_fn(3, 2, __VA_ARGS__); break;                                                \
    case 10: body_fn(3, 3, __VA_ARGS__); break;                                               \
    case 11: body_fn(3, 4, __VA_ARGS__); break;                                               \
    case 12: body_fn(4, 1, __VA_ARGS__); break;                                               \
    case 13: body_fn(4, 2, __VA_ARGS__); break;                                               \
    case 14: body_fn(4, 3, __VA_ARGS__); break;                                               \
    default: body_fn(4, 4, __VA_ARGS__); break;                                               \
    }

/* The vdpbf16ps tile: up to 8 rows of x by 3 weight rows (24 accumulators + 3 weight
 * vectors + 1 x vector of the 32 registers), so a decode step of up to 8 rows loads each
 * weight vector once, 11 loads per 24 products (4x4: 8 per 16, and at 8 rows the weights
 * twice). Batch 8 decode's products gained ~18% per CPU-second, prefill's none (they are
 * at ~80% of the core's vdpbf16ps rate either way). The f32 FMA tiles stay 4x4: with f32 x
 * (twice the bytes) 8x3 lost 10% at 8 rows and a third at prefill. */
#define TILE_SWITCH83(body_fn, ...)                                                             \
    switch ((mr - 1) * 3 + (nb - 1)) {                                                        \
    case 0: body_fn(1, 1, __VA_ARGS__); break;                                                \
    case 1: body_fn(1, 2, __VA_ARGS__); break;                                                \
    case 2: body_fn(1, 3, __VA_ARGS__); break;                                                \
    case 3: body_fn(2, 1, __VA_ARGS__); break;                                                \
    case 4: body_fn(2, 2, __VA_ARGS__); break;                                                \
    case 5: body_fn(2, 3, __VA_ARGS__); break;                                                \
    case 6: body_fn(3, 1, __VA_ARGS__); break;                                                \
    case 7: body_fn(3, 2, __VA_ARGS__); break;                                                \
    case 8: body_fn(3, 3, __VA_ARGS__); break;                                                \
    case 9: body_fn(4, 1, __VA_ARGS__); break;                                                \
    case 10: body_fn(4, 2, __VA_ARGS__); break;                                                \
    case 11: body_fn(4, 3, __VA_ARGS__); break;                                                \
    case 12: body_fn(5, 1, __VA_ARGS__); break;                                                \
    case 13: body_fn(5, 2, __VA_ARGS__); break;                                                \
    case 14: body_fn(5, 3, __VA_ARGS__); break;                                                \
    case 15: body_fn(6, 1, __VA_ARGS__); break;                                                \
    case 16: body_fn(6, 2, __VA_ARGS__); break;                                                \
    case 17: body_fn(6, 3, __VA_ARGS__); break;                                                \
    case 18: body_fn(7, 1, __VA_ARGS__); break;                                                \
    case 19: body_fn(7, 2, __VA_ARGS__); break;                                                \
    case 20: body_fn(7, 3, __VA_ARGS__); break;                                                \
    case 21: body_fn(8, 1, __VA_ARGS__); break;                                                \
    case 22: body_fn(8, 2, __VA_ARGS__); break;                                                \
    default: body_fn(8, 3, __VA_ARGS__); break;                                               \
    }

/* ---- AVX2: 8 lanes, K tail in scalar ---- */

ALWAYS T_AVX2 __m256 avx2_widen(const uint16_t *p, bool f16)
{
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (f16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

ALWAYS T_AVX2 float avx2_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

ALWAYS T_AVX2 void avx2_tile_body(const int MR, const int NB, const float *x, int64_t ldx,
                                  const uint16_t *w, int64_t K, float *y, int64_t ldy, bool f16,
                                  const uint16_t *pf)
{
    __m256 acc[4][4];
    #pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) acc[i][j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        prefetch_rows(NB, pf, K, k);
        __m256 wv[4];
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) wv[j] = avx2_widen(w + j * K + k, f16);
        #pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m256 xv = _mm256_loadu_ps(x + i * ldx + k);
            #pragma GCC unroll 4
            for (int j = 0; j < NB; j++) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
        }
    }
    #pragma GCC unroll 4
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) {
            float t = 0.0f;
            for (int64_t kk = k; kk < K; kk++) t += x[i * ldx + kk] * widen(w[j * K + kk], f16);
            y[i * ldy + j] = avx2_hsum(acc[i][j]) + t;
        }
}

#define AVX2_BODY(a, b, x, ldx, w, K, y, ldy, f16, pf) avx2_tile_body(a, b, x, ldx, w, K, y, ldy, f16, pf)
static T_AVX2 void avx2_tile(int mr, int nb, const void *xv, int64_t ldx, const uint16_t *w,
                             int64_t K, float *y, int64_t ldy, bool f16, const uint16_t *pf)
{
    const float *x = xv;
    if (f16) {
        TILE_SWITCH(AVX2_BODY, x, ldx, w, K, y, ldy, true, pf)
    } else {
        TILE_SWITCH(AVX2_BODY, x, ldx, w, K, y, ldy, false, pf)
    }
}

/* ---- AVX-512: 16 lanes, K tail with masked loads ---- */

ALWAYS T_512 __m512 avx512_widen(const uint16_t *p, __mmask16 m, bool f16)
{
    __m256i h = _mm256_maskz_loadu_epi16(m, p);
    if (f16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

ALWAYS T_512 void avx512_step(const int MR, const int NB, const float *x, int64_t ldx,
                              const uint16_t *w, int64_t K, int64_t k, __mmask16 m, bool f16,
                              __m512 acc[8][4], const uint16_t *pf)
{
    prefetch_rows(NB, pf, K, k);
    __m512 wv[4];
    #pragma GCC unroll 4
    for (int j = 0; j < NB; j++) wv[j] = avx512_widen(w + j * K + k, m, f16);
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
}

ALWAYS T_512 void avx512_tile_body(const int MR, const int NB, const float *x, int64_t ldx,
                                   const uint16_t *w, int64_t K, float *y, int64_t ldy, bool f16,
                                   const uint16_t *pf)
{
    __m512 acc[8][4];
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) avx512_step(MR, NB, x, ldx, w, K, k, 0xffff, f16, acc, pf);
    if (k < K)
        avx512_step(MR, NB, x, ldx, w, K, k, (__mmask16)((1u << (K - k)) - 1), f16, acc, NULL);
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) y[i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]);
}

#define AVX512_BODY(a, b, x, ldx, w, K, y, ldy, f16, pf) avx512_tile_body(a, b, x, ldx, w, K, y, ldy, f16, pf)
static T_512 void avx512_tile(int mr, int nb, const void *xv, int64_t ldx, const uint16_t *w,
                              int64_t K, float *y, int64_t ldy, bool f16, const uint16_t *pf)
{
    const float *x = xv;
    if (f16) {
        TILE_SWITCH(AVX512_BODY, x, ldx, w, K, y, ldy, true, pf)
    } else {
        TILE_SWITCH(AVX512_BODY, x, ldx, w, K, y, ldy, false, pf)
    }
}

/* ---- AVX-512 BF16: x already bf16; 32 k per vdpbf16ps (pairs summed per lane) ---- */

ALWAYS T_BF16 void bf16_step(const int MR, const int NB, const uint16_t *x, int64_t ldx,
                             const uint16_t *w, int64_t K, int64_t k, __mmask32 m,
                             __m512 acc[8][4], const uint16_t *pf)
{
    prefetch_rows(NB, pf, K, k);
    __m512bh wv[4];
    #pragma GCC unroll 4
    for (int j = 0; j < NB; j++) wv[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, w + j * K + k);
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(m, x + i * ldx + k);
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
}

ALWAYS T_BF16 void bf16_tile_body(const int MR, const int NB, const uint16_t *x, int64_t ldx,
                                  const uint16_t *w, int64_t K, float *y, int64_t ldy,
                                  const uint16_t *pf)
{
    __m512 acc[8][4];
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) bf16_step(MR, NB, x, ldx, w, K, k, 0xffffffffu, acc, pf);
    if (k < K) bf16_step(MR, NB, x, ldx, w, K, k, (__mmask32)((1ull << (K - k)) - 1), acc, NULL);
    #pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
        #pragma GCC unroll 4
        for (int j = 0; j < NB; j++) y[i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]);
}

#define BF16_BODY(a, b, x, ldx, w, K, y, ldy, pf) bf16_tile_body(a, b, x, ldx, w, K, y, ldy, pf)
static T_BF16 void bf16_tile(int mr, int nb, const void *xv, int64_t ldx, const uint16_t *w,
                             int64_t K, float *y, int64_t ldy, bool f16, const uint16_t *pf)
{
    (void)f16;
    const uint16_t *x = xv;
    TILE_SWITCH83(BF16_BODY, x, ldx, w, K, y, ldy, pf)
}

/* x rows -> bf16 with vcvtne2ps2bf16 (nearest even; the instruction treats subnormal inputs
 * as zero, the only place it differs from f32_to_bf16), the row's tail masked, so a value's
 * conversion never depends on where its row sits in the block. */
static T_BF16 void bf16_pack_rows(uint16_t *dst, const float *src, int64_t rows, int64_t K)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *s = src + r * K;
        uint16_t *d = dst + r * K;
        for (int64_t k = 0; k < K; k += 32) {
            int64_t n = K - k < 32 ? K - k : 32;
            __mmask16 lo = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
            __mmask16 hi = (__mmask16)(n >= 32 ? 0xffff : n > 16 ? (1u << (n - 16)) - 1 : 0);
            __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, s + k + 16),
                                             _mm512_maskz_loadu_ps(lo, s + k));
            _mm512_mask_storeu_epi16(d + k, (__mmask32)(n >= 32 ? 0xffffffffu : (1u << n) - 1),
                                     (__m512i)v);
        }
    }
}

/* ==== The driver ==== */

int64_t cpu_matmul_w16_scratch(int64_t K)
{
    /* per thread: at least 16 rows of x as f32 (one decode block), MC_BYTES, PX_BYTES */
    return max64(max64(MC_BYTES, PX_BYTES), 16 * K * 4);
}

/* The weight rows of n products numbered as one sequence of groups of NR rows, product after
 * product: first[q] is product q's first group; returns the number of groups. */
static int64_t number_groups(const struct cpu_w16_product *p, int n_products, int NR,
                             int64_t *first)
{
    first[0] = 0;
    for (int q = 0; q < n_products; q++) first[q + 1] = first[q] + (p[q].N + NR - 1) / NR;
    return first[n_products];
}

/* Prefill (M > 16): each thread packs MC rows of x at a time (MC * row size <= PX_BYTES,
 * so the block stays in L2) and walks its weight-row groups, each group against every tile
 * of the block. The packed rows are ldx = K + PX_PAD / element size apart, not K: at the 8B
 * decoder's K (4096, 12 288: rows of 8 or 24 KiB in bf16, 16 or 48 KiB in f32) rows K apart
 * start in the same L1 set (Zen 4: 64 sets of 64 bytes, 8 ways), so a tile's 8 x rows and 3
 * weight rows (11 loads per step, all at the same k) fought over 8 ways and the 8x3 tile
 * ran at 2/3 of its K-1024 rate; shifted by PX_PAD the x rows fall in different sets
 * (bench_gemm16 --shapes 8b, docs/PERF.md "8 B prefill: K-blocking"). The weight rows stay
 * where they are (3 or 4 ways of one set). Exact mode copies x (f32) into the padded block
 * for the same reason. Blocking K (the tiles' accumulators stored between K blocks of 1024,
 * which keeps every sum's order) was tried first and was slower: 117 GFLOP/s per CPU-second
 * at K 4096 on unpadded rows (the old loop: 126), 162 on padded rows (this: 186).
 * The rows PF_ROWS ahead are prefetched during a group's last tile, not its first as in
 * decode: from the first, at K 12 288 (3 tiles of 8 rows, 192 KiB of x each), they were
 * partly gone from L2 by the time they were used (down 170 -> 187 GFLOP/s per CPU-second).
 * The tile calls, and so every y element's arithmetic, are those of the decode path. */
static void prefill_multi(const struct cpu_w16_product *p, int n_products, const float *x,
                          bool w_f16, int64_t M, int64_t K, bool bf, bool rnd, enum cpu_isa isa,
                          void *scratch, int n_threads)
{
    tile_fn tile = bf ? bf16_tile : isa == CPU_ISA_AVX2 ? avx2_tile : avx512_tile;
    int64_t esz = bf ? 2 : 4, per_thread = cpu_matmul_w16_scratch(K);
    int MR = bf ? 8 : 4, NR = bf ? 3 : 4;
    int64_t ldx = K + PX_PAD / esz;
    int64_t MC = max64(MR, PX_BYTES / (ldx * esz) / MR * MR);
    int64_t pf_groups = (PF_ROWS + NR - 1) / NR;
    int64_t first[CPU_W16_MAX_PRODUCTS + 1];
    int64_t n_groups = number_groups(p, n_products, NR, first);
    int nt = (int)min64(max64(1, n_threads), max64(1, n_groups));
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t g0 = n_groups * t / T, g1 = n_groups * (t + 1) / T;
        char *buf = (char *)scratch + (size_t)t * (size_t)per_thread;
        for (int64_t m0 = 0; m0 < M && g0 < g1; m0 += MC) {
            int64_t mc = min64(MC, M - m0);
            const float *xs = x + m0 * K;
            const void *xb = buf;
            if (bf) {
                for (int64_t i = 0; i < mc; i++)
                    bf16_pack_rows((uint16_t *)buf + i * ldx, xs + i * K, 1, K);
            } else {
                float *pr = (float *)buf;
                for (int64_t i = 0; i < mc; i++)
                    for (int64_t k = 0; k < K; k++)
                        pr[i * ldx + k] = rnd ? round_bf16(xs[i * K + k]) : xs[i * K + k];
            }
            int q = 0;
            for (int64_t g = g0; g < g1; g++) {
                while (first[q + 1] <= g) q++;
                int64_t N = p[q].N, n = (g - first[q]) * NR;
                const uint16_t *w = p[q].w + n * K;
                int nb = (int)min64(NR, N - n);
                const uint16_t *next =
                    g + pf_groups < min64(g1, first[q + 1]) ? w + NR * pf_groups * K : NULL;
                for (int64_t i = 0; i < mc; i += MR) {
                    const char *xt = (const char *)xb + (size_t)(i * ldx * esz);
                    tile((int)min64(MR, mc - i), nb, xt, ldx, w, K, p[q].y + (m0 + i) * N + n, N,
                         w_f16, i + MR >= mc ? next : NULL);
                }
            }
        }
    }
}

/* The products' weight-row groups are numbered one after the other (product 0's groups, then
 * product 1's, ...) and each thread takes one contiguous range of that numbering, so the
 * products of one x share one parallel region (one fork/join) and one packing of x. A y
 * element is computed by the same tile call as in a product of its own: its group, and so
 * its tile shape, is the same. */
void cpu_matmul_w16_multi(const struct cpu_w16_product *p, int n_products, const float *x,
                          bool w_f16, int64_t M, int64_t K, bool fast, enum cpu_isa isa,
                          void *scratch, int n_threads)
{
    if (isa == CPU_ISA_REF) {
        for (int q = 0; q < n_products; q++)
            ref_matmul(p[q].y, x, p[q].w, w_f16, M, p[q].N, K, fast);
    } else if (M > 16) {
        bool bf = fast && !w_f16 && isa == CPU_ISA_AVX512BF16;
        prefill_multi(p, n_products, x, w_f16, M, K, bf, fast && !bf, isa, scratch, n_threads);
    } else {
        bool bf = fast && !w_f16 && isa == CPU_ISA_AVX512BF16; /* x packed as bf16 */
        bool rnd = fast && !bf;                                /* x packed, rounded f32 */
        tile_fn tile = bf ? bf16_tile : isa == CPU_ISA_AVX2 ? avx2_tile : avx512_tile;
        int64_t esz = bf ? 2 : 4, per_thread = cpu_matmul_w16_scratch(K);
        int64_t MC = max64(16, MC_BYTES / (K * esz));
        MC = min64(MC, per_thread / (K * esz));
        /* the register tile: MR rows of x by NR weight rows (a group). At M = 1 on the
         * AVX-512 tiles a group is one weight row and nothing is prefetched: each thread then
         * reads its range as one sequential stream, which the hardware prefetcher follows;
         * three interleaved rows with the software prefetch read 39-44 GB/s per CPU-second
         * at 2 threads and one row 45-52 (bf16; exact level to +10%). AVX2's 8-lane chain
         * of FMAs into one accumulator is too slow for that (30 against 37-44). At M >= 2
         * one row per group loses (M 3: 26-28 against 31-39), the x loads being per row. A
         * y element's sums are the same whatever the group, so the bits do not change. */
        bool row1 = M == 1 && isa != CPU_ISA_AVX2;
        int MR = bf ? 8 : 4, NR = row1 ? 1 : bf ? 3 : 4;
        int64_t pf_groups = (PF_ROWS + NR - 1) / NR;
        int64_t first[CPU_W16_MAX_PRODUCTS + 1]; /* first[q]: product q's first group */
        int64_t n_groups = number_groups(p, n_products, NR, first);
        int nt = (int)min64(max64(1, n_threads), max64(1, n_groups));
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            int64_t g0 = n_groups * t / T, g1 = n_groups * (t + 1) / T;
            char *buf = (char *)scratch + (size_t)t * (size_t)per_thread;
            for (int64_t m0 = 0; m0 < M; m0 += MC) {
                int64_t mc = min64(MC, M - m0);
                const float *xs = x + m0 * K;
                const void *xb = xs;
                if (g0 >= g1) break;
                if (bf) {
                    bf16_pack_rows((uint16_t *)buf, xs, mc, K);
                    xb = buf;
                } else if (rnd) {
                    float *pr = (float *)buf;
                    for (int64_t i = 0; i < mc * K; i++) pr[i] = round_bf16(xs[i]);
                    xb = pr;
                }
                int q = 0;
                while (first[q + 1] <= g0) q++;
                for (int64_t g = g0; g < g1; g++) {
                    while (first[q + 1] <= g) q++;
                    int64_t N = p[q].N, n = (g - first[q]) * NR;
                    const uint16_t *w = p[q].w;
                    int nb = (int)min64(NR, N - n);
                    const uint16_t *next = !row1 && g + pf_groups < min64(g1, first[q + 1])
                                               ? w + (n + NR * pf_groups) * K
                                               : NULL;
                    for (int64_t i = 0; i < mc; i += MR) {
                        int mr = (int)min64(MR, mc - i);
                        tile(mr, nb, (const char *)xb + (size_t)(i * K * esz), K, w + n * K, K,
                             p[q].y + (m0 + i) * N + n, N, w_f16, i == 0 ? next : NULL);
                    }
                }
            }
        }
    }
    for (int q = 0; q < n_products; q++)
        if (p[q].bias)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < p[q].N; n++) p[q].y[m * p[q].N + n] += p[q].bias[n];
}

void cpu_matmul_w16(float *y, const float *x, const uint16_t *w, bool w_f16, const float *bias,
                    int64_t M, int64_t N, int64_t K, bool fast, enum cpu_isa isa, void *scratch,
                    int n_threads)
{
    struct cpu_w16_product p = {.y = y, .w = w, .bias = bias, .N = N};
    cpu_matmul_w16_multi(&p, 1, x, w_f16, M, K, fast, isa, scratch, n_threads);
}
