/*
 * test_openai: the OpenAI request parser (a malformed-input table: status + param for each
 * case, an allocation-failure sweep), the output text pipeline (stop strings across token
 * boundaries, the <think> split), the error/chunk JSON shapes, and the fetch allow list.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "server/fetch.h"
#include "server/openai.h"
#include "test.h"

static const struct oai_limits LIM = {.model_name = "tiny", .max_n = 8, .max_images = 4,
                                      .min_pixels = 3136, .max_pixels = 1 << 20,
                                      .vocab_size = 1000};

struct bad_case {
    enum oai_kind kind;
    const char *body;
    int status;
    const char *param; /* NULL: do not check */
};

#define M "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static const struct bad_case BAD[] = {
    {OAI_KIND_CHAT, "", 400, ""},
    {OAI_KIND_CHAT, "{", 400, ""},
    {OAI_KIND_CHAT, "[]", 400, ""},
    {OAI_KIND_CHAT, "{}", 400, "messages"},
    {OAI_KIND_CHAT, "{\"messages\":{}}", 400, "messages"},
    {OAI_KIND_CHAT, "{\"messages\":[]}", 400, "messages"},
    {OAI_KIND_CHAT, "{\"messages\":[5]}", 400, "messages[0]"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"\",\"content\":\"x\"}]}", 400, "messages[0].role"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400,
     "messages[0].content[0].text"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
     400, "messages[0].content[0].image_url"},
    {OAI_KIND_CHAT,
     "{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"image_url\",\"image_url\":"
     "{\"url\":\"data:x\"}}]}]}",
     400, "messages[0].content[0].image_url"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}",
     400, "messages[0].content[0].type"},
    {OAI_KIND_CHAT,
     "{\"messages\":[{\"role\":\"assistant\",\"content\":[{\"type\":\"video_url\",\"video_url\":"
     "{\"url\":\"http://x/v.mp4\"}}]}]}",
     400, "messages[0].content[0].video_url"},
    {OAI_KIND_CHAT, "{\"model\":\"gpt\"," M "}", 404, "model"},
    {OAI_KIND_CHAT, "{\"model\":5," M "}", 400, "model"},
    {OAI_KIND_CHAT, "{" M ",\"max_tokens\":0}", 400, "max_tokens"},
    {OAI_KIND_CHAT, "{" M ",\"max_tokens\":-3}", 400, "max_tokens"},
    {OAI_KIND_CHAT, "{" M ",\"max_tokens\":2.5}", 400, "max_tokens"},
    {OAI_KIND_CHAT, "{" M ",\"max_tokens\":\"9\"}", 400, "max_tokens"},
    {OAI_KIND_CHAT, "{" M ",\"max_tokens\":1e30}", 400, "max_tokens"},
    {OAI_KIND_CHAT, "{" M ",\"max_completion_tokens\":0}", 400, "max_completion_tokens"},
    {OAI_KIND_CHAT, "{" M ",\"temperature\":-0.1}", 400, "temperature"},
    {OAI_KIND_CHAT, "{" M ",\"temperature\":true}", 400, "temperature"},
    {OAI_KIND_CHAT, "{" M ",\"top_p\":1.5}", 400, "top_p"},
    {OAI_KIND_CHAT, "{" M ",\"top_k\":-2}", 400, "top_k"},
    {OAI_KIND_CHAT, "{" M ",\"min_p\":2}", 400, "min_p"},
    {OAI_KIND_CHAT, "{" M ",\"presence_penalty\":3}", 400, "presence_penalty"},
    {OAI_KIND_CHAT, "{" M ",\"frequency_penalty\":\"a\"}", 400, "frequency_penalty"},
    {OAI_KIND_CHAT, "{" M ",\"repetition_penalty\":0}", 400, "repetition_penalty"},
    {OAI_KIND_CHAT, "{" M ",\"n\":9}", 400, "n"},
    {OAI_KIND_CHAT, "{" M ",\"n\":0}", 400, "n"},
    {OAI_KIND_CHAT, "{" M ",\"seed\":\"x\"}", 400, "seed"},
    {OAI_KIND_CHAT, "{" M ",\"stop\":[\"\"]}", 400, "stop"},
    {OAI_KIND_CHAT, "{" M ",\"stop\":[1]}", 400, "stop"},
    {OAI_KIND_CHAT, "{" M ",\"stop\":{}}", 400, "stop"},
    {OAI_KIND_CHAT,
     "{" M ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\","
     "\"m\",\"n\",\"o\",\"p\",\"q\"]}",
     400, "stop"},
    {OAI_KIND_CHAT, "{" M ",\"stop_token_ids\":[5000]}", 400, "stop_token_ids"},
    {OAI_KIND_CHAT, "{" M ",\"logprobs\":1}", 400, "logprobs"},
    {OAI_KIND_CHAT, "{" M ",\"top_logprobs\":3}", 400, "top_logprobs"},
    {OAI_KIND_CHAT, "{" M ",\"logprobs\":true,\"top_logprobs\":21}", 400, "top_logprobs"},
    {OAI_KIND_CHAT, "{" M ",\"stream\":1}", 400, "stream"},
    {OAI_KIND_CHAT, "{" M ",\"stream_options\":[]}", 400, "stream_options"},
    {OAI_KIND_CHAT, "{" M ",\"stream_options\":{\"include_usage\":\"y\"}}", 400,
     "stream_options.include_usage"},
    {OAI_KIND_CHAT, "{" M ",\"chat_template_kwargs\":{\"enable_thinking\":\"no\"}}", 400,
     "chat_template_kwargs.enable_thinking"},
    {OAI_KIND_CHAT, "{" M ",\"mm_processor_kwargs\":{\"max_pixels\":10}}", 400,
     "mm_processor_kwargs.max_pixels"},
    {OAI_KIND_CHAT, "{" M ",\"mm_processor_kwargs\":{\"min_pixels\":50000,\"max_pixels\":40000}}",
     400, "mm_processor_kwargs.min_pixels"},
    {OAI_KIND_CHAT,
     "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":\"a\"},"
     "{\"type\":\"image_url\",\"image_url\":\"b\"},{\"type\":\"image_url\",\"image_url\":\"c\"},"
     "{\"type\":\"image_url\",\"image_url\":\"d\"},{\"type\":\"image_url\",\"image_url\":\"e\"}]}]}",
     400, "messages[0].content[4].image_url"},
    /* tools */
    {OAI_KIND_CHAT, "{" M ",\"tools\":{}}", 400, "tools"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[5]}", 400, "tools[0]"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"code\",\"function\":{\"name\":\"f\"}}]}", 400,
     "tools[0].type"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools[0].function"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{}}]}", 400,
     "tools[0].function.name"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"\"}}]}", 400,
     "tools[0].function.name"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
     "{\"type\":\"function\",\"function\":{\"name\":7}}]}", 400, "tools[1].function.name"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
     "\"description\":1}}]}", 400, "tools[0].function.description"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
     "\"parameters\":[]}}]}", 400, "tools[0].function.parameters"},
    /* forced tool calls (server/structured.h): a name not in tools, two constraints */
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
     "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", 400,
     "tool_choice.function.name"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
     "\"tool_choice\":\"required\",\"guided_regex\":\"a\"}", 400, "tool_choice"},
    {OAI_KIND_CHAT, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
     "\"tool_choice\":\"sometimes\"}", 400, "tool_choice"},
    {OAI_KIND_CHAT, "{" M ",\"tool_choice\":5}", 400, "tool_choice"},
    {OAI_KIND_CHAT, "{" M ",\"tool_choice\":\"auto\"}", 400, "tool_choice"},
    {OAI_KIND_CHAT, "{" M ",\"parallel_tool_calls\":\"yes\"}", 400, "parallel_tool_calls"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":{}}]}", 400,
     "messages[0].tool_calls"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[1]}]}", 400,
     "messages[0].tool_calls[0]"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"x\","
     "\"function\":{\"name\":\"f\"}}]}]}", 400, "messages[0].tool_calls[0].type"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":1,"
     "\"function\":{\"name\":\"f\"}}]}]}", 400, "messages[0].tool_calls[0].id"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\"}]}]}", 400,
     "messages[0].tool_calls[0].function"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":"
     "{\"arguments\":\"{}\"}}]}]}", 400, "messages[0].tool_calls[0].function.name"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":"
     "{\"name\":\"f\",\"arguments\":\"{oops\"}}]}]}", 400,
     "messages[0].tool_calls[0].function.arguments"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":"
     "{\"name\":\"f\",\"arguments\":5}}]}]}", 400, "messages[0].tool_calls[0].function.arguments"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":3,\"content\":\"x\"}]}", 400,
     "messages[0].tool_call_id"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"c\"}]}", 400,
     "messages[0].content"},
    {OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":[{\"type\":\"image_url\","
     "\"image_url\":\"a\"}]}]}", 400, "messages[0].content[0].image_url"},
    {OAI_KIND_TOKENIZE, "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{}}]}", 400,
     "tools[0].function.name"},
    {OAI_KIND_COMPLETION, "{}", 400, "prompt"},
    {OAI_KIND_COMPLETION, "{\"prompt\":5}", 400, "prompt"},
    {OAI_KIND_COMPLETION, "{\"prompt\":[1,-1]}", 400, "prompt"},
    {OAI_KIND_COMPLETION, "{\"prompt\":[1,1000]}", 400, "prompt"},
    {OAI_KIND_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":true}", 400, "logprobs"},
    {OAI_KIND_COMPLETION, "{\"prompt\":\"x\",\"echo\":\"yes\"}", 400, "echo"},
    {OAI_KIND_COMPLETION, "{\"prompt\":[\"a\",[1]]}", 400, "prompt"},
    {OAI_KIND_COMPLETION, "{\"prompt\":[[1],[1000]]}", 400, "prompt[1]"},
    {OAI_KIND_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"y\"}", 400, "suffix"},
    {OAI_KIND_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0}", 400, "max_tokens"},
    {OAI_KIND_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"1000\":1}}", 400,
     "logit_bias.1000"},
    {OAI_KIND_CHAT, "{" M ",\"logit_bias\":{\"1\":null}}", 400, "logit_bias.1"},
    {OAI_KIND_CHAT, "{" M ",\"prompt_logprobs\":21}", 400, "prompt_logprobs"},
    {OAI_KIND_CHAT, "{" M ",\"stream_options\":{\"include_usage\":true}}", 400,
     "stream_options"},
    {OAI_KIND_CHAT, "{" M ",\"seed\":9223372036854775808}", 400, "seed"},
    {OAI_KIND_CHAT, "{" M ",\"truncate_prompt_tokens\":0}", 400, "truncate_prompt_tokens"},
    {OAI_KIND_CHAT, "{" M ",\"include_reasoning\":1}", 400, "include_reasoning"},
    {OAI_KIND_DETOKENIZE, "{}", 400, "tokens"},
    {OAI_KIND_DETOKENIZE, "{\"tokens\":[\"a\"]}", 400, "tokens"},
};

