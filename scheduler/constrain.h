/*
 * constrain: structured outputs on the scheduler side. A request with a grammar
 * (request.h) gets a matcher when the scheduler takes it (sched_add); the mask of allowed
 * tokens for its next sampled token (engine/grammar.h) is computed on a helper thread while
 * the engine runs the step, and joined just before sampling (struct batch's masks_ready):
 * masks are only needed at sampling time, so their cost leaves the step's critical path.
 * Every sampled token then advances the matcher, and the next mask is posted at once.
 *
 *   - EOS (the model's EOS ids and stop_token_ids) is allowed only where the grammar may
 *     end; a grammar that has ended and admits nothing more finishes the request (stop).
 *   - With grammar_after set (thinking on: the </think> id), nothing is constrained until
 *     that token is sampled; the reasoning before it is free text.
 *   - A mask with no token (cannot happen with the compilers in server/structured.c) allows
 *     EOS, so the request ends instead of sampling garbage.
 *   - First use of a grammar state walks the whole vocabulary trie (0.1-1 s on Qwen3's
 *     vocabulary). Such a "cold" mask runs on the helper while the sequence sits out the
 *     steps until it is ready (constrain_hold); the rest of the batch goes on. A mask whose
 *     parts are all cached ("warm", tens of µs) is waited for at sampling time: if the
 *     helper has not started it yet, the joining thread computes it itself.
 *
 * Threads: a pool of helper threads per scheduler (sched_config.mask_threads, one queue),
 * started with the first constrained request (an unconstrained server starts none). A struct cmask belongs to the engine thread except
 * between cmask_post and the join (or cancel), when the helper may hold it; the masks are
 * the same bits as computing them serially.
 */
#ifndef VLM_CONSTRAIN_H
#define VLM_CONSTRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/grammar.h"

struct request;
struct mask_helper;

/* One sequence's mask work: the matcher, where the mask goes, and the tokens that end the
 * output (allowed where the grammar may end). */
struct cmask {
    struct gram_matcher *gm;        /* owned */
    const struct gram_vocab *vocab; /* borrowed */
    uint32_t *bits;                 /* owned, gv_mask_words(vocab) */
    const int32_t *end_ids[2];      /* borrowed: EOS ids, stop ids */
    int32_t n_end[2];
    /* the helper's (under its lock) */
    int st;                         /* CM_* in constrain.c */
    bool cold;                      /* posted with uncached parts: a trie walk */
    bool ok;                        /* bits hold the mask (false: allocation failure) */
    struct cmask *next;             /* queue link */
};

/* The mask of c's matcher now, with the end tokens where the grammar may end, into c->bits
 * (serially, on the calling thread). Returns the tokens allowed, or -1 on allocation
 * failure. */
int32_t cmask_fill(struct cmask *c);

/* The helper: n_threads (>= 1) threads taking posted masks in order. NULL when no thread can
 * start: then every post computes at once. */
struct mask_helper *mask_helper_new(int n_threads);
/* Stops the thread. No job may be queued or running (join or cancel them first). NULL ok. */
void mask_helper_free(struct mask_helper *h);

/* Queues c's next mask (h NULL: computes it now). Notes whether it is cold. */
void cmask_post(struct mask_helper *h, struct cmask *c);
/* c's posted mask is cold and not computed yet. */
bool cmask_pending_cold(struct mask_helper *h, const struct cmask *c);
/* Waits for c's posted mask (computing it here if the helper has not started it): c->bits,
 * or NULL on failure or when nothing was posted. c belongs to the caller afterwards. */
const uint32_t *cmask_join(struct mask_helper *h, struct cmask *c);
/* Drops c's posted mask: unqueued, or waited for when under way. */
void cmask_cancel(struct mask_helper *h, struct cmask *c);

/* ---- requests (engine thread) ---- */

/* Sets up r's matcher and posts its first mask (sched_add); nothing for an unconstrained
 * request. Allocation failure leaves r without a matcher: it then finishes with an error at
 * its first token. */
void constrain_start(struct mask_helper *h, struct request *r);
/* r's next sampled token needs a mask that is still a cold walk on the helper: a step must
 * not sample r yet. */
bool constrain_hold(struct mask_helper *h, const struct request *r);
/* Joins r's mask for the step about to sample: NULL when r is unconstrained now (or on
 * allocation failure: the request then finishes with an error at its next token). */
const uint32_t *constrain_mask(struct mask_helper *h, struct request *r);
/* Advances r's matcher with tok (already appended) and posts the next mask. Returns 0 to go
 * on, REQ_FINISHED_STOP when the grammar is complete and admits nothing more,
 * REQ_FINISHED_ERROR when tok does not fit (a matcher that could not be built or a mask that
 * was not applied). */
int constrain_advance(struct mask_helper *h, struct request *r, int32_t tok);
/* r is finishing: its mask work is dropped (waited for if under way). */
void constrain_stop(struct mask_helper *h, struct request *r);

#endif
