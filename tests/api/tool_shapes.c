/*
 * tool_shapes: a test program (not part of the server) for tests/api/test_tools.py. The tiny
 * random model never writes a tool call, so the Python test gives a canned model output on
 * stdin and reads, with the openai SDK, what the server's output path makes of it: line 1 is
 * the non-streaming response body, then the SSE events of the same output cut into 3-byte
 * pieces (content deltas, tool_calls deltas, finish_reason "tool_calls"), as http.c sends
 * them. Thinking is on: a leading <think> block goes to reasoning_content.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai.h"

int main(void)
{
    struct strbuf in = {0};
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, stdin)) > 0) sb_append(&in, buf, got);
    if (!in.s) sb_append(&in, "", 0);
    struct oai_meta m;
    oai_meta_init(&m, OAI_KIND_CHAT, "tiny", 1);
    struct oai_usage u = {.prompt_tokens = 1, .completion_tokens = 1};

    /* non-streaming: everything, then the response */
    struct oai_text t;
    struct oai_tools p;
    struct strbuf raw = {0}, content = {0}, reasoning = {0};
    oai_text_init(&t, NULL, true, NULL, 0, true);
    oai_tools_init(&p, 1);
    oai_text_push_bytes(&t, in.s, in.n, &raw, &reasoning);
    oai_text_finish(&t, &raw, &reasoning);
    oai_tools_push(&p, raw.s, raw.n, &content);
    oai_tools_finish(&p, &content);
    bool blank = true;
    for (size_t k = 0; k < content.n && blank; k++)
        blank = content.s[k] == ' ' || content.s[k] == '\t' || content.s[k] == '\r' ||
                content.s[k] == '\n';
    struct oai_choice_out co = {.content = p.n_calls && blank ? NULL : (content.s ? content.s : ""),
                                .reasoning = reasoning.s,
                                .finish = p.n_calls ? "tool_calls" : "stop",
                                .tool_calls = p.calls, .n_tool_calls = p.n_calls};
    char *js = oai_response_json(&m, &co, 1, &u);
    printf("%s\n", js);
    free(js);
    oai_text_destroy(&t);
    oai_tools_destroy(&p);

    /* streaming: 3-byte pieces, one pump per piece */
    struct strbuf out = {0};
    int32_t sent = 0;
    oai_text_init(&t, NULL, true, NULL, 0, true);
    oai_tools_init(&p, 2);
    oai_sse_chunk(&out, &m, 0, "assistant", "", 0, NULL, 0, NULL, NULL);
    for (size_t i = 0; i <= in.n; i += 3) {
        bool done = i + 3 > in.n;
        raw.n = content.n = reasoning.n = 0;
        if (i < in.n) oai_text_push_bytes(&t, in.s + i, VLM_MIN(3, in.n - i), &raw, &reasoning);
        if (done) oai_text_finish(&t, &raw, &reasoning);
        oai_tools_push(&p, raw.s, raw.n, &content);
        if (done) oai_tools_finish(&p, &content);
        int32_t new_calls = p.n_calls - sent;
        const char *fin = done ? (p.n_calls ? "tool_calls" : "stop") : NULL;
        if (content.n || reasoning.n || (done && !new_calls))
            oai_sse_chunk(&out, &m, 0, NULL, content.n ? content.s : NULL, content.n,
                          reasoning.n ? reasoning.s : NULL, reasoning.n, new_calls ? NULL : fin,
                          NULL);
        if (new_calls) oai_sse_tool_calls(&out, &m, 0, p.calls, sent, new_calls, fin);
        sent = p.n_calls;
        if (done) break;
    }
    oai_sse_done(&out);
    fwrite(out.s, 1, out.n, stdout);
    oai_text_destroy(&t);
    oai_tools_destroy(&p);
    sb_free(&out);
    sb_free(&raw);
    sb_free(&content);
    sb_free(&reasoning);
    sb_free(&in);
    return 0;
}
