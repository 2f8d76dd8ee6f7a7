/*
 * openai: the OpenAI (and vLLM) wire format. JSON bodies -> validated C structs, and the
 * other way: responses, stream chunks and error objects in OpenAI's exact shape.
 *
 * Parsing is strict about what it knows and lenient about what it does not: unknown fields
 * are ignored; a known field of the wrong type or out of range is VLM_EINVAL with
 * http_status 400 and err->param naming it ("messages[1].content[0].image_url",
 * "temperature", ...). A model name other than the served one is a 404.
 *
 * What a choice's tokens become as text (stop strings, the <think> split, tool calls) is
 * server/textout.h; the completion session that drives it, server/session.h.
 *
 * Callers: http.c (HTTP thread), session.c and prep.c (workers). No function here blocks or touches
 * shared state; every function is thread-safe on distinct objects.
 */
#ifndef VLM_OPENAI_H
#define VLM_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"
#include "engine/batch.h"
#include "engine/grammar.h"
#include "server/textout.h"
#include "server/tokenizer.h"

struct cJSON;

#define OAI_MAX_STOP 16      /* stop strings per request */
#define OAI_MAX_STOP_LEN 256 /* bytes per stop string */
#define OAI_MAX_TOOLS 128    /* "tools" entries per request (their bytes: --max-body-bytes) */
#define OAI_MAX_TOOL_CALLS 128 /* tool calls per assistant message */

enum oai_kind {
    OAI_KIND_CHAT,       /* POST /v1/chat/completions */
    OAI_KIND_COMPLETION, /* POST /v1/completions */
    OAI_KIND_TOKENIZE,   /* POST /tokenize: "prompt" or "messages" */
    OAI_KIND_DETOKENIZE  /* POST /detokenize: "tokens" */
};

/* OAI_ROLE_OTHER: a custom role (vLLM accepts any; the Qwen3 template renders none). */
enum oai_role { OAI_ROLE_SYSTEM, OAI_ROLE_USER, OAI_ROLE_ASSISTANT, OAI_ROLE_TOOL,
                OAI_ROLE_OTHER };

/* tool_choice. "required" and a named function force the output into tool calls
 * (oai_request.grammar, server/structured.h). */
enum oai_tool_choice {
    OAI_TOOL_CHOICE_AUTO, OAI_TOOL_CHOICE_NONE, OAI_TOOL_CHOICE_REQUIRED, OAI_TOOL_CHOICE_NAMED
};

/* A tool call of an assistant message in the request (rendered back into the prompt). */
struct oai_tool_call {
    char *name;      /* owned */
    char *arguments; /* owned; the parsed "arguments" as the template's tojson writes them */
};

enum oai_media { OAI_MEDIA_IMAGE, OAI_MEDIA_VIDEO };

struct oai_message {
    enum oai_role role;
    char *text;       /* owned; the text parts joined with "\n" ("" when none) */
    int32_t n_images; /* image parts of this message */
    int32_t n_media;  /* image + video parts: entries of oai_request.media, in order */
    struct oai_tool_call *tool_calls; /* owned, (n_tool_calls); assistant messages only */
    int32_t n_tool_calls;
};

struct oai_media_ref {
    enum oai_media kind;
    char *url; /* owned; data: or http(s): URL, or a local path (server/prep.c checks it) */
    int32_t num_frames; /* video_url.num_frames; 0: not given */
    double fps;         /* video_url.fps; 0: not given */
};

/* One prompt of a completions request: text, or token ids (text NULL). */
struct oai_prompt {
    char *text;     /* owned, NUL-terminated */
    size_t len;
    int32_t *ids;   /* owned, (n_ids) */
    int32_t n_ids;
};

#define OAI_MAX_PROMPTS 256 /* prompts in one completions request */

/* What the parser checks against (borrowed). */
struct oai_limits {
    const char *model_name;      /* the served model name; a different "model" is a 404 */
    int32_t max_n;               /* "n" above this is a 400 */
    int32_t max_images;          /* media parts per request */
    int32_t min_pixels, max_pixels; /* server bounds for mm_processor_kwargs */
    int32_t vocab_size;          /* token ids in prompts / detokenize must be below this */
    int32_t max_model_len;       /* truncate_prompt_tokens above this is a 400 (0: unchecked) */
};

