/*
 * chat.c: the Valley2.5 prompt (see chat.h for the rules). The rendering reproduces the
 * Qwen3 chat template of tokenizer_config.json for system/user/assistant messages; the
 * golden test (tests/unit/test_chat.c) compares it with jinja2 on the real template.
 */
#include "server/chat.h"

#include <string.h>

/* ==== Small string helpers ====
 * Python's str.lstrip('\n') / rstrip('\n') / split()[-1] on (pointer, length) slices, so the
 * template's expressions translate one to one. */

struct slice {
    const char *s;
    size_t n;
};

static struct slice lstrip_nl(struct slice x)
{
    while (x.n && x.s[0] == '\n') x.s++, x.n--;
    return x;
}

static struct slice rstrip_nl(struct slice x)
{
    while (x.n && x.s[x.n - 1] == '\n') x.n--;
    return x;
}

/* The text after the last occurrence of sep (x itself if none): split(sep)[-1]. */
static struct slice after_last(struct slice x, const char *sep)
{
    size_t k = strlen(sep);
    for (const char *p = x.s, *q; (q = memmem(p, x.n - (size_t)(p - x.s), sep, k)); p = q + k)
        x = (struct slice){q + k, x.n - (size_t)(q + k - x.s)};
    return x;
}

/* The text before the first occurrence of sep (x itself if none): split(sep)[0]. */
static struct slice before_first(struct slice x, const char *sep)
{
    const char *q = memmem(x.s, x.n, sep, strlen(sep));
    if (q) x.n = (size_t)(q - x.s);
    return x;
}

static bool contains(struct slice x, const char *s)
{
    return memmem(x.s, x.n, s, strlen(s)) != NULL;
}

static int32_t count_markers(const char *t)
{
    int32_t k = 0;
    for (const char *p = t; (p = strstr(p, CHAT_IMAGE_MARKER)); p += strlen(CHAT_IMAGE_MARKER)) k++;
    return k;
}

static bool starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static void sb_slice(struct strbuf *b, struct slice x)
{
    sb_append(b, x.s, x.n);
}

/* ==== Rendering ====
 * First the checks of docs/MODEL.md, "Prompt construction" and "OpenAI messages to prompt"
 * (so no partial prompt is built for a bad conversation), then the template, turn by turn. */

static const char *role_name(enum chat_role r)
{
    switch (r) {
    case CHAT_SYSTEM: return "system";
    case CHAT_USER: return "user";
    case CHAT_ASSISTANT: return "assistant";
    case CHAT_TOOL: return "tool";
    case CHAT_OTHER: return "custom";
    }
    return "?";
}

/* Whether a message of role r may follow one of role prev (start: the first message after
 * the leading system one). Any order the template renders, except that a tool message
 * answers an assistant message (or continues a run of tool messages). */
static bool role_may_follow(enum chat_role r, enum chat_role prev, bool start)
{
    if (r == CHAT_TOOL) return !start && (prev == CHAT_ASSISTANT || prev == CHAT_TOOL);
    return true;
}

#define BAD(...) vlm_err_param(err, VLM_EINVAL, 400, "messages", __VA_ARGS__)

/* Appends a user message's content: markers prefixed when the text has none ("Image
 * markers"), then each marker wrapped when o->wrap_image_tokens. */
static void render_user_content(struct strbuf *out, const char *text, int32_t n_images,
                                const struct chat_opts *o)
{
    const char *marker = o->wrap_image_tokens ? "<im_start>" CHAT_IMAGE_MARKER "<im_end>"
                                              : CHAT_IMAGE_MARKER;
    if (n_images > 0 && !strstr(text, CHAT_IMAGE_MARKER)) {
        for (int32_t i = 0; i < n_images; i++) {
            if (i) sb_puts(out, " ");
            sb_puts(out, marker);
        }
        sb_puts(out, "\n");
    }
    for (const char *p = text;;) {
        const char *q = strstr(p, CHAT_IMAGE_MARKER);
        if (!q) {
            sb_puts(out, p);
            break;
        }
        sb_append(out, p, (size_t)(q - p));
        sb_puts(out, marker);
        p = q + strlen(CHAT_IMAGE_MARKER);
    }
}

/* An assistant turn as the template renders it: reasoning split off at "</think>"; kept
 * only after the last real user query (multi-step tool use), dropped before it. Tool calls
 * follow the content, each on its own lines ("\n" before the first only when the content
 * after the think split is not empty). */
