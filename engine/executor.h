/*
 * executor: the step interface, whatever runs the step: one engine (engine_executor,
 * engine.h) or a tensor-parallel group of engines (tp_group_executor, tp.h). The program
 * picks one at start-up (server/main.c, valley-generate) and drives only this afterwards,
 * so nothing above the engine knows whether the step is split over ranks.
 *
 * The functions take the executor's impl; the struct is a value (copy it freely) and stays
 * valid as long as what it was made from. Not thread-safe: one thread drives an executor.
 */
#ifndef VLM_EXECUTOR_H
#define VLM_EXECUTOR_H

#include <stdint.h>

#include "engine/batch.h"

struct executor {
    void *impl;
    /* One step: encode b->encode, run the decoder, sample the last row of every sequence
     * with sampling params. out's arrays stay valid until the next call. Returns 0 or a
     * negative VLM_E* code. See engine_execute. */
    int (*execute)(void *impl, const struct batch *b, struct batch_out *out);
    /* The decoder over b, with f32 logits (n_rows, vocab_size) on the host for the token
     * rows rows[] of the step (no sampling). See engine_forward_rows. */
    int (*forward_rows)(void *impl, const struct batch *b, const int32_t *rows, int32_t n_rows,
                        float *logits);
    int32_t kv_blocks;  /* KV blocks incl. the null block 0: the scheduler's pool size */
    int32_t block_size; /* tokens per KV block */
    int32_t vocab_size; /* columns of forward_rows' logits */
};

#endif
