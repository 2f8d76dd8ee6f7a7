/*
 * metrics.c: counters, histograms and the Prometheus text format. See metrics.h.
 */
#include "server/metrics.h"

#include "server/video.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* vLLM's buckets (seconds) */
static const double TTFT_BOUNDS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
                                     0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double ITL_BOUNDS[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                    0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double E2E_BOUNDS[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0};

static void hist_init(struct metrics_hist *h, const double *b, int32_t n)
{
    VLM_ASSERT(n <= METRICS_MAX_BUCKETS);
    h->bounds = b;
    h->n = n;
}

void metrics_init(struct metrics *m)
{
    memset(m, 0, sizeof *m);
    hist_init(&m->ttft, TTFT_BOUNDS, (int32_t)ARRAY_LEN(TTFT_BOUNDS));
    hist_init(&m->itl, ITL_BOUNDS, (int32_t)ARRAY_LEN(ITL_BOUNDS));
    hist_init(&m->e2e, E2E_BOUNDS, (int32_t)ARRAY_LEN(E2E_BOUNDS));
}

void metrics_hist_observe(struct metrics_hist *h, double s)
{
    int32_t i = 0;
    while (i < h->n && s > h->bounds[i]) i++;
    atomic_fetch_add_explicit(&h->count[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)(s > 0 ? s * 1e9 : 0), memory_order_relaxed);
}

void metrics_status(struct metrics *m, int st)
{
    int cls = st / 100;
    if (cls >= 1 && cls <= 5) atomic_fetch_add_explicit(&m->http_requests[cls], 1, memory_order_relaxed);
    static const int codes[6] = {400, 401, 404, 413, 429, 503};
    for (int i = 0; i < 6; i++)
        if (codes[i] == st)
            atomic_fetch_add_explicit(&m->http_errors_by_status[i], 1, memory_order_relaxed);
}

static uint64_t ld(const _Atomic uint64_t *a)
{
    return atomic_load_explicit(a, memory_order_relaxed);
}

static void head(struct strbuf *o, const char *name, const char *type, const char *help)
{
    sb_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One single-value series: its HELP and TYPE lines, then "name{lbl} value". */
static void metric(struct strbuf *o, const char *name, const char *type, const char *help,
                   const char *lbl, int64_t v)
{
    head(o, name, type, help);
    sb_printf(o, "%s{%s} %" PRId64 "\n", name, lbl, v);
}

static void hist(struct strbuf *o, const struct metrics_hist *h, const char *name,
                 const char *help, const char *lbl)
{
    head(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int32_t i = 0; i <= h->n; i++) {
        cum += ld(&h->count[i]);
        if (i < h->n) sb_printf(o, "%s_bucket{%s,le=\"%g\"} %" PRIu64 "\n", name, lbl, h->bounds[i], cum);
        else sb_printf(o, "%s_bucket{%s,le=\"+Inf\"} %" PRIu64 "\n", name, lbl, cum);
    }
    sb_printf(o, "%s_sum{%s} %.6f\n%s_count{%s} %" PRIu64 "\n", name, lbl,
              (double)ld(&h->sum_ns) / 1e9, name, lbl, cum);
}

void metrics_render(const struct metrics *m, const struct sched_stats *st, const char *model,
                    int64_t media_bytes_held, struct strbuf *o)
{
    char lbl[200];
    snprintf(lbl, sizeof lbl, "model_name=\"%s\"", model);
    if (st) {
        metric(o, "vllm:num_requests_running", "gauge",
               "Requests in the running batch.", lbl, st->running);
        metric(o, "vllm:num_requests_waiting", "gauge",
               "Requests waiting to be scheduled.", lbl, st->waiting);
        int64_t usable = st->kv_blocks_total > 1 ? st->kv_blocks_total - 1 : 1;
        double usage = (double)st->kv_blocks_used / (double)usable;
        head(o, "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage; 1 means 100 percent.");
        sb_printf(o, "vllm:kv_cache_usage_perc{%s} %.6f\n", lbl, usage);
        head(o, "vllm:gpu_cache_usage_perc", "gauge", "KV-cache usage (older name).");
        sb_printf(o, "vllm:gpu_cache_usage_perc{%s} %.6f\n", lbl, usage);
        metric(o, "vllm:num_preemptions_total", "counter",
               "Preemptions by recompute.", lbl, st->preempted_total);
        metric(o, "vllm:prefix_cache_queries_total", "counter",
               "Prompt tokens looked up in the prefix cache.", lbl, st->prefix_queried_tokens);
        metric(o, "vllm:prefix_cache_hits_total", "counter",
               "Prompt tokens served by the prefix cache.", lbl, st->prefix_hit_tokens);
        metric(o, "valley:kv_blocks_total", "gauge",
               "KV blocks in the pool (without the null block).", lbl, usable);
        metric(o, "valley:kv_blocks_used", "gauge",
               "KV blocks held by requests.", lbl, st->kv_blocks_used);
        metric(o, "valley:kv_blocks_free", "gauge",
               "KV blocks not held by any request (cached ones included).", lbl,
               usable - st->kv_blocks_used);
        metric(o, "valley:kv_blocks_cached", "gauge",
               "KV blocks in the prefix map.", lbl, st->kv_blocks_cached);
        metric(o, "valley:encoder_cache_hits_total", "counter",
               "Media items found in the encoder cache.", lbl, st->encoder_hits);
        metric(o, "valley:encoder_cache_misses_total", "counter",
               "Media items that had to be encoded.", lbl, st->encoder_misses);
        metric(o, "valley:engine_steps_total", "counter", "Engine steps run.", lbl, st->steps);
        metric(o, "valley:requests_aborted_total", "counter",
               "Scheduler requests finished by abort.", lbl, st->finished[REQ_FINISHED_ABORT]);
    }
    metric(o, "vllm:prompt_tokens_total", "counter",
           "Prompt tokens of finished requests.", lbl, (int64_t)ld(&m->prompt_tokens));
    metric(o, "vllm:generation_tokens_total", "counter",
           "Generated tokens.", lbl, (int64_t)ld(&m->generation_tokens));
    head(o, "vllm:request_success_total", "counter", "Finished choices by finish reason.");
    static const char *reasons[METRICS_FINISH_N] = {"stop", "length", "abort", "error"};
    for (int i = 0; i < METRICS_FINISH_N; i++)
        sb_printf(o, "vllm:request_success_total{%s,finished_reason=\"%s\"} %" PRIu64 "\n", lbl,
                  reasons[i], ld(&m->finished[i]));
    metric(o, "valley:client_disconnects_total", "counter",
           "Requests aborted because the client went away.", lbl,
           (int64_t)ld(&m->client_disconnects));
    metric(o, "valley:http_requests_inflight", "gauge",
           "HTTP requests with generation under way.", lbl,
           atomic_load_explicit(&m->inflight, memory_order_relaxed));
    metric(o, "valley:video_frames_decoded_total", "counter",
           "Video frames decoded for sampling.", lbl, (int64_t)video_frames_decoded());
    if (media_bytes_held >= 0)
        metric(o, "valley:media_inflight_bytes", "gauge",
               "Bytes of --max-inflight-media-bytes held by requests being prepared.", lbl,
               media_bytes_held);
    head(o, "valley:http_responses_total", "counter", "HTTP responses by status class.");
    for (int c = 2; c <= 5; c++)
        sb_printf(o, "valley:http_responses_total{%s,code=\"%dxx\"} %" PRIu64 "\n", lbl, c,
                  ld(&m->http_requests[c]));
    hist(o, &m->ttft, "vllm:time_to_first_token_seconds", "Time to first token.", lbl);
    hist(o, &m->itl, "vllm:inter_token_latency_seconds", "Time between output tokens.", lbl);
    hist(o, &m->e2e, "vllm:e2e_request_latency_seconds", "Request latency.", lbl);
}
