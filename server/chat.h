/*
 * chat: OpenAI-style messages -> the exact token ids Valley2.5's processor produces (and
 * Valley2's, with chat_opts.qwen25)
 * (docs/MODEL.md, "Prompt construction", and "OpenAI messages to prompt" for the project's
 * decisions). Three steps, each usable alone:
 *
 *   chat_render         messages -> prompt text with "<image>" markers: the Qwen3 ChatML
 *                       template of tokenizer_config.json rendered natively (no Jinja), with
 *                       the default system prompt, the generation prompt and the thinking
 *                       switch; markers placed per "OpenAI messages to prompt"; the
 *                       implicit image.
 *   chat_tokenize       prompt text -> ids, with Valley's chunk-by-chunk quirk ("Chunked
 *                       tokenization") and one CHAT_IMAGE_SENTINEL per marker.
 *   chat_expand_images  ids with sentinels -> ids with n_tokens[i] pad ids per image, and
 *                       each image's offset (where the engine splices its embeddings).
 *
 * How a message's parts become a struct chat_msg (done by the caller, server/openai.c):
 * text parts joined with "\n" in order -> text; every image part and every sampled video
 * frame counts one in n_images. Images bind to markers in order over the whole conversation.
 *
 * Rules (violations are VLM_EINVAL, http 400, param "messages"):
 *   - at least one message; any order the Qwen3 template renders (consecutive messages of a
 *     role, system messages after the first turn, custom roles, which it drops), except that
 *     a tool message follows an assistant or tool message; the last message is a user or
 *     tool message (or an assistant message under the prefill options of struct
 *     chat_opts);
 *   - only user messages carry images or "<image>" markers; only assistant messages carry
 *     tool calls;
 *   - a user message whose text has no "<image>" gets its markers prefixed, joined by single
 *     spaces and followed by "\n" ("<image> <image>\nDescribe..."); one whose text has
 *     markers must have exactly n_images of them;
 *   - with no image in the whole conversation and implicit_image on, the first user message
 *     (if there is one) gets one image: the caller must then supply the 3x3 black image (CHAT_IMPLICIT_IMAGE)
 *     as image 0; *n_images_total says 1.
 * Assistant turns render as the real template renders turns before the last user query: the
 * text after the last "</think>" with leading newlines removed. (The template's multi-step
 * tool rule is reproduced too: assistant turns after the last user message that is not a
 * "<tool_response>...</tool_response>" text, i.e. those among tool messages and tool
 * responses that follow the last real query, keep their reasoning.)
 *
 * Tools (vLLM with --enable-auto-tool-choice --tool-call-parser hermes): with o->n_tools > 0
 * the system turn carries the template's "# Tools" block, one line per tool; an assistant
 * turn's tool calls follow its content as <tool_call>\n{"name": ..., "arguments": ...}\n
 * </tool_call> blocks; consecutive tool messages become one user turn of <tool_response>
 * blocks. The JSON texts come ready-made from the caller, written as HF transformers'
 * tojson filter writes them (server/pyjson.h: pyjson_tool for a tool, pyjson_dumps for
 * arguments).
 *
 * Thread safety: all functions are pure and may be called from any thread.
 */
#ifndef VLM_CHAT_H
#define VLM_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/base.h"
#include "server/tokenizer.h"

#define CHAT_IMAGE_SENTINEL (-200)   /* the reference's sentinel ("Chunked tokenization") */
#define CHAT_IMAGE_MARKER "<image>"
#define CHAT_DEFAULT_SYSTEM "You are a helpful assistant."
#define CHAT_MAX_IMAGES 65536        /* hard cap per conversation (configured limits are lower) */
/* The implicit image of text-only requests (docs/MODEL.md, "Implicit image"): a 3x3 black RGB image
 * (4 LLM tokens after preprocessing: smart_resize makes it 28x28). */
#define CHAT_IMPLICIT_IMAGE_SIZE 3

/* CHAT_OTHER: a custom role (vLLM passes any role to the template; Qwen3's renders none). */
enum chat_role { CHAT_SYSTEM, CHAT_USER, CHAT_ASSISTANT, CHAT_TOOL, CHAT_OTHER };

