/*
 * sched: continuous batching (vLLM v1 Scheduler). Each request has n_computed and n_tokens;
 * every step hands out a token budget so that computed catches up. Chunked prefill, prefix
 * hits (computed advances with no compute) and decode are one operation.
 *
 *   sched_schedule  running requests first (oldest first), then waiting ones (FCFS) within
 *                   max_num_batched_tokens, max_num_seqs, the encoder-cache budget and the
 *                   KV pool. When blocks run out, the most recently admitted running request
 *                   is preempted by recompute to the FRONT of the waiting queue. Fills a
 *                   struct batch (engine/batch.h) that is valid until the next call.
 *   sched_update    appends the sampled tokens, pushes stream events, checks stop conditions,
 *                   offers full blocks to the prefix cache, finishes requests, notifies each
 *                   touched request once.
 *
 * Encoder cache: the engine keeps projector rows in an arena of encoder_cache_tokens rows
 * (both must be given the same size); the scheduler places the items in it, as it hands out
 * KV blocks: batch.encode lists the items to encode this step with their first rows
 * (batch.encode_row), batch_seq.mm_row where each span's item lives. A request holds a
 * reference on an item from the first step whose chunk overlaps the item's span until its
 * computed tokens pass the span's end (or it is preempted or finished); only unreferenced
 * items are evicted, least recently used first. An image used by several requests is
 * encoded once per residency. A failed step's new items are forgotten (sched_fail).
 *
 * Engine thread only (loop.c), except sched_validate() which any thread may call.
 */
#ifndef VLM_SCHED_H
#define VLM_SCHED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/base.h"
#include "engine/batch.h"
#include "scheduler/request.h"

struct sched_config {
    int32_t block_size;             /* tokens per KV block */
    int32_t n_blocks;               /* KV blocks incl. the null block (engine_kv_blocks) */
    int32_t max_num_seqs;           /* sequences per step */
    int32_t max_num_batched_tokens; /* tokens per step */
    int32_t max_model_len;          /* prompt + output */
    bool enable_prefix_caching;
    int32_t encoder_cache_tokens;   /* encoder cache budget, in projector rows */
    int32_t max_mm_item_tokens;     /* largest item the server can produce (0: unknown);
                                     * a budget below it is a config error */
    int32_t max_waiting;            /* queued requests cap; 0: unlimited */
    double max_step_ms;             /* loop.c sizes prefill chunks so that a step takes about
                                     * this long (measured step by step); 0: chunks of up to
                                     * max_num_batched_tokens */
    int32_t mask_threads;           /* structured outputs' mask threads (constrain.h); 0: 1 */
};

/* Counters for /metrics. Written by the engine thread; read anywhere. */
struct sched_stats {
    int64_t running, waiting;
    int64_t preempted_total;
    int64_t kv_blocks_used, kv_blocks_total;  /* used: held by some request */
    int64_t kv_blocks_cached;                 /* in the prefix map (held or free) */
    int64_t prefix_hit_tokens, prefix_queried_tokens;
    int64_t encoder_hits, encoder_misses;     /* item needed: resident / had to encode */
    int64_t encoder_tokens_used;
    int64_t tokens_in, tokens_out;            /* tokens computed (recompute included), sampled */
    int64_t steps;
    int64_t finished[7];                      /* by enum req_state (finished ones) */
};

struct sched;

/* The prefill chunk: most tokens one request whose prompt (or recompute) is not yet
 * computed gets in one step; decodes are never cut. Starts at max_num_batched_tokens. */
void sched_set_prefill_chunk(struct sched *s, int32_t n);
int32_t sched_prefill_chunk(const struct sched *s);

/* Checks cfg; VLM_EINVAL with a message on a bad one. */
struct sched *sched_new(const struct sched_config *cfg, struct vlm_err *err);
/* Finishes every request still held as REQ_FINISHED_ABORT (notifying) and frees. */
void sched_free(struct sched *s);

/* Whether r could ever run under cfg; any thread, r not yet submitted. On success sizes
 * r's token and block arrays (clamping max tokens to the context and the whole KV cache).
 * Errors: VLM_EINVAL / 400 (empty prompt, prompt + 1 > max_model_len or > the whole cache,
 * an item larger than the encoder cache), VLM_ENOMEM / 503. */
int sched_validate(const struct sched_config *cfg, struct request *r, struct vlm_err *err);

/* Queues a validated request at the back of the waiting queue. Takes a reference: one
 * reference the caller holds now belongs to the scheduler, dropped when r finishes. */
void sched_add(struct sched *s, struct request *r);

/* Finishes request id (waiting or running) with state why (a finished state): blocks and
 * encoder references are released now, the stream is finished and notified. Returns false
 * if no such request is held (already finished: aborts are idempotent). */
bool sched_abort_id(struct sched *s, uint64_t id, int why);

/* Plans one step into *b (storage owned by s, valid until the next sched_schedule).
 * Returns the number of sequences; 0 means nothing to run. */
int32_t sched_schedule(struct sched *s, struct batch *b);

/* Applies the engine's output for the batch returned by the last sched_schedule. */
void sched_update(struct sched *s, const struct batch *b, const struct batch_out *out);

/* The engine failed on b: every request in it finishes with REQ_FINISHED_ERROR, and the
 * items b was to encode leave the encoder cache. */
void sched_fail(struct sched *s, const struct batch *b);

/* Snapshot of the counters (any thread). */
void sched_get_stats_raw(const struct sched *s, struct sched_stats *out);

/* Number of requests held (running + waiting). */
int32_t sched_n_live(const struct sched *s);

/* O(n_blocks + n_requests) invariant check for tests; aborts with file:line on a break:
 * every block is held or free exactly once, each refcount equals the number of tables
 * holding the block, waiting requests hold nothing, encoder references add up. */
void sched_check(const struct sched *s);

#endif
