/*
 * config.c: the one table of options and the code it drives. See config.h for the sources
 * and their precedence. Adding an option is one line in config_options[] plus the field.
 */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ==== The table ====
 * Every option: name (also the JSON key), kind, where it lands in struct config, bounds,
 * default (a string read by the same parser as user input, so defaults are validated too),
 * enum choices, and one line of help. The env var is derived from the name. */

enum opt_kind { OPT_INT32, OPT_INT64, OPT_SIZE, OPT_FLOAT, OPT_BOOL, OPT_STRING, OPT_ENUM, OPT_LIST };

enum { OPTF_SECRET = 1 };

struct config_opt {
    const char *name;
    enum opt_kind kind;
    size_t off;                 /* offsetof(struct config, field) */
    int64_t imin, imax;         /* OPT_INT32, OPT_INT64, OPT_SIZE */
    double fmin, fmax;          /* OPT_FLOAT */
    const char *def;
    const char *const *choices; /* OPT_ENUM: NULL-terminated, index = stored value */
    unsigned flags;
    const char *help;
};

static const char *const backend_choices[] = {"auto", "cpu", "cuda", NULL};
static const char *const numerics_choices[] = {"exact", "fast", NULL};
static const char *const wrap_choices[] = {"auto", "on", "off", NULL};
static const char *const log_level_choices[] = {"debug", "info", "warn", "error", "off", NULL};

#define OFF(f) offsetof(struct config, f)
#define I32(name, f, lo, hi, def, help) {name, OPT_INT32, OFF(f), lo, hi, 0, 0, def, NULL, 0, help}
#define I64(name, f, lo, hi, def, help) {name, OPT_INT64, OFF(f), lo, hi, 0, 0, def, NULL, 0, help}
#define SIZE(name, f, lo, hi, def, help) {name, OPT_SIZE, OFF(f), lo, hi, 0, 0, def, NULL, 0, help}
#define FLT(name, f, lo, hi, def, help) {name, OPT_FLOAT, OFF(f), 0, 0, lo, hi, def, NULL, 0, help}
#define BOOL(name, f, def, help) {name, OPT_BOOL, OFF(f), 0, 0, 0, 0, def, NULL, 0, help}
#define STR(name, f, def, help) {name, OPT_STRING, OFF(f), 0, 0, 0, 0, def, NULL, 0, help}
#define ENUM(name, f, ch, def, help) {name, OPT_ENUM, OFF(f), 0, 0, 0, 0, def, ch, 0, help}
#define LIST(name, f, def, help) {name, OPT_LIST, OFF(f), 0, 0, 0, 0, def, NULL, 0, help}

#define KiB (INT64_C(1) << 10)
#define MiB (INT64_C(1) << 20)
#define GiB (INT64_C(1) << 30)
#define TiB (INT64_C(1) << 40)

