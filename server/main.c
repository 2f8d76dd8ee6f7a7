/*
 * valley-server: wiring only. config -> model (the embedded default when --model is not
 * given) -> tokenizer -> engine -> scheduler thread -> workers -> HTTP. Then the main
 * thread waits for SIGTERM/SIGINT and drains: /ready turns 503 at once, new requests get
 * 503, requests in flight may finish for --shutdown-timeout seconds, then the rest are
 * aborted (media fetches cancelled, streams end with finish_reason "abort" and [DONE], the
 * others get 503) and, once every connection has been answered and closed (an engine step in
 * flight ends first), the HTTP daemon stops and the process exits 0. A second signal during
 * the drain aborts at once.
 */
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "engine/engine.h"
#include "engine/model.h"
#include "engine/testmodel.h"
#include "engine/tp.h"
#include "scheduler/loop.h"
#include "server/chat.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/prep.h"
#include "server/workers.h"
#include "server/tokenizer.h"
#include "server/video.h"
#include "server/vision_prep.h"

/* How long requests may take to end once aborted: the engine's step in flight, the idle
 * timeout of clients that stopped reading. Past it the process leaves at once (a bug). */
#define SERVER_ABORT_GRACE_S 120

/* The embedded default model lives in $XDG_CACHE_HOME/valley/default-model (or
 * ~/.cache/...); it is written once and reused. */
static int default_model_dir(char *dir, size_t cap, struct vlm_err *err)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0]) snprintf(dir, cap, "%s/valley/default-model", xdg);
    else if (home && home[0]) snprintf(dir, cap, "%s/.cache/valley/default-model", home);
    else snprintf(dir, cap, "/tmp/valley-default-model");
    struct testmodel_params p;
    testmodel_defaults(&p);
    p.greeting = true; /* a first chat request says what is answering (testmodel.h) */
    if (testmodel_up_to_date(dir, &p)) return 0;
    log_info("server: writing the embedded default model to %s", dir);
    return testmodel_write(dir, &p, err);
}

static void log_examples(const char *host, int port, const char *model, bool key)
{
    const char *h = !host[0] || !strcmp(host, "0.0.0.0") || !strcmp(host, "::") ? "127.0.0.1" : host;
    log_info("server: try it%s:\n"
             "  curl http://%s:%d/v1/chat/completions -H 'Content-Type: application/json'%s \\\n"
             "    -d '{\"model\": \"%s\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}], "
             "\"max_tokens\": 64}'\n"
             "  python3 -c 'import os; from openai import OpenAI; c = OpenAI(base_url=\"http://%s:%d/v1\", "
             "api_key=os.environ.get(\"VALLEY_API_KEY\", \"EMPTY\")); print(c.chat.completions.create("
             "model=\"%s\", messages=[{\"role\": \"user\", \"content\": \"Hello!\"}], "
             "max_tokens=64).choices[0].message.content)'",
             key ? " (with the key in $VALLEY_API_KEY)" : "", h, port,
             key ? " -H \"Authorization: Bearer $VALLEY_API_KEY\"" : "", model, h, port, model);
}

/* Logs the ids the image markers <im_start>/<im_end> tokenize to (the prompt wraps images
 * in them unless config.json says otherwise, docs/MODEL.md, "Prompt construction"); warns
 * when images are wrapped and a marker is not a single added token. */
static void log_image_markers(const struct tokenizer *tok, bool wrap)
{
    static const char *const markers[] = {"<im_start>", "<im_end>"};
    struct strbuf line = {0};
    bool single = true;
    for (size_t i = 0; i < ARRAY_LEN(markers); i++) {
        struct i32_vec ids = {0};
        tok_encode(tok, markers[i], strlen(markers[i]), &ids, NULL);
        single &= ids.n == 1 && tok_is_added(tok, ids.v[0]);
        sb_printf(&line, "%s%s = [", i ? ", " : "", markers[i]);
        for (size_t k = 0; k < ids.n; k++) sb_printf(&line, k ? ", %d" : "%d", ids.v[k]);
        sb_puts(&line, "]");
        i32_vec_free(&ids);
    }
    if (single || !wrap)
        log_info("server: image markers %s (images %swrapped)", line.s, wrap ? "" : "not ");
    else
        log_warn("server: image markers %s: not single added tokens in this tokenizer, so a "
                 "wrapped image is not spelled as the model was trained", line.s);
    sb_free(&line);
}