static void test_bad_table(void)
{
    for (size_t i = 0; i < ARRAY_LEN(BAD); i++) {
        TEST(BAD[i].body) {
            struct oai_request q;
            struct vlm_err e = {0};
            int rc = oai_parse(BAD[i].kind, BAD[i].body, strlen(BAD[i].body), &LIM, &q, &e);
            CHECK(rc < 0);
            CHECK_EQ(e.http_status, BAD[i].status);
            CHECK(e.msg[0]);
            if (BAD[i].param) CHECK_STR(e.param, BAD[i].param);
            oai_request_destroy(&q);
        }
    }
}

static void test_good(void)
{
    TEST("defaults") {
        const char *b = "{" M "}";
        struct oai_request q;
        struct vlm_err e = {0};
        CHECK_EQ(oai_parse(OAI_KIND_CHAT, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_EQ(q.n, 1);
        CHECK_EQ(q.max_tokens, 0);
        CHECK_NEAR(q.sp.temperature, 1.0, 0);
        CHECK_NEAR(q.sp.top_p, 1.0, 0);
        CHECK_EQ(q.sp.logprobs, -1);
        CHECK(!q.stream && !q.has_seed && q.skip_special_tokens);
        CHECK_EQ(q.enable_thinking, -1);
        CHECK_EQ(q.n_msgs, 1);
        CHECK_STR(q.msgs[0].text, "hi");
        oai_request_destroy(&q);
    }
    TEST("tool_choice required and named: a grammar, the output parsed as tool calls") {
        const char *bodies[] = {
            "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
            "\"tool_choice\":\"required\"}",
            "{" M ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
            "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}"};
        for (int i = 0; i < 2; i++) {
            struct oai_request q;
            struct vlm_err e = {0};
            CHECK_EQ(oai_parse(OAI_KIND_CHAT, bodies[i], strlen(bodies[i]), &LIM, &q, &e), 0);
            CHECK(q.grammar && q.forced_tools);
            CHECK_EQ(q.tool_choice, i ? OAI_TOOL_CHOICE_NAMED : OAI_TOOL_CHOICE_REQUIRED);
            oai_request_destroy(&q);
        }
    }
    TEST("every field, unknown fields and nulls") {
        const char *b =
            "{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":"
            "\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\",\"detail\":"
            "\"low\"}},{\"type\":\"text\",\"text\":\"b\"}],\"name\":\"bob\"},{\"role\":"
            "\"assistant\",\"content\":null},{\"role\":\"developer\",\"content\":\"d\"}],"
            "\"max_tokens\":5,\"max_completion_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,"
            "\"top_k\":-1,\"min_p\":0.1,\"n\":3,\"stop\":\"END\",\"seed\":-42,"
            "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"repetition_penalty\":1.1,"
            "\"logprobs\":true,\"top_logprobs\":4,\"stream\":true,\"stream_options\":"
            "{\"include_usage\":true},\"chat_template_kwargs\":{\"enable_thinking\":false},"
            "\"mm_processor_kwargs\":{\"min_pixels\":4000,\"max_pixels\":50000},"
            "\"tools\":[],\"user\":\"u\",\"logit_bias\":null,\"response_format\":{\"type\":\"text\"},"
            "\"stop_token_ids\":[7,8],\"ignore_eos\":true,\"temperature_x\":\"ignored\"}";
        struct oai_request q;
        struct vlm_err e = {0};
        int rc = oai_parse(OAI_KIND_CHAT, b, strlen(b), &LIM, &q, &e);
        CHECK_EQ(rc, 0);
        if (!rc) {
            CHECK_STR(q.model, "tiny");
            CHECK_EQ(q.n_msgs, 4);
            CHECK_EQ(q.msgs[0].role, OAI_ROLE_SYSTEM);
            CHECK_EQ(q.msgs[3].role, OAI_ROLE_SYSTEM);
            CHECK_STR(q.msgs[1].text, "a\nb");
            CHECK_EQ(q.msgs[1].n_images, 1);
            CHECK_STR(q.msgs[2].text, "");
            CHECK_EQ(q.n_media, 1);
            CHECK_STR(q.media[0].url, "data:image/png;base64,AAAA");
            CHECK_EQ(q.max_tokens, 7);
            CHECK_NEAR(q.sp.temperature, 0.5, 1e-7);
            CHECK_EQ(q.sp.top_k, 0);
            CHECK_EQ(q.n, 3);
            CHECK_EQ(q.n_stop, 1);
            CHECK_STR(q.stop[0], "END");
            CHECK(q.has_seed);
            CHECK_EQ((int64_t)q.sp.seed, -42);
            CHECK_EQ(q.sp.logprobs, 4);
            CHECK(q.stream && q.include_usage && q.ignore_eos);
            CHECK_EQ(q.enable_thinking, 0);
            CHECK_EQ(q.min_pixels, 4000);
            CHECK_EQ(q.max_pixels, 50000);
            CHECK_EQ(q.n_stop_ids, 2);
        }
        oai_request_destroy(&q);
    }
    TEST("completions batches, echo and the extras") {
        struct oai_request q;
        struct vlm_err e = {0};
        const char *b = "{\"prompt\":[\"a\",\"bc\"],\"echo\":true,\"max_tokens\":0,"
                        "\"logprobs\":2,\"logit_bias\":{\"7\":250,\"3\":-1.5},"
                        "\"truncate_prompt_tokens\":-1,\"return_token_ids\":true}";
        CHECK_EQ(oai_parse(OAI_KIND_COMPLETION, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_EQ(q.n_prompts, 2);
        CHECK_STR(q.prompts[1].text, "bc");
        CHECK(q.echo_only);
        CHECK_EQ(q.max_tokens, 1);
        CHECK_EQ(q.prompt_logprobs, 2); /* echo + logprobs scores the prompt (vLLM) */
        CHECK_EQ(q.sp.n_bias, 2);
        CHECK_EQ(q.sp.bias_ids[0], 7);
        CHECK_NEAR(q.sp.bias[0], 100.0, 1e-9); /* clamped */
        CHECK_NEAR(q.sp.bias[1], -1.5, 1e-9);
        CHECK(q.return_token_ids);
        CHECK(q.include_reasoning);
        oai_request_destroy(&q);
    }
    TEST("completions and tokenize") {
        struct oai_request q;
        struct vlm_err e = {0};
        const char *b = "{\"prompt\":[1,2,3],\"logprobs\":2}";
        CHECK_EQ(oai_parse(OAI_KIND_COMPLETION, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_EQ(q.n_prompts, 1);
        CHECK_EQ(q.prompts[0].n_ids, 3);
        CHECK(q.logprobs);
        CHECK_EQ(q.sp.logprobs, 2);
        oai_request_destroy(&q);
        b = "{\"prompt\":[\"one\"]}";
        CHECK_EQ(oai_parse(OAI_KIND_TOKENIZE, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_STR(q.prompt, "one");
        oai_request_destroy(&q);
        b = "{" M ",\"add_generation_prompt\":false}";
        CHECK_EQ(oai_parse(OAI_KIND_TOKENIZE, b, strlen(b), &LIM, &q, &e), 0);
        CHECK_EQ(q.n_msgs, 1);
        CHECK(!q.add_generation_prompt);
        oai_request_destroy(&q);
    }
}

/* Parses body with the n-th allocation failing, for n = 0, 1, ... until it parses (at most
 * max_n): every failure must be a clean 503; the parse that succeeds has n_tools tools. */
static void alloc_sweep(const char *body, long max_n, int32_t n_tools)
{
    int ok = 0;
    for (long n = 0; n < max_n && !ok; n++) {
        struct oai_request q;
        struct vlm_err e = {0};
        vlm_fail_alloc_after(n);
        int rc = oai_parse(OAI_KIND_CHAT, body, strlen(body), &LIM, &q, &e);
        vlm_fail_alloc_after(-1);
        if (rc == 0) {
            ok = 1;
            CHECK_EQ(q.n_tools, n_tools);
        } else {
            CHECK(rc == VLM_ENOMEM && e.http_status == 503);
        }
        oai_request_destroy(&q);
    }
    CHECK(ok);
}

static void test_alloc_sweep(void)
{
    TEST("allocation failure sweep") {
        alloc_sweep(
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
            "{\"type\":\"image_url\",\"image_url\":\"data:x\"},{\"type\":\"image_url\","
            "\"image_url\":\"data:y\"}]},{\"role\":\"assistant\",\"content\":\"b\"},"
            "{\"role\":\"user\",\"content\":\"c\"}],\"stop\":[\"x\",\"yy\"],\"model\":\"tiny\"}",
            200, 0);
    }
    TEST("allocation failure sweep: tools and tool calls") {
        alloc_sweep(
            "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"assistant\","
            "\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\\\":[1,2]}\"}},"
            "{\"function\":{\"name\":\"g\"}}]},{\"role\":\"tool\",\"content\":\"r\"}],"
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":"
            "{\"type\":\"object\"}}},{\"type\":\"function\",\"function\":{\"name\":\"g\"}}]}",
            400, 2);
    }
}

/* ==== text pipeline ==== */

struct out {
    struct strbuf c, r;
    int stops;
};

static void push_all(struct textout_text *t, const char *const *pieces, size_t n, struct out *o)
{
    for (size_t i = 0; i < n; i++)
        o->stops += textout_text_push_bytes(t, pieces[i], strlen(pieces[i]), &o->c, &o->r);
    textout_text_finish(t, &o->c, &o->r);
}

static const char *S(const struct strbuf *b)
{
    return b->s ? b->s : "";
}

static void test_text(void)
{
    TEST("stop string across token boundaries") {
        const char *stop[] = {"lo Wo"};
        const char *p[] = {"Hel", "lo W", "orld", "!"};
        struct textout_text t;
        struct out o = {0};
        textout_text_init(&t, NULL, true, stop, 1, false);
        push_all(&t, p, ARRAY_LEN(p), &o);
        CHECK_STR(S(&o.c), "Hel");
        CHECK_EQ(o.stops, 1);
        CHECK(t.stopped);
        textout_text_destroy(&t);
        sb_free(&o.c);
        sb_free(&o.r);
    }
    TEST("held-back prefix released when it does not complete") {
        const char *stop[] = {"STOP", "xyz"};
        const char *p[] = {"aS", "T", "Ox", "y!"};
        struct textout_text t;
        struct out o = {0};
        textout_text_init(&t, NULL, true, stop, 2, false);
        o.stops += textout_text_push_bytes(&t, p[0], 2, &o.c, &o.r);
        CHECK_STR(S(&o.c), "a"); /* "S" held back */
        for (int i = 1; i < 4; i++) o.stops += textout_text_push_bytes(&t, p[i], strlen(p[i]), &o.c, &o.r);
        textout_text_finish(&t, &o.c, &o.r);
        CHECK_STR(S(&o.c), "aSTOxy!");
        CHECK_EQ(o.stops, 0);
        textout_text_destroy(&t);
        sb_free(&o.c);
        sb_free(&o.r);
    }
    TEST("earliest of several stop strings wins") {
        const char *stop[] = {"cd", "b"};
        const char *p[] = {"abcd"};
        struct textout_text t;
        struct out o = {0};
        textout_text_init(&t, NULL, true, stop, 2, false);
        push_all(&t, p, 1, &o);
        CHECK_STR(S(&o.c), "a");
        textout_text_destroy(&t);
        sb_free(&o.c);
        sb_free(&o.r);
    }
    TEST("think split") {
        const char *p[] = {"<think>", "abc", "</th", "ink>", "\n\nanswer"};
        struct textout_text t;
        struct out o = {0};
        textout_text_init(&t, NULL, true, NULL, 0, true);
        push_all(&t, p, ARRAY_LEN(p), &o);
        CHECK_STR(S(&o.r), "abc");
        CHECK_STR(S(&o.c), "\n\nanswer");
        textout_text_destroy(&t);
        sb_free(&o.c);
        sb_free(&o.r);
    }
    TEST("think tag split across tokens, and unclosed think") {
        const char *p[] = {"<thi", "nk>x</think>y"};
        struct textout_text t;
        struct out o = {0};
        textout_text_init(&t, NULL, true, NULL, 0, true);
        push_all(&t, p, ARRAY_LEN(p), &o);
        CHECK_STR(S(&o.r), "x");
        CHECK_STR(S(&o.c), "y");
        textout_text_destroy(&t);
        sb_free(&o.c);
        sb_free(&o.r);
        const char *p2[] = {"<think>", "still thinking"};
        struct out o2 = {0};
        textout_text_init(&t, NULL, true, NULL, 0, true);
        push_all(&t, p2, ARRAY_LEN(p2), &o2);
        CHECK_STR(S(&o2.r), "still thinking");
        CHECK_STR(S(&o2.c), "");
        textout_text_destroy(&t);
        sb_free(&o2.c);
        sb_free(&o2.r);
    }
    TEST("thinking on, output without <think>: all content") {
        const char *p[] = {"<b>", "old</think>"};
        struct textout_text t;
        struct out o = {0};
        textout_text_init(&t, NULL, true, NULL, 0, true);
        push_all(&t, p, ARRAY_LEN(p), &o);
        CHECK_STR(S(&o.c), "<b>old</think>");
        CHECK_STR(S(&o.r), "");
        textout_text_destroy(&t);
        sb_free(&o.c);
        sb_free(&o.r);
    }
    TEST("thinking off keeps tags in content; stop inside reasoning") {
        const char *p[] = {"<think>x</think>y"};
        struct textout_text t;
        struct out o = {0};
        textout_text_init(&t, NULL, true, NULL, 0, false);
        push_all(&t, p, 1, &o);
        CHECK_STR(S(&o.c), "<think>x</think>y");
        textout_text_destroy(&t);
        sb_free(&o.c);
        sb_free(&o.r);
        const char *stop[] = {"b"};
        const char *p2[] = {"<think>a", "bc</think>d"};
        struct out o2 = {0};
        textout_text_init(&t, NULL, true, stop, 1, true);
        push_all(&t, p2, ARRAY_LEN(p2), &o2);
        CHECK_STR(S(&o2.r), "a");
        CHECK_STR(S(&o2.c), "");
        CHECK_EQ(o2.stops, 1);
        textout_text_destroy(&t);
        sb_free(&o2.c);
        sb_free(&o2.r);
    }
}

static void test_json(void)
{
    TEST("error object shape") {
        struct vlm_err e;
        vlm_err_param(&e, VLM_EINVAL, 400, "temperature", "bad \"value\" \xff");
        char *s = oai_error_json(&e);
        cJSON *j = cJSON_Parse(s);
        CHECK(j);
        cJSON *o = cJSON_GetObjectItem(j, "error");
        CHECK(cJSON_IsString(cJSON_GetObjectItem(o, "message")));
        CHECK_STR(cJSON_GetObjectItem(o, "type")->valuestring, "invalid_request_error");
        CHECK_STR(cJSON_GetObjectItem(o, "param")->valuestring, "temperature");
        CHECK(cJSON_IsString(cJSON_GetObjectItem(o, "code")));
        CHECK(strstr(cJSON_GetObjectItem(o, "message")->valuestring, "\xef\xbf\xbd"));
        cJSON_Delete(j);
        free(s);
        vlm_err_set(&e, VLM_EINVAL, 503, "draining");
        s = oai_error_json(&e);
        j = cJSON_Parse(s);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "param")));
        cJSON_Delete(j);
        free(s);
    }
    TEST("stream chunk and usage chunk") {
        struct oai_meta m;
        oai_meta_init(&m, OAI_KIND_CHAT, "tiny", 7);
        struct strbuf b = {0};
        oai_sse_chunk(&b, &m, 1, "assistant", "hi", 2, NULL, 0, "length", NULL);
        CHECK(!strncmp(b.s, "data: {", 7));
        CHECK(b.n > 2 && !strcmp(b.s + b.n - 2, "\n\n"));
        cJSON *j = cJSON_Parse(b.s + 6);
        CHECK_STR(cJSON_GetObjectItem(j, "object")->valuestring, "chat.completion.chunk");
        cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0);
        CHECK_EQ(cJSON_GetObjectItem(c, "index")->valueint, 1);
        CHECK_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "content")->valuestring, "hi");
        CHECK_STR(cJSON_GetObjectItem(c, "finish_reason")->valuestring, "length");
        cJSON_Delete(j);
        sb_free(&b);
        struct oai_usage u = {.prompt_tokens = 3, .completion_tokens = 4, .cached_tokens = 0};
        oai_sse_usage(&b, &m, &u);
        j = cJSON_Parse(b.s + 6);
        CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "choices")), 0);
        CHECK_EQ(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valueint, 7);
        cJSON_Delete(j);
        sb_free(&b);
    }
}