static const struct config_opt config_options[] = {
    /* model and engine */
    STR("model", engine.model, "", "Hugging Face model folder (config.json, *.safetensors, tokenizer files)"),
    ENUM("backend", engine.backend, backend_choices, "auto", "compute backend; auto = cuda when a GPU is usable, else cpu"),
    I32("threads", engine.threads, 0, 1024, "0", "CPU threads for the cpu backend; 0 = all cores"),
    ENUM("numerics", engine.numerics, numerics_choices, "fast", "cpu backend products: exact = f32 activations times widened weights (the f32 reference); fast = activations rounded to bf16, bf16 dot products with f32 sums"),
    I32("tensor-parallel-size", engine.tensor_parallel_size, 1, 64, "1", "GPUs the model is split across"),
    FLT("gpu-memory-utilization", engine.gpu_memory_utilization, 0.05, 1.0, "0.9", "fraction of each GPU's memory the engine may use (weights, activations, KV cache)"),
    SIZE("kv-cache-memory", engine.kv_cache_memory, MiB, 4 * TiB, "1GiB", "bytes of the cpu backend's KV cache pool"),
    BOOL("enforce-eager", engine.enforce_eager, "false", "never replay decode steps as CUDA graphs (debugging, or to save the graphs' memory)"),
    /* scheduler */
    I32("max-model-len", sched.max_model_len, 0, 1 << 24, "0", "longest prompt + output in tokens; 0 = the model's max_position_embeddings"),
    I32("max-num-seqs", sched.max_num_seqs, 1, 65536, "128", "most sequences in one engine step"),
    I32("max-num-batched-tokens", sched.max_num_batched_tokens, 16, 1 << 24, "8192", "most tokens in one engine step (prefill chunks + decodes)"),
    I32("block-size", sched.block_size, 1, 1024, "16", "tokens per KV cache block"),
    BOOL("enable-prefix-caching", sched.enable_prefix_caching, "true", "reuse KV blocks of identical prompt prefixes (images included)"),
    I32("encoder-cache-tokens", sched.encoder_cache_tokens, 0, 1 << 24, "16384", "image embeddings kept for reuse, in LLM tokens; 0 = no cache"),
    I64("seed", sched.seed, 0, INT64_MAX, "0", "base seed for requests that do not set one (0: the clock)"),
    I32("structured-outputs-threads", sched.mask_threads, 0, 256, "0", "threads computing structured-output token masks while the engine runs a step; 0 = 1 with the cpu backend (its cores are the engine's), else min(4, cores / 2)"),
    FLT("max-step-ms", sched.max_step_ms, 0, 3600000, "500", "prefill chunks are sized from measured step times so that an engine step takes about this long (other requests wait at most one step); 0 = chunks of up to max-num-batched-tokens"),
    I32("max-waiting", api.max_waiting, 1, 1 << 24, "1024", "queued requests before new ones are answered 503"),
    I32("responses-store-size", api.responses_store_size, 0, 1 << 24, "1024", "finished Responses API objects kept in memory for GET /v1/responses/{id} and previous_response_id (least recently used dropped first); 0 = none"),
    SIZE("responses-store-bytes", api.responses_store_bytes, KiB, 64 * GiB, "256MiB", "bytes the stored responses and their conversations may take together (least recently used dropped first)"),
    /* HTTP */
    STR("host", http.host, "0.0.0.0", "address to listen on"),
    I32("port", http.port, 0, 65535, "8000", "TCP port to listen on; 0 = any free port"),
    STR("served-model-name", http.served_model_name, "", "model name in the API; empty = the model folder's base name"),
    {"api-key", OPT_STRING, OFF(http.api_key), 0, 0, 0, 0, "", NULL, OPTF_SECRET, "require 'Authorization: Bearer KEY'; empty = no authentication"},
    LIST("allowed-origins", http.allowed_origins, "*", "CORS allowed origins (comma-separated)"),
    LIST("allowed-methods", http.allowed_methods, "*", "CORS allowed methods (comma-separated)"),
    LIST("allowed-headers", http.allowed_headers, "*", "CORS allowed headers (comma-separated)"),
    SIZE("max-body-bytes", http.max_body_bytes, KiB, 4 * GiB, "64MiB", "largest request body; larger ones get 413"),
    FLT("shutdown-timeout", http.shutdown_timeout, 0, 86400, "30", "seconds in-flight requests may run after SIGTERM before they are aborted"),
    SIZE("max-buffered-body-bytes", http.max_buffered_body_bytes, KiB, 64 * GiB, "512MiB", "request body bytes held by all connections together; beyond it new bodies get 503"),
    I32("max-connections-per-client", http.max_connections_per_client, 0, 1 << 20, "256", "open connections from one client address; 0 = no limit (raise it behind a proxy)"),
    I32("idle-timeout", http.idle_timeout, 1, 86400, "15", "seconds a connection may stay silent (idle keep-alive, stalled upload) before it is closed"),
    BOOL("metrics-open", http.metrics_open, "true", "/metrics answers without the API key"),
    /* requests and prompts */
    I32("max-n", api.max_n, 1, 1024, "16", "most choices per request (n)"),
    I32("max-tokens-default", api.max_tokens_default, 0, 1 << 24, "0", "max_tokens when a request sets none; 0 = up to max-model-len"),
    STR("default-system-prompt", api.default_system_prompt, "You are a helpful assistant.", "system prompt of conversations that have none"),
    STR("default-system-prompt-file", api.default_system_prompt_file, "", "read the default system prompt from this file (one trailing newline removed), e.g. the GThinker prompt"),
    BOOL("enable-thinking-default", api.enable_thinking_default, "true", "enable_thinking when a request's chat_template_kwargs do not say"),
    BOOL("implicit-image", api.implicit_image, "true", "give text-only requests the reference's implicit 3x3 black image"),
    ENUM("image-start-end-tokens", api.image_start_end_tokens, wrap_choices, "auto", "wrap each <image> as <im_start><image><im_end>; auto = unless the checkpoint config.json sets use_special_start_end_token to false"),
    I32("prep-threads", api.prep_threads, 1, 256, "2", "request-preparation workers (chat template, tokenizer, media decoding)"),
    /* media */
    I64("max-image-pixels", media.max_image_pixels, 1, INT64_C(1) << 40, "89478485", "largest decoded image (width * height) accepted"),
    SIZE("max-image-bytes", media.max_image_bytes, KiB, 4 * GiB, "20MiB", "largest encoded image accepted"),
    I32("min-pixels", media.min_pixels, 784, 1 << 30, "3136", "lower bound on pixels per image for the processor's resize (fetch_image keeps 3136)"),
    I32("max-pixels", media.max_pixels, 784, 1 << 30, "12845056", "upper bound on pixels per image for the processor's resize (fetch_image keeps 12845056)"),
    I32("max-images-per-request", media.max_images_per_request, 1, 4096, "16", "most images (and video frames) in one request"),
    I32("max-videos-per-request", media.max_videos_per_request, 1, 4096, "4", "most videos in one request"),
    I32("max-media-tokens-per-request", media.max_media_tokens, 1, 1 << 24, "16384", "most image and video tokens in one request, counted from the media headers before decoding"),
    SIZE("max-inflight-media-bytes", media.max_inflight_bytes, MiB, 4 * TiB, "2GiB", "decoded pixel memory all requests being prepared may hold; beyond it requests wait, then get 503"),
    FLT("max-inflight-media-wait", media.max_inflight_wait, 0, 3600, "10", "seconds a request waits for room in --max-inflight-media-bytes before its 503; 0 = answer 503 at once"),
    FLT("fetch-timeout", media.fetch_timeout, 0.1, 3600, "10", "seconds allowed for fetching one media URL"),
    SIZE("fetch-max-bytes", media.fetch_max_bytes, KiB, 16 * GiB, "64MiB", "largest media download"),
    I32("fetch-max-redirects", media.fetch_max_redirects, 0, 20, "3", "most redirects followed when fetching media"),
    LIST("fetch-allow", media.fetch_allow, "", "domains or CIDRs that may be fetched even if private, loopback or link-local (comma-separated)"),
    STR("fetch-ca-file", media.fetch_ca_file, "", "PEM CA bundle for https media URLs; empty = the system bundle"),
    STR("allow-local-media-dir", media.allow_local_media_dir, "", "directory whose files may be named by file:// or local paths; empty = none"),
    I32("video-num-frames", media.video_num_frames, 1, 1024, "8", "frames sampled from each video"),
    I32("video-max-frames", media.video_max_frames, 1, 4096, "32", "most frames a request may ask to sample from one video"),
    FLT("video-max-duration", media.video_max_duration, 0.1, 86400, "600", "longest video accepted, in seconds"),
    /* logging */
    ENUM("log-level", log.level, log_level_choices, "info", "least severe log level printed"),
};