static void render_assistant(struct strbuf *out, const struct chat_msg *m, bool after_last_query,
                             bool last)
{
    const char *text = m->text ? m->text : "";
    struct slice all = {text, strlen(text)}, content = all, reasoning = {"", 0};
    if (contains(all, "</think>")) {
        content = lstrip_nl(after_last(all, "</think>"));
        reasoning = lstrip_nl(after_last(rstrip_nl(before_first(all, "</think>")), "<think>"));
    }
    sb_puts(out, "<|im_start|>assistant\n");
    if (after_last_query && (last || reasoning.n)) { /* the template's loop.last or reasoning */
        sb_puts(out, "<think>\n");
        sb_slice(out, lstrip_nl(rstrip_nl(reasoning)));
        sb_puts(out, "\n</think>\n\n");
        sb_slice(out, lstrip_nl(content));
    } else {
        sb_slice(out, content);
    }
    for (int32_t k = 0; k < m->n_tool_calls; k++) {
        if (k > 0 || content.n) sb_puts(out, "\n");
        sb_puts(out, "<tool_call>\n{\"name\": \"");
        sb_puts(out, m->tool_calls[k].name);
        sb_puts(out, "\", \"arguments\": ");
        sb_puts(out, m->tool_calls[k].arguments);
        sb_puts(out, "}\n</tool_call>");
    }
    sb_puts(out, "<|im_end|>\n");
}

/* An assistant turn as the Qwen2.5 template renders it: the content whole; each tool call
 * on its own lines after it ("\n" before the header only when there is content or no tool
 * call). */
static void render_assistant_qwen25(struct strbuf *out, const struct chat_msg *m)
{
    const char *text = m->text ? m->text : "";
    sb_puts(out, "<|im_start|>assistant");
    if (*text || !m->n_tool_calls) {
        sb_puts(out, "\n");
        sb_puts(out, text);
    }
    for (int32_t k = 0; k < m->n_tool_calls; k++) {
        sb_puts(out, "\n<tool_call>\n{\"name\": \"");
        sb_puts(out, m->tool_calls[k].name);
        sb_puts(out, "\", \"arguments\": ");
        sb_puts(out, m->tool_calls[k].arguments);
        sb_puts(out, "}\n</tool_call>");
    }
    sb_puts(out, "<|im_end|>\n");
}

/* The system turn with the template's tools block. */
static void render_tools_system(struct strbuf *out, const char *system, const struct chat_opts *o)
{
    sb_puts(out, "<|im_start|>system\n");
    sb_puts(out, system);
    sb_puts(out, "\n\n# Tools\n\nYou may call one or more functions to assist with the user "
                 "query.\n\nYou are provided with function signatures within <tools></tools> "
                 "XML tags:\n<tools>");
    for (int32_t i = 0; i < o->n_tools; i++) {
        sb_puts(out, "\n");
        sb_puts(out, o->tools[i]);
    }
    sb_puts(out, "\n</tools>\n\nFor each function call, return a json object with function name "
                 "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                 "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
                 "</tool_call><|im_end|>\n");
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* continue_final_message as transformers applies it after rendering: find the last
 * occurrence of the final message's stripped text; keep the message's trailing spacing if
 * the rendering has the whole message there, else cut after the stripped text. */
static int cut_after_final(struct strbuf *out, const char *text, struct vlm_err *err)
{
    const char *f = text ? text : "";
    size_t n = strlen(f), lo = 0, hi = n;
    while (lo < n && is_space(f[lo])) lo++;
    while (hi > lo && is_space(f[hi - 1])) hi--;
    size_t sn = hi - lo; /* final.strip() */
    const char *loc = NULL;
    for (const char *p = out->s; p && (size_t)(p - out->s) + sn <= out->n;) {
        const char *q = sn ? memmem(p, out->n - (size_t)(p - out->s), f + lo, sn)
                           : out->s + out->n;
        if (!q) break;
        loc = q;
        if (!sn) break;
        p = q + 1;
    }
    if (!loc)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages",
                             "continue_final_message is set but the final message does not "
                             "appear in the chat after applying the chat template");
    size_t at = (size_t)(loc - out->s), keep = n - lo; /* len(final.lstrip()) */
    bool whole = at + keep <= out->n && keep == n && !memcmp(loc, f, n);
    out->n = at + (whole ? keep : sn);
    out->s[out->n] = 0;
    return 0;
}

