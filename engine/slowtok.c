/*
 * slowtok.c: tokenizer.json -> the slow Qwen2Tokenizer files. See slowtok.h. The source is
 * parsed with cJSON, checked for what the slow form can express, optionally extended with
 * the Valley tokens, and written file by file.
 */
#include "engine/slowtok.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const slowtok_valley_tokens[SLOWTOK_N_VALLEY] = {
    "<im_start>", "<im_end>", "<vi_start>", "<vi_end>", "<cor>",
    "</cor>", "<im_patch>", "<vi_frame>", "<box_start>", "<box_end>",
};

struct src {
    cJSON *tok;          /* owned: tokenizer.json */
    cJSON *cfg;          /* owned: tokenizer_config.json beside it, or NULL */
    const cJSON *vocab;  /* borrowed from tok: model.vocab */
    const cJSON *merges; /* borrowed from tok: model.merges */
    cJSON *added;        /* borrowed from tok: added_tokens (created if absent) */
    int32_t n_vocab;
};

static void src_free(struct src *s)
{
    cJSON_Delete(s->tok);
    cJSON_Delete(s->cfg);
}

static cJSON *parse_file(const char *path, bool optional, struct vlm_err *err, int *rc)
{
    size_t n;
    char *text = vlm_read_file(path, &n);
    *rc = 0;
    if (!text) {
        if (optional && errno == ENOENT) return NULL;
        *rc = vlm_err_set(err, VLM_EIO, 500, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *rc = vlm_err_set(err, VLM_EINVAL, 500, "%s: not a JSON object", path);
    }
    return j;
}

/* True when the normalizer is NFC (alone or as the only step of a Sequence). */
static bool is_nfc(const cJSON *norm)
{
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(norm, "type"));
    if (t && !strcmp(t, "NFC")) return true;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
    return t && !strcmp(t, "Sequence") && cJSON_GetArraySize(list) == 1 && is_nfc(list->child);
}

/* True when the pre-tokenizer is Sequence[Split(Qwen2 regex, Isolated), ByteLevel(no regex,
 * no prefix space)], the pipeline Qwen2Converter builds. */
static bool is_qwen2_pre(const cJSON *pre)
{
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pre, "type"));
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (!t || strcmp(t, "Sequence") || cJSON_GetArraySize(list) != 2) return false;
    const cJSON *split = list->child, *bl = split->next;
    const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(split, "type"));
    const char *beh = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(split, "behavior"));
    const char *re = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(split, "pattern"), "Regex"));
    const char *bt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(bl, "type"));
    return st && !strcmp(st, "Split") && beh && !strcmp(beh, "Isolated") && re &&
           !strcmp(re, SLOWTOK_QWEN2_REGEX) &&
           !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(split, "invert")) && bt &&
           !strcmp(bt, "ByteLevel") &&
           !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bl, "add_prefix_space")) &&
           !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bl, "use_regex"));
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

#define SRC_FAIL(...) \
    do { rc = vlm_err_set(err, VLM_EINVAL, 500, __VA_ARGS__); goto fail; } while (0)