#define N_OPTIONS ((int)ARRAY_LEN(config_options))

static void *opt_ptr(struct config *c, const struct config_opt *o)
{
    return (char *)c + o->off;
}
static const void *opt_cptr(const struct config *c, const struct config_opt *o)
{
    return (const char *)c + o->off;
}

/* ==== Value parsing ====
 * Each kind parses a string; on failure it returns VLM_EINVAL and the caller reports what
 * is allowed (opt_allowed). Nothing is stored until a value is fully valid. */

static bool streq_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
    return *a == *b;
}

static int parse_i64(const char *s, int64_t *out)
{
    if (!*s || isspace((unsigned char)*s)) return VLM_EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return VLM_EINVAL;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (streq_nocase(s, yes[i])) { *out = true; return 0; }
        if (streq_nocase(s, no[i])) { *out = false; return 0; }
    }
    return VLM_EINVAL;
}

int config_parse_size(const char *s, int64_t *out)
{
    static const struct { const char *suffix; int64_t mult; } units[] = {
        {"", 1},         {"b", 1},
        {"k", 1000},     {"kb", 1000},     {"ki", KiB}, {"kib", KiB},
        {"m", 1000000},  {"mb", 1000000},  {"mi", MiB}, {"mib", MiB},
        {"g", 1000000000}, {"gb", 1000000000}, {"gi", GiB}, {"gib", GiB},
        {"t", INT64_C(1000000000000)}, {"tb", INT64_C(1000000000000)}, {"ti", TiB}, {"tib", TiB},
    };
    const char *p = s;
    if (!isdigit((unsigned char)*p)) return VLM_EINVAL;
    while (isdigit((unsigned char)*p)) p++;
    bool frac = false;
    if (*p == '.') {
        frac = true;
        p++;
        if (!isdigit((unsigned char)*p)) return VLM_EINVAL;
        while (isdigit((unsigned char)*p)) p++;
    }
    size_t numlen = (size_t)(p - s);
    while (*p == ' ') p++;
    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        if (!streq_nocase(p, units[i].suffix)) continue;
        char num[64];
        if (numlen >= sizeof num) return VLM_EINVAL;
        memcpy(num, s, numlen);
        num[numlen] = 0;
        if (!frac) {
            int64_t v;
            if (parse_i64(num, &v) || v < 0) return VLM_EINVAL;
            if (__builtin_mul_overflow(v, units[i].mult, out)) return VLM_EINVAL;
            return 0;
        }
        double d = strtod(num, NULL) * (double)units[i].mult;
        if (!(d >= 0 && d < 9.2e18)) return VLM_EINVAL;
        *out = (int64_t)llround(d);
        return 0;
    }
    return VLM_EINVAL;
}

