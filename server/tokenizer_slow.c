/*
 * tokenizer_slow.c: the slow Qwen2Tokenizer files -> the tokenizer.json tree that
 * transformers' Qwen2TokenizerFast builds from them (convert_slow_tokenizer's Qwen2Converter
 * plus the added-token handling of from_pretrained), for tokenizer.c to load. See
 * tokenizer.h (tok_load_slow) for the rules; this file follows them in order: vocab.json,
 * merges.txt, the special-token settings, the added tokens and their ids, the tree.
 */
#include "server/tokenizer_slow.h"

#include "engine/slowtok.h"
#include "server/utf8.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOW_FAIL(...) \
    do { rc = vlm_err_set(err, VLM_EINVAL, 500, "tokenizer: " __VA_ARGS__); goto done; } while (0)

/* ==== merges.txt, read as Python reads it ====
 * Lines end at \n, \r or \r\n (universal newlines); each line is stripped and split on runs
 * of white space as str.strip() / str.split() define it; a first line starting "#version:"
 * and empty lines are skipped. */

/* The byte length of the Python white-space character at s (n bytes left), or 0. */
static int py_space(const unsigned char *s, size_t n)
{
    if (*s == ' ' || (*s >= 0x09 && *s <= 0x0d) || (*s >= 0x1c && *s <= 0x1f)) return 1;
    if (*s < 0x80) return 0;
    int k = utf8_char(s, n); /* <= 0 inside a character: the caller may step by bytes */
    if (k <= 0) return 0;
    uint32_t cp;
    utf8_decode(s, (size_t)k, &cp);
    bool ws = cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
              cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
    return ws ? (int)k : 0;
}

/* Parses merges.txt into [[a, b], ...] and the line of each merge. */
static int parse_merges(const struct tok_text *f, const char *name, cJSON **out,
                        int32_t **lines_out, struct vlm_err *err)
{
    int rc = 0;
    cJSON *arr = cJSON_CreateArray();
    int32_t *lines = NULL;
    size_t n_lines = 0, cap = 0;
    const unsigned char *s = (const unsigned char *)f->s;
    if (!utf8_valid(f->s, f->n)) SLOW_FAIL("%s is not valid UTF-8", name);
    int32_t line_no = 0;
    for (size_t pos = 0; pos < f->n;) {
        size_t e = pos;
        while (e < f->n && s[e] != '\n' && s[e] != '\r') e++;
        size_t next = e < f->n ? e + 1 + (s[e] == '\r' && e + 1 < f->n && s[e + 1] == '\n') : e;
        line_no++;
        size_t a = pos, b = e;
        int k;
        while (a < b && (k = py_space(s + a, b - a)) > 0) a += (size_t)k;
        while (b > a) { /* strip from the right: step back over one character */
            size_t c = b - 1;
            while (c > a && utf8_is_cont(s[c])) c--;
            if (!py_space(s + c, b - c)) break;
            b = c;
        }
        pos = next;
        if (a == b || (line_no == 1 && b - a >= 9 && !memcmp(s + a, "#version:", 9))) continue;
        size_t part[2][2], np = 0;
        for (size_t i = a; i < b;) {
            if ((k = py_space(s + i, b - i)) > 0) { i += (size_t)k; continue; }
            size_t j = i;
            while (j < b && !py_space(s + j, b - j)) j++;
            if (np < 2) { part[np][0] = i; part[np][1] = j; }
            np++;
            i = j;
        }
        if (np != 2)
            SLOW_FAIL("%s line %d: expected two tokens separated by a space, found %zu", name,
                      line_no, np);
        cJSON *m = cJSON_CreateArray();
        for (int i = 0; i < 2; i++) {
            char *t = xstrndup((const char *)s + part[i][0], part[i][1] - part[i][0]);
            cJSON_AddItemToArray(m, cJSON_CreateString(t));
            free(t);
        }
        cJSON_AddItemToArray(arr, m);
        if (n_lines == cap) {
            cap = cap ? 2 * cap : 4096;
            lines = xrealloc(lines, cap * sizeof *lines);
        }
        lines[n_lines++] = line_no;
    }
done:
    if (rc) {
        cJSON_Delete(arr);
        free(lines);
        return rc;
    }
    *out = arr;
    *lines_out = lines;
    return 0;
}

