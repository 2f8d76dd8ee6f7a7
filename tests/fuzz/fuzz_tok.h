/*
 * fuzz_tok.h: the real Qwen3 tokenizer for the fuzz targets that need one (fuzz_chat.c,
 * fuzz_tokenizer.c), loaded once from fixtures_dir() (tests/fixtures.h). Static
 * helper: include from the fuzz target's .c.
 */
#ifndef VLM_FUZZ_TOK_H
#define VLM_FUZZ_TOK_H

#include <stdio.h>
#include <stdlib.h>

#include "fixtures.h"
#include "server/tokenizer.h"

/* The tokenizer, loaded on the first call and kept for the process (the fuzzer never
 * frees it). If it cannot be loaded, prints why with the target's name `who` and aborts. */
static inline struct tokenizer *fuzz_tokenizer(const char *who)
{
    static struct tokenizer *loaded;
    if (loaded) return loaded;
    char path[4096];
    struct vlm_err err = {0};
    if (tok_load(&loaded, fixtures_tokenizer_json(path, sizeof path), &err)) {
        fprintf(stderr, "%s: %s (set VLM_FIXTURES)\n", who, err.msg);
        abort();
    }
    return loaded;
}

#endif