/* "an integer in [0, 65535]" etc., for error messages and --help. */
static void opt_allowed(const struct config_opt *o, char *buf, size_t n)
{
    switch (o->kind) {
    case OPT_INT32:
    case OPT_INT64:
        snprintf(buf, n, "an integer in [%lld, %lld]", (long long)o->imin, (long long)o->imax);
        break;
    case OPT_SIZE:
        snprintf(buf, n, "a size in bytes in [%lld, %lld], suffixes k/M/G/T (x1000) or "
                 "KiB/MiB/GiB/TiB (x1024)", (long long)o->imin, (long long)o->imax);
        break;
    case OPT_FLOAT: snprintf(buf, n, "a number in [%g, %g]", o->fmin, o->fmax); break;
    case OPT_BOOL: snprintf(buf, n, "true/false, 1/0, yes/no or on/off"); break;
    case OPT_STRING: snprintf(buf, n, "a string"); break;
    case OPT_LIST: snprintf(buf, n, "a comma-separated list"); break;
    case OPT_ENUM: {
        size_t k = (size_t)snprintf(buf, n, "one of");
        for (int i = 0; o->choices[i] && k < n; i++)
            k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : " ", o->choices[i]);
        break;
    }
    }
}

static void list_free(struct config_list *l)
{
    for (int32_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Splits on commas, trims blanks, drops empty items. */
static void list_parse(const char *s, struct config_list *out)
{
    out->v = NULL;
    out->n = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        const char *a = p, *b = e;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (b > a) {
            out->v = xrealloc(out->v, sizeof(char *) * (size_t)(out->n + 1));
            out->v[out->n++] = xstrndup(a, (size_t)(b - a));
        }
        p = *e ? e + 1 : e;
    }
}

/* Parses s for option o and stores it in c. VLM_EINVAL if the value is not allowed. */
static int opt_set(struct config *c, const struct config_opt *o, const char *s)
{
    void *p = opt_ptr(c, o);
    switch (o->kind) {
    case OPT_INT32:
    case OPT_INT64:
    case OPT_SIZE: {
        int64_t v;
        int rc = o->kind == OPT_SIZE ? config_parse_size(s, &v) : parse_i64(s, &v);
        if (rc || v < o->imin || v > o->imax) return VLM_EINVAL;
        if (o->kind == OPT_INT32) *(int32_t *)p = (int32_t)v;
        else *(int64_t *)p = v;
        return 0;
    }
    case OPT_FLOAT: {
        if (!*s || isspace((unsigned char)*s)) return VLM_EINVAL;
        char *end;
        double v = strtod(s, &end);
        if (*end || !isfinite(v) || v < o->fmin || v > o->fmax) return VLM_EINVAL;
        *(double *)p = v;
        return 0;
    }
    case OPT_BOOL: return parse_bool(s, (bool *)p);
    case OPT_STRING:
        free(*(char **)p);
        *(char **)p = xstrdup(s);
        return 0;
    case OPT_ENUM:
        for (int i = 0; o->choices[i]; i++) {
            if (streq_nocase(s, o->choices[i])) {
                /* enum fields are int-sized (gcc, clang): checked once here */
                VLM_ASSERT(sizeof(enum config_backend) == sizeof(int32_t) &&
                           sizeof(enum config_wrap) == sizeof(int32_t));
                int32_t v = i;
                memcpy(p, &v, sizeof v);
                return 0;
            }
        }
        return VLM_EINVAL;
    case OPT_LIST:
        list_free(p);
        list_parse(s, p);
        return 0;
    }
    return VLM_EINVAL;
}

/* Formats o's current value in c (as it would be typed). Secrets are masked if mask. */
static void opt_format(const struct config *c, const struct config_opt *o, bool mask,
                       struct strbuf *b)
{
    const void *p = opt_cptr(c, o);
    switch (o->kind) {
    case OPT_INT32: sb_printf(b, "%d", *(const int32_t *)p); break;
    case OPT_INT64: sb_printf(b, "%lld", (long long)*(const int64_t *)p); break;
    case OPT_SIZE: {
        int64_t v = *(const int64_t *)p;
        static const struct { const char *s; int64_t m; } u[] = {
            {"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}};
        for (size_t i = 0; i < ARRAY_LEN(u); i++) {
            if (v && v % u[i].m == 0) {
                sb_printf(b, "%lld%s", (long long)(v / u[i].m), u[i].s);
                return;
            }
        }
        sb_printf(b, "%lld", (long long)v);
        break;
    }
    case OPT_FLOAT: sb_printf(b, "%g", *(const double *)p); break;
    case OPT_BOOL: sb_puts(b, *(const bool *)p ? "true" : "false"); break;
    case OPT_STRING: {
        const char *s = *(const char *const *)p;
        if (mask && (o->flags & OPTF_SECRET) && s && *s) sb_puts(b, "********");
        else sb_puts(b, s ? s : "");
        break;
    }
    case OPT_ENUM: {
        int32_t v;
        memcpy(&v, p, sizeof v);
        sb_puts(b, o->choices[v]);
        break;
    }
    case OPT_LIST: {
        const struct config_list *l = p;
        for (int32_t i = 0; i < l->n; i++) sb_printf(b, "%s%s", i ? "," : "", l->v[i]);
        break;
    }
    }
}

/* ==== Lookup and error reporting ==== */

/* Finds an option by name; '-' and '_' are the same. n = length of name. */
static int opt_find(const char *name, size_t n)
{
    for (int i = 0; i < N_OPTIONS; i++) {
        const char *on = config_options[i].name;
        if (strlen(on) != n) continue;
        size_t k = 0;
        for (; k < n; k++) {
            char a = name[k] == '_' ? '-' : name[k];
            if (a != on[k]) break;
        }
        if (k == n) return i;
    }
    return -1;
}

static void env_name(const struct config_opt *o, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "VALLEY_");
    for (const char *p = o->name; *p && k + 1 < n; p++)
        buf[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[k] = 0;
}

/* "where" says which source: "--port", "VALLEY_PORT", "file.json: port". */
static int bad_value(struct vlm_err *err, const char *where, const struct config_opt *o,
                     const char *value)
{
    char allowed[128], flag[64] = "";
    opt_allowed(o, allowed, sizeof allowed);
    if (strncmp(where, "--", 2)) snprintf(flag, sizeof flag, " for --%s", o->name);
    return vlm_err_param(err, VLM_EINVAL, 400, o->name, "%s: invalid value '%.40s%s'%s; allowed: %s",
                         where, value, strlen(value) > 40 ? "..." : "", flag, allowed);
}

/* Edit distance between a[0..n) and b, '-' and '_' equal (for "did you mean"). */
static int edit_distance(const char *a, size_t n, const char *b)
{
    size_t m = strlen(b);
    if (n > 63 || m > 63) return 99;
    int row[64];
    for (size_t j = 0; j <= m; j++) row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            char ca = a[i - 1] == '_' ? '-' : a[i - 1];
            int up = row[j];
            int best = diag + (ca != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[m];
}

/* " (did you mean --port?)" for the closest option within 2 edits, else "". */
static void suggest(const char *name, size_t n, char *buf, size_t size)
{
    int best = 3, idx = -1;
    for (int i = 0; i < N_OPTIONS; i++) {
        int d = edit_distance(name, n, config_options[i].name);
        if (d < best) best = d, idx = i;
    }
    buf[0] = 0;
    if (idx >= 0) snprintf(buf, size, " (did you mean --%s?)", config_options[idx].name);
}

static int set_from(struct config *c, int idx, const char *value, enum config_source src,
                    const char *where, struct vlm_err *err)
{
    const struct config_opt *o = &config_options[idx];
    if (opt_set(c, o, value)) return bad_value(err, where, o, value);
    c->source[idx] = (uint8_t)src;
    return 0;
}

/* ==== Sources ==== */

void config_defaults(struct config *c)
{
    VLM_ASSERT(N_OPTIONS <= CONFIG_MAX_OPTIONS);
    memset(c, 0, sizeof *c);
    for (int i = 0; i < N_OPTIONS; i++) {
        int rc = opt_set(c, &config_options[i], config_options[i].def);
        VLM_ASSERT(rc == 0); /* a default outside its own bounds is a bug in the table */
    }
    c->config_file = xstrdup("");
}

/* The JSON config file: an object of option name -> value. Numbers and bools are turned
 * back into text and go through the same parser as argv; lists may be arrays. */
static int apply_file(struct config *c, const char *path, struct vlm_err *err)
{
    size_t len;
    char *text = vlm_read_file(path, &len);
    if (!text)
        return vlm_err_param(err, VLM_EINVAL, 400, "config", "config file '%.120s': cannot read (%s)",
                             path, strerror(errno));
    cJSON_Minify(text); /* drops // and block comments */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, true);
    if (!root || !cJSON_IsObject(root)) {
        long at = root ? 0 : (end ? (long)(end - text) : 0);
        cJSON_Delete(root);
        free(text);
        return vlm_err_param(err, VLM_EINVAL, 400, "config",
                             "config file '%.120s': not a JSON object (invalid JSON near byte %ld of the minified text)",
                             path, at);
    }
    int rc = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, root) {
        char where[200];
        snprintf(where, sizeof where, "config file '%.80s': %.60s", path, it->string);
        int idx = opt_find(it->string, strlen(it->string));
        if (idx < 0) {
            char hint[80];
            suggest(it->string, strlen(it->string), hint, sizeof hint);
            rc = vlm_err_param(err, VLM_EINVAL, 400, "config", "%s: unknown option%s", where, hint);
            break;
        }
        const struct config_opt *o = &config_options[idx];
        char num[64];
        const char *val = NULL;
        struct strbuf joined = {0};
        if (cJSON_IsString(it)) {
            val = it->valuestring;
        } else if (cJSON_IsBool(it)) {
            val = cJSON_IsTrue(it) ? "true" : "false";
        } else if (cJSON_IsNumber(it)) {
            double d = it->valuedouble;
            if (d == floor(d) && fabs(d) < 9e15) snprintf(num, sizeof num, "%.0f", d);
            else snprintf(num, sizeof num, "%.17g", d);
            val = num;
        } else if (cJSON_IsArray(it) && o->kind == OPT_LIST) {
            cJSON *e;
            sb_puts(&joined, "");
            cJSON_ArrayForEach(e, it) {
                if (!cJSON_IsString(e) || strchr(e->valuestring, ',')) {
                    rc = vlm_err_param(err, VLM_EINVAL, 400, o->name,
                                       "%s: list items must be strings without commas", where);
                    break;
                }
                sb_printf(&joined, "%s%s", joined.n ? "," : "", e->valuestring);
            }
            val = joined.s;
        } else {
            char allowed[128];
            opt_allowed(o, allowed, sizeof allowed);
            rc = vlm_err_param(err, VLM_EINVAL, 400, o->name,
                               "%s: wrong JSON type for --%s; allowed: %s", where, o->name, allowed);
        }
        if (!rc) rc = set_from(c, idx, val, CONFIG_SRC_FILE, where, err);
        sb_free(&joined);
        if (rc) break;
    }
    cJSON_Delete(root);
    free(text);
    return rc;
}

static int apply_env(struct config *c, char **envp, struct vlm_err *err)
{
    if (!envp) return 0;
    for (int i = 0; i < N_OPTIONS; i++) {
        char name[80];
        env_name(&config_options[i], name, sizeof name);
        size_t n = strlen(name);
        for (char **e = envp; *e; e++) {
            if (strncmp(*e, name, n) || (*e)[n] != '=') continue;
            const char *v = *e + n + 1;
            /* Kubernetes injects <SERVICE>_PORT=tcp://ip:port for a Service named "valley";
             * that is not ours. */
            if (config_options[i].kind == OPT_INT32 && !strncmp(v, "tcp://", 6)) {
                log_warn("config: ignoring %s=%s (a Kubernetes service link, not an option)", name, v);
                continue;
            }
            int rc = set_from(c, i, v, CONFIG_SRC_ENV, name, err);
            if (rc) return rc;
        }
    }
    return 0;
}

static bool is_flag(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == 0 || arg[n] == '=');
}

static int apply_argv(struct config *c, int argc, char **argv, struct vlm_err *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2])
            return vlm_err_param(err, VLM_EINVAL, 400, "", "unexpected argument '%.80s' (options are --name value)", a);
        if (is_flag(a, "--config")) { /* read before everything else */
            if (!strchr(a, '=')) i++;
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int idx = opt_find(name, nlen);
        bool negated = false;
        if (idx < 0 && nlen > 3 && !strncmp(name, "no-", 3)) {
            idx = opt_find(name + 3, nlen - 3);
            if (idx >= 0 && config_options[idx].kind != OPT_BOOL) idx = -1;
            negated = idx >= 0;
            if (negated && eq)
                return vlm_err_param(err, VLM_EINVAL, 400, config_options[idx].name,
                                     "--%.*s takes no value", (int)nlen, name);
        }
        if (idx < 0) {
            char hint[80];
            suggest(name, nlen, hint, sizeof hint);
            return vlm_err_param(err, VLM_EINVAL, 400, "", "unknown option '--%.*s'%s",
                                 (int)VLM_MIN(nlen, 80), name, hint[0] ? hint : " (see --help)");
        }
        const struct config_opt *o = &config_options[idx];
        char where[96];
        snprintf(where, sizeof where, "--%s", o->name);
        const char *val;
        if (eq) val = eq + 1;
        else if (o->kind == OPT_BOOL) val = negated ? "false" : "true";
        else if (i + 1 < argc) val = argv[++i];
        else return vlm_err_param(err, VLM_EINVAL, 400, o->name, "--%s: missing value", o->name);
        int rc = set_from(c, idx, val, CONFIG_SRC_FLAG, where, err);
        if (rc) return rc;
    }
    return 0;
}

