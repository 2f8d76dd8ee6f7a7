/*
 * vision_prep.c: smart_resize, Pillow's bicubic resize, rescale/normalise and patchify.
 * See vision_prep.h for the contract and docs/MODEL.md, "Image preprocessing" for the reference.
 */
#include "server/vision_prep.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VP_HTTP_BAD 400

void vision_prep_params_default(struct vision_prep_params *p)
{
    p->fetch_min_pixels = VISION_PREP_MIN_PIXELS;
    p->fetch_max_pixels = VISION_PREP_MAX_PIXELS;
    p->proc_min_pixels = VISION_PREP_MIN_PIXELS;
    p->proc_max_pixels = VISION_PREP_MAX_PIXELS;
    p->patch = 14;
    p->merge = 2;
    p->temporal = 2;
    p->order = VISION_PREP_ORDER_PILLOW13;
}

int vision_prep_params_check(const struct vision_prep_params *p, struct vlm_err *err)
{
    const struct {
        const char *name;
        int64_t min, max;
    } lim[2] = {{"min_pixels", p->fetch_min_pixels, p->fetch_max_pixels},
                {"min_pixels", p->proc_min_pixels, p->proc_max_pixels}};
    for (int i = 0; i < 2; i++) {
        if (lim[i].min <= 0 || lim[i].min > lim[i].max)
            return vlm_err_param(err, VLM_EINVAL, VP_HTTP_BAD, lim[i].name,
                                 "min_pixels %lld must be in 1..max_pixels (%lld)",
                                 (long long)lim[i].min, (long long)lim[i].max);
        if (lim[i].max > VISION_PREP_LIMIT_PIXELS)
            return vlm_err_param(err, VLM_EINVAL, VP_HTTP_BAD, "max_pixels",
                                 "max_pixels %lld is over the server limit of %lld",
                                 (long long)lim[i].max, (long long)VISION_PREP_LIMIT_PIXELS);
    }
    if (p->patch < 1 || p->patch > 64 || p->merge < 1 || p->merge > 8 || p->temporal < 1 ||
        p->temporal > 8)
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD,
                           "invalid patch geometry (patch %d, merge %d, temporal %d)",
                           (int)p->patch, (int)p->merge, (int)p->temporal);
    return VLM_OK;
}

void vision_prep_out_free(struct vision_prep_out *o)
{
    if (!o) return;
    free(o->pixels);
    memset(o, 0, sizeof *o);
}

/* ==== smart_resize ====
 * Both reference variants (docs/MODEL.md, "smart_resize") in one function. Python's round() is
 * round-half-to-even on the exact double quotient, which is nearbyint() in the default rounding
 * mode; the int/int true divisions of Python are correctly rounded, as are the same divisions of
 * exactly representable doubles here. */

int vision_prep_smart_resize(int64_t h, int64_t w, int32_t factor, int64_t min_pixels,
                             int64_t max_pixels, enum vision_prep_variant v, int32_t *out_h,
                             int32_t *out_w, struct vlm_err *err)
{
    if (factor <= 0 || min_pixels < 0 || max_pixels <= 0)
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD,
                           "invalid resize limits (factor %d, pixels %lld..%lld)", (int)factor,
                           (long long)min_pixels, (long long)max_pixels);
    if (h <= 0 || w <= 0 || h > INT32_MAX || w > INT32_MAX)
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD, "image size %lldx%lld is invalid",
                           (long long)w, (long long)h);
    if (v == VISION_PREP_PROCESSOR && (h < factor || w < factor))
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD,
                           "image height %lld and width %lld must be at least %d",
                           (long long)h, (long long)w, (int)factor);
    double ratio = (double)VLM_MAX(h, w) / (double)VLM_MIN(h, w);
    if (ratio > VISION_PREP_MAX_RATIO)
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD,
                           "image aspect ratio must be at most %d, got %.2f (%lldx%lld)",
                           VISION_PREP_MAX_RATIO, ratio, (long long)w, (long long)h);
    int64_t hb = (int64_t)nearbyint((double)h / factor) * factor;
    int64_t wb = (int64_t)nearbyint((double)w / factor) * factor;
    if (v == VISION_PREP_FETCH) {
        hb = VLM_MAX(hb, factor);
        wb = VLM_MAX(wb, factor);
    }
    if (hb * wb > max_pixels) {
        double beta = sqrt((double)(h * w) / (double)max_pixels);
        hb = (int64_t)floor((double)h / beta / factor) * factor;
        wb = (int64_t)floor((double)w / beta / factor) * factor;
    } else if (hb * wb < min_pixels) {
        double beta = sqrt((double)min_pixels / (double)(h * w));
        hb = (int64_t)ceil((double)h * beta / factor) * factor;
        wb = (int64_t)ceil((double)w * beta / factor) * factor;
    }
    if (hb <= 0 || wb <= 0 || hb > INT32_MAX / 4 || wb > INT32_MAX / 4)
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD,
                           "image %lldx%lld cannot be resized within %lld..%lld pixels",
                           (long long)w, (long long)h, (long long)min_pixels,
                           (long long)max_pixels);
    *out_h = (int32_t)hb;
    *out_w = (int32_t)wb;
    return VLM_OK;
}

