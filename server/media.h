/*
 * media: turns the bytes of an image (as sent in a request: a base64 data URL, or raw file
 * bytes) into an 8-bit RGB raster, the way the reference pipeline sees it after PIL's
 * Image.open(...).convert("RGB"). Called by the workers (workers.h); vision_prep.h takes the
 * result from here to the patch grid.
 *
 * Formats: JPEG (libjpeg-turbo: baseline, progressive, grayscale, CMYK/YCCK with Adobe
 * inversion as PIL does it), PNG (libpng: palette with or without tRNS, 1/2/4/8/16-bit gray,
 * gray+alpha, RGB, RGBA, 16-bit, interlaced), and, when the libraries were found at build
 * time, WebP (VLM_HAVE_WEBP) and GIF first frame (VLM_HAVE_GIF). The format is sniffed from
 * the bytes, never taken from a MIME type (as PIL does).
 *
 * Conversion rules (checked against Pillow 13):
 *   - alpha is dropped, never composited (RGBA -> RGB, LA -> L -> RGB);
 *   - 16-bit samples keep their high byte, except 16-bit grayscale without alpha, which
 *     PIL opens as "I;16" and clips (v > 255 -> 255, else v);
 *   - CMYK JPEG: PIL reads Adobe-inverted samples, so c = 255 - raw, then
 *     r = nk - c*nk/255 (rounded as PIL's MULDIV255) with nk = 255 - k;
 *   - EXIF orientation and gamma/ICC profiles are ignored (PIL ignores them too).
 *
 * Hostile input: the header is read first and the image refused (VLM_ETOOBIG) when
 * width*height > max_pixels or the encoded size > max_bytes, before any pixel memory is
 * allocated. Library errors are caught (setjmp error managers) and returned as VLM_EINVAL
 * with a message; a truncated file is an error (PIL raises "image file is truncated").
 * Nothing here exits, aborts or leaks on bad input.
 *
 * All functions are thread-safe (no global state).
 */
#ifndef VLM_MEDIA_H
#define VLM_MEDIA_H

#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"

/* An 8-bit RGB raster, rows top to bottom, no padding. */
struct media_image {
    int32_t w, h;
    uint8_t *rgb; /* (h, w, 3) owned; NULL when empty */
};

/* Frees the pixels and zeroes *im. Accepts a zeroed image. */
void media_image_free(struct media_image *im);
/* A w x h image filled with (r, g, b). VLM_ENOMEM if the pixels cannot be allocated. */
int media_image_fill(struct media_image *out, int32_t w, int32_t h, uint8_t r, uint8_t g,
                     uint8_t b, struct vlm_err *err);

/* Offers the 2 MiB-aligned interior of a fresh buffer of n >= 8 MiB to transparent huge
 * pages (a hint, THP "madvise" mode); call before first touching it. A 4000x3000 image
 * makes ~36 MB rasters and ~290 MB of patch floats, each written once: with 4 KiB pages
 * the page faults cost about as much as the writes. */
void media_hint_huge_pages(void *p, size_t n);

/* Decompression-bomb limits, checked before decoding. */
struct media_limits {
    int64_t max_pixels; /* width * height */
    size_t max_bytes;   /* encoded size */
};
/* PIL's own bomb threshold (Image.MAX_IMAGE_PIXELS) and 64 MiB of encoded bytes. */
#define MEDIA_DEFAULT_MAX_PIXELS 89478485
#define MEDIA_DEFAULT_MAX_BYTES (64u << 20)

enum media_format {
    MEDIA_FORMAT_UNKNOWN = 0,
    MEDIA_FORMAT_JPEG,
    MEDIA_FORMAT_PNG,
    MEDIA_FORMAT_GIF,
    MEDIA_FORMAT_WEBP,
};
/* Sniffs the format from the first bytes (magic numbers). */
enum media_format media_sniff(const uint8_t *data, size_t n);
/* "image/jpeg", "image/png", "image/gif", "image/webp", or "" for unknown. */
const char *media_format_mime(enum media_format f);

/* Reads only the header: format and size. Fails (VLM_EINVAL) on an unknown or unsupported
 * format (VLM_EUNSUPPORTED) or a header that cannot be parsed. Does not check limits. */
int media_probe_image(const uint8_t *data, size_t n, enum media_format *fmt, int32_t *w,
                      int32_t *h, struct vlm_err *err);

/* Decodes data[0..n) to RGB into *out (owned by the caller: media_image_free). lim may be
 * NULL for the defaults above. On failure *out is left zeroed and the error is one of
 * VLM_EINVAL (malformed), VLM_EUNSUPPORTED (format not built in), VLM_ETOOBIG (over a
 * limit), VLM_ENOMEM (pixels could not be allocated); err->http_status is 400 (413 for
 * VLM_ETOOBIG, 503 for VLM_ENOMEM). */
int media_decode_image(const uint8_t *data, size_t n, const struct media_limits *lim,
                       struct media_image *out, struct vlm_err *err);

/* ==== Base64 and data URLs ==== */

/* Decodes standard base64 (RFC 4648 alphabet; ASCII whitespace skipped, '=' padding
 * optional but nothing may follow it). *out is malloc'ed (owned by the caller, NUL-
 * terminated for convenience, *n excludes the NUL). VLM_EINVAL with the offending offset
 * on a bad character or a dangling final character. */
int media_base64_decode(const char *s, size_t len, uint8_t **out, size_t *n,
                        struct vlm_err *err);

/* Parses "data:[<mime>][;param]*;base64,<payload>" (scheme case-insensitive) and decodes
 * the payload. mime receives the lower-cased media type ("" when absent), truncated to
 * mime_cap - 1 characters; mime may be NULL. Non-base64 data URLs are VLM_EINVAL.
 * max_bytes (0 = no limit) bounds the decoded size (VLM_ETOOBIG), checked from the
 * payload length before decoding. *bytes is owned by the caller (free). */
int media_parse_data_url(const char *url, size_t len, size_t max_bytes, uint8_t **bytes,
                         size_t *n, char *mime, size_t mime_cap, struct vlm_err *err);

/* Convenience for the request path: a data URL (as above) decoded to RGB. The format is
 * sniffed from the bytes whatever the declared MIME type says (GIF bytes sent as image/png
 * decode as GIF, as in vLLM). */
int media_decode_data_url(const char *url, size_t len, const struct media_limits *lim,
                          struct media_image *out, struct vlm_err *err);

#endif