int chat_render(const struct chat_msg *msgs, int32_t n, const struct chat_opts *o,
                struct strbuf *out, int32_t *n_images_total, struct vlm_err *err)
{
    VLM_ASSERT(o && out && n_images_total && (msgs || n == 0));
    if (n <= 0) return BAD("messages must not be empty");

    /* "Chat template and thinking": optional system, then user; assistant answers user or tool;
     * tool messages follow an assistant; the conversation ends with user or tool. */
    int32_t first = msgs[0].role == CHAT_SYSTEM ? 1 : 0;
    for (int32_t i = first; i < n; i++) {
        enum chat_role prev = i == first ? CHAT_SYSTEM : msgs[i - 1].role;
        if (!role_may_follow(msgs[i].role, prev, i == first))
            return BAD("messages[%d]: unexpected role '%s' after '%s' (a tool message follows "
                       "an assistant or tool message)",
                       (int)i, role_name(msgs[i].role), i == first ? "start" : role_name(prev));
        if (msgs[i].n_tool_calls && msgs[i].role != CHAT_ASSISTANT)
            return BAD("messages[%d]: only assistant messages carry tool calls", (int)i);
    }
    bool prefill = o->no_generation_prompt || o->continue_final;
    if (msgs[n - 1].role != CHAT_USER && msgs[n - 1].role != CHAT_TOOL &&
        !(prefill && msgs[n - 1].role == CHAT_ASSISTANT))
        return BAD("messages: the last message must be a user or tool message (an assistant "
                   "message with add_generation_prompt false or continue_final_message)");
    if (o->continue_final && msgs[n - 1].role != CHAT_ASSISTANT)
        return BAD("messages: continue_final_message needs a final assistant message");

    /* "OpenAI messages to prompt": images only in user messages; markers in the text must match the
     * count. */
    int64_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        const char *text = msgs[i].text ? msgs[i].text : "";
        if (msgs[i].n_images < 0)
            return BAD("messages[%d]: negative image count %d", (int)i, (int)msgs[i].n_images);
        if (msgs[i].role != CHAT_USER && (msgs[i].n_images > 0 || strstr(text, CHAT_IMAGE_MARKER)))
            return BAD("messages[%d]: images and <image> markers are allowed only in user messages",
                       (int)i);
        total += msgs[i].n_images;
    }
    if (total > CHAT_MAX_IMAGES) return BAD("messages: too many images (%lld)", (long long)total);
    if (!first && o->default_system && strstr(o->default_system, CHAT_IMAGE_MARKER))
        return BAD("the default system prompt contains an <image> marker");
    int32_t first_user = first; /* §5.2: the implicit image goes to the first user message */
    while (first_user < n && msgs[first_user].role != CHAT_USER) first_user++;
    bool implicit = total == 0 && o->implicit_image && first_user < n;
    for (int32_t i = first; i < n; i++) {
        if (msgs[i].role != CHAT_USER) continue;
        int32_t n_img = msgs[i].n_images + (implicit && i == first_user);
        int32_t k = count_markers(msgs[i].text ? msgs[i].text : "");
        if (k && k != n_img)
            return BAD("messages[%d]: %d <image> markers in the text but %d images in the message; "
                       "they must be equal", (int)i, (int)k, (int)n_img);
    }
    *n_images_total = (int32_t)total + implicit;

    /* The template's last_query_index: the last user turn that is not a tool response. The
     * content it tests is the final one, which starts with a marker when markers were
     * prefixed, so such a turn is never a tool response. */
    int32_t last_query = n - 1;
    for (int32_t i = n - 1; i >= first; i--) {
        const char *text = msgs[i].text ? msgs[i].text : "";
        int32_t n_img = msgs[i].n_images + (implicit && i == first_user);
        bool prefixed = n_img > 0 && !strstr(text, CHAT_IMAGE_MARKER);
        if (msgs[i].role == CHAT_USER &&
            (prefixed || !(starts_with(text, "<tool_response>") && ends_with(text, "</tool_response>")))) {
            last_query = i;
            break;
        }
    }

    /* The template, turn by turn. */
    const char *system = o->default_system ? o->default_system : CHAT_DEFAULT_SYSTEM;
    if (first && msgs[0].text) system = msgs[0].text;
    if (o->n_tools > 0) {
        render_tools_system(out, system, o);
    } else {
        sb_puts(out, "<|im_start|>system\n");
        sb_puts(out, system);
        sb_puts(out, "<|im_end|>\n");
    }
    for (int32_t i = first; i < n; i++) {
        const char *text = msgs[i].text ? msgs[i].text : "";
        if (msgs[i].role == CHAT_USER) {
            sb_puts(out, "<|im_start|>user\n");
            render_user_content(out, text, msgs[i].n_images + (implicit && i == first_user), o);
            sb_puts(out, "<|im_end|>\n");
        } else if (msgs[i].role == CHAT_SYSTEM) { /* not the first: a turn like a user's */
            sb_puts(out, "<|im_start|>system\n");
            sb_puts(out, text);
            sb_puts(out, "<|im_end|>\n");
        } else if (msgs[i].role == CHAT_OTHER) { /* the template renders no other role */
        } else if (msgs[i].role == CHAT_TOOL) {
            /* consecutive tool messages share one user turn */
            if (i == 0 || msgs[i - 1].role != CHAT_TOOL) sb_puts(out, "<|im_start|>user");
            sb_puts(out, "\n<tool_response>\n");
            sb_puts(out, text);
            sb_puts(out, "\n</tool_response>");
            if (i == n - 1 || msgs[i + 1].role != CHAT_TOOL) sb_puts(out, "<|im_end|>\n");
        } else if (o->qwen25) {
            render_assistant_qwen25(out, &msgs[i]);
        } else {
            render_assistant(out, &msgs[i], i > last_query, i == n - 1);
        }
    }
    if (o->continue_final) return cut_after_final(out, msgs[n - 1].text, err);
    if (prefill) return 0;
    sb_puts(out, "<|im_start|>assistant\n");
    if (!o->enable_thinking && !o->qwen25) sb_puts(out, "<think>\n\n</think>\n\n");
    return 0;
}

