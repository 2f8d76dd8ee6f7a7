/*
 * test_prep: the worker pool (workers.h) and the prompt builder (chat template + tokenizer +
 * image decode/preprocess + placeholder expansion + context checks), including an
 * allocation-failure sweep over the whole request path: every failing allocation must end
 * in a clean 503 (or the request succeeds), with no leak (ASan build) and no crash.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "server/chat.h"
#include "server/prep.h"
#include "server/workers.h"
#include "test.h"

/* a 2x2 RGB PNG (red, green / blue, white) */
static const char *PNG_URL =
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEklEQVR4nGP4z8DAAMIM/4EAAB/uBfsL2WiLAAAAAElFTkSuQmCC";

static _Atomic int counter;

static void bump(void *arg)
{
    (void)arg;
    atomic_fetch_add(&counter, 1);
}

static struct oai_request parse(enum oai_kind k, const char *body)
{
    static const struct oai_limits lim = {.max_n = 8, .max_images = 8, .min_pixels = 3136,
                                          .max_pixels = 1 << 22, .vocab_size = 151936};
    struct oai_request q;
    struct vlm_err e = {0};
    int rc = oai_parse(k, body, strlen(body), &lim, &q, &e);
    if (rc) fprintf(stderr, "  parse failed: %s\n", e.msg);
    return q;
}

