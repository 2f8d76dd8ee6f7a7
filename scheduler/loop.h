/*
 * loop: the engine thread. Other threads talk to it through a mutex-guarded inbox
 * (loop_submit, loop_abort) and read results from each request's stream; they never
 * touch scheduler state, and no lock is held while the engine computes.
 *
 *   for (;;) {
 *       drain the inbox (new requests → waiting; aborts → finish with their reason)
 *       if nothing to run: sleep on the inbox's condition variable
 *       sched_schedule → engine.execute → sched_update (notify each touched request once)
 *   }
 *
 * Thread-safety: every function here is thread-safe except loop_start/stop, which
 * the owner calls once each.
 */
#ifndef VLM_LOOP_H
#define VLM_LOOP_H

#include "engine/base.h"
#include "engine/batch.h"
#include "engine/executor.h"
#include "scheduler/request.h"
#include "scheduler/sched.h"

struct sched_loop;

/* Creates the scheduler and starts the engine thread, which drives ex.execute (executor.h:
 * one engine or a TP group; the loop does not know which). VLM_EINVAL on a bad config
 * (message in err). */
int loop_start(struct sched_loop **out, const struct sched_config *cfg,
               struct executor ex, struct vlm_err *err);

/* Validates r and queues it; takes a reference (the caller keeps its own). Rejects at once
 * a request that could never run (VLM_EINVAL, 400: prompt + 1 > max_model_len or the whole
 * KV cache, an image larger than the encoder cache, max_tokens < 1), a full queue
 * (VLM_ETOOBIG, 503) or a stopping loop (VLM_EINVAL, 503). A request is submitted once. */
int loop_submit(struct sched_loop *l, struct request *r, struct vlm_err *err);

/* Finishes request req_id with state why (REQ_FINISHED_ABORT for a client that went away,
 * REQ_FINISHED_STOP for a stop string). Idempotent; unknown ids are ignored, so abort only
 * after loop_submit returned. Its blocks are free by the end of the current step. */
void loop_abort(struct sched_loop *l, uint64_t req_id, int why);

/* Stops the thread: requests still queued or running finish as REQ_FINISHED_ABORT (their
 * streams are finished and notified). Graceful drain is the caller's: wait until
 * loop_get_stats shows nothing running or waiting, then stop. Frees l. */
void loop_stop(struct sched_loop *l);

/* Counters for /metrics (lock-free reads). */
void loop_get_stats(struct sched_loop *l, struct sched_stats *out);

#endif
