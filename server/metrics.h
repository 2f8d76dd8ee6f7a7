/*
 * metrics: the server's counters and latency histograms, rendered as Prometheus text for
 * GET /metrics together with the scheduler's counters (struct sched_stats). Names follow
 * vLLM where vLLM has the metric (vllm:num_requests_running, vllm:kv_cache_usage_perc,
 * vllm:time_to_first_token_seconds, ...); ours are prefixed valley:.
 *
 * Every update is a relaxed atomic add, so any thread may record (HTTP thread, workers) and
 * rendering never takes a lock.
 */
#ifndef VLM_METRICS_H
#define VLM_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "engine/base.h"
#include "scheduler/sched.h"

#define METRICS_MAX_BUCKETS 24

struct metrics_hist {
    const double *bounds;                       /* borrowed, (n) upper bounds in seconds */
    int32_t n;
    _Atomic uint64_t count[METRICS_MAX_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    _Atomic uint64_t sum_ns;
};

enum metrics_finish { METRICS_FINISH_STOP, METRICS_FINISH_LENGTH, METRICS_FINISH_ABORT,
                      METRICS_FINISH_ERROR, METRICS_FINISH_N };

struct metrics {
    struct metrics_hist ttft, itl, e2e;
    _Atomic uint64_t prompt_tokens, generation_tokens;
    _Atomic uint64_t finished[METRICS_FINISH_N];   /* choices by finish reason */
    _Atomic uint64_t http_requests[6];             /* by status class: 2xx 4xx 5xx ... */
    _Atomic uint64_t http_errors_by_status[6];     /* 400 401 404 413 429 503 */
    _Atomic uint64_t client_disconnects;           /* requests aborted because the client left */
    _Atomic int64_t inflight;                      /* HTTP requests with generation under way */
};

void metrics_init(struct metrics *m);
void metrics_hist_observe(struct metrics_hist *h, double seconds);
void metrics_status(struct metrics *m, int http_status);
/* Appends the Prometheus text to out. st may be NULL; media_bytes_held: the bytes of the
 * in-flight media budget (--max-inflight-media-bytes) held now, < 0 when there is none. */
void metrics_render(const struct metrics *m, const struct sched_stats *st, const char *model_name,
                    int64_t media_bytes_held, struct strbuf *out);

#endif
