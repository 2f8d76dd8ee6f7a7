/*
 * workers: the server's small worker pool, a FIFO of jobs run by N threads. Jobs may block
 * (media fetches, big images, prompt preparation: prep.h); the HTTP thread only enqueues.
 *
 * Thread safety: workers_submit and workers_pending may be called from any thread;
 * workers_new and workers_free by the owner, once each.
 */
#ifndef VLM_WORKERS_H
#define VLM_WORKERS_H

#include <stdint.h>

#include "engine/base.h"

struct workers;
typedef void (*workers_fn)(void *arg);

/* Starts n_threads workers (>= 1). Returns NULL if no thread could be started. */
struct workers *workers_new(int32_t n_threads);
/* Queues fn(arg); workers run jobs in submission order. Never blocks for long. */
void workers_submit(struct workers *p, workers_fn fn, void *arg);
/* Jobs queued or running right now. */
int32_t workers_pending(struct workers *p);
/* Runs what is still queued, joins the workers and frees the pool. NULL ok. */
void workers_free(struct workers *p);

#endif