/* ==== Added tokens ==== */
struct added {
    char *content;    /* owned */
    int64_t declared; /* the id the file gives, -1 for a special-token setting */
    bool special, lstrip, rstrip, single_word;
    const char *file; /* where it was declared (for messages) */
};

struct added_list {
    struct added *v;
    size_t n, cap;
};

static void added_push(struct added_list *l, struct added a)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = a;
}

static int added_cmp(const void *x, const void *y)
{
    const struct added *a = x, *b = y;
    return (a->declared > b->declared) - (a->declared < b->declared);
}

/* The content of a special-token setting: a string, an {"content": ...} object, or NULL. */
static const char *setting_content(const cJSON *v)
{
    if (cJSON_IsString(v)) return v->valuestring;
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "content"));
}

/* The special-token settings: bos/eos/unk/sep/pad/cls/mask and additional_special_tokens,
 * from tokenizer_config.json, overridden by special_tokens_map.json when map is given
 * (transformers reads the map only when the config has no added_tokens_decoder), with
 * Qwen2Tokenizer's defaults: unk, eos and pad "<|endoftext|>". */
struct specials {
    const char *v[64]; /* borrowed from the cJSON trees */
    int n;
};

static void specials_add(struct specials *sp, const char *c)
{
    if (!c || !*c) return;
    for (int i = 0; i < sp->n; i++)
        if (!strcmp(sp->v[i], c)) return;
    if (sp->n < (int)ARRAY_LEN(sp->v)) sp->v[sp->n++] = c;
}

static bool specials_has(const struct specials *sp, const char *c)
{
    for (int i = 0; i < sp->n; i++)
        if (!strcmp(sp->v[i], c)) return true;
    return false;
}

static void specials_collect(struct specials *sp, const cJSON *cfg, const cJSON *map)
{
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                       "pad_token", "cls_token", "mask_token"};
    sp->n = 0;
    for (size_t i = 0; i < ARRAY_LEN(keys); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(map, keys[i]);
        if (!v) v = cJSON_GetObjectItemCaseSensitive(cfg, keys[i]);
        if (v) specials_add(sp, setting_content(v));
        else if (i == 1 || i == 2 || i == 4) specials_add(sp, "<|endoftext|>");
    }
    const cJSON *lists[2] = {cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens"),
                             cJSON_GetObjectItemCaseSensitive(map, "additional_special_tokens")};
    for (int l = 0; l < 2; l++)
        for (const cJSON *e = cJSON_IsArray(lists[l]) ? lists[l]->child : NULL; e; e = e->next)
            specials_add(sp, setting_content(e));
}

