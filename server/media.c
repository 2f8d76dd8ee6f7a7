/*
 * media.c: image bytes -> 8-bit RGB, as PIL's Image.open(...).convert("RGB") produces it.
 * See media.h for the conversion rules and the error contract.
 */
#include "server/media.h"

#include <ctype.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#ifdef VLM_HAVE_WEBP
#include <webp/decode.h>
#endif
#ifdef VLM_HAVE_GIF
#include <gif_lib.h>
#endif

#define MEDIA_HTTP_BAD 400

/* ==== Images and limits ====
 * Small helpers shared by the decoders: the pixel allocation (sized by the input, so it
 * may fail) and the limit checks that run on the header before any pixel is decoded. */

void media_image_free(struct media_image *im)
{
    if (!im) return;
    free(im->rgb);
    memset(im, 0, sizeof *im);
}

static int media_nomem(struct vlm_err *err, int32_t w, int32_t h)
{
    return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory decoding a %dx%d image", (int)w,
                       (int)h);
}

void media_hint_huge_pages(void *p, size_t n)
{
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (!p || n < 4 * huge) return;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(huge - 1);
    if (e > a) (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
}

/* Allocates (h, w, 3) bytes; the caller has checked w, h > 0 and the pixel limit. */
static uint8_t *media_alloc_rgb(int32_t w, int32_t h)
{
    size_t n;
    if (!vlm_mul_ok((size_t)w * 3, (size_t)h, &n)) return NULL;
    uint8_t *p = trymalloc(n);
    media_hint_huge_pages(p, n);
    return p;
}

int media_image_fill(struct media_image *out, int32_t w, int32_t h, uint8_t r, uint8_t g,
                     uint8_t b, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    if (w <= 0 || h <= 0)
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "image size %dx%d is empty",
                           (int)w, (int)h);
    uint8_t *p = media_alloc_rgb(w, h);
    if (!p) return media_nomem(err, w, h);
    size_t n = (size_t)w * (size_t)h;
    for (size_t i = 0; i < n; i++) {
        p[3 * i + 0] = r;
        p[3 * i + 1] = g;
        p[3 * i + 2] = b;
    }
    out->w = w;
    out->h = h;
    out->rgb = p;
    return VLM_OK;
}

/* Refuses an empty image or one over the pixel limit, from header values. */
static int media_check_size(const char *what, int64_t w, int64_t h,
                            const struct media_limits *lim, struct vlm_err *err)
{
    if (w <= 0 || h <= 0)
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "%s image has an empty size %lldx%lld",
                           what, (long long)w, (long long)h);
    if (w > INT32_MAX / 4 || h > INT32_MAX / 4 || w * h > lim->max_pixels)
        return vlm_err_set(err, VLM_ETOOBIG, 413,
                           "%s image is %lldx%lld = %.0f pixels, over the limit of %lld pixels",
                           what, (long long)w, (long long)h, (double)w * (double)h,
                           (long long)lim->max_pixels);
    return VLM_OK;
}

enum media_format media_sniff(const uint8_t *d, size_t n)
{
    if (n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff) return MEDIA_FORMAT_JPEG;
    if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return MEDIA_FORMAT_PNG;
    if (n >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6))) return MEDIA_FORMAT_GIF;
    if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) return MEDIA_FORMAT_WEBP;
    return MEDIA_FORMAT_UNKNOWN;
}

const char *media_format_mime(enum media_format f)
{
    switch (f) {
    case MEDIA_FORMAT_JPEG: return "image/jpeg";
    case MEDIA_FORMAT_PNG: return "image/png";
    case MEDIA_FORMAT_GIF: return "image/gif";
    case MEDIA_FORMAT_WEBP: return "image/webp";
    default: return "";
    }
}