/* After all sources: read the system prompt file, check options that depend on each other. */
static int finish(struct config *c, struct vlm_err *err)
{
    const char *f = c->api.default_system_prompt_file;
    if (f && *f) {
        size_t len;
        char *text = vlm_read_file(f, &len);
        if (!text)
            return vlm_err_param(err, VLM_EINVAL, 400, "default-system-prompt-file",
                                 "--default-system-prompt-file: cannot read '%.100s' (%s)", f, strerror(errno));
        if (len && text[len - 1] == '\n') text[--len] = 0;
        if (len && text[len - 1] == '\r') text[--len] = 0;
        if (strlen(text) != len) {
            free(text);
            return vlm_err_param(err, VLM_EINVAL, 400, "default-system-prompt-file",
                                 "--default-system-prompt-file: '%.100s' contains a NUL byte", f);
        }
        free(c->api.default_system_prompt);
        c->api.default_system_prompt = text;
    }
    if (strstr(c->api.default_system_prompt, "<image>"))
        return vlm_err_param(err, VLM_EINVAL, 400, "default-system-prompt",
                             "--default-system-prompt: must not contain the image marker '<image>'");
    if (c->media.min_pixels > c->media.max_pixels)
        return vlm_err_param(err, VLM_EINVAL, 400, "min-pixels",
                             "--min-pixels %d is larger than --max-pixels %d", c->media.min_pixels,
                             c->media.max_pixels);
    return 0;
}