static void log_stop_ids(const struct tokenizer *tok, const int32_t *ids, int32_t n)
{
    struct strbuf line = {0};
    for (int32_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *b = tok_bytes(tok, ids[i], &len);
        sb_printf(&line, "%s%d %.*s", i ? ", " : "", ids[i], b ? (int)VLM_MIN(len, 40) : 1,
                  b ? b : "?");
    }
    log_info("server: generation stops at %s (ignore_eos overrides)", n ? line.s : "nothing");
    sb_free(&line);
}

int main(int argc, char **argv, char **envp)
{
    struct config cfg;
    struct vlm_err err = {0};
    config_defaults(&cfg);
    int rc = config_parse(&cfg, argc, argv, envp, &err);
    if (rc == 1) {
        config_destroy(&cfg);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "valley-server: %s\n", err.msg);
        config_destroy(&cfg);
        return 2;
    }
    vlm_log_level = cfg.log.level;
    config_dump(&cfg);

    /* signals: handled by sigwait in this thread only; every thread started below inherits
     * the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct model model = {0};
    struct engine eng = {0};
    struct tp_group *tp = NULL; /* --tensor-parallel-size > 1: the ranks (eng stays unused) */
    struct executor ex;         /* what the scheduler drives: eng, or the tp group */
    struct tokenizer *tok = NULL;
    struct sched_loop *loop = NULL;
    struct workers *workers = NULL;
    struct http_server *http = NULL;
    struct media_budget *media_budget = NULL;
    struct metrics metrics;
    metrics_init(&metrics);
    int exit_code = 1;

    char dir[4096];
    if (!cfg.engine.model || !cfg.engine.model[0]) {
        if (default_model_dir(dir, sizeof dir, &err)) goto fail;
    } else {
        snprintf(dir, sizeof dir, "%s", cfg.engine.model);
    }
    if (model_load(&model, dir, &err)) goto fail;
    if (tok_load_dir(&tok, dir, &err)) goto fail;
    /* the stop set: the tokenizer's <|im_end|> and <|endoftext|> whatever the config lists */
    int32_t stop_ids[VLM_MAX_EOS + 2];
    int32_t n_stop = tok_stop_ids(tok, model.cfg.eos_token_ids, model.cfg.n_eos, stop_ids,
                                  (int32_t)ARRAY_LEN(stop_ids));
    log_stop_ids(tok, stop_ids, n_stop);

    const struct model_config *mc = &model.cfg;
    /* Valley2: the SigLIP tiling settings of config.json (docs/MODEL.md, "Valley2 image
     * preprocessing"); the most tiles one image can take sizes the engine's SigLIP buffers */
    struct valley2_prep_settings v2s;
    valley2_prep_settings_default(&v2s);
    int32_t v2_max_tiles = 0, v2_max_tokens = 0;
    if (mc->arch == MODEL_VALLEY2 && mc->has_vision) {
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", dir);
        size_t n = 0;
        char *json = vlm_read_file(path, &n);
        int bad = json ? valley2_prep_settings_from_config(json, n, &v2s, &err)
                       : vlm_err_set(&err, VLM_EIO, 500, "cannot read %s", path);
        free(json);
        if (bad) goto fail;
        for (int32_t i = 0; i < v2s.n_pinpoints; i++)
            v2_max_tiles = VLM_MAX(v2_max_tiles, 1 + (v2s.pinpoints[i][0] / v2s.tile) *
                                                         (v2s.pinpoints[i][1] / v2s.tile));
        /* the most SigLIP tokens of one image: the base tile, and a whole crop map kept, or
         * pooled below max_vision_token */
        int32_t t2 = v2s.tokens_per_side * v2s.tokens_per_side;
        v2_max_tokens = t2 + VLM_MIN((v2_max_tiles - 1) * t2, v2s.max_vision_token - t2);
    }
    int64_t proc_max_pixels = cfg.media.max_pixels;
    if (mc->arch == MODEL_VALLEY2) proc_max_pixels = VLM_MIN(proc_max_pixels, VALLEY2_PREP_QWEN2VL_MAX_PIXELS);
    struct engine_params ep = {0};
    ep.bp.n_threads = cfg.engine.threads;
    ep.bp.numerics = cfg.engine.numerics == CONFIG_NUMERICS_FAST ? NUMERICS_FAST : NUMERICS_EXACT;
    ep.backend = ENGINE_BACKEND_CPU;
    ep.kv_bytes = (size_t)cfg.engine.kv_cache_memory;
    ep.enforce_eager = cfg.engine.enforce_eager;
    bool use_cuda;
    enum backend_choice want = cfg.engine.backend == CONFIG_BACKEND_CUDA ? BACKEND_CUDA
                             : cfg.engine.backend == CONFIG_BACKEND_CPU  ? BACKEND_CPU
                                                                         : BACKEND_AUTO;
    if (backend_pick(want, &use_cuda, &err)) goto fail;
    if (use_cuda) {
        ep.backend = ENGINE_BACKEND_CUDA;
        ep.kv_bytes = 0; /* --kv-cache-memory is the CPU pool; the GPU's is sized by
                            --gpu-memory-utilization after weights and workspace */
    } else if (want == BACKEND_AUTO) {
        log_info("server: no CUDA device visible: using the CPU backend");
    }
    ep.block_size = cfg.sched.block_size;
    ep.max_batched_tokens = cfg.sched.max_num_batched_tokens;
    ep.max_seqs = cfg.sched.max_num_seqs;
    ep.gpu_memory_utilization = cfg.engine.gpu_memory_utilization;
    ep.tp_size = cfg.engine.tensor_parallel_size;
    ep.encoder_cache_tokens = mc->has_vision ? cfg.sched.encoder_cache_tokens : 0;
    ep.max_siglip_tiles = v2_max_tiles;
    if (ep.tp_size > 1) {
        if (tp_group_create(&tp, &model, &ep, &err)) goto fail;
        ex = tp_group_executor(tp);
    } else {
        if (engine_init(&eng, &model, &ep, &err)) goto fail;
        ex = engine_executor(&eng);
    }

    int32_t max_model_len = cfg.sched.max_model_len > 0 ? cfg.sched.max_model_len
                                                        : mc->max_position_embeddings;
    if (mc->max_position_embeddings > 0 && max_model_len > mc->max_position_embeddings) {
        vlm_err_set(&err, VLM_EINVAL, 0,
                    "--max-model-len %d is larger than the model's max_position_embeddings %d",
                    max_model_len, mc->max_position_embeddings);
        goto fail;
    }
    struct sched_config sc = {.block_size = ex.block_size,
                              .n_blocks = ex.kv_blocks,
                              .max_num_seqs = cfg.sched.max_num_seqs,
                              .max_num_batched_tokens = cfg.sched.max_num_batched_tokens,
                              .max_model_len = max_model_len,
                              .enable_prefix_caching = cfg.sched.enable_prefix_caching,
                              .encoder_cache_tokens = ep.encoder_cache_tokens,
                              .max_waiting = cfg.api.max_waiting,
                              .max_step_ms = cfg.sched.max_step_ms,
                              .mask_threads = cfg.sched.mask_threads};
    if (sc.mask_threads == 0) { /* the CPU backend's cores run the engine's products */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        sc.mask_threads = use_cuda ? (int32_t)VLM_MAX(1, VLM_MIN(4, cores / 2)) : 1;
    }
    if (mc->has_vision) {
        /* the largest image a request may send: smart_resize keeps h*w <= max_pixels, one
         * token per (patch*merge)² pixels; a smaller encoder budget is refused at start */
        int64_t unit = (int64_t)mc->patch_size * mc->spatial_merge_size;
        sc.max_mm_item_tokens = (int32_t)(proc_max_pixels / (unit * unit));
        /* Valley2: plus the SigLIP side */
        sc.max_mm_item_tokens += v2_max_tokens;
    }
    log_info("server: model %s: %s, %d layers, hidden %d, vocab %d, vision %s; KV cache %d blocks "
             "of %d tokens (%lld tokens); max_model_len %d",
             dir, model_arch_name(mc->arch), mc->n_layers, mc->hidden_size, mc->vocab_size, mc->has_vision ? "yes" : "no",
             sc.n_blocks - 1, sc.block_size, (long long)(sc.n_blocks - 1) * sc.block_size,
             max_model_len);
    if (loop_start(&loop, &sc, ex, &err)) goto fail;

    struct prep_ctx pc = {0};
    pc.tok = tok;
    pc.default_system = cfg.api.default_system_prompt;
    pc.enable_thinking_default = cfg.api.enable_thinking_default;
    pc.has_vision = mc->has_vision;
    pc.valley2 = mc->arch == MODEL_VALLEY2;
    pc.v2 = v2s;
    pc.implicit_image = cfg.api.implicit_image && mc->has_vision;
    pc.wrap_image_tokens = cfg.api.image_start_end_tokens == CONFIG_WRAP_AUTO
                               ? mc->use_special_start_end_token
                               : cfg.api.image_start_end_tokens == CONFIG_WRAP_ON;
    if (mc->has_vision)
        log_info("server: images are %s as <im_start><image><im_end> (%s)",
                 pc.wrap_image_tokens ? "wrapped" : "not wrapped",
                 cfg.api.image_start_end_tokens != CONFIG_WRAP_AUTO
                     ? "--image-start-end-tokens"
                 : mc->use_special_start_end_token
                     ? "config.json does not say false"
                     : "config.json use_special_start_end_token false");
    if (mc->has_vision) log_image_markers(tok, pc.wrap_image_tokens);
    pc.pad_id = tok_find(tok, "<|image_pad|>");
    if (pc.pad_id < 0) pc.pad_id = 0;
    pc.max_model_len = max_model_len;
    pc.max_prompt_len = mc->tokenizer_model_max_length;
    pc.max_tokens_default = cfg.api.max_tokens_default;
    vision_prep_params_default(&pc.vp);
    if (mc->has_vision) {
        pc.vp.patch = mc->patch_size;
        pc.vp.merge = mc->spatial_merge_size;
        pc.vp.temporal = mc->temporal_patch_size;
    }
    /* --min-pixels/--max-pixels bound the processor's resize only; fetch_image keeps its
     * own 3136..12845056, so a limited image is resampled twice, as in the reference
     * (docs/MODEL.md, "Image preprocessing") */
    pc.vp.proc_min_pixels = cfg.media.min_pixels;
    pc.vp.proc_max_pixels = proc_max_pixels;
    video_params_default(&pc.video);
    pc.video.num_frames = cfg.media.video_num_frames;
    pc.video.max_frames = cfg.media.video_max_frames;
    pc.video.max_duration_s = cfg.media.video_max_duration;
    pc.video.max_frame_pixels = cfg.media.max_image_pixels;
    pc.video.max_bytes = (size_t)cfg.media.fetch_max_bytes;
    pc.max_images = cfg.media.max_images_per_request;
    pc.max_videos = cfg.media.max_videos_per_request;
    pc.max_media_tokens = cfg.media.max_media_tokens;
    pc.budget = media_budget = media_budget_new(cfg.media.max_inflight_bytes,
                                                   cfg.media.max_inflight_wait);
    pc.media.max_pixels = cfg.media.max_image_pixels;
    pc.media.max_bytes = (size_t)cfg.media.max_image_bytes;
    pc.fetch_timeout = cfg.media.fetch_timeout;
    pc.fetch_max_bytes = cfg.media.fetch_max_bytes;
    pc.fetch_max_redirects = cfg.media.fetch_max_redirects;
    pc.fetch_allow = (const char *const *)cfg.media.fetch_allow.v;
    pc.n_fetch_allow = cfg.media.fetch_allow.n;
    pc.local_media_dir = cfg.media.allow_local_media_dir;
    pc.fetch_ca_file = cfg.media.fetch_ca_file;
    workers = workers_new(cfg.api.prep_threads);
    if (!workers) {
        vlm_err_set(&err, VLM_ENOMEM, 0, "cannot start the preparation workers");
        goto fail;
    }

    char name[4096];
    if (cfg.http.served_model_name && cfg.http.served_model_name[0]) {
        snprintf(name, sizeof name, "%s", cfg.http.served_model_name);
    } else if (!cfg.engine.model || !cfg.engine.model[0]) {
        snprintf(name, sizeof name, "valley"); /* the embedded default, as in the README */
    } else {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", dir);
        size_t n = strlen(tmp);
        while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
        snprintf(name, sizeof name, "%s", basename(tmp));
    }
    struct http_deps hd = {.http = &cfg.http,
                           .api = &cfg.api,
                           .media = &cfg.media,
                           .model_name = name,
                           .max_model_len = max_model_len,
                           .vocab_size = VLM_MAX(mc->vocab_size, tok_vocab_size(tok)),
                           .eos_ids = stop_ids,
                           .n_eos = n_stop,
                           .seed = (uint64_t)cfg.sched.seed,
                           .tok = tok,
                           .prep_ctx = &pc,
                           .workers = workers,
                           .loop = loop,
                           .metrics = &metrics};
    if (http_start(&http, &hd, &err)) goto fail;
    log_info("server: listening on http://%s:%d (model \"%s\")", cfg.http.host,
             (int)http_port(http), name);
    log_examples(cfg.http.host, http_port(http), name, cfg.http.api_key && cfg.http.api_key[0]);

    /* ==== wait, then drain ==== */
    int sig = 0;
    while (sigwait(&sigs, &sig)) {}
    log_info("server: %s received: draining (up to %g s for %d request(s) in flight)",
             strsignal(sig), cfg.http.shutdown_timeout, (int)http_inflight(http));
    http_drain_begin(http);
    uint64_t deadline = vlm_now_ns() + (uint64_t)(cfg.http.shutdown_timeout * 1e9);
    bool aborted = false;
    for (;;) {
        if (http_inflight(http) == 0) break;
        if (!aborted && vlm_now_ns() >= deadline) {
            log_warn("server: shutdown timeout: aborting %d request(s)", (int)http_inflight(http));
            http_abort_all(http);
            aborted = true;
            deadline = vlm_now_ns() + (uint64_t)SERVER_ABORT_GRACE_S * 1000000000ull;
        } else if (aborted && vlm_now_ns() >= deadline) {
            /* every request was aborted, fetches cancelled, and the idle timeout closes
             * clients that stopped reading: this is a bug. libmicrohttpd cannot be stopped
             * with connections suspended, so leave without stopping anything */
            log_error("server: %d request(s) did not end %d s after the abort; exiting",
                      (int)http_inflight(http), SERVER_ABORT_GRACE_S);
            fflush(NULL);
            _exit(1);
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        siginfo_t si;
        if (sigtimedwait(&sigs, &si, &ts) > 0 && !aborted) {
            log_warn("server: second signal: aborting now");
            deadline = 0;
        }
    }
    exit_code = 0;
fail:
    if (exit_code) log_error("server: %s", err.msg[0] ? err.msg : vlm_strerror(err.code));
    /* order: no new work (prep idle, HTTP stopped), then the engine thread, then memory */
    if (workers) while (workers_pending(workers)) usleep(10000);
    http_stop(http);
    workers_free(workers);
    media_budget_free(media_budget);
    if (loop) loop_stop(loop);
    tp_group_destroy(tp);
    engine_destroy(&eng);
    tok_free(tok);
    model_destroy(&model);
    config_destroy(&cfg);
    if (!exit_code) log_info("server: bye");
    return exit_code;
}
