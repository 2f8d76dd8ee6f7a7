/*
 * test_responses: the Responses API translation (server/responses.h) without a server: the
 * chat request a body becomes (roles, merged tool calls, tools as written, thinking from
 * reasoning.effort, max_output_tokens), chat field names mapped back, the store's two bounds
 * and its use order, and the stream's items where whitespace and tool calls meet.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "server/responses.h"
#include "test.h"

static const struct oai_limits lim = {.model_name = "tiny", .max_n = 8, .max_images = 8,
                                      .min_pixels = 3136, .max_pixels = 1 << 22,
                                      .vocab_size = 151936, .max_model_len = 4096};

static int parse(const char *body, struct resp_store *st, struct oai_request *q,
                 struct resp_req **rq, struct vlm_err *e)
{
    return resp_parse(body, strlen(body), &lim, st, q, rq, e);
}

/* Parses body and finishes it with content text; returns the response id (static). */
static const char *answer(struct resp_store *st, const char *body, const char *content)
{
    static char id[64];
    struct oai_request q;
    struct resp_req *rq;
    struct vlm_err e;
    id[0] = 0;
    if (parse(body, st, &q, &rq, &e)) return id;
    struct resp_result res = {.content = content, .input_tokens = 1, .output_tokens = 1};
    free(resp_finish(rq, st, &res));
    snprintf(id, sizeof id, "%s", resp_id(rq));
    oai_request_destroy(&q);
    resp_req_free(rq);
    return id;
}

/* The "type" of each event in an SSE text, joined by spaces. */
static void event_types(const char *sse, char *out, size_t cap)
{
    out[0] = 0;
    for (const char *p = sse; (p = strstr(p, "event: ")); p += 7) {
        const char *e = strchr(p, '\n');
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%.*s", n ? " " : "", (int)(e - p - 7 - 9), p + 7 + 9);
    }
}