/* A parsed request. Every field has its default after oai_parse(). */
struct oai_request {
    enum oai_kind kind;
    char *model;                   /* owned; NULL when absent */
    /* chat and tokenize(messages) */
    struct oai_message *msgs;      /* owned, (n_msgs) */
    int32_t n_msgs;
    struct oai_media_ref *media;   /* owned, (n_media), in conversation order */
    int32_t n_media;
    /* completions, tokenize(prompt) */
    char *prompt;                  /* owned, NUL-terminated; NULL when ids are given */
    size_t prompt_len;
    int32_t *prompt_ids;           /* owned, (n_prompt_ids): a token-id prompt / detokenize */
    int32_t n_prompt_ids;
    /* generation */
    int32_t max_tokens;            /* 0: not given */
    bool max_tokens_zero;          /* "max_tokens": 0 was given (completions with echo) */
    struct sampling_params sp;     /* seed valid only when has_seed */
    bool has_seed;
    int32_t n;
    char *stop[OAI_MAX_STOP];      /* owned, non-empty strings */
    int32_t n_stop;
    int32_t stop_ids[VLM_MAX_STOP_IDS];
    int32_t n_stop_ids;
    bool ignore_eos;
    bool skip_special_tokens;      /* default true */
    bool logprobs;                 /* chat: logprobs; completions: logprobs given */
    int32_t top_logprobs;          /* chat: top_logprobs; completions: logprobs value */
    bool echo;                     /* completions: echo is not supported (400 when true) */
    bool stream;
    bool include_usage;            /* stream_options.include_usage */
    int8_t enable_thinking;        /* -1: not given, else 0/1 */
    int32_t min_pixels, max_pixels;/* mm_processor_kwargs; 0: not given */
    int32_t num_frames;            /* mm_processor_kwargs.num_frames (videos); 0: not given */
    double fps;                    /* mm_processor_kwargs.fps (videos); 0: not given */
    bool add_generation_prompt;    /* chat, tokenize(messages): default true */
    bool continue_final;           /* continue_final_message (chat.h: prefill) */
    /* tools (chat and tokenize(messages)) */
    char **tools;                  /* owned, (n_tools): each tool as chat_tool_json writes it */
    int32_t n_tools;
    int tool_choice;               /* enum oai_tool_choice; AUTO when not given */
    /* completions: the prompts of the batch, one choice per prompt times n (the fields
     * prompt / prompt_ids above are for tokenize) */
    struct oai_prompt *prompts;    /* owned, (n_prompts) */
    int32_t n_prompts;
    /* newer OpenAI fields and vLLM extras (server/openai_extra.c) */
    int32_t *bias_ids;             /* owned, (sp.n_bias); sp.bias_ids points here */
    float *bias;                   /* owned, (sp.n_bias); sp.bias points here */
    int32_t prompt_logprobs;       /* -1: none; else top entries per prompt position */
    bool echo_only;                /* completions: echo with max_tokens 0 (one token is
                                    * generated and dropped, as vLLM does) */
    bool return_token_ids;         /* prompt_token_ids and token_ids in the response */
    bool tokens_as_ids;            /* return_tokens_as_token_ids: "token_id:N" in logprobs */
    bool include_reasoning;        /* default true; false drops the reasoning text */
    bool continuous_usage;         /* stream_options.continuous_usage_stats */
    int32_t truncate_prompt_tokens;/* 0: none; else keep the last this many prompt tokens */
    char *request_id;              /* owned; the X-Request-Id header, NULL when none */
    /* structured outputs (chat and completions; server/structured.h) */
    struct grammar *grammar;       /* owned reference; NULL: unconstrained */
    bool forced_tools;             /* tool_choice required / named: the output is tool calls */
};

/* The parts of oai_parse in server/openai_extra.c (oai_parse calls them). */
int oai_parse_prompts(const struct cJSON *root, struct oai_request *r,
                      const struct oai_limits *lim, struct vlm_err *err);
int oai_parse_extras(const struct cJSON *root, struct oai_request *r,
                     const struct oai_limits *lim, struct vlm_err *err);
void oai_extras_destroy(struct oai_request *r);

/* Parses body[0..len) as a request of the given kind. On success *out owns everything
 * (oai_request_destroy). On failure returns VLM_EINVAL (400, or 404 for an unknown model)
 * or VLM_ENOMEM (503) with err filled; *out is left destroyed. */
int oai_parse(enum oai_kind kind, const char *body, size_t len, const struct oai_limits *lim,
              struct oai_request *out, struct vlm_err *err);
void oai_request_destroy(struct oai_request *r); /* accepts a zeroed struct */

/* ==== Errors ==== */

/* {"error":{"message","type","param","code"}} for e (malloc'ed string, caller frees). */
char *oai_error_json(const struct vlm_err *e);
/* OpenAI's error type for an HTTP status ("invalid_request_error", ...). */
const char *oai_error_type(int http_status);

/* ==== Responses ==== */

/* What every response and chunk of one request carries. */
struct oai_meta {
    enum oai_kind kind;
    char id[48];          /* "chatcmpl-..." / "cmpl-..." */
    int64_t created;      /* unix seconds */
    const char *model;    /* borrowed */
};
void oai_meta_init(struct oai_meta *m, enum oai_kind kind, const char *model, uint64_t uniq);

struct oai_usage {
    int32_t prompt_tokens, completion_tokens, cached_tokens;
};