/* ==== Pillow's bicubic resample ====
 * Pillow's Resample.c, 8 bits per channel. Per axis, each output pixel gets a window
 * [first, first + count) of input pixels and count fixed-point weights (22 fraction bits,
 * 32 - 8 - 2), computed once per axis and shared by every row or column. The horizontal
 * pass only runs over the input rows the vertical pass will read. The vertical pass
 * accumulates whole rows into an int32 row buffer so the inner loop is contiguous and
 * vectorizes; the sum is exact in int32 (|weights| sum to < 1.5), so the order of the
 * additions does not change the result. */

#define VP_PRECISION_BITS (32 - 8 - 2)

/* The filter weights must round exactly as Pillow's C code does: no fused multiply-add,
 * whatever the target (GNU C contracts a*b+c by default where FMA exists). Only the two
 * weight functions carry the attribute; the hot loops are integer. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#define VP_NO_FMA
#else
#define VP_NO_FMA __attribute__((optimize("fp-contract=off")))
#endif

struct vp_axis {
    int32_t ksize;   /* weights per output pixel (slots) */
    int32_t *bounds; /* (out, 2): first input index, count; owned */
    int32_t *k;      /* (out, ksize) fixed-point weights; owned */
};

VP_NO_FMA static double vp_bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static void vp_axis_free(struct vp_axis *a)
{
    free(a->bounds);
    free(a->k);
    memset(a, 0, sizeof *a);
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size). */
VP_NO_FMA static int vp_axis_init(struct vp_axis *a, int32_t in_size, int32_t out_size)
{
    const double filter_support = 2.0; /* bicubic */
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale;
    int32_t ksize = (int32_t)ceil(support) * 2 + 1;
    memset(a, 0, sizeof *a);
    a->ksize = ksize;
    a->bounds = trymalloc((size_t)out_size * 2 * sizeof(int32_t));
    a->k = trymalloc((size_t)out_size * (size_t)ksize * sizeof(int32_t));
    double *kd = trymalloc((size_t)ksize * sizeof(double));
    if (!a->bounds || !a->k || !kd) {
        free(kd);
        vp_axis_free(a);
        return VLM_ENOMEM;
    }
    for (int32_t xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int32_t xmin = (int32_t)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int32_t xmax = (int32_t)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        int32_t x;
        for (x = 0; x < xmax; x++) {
            double w = vp_bicubic((x + xmin - center + 0.5) * ss);
            kd[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) kd[x] /= ww;
        int32_t *k = a->k + (size_t)xx * ksize;
        for (x = 0; x < xmax; x++)
            k[x] = kd[x] < 0 ? (int32_t)(-0.5 + kd[x] * (1 << VP_PRECISION_BITS))
                             : (int32_t)(0.5 + kd[x] * (1 << VP_PRECISION_BITS));
        for (; x < ksize; x++) k[x] = 0;
        a->bounds[2 * xx + 0] = xmin;
        a->bounds[2 * xx + 1] = xmax;
    }
    free(kd);
    return VLM_OK;
}

/* The two passes are integer multiply-accumulates; AVX2 has an 8-lane 32-bit multiply that
 * the x86-64 baseline (SSE2) lacks, so they are also built for AVX2 and picked at load time
 * (GCC function multiversioning). The results are the same integers either way. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(VLM_NO_CLONES)
#define VP_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VP_CLONES
#endif
/* The horizontal pass has a hand-written AVX2 path, chosen at run time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(VLM_NO_CLONES)
#define VP_HAVE_AVX2 1
#include <immintrin.h>
#else
#define VP_HAVE_AVX2 0
#endif

static inline uint8_t vp_clip8(int32_t v)
{
    v >>= VP_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* rows output rows of width out_w from input rows y0.. of width in_w (RGB). */
/* Output pixels [from, out_w) of one row, plain C: the reference for the AVX2 path. */
static void vp_h_row(const uint8_t *restrict src, uint8_t *restrict dst, int32_t from,
                     int32_t out_w, const struct vp_axis *ax)
{
    const int32_t half = 1 << (VP_PRECISION_BITS - 1);
    for (int32_t xx = from; xx < out_w; xx++) {
        const uint8_t *p = src + (size_t)ax->bounds[2 * xx] * 3;
        const int32_t n = ax->bounds[2 * xx + 1];
        const int32_t *k = ax->k + (size_t)xx * ax->ksize;
        int32_t s0 = half, s1 = half, s2 = half;
        for (int32_t x = 0; x < n; x++) {
            s0 += p[3 * x + 0] * k[x];
            s1 += p[3 * x + 1] * k[x];
            s2 += p[3 * x + 2] * k[x];
        }
        dst[3 * xx + 0] = vp_clip8(s0);
        dst[3 * xx + 1] = vp_clip8(s1);
        dst[3 * xx + 2] = vp_clip8(s2);
    }
}

#if VP_HAVE_AVX2
/* Two output pixels per step, one per 128-bit half: each tap loads 4 bytes (R, G, B and
 * the next pixel's R, whose lane is ignored), widens them to int32 and multiplies by the
 * tap's weight. All ksize slots are used (the weights past a pixel's count are 0), so a
 * step may read up to ksize pixels + 1 byte past its window: steps that would read past
 * the end of the buffer (in_end) are left to vp_h_row. Same integers as vp_h_row. */
__attribute__((target("avx2"))) static void
vp_h_row_avx2(const uint8_t *restrict src, const uint8_t *in_end, uint8_t *restrict dst,
              int32_t out_w, const struct vp_axis *ax)
{
    const int32_t ks = ax->ksize;
    const __m256i half = _mm256_set1_epi32(1 << (VP_PRECISION_BITS - 1));
    int32_t xx = 0;
    for (; xx + 1 < out_w; xx += 2) {
        const uint8_t *p0 = src + (size_t)ax->bounds[2 * xx] * 3;
        const uint8_t *p1 = src + (size_t)ax->bounds[2 * xx + 2] * 3;
        if (p1 + (size_t)ks * 3 + 1 > in_end || p0 + (size_t)ks * 3 + 1 > in_end) break;
        const int32_t *k0 = ax->k + (size_t)xx * ks, *k1 = k0 + ks;
        __m256i acc = half;
        for (int32_t j = 0; j < ks; j++) {
            uint32_t a, b;
            memcpy(&a, p0 + 3 * j, 4);
            memcpy(&b, p1 + 3 * j, 4);
            __m256i px = _mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)b, (int)a));
            __m256i kk = _mm256_setr_epi32(k0[j], k0[j], k0[j], k0[j], k1[j], k1[j], k1[j], k1[j]);
            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(px, kk));
        }
        acc = _mm256_srai_epi32(acc, VP_PRECISION_BITS);
        /* saturating packs = clip to 0..255 (the shifted sums fit in int16) */
        __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        uint64_t v = (uint64_t)_mm_cvtsi128_si64(_mm_packus_epi16(w16, w16));
        uint8_t *d = dst + 3 * (size_t)xx;
        d[0] = (uint8_t)v;
        d[1] = (uint8_t)(v >> 8);
        d[2] = (uint8_t)(v >> 16);
        d[3] = (uint8_t)(v >> 32);
        d[4] = (uint8_t)(v >> 40);
        d[5] = (uint8_t)(v >> 48);
    }
    vp_h_row(src, dst, xx, out_w, ax);
}
#endif