/* Loads and checks the source; with valley, appends the Valley tokens to added_tokens. */
static int src_load(struct src *s, const char *path, bool valley, struct vlm_err *err)
{
    memset(s, 0, sizeof *s);
    int rc;
    int32_t *ids = NULL;
    s->tok = parse_file(path, false, err, &rc);
    if (rc) return rc;
    /* tokenizer_config.json beside tokenizer.json */
    struct strbuf cp = {0};
    const char *slash = strrchr(path, '/');
    if (slash) sb_append(&cp, path, (size_t)(slash - path + 1));
    sb_puts(&cp, "tokenizer_config.json");
    s->cfg = parse_file(cp.s, true, err, &rc);
    sb_free(&cp);
    if (rc) goto fail;

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(s->tok, "model");
    const char *mt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "type"));
    s->vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    s->merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if ((mt && strcmp(mt, "BPE")) || !cJSON_IsObject(s->vocab) || !cJSON_IsArray(s->merges))
        SRC_FAIL("%s: not a BPE tokenizer with vocab and merges", path);
    if (!is_nfc(cJSON_GetObjectItemCaseSensitive(s->tok, "normalizer")) ||
        !is_qwen2_pre(cJSON_GetObjectItemCaseSensitive(s->tok, "pre_tokenizer")))
        SRC_FAIL("%s: the slow files imply NFC and the Qwen2 split regex; this tokenizer has "
                 "another normalizer or pre_tokenizer", path);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")) ||
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges")))
        SRC_FAIL("%s: byte_fallback / ignore_merges cannot be written as slow files", path);

    /* vocab ids must be exactly 0..N-1 */
    s->n_vocab = cJSON_GetArraySize(s->vocab);
    ids = xcalloc((size_t)s->n_vocab + 1, sizeof *ids);
    for (const cJSON *v = s->vocab->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= s->n_vocab ||
            ids[(int32_t)v->valuedouble]++)
            SRC_FAIL("%s: vocab ids must be 0..%d, each once (\"%.40s\")", path, s->n_vocab - 1,
                     v->string);
    }
    /* added tokens: ids in the vocab, or following it without gaps (how transformers
     * numbers added tokens when it reads the slow files) */
    s->added = cJSON_GetObjectItemCaseSensitive(s->tok, "added_tokens");
    if (!s->added) s->added = cJSON_AddArrayToObject(s->tok, "added_tokens");
    if (!cJSON_IsArray(s->added)) SRC_FAIL("%s: added_tokens is not an array", path);
    int32_t n_added = cJSON_GetArraySize(s->added), n_new = 0, max_id = s->n_vocab - 1;
    free(ids);
    ids = xcalloc((size_t)n_added + 1, sizeof *ids);
    for (const cJSON *a = s->added->child; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "content"));
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e8 || !c || !*c)
            SRC_FAIL("%s: an added token needs an id and a content", path);
        if (id->valueint >= s->n_vocab) ids[n_new++] = id->valueint;
        if (id->valueint > max_id) max_id = id->valueint;
        for (size_t i = 0; valley && i < SLOWTOK_N_VALLEY; i++)
            if (!strcmp(c, slowtok_valley_tokens[i]))
                SRC_FAIL("%s: already has the Valley token %s", path, c);
    }
    qsort(ids, (size_t)n_new, sizeof *ids, cmp_i32);
    for (int32_t i = 0; i < n_new; i++)
        if (ids[i] != s->n_vocab + i)
            SRC_FAIL("%s: added token id %d leaves a gap after the vocab (%d ids): the slow "
                     "files cannot keep it", path, ids[i], s->n_vocab);
    if (valley) {
        for (int32_t i = 0; i < SLOWTOK_N_VALLEY; i++) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddNumberToObject(t, "id", max_id + 1 + i);
            cJSON_AddStringToObject(t, "content", slowtok_valley_tokens[i]);
            cJSON_AddFalseToObject(t, "single_word");
            cJSON_AddFalseToObject(t, "lstrip");
            cJSON_AddFalseToObject(t, "rstrip");
            cJSON_AddFalseToObject(t, "normalized");
            cJSON_AddTrueToObject(t, "special");
            cJSON_AddItemToArray(s->added, t);
        }
    }
    free(ids);
    return 0;
fail:
    free(ids);
    src_free(s);
    memset(s, 0, sizeof *s);
    return rc;
}

