/*
 * tok_golden.h: the tokenizer goldens of tests/golden/tokenizer/ JSONL files read into memory
 * (texts, their NFC, ids), and the decode helpers the tokenizer tests share
 * (test_tokenizer.c, test_tokenizer_slow.c). Static helpers: include from one .c.
 */
#ifndef VLM_TOK_GOLDEN_H
#define VLM_TOK_GOLDEN_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/tokenizer.h"
#include "test.h"

/* ==== Golden files ==== */
struct golden {
    char *text;  /* owned */
    size_t len;
    char *nfc;   /* owned: the expected decode, NFC(text) */
    size_t nfc_len;
    struct i32_vec ids;
};

static struct golden *load_jsonl(const char *rel, size_t *n_out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", test_path("VLM_SOURCE_DIR", rel));
    size_t len;
    char *data = vlm_read_file(path, &len);
    if (!data) {
        fprintf(stderr, "cannot read %s\n", path);
        *n_out = 0;
        return NULL;
    }
    size_t cap = 0, n = 0;
    struct golden *g = NULL;
    for (char *line = data, *end; line < data + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(data + len - line));
        if (!end) end = data + len;
        if (end == line) continue;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)(end - line));
        VLM_ASSERT(j);
        if (n == cap) g = xrealloc(g, (cap = cap ? 2 * cap : 1024) * sizeof *g);
        struct golden *r = &g[n++];
        memset(r, 0, sizeof *r);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
        const cJSON *nfc = cJSON_GetObjectItemCaseSensitive(j, "nfc");
        const cJSON *x;
        const cJSON *hex = cJSON_GetObjectItemCaseSensitive(j, "hex");
        if (cJSON_IsString(hex)) { /* texts with NUL bytes, which cJSON strings cannot hold */
            size_t hn = strlen(hex->valuestring) / 2;
            r->text = xmalloc(hn + 1);
            for (size_t k = 0; k < hn; k++) {
                char h[3] = {hex->valuestring[2 * k], hex->valuestring[2 * k + 1], 0};
                r->text[k] = (char)strtol(h, NULL, 16);
            }
            r->text[hn] = 0;
            r->len = hn;
        } else {
            r->text = xstrdup(text->valuestring);
            r->len = strlen(r->text);
        }
        const cJSON *nfc_hex = cJSON_GetObjectItemCaseSensitive(j, "nfc_hex");
        const char *want = nfc ? nfc->valuestring : r->text;
        r->nfc_len = nfc ? strlen(want) : r->len;
        if (cJSON_IsString(nfc_hex)) {
            r->nfc_len = strlen(nfc_hex->valuestring) / 2;
            r->nfc = xmalloc(r->nfc_len + 1);
            for (size_t k = 0; k < r->nfc_len; k++) {
                char h[3] = {nfc_hex->valuestring[2 * k], nfc_hex->valuestring[2 * k + 1], 0};
                r->nfc[k] = (char)strtol(h, NULL, 16);
            }
            r->nfc[r->nfc_len] = 0;
        } else {
            r->nfc = xmalloc(r->nfc_len + 1);
            memcpy(r->nfc, want, r->nfc_len + 1);
        }
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(j, "ids")) i32_vec_push(&r->ids, x->valueint);
        cJSON_Delete(j);
    }
    free(data);
    *n_out = n;
    return g;
}

static void free_golden(struct golden *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(g[i].text);
        free(g[i].nfc);
        i32_vec_free(&g[i].ids);
    }
    free(g);
}

static bool utf8_complete(const char *s, size_t n)
{
    /* every emitted chunk must end on a character boundary: no trailing lead/continuation */
    size_t i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i == 0) return n == 0;
    unsigned char b = (unsigned char)s[i - 1];
    size_t want = b < 0x80 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    return n - (i - 1) == want;
}

/* Streams ids one by one; checks no chunk ends mid-character and returns the whole text. */
static bool stream_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool skip,
                          struct strbuf *out)
{
    struct tok_stream st;
    tok_stream_init(&st);
    bool ok = true;
    sb_append(out, "", 0);
    for (size_t i = 0; i < n; i++) {
        size_t before = out->n;
        tok_stream_push(t, &st, ids[i], skip, out);
        if (out->n > before && !utf8_complete(out->s + before, out->n - before)) ok = false;
    }
    tok_stream_flush(&st, out);
    return ok;
}

static bool ids_equal(const struct i32_vec *a, const struct i32_vec *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof *a->v) == 0);
}

#endif