/* ==== JPEG (libjpeg-turbo) ====
 * Errors longjmp out of the library into jpeg_decode. The state that must survive the
 * longjmp lives in a heap struct (not in locals changed after setjmp). Premature end of
 * data is only a warning for libjpeg (it pads with gray); PIL raises, so we do too. A
 * progressive file with thousands of scans is refused (CPU bomb). Decoding uses libjpeg's
 * defaults (islow IDCT, fancy upsampling), as Pillow does. */

struct jpeg_dec {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 32];
    uint8_t *rgb; /* (h, w, 3) owned until handed to the caller */
    uint8_t *row; /* (w * components) owned */
};

#define JPEG_MAX_SCANS 1000

static void jpeg_error_exit_cb(j_common_ptr c)
{
    struct jpeg_dec *d = (struct jpeg_dec *)c->client_data;
    char buf[JMSG_LENGTH_MAX];
    (*c->err->format_message)(c, buf);
    snprintf(d->msg, sizeof d->msg, "%s", buf);
    longjmp(d->jb, 1);
}

static void jpeg_emit_cb(j_common_ptr c, int level)
{
    struct jpeg_dec *d = (struct jpeg_dec *)c->client_data;
    if (level >= 0) return; /* trace messages */
    if (c->err->msg_code == JWRN_JPEG_EOF) {
        snprintf(d->msg, sizeof d->msg, "JPEG data is truncated");
        longjmp(d->jb, 1);
    }
    c->err->num_warnings++; /* other corrupt-data warnings: PIL ignores them too */
}

static void jpeg_progress_cb(j_common_ptr c)
{
    struct jpeg_dec *d = (struct jpeg_dec *)c->client_data;
    if (d->cinfo.input_scan_number > JPEG_MAX_SCANS) {
        snprintf(d->msg, sizeof d->msg, "JPEG has more than %d scans", JPEG_MAX_SCANS);
        longjmp(d->jb, 1);
    }
}