/* rows output rows of width out_w from input rows y0.. of width in_w (RGB); in_end is the
 * end of the input buffer. */
static void vp_resample_h(const uint8_t *restrict in, const uint8_t *in_end, int32_t in_w,
                          int32_t y0, int32_t rows, uint8_t *restrict out, int32_t out_w,
                          const struct vp_axis *ax)
{
#if VP_HAVE_AVX2
    const bool avx2 = __builtin_cpu_supports("avx2");
#endif
    for (int32_t y = 0; y < rows; y++) {
        const uint8_t *src = in + (size_t)(y0 + y) * (size_t)in_w * 3;
        uint8_t *dst = out + (size_t)y * (size_t)out_w * 3;
#if VP_HAVE_AVX2
        if (avx2) {
            vp_h_row_avx2(src, in_end, dst, out_w, ax);
            continue;
        }
#endif
        (void)in_end;
        vp_h_row(src, dst, 0, out_w, ax);
    }
}

/* out_h rows from input rows (first row of the input = index y_shift of the axis). */
#define VP_V_BLOCK 2048
VP_CLONES static void vp_resample_v(const uint8_t *restrict in, int32_t w, int32_t y_shift,
                                    uint8_t *restrict out, int32_t out_h,
                                    const struct vp_axis *ax,
                                    int32_t *restrict acc /* (VP_V_BLOCK) */)
{
    const int32_t half = 1 << (VP_PRECISION_BITS - 1);
    const size_t n = (size_t)w * 3;
    for (int32_t yy = 0; yy < out_h; yy++) {
        const int32_t ymin = ax->bounds[2 * yy] - y_shift, cnt = ax->bounds[2 * yy + 1];
        const int32_t *k = ax->k + (size_t)yy * ax->ksize;
        uint8_t *restrict dst = out + (size_t)yy * n;
        /* the row in blocks, so the int32 accumulators stay in L1 */
        for (size_t i0 = 0; i0 < n; i0 += VP_V_BLOCK) {
            const size_t m = VLM_MIN((size_t)VP_V_BLOCK, n - i0);
            for (size_t i = 0; i < m; i++) acc[i] = half;
            for (int32_t y = 0; y < cnt; y++) {
                const uint8_t *restrict row = in + (size_t)(ymin + y) * n + i0;
                const int32_t ky = k[y];
#pragma omp simd
                for (size_t i = 0; i < m; i++) acc[i] += row[i] * ky;
            }
#pragma omp simd
            for (size_t i = 0; i < m; i++) dst[i0 + i] = vp_clip8(acc[i]);
        }
    }
}

