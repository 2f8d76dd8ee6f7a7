/*
 * tmpdir.h: one temporary folder per test program, for the tests that write files
 * (tests/unit/test_model_load.c, test_testmodel.c, test_safetensors.c).
 *
 *   tmpdir_make("/tmp/vlm_test_foo_XXXXXX");   (skips the program, 77, if it cannot)
 *   ... sub("a") is tmpdir/a ...
 *   tmpdir_remove();
 *
 * Static helpers: include from the test .c.
 */
#ifndef VLM_TEST_TMPDIR_H
#define VLM_TEST_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

#include "test.h"

static char tmpdir[256];

/* Creates tmpdir from a mkdtemp() template (ending in XXXXXX); skips the program if it
 * cannot. */
static inline void tmpdir_make(const char *tmpl)
{
    snprintf(tmpdir, sizeof tmpdir, "%s", tmpl);
    if (!mkdtemp(tmpdir)) TEST_SKIP("no temporary folder");
}

/* Removes tmpdir and everything in it; a failure is reported on stderr, not as a test. */
static inline void tmpdir_remove(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* tmpdir/name, in one of four rotating static buffers (valid for the next three calls). */
static inline const char *sub(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

#endif
