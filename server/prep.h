/*
 * prep: preparing a request's inputs, on the worker threads (workers.h), off the HTTP and
 * engine threads (neither of them may block on decoding or resizing): what a worker does for
 * one prompt (prep_prompt_*): chat template, tokenizer, media fetch / decode /
 * preprocessing, placeholder expansion, and the context-length check, producing the token
 * ids and media items a struct request is built from; and the budget of decoded media bytes
 * those workers share.
 *
 * Thread safety: prep_prompt_build only reads its struct prep_ctx, so any number of workers
 * may run it at once.
 */
#ifndef VLM_PREP_H
#define VLM_PREP_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/base.h"
#include "server/openai.h"
#include "server/tokenizer.h"
#include "server/valley2_prep.h"
#include "server/video.h"
#include "server/vision_prep.h"

/* ==== The in-flight media budget ====
 * Bytes of decoded pixels (rasters of both resize stages and patch rows) that requests being
 * prepared may hold together (--max-inflight-media-bytes). A request takes its images' and video
 * frames' share, computed from their headers, before decoding them and gives it back once its inputs are
 * built; it waits up to wait_s seconds for room (--max-inflight-media-wait), then gets 503
 * (a request that alone needs more than the whole budget gets 400). Thread-safe. */

struct media_budget;
struct media_budget *media_budget_new(int64_t bytes, double wait_s);
/* Wakes every waiter and makes every later wait fail with 503 (shutdown). */
void media_budget_cancel(struct media_budget *b);
int64_t media_budget_used(struct media_budget *b);
void media_budget_free(struct media_budget *b); /* nothing may be held; NULL ok */

/* ==== Preparing one prompt ==== */

/* Everything the workers read; borrowed, read-only while the server runs. */
struct prep_ctx {
    const struct tokenizer *tok;
    const char *default_system;     /* NULL: chat.h's default */
    bool enable_thinking_default;
    bool implicit_image;            /* and the model has vision */
    bool has_vision;
    bool valley2;                   /* a Valley2 checkpoint: the Qwen2.5 template (chat_opts.qwen25),
                                       no thinking, every image through both towers' inputs
                                       (valley2_prep_both with v2); videos are a 400 */
    struct valley2_prep_settings v2; /* Valley2: the SigLIP tiling, from config.json */
    bool wrap_image_tokens;         /* the model's use_special_start_end_token */
    int32_t pad_id;                 /* id written at image placeholder positions */
    int32_t max_model_len;
    int32_t max_prompt_len;         /* 0: none; config.json tokenizer_model_max_length (the
                                       reference truncates longer prompts; here they are a 400) */
    int32_t max_tokens_default;     /* 0: up to the end of the context */
    struct vision_prep_params vp;   /* geometry from the model, pixel bounds from config */
    struct media_limits media;      /* decode limits */
    struct video_params video;      /* frame sampling and video limits */
    int32_t max_images;             /* images + video frames per request */
    int32_t max_videos;             /* video parts per request; 0: no limit */
    int32_t max_media_tokens;       /* image + video tokens per request; 0: no limit */
    struct media_budget *budget;    /* decode memory of all requests; NULL: unbounded */
    double fetch_timeout;
    int64_t fetch_max_bytes;
    int32_t fetch_max_redirects;
    const char *const *fetch_allow; /* (n_fetch_allow) */
    int32_t n_fetch_allow;
    const char *fetch_ca_file;      /* PEM CA bundle for https; NULL or "": the system's */
    const char *local_media_dir;    /* file:// URLs and paths must resolve inside it; NULL or
                                       "": refused */
};

struct prep_item {
    struct vision_prep_out v;       /* owned pixels, grid, hash */
    struct valley2_prep_out sig;    /* Valley2: the SigLIP tiles (owned); zeroed otherwise */
    int32_t offset;                 /* first placeholder position in the prompt */
};

/* The prompt positions an item takes: its SigLIP tokens (Valley2) then its Qwen2-VL tokens. */
static inline int32_t prep_item_tokens(const struct prep_item *it)
{
    return it->sig.g.n_tokens * (it->sig.pixels != NULL) + it->v.n_tokens;
}

struct prep_prompt {
    struct i32_vec ids;             /* the prompt, images expanded to pad ids */
    struct prep_item *items;        /* owned, (n_items), in prompt order */
    int32_t n_items;
    int32_t max_tokens;             /* resolved: the request's, or what the context leaves */
    bool thinking;                  /* enable_thinking as resolved for this request */
};

/* Builds the prompt of a chat, completion or tokenize request. Checks the context length
 * (prompt + max_tokens <= max_model_len, vLLM's message) unless for_tokenize; the media
 * limits (videos, media tokens, images that alone fill the context: counted from the
 * headers before decoding) and the media budget apply to every kind. Returns 0 or a
 * negative code with err filled (400 for bad input, 503 for memory); *out is destroyed on
 * failure. */
int prep_prompt_build(const struct prep_ctx *c, const struct oai_request *q, bool for_tokenize,
                      struct prep_prompt *out, struct vlm_err *err);
void prep_prompt_destroy(struct prep_prompt *p); /* accepts a zeroed struct */

#endif