int main(void)
{
    TEST("pool runs every job, in order of submission, before it is freed") {
        struct workers *p = workers_new(3);
        CHECK(p);
        for (int i = 0; i < 1000; i++) workers_submit(p, bump, NULL);
        workers_free(p);
        CHECK_EQ(atomic_load(&counter), 1000);
    }

    struct tokenizer *tok = NULL;
    struct vlm_err err = {0};
    if (tok_load(&tok, test_fixture("qwen3-tokenizer/tokenizer.json"), &err))
        TEST_SKIP("no Qwen3 tokenizer fixture");
    struct prep_ctx c = {.tok = tok, .enable_thinking_default = true, .implicit_image = true,
                         .has_vision = true, .pad_id = tok_find(tok, "<|image_pad|>"),
                         .max_model_len = 256, .fetch_timeout = 1, .fetch_max_bytes = 1 << 20,
                         .max_images = 8};
    video_params_default(&c.video);
    vision_prep_params_default(&c.vp);
    c.media.max_pixels = 1 << 24;
    c.media.max_bytes = 1 << 20;

    TEST("text-only chat gets the implicit image: 4 pad tokens at its offset") {
        struct oai_request q = parse(OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}");
        struct prep_prompt pp;
        CHECK_EQ(prep_prompt_build(&c, &q, false, &pp, &err), 0);
        CHECK_EQ(pp.n_items, 1);
        if (pp.n_items == 1) {
            CHECK_EQ(pp.items[0].v.n_tokens, 4);
            int32_t off = pp.items[0].offset;
            for (int i = 0; i < 4; i++) CHECK_EQ(pp.ids.v[off + i], c.pad_id);
            CHECK(off > 0 && pp.ids.v[off - 1] != c.pad_id);
        }
        CHECK_EQ(pp.max_tokens, 256 - (int32_t)pp.ids.n);
        CHECK(pp.thinking);
        prep_prompt_destroy(&pp);
        oai_request_destroy(&q);
    }
    TEST("thinking off adds 4 tokens; a data-URL image replaces the implicit one") {
        struct oai_request q = parse(OAI_KIND_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
            "\"chat_template_kwargs\":{\"enable_thinking\":false}}");
        struct oai_request q0 = parse(OAI_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}");
        struct prep_prompt a, b;
        CHECK_EQ(prep_prompt_build(&c, &q, false, &a, &err), 0);
        CHECK_EQ(prep_prompt_build(&c, &q0, false, &b, &err), 0);
        CHECK_EQ((long)a.ids.n, (long)b.ids.n + 4);
        CHECK(!a.thinking);
        prep_prompt_destroy(&a);
        prep_prompt_destroy(&b);
        oai_request_destroy(&q);
        oai_request_destroy(&q0);
        char body[1024];
        snprintf(body, sizeof body,
                 "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                 "\"image_url\":{\"url\":\"%s\"}},{\"type\":\"text\",\"text\":\"Hi\"}]}]}",
                 PNG_URL);
        q = parse(OAI_KIND_CHAT, body);
        CHECK_EQ(prep_prompt_build(&c, &q, false, &a, &err), 0);
        CHECK_EQ(a.n_items, 1);
        CHECK((long)a.ids.n == (long)b.ids.n || a.n_items == 1);
        prep_prompt_destroy(&a);
        oai_request_destroy(&q);
    }
    TEST("context checks: prompt too long, max_tokens too big, completions text") {
        struct oai_request q = parse(OAI_KIND_COMPLETION, "{\"prompt\":\"one two three\",\"max_tokens\":300}");
        struct prep_prompt pp;
        CHECK_EQ(prep_prompt_build(&c, &q, false, &pp, &err), VLM_ETOOBIG);
        CHECK_EQ(err.http_status, 400);
        CHECK_STR(err.param, "max_tokens");
        CHECK_EQ(prep_prompt_build(&c, &q, true, &pp, &err), 0); /* tokenize: no check */
        CHECK_EQ((long)pp.ids.n, 3);
        prep_prompt_destroy(&pp);
        oai_request_destroy(&q);
        char body[4096] = "{\"prompt\":\"";
        for (int i = 0; i < 300; i++) strcat(body, "word ");
        strcat(body, "\"}");
        q = parse(OAI_KIND_COMPLETION, body);
        CHECK_EQ(prep_prompt_build(&c, &q, false, &pp, &err), VLM_ETOOBIG);
        CHECK_EQ(err.http_status, 400);
        oai_request_destroy(&q);
    }
    TEST("tokenizer_model_max_length: a longer prompt is a 400 (the reference truncates)") {
        struct prep_ctx cm = c;
        cm.max_prompt_len = 5;
        struct oai_request q =
            parse(OAI_KIND_COMPLETION, "{\"prompt\":\"one two three four five six\"}");
        struct prep_prompt pp;
        CHECK_EQ(prep_prompt_build(&cm, &q, false, &pp, &err), VLM_ETOOBIG);
        CHECK_EQ(err.http_status, 400);
        CHECK_STR(err.msg, "The prompt has 6 tokens (images included), more than this model's "
                           "tokenizer_model_max_length 5. The reference would truncate it; please "
                           "reduce the length of the input.");
        oai_request_destroy(&q);
        q = parse(OAI_KIND_COMPLETION, "{\"prompt\":\"one two three four five\"}");
        CHECK_EQ(prep_prompt_build(&cm, &q, false, &pp, &err), 0);
        prep_prompt_destroy(&pp);
        oai_request_destroy(&q);
    }
    TEST("bad images and a model without vision") {
        struct oai_request q = parse(OAI_KIND_CHAT,
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
            "\"image_url\":\"data:image/png;base64,aGVsbG8=\"}]}]}");
        struct prep_prompt pp;
        CHECK(prep_prompt_build(&c, &q, false, &pp, &err) < 0);
        CHECK_EQ(err.http_status, 400);
        c.has_vision = false;
        CHECK(prep_prompt_build(&c, &q, false, &pp, &err) < 0);
        CHECK_EQ(err.http_status, 400);
        c.has_vision = true;
        oai_request_destroy(&q);
    }
    TEST("allocation-failure sweep over the request path") {
        char body[1024];
        snprintf(body, sizeof body,
                 "{\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\","
                 "\"content\":[{\"type\":\"text\",\"text\":\"What is this?\"},{\"type\":"
                 "\"image_url\",\"image_url\":{\"url\":\"%s\"}}]}],\"stop\":[\"x\"]}",
                 PNG_URL);
        int ok = 0, failed = 0;
        for (long n = 0; n < 400 && !ok; n++) {
            vlm_fail_alloc_after(n);
            struct oai_request q = parse(OAI_KIND_CHAT, body);
            struct prep_prompt pp;
            int rc = q.n_msgs ? prep_prompt_build(&c, &q, false, &pp, &err) : VLM_ENOMEM;
            vlm_fail_alloc_after(-1);
            if (rc == 0) {
                ok = 1;
                prep_prompt_destroy(&pp);
            } else {
                failed++;
                CHECK(rc == VLM_ENOMEM || err.http_status == 503 || err.http_status == 400);
            }
            oai_request_destroy(&q);
        }
        CHECK(ok);
        printf("  %d failing allocation points, then success\n", failed);
    }
    tok_free(tok);
    return test_report();
}