int vision_prep_resize(const struct media_image *in, int32_t w, int32_t h,
                       enum vision_prep_order order, struct media_image *out,
                       struct vlm_err *err)
{
    VLM_ASSERT(in->w > 0 && in->h > 0 && in->rgb && w > 0 && h > 0);
    memset(out, 0, sizeof *out);
    bool need_h = w != in->w, need_v = h != in->h;
    struct vp_axis ax = {0}, ay = {0};
    uint8_t *tmp = NULL, *dst = NULL;
    int32_t *acc = NULL;
    int rc = VLM_ENOMEM;
    dst = trymalloc((size_t)w * (size_t)h * 3);
    if (!dst) goto done;
    media_hint_huge_pages(dst, (size_t)w * (size_t)h * 3);
    if (!need_h && !need_v) {
        memcpy(dst, in->rgb, (size_t)w * (size_t)h * 3);
        rc = VLM_OK;
        goto done;
    }
    if (vp_axis_init(&ax, in->w, w) || vp_axis_init(&ay, in->h, h)) goto done;
    /* Pillow 13 runs the vertical pass first when it removes more than twice as many rows
     * as the horizontal pass removes columns (found from its binary and checked on 2000+
     * random size pairs); the order changes the result because each pass rounds. */
    int32_t dh = in->h - h, dw = in->w - w;
    const uint8_t *in_end = in->rgb + (size_t)in->w * (size_t)in->h * 3;
    bool v_first =
        order == VISION_PREP_ORDER_PILLOW13 && need_h && need_v && dh > 0 && dh > 2 * dw;
    if (v_first) {
        tmp = trymalloc((size_t)in->w * (size_t)h * 3);
        media_hint_huge_pages(tmp, (size_t)in->w * (size_t)h * 3);
        acc = trymalloc(VP_V_BLOCK * sizeof *acc);
        if (!tmp || !acc) goto done;
        vp_resample_v(in->rgb, in->w, 0, tmp, h, &ay, acc);
        vp_resample_h(tmp, tmp + (size_t)in->w * (size_t)h * 3, in->w, 0, h, dst, w, &ax);
    } else if (need_h && need_v) {
        /* only the input rows the vertical pass reads: [first, last) */
        int32_t first = ay.bounds[0];
        int32_t last = ay.bounds[2 * (h - 1)] + ay.bounds[2 * (h - 1) + 1];
        tmp = trymalloc((size_t)w * (size_t)(last - first) * 3);
        media_hint_huge_pages(tmp, (size_t)w * (size_t)(last - first) * 3);
        acc = trymalloc(VP_V_BLOCK * sizeof *acc);
        if (!tmp || !acc) goto done;
        vp_resample_h(in->rgb, in_end, in->w, first, last - first, tmp, w, &ax);
        vp_resample_v(tmp, w, first, dst, h, &ay, acc);
    } else if (need_h) {
        vp_resample_h(in->rgb, in_end, in->w, 0, h, dst, w, &ax);
    } else {
        acc = trymalloc(VP_V_BLOCK * sizeof *acc);
        if (!acc) goto done;
        vp_resample_v(in->rgb, w, 0, dst, h, &ay, acc);
    }
    rc = VLM_OK;
done:
    vp_axis_free(&ax);
    vp_axis_free(&ay);
    free(tmp);
    free(acc);
    if (rc) {
        free(dst);
        return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory resizing an image to %dx%d",
                           (int)w, (int)h);
    }
    out->w = w;
    out->h = h;
    out->rgb = dst;
    return VLM_OK;
}