static void test_allow(void)
{
    TEST("fetch allow list") {
        const char *allow[] = {"127.0.0.1", "10.0.0.0/8", "fd00::/8"};
        CHECK(fetch_addr_allowed("127.0.0.1", allow, 3));
        CHECK(!fetch_addr_allowed("127.0.0.2", allow, 3));
        CHECK(fetch_addr_allowed("10.200.3.4", allow, 3));
        CHECK(!fetch_addr_allowed("11.0.0.1", allow, 3));
        CHECK(fetch_addr_allowed("fd12::1", allow, 3));
        CHECK(!fetch_addr_allowed("::1", allow, 3));
    }
    TEST("fetch refuses loopback, https, bad URLs") {
        struct fetch_limits lim = {.timeout_s = 1, .max_bytes = 1024, .max_redirects = 1};
        uint8_t *out = NULL;
        size_t n = 0;
        struct vlm_err e = {0};
        CHECK_EQ(fetch_url("http://127.0.0.1:1/x.png", &lim, &out, &n, &e), VLM_EINVAL);
        CHECK(strstr(e.msg, "loopback"));
        CHECK_EQ(fetch_url("https://127.0.0.1:1/x.png", &lim, &out, &n, &e), VLM_EINVAL);
        CHECK(strstr(e.msg, "loopback"));
        const char *allow[] = {"127.0.0.1"};
        struct fetch_limits lim2 = lim;
        lim2.allow = allow;
        lim2.n_allow = 1;
        /* allowed, but nothing listens: a clean 400 from the libavformat path */
        CHECK(fetch_url("https://127.0.0.1:1/x.png", &lim2, &out, &n, &e) < 0);
        CHECK_EQ(e.http_status, 400);
        CHECK(fetch_url("http://127.0.0.1:1/x.png", &lim2, &out, &n, &e) < 0);
        CHECK_EQ(e.http_status, 400);
        CHECK(fetch_url("ftp://x/y", &lim, &out, &n, &e) < 0);
        CHECK(fetch_url("http://user@host/y", &lim, &out, &n, &e) < 0);
        CHECK(fetch_url("http:///y", &lim, &out, &n, &e) < 0);
        CHECK(fetch_url("http://h:99999999/y", &lim, &out, &n, &e) < 0);
        CHECK(!out);
    }
}

int main(void)
{
    test_bad_table();
    test_good();
    test_alloc_sweep();
    test_text();
    test_json();
    test_allow();
    return test_report();
}
