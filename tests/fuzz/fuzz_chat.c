/*
 * fuzz_chat: arbitrary conversations through prompt construction (server/chat.c).
 * Input: byte 0 = options (bit 0 thinking, 1 implicit image, 2 wrap, 3 custom default system
 * prompt, 4 a default system prompt holding a marker, 5 one tool); the rest split on NUL
 * bytes into messages, each = one header byte (role = b % 4, n_images = (b >> 2) & 7, bit 6:
 * an assistant message carries one tool call) and its text.
 * Checks: chat_render returns 0 or VLM_EINVAL with a message; on success the chunked
 * tokenization fails only for invalid UTF-8 and yields exactly *n_images_total sentinels, and
 * chat_expand_images places every image where its sentinel was. A broken check aborts, so the
 * fuzzer reports it like a crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tok.h"
#include "server/chat.h"

#define CHECK_OR_ABORT(x) do { if (!(x)) { fprintf(stderr, "fuzz_chat: %s failed\n", #x); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tokenizer *tok = fuzz_tokenizer("fuzz_chat");
    if (size < 1 || size > 1 << 16) return 0;
    struct chat_opts o = {
        .enable_thinking = data[0] & 1,
        .implicit_image = data[0] & 2,
        .wrap_image_tokens = data[0] & 4,
        .default_system = (data[0] & 16) ? "see <image>" : (data[0] & 8) ? "Custom <think> system\n" : NULL,
    };
    char *text = malloc(size); /* data[1..] + NUL, cut into messages in place */
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    static const char *const tools[] = {"{\"type\": \"function\", \"function\": {\"name\": \"f\"}}"};
    static const struct chat_tool_call call = {.name = "f", .arguments = "{\"a\": 1}"};
    o.tools = tools;
    o.n_tools = (data[0] & 32) ? 1 : 0;
    struct chat_msg msgs[64];
    int32_t n = 0;
    for (char *p = text; p < text + size - 1 && n < 64;) {
        size_t len = strlen(p);
        if (len) {
            uint8_t h = (uint8_t)p[0];
            msgs[n] = (struct chat_msg){.role = (enum chat_role)(h % 4), .text = p + 1,
                                        .n_images = (h >> 2) & 7};
            if (msgs[n].role == CHAT_ASSISTANT && (h & 0x40)) { /* one tool call */
                msgs[n].tool_calls = &call;
                msgs[n].n_tool_calls = 1;
            }
            n++;
        }
        p += len + 1;
    }
    struct strbuf out = {0};
    struct vlm_err err = {0};
    int32_t n_images = -1;
    int rc = chat_render(msgs, n, &o, &out, &n_images, &err);
    CHECK_OR_ABORT(rc == 0 || (rc == VLM_EINVAL && err.msg[0] && err.http_status == 400));
    if (rc == 0) {
        CHECK_OR_ABORT(n_images >= 0 && out.s);
        struct i32_vec ids = {0}, expanded = {0};
        rc = chat_tokenize(tok, out.s, out.n, &ids, &err);
        CHECK_OR_ABORT(rc == 0 || rc == VLM_EINVAL);
        if (rc == 0) {
            int32_t sentinels = 0;
            for (size_t i = 0; i < ids.n; i++) sentinels += ids.v[i] == CHAT_IMAGE_SENTINEL;
            CHECK_OR_ABORT(sentinels == n_images);
            int32_t *ntok = malloc(sizeof(int32_t) * ((size_t)n_images + 1));
            int32_t *offs = malloc(sizeof(int32_t) * ((size_t)n_images + 1));
            for (int32_t i = 0; i < n_images; i++) ntok[i] = 1 + i % 5;
            CHECK_OR_ABORT(chat_expand_images(&ids, ntok, n_images, 151655, &expanded, offs) == 0);
            size_t want = ids.n;
            for (int32_t i = 0; i < n_images; i++) {
                want += (size_t)ntok[i] - 1;
                CHECK_OR_ABORT(expanded.v[offs[i]] == 151655);
                CHECK_OR_ABORT(i == 0 || offs[i] >= offs[i - 1] + ntok[i - 1]);
            }
            CHECK_OR_ABORT(expanded.n == want);
            free(ntok);
            free(offs);
        }
        i32_vec_free(&ids);
        i32_vec_free(&expanded);
    }
    sb_free(&out);
    free(text);
    return 0;
}