int config_parse(struct config *c, int argc, char **argv, char **envp, struct vlm_err *err)
{
    /* --help and --print-reference win over everything, even bad values. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            config_print_help(stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--print-reference")) {
            config_print_reference(stdout);
            return 1;
        }
    }
    /* The config file: --config beats VALLEY_CONFIG. */
    const char *file = NULL;
    for (char **e = envp; e && *e; e++)
        if (!strncmp(*e, "VALLEY_CONFIG=", 14)) file = *e + 14;
    for (int i = 1; i < argc; i++) {
        if (!is_flag(argv[i], "--config")) continue;
        if (argv[i][8] == '=') file = argv[i] + 9;
        else if (i + 1 < argc) file = argv[++i];
        else return vlm_err_param(err, VLM_EINVAL, 400, "config", "--config: missing value");
    }
    int rc;
    if (file && *file) {
        free(c->config_file);
        c->config_file = xstrdup(file);
        if ((rc = apply_file(c, file, err))) return rc;
    }
    if ((rc = apply_env(c, envp, err))) return rc;
    if ((rc = apply_argv(c, argc, argv, err))) return rc;
    return finish(c, err);
}

void config_destroy(struct config *c)
{
    if (!c) return;
    for (int i = 0; i < N_OPTIONS; i++) {
        const struct config_opt *o = &config_options[i];
        if (o->kind == OPT_STRING) {
            free(*(char **)opt_ptr(c, o));
        } else if (o->kind == OPT_LIST) {
            list_free(opt_ptr(c, o));
        }
    }
    free(c->config_file);
    memset(c, 0, sizeof *c);
}