/* PIL's MULDIV255: a*b/255 rounded, in integers. */
static inline int media_muldiv255(int a, int b)
{
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

/* Converts one decoded scanline (out_color_space already chosen) to RGB. */
static void jpeg_row_to_rgb(const uint8_t *in, int comps, int32_t w, uint8_t *out)
{
    if (comps == 3) {
        memcpy(out, in, (size_t)w * 3);
    } else if (comps == 1) {
        for (int32_t x = 0; x < w; x++) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
    } else { /* CMYK, Adobe-inverted as PIL's "CMYK;I" reads it, then PIL's cmyk2rgb */
        for (int32_t x = 0; x < w; x++) {
            const uint8_t *p = in + 4 * x;
            int nk = p[3]; /* 255 - k, with k = 255 - raw */
            for (int ch = 0; ch < 3; ch++) {
                int v = nk - media_muldiv255(255 - p[ch], nk);
                out[3 * x + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
}

/* Decodes a JPEG; out == NULL probes the header only (size into *pw, *ph). */
static int jpeg_decode(const uint8_t *data, size_t n, const struct media_limits *lim,
                       struct media_image *out, int32_t *pw, int32_t *ph, struct vlm_err *err)
{
    struct jpeg_dec *d = xcalloc(1, sizeof *d);
    int rc = VLM_EINVAL;
    d->cinfo.err = jpeg_std_error(&d->jerr);
    d->jerr.error_exit = jpeg_error_exit_cb;
    d->jerr.emit_message = jpeg_emit_cb;
    if (setjmp(d->jb)) {
        rc = vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "invalid JPEG image: %s", d->msg);
        goto done;
    }
    jpeg_create_decompress(&d->cinfo);
    d->cinfo.client_data = d;
    d->progress.progress_monitor = jpeg_progress_cb;
    d->cinfo.progress = &d->progress;
    jpeg_mem_src(&d->cinfo, data, (unsigned long)n);
    jpeg_read_header(&d->cinfo, TRUE);
    int64_t w = d->cinfo.image_width, h = d->cinfo.image_height;
    if (pw) *pw = (int32_t)VLM_MIN(w, INT32_MAX);
    if (ph) *ph = (int32_t)VLM_MIN(h, INT32_MAX);
    if (!out) {
        rc = VLM_OK;
        goto done;
    }
    rc = media_check_size("JPEG", w, h, lim, err);
    if (rc) goto done;
    switch (d->cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: d->cinfo.out_color_space = JCS_GRAYSCALE; break;
    case JCS_CMYK:
    case JCS_YCCK: d->cinfo.out_color_space = JCS_CMYK; break;
    default: d->cinfo.out_color_space = JCS_RGB; break;
    }
    jpeg_start_decompress(&d->cinfo);
    int comps = d->cinfo.output_components;
    if ((comps != 1 && comps != 3 && comps != 4) || d->cinfo.output_width != (JDIMENSION)w ||
        d->cinfo.output_height != (JDIMENSION)h) {
        rc = vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                         "unsupported JPEG layout (%d components)", comps);
        goto done;
    }
    d->rgb = media_alloc_rgb((int32_t)w, (int32_t)h);
    d->row = trymalloc((size_t)w * (size_t)comps);
    if (!d->rgb || !d->row) {
        rc = media_nomem(err, (int32_t)w, (int32_t)h);
        goto done;
    }
    while (d->cinfo.output_scanline < d->cinfo.output_height) {
        JSAMPROW rows[1] = {d->row};
        size_t y = d->cinfo.output_scanline;
        if (jpeg_read_scanlines(&d->cinfo, rows, 1) != 1) {
            rc = vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "JPEG data is truncated");
            goto done;
        }
        jpeg_row_to_rgb(d->row, comps, (int32_t)w, d->rgb + y * (size_t)w * 3);
    }
    /* jpeg_finish_decompress is skipped on purpose: it would read (and may complain about)
     * whatever follows the last scan, which PIL does not look at either. */
    out->w = (int32_t)w;
    out->h = (int32_t)h;
    out->rgb = d->rgb;
    d->rgb = NULL;
    rc = VLM_OK;
done:
    jpeg_destroy_decompress(&d->cinfo);
    free(d->rgb);
    free(d->row);
    free(d);
    return rc;
}

/* ==== PNG (libpng) ====
 * Same error pattern as JPEG: png_error longjmps back to png_decode. Every CRC error is
 * fatal (PIL raises on a bad CRC in any chunk). libpng expands palettes and low-bit gray;
 * the rest (alpha drop, 16 -> 8 bits, gray -> RGB) is done here, row by row, following
 * PIL's modes: 16-bit gray is "I;16" and clips, every other 16-bit layout keeps the high
 * byte. Reading stops after the last image row (PIL ignores what follows the image). */

struct png_dec {
    png_structp png;
    png_infop info;
    const uint8_t *data;
    size_t n, pos;
    char msg[160];
    uint8_t *rgb;   /* (h, w, 3) owned until handed to the caller */
    uint8_t *buf;   /* (h or 1, rowbytes) owned */
    png_bytep *rows; /* (h) owned, into buf (interlaced images only) */
};

static void png_read_cb(png_structp p, png_bytep dst, size_t len)
{
    struct png_dec *d = png_get_io_ptr(p);
    if (len > d->n - d->pos) png_error(p, "PNG data is truncated");
    memcpy(dst, d->data + d->pos, len);
    d->pos += len;
}

static void png_error_cb(png_structp p, png_const_charp msg)
{
    struct png_dec *d = png_get_error_ptr(p);
    snprintf(d->msg, sizeof d->msg, "%s", msg);
    png_longjmp(p, 1);
}

static void png_warning_cb(png_structp p, png_const_charp msg) { (void)p, (void)msg; }

static void png_row_to_rgb(const uint8_t *in, int ch, int bd, int32_t w, uint8_t *out)
{
    if (bd == 8) {
        switch (ch) {
        case 1:
            for (int32_t x = 0; x < w; x++) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[x];
            break;
        case 2:
            for (int32_t x = 0; x < w; x++)
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[2 * x];
            break;
        case 3: memcpy(out, in, (size_t)w * 3); break;
        default:
            for (int32_t x = 0; x < w; x++) {
                out[3 * x + 0] = in[4 * x + 0];
                out[3 * x + 1] = in[4 * x + 1];
                out[3 * x + 2] = in[4 * x + 2];
            }
            break;
        }
        return;
    }
    /* 16-bit, big-endian samples */
    switch (ch) {
    case 1:
        for (int32_t x = 0; x < w; x++) {
            uint8_t v = in[2 * x] ? 255 : in[2 * x + 1]; /* PIL: I;16 -> L clips */
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = v;
        }
        break;
    case 2:
        for (int32_t x = 0; x < w; x++)
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[4 * x];
        break;
    default:
        for (int32_t x = 0; x < w; x++) {
            out[3 * x + 0] = in[2 * ch * x + 0];
            out[3 * x + 1] = in[2 * ch * x + 2];
            out[3 * x + 2] = in[2 * ch * x + 4];
        }
        break;
    }
}

static int png_decode(const uint8_t *data, size_t n, const struct media_limits *lim,
                      struct media_image *out, int32_t *pw, int32_t *ph, struct vlm_err *err)
{
    /* The IHDR is the first chunk and fixed-size: check the limits from it before libpng
     * reads on (png_read_info already looks at the next chunk). */
    if (n >= 24 && !memcmp(data + 12, "IHDR", 4)) {
        int64_t hw = (int64_t)data[16] << 24 | data[17] << 16 | data[18] << 8 | data[19];
        int64_t hh = (int64_t)data[20] << 24 | data[21] << 16 | data[22] << 8 | data[23];
        if (!out) {
            if (pw) *pw = (int32_t)VLM_MIN(hw, INT32_MAX);
            if (ph) *ph = (int32_t)VLM_MIN(hh, INT32_MAX);
            return VLM_OK;
        }
        int rc0 = media_check_size("PNG", hw, hh, lim, err);
        if (rc0) return rc0;
    }
    struct png_dec *d = xcalloc(1, sizeof *d);
    int rc = VLM_EINVAL;
    d->data = data;
    d->n = n;
    d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, png_error_cb, png_warning_cb);
    if (!d->png) {
        free(d);
        return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory starting the PNG decoder");
    }
    if (setjmp(png_jmpbuf(d->png))) {
        rc = vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "invalid PNG image: %s", d->msg);
        goto done;
    }
    d->info = png_create_info_struct(d->png);
    if (!d->info) png_error(d->png, "out of memory");
    png_set_read_fn(d->png, d, png_read_cb);
    png_set_crc_action(d->png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_read_info(d->png, d->info);
    png_uint_32 w = 0, h = 0;
    int bd = 0, ct = 0, il = 0;
    png_get_IHDR(d->png, d->info, &w, &h, &bd, &ct, &il, NULL, NULL);
    if (pw) *pw = (int32_t)VLM_MIN(w, INT32_MAX);
    if (ph) *ph = (int32_t)VLM_MIN(h, INT32_MAX);
    if (!out) {
        rc = VLM_OK;
        goto done;
    }
    rc = media_check_size("PNG", w, h, lim, err);
    if (rc) goto done;
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d->png);
    if ((ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) && bd < 8)
        png_set_expand_gray_1_2_4_to_8(d->png);
    int passes = png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    int ch = png_get_channels(d->png, d->info);
    int obd = png_get_bit_depth(d->png, d->info);
    size_t rowbytes = png_get_rowbytes(d->png, d->info);
    if (ch < 1 || ch > 4 || (obd != 8 && obd != 16) ||
        rowbytes < (size_t)w * (size_t)ch * (size_t)(obd / 8)) {
        rc = vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                         "unsupported PNG layout (%d channels, %d bits)", ch, obd);
        goto done;
    }
    d->rgb = media_alloc_rgb((int32_t)w, (int32_t)h);
    size_t nbuf = rowbytes;
    if (passes > 1 && !vlm_mul_ok(rowbytes, h, &nbuf)) nbuf = SIZE_MAX;
    d->buf = nbuf == SIZE_MAX ? NULL : trymalloc(nbuf);
    if (passes > 1) d->rows = trycalloc(h, sizeof *d->rows);
    if (!d->rgb || !d->buf || (passes > 1 && !d->rows)) {
        rc = media_nomem(err, (int32_t)w, (int32_t)h);
        goto done;
    }
    if (passes > 1) {
        for (png_uint_32 y = 0; y < h; y++) d->rows[y] = d->buf + (size_t)y * rowbytes;
        png_read_image(d->png, d->rows);
        for (png_uint_32 y = 0; y < h; y++)
            png_row_to_rgb(d->rows[y], ch, obd, (int32_t)w, d->rgb + (size_t)y * w * 3);
    } else {
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(d->png, d->buf, NULL);
            png_row_to_rgb(d->buf, ch, obd, (int32_t)w, d->rgb + (size_t)y * w * 3);
        }
    }
    out->w = (int32_t)w;
    out->h = (int32_t)h;
    out->rgb = d->rgb;
    d->rgb = NULL;
    rc = VLM_OK;
