/*
 * test_chat: prompt construction against the goldens of tests/golden/make_chat_goldens.py
 * (jinja2 on the real Qwen3 template for the text, HF tokenizers + the chunked-tokenization quirk
 * of docs/MODEL.md for the ids), plus image expansion and the error paths by hand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "server/chat.h"
#include "server/pyjson.h"
#include "server/tokenizer.h"
#include "test.h"

static const char *first_diff(const char *a, const char *b)
{
    while (*a && *a == *b) a++, b++;
    return a;
}

/* One golden conversation: render, tokenize, compare. Returns 1 if it was a rendered case. */
static int check_golden(const struct tokenizer *tok, const cJSON *rec, struct pyjson_span raw)
{
    const char *name = cJSON_GetObjectItem(rec, "name")->valuestring;
    const cJSON *jo = cJSON_GetObjectItem(rec, "opts");
    const cJSON *ds = cJSON_GetObjectItem(jo, "default_system");
    struct chat_opts o = {
        .enable_thinking = cJSON_IsTrue(cJSON_GetObjectItem(jo, "enable_thinking")),
        .default_system = cJSON_IsString(ds) ? ds->valuestring : NULL,
        .implicit_image = cJSON_IsTrue(cJSON_GetObjectItem(jo, "implicit_image")),
        .wrap_image_tokens = cJSON_IsTrue(cJSON_GetObjectItem(jo, "wrap_image_tokens")),
        .no_generation_prompt = cJSON_IsFalse(cJSON_GetObjectItem(jo, "add_generation_prompt")),
        .continue_final = cJSON_IsTrue(cJSON_GetObjectItem(jo, "continue_final_message")),
        .qwen25 = cJSON_IsTrue(cJSON_GetObjectItem(jo, "qwen25")),
    };
    /* tools as the server prepares them: the client's JSON text (here: as Python wrote it
     * into the golden file) through pyjson_tool, tool call arguments (a JSON string) through
     * pyjson_dumps */
    const cJSON *jt = cJSON_GetObjectItem(rec, "tools");
    int32_t n_tools = cJSON_GetArraySize(jt);
    struct strbuf *tool_text = calloc((size_t)n_tools + 1, sizeof *tool_text);
    const char **tools = calloc((size_t)n_tools + 1, sizeof *tools);
    struct pyjson_span jts, key, one;
    struct pyjson_iter it;
    if (n_tools) CHECK(pyjson_member(raw, "tools", &jts) && pyjson_iter_init(&it, jts));
    for (int32_t i = 0; i < n_tools; i++) {
        CHECK(pyjson_iter_next(&it, &key, &one));
        CHECK_EQ(pyjson_tool(one, &tool_text[i]), 0);
        tools[i] = tool_text[i].s ? tool_text[i].s : "";
    }
    o.tools = tools;
    o.n_tools = n_tools;
    const cJSON *jm = cJSON_GetObjectItem(rec, "messages");
    int32_t n = cJSON_GetArraySize(jm);
    struct chat_msg *msgs = calloc((size_t)n + 1, sizeof *msgs);
    struct chat_tool_call *calls = calloc(64, sizeof *calls);
    struct strbuf args[64] = {{0}};
    int32_t n_calls = 0;
    for (int32_t i = 0; i < n; i++) {
        const cJSON *m = cJSON_GetArrayItem(jm, i);
        const char *role = cJSON_GetObjectItem(m, "role")->valuestring;
        const cJSON *text = cJSON_GetObjectItem(m, "text");
        msgs[i].role = !strcmp(role, "system") ? CHAT_SYSTEM
                       : !strcmp(role, "user") ? CHAT_USER
                       : !strcmp(role, "tool") ? CHAT_TOOL
                       : !strcmp(role, "assistant") ? CHAT_ASSISTANT : CHAT_OTHER;
        msgs[i].text = cJSON_IsString(text) ? text->valuestring : NULL;
        msgs[i].n_images = cJSON_GetObjectItem(m, "n_images")->valueint;
        const cJSON *tc;
        msgs[i].tool_calls = calls + n_calls;
        cJSON_ArrayForEach(tc, cJSON_GetObjectItem(m, "tool_calls")) {
            if (n_calls == 64) break;
            const char *a = cJSON_GetObjectItem(tc, "arguments")->valuestring;
            CHECK_EQ(pyjson_dumps(a[0] ? a : "{}", a[0] ? strlen(a) : 2, &args[n_calls]), 0);
            calls[n_calls].name = cJSON_GetObjectItem(tc, "name")->valuestring;
            calls[n_calls].arguments = args[n_calls].s ? args[n_calls].s : "{}";
            n_calls++;
            msgs[i].n_tool_calls++;
        }
    }
    struct strbuf out = {0};
    struct vlm_err err = {0};
    int32_t n_images = -1;
    int rc = chat_render(msgs, n, &o, &out, &n_images, &err);
    const cJSON *want_err = cJSON_GetObjectItem(rec, "error");
    int rendered = 0;
    if (want_err) {
        CHECK_EQ(rc, VLM_EINVAL);
        CHECK_EQ(err.http_status, 400);
        CHECK_STR(err.param, "messages");
        if (!strstr(err.msg, want_err->valuestring)) {
            CHECK(strstr(err.msg, want_err->valuestring));
            fprintf(stderr, "  case '%s': want '%s' in \"%s\"\n", name, want_err->valuestring, err.msg);
        }
    } else {
        rendered = 1;
        CHECK_EQ(rc, 0);
        const char *want = cJSON_GetObjectItem(rec, "rendered")->valuestring;
        if (rc == 0 && strcmp(out.s, want)) {
            CHECK_STR(out.s, want);
            fprintf(stderr, "  case '%s': differs at byte %td\n", name, first_diff(out.s, want) - out.s);
        }
        CHECK_EQ(n_images, cJSON_GetObjectItem(rec, "n_images")->valueint);
        struct i32_vec ids = {0};
        CHECK_EQ(chat_tokenize(tok, want, strlen(want), &ids, &err), 0);
        const cJSON *jids = cJSON_GetObjectItem(rec, "ids");
        size_t nw = (size_t)cJSON_GetArraySize(jids);
        int same = ids.n == nw;
        for (size_t i = 0; same && i < nw; i++)
            same = ids.v[i] == cJSON_GetArrayItem(jids, (int)i)->valueint;
        if (!same) {
            CHECK(same);
            fprintf(stderr, "  case '%s': ids differ (%zu vs %zu ids)\n", name, ids.n, nw);
        }
        i32_vec_free(&ids);
    }
    sb_free(&out);
    free(msgs);
    for (int32_t i = 0; i < n_calls; i++) sb_free(&args[i]);
    free(calls);
    for (int32_t i = 0; i < n_tools; i++) sb_free(&tool_text[i]);
    free(tool_text);
    free(tools);
    return rendered;
}

