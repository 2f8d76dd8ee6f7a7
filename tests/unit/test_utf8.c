/*
 * test_utf8: the server's UTF-8 helpers (server/utf8.h): the character classifier on valid,
 * incomplete and invalid sequences (overlong forms, surrogates, above U+10FFFF), the two
 * lossy writers (a maximal invalid subpart per U+FFFD and a streamed incomplete tail, against
 * one U+FFFD per bad or NUL byte), and encode/decode round trips.
 */
#include <string.h>

#include "server/utf8.h"
#include "test.h"

#define R UTF8_REPLACEMENT

static void test_classify(void)
{
    TEST("utf8_char: lengths, incomplete beginnings, maximal invalid subparts") {
        CHECK_EQ(utf8_char((const unsigned char *)"a", 1), 1);
        CHECK_EQ(utf8_char((const unsigned char *)"\xc3\xa9", 2), 2);
        CHECK_EQ(utf8_char((const unsigned char *)"\xe2\x82\xac", 3), 3);
        CHECK_EQ(utf8_char((const unsigned char *)"\xf0\x9f\x98\x80", 4), 4);
        CHECK_EQ(utf8_char((const unsigned char *)"\xf0\x9f", 2), 0);
        CHECK_EQ(utf8_char((const unsigned char *)"\xe2", 1), 0);
        CHECK_EQ(utf8_char((const unsigned char *)"\xc0\xaf", 2), -1);     /* overlong */
        CHECK_EQ(utf8_char((const unsigned char *)"\xe0\x80\x80", 3), -1); /* overlong */
        CHECK_EQ(utf8_char((const unsigned char *)"\xed\xa0\x80", 3), -1); /* surrogate */
        CHECK_EQ(utf8_char((const unsigned char *)"\xf4\x90\x80\x80", 4), -1); /* > 10FFFF */
        CHECK_EQ(utf8_char((const unsigned char *)"\xe2\x82x", 3), -2);
        CHECK_EQ(utf8_char((const unsigned char *)"\x80", 1), -1);
        CHECK(utf8_valid("a\xc3\xa9\0b", 5));
        CHECK(!utf8_valid("a\xc3", 2));
        CHECK(utf8_valid("", 0));
    }
}

static void test_writers(void)
{
    TEST("utf8_lossy: one U+FFFD per maximal subpart; a streamed tail is kept back") {
        struct strbuf b = {0};
        CHECK_EQ(utf8_lossy(&b, "a\xe2\x82x\xff", 5, true), 5);
        CHECK_STR(b.s, "a" R "x" R);
        b.n = 0;
        CHECK_EQ(utf8_lossy(&b, "ok\xf0\x9f", 4, false), 2);
        CHECK_STR(b.s, "ok");
        b.n = 0;
        CHECK_EQ(utf8_lossy(&b, "ok\xf0\x9f", 4, true), 4);
        CHECK_STR(b.s, "ok" R);
        sb_free(&b);
    }
    TEST("utf8_sanitize: one U+FFFD per bad byte, NUL included") {
        struct strbuf b = {0};
        utf8_sanitize(&b, "a\xc3(b\xe2\x82\xac\xf0\x9f", 9);
        CHECK_STR(b.s, "a" R "(b\xe2\x82\xac" R R);
        b.n = 0;
        utf8_sanitize(&b, "x\0y", 3);
        CHECK_STR(b.s, "x" R "y");
        sb_free(&b);
        struct strbuf e = {0};
        utf8_sanitize(&e, "", 0);
        CHECK(e.s != NULL && e.n == 0);
        sb_free(&e);
    }
    TEST("encode / decode round trip") {
        const uint32_t cps[] = {0x24, 0xe9, 0x20ac, 0x1f600, 0x10ffff};
        for (size_t i = 0; i < ARRAY_LEN(cps); i++) {
            char o[4];
            uint32_t back = 0;
            int n = utf8_encode(cps[i], o);
            CHECK_EQ(utf8_char((const unsigned char *)o, (size_t)n), n);
            CHECK_EQ(utf8_decode((const unsigned char *)o, (size_t)n, &back), n);
            CHECK_EQ(back, cps[i]);
        }
    }
}

int main(void)
{
    test_classify();
    test_writers();
    return test_report();
}
