/*
 * request: one generation request as the scheduler sees it. Token ids only (the prompt with
 * every image placeholder already expanded to item->n_tokens pad ids), the media items and
 * their spans, sampling parameters, stop conditions, and the output stream the HTTP side
 * reads.
 *
 * Owners: exactly two, the HTTP side and the scheduler. req_new() returns a request
 * with one reference (the creator's); loop_submit() takes a second one; the last
 * req_release() frees it. Fields are grouped by who may touch them:
 *   - "input" fields are written by the creator before loop_submit() and read-only after;
 *   - "scheduler" fields belong to the engine thread only;
 *   - the stream is shared, always through its mutex (req_stream_* functions).
 * req_retain/req_release and the req_stream_* readers are thread-safe; the rest is not.
 */
#ifndef VLM_REQUEST_H
#define VLM_REQUEST_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/base.h"
#include "engine/batch.h"
#include "engine/grammar.h"
#include "scheduler/constrain.h"

/* States in lifecycle order; everything after REQ_PREEMPTED means finished (vLLM
 * RequestStatus), so req_state_finished() is one comparison. */
enum req_state {
    REQ_WAITING,
    REQ_RUNNING,
    REQ_PREEMPTED,
    REQ_FINISHED_STOP,   /* EOS, a stop token id, or a stop string seen by the server */
    REQ_FINISHED_LENGTH, /* max_tokens, max_model_len, or the whole KV cache */
    REQ_FINISHED_ABORT,  /* client gone, shutdown */
    REQ_FINISHED_ERROR   /* engine failure */
};
static inline bool req_state_finished(int s) { return s > REQ_PREEMPTED; }
const char *req_state_name(int s);

#define REQ_MAX_EOS 8

/* Everything the client asked for besides the prompt. */
struct req_params {
    struct sampling_params sp;
    int32_t max_tokens;                  /* > 0; the scheduler clamps it to the context */
    int32_t stop_ids[VLM_MAX_STOP_IDS];  /* extra stop token ids (stop_token_ids) */
    int32_t n_stop;
    int32_t eos_ids[REQ_MAX_EOS];        /* the model's EOS ids */
    int32_t n_eos;
    bool ignore_eos;
    bool prompt_logprobs;                /* the prompt tokens' logprobs, with prompt_top top
                                          * entries (<= VLM_MAX_TOP_LOGPROBS); such a request
                                          * takes no prefix-cache hit (vLLM v1) */
    int32_t prompt_top;
};

/* The prompt tokens' logprobs (req_params.prompt_logprobs): entry t (1 <= t < n_prompt)
 * is log p(prompt[t] | prompt[0..t)) from the raw logits, with its top list. Written by the
 * engine thread before the first event is pushed; the HTTP side reads it once it has read an
 * event or the finished state (the stream mutex orders the two). */
struct req_prompt_lp {
    float *lp;                           /* owned, (n_prompt); lp[0] unused */
    int32_t *rank;                       /* owned, (n_prompt): rank of prompt[t], 1 = best */
    int32_t *top_ids;                    /* owned, (n_prompt * n_top) */
    float *top_lp;                       /* owned, (n_prompt * n_top) */
    int32_t n_top;
    int32_t n_done;                      /* entries [1, n_done) are written */
};

/* One sampled token as the HTTP side receives it. */
struct req_event {
    int32_t token;
    float logprob;                       /* of token; 0 when logprobs were not asked for */
    bool is_stop;                        /* token is the EOS / stop id that ended the request:
                                          * counted in usage, not rendered as text */
    int32_t n_top;                       /* entries in top_ids/top_lp, = sp.logprobs if > 0 */
    int32_t top_ids[VLM_MAX_TOP_LOGPROBS];
    float top_lp[VLM_MAX_TOP_LOGPROBS];
};

struct req_usage {
    int32_t prompt_tokens;
    int32_t completion_tokens;
    int32_t cached_tokens;               /* prompt tokens served by the prefix cache (first
                                          * admission) */
};

/* Engine thread → HTTP. A queue of events the reader drains, then a final state. */
struct req_stream {
    pthread_mutex_t mu;
    struct req_event *ev;                /* owned, (cap); unread events are [head, n) */
    int32_t head, n, cap;
    int state;                           /* enum req_state; finished once the request ends */
    struct req_usage usage;              /* valid once finished */
};

struct request;
typedef void (*req_notify_fn)(struct request *r, void *user);
typedef void (*req_cleanup_fn)(struct request *r, void *user);