done:
    png_destroy_read_struct(&d->png, d->info ? &d->info : NULL, NULL);
    free(d->rgb);
    free(d->buf);
    free(d->rows);
    free(d);
    return rc;
}

/* ==== WebP (libwebp, optional) ====
 * Still images only (an animation is refused by WebPDecode). Alpha is dropped: decoding
 * to RGB leaves the colour samples as stored, which is what PIL's RGBA -> RGB keeps. */

#ifdef VLM_HAVE_WEBP
static int webp_decode(const uint8_t *data, size_t n, const struct media_limits *lim,
                       struct media_image *out, int32_t *pw, int32_t *ph, struct vlm_err *err)
{
    int w = 0, h = 0;
    if (!WebPGetInfo(data, n, &w, &h))
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "invalid WebP image header");
    if (pw) *pw = w;
    if (ph) *ph = h;
    if (!out) return VLM_OK;
    int rc = media_check_size("WebP", w, h, lim, err);
    if (rc) return rc;
    uint8_t *rgb = media_alloc_rgb(w, h);
    if (!rgb) return media_nomem(err, w, h);
    size_t size = (size_t)w * (size_t)h * 3;
    if (!WebPDecodeRGBInto(data, n, rgb, size, w * 3)) {
        free(rgb);
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                           "invalid WebP image (corrupt, truncated or animated)");
    }
    out->w = w;
    out->h = h;
    out->rgb = rgb;
    return VLM_OK;
}
#endif

