/*
 * constrain: structured outputs on the scheduler side. A request with a grammar
 * (request.h) gets a matcher on its first sampled step; every step that samples for it
 * computes the mask of allowed tokens (engine/grammar.h) into r->mask, which the batch hands
 * to the engine (batch_seq.mask, applied before sampling); every sampled token then advances
 * the matcher.
 *
 *   - EOS (the model's EOS ids and stop_token_ids) is allowed only where the grammar may
 *     end; a grammar that has ended and admits nothing more finishes the request (stop).
 *   - With grammar_after set (thinking on: the </think> id), nothing is constrained until
 *     that token is sampled; the reasoning before it is free text.
 *   - A mask with no token (cannot happen with the compilers in server/structured.c) allows
 *     EOS, so the request ends instead of sampling garbage.
 *
 * Engine thread only, like the scheduler.
 */
#ifndef VLM_CONSTRAIN_H
#define VLM_CONSTRAIN_H

#include <stdint.h>

#include "scheduler/request.h"

/* The mask for r's next sampled token, or NULL when r is unconstrained now (or on
 * allocation failure: the request then finishes with an error at its next token). */
const uint32_t *constrain_mask(struct request *r);

/* Advances r's matcher with tok (already appended). Returns 0 to go on, REQ_FINISHED_STOP
 * when the grammar is complete and admits nothing more, REQ_FINISHED_ERROR when tok does not
 * fit (a matcher that could not be built or a mask that was not applied). */
int constrain_advance(struct request *r, int32_t tok);

#endif
