/*
 * fixtures.h: where the test fixtures are, for the C test, benchmark and fuzz programs
 * (tests/fixtures/README.md). $VLM_FIXTURES if set (ctest sets it), else the folder CMake
 * unpacked tests/fixtures/qwen3-tokenizer.tar.xz into (VLM_DEFAULT_FIXTURES, compiled in by
 * tests/CMakeLists.txt), else build/fixtures relative to the working directory.
 */
#ifndef VLM_FIXTURES_H
#define VLM_FIXTURES_H

#include <stdio.h>
#include <stdlib.h>

#ifndef VLM_DEFAULT_FIXTURES
#define VLM_DEFAULT_FIXTURES "build/fixtures"
#endif

static inline const char *fixtures_dir(void)
{
    const char *env = getenv("VLM_FIXTURES");
    return env && *env ? env : VLM_DEFAULT_FIXTURES;
}

/* The path of the Qwen3 tokenizer.json fixture, written into buf. */
static inline const char *fixtures_tokenizer_json(char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/qwen3-tokenizer/tokenizer.json", fixtures_dir());
    return buf;
}

#endif