/* ==== GIF (giflib, optional) ====
 * First frame only, composed as PIL does for frame 0: a canvas of the logical screen size
 * filled with the frame's transparent index (or index 0 without one), the frame's
 * rectangle decoded over it, then the (local or global) colour table applied; indices past
 * the table's end read as black. Without any colour table the indices are gray levels
 * (PIL mode "L"). The canvas grows when the frame sticks out of the screen, as in PIL. */

#ifdef VLM_HAVE_GIF
struct gif_src {
    const uint8_t *data;
    size_t n, pos;
};

static int gif_read_cb(GifFileType *g, GifByteType *dst, int len)
{
    struct gif_src *s = g->UserData;
    size_t take = len < 0 ? 0 : VLM_MIN((size_t)len, s->n - s->pos);
    memcpy(dst, s->data + s->pos, take);
    s->pos += take;
    return (int)take;
}

static int gif_fail(struct vlm_err *err, int code)
{
    const char *m = GifErrorString(code);
    return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "invalid GIF image: %s",
                       m ? m : "decoder error");
}

static int gif_decode(const uint8_t *data, size_t n, const struct media_limits *lim,
                      struct media_image *out, int32_t *pw, int32_t *ph, struct vlm_err *err)
{
    struct gif_src src = {data, n, 0};
    int gerr = 0, rc = VLM_OK, trns = -1;
    uint8_t *idx = NULL, *rgb = NULL;
    GifFileType *g = DGifOpen(&src, gif_read_cb, &gerr);
    if (!g) return gif_fail(err, gerr);
    int64_t sw = g->SWidth, sh = g->SHeight;
    if (pw) *pw = (int32_t)sw;
    if (ph) *ph = (int32_t)sh;
    if (!out) goto done;
    for (;;) {
        GifRecordType rt;
        if (DGifGetRecordType(g, &rt) == GIF_ERROR) {
            rc = gif_fail(err, g->Error);
            goto done;
        }
        if (rt == TERMINATE_RECORD_TYPE) {
            rc = vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "GIF has no image");
            goto done;
        }
        if (rt == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *ext;
            if (DGifGetExtension(g, &code, &ext) == GIF_ERROR) {
                rc = gif_fail(err, g->Error);
                goto done;
            }
            while (ext) {
                if (code == GRAPHICS_EXT_FUNC_CODE && ext[0] >= 4)
                    trns = (ext[1] & 1) ? ext[4] : -1;
                if (DGifGetExtensionNext(g, &ext) == GIF_ERROR) {
                    rc = gif_fail(err, g->Error);
                    goto done;
                }
                code = 0;
            }
            continue;
        }
        if (rt != IMAGE_DESC_RECORD_TYPE) continue;
        if (DGifGetImageDesc(g) == GIF_ERROR) {
            rc = gif_fail(err, g->Error);
            goto done;
        }
        int64_t fx = g->Image.Left, fy = g->Image.Top, fw = g->Image.Width, fh = g->Image.Height;
        int64_t cw = VLM_MAX(sw, fx + fw), chh = VLM_MAX(sh, fy + fh);
        rc = media_check_size("GIF", cw, chh, lim, err);
        if (rc) goto done;
        if (fw <= 0 || fh <= 0) {
            rc = vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "GIF frame is empty");
            goto done;
        }
        size_t np = (size_t)cw * (size_t)chh;
        idx = trymalloc(np);
        rgb = media_alloc_rgb((int32_t)cw, (int32_t)chh);
        if (!idx || !rgb) {
            rc = media_nomem(err, (int32_t)cw, (int32_t)chh);
            goto done;
        }
        memset(idx, trns >= 0 ? trns : 0, np);
        static const int il_start[4] = {0, 4, 2, 1}, il_step[4] = {8, 8, 4, 2};
        int npass = g->Image.Interlace ? 4 : 1;
        for (int pass = 0; pass < npass; pass++) {
            int64_t y0 = npass > 1 ? il_start[pass] : 0, dy = npass > 1 ? il_step[pass] : 1;
            for (int64_t y = y0; y < fh; y += dy) {
                uint8_t *line = idx + (size_t)(fy + y) * (size_t)cw + (size_t)fx;
                if (DGifGetLine(g, line, (int)fw) == GIF_ERROR) {
                    rc = gif_fail(err, g->Error);
                    goto done;
                }
            }
        }
        const ColorMapObject *cm = g->Image.ColorMap ? g->Image.ColorMap : g->SColorMap;
        for (size_t i = 0; i < np; i++) {
            int v = idx[i];
            uint8_t *o = rgb + 3 * i;
            if (!cm) {
                o[0] = o[1] = o[2] = (uint8_t)v;
            } else if (v < cm->ColorCount) {
                o[0] = cm->Colors[v].Red;
                o[1] = cm->Colors[v].Green;
                o[2] = cm->Colors[v].Blue;
            } else {
                o[0] = o[1] = o[2] = 0;
            }
        }
        out->w = (int32_t)cw;
        out->h = (int32_t)chh;
        out->rgb = rgb;
        rgb = NULL;
        break;
    }