/* ==== Tokenization (docs/MODEL.md, "Chunked tokenization") ==== */

static int tokenize_piece(const struct tokenizer *t, const char *p, const char *end,
                          struct i32_vec *ids, struct vlm_err *err)
{
    const size_t mlen = strlen(CHAT_IMAGE_MARKER);
    for (;;) {
        const char *q = memmem(p, (size_t)(end - p), CHAT_IMAGE_MARKER, mlen);
        const char *chunk_end = q ? q : end;
        if (chunk_end > p) {
            int rc = tok_encode(t, p, (size_t)(chunk_end - p), ids, err);
            if (rc) return rc;
        }
        if (!q) return 0;
        i32_vec_push(ids, CHAT_IMAGE_SENTINEL);
        p = q + mlen;
    }
}

int chat_tokenize(const struct tokenizer *t, const char *rendered, size_t len,
                  struct i32_vec *ids, struct vlm_err *err)
{
    static const char sep[] = "<|im_end|>\n";
    const size_t slen = sizeof sep - 1;
    const char *p = rendered, *end = rendered + len;
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), sep, slen);
        const char *piece_end = q ? q + slen : end;
        int rc = tokenize_piece(t, p, piece_end, ids, err);
        if (rc) return rc;
        p = piece_end;
    }
    return 0;
}

/* ==== Image expansion ==== */

int chat_expand_images(const struct i32_vec *ids, const int32_t *n_tokens, int32_t n_images,
                       int32_t pad_id, struct i32_vec *out, int32_t *offsets)
{
    int32_t found = 0;
    for (size_t i = 0; i < ids->n; i++) found += ids->v[i] == CHAT_IMAGE_SENTINEL;
    if (found != n_images) return VLM_EINVAL;
    for (int32_t k = 0; k < n_images; k++)
        if (n_tokens[k] < 1) return VLM_EINVAL;
    int32_t k = 0;
    for (size_t i = 0; i < ids->n; i++) {
        if (ids->v[i] != CHAT_IMAGE_SENTINEL) {
            i32_vec_push(out, ids->v[i]);
            continue;
        }
        offsets[k] = (int32_t)out->n;
        for (int32_t j = 0; j < n_tokens[k]; j++) i32_vec_push(out, pad_id);
        k++;
    }
    return 0;
}

int chat_build(const struct tokenizer *t, const struct chat_msg *msgs, int32_t n,
               const struct chat_opts *o, struct i32_vec *ids, int32_t *n_images_total,
               struct vlm_err *err)
{
    struct strbuf text = {0};
    int rc = chat_render(msgs, n, o, &text, n_images_total, err);
    if (!rc) rc = chat_tokenize(t, text.s, text.n, ids, err);
    sb_free(&text);
    return rc;
}