static int write_file(const char *dir, const char *name, const struct strbuf *b,
                      struct vlm_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return vlm_err_set(err, VLM_EIO, 500, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fwrite(b->s, 1, b->n, f) == b->n;
    if (fclose(f) != 0) ok = false;
    if (!ok) return vlm_err_set(err, VLM_EIO, 500, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int write_json(const char *dir, const char *name, const cJSON *j, struct vlm_err *err)
{
    char *text = cJSON_Print(j);
    struct strbuf b = {0};
    sb_puts(&b, text);
    sb_puts(&b, "\n");
    cJSON_free(text);
    int rc = write_file(dir, name, &b, err);
    sb_free(&b);
    return rc;
}

/* A JSON string literal (UTF-8 passed through; quotes, backslashes, controls escaped). */
static void json_str(struct strbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') sb_printf(b, "\\%c", *p);
        else if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
        else sb_append(b, (const char *)p, 1);
    }
    sb_puts(b, "\"");
}

/* Python's str.split() separators that a byte-level token could contain: a merge part
 * holding one of them cannot be written as "a b" in merges.txt. */
static bool has_py_space(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == ' ' || (*p >= 0x09 && *p <= 0x0d) || (*p >= 0x1c && *p <= 0x1f)) return true;
        if (p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0)) return true; /* U+0085, U+00A0 */
        if (p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80) return true;   /* U+1680 */
        if (p[0] == 0xe2 && p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 ||
                                             p[2] == 0xa9 || p[2] == 0xaf))
            return true; /* U+2000..200A, 2028, 2029, 202F */
        if (p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f) return true;   /* U+205F */
        if (p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80) return true;   /* U+3000 */
    }
    return false;
}

static cJSON *added_token_dict(const cJSON *a)
{
    cJSON *d = cJSON_CreateObject();
    static const char *const keys[] = {"content", "lstrip",      "normalized",
                                       "rstrip",  "single_word", "special"};
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, keys[i]);
        if (v) cJSON_AddItemToObject(d, keys[i], cJSON_Duplicate(v, true));
        else cJSON_AddFalseToObject(d, keys[i]);
    }
    return d;
}

static const cJSON *find_added(const struct src *s, const char *content)
{
    for (const cJSON *a = s->added->child; a; a = a->next) {
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "content"));
        if (c && !strcmp(c, content)) return a;
    }
    return NULL;
}

/* The content of a special-token setting: a string or an {"content": ...} object. */
static const char *token_content(const cJSON *v)
{
    if (cJSON_IsString(v)) return v->valuestring;
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "content"));
}

int slowtok_write(const char *tokenizer_json_path, const char *out_dir, bool valley_tokens,
                  struct vlm_err *err)
{
    struct src s;
    int rc = src_load(&s, tokenizer_json_path, valley_tokens, err);
    if (rc) return rc;
    struct strbuf b = {0};

    /* vocab.json, in id order as the source lists it */
    sb_puts(&b, "{");
    for (const cJSON *v = s.vocab->child; v; v = v->next) {
        sb_puts(&b, v == s.vocab->child ? "\n  " : ",\n  ");
        json_str(&b, v->string);
        sb_printf(&b, ": %d", v->valueint);
    }
    sb_puts(&b, "\n}\n");
    if ((rc = write_file(out_dir, "vocab.json", &b, err))) goto out;

    /* merges.txt: rank = line order */
    b.n = 0;
    sb_puts(&b, "#version: 0.2\n");
    int32_t rank = 0;
    for (const cJSON *m = s.merges->child; m; m = m->next, rank++) {
        const char *pa = NULL, *pb = NULL;
        char *tmp = NULL;
        if (cJSON_IsString(m)) {
            tmp = xstrdup(m->valuestring);
            char *sp = strchr(tmp, ' ');
            if (sp) { *sp = 0; pa = tmp; pb = sp + 1; }
        } else if (cJSON_GetArraySize(m) == 2) {
            pa = cJSON_GetStringValue(m->child);
            pb = cJSON_GetStringValue(m->child->next);
        }
        bool ok = pa && pb && *pa && *pb && !has_py_space(pa) && !has_py_space(pb);
        if (ok) sb_printf(&b, "%s %s\n", pa, pb);
        free(tmp);
        if (!ok) {
            rc = vlm_err_set(err, VLM_EINVAL, 500, "%s: merge %d cannot be written as a "
                             "merges.txt line", tokenizer_json_path, rank);
            goto out;
        }
    }
    if ((rc = write_file(out_dir, "merges.txt", &b, err))) goto out;