done:
    free(idx);
    free(rgb);
    DGifCloseFile(g, &gerr);
    return rc;
}
#endif

/* ==== Dispatch ==== */

typedef int (*media_decoder_fn)(const uint8_t *, size_t, const struct media_limits *,
                                struct media_image *, int32_t *, int32_t *, struct vlm_err *);

static media_decoder_fn media_decoder(enum media_format f)
{
    switch (f) {
    case MEDIA_FORMAT_JPEG: return jpeg_decode;
    case MEDIA_FORMAT_PNG: return png_decode;
#ifdef VLM_HAVE_WEBP
    case MEDIA_FORMAT_WEBP: return webp_decode;
#endif
#ifdef VLM_HAVE_GIF
    case MEDIA_FORMAT_GIF: return gif_decode;
#endif
    default: return NULL;
    }
}

static int media_no_decoder(enum media_format f, size_t n, struct vlm_err *err)
{
    if (n == 0) return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "image data is empty");
    if (f == MEDIA_FORMAT_UNKNOWN)
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                           "unrecognized image format (supported: JPEG, PNG%s%s)",
#ifdef VLM_HAVE_WEBP
                           ", WebP",
#else
                           "",
#endif
#ifdef VLM_HAVE_GIF
                           ", GIF"
#else
                           ""
