/*
 * test_tools: tool calling. pyjson (Python's json.dumps from JSON text: numbers, strings,
 * what json.loads refuses, member lookup, a tool's model_dump form), the request side (tools
 * and tool calls as the template will render them), and the output side (the
 * hermes parser: plain call, several calls, text before, malformed JSON, unicode, every cut
 * of the text into two pushes and into single bytes, think + tool call through struct
 * textout), plus the response and stream chunk shapes as a session (session.h) writes them.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/pyjson.h"
#include "server/openai.h"
#include "server/session.h"
#include "test.h"

static const struct oai_limits LIM = {.model_name = "tiny", .max_n = 8, .max_images = 4,
                                      .min_pixels = 3136, .max_pixels = 1 << 20,
                                      .vocab_size = 1000};

/* ==== Request side ==== */

static void test_request(void)
{
    TEST("tools: model_dump order, nulls for absent fields, Python separators") {
        const char *b =
            "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"parallel_tool_calls\":true,"
            "\"tools\":[{\"function\":{\"strict\":true,\"parameters\":{\"type\":\"object\","
            "\"properties\":{\"q\":{\"type\":\"string\",\"description\":\"</x> \\u00e9\\n\\u0001\"},"
            "\"n\":{\"type\":\"integer\",\"minimum\":-3,\"maximum\":0.5,\"x\":1.5e-7,\"y\":2e20}}},"
            "\"name\":\"find\"},\"type\":\"function\",\"extra\":[true,false,null]}]}";
        struct oai_request q;
        struct vlm_err e = {0};
        CHECK_EQ(oai_parse(OAI_KIND_CHAT, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_EQ(q.n_tools, 1);
        CHECK_EQ(q.tool_choice, OAI_TOOL_CHOICE_AUTO);
        if (q.n_tools == 1)
            CHECK_STR(q.tools[0],
                      "{\"type\": \"function\", \"function\": {\"name\": \"find\", \"description\": "
                      "null, \"parameters\": {\"type\": \"object\", \"properties\": {\"q\": {\"type\": "
                      "\"string\", \"description\": \"</x> \xc3\xa9\\n\\u0001\"}, \"n\": {\"type\": "
                      "\"integer\", \"minimum\": -3, \"maximum\": 0.5, \"x\": 1.5e-07, \"y\": "
                      "2e+20}}}, \"strict\": true}, \"extra\": [true, false, null]}");
        oai_request_destroy(&q);
    }

    TEST("tool_choice none; tool calls and tool messages") {
        const char *b =
            "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
            "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
            "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
            "\"{\\\"a\\\":[1,2.25],\\\"b\\\":\\\"\\\\u4f60\\\"}\"}},{\"function\":{\"name\":\"g\"}},"
            "{\"function\":{\"name\":\"h\",\"arguments\":{\"k\":null}}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":[{\"type\":\"text\","
            "\"text\":\"r1\"},{\"type\":\"text\",\"text\":\"r2\"}]}],"
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],\"tool_choice\":\"none\"}";
        struct oai_request q;
        struct vlm_err e = {0};
        CHECK_EQ(oai_parse(OAI_KIND_CHAT, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_EQ(q.tool_choice, OAI_TOOL_CHOICE_NONE);
        CHECK_EQ(q.n_msgs, 3);
        if (q.n_msgs == 3) {
            CHECK_EQ(q.msgs[1].role, OAI_ROLE_ASSISTANT);
            CHECK_STR(q.msgs[1].text, "");
            CHECK_EQ(q.msgs[1].n_tool_calls, 3);
            if (q.msgs[1].n_tool_calls == 3) {
                CHECK_STR(q.msgs[1].tool_calls[0].name, "f");
                CHECK_STR(q.msgs[1].tool_calls[0].arguments, "{\"a\": [1, 2.25], \"b\": \"\xe4\xbd\xa0\"}");
                CHECK_STR(q.msgs[1].tool_calls[1].arguments, "{}");
                CHECK_STR(q.msgs[1].tool_calls[2].arguments, "{\"k\": null}");
            }
            CHECK_EQ(q.msgs[2].role, OAI_ROLE_TOOL);
            CHECK_STR(q.msgs[2].text, "r1\nr2");
        }
        oai_request_destroy(&q);
    }

    TEST("tokenize with tools; empty tools list means none") {
        const char *b = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[]}";
        struct oai_request q;
        struct vlm_err e = {0};
        CHECK_EQ(oai_parse(OAI_KIND_TOKENIZE, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_EQ(q.n_tools, 0);
        oai_request_destroy(&q);
    }

    TEST("too many tools") {
        struct strbuf b = {0};
        sb_puts(&b, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[");
        for (int i = 0; i <= OAI_MAX_TOOLS; i++)
            sb_printf(&b, "%s{\"type\":\"function\",\"function\":{\"name\":\"f%d\"}}", i ? "," : "", i);
        sb_puts(&b, "]}");
        struct oai_request q;
        struct vlm_err e = {0};
        CHECK(oai_parse(OAI_KIND_CHAT, b.s, b.n, &LIM, &q, &e) < 0);
        CHECK_STR(e.param, "tools");
        oai_request_destroy(&q);
        sb_free(&b);
    }

    TEST("pyjson: numbers as Python writes them, strings, separators") {
        static const char *const cases[][2] = {
            {"0.1", "0.1"}, {"-2.5e-5", "-2.5e-05"}, {"1e-4", "0.0001"}, {"1E5", "100000.0"},
            {"123456.789", "123456.789"}, {"1e16", "1e+16"}, {"1.5e300", "1.5e+300"},
            {"1.0", "1.0"}, {"-0.0", "-0.0"}, {"-0", "0"}, {"100", "100"}, {"-3", "-3"}, {"1e400", "Infinity"},
            {"12345678901234567890123", "12345678901234567890123"}, {"0.30000000000000004",
            "0.30000000000000004"}, {" [ ] ", "[]"}, {"{}", "{}"},
            {"[1,{\"a\" :[true,false,null]},\"x\"]", "[1, {\"a\": [true, false, null]}, \"x\"]"},
            {"\"\\\"\\\\\\/\\b\\f\\t\\r\\n\\u0000\\u001f\\u007f\\u00e9\\ud83c\\udf0d</x>\"",
             "\"\\\"\\\\/\\b\\f\\t\\r\\n\\u0000\\u001f\x7f\xc3\xa9\xf0\x9f\x8c\x8d</x>\""},
            {"{\"b\":1,\"a\":2}", "{\"b\": 1, \"a\": 2}"},
        };
        for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
            struct strbuf s = {0};
            CHECK_EQ(pyjson_dumps(cases[i][0], strlen(cases[i][0]), &s), 0);
            CHECK_STR(s.s ? s.s : "", cases[i][1]);
            sb_free(&s);
        }
    }

    TEST("pyjson: what Python's json.loads refuses") {
        static const char *const bad[] = {
            "", " ", "01", "1.", ".5", "+1", "-", "1e", "1e+", "[1,]", "[1 2]", "{\"a\"}",
            "{\"a\":}", "{a:1}", "{\"a\":1,}", "\"x", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"",
            "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"tab\there\"", "tru", "nul", "NaN",
            "Infinity", "[1] x", "{} {}", "'a'", "[\"a\"\x01]"};
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            struct strbuf s = {0};
            if (pyjson_dumps(bad[i], strlen(bad[i]), &s) != VLM_EINVAL) {
                CHECK(!"accepted");
                fprintf(stderr, "  accepted: %s\n", bad[i]);
            }
            sb_free(&s);
        }
        struct strbuf deep = {0};
        for (int i = 0; i < PYJSON_MAX_DEPTH + 1; i++) sb_puts(&deep, "[");
        for (int i = 0; i < PYJSON_MAX_DEPTH + 1; i++) sb_puts(&deep, "]");
        CHECK_EQ(pyjson_dumps(deep.s, deep.n, NULL), VLM_EINVAL);
        deep.n = 2; /* "[[" ... */
        CHECK_EQ(pyjson_dumps(deep.s, deep.n, NULL), VLM_EINVAL);
        sb_free(&deep);
    }

    TEST("pyjson: members, keys with escapes, tool model_dump") {
        const char *o = "{\"n\\u0061me\":\"x\",\"name\":\"y\",\"k\":[1,{}]}";
        struct pyjson_span v;
        CHECK(pyjson_member((struct pyjson_span){o, strlen(o)}, "name", &v));
        CHECK(v.n == 3 && !memcmp(v.s, "\"x\"", 3));
        CHECK(pyjson_member((struct pyjson_span){o, strlen(o)}, "k", &v));
        CHECK(v.n == 6 && !memcmp(v.s, "[1,{}]", 6));
        CHECK(!pyjson_member((struct pyjson_span){o, strlen(o)}, "zz", &v));
        CHECK(!pyjson_member((struct pyjson_span){"[1]", 3}, "a", &v));
        const char *t = "{\"function\":{\"parameters\":{\"x\":1.0},\"name\":\"f\"},\"type\":\"function\"}";
        struct strbuf s = {0};
        CHECK_EQ(pyjson_tool((struct pyjson_span){t, strlen(t)}, &s), 0);
        CHECK_STR(s.s, "{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": null, "
                       "\"parameters\": {\"x\": 1.0}}}");
        sb_free(&s);
    }
}

/* ==== Output side ==== */

struct parsed {
    struct strbuf content;
    struct textout_tools p;
};

/* Feeds text cut at the given offsets (sorted, in (0, n)), then finishes. */
static void run_cuts(struct parsed *r, const char *text, const size_t *cuts, int n_cuts)
{
    memset(r, 0, sizeof *r);
    textout_tools_init(&r->p, 42);
    size_t at = 0, n = strlen(text);
    for (int i = 0; i <= n_cuts; i++) {
        size_t to = i < n_cuts ? cuts[i] : n;
        textout_tools_push(&r->p, text + at, to - at, &r->content);
        at = to;
    }
    textout_tools_finish(&r->p, &r->content);
}

static void parsed_free(struct parsed *r)
{
    sb_free(&r->content);
    textout_tools_destroy(&r->p);
}

static const char *S(const struct strbuf *b)
{
    return b->s ? b->s : "";
}

/* The same text, whole, cut once at every byte and cut into single bytes: same result. */
static int same_every_cut(const char *text)
{
    struct parsed whole;
    run_cuts(&whole, text, NULL, 0);
    size_t n = strlen(text);
    int ok = 1;
    for (size_t k = 1; k < n && ok; k++) {
        struct parsed r;
        run_cuts(&r, text, &k, 1);
        ok = !strcmp(S(&r.content), S(&whole.content)) && r.p.n_calls == whole.p.n_calls;
        for (int32_t i = 0; ok && i < r.p.n_calls; i++)
            ok = !strcmp(r.p.calls[i].name, whole.p.calls[i].name) &&
                 !strcmp(r.p.calls[i].arguments, whole.p.calls[i].arguments) &&
                 !strcmp(r.p.calls[i].id, whole.p.calls[i].id);
        parsed_free(&r);
    }
    size_t *cuts = calloc(n + 1, sizeof *cuts);
    for (size_t k = 1; k < n; k++) cuts[k - 1] = k;
    struct parsed bytes;
    run_cuts(&bytes, text, cuts, n > 1 ? (int)n - 1 : 0);
    ok = ok && !strcmp(S(&bytes.content), S(&whole.content)) &&
         bytes.p.n_calls == whole.p.n_calls;
    parsed_free(&bytes);
    free(cuts);
    parsed_free(&whole);
    return ok;
}

static void test_parser(void)
{
    TEST("plain call") {
        struct parsed r;
        const char *t = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
                        "</tool_call>";
        run_cuts(&r, t, NULL, 0);
        CHECK_EQ(r.p.n_calls, 1);
        if (r.p.n_calls == 1) {
            CHECK_STR(r.p.calls[0].name, "get_weather");
            CHECK_STR(r.p.calls[0].arguments, "{\"city\": \"Paris\"}");
            CHECK_EQ(strlen(r.p.calls[0].id), 5 + TEXTOUT_CALL_ID_CHARS);
            CHECK(!strncmp(r.p.calls[0].id, "call_", 5));
        }
        CHECK_STR(S(&r.content), "");
        CHECK(same_every_cut(t));
        parsed_free(&r);
    }

    TEST("several calls, text before, unique ids") {
        struct parsed r;
        const char *t = "Let me check both.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n"
                        "</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": [1, 2]}}\n"
                        "</tool_call>\n";
        run_cuts(&r, t, NULL, 0);
        CHECK_EQ(r.p.n_calls, 2);
        CHECK_STR(S(&r.content), "Let me check both.\n\n");
        if (r.p.n_calls == 2) {
            CHECK_STR(r.p.calls[1].name, "b");
            CHECK_STR(r.p.calls[1].arguments, "{\"x\": [1, 2]}");
            CHECK(strcmp(r.p.calls[0].id, r.p.calls[1].id));
        }
        CHECK(same_every_cut(t));
        parsed_free(&r);
    }

    TEST("malformed JSON stays in content, good calls still parse") {
        struct parsed r;
        const char *t = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}\n</tool_call>\n"
                        "<tool_call>{\"arguments\": {}}</tool_call>"
                        "<tool_call>{\"name\": \"ok\", \"arguments\": null}</tool_call>";
        run_cuts(&r, t, NULL, 0);
        CHECK_EQ(r.p.n_calls, 1);
        CHECK_STR(S(&r.content), "<tool_call>\n{\"name\": \"a\", \"arguments\": {}\n</tool_call>\n"
                                 "<tool_call>{\"arguments\": {}}</tool_call>");
        if (r.p.n_calls == 1) CHECK_STR(r.p.calls[0].arguments, "null");
        CHECK(same_every_cut(t));
        parsed_free(&r);
    }

    TEST("unicode, text after the calls, unterminated last block") {
        struct parsed r;
        const char *t = "好的 🌍 <tool_call>{\"name\": \"翻译\", \"arguments\": {\"t\": \"\\u00e9 é\"}}"
                        "</tool_call> then more text <tool_call>{\"name\": \"z\", \"arguments\": 1}";
        run_cuts(&r, t, NULL, 0);
        CHECK_EQ(r.p.n_calls, 2);
        CHECK_STR(S(&r.content), "好的 🌍  then more text");
        if (r.p.n_calls == 2) {
            CHECK_STR(r.p.calls[0].name, "翻译");
            CHECK_STR(r.p.calls[0].arguments, "{\"t\": \"é é\"}");
            CHECK_STR(r.p.calls[1].arguments, "1");
        }
        CHECK(same_every_cut(t));
        parsed_free(&r);
    }

    TEST("no call: text, lone tags and tag prefixes pass through") {
        struct parsed r;
        const char *t = "a < b, <tool_ and </tool_call> and <tool_call";
        run_cuts(&r, t, NULL, 0);
        CHECK_EQ(r.p.n_calls, 0);
        CHECK_STR(S(&r.content), t);
        CHECK(same_every_cut(t));
        parsed_free(&r);
        run_cuts(&r, "<tool_call>not json", NULL, 0);
        CHECK_EQ(r.p.n_calls, 0);
        CHECK_STR(S(&r.content), "<tool_call>not json");
        parsed_free(&r);
    }

    TEST("think + tool call through both stages (struct textout)") {
        const char *pieces[] = {"<think>", "\nI need the", " weather.\n", "</think>", "\n\n",
                                "<tool", "_call>\n{\"name\": \"w\", ", "\"arguments\": {\"c\": 1}}",
                                "\n</tool_", "call>"};
        struct textout o;
        struct strbuf reasoning = {0}, content = {0};
        textout_init(&o, NULL, true, NULL, 0, true, true, 7);
        for (size_t i = 0; i < ARRAY_LEN(pieces); i++)
            CHECK_EQ(textout_push_bytes(&o, pieces[i], strlen(pieces[i]), &content, &reasoning), 0);
        textout_finish(&o, &content, &reasoning);
        CHECK_STR(S(&reasoning), "\nI need the weather.\n");
        CHECK_STR(S(&content), "\n\n");
        CHECK_EQ(textout_n_calls(&o), 1);
        if (textout_n_calls(&o) == 1) CHECK_STR(o.tools.calls[0].arguments, "{\"c\": 1}");
        textout_destroy(&o);
        sb_free(&reasoning);
        sb_free(&content);
    }

    TEST("a stop string ends the text; a call before it is still parsed") {
        static const char *const stop[] = {"END"};
        struct textout o;
        struct strbuf reasoning = {0}, content = {0};
        textout_init(&o, NULL, true, stop, 1, false, true, 7);
        const char *t = "<tool_call>{\"name\": \"w\", \"arguments\": {}}</tool_call> ok END x";
        CHECK_EQ(textout_push_bytes(&o, t, strlen(t), &content, &reasoning), 1);
        CHECK_EQ(textout_push_bytes(&o, "more", 4, &content, &reasoning), 0);
        textout_finish(&o, &content, &reasoning);
        CHECK_STR(S(&content), " ok"); /* whitespace up to the end is dropped after a call */
        CHECK_EQ(textout_n_calls(&o), 1);
        textout_destroy(&o);
        sb_free(&reasoning);
        sb_free(&content);
    }

    TEST("tools off: the tags are plain content") {
        struct textout o;
        struct strbuf reasoning = {0}, content = {0};
        textout_init(&o, NULL, true, NULL, 0, false, false, 7);
        const char *t = "<tool_call>{\"name\": \"w\", \"arguments\": {}}</tool_call>";
        textout_push_bytes(&o, t, strlen(t), &content, &reasoning);
        textout_finish(&o, &content, &reasoning);
        CHECK_STR(S(&content), t);
        CHECK_EQ(textout_n_calls(&o), 0);
        textout_destroy(&o);
        sb_free(&reasoning);
        sb_free(&content);
    }
}

/* ==== Response shapes ==== */

/* A chat session of one choice (server/session.h) for a request with a tool, as
 * sess_prepare leaves it minus the scheduler request; its choice is fed decoded text. */
static void session_open(struct session *s, const struct sess_env *env, const char *extra)
{
    char body[512];
    snprintf(body, sizeof body,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
             "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]%s}", extra);
    struct vlm_err e = {0};
    sess_init(s, env);
    CHECK_EQ(oai_parse(OAI_KIND_CHAT, body, strlen(body), &LIM, &s->q, &e), 0);
    oai_meta_init(&s->meta, OAI_KIND_CHAT, "tiny", 1);
    s->ch = xcalloc(1, sizeof *s->ch);
    s->n_ch = 1;
    s->n_prompt = 3;
    sess_choice_init(s, &s->ch[0], 0, false, 5);
}

/* Feeds text to the session's choice, then ends it as the scheduler would (state). */
static void session_feed(struct session *s, const char *text, int state)
{
    struct sess_choice *h = &s->ch[0];
    textout_push_bytes(&h->out, text, strlen(text), &h->content, &h->reasoning);
    textout_finish(&h->out, &h->content, &h->reasoning);
    h->n_tokens = 4;
    h->state = state;
    h->done = true;
}

static const cJSON *choice0(const cJSON *j)
{
    return cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
}

static void test_shapes(void)
{
    const struct sess_env env = {0};
    TEST("session response: content null before calls, tool_calls, finish tool_calls") {
        struct session s;
        session_open(&s, &env, "");
        session_feed(&s, " \n<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": \"b\"}}</tool_call>",
                     REQ_FINISHED_STOP);
        char *js = sess_response_json(&s);
        cJSON *j = cJSON_Parse(js);
        const cJSON *c0 = choice0(j);
        const cJSON *msg = cJSON_GetObjectItem(c0, "message");
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")));
        CHECK_STR(cJSON_GetObjectItem(c0, "finish_reason")->valuestring, "tool_calls");
        const cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(msg, "tool_calls"), 0);
        CHECK(tc != NULL);
        if (tc) {
            CHECK_STR(cJSON_GetObjectItem(tc, "type")->valuestring, "function");
            CHECK_STR(cJSON_GetObjectItem(tc, "id")->valuestring, s.ch[0].out.tools.calls[0].id);
            const cJSON *f = cJSON_GetObjectItem(tc, "function");
            CHECK_STR(cJSON_GetObjectItem(f, "name")->valuestring, "f");
            CHECK_STR(cJSON_GetObjectItem(f, "arguments")->valuestring, "{\"a\": \"b\"}");
        }
        const cJSON *u = cJSON_GetObjectItem(j, "usage");
        CHECK_EQ(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 3);
        CHECK_EQ(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 4);
        cJSON_Delete(j);
        free(js);
        sess_destroy(&s);
    }

    TEST("session response: text before the calls kept; length with calls is tool_calls") {
        struct session s;
        session_open(&s, &env, "");
        session_feed(&s, "Sure.<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
                     REQ_FINISHED_LENGTH);
        char *js = sess_response_json(&s);
        cJSON *j = cJSON_Parse(js);
        const cJSON *msg = cJSON_GetObjectItem(choice0(j), "message");
        CHECK_STR(cJSON_GetObjectItem(msg, "content")->valuestring, "Sure.");
        CHECK_STR(cJSON_GetObjectItem(choice0(j), "finish_reason")->valuestring, "tool_calls");
        cJSON_Delete(j);
        free(js);
        sess_destroy(&s);
    }

    TEST("session response: tool_choice none leaves the tags in the content") {
        struct session s;
        session_open(&s, &env, ",\"tool_choice\":\"none\"");
        const char *t = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>";
        session_feed(&s, t, REQ_FINISHED_STOP);
        char *js = sess_response_json(&s);
        cJSON *j = cJSON_Parse(js);
        const cJSON *msg = cJSON_GetObjectItem(choice0(j), "message");
        CHECK_STR(cJSON_GetObjectItem(msg, "content")->valuestring, t);
        CHECK(!cJSON_GetObjectItem(msg, "tool_calls") ||
              !cJSON_GetArraySize(cJSON_GetObjectItem(msg, "tool_calls")));
        CHECK_STR(cJSON_GetObjectItem(choice0(j), "finish_reason")->valuestring, "stop");
        cJSON_Delete(j);
        free(js);
        sess_destroy(&s);
    }

    TEST("session stream: role, content, one tool_calls delta carrying the finish reason") {
        struct session s;
        session_open(&s, &env, "");
        struct sess_choice *h = &s.ch[0];
        struct strbuf out = {0};
        const char *pieces[] = {"Hi", "<tool_call>{\"name\": \"f\", ", "\"arguments\": {}}</tool_call>"};
        for (size_t i = 0; i < ARRAY_LEN(pieces); i++) {
            sess_stream_role(&s, 0, &out);
            textout_push_bytes(&h->out, pieces[i], strlen(pieces[i]), &h->content, &h->reasoning);
            if (i + 1 == ARRAY_LEN(pieces)) {
                textout_finish(&h->out, &h->content, &h->reasoning);
                h->state = REQ_FINISHED_STOP;
                h->done = true;
            }
            sess_stream_delta(&s, 0, &out);
        }
        /* the events: role, "Hi", the call with finish_reason tool_calls */
        const char *ev[3] = {0};
        int n_ev = 0;
        for (const char *p = out.s; p && (p = strstr(p, "data: ")) && n_ev < 3; p += 6) ev[n_ev++] = p + 6;
        CHECK_EQ(n_ev, 3);
        if (n_ev == 3) {
            cJSON *j = cJSON_Parse(ev[0]);
            CHECK_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(choice0(j), "delta"), "role")->valuestring,
                      "assistant");
            cJSON_Delete(j);
            j = cJSON_Parse(ev[1]);
            CHECK_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(choice0(j), "delta"), "content")->valuestring,
                      "Hi");
            CHECK(cJSON_IsNull(cJSON_GetObjectItem(choice0(j), "finish_reason")));
            cJSON_Delete(j);
            j = cJSON_Parse(ev[2]);
            const cJSON *tc = cJSON_GetArrayItem(
                cJSON_GetObjectItem(cJSON_GetObjectItem(choice0(j), "delta"), "tool_calls"), 0);
            CHECK(tc && cJSON_GetObjectItem(tc, "index")->valueint == 0);
            CHECK_STR(cJSON_GetObjectItem(choice0(j), "finish_reason")->valuestring, "tool_calls");
            cJSON_Delete(j);
        }
        sb_free(&out);
        sess_destroy(&s);
    }
}

int main(void)
{
    test_request();
    test_parser();
    test_shapes();
    return test_report();
}
