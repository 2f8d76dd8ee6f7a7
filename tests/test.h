/*
 * test.h: the test harness (in the spirit of redis' testhelp.h). Numbered PASSED/FAILED
 * lines, a summary line "N passed, N failed", exit status 1 on any failure.
 *
 *   TEST("name") { CHECK(x); CHECK_EQ(a, b); CHECK_NEAR(a, b, tol); }
 *   return test_report();
 *
 * Paths: test_path("VLM_MODELS", "gqa4") joins an env var set by ctest with a relative path;
 * test_fixture("qwen3-tokenizer/tokenizer.json") does the same under fixtures_dir()
 * (tests/fixtures.h). Both return a static buffer, valid until the next call.
 */
#ifndef VLM_TEST_H
#define VLM_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fixtures.h"

static int test_failed_, test_passed_, test_num_, test_cur_failed_;
static const char *test_name_;
static char test_name_buf_[256]; /* names may be built in a loop-scoped buffer: keep a copy */

static inline void test_end_(void)
{
    if (!test_name_) return;
    if (test_cur_failed_) test_failed_++;
    else test_passed_++;
    printf("%d - %s: %s\n", ++test_num_, test_name_, test_cur_failed_ ? "FAILED" : "PASSED");
    fflush(stdout);
    test_name_ = NULL;
}

static inline int test_begin_(const char *name)
{
    test_end_();
    size_t i = 0;
    for (; name[i] && i + 1 < sizeof test_name_buf_; i++) test_name_buf_[i] = name[i];
    test_name_buf_[i] = 0;
    test_name_ = test_name_buf_;
    test_cur_failed_ = 0;
    return 1;
}

#define TEST(name) if (test_begin_(name))

#define CHECK(x) do { if (!(x)) { test_cur_failed_ = 1; \
    fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #x); } } while (0)
#define CHECK_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); if (a_ != b_) { \
    test_cur_failed_ = 1; fprintf(stderr, "  %s:%d: %s == %s failed: %lld vs %lld\n", \
    __FILE__, __LINE__, #a, #b, a_, b_); } } while (0)
#define CHECK_NEAR(a, b, tol) do { double a_ = (a), b_ = (b); if (!(fabs(a_ - b_) <= (tol))) { \
    test_cur_failed_ = 1; fprintf(stderr, "  %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", \
    __FILE__, __LINE__, #a, #b, (double)(tol), a_, b_); } } while (0)
#define CHECK_STR(a, b) do { const char *a_ = (a), *b_ = (b); if (!a_ || !b_ || strcmp(a_, b_)) { \
    test_cur_failed_ = 1; fprintf(stderr, "  %s:%d: %s == %s failed: \"%s\" vs \"%s\"\n", \
    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); } } while (0)

static inline const char *test_path(const char *env, const char *rel)
{
    static char buf[4096];
    const char *base = getenv(env);
    snprintf(buf, sizeof buf, "%s/%s", base ? base : ".", rel);
    return buf;
}

static inline const char *test_fixture(const char *rel)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", fixtures_dir(), rel);
    return buf;
}

/* Skip the whole test program (ctest SKIP_RETURN_CODE 77). */
#define TEST_SKIP(why) do { printf("skipped: %s\n", why); exit(77); } while (0)

static inline int test_report(void)
{
    test_end_();
    printf("%d passed, %d failed\n", test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

#endif