#endif
        );
    return vlm_err_set(err, VLM_EUNSUPPORTED, MEDIA_HTTP_BAD,
                       "%s images are not supported by this build", media_format_mime(f));
}

int media_probe_image(const uint8_t *data, size_t n, enum media_format *fmt, int32_t *w,
                      int32_t *h, struct vlm_err *err)
{
    enum media_format f = media_sniff(data, n);
    if (fmt) *fmt = f;
    media_decoder_fn fn = media_decoder(f);
    if (!fn) return media_no_decoder(f, n, err);
    int32_t tw = 0, th = 0;
    int rc = fn(data, n, NULL, NULL, &tw, &th, err);
    if (w) *w = tw;
    if (h) *h = th;
    return rc;
}

int media_decode_image(const uint8_t *data, size_t n, const struct media_limits *lim,
                       struct media_image *out, struct vlm_err *err)
{
    static const struct media_limits defaults = {MEDIA_DEFAULT_MAX_PIXELS,
                                                 MEDIA_DEFAULT_MAX_BYTES};
    memset(out, 0, sizeof *out);
    if (!lim) lim = &defaults;
    if (n > lim->max_bytes)
        return vlm_err_set(err, VLM_ETOOBIG, 413, "image is %zu bytes, over the limit of %zu",
                           n, lim->max_bytes);
    enum media_format f = media_sniff(data, n);
    media_decoder_fn fn = media_decoder(f);
    if (!fn) return media_no_decoder(f, n, err);
    int rc = fn(data, n, lim, out, NULL, NULL, err);
    if (rc) media_image_free(out);
    return rc;
}

/* ==== Base64 and data URLs ====
 * Strict enough to give a clear error for garbage, lenient where clients differ: ASCII
 * whitespace (MIME line breaks) is skipped and the '=' padding may be left out. */

