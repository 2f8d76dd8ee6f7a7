/*
 * qwen3: the Qwen3 decoder forward pass (docs/MODEL.md, "Language model"), written once over
 * backend_ops. Internal to the engine: engine.c builds the step (struct step_meta, handed to the
 * backend with set_step) and the image splices, then calls qwen3_forward. Engine thread only.
 */
#ifndef VLM_QWEN3_H
#define VLM_QWEN3_H

#include "engine/engine.h"

/* Image rows to place after the embedding lookup: activation row idx[i] = src row i. */
struct qwen3_splice {
    struct tensor src;  /* (n, hidden) rows of the encoder cache, borrowed */
    const int32_t *idx; /* (n) destination token rows, host, borrowed */
};

/* Runs the decoder over the n_tokens rows of the step set with set_step (KV written at the
 * step's slots) and leaves f32 logits for token rows rows[0..n_rows) in e->logits
 * (n_rows, vocab). */
void qwen3_forward(struct engine *e, int32_t n_tokens, const struct qwen3_splice *splices,
                   int32_t n_splices, const int32_t *rows, int32_t n_rows);

/* The head alone, again, after a forward: f32 logits for token rows rows[0..n_rows) of the
 * last step (their residual stream is still in e->x) into e->logits (n_rows <=
 * max_logit_rows). Prompt logprobs take more rows than one call holds. */
void qwen3_logits(struct engine *e, const int32_t *rows, int32_t n_rows);

#endif