/* One tool call of an assistant turn, as the template writes it back into the prompt. */
struct chat_tool_call {
    const char *name;      /* borrowed; written as is (the template does not escape it) */
    const char *arguments; /* borrowed; the arguments as tojson writes them (pyjson_dumps of
                              the "arguments" string; "{}" when it was empty) */
};

struct chat_msg {
    enum chat_role role;
    const char *text;  /* borrowed; parts joined with "\n". NULL = "" (for a leading system
                          message: NULL = use the default system prompt) */
    int32_t n_images;  /* image parts + sampled video frames of this message */
    const struct chat_tool_call *tool_calls; /* borrowed, (n_tool_calls); assistant only */
    int32_t n_tool_calls;
};

struct chat_opts {
    bool enable_thinking;       /* false -> "<think>\n\n</think>\n\n" after the generation prompt */
    const char *default_system; /* borrowed; NULL = CHAT_DEFAULT_SYSTEM */
    bool implicit_image;        /* text-only conversations get one image */
    bool wrap_image_tokens;     /* use_special_start_end_token: "<im_start><image><im_end>" */
    const char *const *tools;   /* borrowed, (n_tools): each tool's JSON (pyjson_tool) */
    int32_t n_tools;            /* 0: no tools block */
    /* Prefill (vLLM's add_generation_prompt: false / continue_final_message: true, which
     * transformers renders): either lets the conversation end with an assistant message,
     * rendered as the template renders a last turn; no generation prompt follows. With
     * continue_final the text is cut right after the final message's content (transformers'
     * rule: the last occurrence of its whitespace-stripped text; spacing kept when the
     * template kept it), so the model continues that message; it must be an assistant
     * message whose text survives the template (else VLM_EINVAL). */
    bool no_generation_prompt;
    bool continue_final;
    /* Valley2's Qwen2.5 template instead of Qwen3's (docs/MODEL.md, "Valley2 prompt"): no
     * thinking (enable_thinking is ignored: nothing follows the generation prompt), assistant
     * turns rendered whole (no "</think>" split), "\n" before each tool call. The system turn,
     * tools block, user and tool turns, markers and tokenization are the same. */
    bool qwen25;
};

/* Renders msgs[0..n) -> out (appended; NUL-terminated) and sets *n_images_total (including
 * the implicit image). Returns 0, or VLM_EINVAL with err set (http 400, param "messages")
 * for a conversation the rules above reject; out may then hold a partial text. */
int chat_render(const struct chat_msg *msgs, int32_t n, const struct chat_opts *o,
                struct strbuf *out, int32_t *n_images_total, struct vlm_err *err);

/* docs/MODEL.md, "Chunked tokenization": splits rendered[0..len) on "<|im_end|>\n" (re-appended to
 * each piece but the last), then each piece on "<image>"; each text chunk is tokenized on its own,
 * each marker gives CHAT_IMAGE_SENTINEL. Appends to ids. Returns 0 or the tokenizer's error
 * (VLM_EINVAL for invalid UTF-8, VLM_ENOMEM). */
int chat_tokenize(const struct tokenizer *t, const char *rendered, size_t len,
                  struct i32_vec *ids, struct vlm_err *err);

/* Replaces the i-th sentinel of ids by n_tokens[i] copies of pad_id (appended to out) and
 * sets offsets[i] to the index in out of its first pad. Returns 0, or VLM_EINVAL if ids
 * hold a number of sentinels other than n_images or an n_tokens[i] < 1. */
int chat_expand_images(const struct i32_vec *ids, const int32_t *n_tokens, int32_t n_images,
                       int32_t pad_id, struct i32_vec *out, int32_t *offsets);

/* Convenience: chat_render + chat_tokenize. */
int chat_build(const struct tokenizer *t, const struct chat_msg *msgs, int32_t n,
               const struct chat_opts *o, struct i32_vec *ids, int32_t *n_images_total,
               struct vlm_err *err);

#endif