/* ==== Output: dump, --help, reference ==== */

void config_dump(const struct config *c)
{
    static const char *const src[] = {"default", "file", "env", "flag"};
    if (c->config_file && *c->config_file) log_info("config: file %s", c->config_file);
    for (int i = 0; i < N_OPTIONS; i++) {
        struct strbuf b = {0};
        opt_format(c, &config_options[i], true, &b);
        bool long_value = b.n > 100;
        log_info("config: %-26s = %.100s%s (%s)", config_options[i].name, b.s ? b.s : "",
                 long_value ? "..." : "", src[c->source[i] & 3]);
        sb_free(&b);
    }
}

static const char *opt_metavar(const struct config_opt *o)
{
    switch (o->kind) {
    case OPT_INT32:
    case OPT_INT64: return "INT";
    case OPT_SIZE: return "SIZE";
    case OPT_FLOAT: return "NUM";
    case OPT_BOOL: return NULL;
    case OPT_STRING: return "STR";
    case OPT_ENUM: return "CHOICE";
    case OPT_LIST: return "LIST";
    }
    return "";
}

void config_print_help(FILE *f)
{
    fprintf(f, "usage: valley-server [--config FILE] [--OPTION VALUE | --OPTION=VALUE]...\n\n"
               "Sources, later ones win: defaults < config file (--config FILE, VALLEY_CONFIG)\n"
               "< environment (VALLEY_<OPTION>) < flags. Bools: --flag / --no-flag.\n\n"
               "  --config FILE\n      JSON config file (comments allowed); see config/valley.conf\n"
               "  --print-reference\n      print the commented reference config file and exit\n");
    for (int i = 0; i < N_OPTIONS; i++) {
        const struct config_opt *o = &config_options[i];
        char env[80], allowed[160];
        env_name(o, env, sizeof env);
        opt_allowed(o, allowed, sizeof allowed);
        const char *mv = opt_metavar(o);
        if (mv) fprintf(f, "  --%s %s\n", o->name, mv);
        else fprintf(f, "  --%s, --no-%s\n", o->name, o->name);
        fprintf(f, "      %s\n      default: '%s'; env %s; %s\n", o->help, o->def, env, allowed);
    }
}