struct request {
    /* ---- input: written before loop_submit(), read-only after ---- */
    uint64_t id;                         /* unique among live requests */
    int32_t *prompt;                     /* owned, (n_prompt) */
    int32_t n_prompt;
    struct mm_span *mm;                  /* owned, (n_mm) sorted by offset, disjoint */
    int32_t n_mm;
    struct mm_item **items;              /* owned, (n_items); each item and its pixels owned */
    int32_t n_items;
    struct req_params params;            /* params.sp.bias_ids / bias point into the request's
                                          * own copies (req_new) */
    struct req_prompt_lp plp;            /* written by the scheduler (see above) */
    req_notify_fn notify;                /* called on the engine thread at most once per step,
                                          * after the step's events are pushed; may be NULL */
    void *notify_user;                   /* borrowed */
    req_cleanup_fn cleanup;              /* called once from the last req_release(); frees
                                          * whatever the creator hung on user (arena) */
    void *user;                          /* the creator's; freed by cleanup */
    struct grammar *grammar;             /* structured outputs: owned reference (released with
                                          * the request); NULL: unconstrained */
    const struct gram_vocab *vocab;      /* borrowed, outlives the request; set with grammar */
    int32_t grammar_after;               /* -1: constrained from the first output token; else
                                          * only after this token (</think>) was sampled */

    /* ---- shared ---- */
    _Atomic int refs;
    struct req_stream stream;
    uint64_t t_arrival_ns;               /* set by req_new */

    /* ---- scheduler (engine thread) ---- */
    int state;                           /* enum req_state */
    int32_t *tokens;                     /* owned, (cap_tokens) prompt then outputs */
    int32_t n_tokens;                    /* prompt + outputs so far */
    int32_t cap_tokens;                  /* max total tokens (context and KV clamps) */
    int32_t n_computed;                  /* tokens whose KV is in blocks */
    int32_t *blocks;                     /* owned, (cap_blocks) block table */
    int32_t n_blocks, cap_blocks;
    uint64_t *block_hash;                /* owned, (cap_blocks) chained hashes of full blocks */
    int32_t n_hashed;                    /* entries of block_hash computed */
    int32_t n_committed;                 /* leading blocks offered to the prefix cache */
    int32_t *mm_row;                     /* owned, (n_mm) >= 0: holds an encoder-cache reference,
                                          * the item's first row; -1: none */
    int32_t mm_done;                     /* spans [0, mm_done) are fully computed */
    int32_t n_cached_first;              /* prefix-hit tokens at the first admission, -1 before */
    int32_t n_preempted;                 /* times preempted */
    struct request *q_prev, *q_next;     /* waiting queue links */
    int32_t run_idx;                     /* index in the running array, -1 if not running */
    struct gram_matcher *gm;             /* owned; structured outputs, see constrain.h */
    uint32_t *mask;                      /* owned, gv_mask_words(vocab): this step's tokens */
    bool gm_on;                          /* the constraint applies to the next token */
    struct cmask cm;                     /* the mask work on gm and mask (constrain.h) */
};

/* Copies prompt. params is copied, with its logit_bias arrays; the prompt-logprob storage
 * is allocated when params->prompt_logprobs. Returns NULL on allocation failure (input-sized). */
struct request *req_new(uint64_t id, const int32_t *prompt, int32_t n_prompt,
                        const struct req_params *params);
/* Adds one media item whose placeholder tokens are prompt[offset, offset + item->n_tokens).
 * Takes ownership of pixels and of item->sig.tiles (a Valley2 image's SigLIP tiles; both
 * freed with free()) whatever the result; the item struct is copied. Spans must be added in increasing, non-overlapping offset order. Returns 0,
 * VLM_EINVAL (span outside the prompt, overlapping or out of order, n_tokens < 1) or
 * VLM_ENOMEM. Before loop_submit only. */
int req_add_item(struct request *r, int32_t offset, const struct mm_item *item, float *pixels);

void req_retain(struct request *r);
/* Drops one reference; the last one runs cleanup and frees everything. */
void req_release(struct request *r);

/* ---- stream: reader side (any thread holding a reference) ----
 * Copies up to max unread events into out and removes them. *state receives the stream's
 * state (finished states only once the last event was pushed) and *usage the usage when
 * finished (either may be NULL). Returns the number of events copied. */
int32_t req_stream_read(struct request *r, struct req_event *out, int32_t max, int *state,
                        struct req_usage *usage);

/* The stream's state now: REQ_WAITING until the request ends, then its finished state
 * (even if events are still unread). Any thread holding a reference. */
int req_stream_state(struct request *r);

/* ---- stream: writer side (engine thread) ---- */
void req_stream_push(struct request *r, const struct req_event *e);
void req_stream_finish(struct request *r, int state, const struct req_usage *usage);

#endif
