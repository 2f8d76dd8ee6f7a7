/*
 * config: the server's options, declared once in one table (config.c) that drives the
 * command line, the environment, an optional JSON config file, --help, validation, the
 * start-up dump and the commented reference config/valley.conf.
 *
 * Sources, later ones win: built-in defaults < config file (--config FILE or VALLEY_CONFIG)
 * < environment (VALLEY_<NAME>, name upper-cased with '-' -> '_') < command-line flags.
 *
 *   --name value | --name=value       every kind of option
 *   --flag | --no-flag | --flag=false bools (values: true/false, 1/0, yes/no, on/off)
 *   lists                             comma-separated on argv/env, a JSON array or string in files
 *   sizes                             bytes with an optional suffix: 1048576, 64MiB, 1.5GiB, 2GB
 *
 * The config file is JSON whose keys are option names ("max-model-len" or "max_model_len");
 * // and block comments are allowed (config/valley.conf is such a file and holds every option
 * at its default).
 *
 * Called once from main() before any thread starts; nothing here is thread-safe and nothing
 * needs to be. Modules receive only their own sub-struct (const, borrowed for the life of the
 * process) and never read the environment themselves.
 */
#ifndef VLM_CONFIG_H
#define VLM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/base.h"

/* A list option: owned strings, possibly empty (n == 0, v == NULL). */
struct config_list {
    char **v; /* owned, n entries, each owned */
    int32_t n;
};

enum config_backend { CONFIG_BACKEND_AUTO, CONFIG_BACKEND_CPU, CONFIG_BACKEND_CUDA };
/* --numerics: the cpu backend's products (engine/backend.h, enum numerics: same order). */
enum config_numerics { CONFIG_NUMERICS_EXACT, CONFIG_NUMERICS_FAST };
/* --image-start-end-tokens: auto = wrap unless config.json sets use_special_start_end_token
 * false. */
enum config_wrap { CONFIG_WRAP_AUTO, CONFIG_WRAP_ON, CONFIG_WRAP_OFF };

/* The HTTP front end (server/http.c, server/openai.c). */
struct config_http {
    char *host;                       /* owned; listen address */
    int32_t port;                     /* 0 = any free port (tests) */
    char *served_model_name;          /* owned; "" = the model folder's base name */
    char *api_key;                    /* owned; "" = no authentication. Secret: masked in dumps */
    struct config_list allowed_origins; /* CORS */
    struct config_list allowed_methods;
    struct config_list allowed_headers;
    int64_t max_body_bytes;           /* request bodies above this get 413 */
    double shutdown_timeout;          /* seconds in-flight requests may take after SIGTERM */
    int64_t max_buffered_body_bytes;  /* body bytes buffered by all connections together */
    int32_t max_connections_per_client; /* per client address; 0 = no limit */
    int32_t idle_timeout;             /* seconds of silence before a connection is closed */
    bool metrics_open;                /* /metrics needs no API key */
};

/* Request handling and prompt construction (server/prep.c, server/chat.c, server/openai.c). */
struct config_api {
    int32_t max_n;                    /* most choices per request ("n") */
    int32_t max_tokens_default;       /* max_tokens when the request has none; 0 = to the context end */
    char *default_system_prompt;      /* owned; used when a conversation has no system message
                                         (--default-system-prompt-file replaces it with the file's
                                         text, one trailing newline removed) */
    char *default_system_prompt_file; /* owned; "" = none. Kept for the dump only */
    bool enable_thinking_default;     /* chat_template_kwargs.enable_thinking when absent */
    /* text-only requests get the 3x3 black image (docs/MODEL.md, "Implicit image") */
    bool implicit_image;
    /* "<im_start><image><im_end>" wrapping (docs/MODEL.md, "Image markers") */
    enum config_wrap image_start_end_tokens;
    int32_t prep_threads;             /* request-preparation workers */
    int32_t max_waiting;              /* queued requests before new ones get 503 */
    int32_t responses_store_size;     /* stored Responses API objects (server/responses.h) */
    int64_t responses_store_bytes;    /* their bytes together */
};

