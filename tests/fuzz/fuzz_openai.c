/*
 * fuzz_openai: the OpenAI request parser and the output text pipeline on arbitrary bytes.
 * The first byte picks the request kind; the body is parsed, and when it parses, its stop
 * strings drive the text stage, the tool-call parser and both chained (struct textout) over
 * the body's own bytes cut into pieces. pyjson (Python's json.dumps of the body) must be a
 * fixed point, and both lossy UTF-8 writers must write valid UTF-8.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai.h"
#include "server/pyjson.h"
#include "server/textout.h"
#include "server/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const struct oai_limits lim = {.model_name = "tiny", .max_n = 8, .max_images = 8,
                                          .min_pixels = 3136, .max_pixels = 1 << 22,
                                          .vocab_size = 151936};
    enum oai_kind kind = (enum oai_kind)(data[0] % 4);
    const char *body = (const char *)data + 1;
    size_t n = size - 1;
    struct oai_request q;
    struct vlm_err e = {0};
    int rc = oai_parse(kind, body, n, &lim, &q, &e);
    if (rc == 0) {
        struct textout_text t;
        struct strbuf c = {0}, r = {0};
        textout_text_init(&t, NULL, true, (const char *const *)q.stop, q.n_stop, data[0] & 4);
        for (size_t i = 0; i < n; i += 3)
            textout_text_push_bytes(&t, body + i, n - i < 3 ? n - i : 3, &c, &r);
        textout_text_finish(&t, &c, &r);
        textout_text_destroy(&t);
        /* the tool-call parser over the same bytes, cut the same way */
        struct textout_tools tp;
        struct strbuf tc = {0};
        textout_tools_init(&tp, 1);
        for (size_t i = 0; i < n; i += 3) textout_tools_push(&tp, body + i, n - i < 3 ? n - i : 3, &tc);
        textout_tools_finish(&tp, &tc);
        textout_tools_destroy(&tp);
        sb_free(&tc);
        /* both stages chained, tools on */
        struct textout o;
        c.n = r.n = 0;
        textout_init(&o, NULL, true, (const char *const *)q.stop, q.n_stop, data[0] & 4, true, 1);
        for (size_t i = 0; i < n; i += 3)
            textout_push_bytes(&o, body + i, n - i < 3 ? n - i : 3, &c, &r);
        textout_finish(&o, &c, &r);
        textout_destroy(&o);
        sb_free(&c);
        sb_free(&r);
    } else {
        free(oai_error_json(&e));
    }
    oai_request_destroy(&q);
    /* pyjson: what it writes reads back to the same text (Python's dumps(loads(x)) is a
     * fixed point), except the non-JSON Infinity of an overflowing literal */
    struct strbuf a = {0}, b = {0};
    if (!pyjson_dumps(body, n, &a) && a.s && !strstr(a.s, "Infinity")) {
        if (pyjson_dumps(a.s, a.n, &b) || b.n != a.n || memcmp(a.s, b.s, a.n)) abort();
    }
    sb_free(&a);
    sb_free(&b);
    /* the lossy writers: valid output, whatever the input */
    struct strbuf l = {0}, z = {0};
    utf8_lossy(&l, body, n, true);
    utf8_sanitize(&z, body, n);
    if (!utf8_valid(l.s ? l.s : "", l.n) || !utf8_valid(z.s, z.n) || memchr(z.s, 0, z.n)) abort();
    sb_free(&l);
    sb_free(&z);
    return 0;
}
