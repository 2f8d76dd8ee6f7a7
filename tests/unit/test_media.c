/*
 * test_media: the hostile-input table for image bytes, base64 and data URLs (every entry
 * expects a specific error code and HTTP status, and a message), the decompression-bomb
 * limits, and an allocation-failure sweep. Decoding parity with PIL lives in
 * test_vision_prep (goldens). Run under ASan in CI, so "no crash, no leak" is checked too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/media.h"
#include "test.h"

/* ==== helpers: golden files, CRC-32, a PNG header, base64 ==== */

static uint8_t *golden(const char *name, size_t *n)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tests/golden/images/%s", name);
    uint8_t *p = (uint8_t *)vlm_read_file(test_path("VLM_SOURCE_DIR", rel), n);
    if (!p) {
        fprintf(stderr, "cannot read %s\n", rel);
        exit(1);
    }
    return p;
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Signature + a valid IHDR (8-bit RGB) of the given size and nothing else: 33 bytes. */
static size_t png_header(uint8_t *out, uint32_t w, uint32_t h)
{
    memcpy(out, "\x89PNG\r\n\x1a\n", 8);
    put32(out + 8, 13);
    memcpy(out + 12, "IHDR", 4);
    put32(out + 16, w);
    put32(out + 20, h);
    out[24] = 8; /* bit depth */
    out[25] = 2; /* RGB */
    out[26] = out[27] = out[28] = 0;
    put32(out + 29, crc32_png(out + 12, 17));
    return 33;
}

static char *b64(const uint8_t *p, size_t n, const char *prefix)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t pl = strlen(prefix);
    char *s = xmalloc(pl + (n + 2) / 3 * 4 + 1), *o = s + pl;
    memcpy(s, prefix, pl);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = tbl[v >> 18 & 63];
        *o++ = tbl[v >> 12 & 63];
        *o++ = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? tbl[v & 63] : '=';
    }
    *o = 0;
    return s;
}

/* Finds the first JPEG SOFn marker; returns the offset of its height field or 0. */
static size_t jpeg_sof_dims(const uint8_t *p, size_t n)
{
    for (size_t i = 2; i + 9 < n; i++)
        if (p[i] == 0xff && (p[i + 1] == 0xc0 || p[i + 1] == 0xc2)) return i + 5;
    return 0;
}

/* ==== the table ==== */

struct bad_case {
    const char *name;
    uint8_t *data; /* owned */
    size_t n;
    int code, status;
    const char *msg_part; /* expected in the message */
};

static void expect_bad(const struct bad_case *c, const struct media_limits *lim)
{
    struct media_image im = {1, 1, (uint8_t *)1}; /* must come back zeroed */
    struct vlm_err e = {0};
    int rc = media_decode_image(c->data, c->n, lim, &im, &e);
    CHECK_EQ(rc, c->code);
    CHECK_EQ(e.http_status, c->status);
    CHECK(im.rgb == NULL && im.w == 0 && im.h == 0);
    CHECK(e.msg[0] != 0);
    if (c->msg_part && !strstr(e.msg, c->msg_part)) {
        CHECK(!"message");
        fprintf(stderr, "  %s: message \"%s\" lacks \"%s\"\n", c->name, e.msg, c->msg_part);
    }
    printf("   %-34s -> %d/%d %s\n", c->name, rc, e.http_status, e.msg);
}

static struct bad_case mk(const char *name, const uint8_t *src, size_t n, int code, int status,
                          const char *part)
{
    struct bad_case c = {name, xmalloc(n ? n : 1), n, code, status, part};
    if (n) memcpy(c.data, src, n);
    return c;
}