int main(void)
{
    struct tokenizer *tok = NULL;
    struct vlm_err err = {0};
    TEST("load tokenizer and goldens") {
        CHECK_EQ(tok_load(&tok, test_fixture("qwen3-tokenizer/tokenizer.json"), &err), 0);
    }
    size_t len = 0;
    char *text = vlm_read_file(test_path("VLM_SOURCE_DIR", "tests/golden/chat/conversations.json"), &len);
    cJSON *goldens = text ? cJSON_Parse(text) : NULL;
    CHECK(cJSON_IsArray(goldens));
    if (!tok || !goldens) return test_report();

    TEST("goldens: rendered text == jinja2, ids == HF tokenizers + chunking") {
        int n_rendered = 0, n_errors = 0, n_tools = 0;
        const cJSON *rec;
        struct pyjson_iter it;
        struct pyjson_span key, raw = {0};
        CHECK(pyjson_iter_init(&it, (struct pyjson_span){text, len}));
        cJSON_ArrayForEach(rec, goldens) {
            CHECK(pyjson_iter_next(&it, &key, &raw));
            int r = check_golden(tok, rec, raw);
            n_rendered += r;
            n_errors += !r;
            n_tools += r && cJSON_GetObjectItem(rec, "tools");
        }
        printf("  %d rendered conversations (%d with tools), %d rejected ones\n", n_rendered,
               n_tools, n_errors);
        CHECK(n_rendered >= 50);
        CHECK(n_tools >= 12);
        CHECK(n_errors >= 5);
    }

    /* Valley2: the Qwen2.5 template of a valley2 test checkpoint (make_valley2_chat_goldens.py) */
    size_t len2 = 0;
    char *text2 = vlm_read_file(test_path("VLM_SOURCE_DIR", "tests/golden/chat/valley2.json"), &len2);
    cJSON *goldens2 = text2 ? cJSON_Parse(text2) : NULL;
    TEST("Valley2 goldens: rendered text == jinja2 on the Qwen2.5 template, ids == chunked HF ids") {
        CHECK(cJSON_IsArray(goldens2));
        int n_rendered = 0, n_errors = 0, n_tools = 0, n_assistant = 0;
        const cJSON *rec;
        struct pyjson_iter it;
        struct pyjson_span key, raw = {0};
        CHECK(text2 && pyjson_iter_init(&it, (struct pyjson_span){text2, len2}));
        cJSON_ArrayForEach(rec, goldens2) {
            CHECK(pyjson_iter_next(&it, &key, &raw));
            CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(rec, "opts"), "qwen25")));
            int r = check_golden(tok, rec, raw);
            n_rendered += r;
            n_errors += !r;
            n_tools += r && cJSON_GetObjectItem(rec, "tools");
            const cJSON *rd = cJSON_GetObjectItem(rec, "rendered");
            n_assistant += r && strstr(rd->valuestring, "<|im_start|>assistant\n<think>") != NULL;
        }
        printf("  Valley2: %d rendered conversations (%d with tools, %d with reasoning kept in "
               "an assistant turn), %d rejected ones\n", n_rendered, n_tools, n_assistant, n_errors);
        CHECK(n_rendered >= 50);
        CHECK(n_tools >= 12);
        CHECK(n_assistant >= 3);
    }
    TEST("Valley2: no thinking switch; the generation prompt ends the text") {
        struct chat_msg m = {.role = CHAT_USER, .text = "Hi"};
        struct chat_opts o = {.enable_thinking = false, .qwen25 = true};
        struct strbuf out = {0};
        int32_t n_img = -1;
        CHECK_EQ(chat_render(&m, 1, &o, &out, &n_img, &err), 0);
        CHECK_STR(out.s, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                         "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        CHECK_EQ(n_img, 0);
        sb_free(&out);
    }
    cJSON_Delete(goldens2);
    free(text2);

    TEST("chat_build: canonical single-image request matches the MODEL.md example") {
        struct chat_msg m = {.role = CHAT_USER, .text = "Describe the given image.", .n_images = 1};
        struct chat_opts o = {.enable_thinking = true, .implicit_image = true};
        struct i32_vec ids = {0};
        int32_t n_img = 0;
        CHECK_EQ(chat_build(tok, &m, 1, &o, &ids, &n_img, &err), 0);
        CHECK_EQ(n_img, 1);
        static const int32_t head[] = {151644, 8948, 198};   /* <|im_start|>system\n */
        static const int32_t user[] = {151645, 198, 151644, 872, 198, -200, 198};
        static const int32_t tail[] = {151645, 198, 151644, 77091, 198};
        CHECK(ids.n > 20);
        if (ids.n > 20) {
            CHECK(!memcmp(ids.v, head, sizeof head));
            CHECK(!memcmp(ids.v + ids.n - ARRAY_LEN(tail), tail, sizeof tail));
            int found = 0;
            for (size_t i = 0; i + ARRAY_LEN(user) <= ids.n; i++)
                found |= !memcmp(ids.v + i, user, sizeof user);
            CHECK(found);
        }
        i32_vec_free(&ids);
    }

    TEST("chat_expand_images: pads and offsets") {
        int32_t raw[] = {1, -200, 2, 3, -200, -200, 4};
        struct i32_vec ids = {raw, ARRAY_LEN(raw), ARRAY_LEN(raw)};
        int32_t ntok[] = {2, 1, 3}, offs[3] = {-1, -1, -1};
        struct i32_vec out = {0};
        CHECK_EQ(chat_expand_images(&ids, ntok, 3, 9, &out, offs), 0);
        static const int32_t want[] = {1, 9, 9, 2, 3, 9, 9, 9, 9, 4};
        CHECK_EQ(out.n, ARRAY_LEN(want));
        CHECK(out.n == ARRAY_LEN(want) && !memcmp(out.v, want, sizeof want));
        CHECK_EQ(offs[0], 1);
        CHECK_EQ(offs[1], 5);
        CHECK_EQ(offs[2], 6);
        i32_vec_free(&out);
        CHECK_EQ(chat_expand_images(&ids, ntok, 2, 9, &out, offs), VLM_EINVAL);
        int32_t zero[] = {2, 0, 3};
        CHECK_EQ(chat_expand_images(&ids, zero, 3, 9, &out, offs), VLM_EINVAL);
        CHECK_EQ(out.n, 0);
        i32_vec_free(&out);
    }

    TEST("render: edge cases") {
        struct chat_opts o = {.enable_thinking = false, .implicit_image = false};
        struct strbuf out = {0};
        int32_t n_img = -1;
        struct chat_msg only_sys = {.role = CHAT_SYSTEM, .text = "s", .n_images = 0};
        CHECK_EQ(chat_render(&only_sys, 1, &o, &out, &n_img, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "last"));
        struct chat_msg neg = {.role = CHAT_USER, .text = "x", .n_images = -1};
        CHECK_EQ(chat_render(&neg, 1, &o, &out, &n_img, &err), VLM_EINVAL);
        CHECK_EQ(chat_render(NULL, 0, &o, &out, &n_img, &err), VLM_EINVAL);
        struct chat_msg huge = {.role = CHAT_USER, .text = "x", .n_images = 1 << 30};
        CHECK_EQ(chat_render(&huge, 1, &o, &out, &n_img, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "too many images"));
        sb_free(&out);
        struct chat_msg plain = {.role = CHAT_USER, .text = "hi", .n_images = 0};
        struct chat_opts marker_sys = {.default_system = "see <image>"};
        CHECK_EQ(chat_render(&plain, 1, &marker_sys, &out, &n_img, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "default system prompt"));
        struct chat_msg null_user = {.role = CHAT_USER, .text = NULL, .n_images = 2};
        CHECK_EQ(chat_render(&null_user, 1, &o, &out, &n_img, &err), 0);
        CHECK_STR(out.s, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                         "<|im_start|>user\n<image> <image>\n<|im_end|>\n"
                         "<|im_start|>assistant\n<think>\n\n</think>\n\n");
        CHECK_EQ(n_img, 2);
        sb_free(&out);
    }

    TEST("tokenize: invalid UTF-8 is an error, not a crash") {
        struct i32_vec ids = {0};
        const char bad[] = "<|im_start|>user\n\xff\xfe<image>\n<|im_end|>\n";
        CHECK(chat_tokenize(tok, bad, sizeof bad - 1, &ids, &err) != 0);
        i32_vec_free(&ids);
        CHECK_EQ(chat_tokenize(tok, "", 0, &ids, &err), 0);
        CHECK_EQ(ids.n, 0);
        CHECK_EQ(chat_tokenize(tok, "<image><image>", 14, &ids, &err), 0);
        CHECK_EQ(ids.n, 2);
        i32_vec_free(&ids);
    }

    cJSON_Delete(goldens);
    free(text);
    tok_free(tok);
    return test_report();
}