static void print_json_string(FILE *f, const char *s)
{
    cJSON *j = cJSON_CreateString(s);
    char *t = cJSON_PrintUnformatted(j);
    VLM_ASSERT(j && t);
    fputs(t, f);
    free(t);
    cJSON_Delete(j);
}

void config_print_reference(FILE *f)
{
    fprintf(f, "// config/valley.conf: every option of valley-server at its default, with its help.\n"
               "// Generated by `valley-server --print-reference`; do not edit by hand.\n"
               "// Use: valley-server --config FILE (or VALLEY_CONFIG=FILE). The file is JSON with\n"
               "// comments; keep only the options you change. Precedence: defaults < file <\n"
               "// environment (VALLEY_<OPTION>) < command-line flags.\n{\n");
    for (int i = 0; i < N_OPTIONS; i++) {
        const struct config_opt *o = &config_options[i];
        char env[80], allowed[160];
        env_name(o, env, sizeof env);
        opt_allowed(o, allowed, sizeof allowed);
        fprintf(f, "%s    // %s\n    // --%s, %s; %s\n    \"%s\": ", i ? "\n" : "", o->help, o->name,
                env, allowed, o->name);
        switch (o->kind) {
        case OPT_INT32:
        case OPT_INT64:
        case OPT_FLOAT:
        case OPT_BOOL: fputs(o->def, f); break;
        case OPT_LIST: {
            struct config_list l;
            list_parse(o->def, &l);
            fputc('[', f);
            for (int32_t k = 0; k < l.n; k++) {
                if (k) fputs(", ", f);
                print_json_string(f, l.v[k]);
            }
            fputc(']', f);
            list_free(&l);
            break;
        }
        default: print_json_string(f, o->def); break;
        }
        fputs(i + 1 < N_OPTIONS ? ",\n" : "\n", f);
    }
    fputs("}\n", f);
}