/* A decimal id as a JSON object key ("151643"), or -1. */
static int64_t key_id(const char *k)
{
    if (!k || !*k || strlen(k) > 9 || (k[0] == '0' && k[1])) return -1;
    int64_t v = 0;
    for (; *k; k++) {
        if (*k < '0' || *k > '9') return -1;
        v = v * 10 + (*k - '0');
    }
    return v;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* ==== The tree ==== */
static cJSON *parse_json(const struct tok_text *f)
{
    return f->s ? cJSON_ParseWithLength(f->s, f->n) : NULL;
}

int tok_slow_tree(cJSON **out, int32_t **merge_line, const struct tok_slow_files *f,
                  struct vlm_err *err)
{
    int rc = 0;
    char vname[4200], mname[4200], cname[4200], aname[4200], sname[4200];
    snprintf(vname, sizeof vname, "%s/vocab.json", f->dir);
    snprintf(mname, sizeof mname, "%s/merges.txt", f->dir);
    snprintf(cname, sizeof cname, "%s/tokenizer_config.json", f->dir);
    snprintf(aname, sizeof aname, "%s/added_tokens.json", f->dir);
    snprintf(sname, sizeof sname, "%s/special_tokens_map.json", f->dir);
    cJSON *vocab = parse_json(&f->vocab), *cfg = parse_json(&f->config);
    cJSON *added_json = NULL, *map = NULL, *merges = NULL, *root = NULL;
    const char **keys = NULL;
    int32_t *lines = NULL;
    struct added_list al = {0};
    *out = NULL;
    *merge_line = NULL;

    /* every file is UTF-8, as Python opens them */
    const struct tok_text *texts[] = {&f->vocab, &f->config, &f->added_tokens, &f->special_map};
    const char *names[] = {vname, cname, aname, sname};
    for (size_t i = 0; i < ARRAY_LEN(texts); i++)
        if (texts[i]->s && !utf8_valid(texts[i]->s, texts[i]->n))
            SLOW_FAIL("%s is not valid UTF-8", names[i]);

    /* --- vocab.json: ids 0..N-1, each once, no spelling twice --- */
    if (!cJSON_IsObject(vocab) || !vocab->child)
        SLOW_FAIL("%s is not a JSON object of tokens", vname);
    int32_t n_vocab = cJSON_GetArraySize(vocab);
    {
        uint8_t *seen = xcalloc((size_t)n_vocab, 1);
        keys = xmalloc((size_t)n_vocab * sizeof *keys);
        int32_t i = 0;
        const char *bad = NULL;
        for (const cJSON *v = vocab->child; v; v = v->next, i++) {
            double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (!(d >= 0 && d < n_vocab) || d != (double)(int32_t)d || seen[(int32_t)d]++) {
                bad = v->string;
                break;
            }
            keys[i] = v->string;
        }
        free(seen);
        if (bad)
            SLOW_FAIL("%s: \"%.40s\": ids must be 0..%d, each used once", vname, bad, n_vocab - 1);
        qsort(keys, (size_t)n_vocab, sizeof *keys, cmp_str);
        for (i = 1; i < n_vocab; i++)
            if (!strcmp(keys[i - 1], keys[i]))
                SLOW_FAIL("%s lists \"%.40s\" twice", vname, keys[i]);
    }

    /* --- merges.txt --- */
    if ((rc = parse_merges(&f->merges, mname, &merges, &lines, err))) goto done;

    /* --- tokenizer_config.json (optional) and the special-token settings --- */
    if (f->config.s && !cJSON_IsObject(cfg)) SLOW_FAIL("%s is not a JSON object", cname);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "add_prefix_space")))
        SLOW_FAIL("%s: add_prefix_space true is not supported", cname);
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    if (dec && !cJSON_IsObject(dec)) SLOW_FAIL("%s: added_tokens_decoder is not an object", cname);
    struct specials sp;
    if (!dec) { /* legacy files: special_tokens_map.json and added_tokens.json */
        map = parse_json(&f->special_map);
        if (f->special_map.s && !cJSON_IsObject(map)) SLOW_FAIL("%s is not a JSON object", sname);
        added_json = parse_json(&f->added_tokens);
        if (f->added_tokens.s && !cJSON_IsObject(added_json))
            SLOW_FAIL("%s is not a JSON object", aname);
    }
    specials_collect(&sp, cfg, map);

    /* --- the added tokens, in id order, then special-token settings not among them --- */
    if (dec) {
        for (const cJSON *e = dec->child; e; e = e->next) {
            int64_t id = key_id(e->string);
            const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "content"));
            if (id < 0 || !c || !*c)
                SLOW_FAIL("%s: added_tokens_decoder entry \"%.20s\" needs a decimal id and a "
                          "non-empty content", cname, e->string);
            for (size_t i = 0; i < al.n; i++)
                if (al.v[i].declared == id)
                    SLOW_FAIL("%s: added_tokens_decoder lists id %lld twice", cname,
                              (long long)id);
            added_push(&al, (struct added){
                .content = xstrdup(c), .declared = id,
                .special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special")),
                .lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip")),
                .rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip")),
                .single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word")),
                .file = cname});
        }
    } else {
        for (const cJSON *e = added_json ? added_json->child : NULL; e; e = e->next) {
            double d = cJSON_IsNumber(e) ? e->valuedouble : -1;
            if (!(d >= 0 && d < (1 << 24)) || d != (double)(int64_t)d || !*e->string)
                SLOW_FAIL("%s: \"%.40s\" needs a non-negative integer id", aname, e->string);
            for (size_t i = 0; i < al.n; i++)
                if (al.v[i].declared == (int64_t)d)
                    SLOW_FAIL("%s lists id %lld twice", aname, (long long)d);
            added_push(&al, (struct added){.content = xstrdup(e->string), .declared = (int64_t)d,
                                           .file = aname});
        }
    }
    if (al.n) qsort(al.v, al.n, sizeof *al.v, added_cmp); /* declared ids are distinct */
    size_t n_declared = al.n;
    for (int i = 0; i < sp.n; i++) {
        bool have = false;
        for (size_t k = 0; k < n_declared && !have; k++) have = !strcmp(al.v[k].content, sp.v[i]);
        if (!have) added_push(&al, (struct added){.content = xstrdup(sp.v[i]), .declared = -1});
    }

    /* --- ids, as the tokenizers library numbers added tokens: a content already known
     * keeps its id (vocab or earlier added token); a new one gets the vocab size, or one
     * past the largest added id once that is past the vocab --- */
    cJSON *added_arr = cJSON_CreateArray();
    int64_t max_added = -1;
    for (size_t k = 0; k < al.n; k++) {
        struct added *a = &al.v[k];
        int64_t id = -1;
        for (size_t j = 0; j < k && id < 0; j++)
            if (!strcmp(al.v[j].content, a->content)) id = al.v[j].declared;
        if (id < 0) {
            const char **hit = bsearch(&a->content, keys, (size_t)n_vocab, sizeof *keys, cmp_str);
            if (hit) id = cJSON_GetObjectItemCaseSensitive(vocab, a->content)->valueint;
        }
        if (id < 0) id = max_added >= n_vocab ? max_added + 1 : n_vocab;
        if (a->declared >= 0 && a->declared != id) {
            cJSON_Delete(added_arr);
            SLOW_FAIL("%s: added token \"%.40s\" has id %lld, but transformers numbers it %lld "
                      "(added tokens must follow the %d ids of vocab.json in order, without gaps)",
                      a->file, a->content, (long long)a->declared, (long long)id, n_vocab);
        }
        a->declared = id; /* later duplicates of this content find its id here */
        bool dup = false;
        for (size_t j = 0; j < k; j++) dup |= !strcmp(al.v[j].content, a->content);
        if (dup) continue;
        if (id > max_added) max_added = id;
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", (double)id);
        cJSON_AddStringToObject(t, "content", a->content);
        cJSON_AddBoolToObject(t, "special", a->special || specials_has(&sp, a->content));
        cJSON_AddBoolToObject(t, "lstrip", a->lstrip);
        cJSON_AddBoolToObject(t, "rstrip", a->rstrip);
        cJSON_AddBoolToObject(t, "single_word", a->single_word);
        cJSON_AddItemToArray(added_arr, t);
    }

    /* --- the tree: Qwen2Converter's pipeline --- */
    root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "added_tokens", added_arr);
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "NFC");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *steps = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *split = cJSON_CreateObject();
    cJSON_AddStringToObject(split, "type", "Split");
    cJSON *pattern = cJSON_AddObjectToObject(split, "pattern");
    cJSON_AddStringToObject(pattern, "Regex", SLOWTOK_QWEN2_REGEX);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    cJSON_AddItemToArray(steps, split);
    cJSON *bl = cJSON_CreateObject();
    cJSON_AddStringToObject(bl, "type", "ByteLevel");
    cJSON_AddFalseToObject(bl, "add_prefix_space");
    cJSON_AddFalseToObject(bl, "use_regex");
    cJSON_AddItemToArray(steps, bl);
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    vocab = merges = NULL;
    *out = root;
    *merge_line = lines;
    lines = NULL;
done:
    for (size_t k = 0; k < al.n; k++) free(al.v[k].content);
    free(al.v);
    free(keys);
    free(lines);
    cJSON_Delete(vocab);
    cJSON_Delete(merges);
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    cJSON_Delete(added_json);
    return rc;
}