int main(void)
{
    size_t npng, njpg, ngif;
    uint8_t *png = golden("rgb_28x28.png", &npng);
    uint8_t *jpg = golden("jpeg_baseline_320x240.jpg", &njpg);
    uint8_t *gif = golden("gif_160x120.gif", &ngif);

    TEST("good files decode; probe reads the header only") {
        struct media_image im;
        struct vlm_err e = {0};
        CHECK_EQ(media_decode_image(png, npng, NULL, &im, &e), 0);
        CHECK_EQ(im.w, 28);
        CHECK_EQ(im.h, 28);
        media_image_free(&im);
        media_image_free(&im); /* idempotent */
        enum media_format f;
        int32_t w, h;
        CHECK_EQ(media_probe_image(jpg, njpg, &f, &w, &h, &e), 0);
        CHECK_EQ(f, MEDIA_FORMAT_JPEG);
        CHECK_EQ(w, 320);
        CHECK_EQ(h, 240);
        uint8_t hdr[64];
        size_t n = png_header(hdr, 100000, 100000);
        CHECK_EQ(media_probe_image(hdr, n, &f, &w, &h, &e), 0);
        CHECK_EQ(f, MEDIA_FORMAT_PNG);
        CHECK_EQ(w, 100000);
    }

    TEST("malformed image table: clear error, no crash, no leak") {
        struct bad_case cs[24];
        int k = 0;
        uint8_t buf[64], rnd[4096];
        uint32_t s = 12345;
        for (size_t i = 0; i < sizeof rnd; i++) {
            s = s * 1103515245u + 12345u;
            rnd[i] = (uint8_t)(s >> 16);
        }
        cs[k++] = mk("empty", NULL, 0, VLM_EINVAL, 400, "empty");
        cs[k++] = mk("random bytes", rnd, sizeof rnd, VLM_EINVAL, 400, "unrecognized");
        cs[k++] = mk("truncated JPEG (half)", jpg, njpg / 2, VLM_EINVAL, 400, "truncated");
        cs[k++] = mk("truncated JPEG (SOI only)", jpg, 3, VLM_EINVAL, 400, "JPEG");
        cs[k++] = mk("JPEG magic + garbage", jpg, 3, VLM_EINVAL, 400, "JPEG");
        cs[k - 1].data = xrealloc(cs[k - 1].data, 600);
        memcpy(cs[k - 1].data + 3, rnd, 597);
        cs[k - 1].n = 600;
        cs[k++] = mk("truncated PNG (half)", png, npng / 2, VLM_EINVAL, 400, "PNG");
        cs[k++] = mk("truncated PNG (header only)", png, 33, VLM_EINVAL, 400, "truncated");
        cs[k++] = mk("PNG with bad IDAT CRC", png, npng, VLM_EINVAL, 400, "PNG");
        cs[k - 1].data[npng - 12 - 5] ^= 0x55; /* last byte before the IDAT CRC */
        cs[k++] = mk("PNG with bad IHDR CRC", png, npng, VLM_EINVAL, 400, "CRC");
        cs[k - 1].data[19] ^= 1;                  /* width changed, CRC not */
        size_t hn = png_header(buf, 0, 10);
        cs[k++] = mk("PNG zero width", buf, hn, VLM_EINVAL, 400, "PNG");
        hn = png_header(buf, 100000, 100000);
        cs[k++] = mk("PNG 100000x100000 header", buf, hn, VLM_ETOOBIG, 413, "100000x100000");
        size_t sof = jpeg_sof_dims(jpg, njpg);
        CHECK(sof > 0);
        cs[k++] = mk("JPEG 60000x60000 header", jpg, njpg, VLM_ETOOBIG, 413, "60000x60000");
        cs[k - 1].data[sof] = cs[k - 1].data[sof + 2] = 0xea;
        cs[k - 1].data[sof + 1] = cs[k - 1].data[sof + 3] = 0x60;
        cs[k++] = mk("JPEG zero height", jpg, njpg, VLM_EINVAL, 400, "JPEG");
        cs[k - 1].data[sof] = cs[k - 1].data[sof + 1] = 0;
        cs[k++] = mk("GIF magic + garbage", (const uint8_t *)"GIF89a\xff\xff\x00", 9,
#ifdef VLM_HAVE_GIF
                     VLM_EINVAL, 400, "GIF");
#else
                     VLM_EUNSUPPORTED, 400, "not supported");
#endif
        cs[k++] = mk("WebP magic + garbage", (const uint8_t *)"RIFF\x10\0\0\0WEBPVP8 \0", 17,
#ifdef VLM_HAVE_WEBP
                     VLM_EINVAL, 400, "WebP");
#else
                     VLM_EUNSUPPORTED, 400, "not supported");