static int8_t b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return (int8_t)(c - 'A');
    if (c >= 'a' && c <= 'z') return (int8_t)(c - 'a' + 26);
    if (c >= '0' && c <= '9') return (int8_t)(c - '0' + 52);
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int media_base64_decode(const char *s, size_t len, uint8_t **out, size_t *n,
                        struct vlm_err *err)
{
    *out = NULL;
    *n = 0;
    uint8_t *buf = trymalloc(len / 4 * 3 + 4);
    if (!buf) return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory decoding base64");
    size_t o = 0;
    uint32_t acc = 0;
    int q = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            if (++pad > 2 || q < 2) goto bad_pad;
            continue;
        }
        int8_t v = b64_value(c);
        if (v < 0 || pad) {
            free(buf);
            if (pad)
                return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                                   "invalid base64: data after '=' padding at offset %zu", i);
            return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                               "invalid base64: character 0x%02x at offset %zu", c, i);
        }
        acc = acc << 6 | (uint32_t)v;
        if (++q == 4) {
            buf[o++] = (uint8_t)(acc >> 16);
            buf[o++] = (uint8_t)(acc >> 8);
            buf[o++] = (uint8_t)acc;
            acc = 0;
            q = 0;
        }
    }
    if (q == 1 || (pad && q + pad != 4)) goto bad_pad;
    if (q == 2) buf[o++] = (uint8_t)(acc >> 4);
    if (q == 3) {
        buf[o++] = (uint8_t)(acc >> 10);
        buf[o++] = (uint8_t)(acc >> 2);
    }
    buf[o] = 0;
    *out = buf;
    *n = o;
    return VLM_OK;
bad_pad:
    free(buf);
    return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                       "invalid base64: wrong length or padding");
}

int media_parse_data_url(const char *url, size_t len, size_t max_bytes, uint8_t **bytes,
                         size_t *n, char *mime, size_t mime_cap, struct vlm_err *err)
{
    *bytes = NULL;
    *n = 0;
    if (mime && mime_cap) mime[0] = 0;
    if (len < 5 || strncasecmp(url, "data:", 5) != 0)
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                           "image URL is not a data: URL");
    const char *comma = memchr(url, ',', len);
    if (!comma)
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD, "data URL has no ',' before the data");
    const char *hdr = url + 5;
    size_t hlen = (size_t)(comma - hdr);
    size_t mlen = 0;
    while (mlen < hlen && hdr[mlen] != ';') mlen++;
    if (mime && mime_cap) {
        size_t k = VLM_MIN(mlen, mime_cap - 1);
        for (size_t i = 0; i < k; i++) mime[i] = (char)tolower((unsigned char)hdr[i]);
        mime[k] = 0;
    }
    /* the last parameter must be ";base64" */
    if (hlen < mlen + 7 || strncasecmp(comma - 7, ";base64", 7) != 0)
        return vlm_err_set(err, VLM_EINVAL, MEDIA_HTTP_BAD,
                           "only base64 data URLs are supported (data:<type>;base64,...)");
    const char *payload = comma + 1;
    size_t plen = len - (size_t)(payload - url);
    if (max_bytes && plen / 4 > max_bytes / 3 + max_bytes / 57 + 2)
        return vlm_err_set(err, VLM_ETOOBIG, 413,
                           "data URL payload of %zu characters is over the limit of %zu bytes",
                           plen, max_bytes);
    int rc = media_base64_decode(payload, plen, bytes, n, err);
    if (rc) return rc;
    if (max_bytes && *n > max_bytes) {
        free(*bytes);
        *bytes = NULL;
        size_t got = *n;
        *n = 0;
        return vlm_err_set(err, VLM_ETOOBIG, 413, "image is %zu bytes, over the limit of %zu",
                           got, max_bytes);
    }
    return VLM_OK;
}

int media_decode_data_url(const char *url, size_t len, const struct media_limits *lim,
                          struct media_image *out, struct vlm_err *err)
{
    uint8_t *bytes = NULL;
    size_t n = 0;
    memset(out, 0, sizeof *out);
    /* the declared type is not trusted either way: the bytes decide (media_sniff), so
     * data:image/jpeg;base64,<PNG> decodes as the PNG it is, as in vLLM */
    int rc = media_parse_data_url(url, len, lim ? lim->max_bytes : MEDIA_DEFAULT_MAX_BYTES,
                                  &bytes, &n, NULL, 0, err);
    if (rc) return rc;
    rc = media_decode_image(bytes, n, lim, out, err);
    free(bytes);
    return rc;
}
