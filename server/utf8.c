/*
 * utf8.c: validity, decoding and encoding, and the two lossy writers. See utf8.h.
 */
#include "server/utf8.h"

#include <string.h>

int utf8_char(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    if (b < 0x80) return 1;
    int w;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) w = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        w = 3;
        if (b == 0xE0) lo = 0xA0; /* no overlong forms */
        if (b == 0xED) hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        w = 4;
        if (b == 0xF0) lo = 0x90; /* no overlong forms */
        if (b == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return -1;
    }
    if (n < 2) return 0;
    if (s[1] < lo || s[1] > hi) return -1;
    for (int k = 2; k < w; k++) {
        if ((size_t)k >= n) return 0;
        if (!utf8_is_cont(s[k])) return -k;
    }
    return w;
}

bool utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) { i++; continue; }
        int k = utf8_char(s + i, n - i);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    if (b < 0x80 || n < 2) { *cp = b; return 1; }
    if (b < 0xE0) { *cp = ((b & 0x1Fu) << 6) | (s[1] & 0x3Fu); return 2; }
    if (b < 0xF0 || n < 4) {
        if (n < 3) { *cp = b; return 1; }
        *cp = ((b & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return 3;
    }
    *cp = ((b & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
    return 4;
}

int utf8_encode(uint32_t cp, char *o)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t utf8_lossy(struct strbuf *out, const char *str, size_t n, bool final)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; }
        int k = utf8_char(s + i, n - i);
        if (k > 0) { i += (size_t)k; continue; }
        sb_append(out, str + run, i - run);
        if (k == 0) { /* incomplete tail: s[i..n) */
            if (!final) return i;
            sb_puts(out, UTF8_REPLACEMENT);
            return n;
        }
        sb_puts(out, UTF8_REPLACEMENT);
        i += (size_t)-k;
        run = i;
    }
    sb_append(out, str + run, n - run);
    return n;
}

void utf8_sanitize(struct strbuf *out, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;
    while (i < n) {
        int k = s[i] ? utf8_char(s + i, n - i) : -1;
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        if (i > run) sb_append(out, str + run, i - run);
        sb_puts(out, UTF8_REPLACEMENT);
        i++;
        run = i;
    }
    if (n > run) sb_append(out, str + run, n - run);
    if (!out->s) sb_append(out, "", 0);
}
