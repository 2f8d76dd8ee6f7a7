/*
 * fuzz_safetensors: libFuzzer target over the safetensors header parser on a memory
 * buffer (st_parse). Any input must give either a set whose every tensor lies inside the
 * buffer with a consistent size, or an error with a message; never a crash or a leak.
 */
#include "engine/safetensors.h"

#include <stdio.h>
#include <stdlib.h>

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_set *s = NULL;
    struct vlm_err err = {0};
    int rc = st_parse(&s, data, size, "fuzz", &err);
    if (rc) {
        if (s || !err.msg[0]) abort(); /* an error always comes with a message */
        return 0;
    }
    uint8_t acc = 0;
    for (int32_t i = 0; i < st_count(s); i++) {
        const struct st_tensor *t = st_get(s, i);
        const uint8_t *p = t->data;
        if (t->nbytes && (p < data || p + t->nbytes > data + size)) abort();
        if (st_find(s, t->name) != t) abort();
        for (size_t k = 0; k < t->nbytes; k++) acc ^= p[k]; /* touch every byte (ASan) */
    }
    sink = acc; /* keeps the reads */
    st_close(s);
    return 0;
}