/* ==== The two resize stages ====
 * fetch_image resizes to its smart_resize target (a copy when unchanged); the processor
 * computes its own target from that result and resizes a second time only when it
 * differs. */

int vision_prep_resized(const struct media_image *im, const struct vision_prep_params *p,
                        struct media_image *out, struct vlm_err *err)
{
    int32_t factor = p->patch * p->merge, h1, w1, h2, w2;
    memset(out, 0, sizeof *out);
    int rc = vision_prep_params_check(p, err);
    if (rc) return rc;
    rc = vision_prep_smart_resize(im->h, im->w, factor, p->fetch_min_pixels,
                                      p->fetch_max_pixels, VISION_PREP_FETCH, &h1, &w1, err);
    if (rc) return rc;
    rc = vision_prep_smart_resize(h1, w1, factor, p->proc_min_pixels, p->proc_max_pixels,
                                  VISION_PREP_PROCESSOR, &h2, &w2, err);
    if (rc) return rc;
    struct media_image s1;
    rc = vision_prep_resize(im, w1, h1, p->order, &s1, err);
    if (rc) return rc;
    if (h2 == h1 && w2 == w1) {
        *out = s1;
        return VLM_OK;
    }
    rc = vision_prep_resize(&s1, w2, h2, p->order, out, err);
    media_image_free(&s1);
    return rc;
}

/* ==== Rescale, normalise, patchify ====
 * The float value of a pixel depends only on its channel and 8-bit value, so the rescale
 * (float32(float64(u8) * (1/255))) and the float32 normalisation ((v - mean) / std, a real
 * division as numpy does it) are done once into a 3 x 256 table; patchify is then a
 * gather, 14 contiguous reads per patch row, with the temporal copies memcpy'd. */