int main(void)
{
    struct vlm_err e;
    struct oai_request q;
    struct resp_req *rq;

    TEST("instructions, a string input, max_output_tokens and effort none") {
        CHECK_EQ(parse("{\"input\": \"hi\", \"instructions\": \"Be brief.\", "
                       "\"max_output_tokens\": 7, \"reasoning\": {\"effort\": \"none\"}}",
                       NULL, &q, &rq, &e), 0);
        CHECK_EQ(q.kind, OAI_KIND_CHAT);
        CHECK_EQ(q.n_msgs, 2);
        CHECK_EQ(q.msgs[0].role, OAI_ROLE_SYSTEM);
        CHECK_STR(q.msgs[0].text, "Be brief.");
        CHECK_EQ(q.msgs[1].role, OAI_ROLE_USER);
        CHECK_EQ(q.max_tokens, 7);
        CHECK_EQ(q.enable_thinking, 0);
        CHECK(!resp_streaming(rq));
        oai_request_destroy(&q);
        resp_req_free(rq);
    }

    TEST("chat_template_kwargs.enable_thinking wins over the effort") {
        CHECK_EQ(parse("{\"input\": \"hi\", \"reasoning\": {\"effort\": \"none\"}, "
                       "\"chat_template_kwargs\": {\"enable_thinking\": true}, \"stream\": true}",
                       NULL, &q, &rq, &e), 0);
        CHECK_EQ(q.enable_thinking, 1);
        CHECK(resp_streaming(rq) && q.stream);
        oai_request_destroy(&q);
        resp_req_free(rq);
    }

    TEST("function_call items join the assistant message; outputs are tool messages") {
        const char *b =
            "{\"input\": [{\"role\": \"user\", \"content\": \"w?\"},"
            " {\"role\": \"assistant\", \"content\": [{\"type\": \"output_text\", \"text\": \"x\"}]},"
            " {\"type\": \"function_call\", \"call_id\": \"a\", \"name\": \"f\", \"arguments\": \"{}\"},"
            " {\"type\": \"function_call\", \"call_id\": \"b\", \"name\": \"g\", \"arguments\": \"[1]\"},"
            " {\"type\": \"reasoning\", \"summary\": []},"
            " {\"type\": \"function_call_output\", \"call_id\": \"a\", \"output\": \"1\"},"
            " {\"type\": \"function_call_output\", \"call_id\": \"b\", \"output\": \"2\"}],"
            " \"tools\": [{\"type\": \"function\", \"name\": \"f\", \"strict\": true,"
            " \"parameters\": {\"type\": \"number\", \"minimum\": 1.0}}]}";
        CHECK_EQ(parse(b, NULL, &q, &rq, &e), 0);
        CHECK_EQ(q.n_msgs, 4);
        CHECK_EQ(q.msgs[1].role, OAI_ROLE_ASSISTANT);
        CHECK_STR(q.msgs[1].text, "x");
        CHECK_EQ(q.msgs[1].n_tool_calls, 2);
        CHECK_STR(q.msgs[1].tool_calls[1].name, "g");
        CHECK_EQ(q.msgs[2].role, OAI_ROLE_TOOL);
        CHECK_EQ(q.msgs[3].role, OAI_ROLE_TOOL);
        CHECK_EQ(q.n_tools, 1);
        CHECK(q.n_tools == 1 && strstr(q.tools[0], "\"minimum\": 1.0")); /* as written */
        CHECK(q.n_tools == 1 && !strstr(q.tools[0], "strict"));
        oai_request_destroy(&q);
        resp_req_free(rq);
    }

    TEST("chat field names are mapped back") {
        CHECK(parse("{\"input\": \"hi\", \"max_output_tokens\": 0}", NULL, &q, &rq, &e));
        CHECK_STR(e.param, "max_output_tokens");
        CHECK(parse("{\"input\": [{\"role\": \"user\", \"content\": 5}]}", NULL, &q, &rq, &e));
        CHECK_STR(e.param, "input[0].content");
        CHECK(parse("{\"input\": \"x\", \"text\": {\"format\": {\"type\": \"json_schema\", "
                    "\"name\": \"n\"}}}", NULL, &q, &rq, &e));
        CHECK_STR(e.param, "text.format.schema");
        CHECK_EQ(parse("{\"instructions\": \"s\", \"input\": [{\"role\": \"user\", \"content\": "
                       "[{\"type\": \"input_text\", \"text\": \"a\"}]}]}", NULL, &q, &rq, &e), 0);
        struct vlm_err m = {0};
        snprintf(m.param, sizeof m.param, "messages[1].content[0].image_url");
        resp_map_err(rq, &m);
        CHECK_STR(m.param, "input[0].content[0].image_url");
        snprintf(m.param, sizeof m.param, "messages[0].content");
        resp_map_err(rq, &m);
        CHECK_STR(m.param, "instructions");
        oai_request_destroy(&q);
        resp_req_free(rq);
    }

    TEST("previous_response_id: unknown is a 404; known brings the conversation") {
        struct resp_store *st = resp_store_new(8, 1 << 20);
        CHECK(parse("{\"input\": \"x\", \"previous_response_id\": \"resp_no\"}", st, &q, &rq, &e));
        CHECK_EQ(e.http_status, 404);
        CHECK_STR(e.param, "previous_response_id");
        char id[64], body[256];
        snprintf(id, sizeof id, "%s", answer(st, "{\"input\": \"one\", \"instructions\": \"I\"}",
                                             "two"));
        snprintf(body, sizeof body, "{\"input\": \"three\", \"previous_response_id\": \"%s\"}", id);
        CHECK_EQ(parse(body, st, &q, &rq, &e), 0);
        CHECK_EQ(q.n_msgs, 3); /* instructions not carried over */
        CHECK_STR(q.msgs[1].text, "two");
        CHECK_EQ(q.msgs[1].role, OAI_ROLE_ASSISTANT);
        oai_request_destroy(&q);
        resp_req_free(rq);
        CHECK(answer(st, "{\"input\": \"x\", \"store\": false}", "y")[0]);
        CHECK_EQ(resp_store_count(st), 1);
        resp_store_free(st);
    }

    TEST("the store: entries bound, use order, delete") {
        struct resp_store *st = resp_store_new(2, 1 << 20);
        char a[64], b[64], c[64];
        snprintf(a, sizeof a, "%s", answer(st, "{\"input\": \"a\"}", "A"));
        snprintf(b, sizeof b, "%s", answer(st, "{\"input\": \"b\"}", "B"));
        char *got = resp_store_get(st, a); /* a is now the most recent */
        CHECK(got && strstr(got, a));
        free(got);
        snprintf(c, sizeof c, "%s", answer(st, "{\"input\": \"c\"}", "C"));
        CHECK_EQ(resp_store_count(st), 2);
        got = resp_store_get(st, b);
        CHECK(!got);
        free(got);
        char *del = resp_deleted_json(st, a);
        CHECK(del && strstr(del, "\"deleted\":true"));
        free(del);
        CHECK(!resp_deleted_json(st, a));
        CHECK_EQ(resp_store_count(st), 1);
        resp_store_free(st);
        st = resp_store_new(0, 1 << 20); /* size 0: nothing kept */
        snprintf(a, sizeof a, "%s", answer(st, "{\"input\": \"a\"}", "A"));
        CHECK_EQ(resp_store_count(st), 0);
        resp_store_free(st);
    }

    TEST("the store: bytes bound") {
        struct resp_store *probe = resp_store_new(8, 1 << 20);
        char a[64];
        snprintf(a, sizeof a, "%s", answer(probe, "{\"input\": \"a\"}", "A"));
        char *one = resp_store_get(probe, a);
        size_t n = one ? strlen(one) : 0;
        free(one);
        resp_store_free(probe);
        /* room for two entries of about this size, not three */
        struct resp_store *st = resp_store_new(100, (int64_t)(n * 2 + 400));
        for (int i = 0; i < 5; i++) answer(st, "{\"input\": \"a\"}", "A");
        CHECK_EQ(resp_store_count(st), 2);
        resp_store_free(st);
        st = resp_store_new(100, 64); /* an entry over the whole budget is not kept */
        answer(st, "{\"input\": \"a\"}", "A");
        CHECK_EQ(resp_store_count(st), 0);
        resp_store_free(st);
    }

    TEST("stream: whitespace before a call makes no message; reasoning first") {
        CHECK_EQ(parse("{\"input\": \"x\", \"stream\": true}", NULL, &q, &rq, &e), 0);
        struct textout_call call = {.id = "call_1", .name = "f", .arguments = "{}"};
        struct strbuf out = {0};
        resp_sse_begin(&out, rq);
        resp_sse_delta(&out, rq, "th", 2, NULL, 0, &call, 0);
        resp_sse_delta(&out, rq, NULL, 0, "\n\n", 2, &call, 0);
        resp_sse_delta(&out, rq, NULL, 0, NULL, 0, &call, 1);
        struct resp_result res = {.calls = &call, .n_calls = 1};
        resp_sse_end(&out, rq, NULL, &res);
        char types[2048];
        event_types(out.s, types, sizeof types);
        CHECK_STR(types, "created in_progress output_item.added content_part.added "
                         "reasoning_text.delta reasoning_text.done content_part.done "
                         "output_item.done output_item.added function_call_arguments.delta "
                         "function_call_arguments.done output_item.done completed");
        sb_free(&out);
        oai_request_destroy(&q);
        resp_req_free(rq);
    }

    TEST("stream: an empty answer is still a message; max_output_tokens: incomplete") {
        CHECK_EQ(parse("{\"input\": \"x\", \"stream\": true}", NULL, &q, &rq, &e), 0);
        struct strbuf out = {0};
        resp_sse_begin(&out, rq);
        struct resp_result res = {.length = true};
        resp_sse_end(&out, rq, NULL, &res);
        char types[2048];
        event_types(out.s, types, sizeof types);
        CHECK_STR(types, "created in_progress output_item.added content_part.added "
                         "output_text.done content_part.done output_item.done incomplete");
        CHECK(strstr(out.s, "\"reason\":\"max_output_tokens\""));
        sb_free(&out);
        oai_request_destroy(&q);
        resp_req_free(rq);
    }
    return test_report();
}
