/*
 * tool_shapes: a test program (not part of the server) for tests/api/test_tools.py. The tiny
 * random model never writes a tool call, so the Python test gives a canned model output on
 * stdin and reads, with the openai SDK, what the server's output path makes of it: line 1 is
 * the non-streaming response body, then the SSE events of the same output cut into 3-byte
 * pieces (content deltas, tool_calls deltas, finish_reason "tool_calls"). Both come from the
 * server's own code: a chat session (session.h) for a request with tools and thinking on,
 * whose one choice is fed the canned text as decoded bytes instead of sampled tokens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/session.h"

static const struct oai_limits LIM = {.model_name = "tiny", .max_n = 1, .max_images = 1,
                                      .min_pixels = 3136, .max_pixels = 1 << 20,
                                      .vocab_size = 1000};
static const char REQUEST[] =
    "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}]}";

/* A session of one choice for REQUEST, as sess_prepare leaves it minus the scheduler
 * request; the prompt opened a <think> block. */
static void session_open(struct session *s, const struct sess_env *env, uint64_t seed)
{
    struct vlm_err err = {0};
    sess_init(s, env);
    if (oai_parse(OAI_KIND_CHAT, REQUEST, strlen(REQUEST), &LIM, &s->q, &err)) {
        fprintf(stderr, "tool_shapes: %s\n", err.msg);
        exit(1);
    }
    oai_meta_init(&s->meta, OAI_KIND_CHAT, "tiny", 1);
    s->ch = xcalloc(1, sizeof *s->ch);
    s->n_ch = 1;
    s->n_prompt = 1;
    sess_choice_init(s, &s->ch[0], 0, true, seed);
}

/* The choice's end, as the scheduler reports it: one token, finished by EOS. */
static void choice_end(struct sess_choice *h)
{
    textout_finish(&h->out, &h->content, &h->reasoning);
    h->n_tokens = 1;
    h->state = REQ_FINISHED_STOP;
    h->done = true;
}

int main(void)
{
    struct strbuf in = {0};
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, stdin)) > 0) sb_append(&in, buf, got);
    if (!in.s) sb_append(&in, "", 0);
    const struct sess_env env = {0}; /* no tokenizer: the text comes decoded */

    /* non-streaming: everything, then the response */
    struct session s;
    session_open(&s, &env, 1);
    struct sess_choice *h = &s.ch[0];
    textout_push_bytes(&h->out, in.s, in.n, &h->content, &h->reasoning);
    choice_end(h);
    char *js = sess_response_json(&s);
    printf("%s\n", js);
    free(js);
    sess_destroy(&s);

    /* streaming: 3-byte pieces, one pump per piece */
    struct strbuf out = {0};
    session_open(&s, &env, 2);
    h = &s.ch[0];
    for (size_t i = 0; i <= in.n; i += 3) {
        sess_stream_role(&s, 0, &out);
        if (i < in.n) textout_push_bytes(&h->out, in.s + i, VLM_MIN(3, in.n - i), &h->content,
                                         &h->reasoning);
        if (i + 3 > in.n) choice_end(h);
        sess_stream_delta(&s, 0, &out);
        if (h->done) break;
    }
    oai_sse_done(&out);
    fwrite(out.s, 1, out.n, stdout);
    sess_destroy(&s);
    sb_free(&out);
    sb_free(&in);
    return 0;
}