static const float vp_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float vp_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

int vision_prep_patchify(const struct media_image *im, const struct vision_prep_params *p,
                         struct vision_prep_out *out, struct vlm_err *err)
{
    const int32_t ps = p->patch, m = p->merge, T = p->temporal, factor = ps * m;
    memset(out, 0, sizeof *out);
    int rc = vision_prep_params_check(p, err);
    if (rc) return rc;
    if (im->w <= 0 || im->h <= 0 || im->w % factor || im->h % factor)
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD,
                           "image %dx%d is not a multiple of %d", (int)im->w, (int)im->h,
                           (int)factor);
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float f = (float)((double)v * (1.0 / 255.0));
            lut[c][v] = (f - vp_mean[c]) / vp_std[c];
        }
    const int32_t gh = im->h / ps, gw = im->w / ps, pp = ps * ps;
    const int32_t row_len = 3 * T * pp;
    const size_t n_patches = (size_t)gh * (size_t)gw;
    const size_t bytes = n_patches * (size_t)row_len * sizeof(float);
    float *pix = trymalloc(bytes);
    media_hint_huge_pages(pix, bytes);
    if (!pix)
        return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for %zu image patches",
                           n_patches);
    const size_t stride = (size_t)im->w * 3;
    float *dst = pix;
    for (int32_t bh = 0; bh < gh / m; bh++)
        for (int32_t bw = 0; bw < gw / m; bw++)
            for (int32_t dy = 0; dy < m; dy++)
                for (int32_t dx = 0; dx < m; dx++, dst += row_len) {
                    const uint8_t *src = im->rgb + (size_t)(ps * (m * bh + dy)) * stride +
                                         (size_t)(ps * (m * bw + dx)) * 3;
                    for (int c = 0; c < 3; c++) {
                        float *blk = dst + (size_t)c * T * pp;
                        const float *l = lut[c];
                        for (int32_t y = 0; y < ps; y++) {
                            const uint8_t *s = src + (size_t)y * stride + c;
                            float *d = blk + y * ps;
                            for (int32_t x = 0; x < ps; x++) d[x] = l[s[3 * x]];
                        }
                        for (int32_t t = 1; t < T; t++)
                            memcpy(blk + (size_t)t * pp, blk, (size_t)pp * sizeof(float));
                    }
                }
    out->pixels = pix;
    out->row_len = row_len;
    out->grid_t = 1;
    out->grid_h = gh;
    out->grid_w = gw;
    out->n_patches = (int32_t)n_patches;
    out->n_tokens = (int32_t)(n_patches / (size_t)(m * m));
    out->width = im->w;
    out->height = im->h;
    int32_t grid[3] = {1, gh, gw};
    uint64_t hsh = vlm_hash64(im->rgb, (size_t)im->w * (size_t)im->h * 3, 0);
    out->hash = vlm_hash64(grid, sizeof grid, hsh);
    return VLM_OK;
}

/* ==== The whole pipeline ==== */

int vision_prep_image(const struct media_image *im, const struct vision_prep_params *p,
                      struct vision_prep_out *out, struct vlm_err *err)
{
    struct vision_prep_params def;
    if (!p) {
        vision_prep_params_default(&def);
        p = &def;
    }
    memset(out, 0, sizeof *out);
    if (!im->rgb || im->w <= 0 || im->h <= 0)
        return vlm_err_set(err, VLM_EINVAL, VP_HTTP_BAD, "image is empty");
    struct media_image r;
    int rc = vision_prep_resized(im, p, &r, err);
    if (rc) return rc;
    rc = vision_prep_patchify(&r, p, out, err);
    media_image_free(&r);
    return rc;
}

int vision_prep_placeholder(const struct vision_prep_params *p, struct vision_prep_out *out,
                            struct vlm_err *err)
{
    struct media_image black;
    memset(out, 0, sizeof *out);
    int rc = media_image_fill(&black, 3, 3, 0, 0, 0, err);
    if (rc) return rc;
    rc = vision_prep_image(&black, p, out, err);
    media_image_free(&black);
    return rc;
}
