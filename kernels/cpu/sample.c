/* The sample_summary reference: one row per iteration, the loops of engine/sampler.c. */
#include "kernels/cpu.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MASK_X86 1
#else
#define MASK_X86 0
#endif

/* a ranks before b: larger value, then lower id (sampler.c's order) */
static inline int ranks_before(float va, int32_t a, float vb, int32_t b)
{
    return va > vb || (va == vb && a < b);
}

static void summarize_row(struct sample_summary *p, const float *l, int32_t V, float inv_t,
                          double u)
{
    /* greedy: the first maximum */
    p->argmax = cpu_argmax(l, V, cpu_isa_best());
    if (inv_t < 0.0f) { /* the greedy token alone (kernels/sample.h) */
        int32_t a = p->argmax;
        memset(p, 0, sizeof *p);
        p->argmax = a;
        p->max = l[a];
        p->token = -1;
        p->next_v = -INFINITY;
        return;
    }

    /* raw log-sum-exp, as sampler.c's fill_logprobs */
    float mx = -INFINITY;
    for (int32_t i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    p->max = mx;
    double s = 0.0;
    for (int32_t i = 0; i < V; i++) s += exp((double)l[i] - mx);
    p->lse = mx + log(s);

    /* the K + 1 best by insertion into a sorted list (few insertions on real rows): K
     * candidates and the bound on the rest */
    int32_t ids[SAMPLE_SUMMARY_K + 1];
    float vs[SAMPLE_SUMMARY_K + 1];
    int32_t K = V <= SAMPLE_SUMMARY_K ? V : SAMPLE_SUMMARY_K + 1, n = 0;
    for (int32_t i = 0; i < V; i++) {
        float v = l[i];
        if (n == K && !ranks_before(v, i, vs[n - 1], ids[n - 1])) continue;
        int32_t j = n < K ? n++ : n - 1;
        while (j > 0 && ranks_before(v, i, vs[j - 1], ids[j - 1])) {
            ids[j] = ids[j - 1];
            vs[j] = vs[j - 1];
            j--;
        }
        ids[j] = i;
        vs[j] = v;
    }
    p->n_top = K <= SAMPLE_SUMMARY_K ? K : SAMPLE_SUMMARY_K;
    memcpy(p->top_ids, ids, (size_t)p->n_top * sizeof *ids);
    memcpy(p->top_v, vs, (size_t)p->n_top * sizeof *vs);
    p->next_v = K > SAMPLE_SUMMARY_K ? vs[SAMPLE_SUMMARY_K] : -INFINITY;
    p->pad = 0;

    p->token = -1;
    p->token_logit = 0.0f;
    p->total = 0.0;
    p->n_alive = 0;
    if (!(inv_t > 0.0f)) return;
    /* the untruncated draw of sampler_sample: same float ops, same order */
    float wmx = -INFINITY;
    for (int32_t i = 0; i < V; i++) {
        float w = l[i] * inv_t;
        wmx = w > wmx ? w : wmx;
    }
    double total = 0.0;
    int32_t alive = 0;
    for (int32_t i = 0; i < V; i++) {
        float w = l[i] * inv_t, pr = expf(w - wmx);
        total += pr;
        alive += pr > 0.0f;
    }
    double target = u * total, cum = 0.0;
    int32_t tok = -1;
    for (int32_t i = 0; i < V; i++) {
        float w = l[i] * inv_t, pr = expf(w - wmx);
        if (pr <= 0.0f) continue;
        cum += pr;
        tok = i;
        if (cum > target) break;
    }
    p->total = total;
    p->n_alive = alive;
    p->token = tok;
    p->token_logit = tok >= 0 ? l[tok] : 0.0f;
}

void cpu_sample_summary(struct sample_summary *out, const float *logits, int64_t n_rows,
                        int64_t vocab, int64_t stride, const float *inv_t, const double *u)
{
#pragma omp parallel for if (n_rows > 1)
    for (int64_t r = 0; r < n_rows; r++)
        summarize_row(&out[r], logits + r * stride, (int32_t)vocab, inv_t[r], u[r]);
}

/* ==== Greedy: the first maximum ==== */

#if MASK_X86
/* the largest value (NaN never counts), then the first index holding it: two passes with no
 * loop-carried dependence through memory, where `if (l[i] > l[best]) best = i` waits for a
 * load per element */
__attribute__((target("avx512f"))) static int32_t argmax_avx512(const float *l, int32_t n)
{
    __m512 m0 = _mm512_set1_ps(l[0]), m1 = m0, m2 = m0, m3 = m0;
    int32_t i = 0;
    for (; i + 64 <= n; i += 64) {
        /* max_ps(x, m) = x > m ? x : m: a NaN x leaves m */
        m0 = _mm512_max_ps(_mm512_loadu_ps(l + i), m0);
        m1 = _mm512_max_ps(_mm512_loadu_ps(l + i + 16), m1);
        m2 = _mm512_max_ps(_mm512_loadu_ps(l + i + 32), m2);
        m3 = _mm512_max_ps(_mm512_loadu_ps(l + i + 48), m3);
    }
    float mx = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
    for (; i < n; i++) mx = l[i] > mx ? l[i] : mx;
    const __m512 vm = _mm512_set1_ps(mx);
    for (i = 0; i + 16 <= n; i += 16) {
        __mmask16 eq = _mm512_cmp_ps_mask(_mm512_loadu_ps(l + i), vm, _CMP_EQ_OQ);
        if (eq) return i + __builtin_ctz(eq);
    }
    for (; i < n; i++)
        if (l[i] == mx) return i;
    return 0;
}
#endif

int32_t cpu_argmax(const float *l, int32_t n, enum cpu_isa isa)
{
#if MASK_X86
    /* a NaN first element: no comparison is true and the loop below keeps 0 */
    if (isa >= CPU_ISA_AVX512 && n >= 64 && l[0] == l[0]) return argmax_avx512(l, n);
#else
    (void)isa;
#endif
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

/* ==== Token masks (structured outputs) ==== */

/* one 32-token word: the reference, and the tail of every variant */
static void mask_word_ref(float *p, uint32_t m, int32_t n)
{
    for (int32_t b = 0; b < n; b++)
        if (!(m >> b & 1)) p[b] = -INFINITY;
}

#if MASK_X86
__attribute__((target("avx512f"))) static void mask_row_avx512(float *row, const uint32_t *mask,
                                                                int32_t full)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int32_t w = 0; w < full; w++) {
        uint32_t m = mask[w];
        if (m == 0xFFFFFFFFu) continue;
        float *p = row + (size_t)w * 32;
        /* a clear bit keeps -inf: the blend takes the row where the bit is set */
        _mm512_storeu_ps(p, _mm512_mask_mov_ps(ninf, (__mmask16)(m & 0xFFFFu), _mm512_loadu_ps(p)));
        _mm512_storeu_ps(p + 16, _mm512_mask_mov_ps(ninf, (__mmask16)(m >> 16), _mm512_loadu_ps(p + 16)));
    }
}

