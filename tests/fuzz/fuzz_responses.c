/*
 * fuzz_responses: the Responses API request translation (server/responses.h) on arbitrary
 * bytes. A body that parses is answered twice, as a response object and as its stream
 * events, from a result cut out of the body's own bytes (reasoning, content, one tool call),
 * stored in a small store, and then continued by a second request through
 * previous_response_id, so the stored conversation is parsed back too. An error is rendered
 * as the error JSON.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/responses.h"

static char *cut(const char *s, size_t n)
{
    return xstrndup(s, strnlen(s, n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct oai_limits lim = {.model_name = "tiny", .max_n = 8, .max_images = 8,
                                          .min_pixels = 3136, .max_pixels = 1 << 22,
                                          .vocab_size = 151936, .max_model_len = 4096};
    struct resp_store *store = resp_store_new(4, 1 << 16);
    const char *body = (const char *)data;
    struct oai_request q;
    struct resp_req *rq = NULL;
    struct vlm_err e = {0};
    if (resp_parse(body, size, &lim, store, &q, &rq, &e)) {
        free(oai_error_json(&e));
        resp_store_free(store);
        return 0;
    }
    size_t third = size / 3;
    char *reasoning = cut(body, third), *content = cut(body + third, third);
    struct textout_call call = {.id = "call_x", .name = cut(body, 8),
                                .arguments = xstrdup("{\"a\": 1}")};
    struct resp_result res = {.reasoning = reasoning, .content = content, .calls = &call,
                              .n_calls = size & 1, .length = size & 2,
                              .input_tokens = 3, .output_tokens = 4};
    char *obj = resp_finish(rq, store, &res);
    free(obj);
    /* the same as a stream, in pieces */
    struct resp_req *rq2 = NULL;
    struct oai_request q2;
    if (!resp_parse(body, size, &lim, store, &q2, &rq2, &e)) {
        struct strbuf out = {0};
        resp_sse_begin(&out, rq2);
        for (size_t i = 0; i < third; i += 5)
            resp_sse_delta(&out, rq2, reasoning + VLM_MIN(i, strlen(reasoning)),
                           i < strlen(reasoning) ? VLM_MIN(5, strlen(reasoning) - i) : 0,
                           content + VLM_MIN(i, strlen(content)),
                           i < strlen(content) ? VLM_MIN(5, strlen(content) - i) : 0,
                           &call, i > third / 2 ? res.n_calls : 0);
        resp_sse_end(&out, rq2, store, &res);
        sb_free(&out);
        oai_request_destroy(&q2);
        resp_req_free(rq2);
    }
    /* continued from the stored conversation */
    char next[160];
    snprintf(next, sizeof next, "{\"input\": \"more\", \"previous_response_id\": \"%s\"}",
             resp_id(rq));
    struct resp_req *rq3 = NULL;
    struct oai_request q3;
    if (!resp_parse(next, strlen(next), &lim, store, &q3, &rq3, &e)) {
        oai_request_destroy(&q3);
        resp_req_free(rq3);
    }
    free(reasoning);
    free(content);
    free(call.name);
    free(call.arguments);
    oai_request_destroy(&q);
    resp_req_free(rq);
    resp_store_free(store);
    return 0;
}