/* One token's logprob entry (chat shape: {token, logprob, bytes, top_logprobs}), appended to
 * the JSON array arr. as_ids: tokens written "token_id:N" (return_tokens_as_token_ids). */
void oai_logprob_add_chat(struct cJSON *arr, const struct tokenizer *tok, int32_t token,
                          float logprob, int32_t n_top, const int32_t *top_ids,
                          const float *top_lp, bool as_ids);
/* Completions shape: appends to the four parallel arrays of a logprobs object made by
 * oai_logprobs_completion_new(). text_offset is the offset of the token's text. A NaN
 * logprob (the first prompt token under echo) is written as null, its top list as null. */
struct cJSON *oai_logprobs_completion_new(void);
void oai_logprob_add_completion(struct cJSON *lp, const struct tokenizer *tok, int32_t token,
                                float logprob, int32_t n_top, const int32_t *top_ids,
                                const float *top_lp, int32_t text_offset, bool as_ids);
/* vLLM's prompt_logprobs entry for one prompt position: {"<id>": {"logprob", "rank",
 * "decoded_token"}, ...} for the prompt token (rank: its rank in the vocabulary) and the
 * top list (ranks 1..n_top). */
struct cJSON *oai_prompt_logprob_entry(const struct tokenizer *tok, int32_t token, float logprob,
                                       int32_t rank, int32_t n_top, const int32_t *top_ids,
                                       const float *top_lp, bool as_ids);

/* One finished choice of a non-streaming response. */
struct oai_choice_out {
    const char *content;     /* borrowed, valid UTF-8; NULL = "content": null */
    const char *reasoning;   /* borrowed; NULL or "" = none */
    const char *finish;      /* "stop" / "length" / "abort" / "tool_calls" */
    struct cJSON *logprobs;  /* taken (NULL = "logprobs": null) */
    const struct textout_call *tool_calls; /* borrowed, (n_tool_calls) */
    int32_t n_tool_calls;
    /* vLLM's extras */
    const char *stop_str;    /* stop_reason: the stop string that ended the choice, or */
    bool has_stop_token;     /* the stop_token_ids entry that did (else stop_reason null) */
    int32_t stop_token;
    const int32_t *token_ids;  /* return_token_ids: the output ids (NULL: not asked) */
    int32_t n_token_ids;
    const int32_t *prompt_ids; /* return_token_ids: the prompt's ids (chat: top level) */
    int32_t n_prompt_ids;
    struct cJSON *prompt_logprobs; /* taken; NULL: not asked (chat: top level, choice 0's) */
};
/* The whole non-streaming response body (malloc'ed, caller frees). */
char *oai_response_json(const struct oai_meta *m, const struct oai_choice_out *ch, int32_t n,
                        const struct oai_usage *u);

/* What a stream chunk may carry besides the delta (vLLM's extras); NULL members: absent. */
struct oai_chunk_extra {
    const struct oai_usage *usage;   /* stream_options.continuous_usage_stats */
    const int32_t *token_ids;        /* return_token_ids: this chunk's output ids */
    int32_t n_token_ids;
    const int32_t *prompt_ids;       /* return_token_ids: the first chunk's prompt ids */
    int32_t n_prompt_ids;
    const char *stop_str;            /* stop_reason on the last chunk (see oai_choice_out) */
    bool has_stop_token;
    int32_t stop_token;
};

/* Appends one SSE event "data: {...}\n\n" for choice index to out. role (first chunk), content,
 * reasoning, finish and logprobs may each be NULL (logprobs is taken). */
void oai_sse_chunk(struct strbuf *out, const struct oai_meta *m, int32_t index, const char *role,
                   const char *content, size_t content_len, const char *reasoning,
                   size_t reasoning_len, const char *finish, struct cJSON *logprobs);
/* The same with the extras x (may be NULL). */
void oai_sse_chunk_x(struct strbuf *out, const struct oai_meta *m, int32_t index,
                     const char *role, const char *content, size_t content_len,
                     const char *reasoning, size_t reasoning_len, const char *finish,
                     struct cJSON *logprobs, const struct oai_chunk_extra *x);
/* One SSE event whose delta holds calls[first..first+n) as "tool_calls" entries
 * {index, id, type, function: {name, arguments}}; finish may be NULL. */
void oai_sse_tool_calls(struct strbuf *out, const struct oai_meta *m, int32_t index,
                        const struct textout_call *calls, int32_t first, int32_t n,
                        const char *finish);
/* The usage chunk: choices [] and usage (stream_options.include_usage). */
void oai_sse_usage(struct strbuf *out, const struct oai_meta *m, const struct oai_usage *u);
/* An error in the middle of a stream: data: {"error":{...}} */
void oai_sse_error(struct strbuf *out, const struct vlm_err *e);
void oai_sse_done(struct strbuf *out); /* "data: [DONE]\n\n" */

#endif