#endif
        for (int i = 0; i < k; i++) {
            expect_bad(&cs[i], NULL);
            free(cs[i].data);
        }
    }

    TEST("bomb limits: pixels and bytes, checked before decoding") {
        struct media_limits lim = {28 * 28 - 1, 1 << 20};
        struct bad_case c = mk("PNG over max_pixels", png, npng, VLM_ETOOBIG, 413, "limit");
        expect_bad(&c, &lim);
        lim.max_pixels = 28 * 28;
        struct media_image im;
        struct vlm_err e = {0};
        CHECK_EQ(media_decode_image(png, npng, &lim, &im, &e), 0); /* exactly at the limit */
        media_image_free(&im);
        lim.max_bytes = npng - 1;
        c.code = VLM_ETOOBIG;
        c.msg_part = "bytes";
        c.name = "PNG over max_bytes";
        expect_bad(&c, &lim);
        free(c.data);
    }

    TEST("base64: padding, whitespace and garbage") {
        struct {
            const char *in;
            int rc;
            const char *out;
        } t[] = {
            {"QQ==", 0, "A"},        {"QQ", 0, "A"},         {"QUI=", 0, "AB"},
            {"QUJD", 0, "ABC"},      {"Q U\r\nJ D", 0, "ABC"}, {"", 0, ""},
            {"QQ=", VLM_EINVAL, 0},  {"Q", VLM_EINVAL, 0},   {"QUJDR", VLM_EINVAL, 0},
            {"QQ==QQ==", VLM_EINVAL, 0}, {"Q===", VLM_EINVAL, 0}, {"QU@D", VLM_EINVAL, 0},
            {"QUJD-_", VLM_EINVAL, 0}, {"=QUJD", VLM_EINVAL, 0},
        };
        for (size_t i = 0; i < ARRAY_LEN(t); i++) {
            uint8_t *o = NULL;
            size_t n = 99;
            struct vlm_err e = {0};
            int rc = media_base64_decode(t[i].in, strlen(t[i].in), &o, &n, &e);
            CHECK_EQ(rc, t[i].rc);
            if (rc == 0) {
                CHECK_EQ(n, strlen(t[i].out));
                CHECK(o && !memcmp(o, t[i].out, n));
            } else {
                CHECK(o == NULL && n == 0 && e.http_status == 400 && strstr(e.msg, "base64"));
            }
            free(o);
        }
    }

    TEST("data URLs: parsing, content sniffed whatever the MIME type, errors") {
        char *url = b64(png, npng, "DATA:Image/PNG;name=x.png;BASE64,");
        uint8_t *bytes;
        size_t n;
        char mime[32];
        struct vlm_err e = {0};
        CHECK_EQ(media_parse_data_url(url, strlen(url), 0, &bytes, &n, mime, sizeof mime, &e), 0);
        CHECK_STR(mime, "image/png");
        CHECK(n == npng && !memcmp(bytes, png, n));
        free(bytes);
        /* limit on the decoded size, checked before decoding too */
        CHECK_EQ(media_parse_data_url(url, strlen(url), npng - 1, &bytes, &n, NULL, 0, &e),
                 VLM_ETOOBIG);
        CHECK_EQ(e.http_status, 413);
        CHECK_EQ(media_parse_data_url(url, strlen(url), 10, &bytes, &n, NULL, 0, &e),
                 VLM_ETOOBIG);
        struct media_image im;
        CHECK_EQ(media_decode_data_url(url, strlen(url), NULL, &im, &e), 0);
        CHECK_EQ(im.w, 28);
        media_image_free(&im);
        free(url);
        /* JPEG bytes sent as PNG: the bytes decide, as in vLLM */
        url = b64(jpg, njpg, "data:image/png;base64,");
        CHECK_EQ(media_decode_data_url(url, strlen(url), NULL, &im, &e), 0);
        CHECK(im.rgb != NULL);
        media_image_free(&im);
        free(url);
        /* JPEG as image/jpg, and untyped, are fine */
        url = b64(jpg, njpg, "data:image/jpg;base64,");
        CHECK_EQ(media_decode_data_url(url, strlen(url), NULL, &im, &e), 0);
        media_image_free(&im);
        free(url);
        url = b64(jpg, njpg, "data:;base64,");
        CHECK_EQ(media_decode_data_url(url, strlen(url), NULL, &im, &e), 0);
        media_image_free(&im);
        free(url);
        const char *bad[] = {
            "http://example.com/a.png",           /* not a data URL */
            "data:image/png;base64",              /* no comma */
            "data:image/png,iVBORw0KGgo=",        /* not base64 */
            "data:image/png;base64,iVBOR w0K@Ggo", /* bad base64 */
            "data:image/png;base64,",             /* empty image */
            "data:image/png;base64,AAAAAAAA",     /* not an image */
            "data:",
        };
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            memset(&e, 0, sizeof e);
            CHECK_EQ(media_decode_data_url(bad[i], strlen(bad[i]), NULL, &im, &e), VLM_EINVAL);
            CHECK(e.msg[0] && e.http_status == 400 && im.rgb == NULL);
            printf("   %-40s -> %s\n", bad[i], e.msg);
        }
    }

    TEST("allocation failures: every try* failure gives ENOMEM, no leak") {
        const char *files[] = {"rgb_28x28.png", "interlaced_rgb_211x143.png",
                               "jpeg_progressive_250x187.jpg", "gif_160x120.gif",
                               "webp_lossless_200x150.webp"};
        for (size_t f = 0; f < ARRAY_LEN(files); f++) {
            size_t n;
            uint8_t *d = golden(files[f], &n);
            char *url = b64(d, n, "data:;base64,");
            int ok = 0;
            for (long k = 0; k < 20 && !ok; k++) {
                struct media_image im;
                struct vlm_err e = {0};
                vlm_fail_alloc_after(k);
                int rc = media_decode_data_url(url, strlen(url), NULL, &im, &e);
                vlm_fail_alloc_after(-1);
                CHECK(rc == 0 || rc == VLM_ENOMEM || rc == VLM_EUNSUPPORTED);
                if (rc == VLM_ENOMEM) CHECK(e.http_status == 503 && im.rgb == NULL);
                ok = rc != VLM_ENOMEM;
                media_image_free(&im);
            }
            CHECK(ok);
            free(url);
            free(d);
        }
    }

    free(png);
    free(jpg);
    free(gif);
    return test_report();
}