__attribute__((target("avx2"))) static void mask_row_avx2(float *row, const uint32_t *mask,
                                                           int32_t full)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256i shift = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    for (int32_t w = 0; w < full; w++) {
        uint32_t m = mask[w];
        if (m == 0xFFFFFFFFu) continue;
        float *p = row + (size_t)w * 32;
        for (int q = 0; q < 4; q++) {
            /* bit b of the byte moved to lane b's sign bit: blendv picks the row there */
            __m256i bits = _mm256_sllv_epi32(_mm256_set1_epi32((int32_t)((m >> (8 * q)) & 0xFFu)), shift);
            __m256 keep = _mm256_castsi256_ps(bits);
            _mm256_storeu_ps(p + 8 * q, _mm256_blendv_ps(ninf, _mm256_loadu_ps(p + 8 * q), keep));
        }
    }
}
#endif

void cpu_mask_row(float *row, const uint32_t *mask, int32_t vocab, enum cpu_isa isa)
{
    int32_t full = vocab / 32, w0 = 0;
#if MASK_X86
    if (isa >= CPU_ISA_AVX512) mask_row_avx512(row, mask, full), w0 = full;
    else if (isa == CPU_ISA_AVX2) mask_row_avx2(row, mask, full), w0 = full;
#else
    (void)isa;
#endif
    for (int32_t w = w0; w * 32 < vocab; w++)
        if (mask[w] != 0xFFFFFFFFu)
            mask_word_ref(row + (size_t)w * 32, mask[w], vocab - w * 32 < 32 ? vocab - w * 32 : 32);
}