    /* added_tokens.json: every added token past the vocab, content -> id */
    b.n = 0;
    sb_puts(&b, "{");
    bool first = true;
    for (const cJSON *a = s.added->child; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (id->valueint < s.n_vocab) continue;
        sb_puts(&b, first ? "\n  " : ",\n  ");
        json_str(&b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "content")));
        sb_printf(&b, ": %d", id->valueint);
        first = false;
    }
    sb_puts(&b, "\n}\n");
    if ((rc = write_file(out_dir, "added_tokens.json", &b, err))) goto out;

    /* special_tokens_map.json: the special-token settings of the source config */
    cJSON *map = cJSON_CreateObject();
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "pad_token"};
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(s.cfg, "additional_special_tokens");
    if (cJSON_IsArray(extra)) {
        cJSON *list = cJSON_AddArrayToObject(map, "additional_special_tokens");
        for (const cJSON *e = extra->child; e; e = e->next)
            if (token_content(e)) cJSON_AddItemToArray(list, cJSON_CreateString(token_content(e)));
    }
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        const char *c = token_content(cJSON_GetObjectItemCaseSensitive(s.cfg, keys[i]));
        if (!c) continue;
        const cJSON *a = find_added(&s, c);
        cJSON *d = a ? added_token_dict(a) : cJSON_CreateString(c);
        cJSON_DeleteItemFromObjectCaseSensitive(d, "special");
        cJSON_AddItemToObject(map, keys[i], d);
    }
    rc = write_json(out_dir, "special_tokens_map.json", map, err);
    cJSON_Delete(map);
    if (rc) goto out;

    /* tokenizer_config.json: the source config (chat_template, special-token settings)
     * with the added tokens and the slow class */
    cJSON *cfg = s.cfg ? cJSON_Duplicate(s.cfg, true) : cJSON_CreateObject();
    if (!s.cfg) {
        cJSON_AddFalseToObject(cfg, "add_prefix_space");
        cJSON_AddFalseToObject(cfg, "clean_up_tokenization_spaces");
        cJSON_AddStringToObject(cfg, "errors", "replace");
        cJSON_AddFalseToObject(cfg, "split_special_tokens");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "added_tokens_decoder");
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "tokenizer_class");
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "tokenizer_file");
    cJSON *dec = cJSON_CreateObject();
    for (const cJSON *a = s.added->child; a; a = a->next) {
        char key[16];
        snprintf(key, sizeof key, "%d", cJSON_GetObjectItemCaseSensitive(a, "id")->valueint);
        cJSON_AddItemToObject(dec, key, added_token_dict(a));
    }
    cJSON_AddItemToObject(cfg, "added_tokens_decoder", dec);
    cJSON_AddStringToObject(cfg, "tokenizer_class", "Qwen2Tokenizer");
    rc = write_json(out_dir, "tokenizer_config.json", cfg, err);
    cJSON_Delete(cfg);
out:
    sb_free(&b);
    src_free(&s);
    return rc;
}

int slowtok_add_valley(const char *tokenizer_json_path, const char *out_dir, struct vlm_err *err)
{
    struct src s;
    int rc = src_load(&s, tokenizer_json_path, true, err);
    if (rc) return rc;
    cJSON *cfg = s.cfg ? s.cfg : cJSON_CreateObject();
    s.cfg = cfg;
    cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    if (!cJSON_IsObject(dec)) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, "added_tokens_decoder");
        dec = cJSON_AddObjectToObject(cfg, "added_tokens_decoder");
    }
    int32_t n = cJSON_GetArraySize(s.added);
    int32_t i = 0;
    for (const cJSON *a = s.added->child; a; a = a->next, i++) {
        if (i < n - SLOWTOK_N_VALLEY) continue;
        char key[16];
        snprintf(key, sizeof key, "%d", cJSON_GetObjectItemCaseSensitive(a, "id")->valueint);
        cJSON_AddItemToObject(dec, key, added_token_dict(a));
    }
    /* tokenizer.json is printed compactly (the vocab is large) */
    char *text = cJSON_PrintUnformatted(s.tok);
    struct strbuf b = {0};
    sb_puts(&b, text);
    sb_puts(&b, "\n");
    cJSON_free(text);
    rc = write_file(out_dir, "tokenizer.json", &b, err);
    sb_free(&b);
    if (!rc) rc = write_json(out_dir, "tokenizer_config.json", cfg, err);
    src_free(&s);
    return rc;
}
