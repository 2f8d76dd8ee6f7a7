/*
 * utf8: the server's one set of UTF-8 helpers. Validity follows the Unicode standard (no
 * overlong forms, no surrogates, nothing above U+10FFFF); the two lossy writers differ only
 * in how much one U+FFFD replaces:
 *
 *   utf8_lossy     a maximal invalid subpart per U+FFFD, as Rust's from_utf8_lossy (and so
 *                  the Hugging Face tokenizers' decoder) does; can stop before an incomplete
 *                  tail so that a stream keeps it for the next piece (tokenizer.c);
 *   utf8_sanitize  one U+FFFD per invalid byte, NUL bytes included (they cannot travel in a
 *                  C string): for text that is already whole (responses, openai.c, http.c).
 *
 * Pure functions; thread-safe.
 */
#ifndef VLM_UTF8_H
#define VLM_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"

#define UTF8_REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

/* A continuation byte (10xxxxxx): not the start of a character. */
static inline bool utf8_is_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* How many bytes starting at s[0] (n > 0 bytes available) form one character: its length
 * when complete and valid, 0 when s[0..n) is a valid but incomplete beginning of one, or -k
 * when the first k bytes are a maximal invalid subpart. */
int utf8_char(const unsigned char *s, size_t n);
/* s[0..n) is valid UTF-8 (NUL bytes allowed). */
bool utf8_valid(const char *s, size_t n);
/* Decodes the character at s of valid UTF-8 (n > 0 bytes left) into *cp; returns its
 * length (1 for a byte that does not start a complete character). */
int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Writes code point cp (<= 0x10FFFF) to out (4 bytes of room); returns the byte count. */
int utf8_encode(uint32_t cp, char *out);

/* Appends s[0..n) to out with each maximal invalid subpart replaced by U+FFFD. With
 * final false an incomplete character at the end is not written: returns where it starts
 * (else n). */
size_t utf8_lossy(struct strbuf *out, const char *s, size_t n, bool final);
/* Appends s[0..n) to out with each invalid or NUL byte replaced by U+FFFD; out->s is
 * non-NULL afterwards, also for n == 0. */
void utf8_sanitize(struct strbuf *out, const char *s, size_t n);

#endif