/* The scheduler (scheduler/). */
struct config_sched {
    int32_t max_model_len;            /* 0 = the model's max_position_embeddings */
    int32_t max_num_seqs;             /* sequences per step */
    int32_t max_num_batched_tokens;   /* tokens per step */
    int32_t block_size;               /* tokens per KV block */
    bool enable_prefix_caching;
    int32_t encoder_cache_tokens;     /* budget of cached image embeddings, in LLM tokens */
    int64_t seed;                     /* base of per-request sampler seeds */
    double max_step_ms;               /* target engine step time for prefill chunks; 0 = off */
    int32_t mask_threads;             /* structured-output mask threads; 0 = by backend */
};

/* The engine (engine/). */
struct config_engine {
    char *model;                      /* owned; Hugging Face model folder */
    enum config_backend backend;
    int32_t threads;                  /* CPU threads; 0 = all cores */
    enum config_numerics numerics;    /* cpu backend products: exact (f32) or fast (bf16) */
    int32_t tensor_parallel_size;
    double gpu_memory_utilization;    /* fraction of GPU memory the engine may take */
    int64_t kv_cache_memory;          /* bytes of the CPU backend's KV pool */
    bool enforce_eager;               /* no CUDA graphs for decode steps */
};

/* Media fetching and decoding (server/media.c, server/fetch.c, server/video.c). */
struct config_media {
    int64_t max_image_pixels;         /* decoded width*height above this is refused */
    int64_t max_image_bytes;          /* encoded image size limit */
    /* smart_resize bounds (docs/MODEL.md, "The two resize stages") */
    int32_t min_pixels, max_pixels;
    int32_t max_images_per_request;   /* image parts + video frames */
    int32_t max_videos_per_request;   /* video parts */
    int32_t max_media_tokens;         /* image + video tokens per request, from headers */
    int64_t max_inflight_bytes;       /* decoded pixels held by requests being prepared */
    double max_inflight_wait;         /* seconds a request waits for room in it */
    double fetch_timeout;             /* seconds, whole transfer */
    int64_t fetch_max_bytes;
    int32_t fetch_max_redirects;
    struct config_list fetch_allow;   /* domains or CIDRs fetchable even if private/loopback */
    char *fetch_ca_file;              /* owned; "" = the system CA bundle */
    char *allow_local_media_dir;      /* owned; "" = local paths refused */
    int32_t video_num_frames;         /* frames sampled per video */
    int32_t video_max_frames;
    double video_max_duration;        /* seconds */
};

struct config_log {
    int32_t level;                    /* enum vlm_log_level */
};

#define CONFIG_MAX_OPTIONS 96

struct config {
    struct config_http http;
    struct config_api api;
    struct config_sched sched;
    struct config_engine engine;
    struct config_media media;
    struct config_log log;
    char *config_file;                /* owned; the file that was read, "" if none */
    uint8_t source[CONFIG_MAX_OPTIONS]; /* enum config_source per table row (for the dump) */
};

enum config_source { CONFIG_SRC_DEFAULT, CONFIG_SRC_FILE, CONFIG_SRC_ENV, CONFIG_SRC_FLAG };

/* Fills *c with the built-in defaults (owned strings allocated). */
void config_defaults(struct config *c);

/* Reads the config file, the environment (envp, may be NULL) and argv (argv[0] is the program
 * name) into *c, which must hold config_defaults(). Returns 0; 1 if --help or
 * --print-reference was printed on stdout (the caller exits 0); or VLM_EINVAL with err->msg
 * naming the option, the value and what is allowed (the caller prints it and exits 2).
 * On error *c is left valid (some options may already be applied); config_destroy() it. */
int config_parse(struct config *c, int argc, char **argv, char **envp, struct vlm_err *err);

/* One log_info line per option ("config: name = value (source)"); the API key is masked. */
void config_dump(const struct config *c);

/* --help text: every option, its env var, type, bounds, default and help. */
void config_print_help(FILE *f);

/* The commented reference (config/valley.conf): a loadable JSON config file with every option
 * at its default, each preceded by its help. */
void config_print_reference(FILE *f);

/* Frees what *c owns; *c is zeroed. Accepts a zeroed struct. */
void config_destroy(struct config *c);

/* Parses a byte size ("4096", "64MiB", "1.5GiB", "2GB", "10k"). Returns 0 or VLM_EINVAL. */
int config_parse_size(const char *s, int64_t *out);

#endif
