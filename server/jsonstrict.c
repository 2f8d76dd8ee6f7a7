/*
 * jsonstrict.c: a one-pass JSON grammar check (RFC 8259, with json.loads' choices) and the
 * duplicate-key pass over cJSON's tree. See jsonstrict.h.
 */
#include "server/jsonstrict.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ==== The grammar check ====
 * An explicit stack of open containers (no recursion, so depth costs no C stack); the scanner
 * reads one value at a time, then what may follow it in the enclosing container. */

struct scan {
    const char *s;
    size_t n, i;
    struct vlm_err *err;
};

static int bad(struct scan *p, const char *what)
{
    return vlm_err_set(p->err, VLM_EINVAL, 400, "invalid JSON in the request body: %s at byte %zu",
                       what, p->i);
}

static void skip_ws(struct scan *p)
{
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->i++;
    }
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* p->s[p->i] is the opening quote. */
static int scan_string(struct scan *p)
{
    p->i++;
    while (p->i < p->n) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            return 0;
        }
        if (c < 0x20) return bad(p, "a raw control character inside a string (escape it)");
        if (c != '\\') {
            p->i++;
            continue;
        }
        if (p->i + 1 >= p->n) break;
        char e = p->s[p->i + 1];
        if (e == 'u') {
            if (p->i + 6 > p->n) break;
            for (size_t k = 2; k < 6; k++)
                if (!is_hex(p->s[p->i + k])) return bad(p, "a bad \\u escape");
            if (!memcmp(p->s + p->i + 2, "0000", 4))
                return bad(p, "\\u0000 inside a string (NUL characters are not supported)");
            p->i += 6;
        } else if (strchr("\"\\/bfnrt", e) && e) {
            p->i += 2;
        } else {
            return bad(p, "an invalid escape in a string");
        }
    }
    return bad(p, "an unterminated string");
}

static int scan_number(struct scan *p)
{
    size_t i = p->i;
    if (i < p->n && p->s[i] == '-') i++;
    if (i >= p->n || !is_digit(p->s[i])) return bad(p, "a malformed number");
    if (p->s[i] == '0') i++;
    else while (i < p->n && is_digit(p->s[i])) i++;
    if (i < p->n && p->s[i] == '.') {
        i++;
        if (i >= p->n || !is_digit(p->s[i])) return bad(p, "a malformed number");
        while (i < p->n && is_digit(p->s[i])) i++;
    }
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
        i++;
        if (i < p->n && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->n || !is_digit(p->s[i])) return bad(p, "a malformed number");
        while (i < p->n && is_digit(p->s[i])) i++;
    }
    p->i = i;
    return 0;
}

static int scan_word(struct scan *p, const char *w)
{
    size_t k = strlen(w);
    if (p->n - p->i < k || memcmp(p->s + p->i, w, k)) return bad(p, "an unexpected character");
    p->i += k;
    return 0;
}

int json_check(const char *s, size_t n, struct vlm_err *err)
{
    struct scan p = {.s = s, .n = n, .err = err};
    char stack[JSONSTRICT_MAX_DEPTH]; /* '{' or '[' per open container */
    int depth = 0;
    int rc;
    for (;;) {
        /* a value */
        skip_ws(&p);
        if (p.i >= n) return bad(&p, "the body ends where a value was expected");
        char c = s[p.i];
        if (c == '{' || c == '[') {
            if (depth == JSONSTRICT_MAX_DEPTH) return bad(&p, "nesting too deep");
            stack[depth++] = c;
            p.i++;
            skip_ws(&p);
            if (p.i < n && s[p.i] == (c == '{' ? '}' : ']')) {
                p.i++;
                depth--;
                goto after_value;
            }
            if (c == '[') continue;
            goto object_key;
        }
        if (c == '"') rc = scan_string(&p);
        else if (c == '-' || is_digit(c)) rc = scan_number(&p);
        else if (c == 't') rc = scan_word(&p, "true");
        else if (c == 'f') rc = scan_word(&p, "false");
        else if (c == 'n') rc = scan_word(&p, "null");
        else rc = bad(&p, "an unexpected character");
        if (rc) return rc;
    after_value:
        skip_ws(&p);
        if (depth == 0) {
            if (p.i != n) return bad(&p, "extra data after the JSON value");
            return 0;
        }
        if (p.i >= n) return bad(&p, "the body ends inside an object or array");
        char close = stack[depth - 1] == '{' ? '}' : ']';
        if (s[p.i] == close) {
            p.i++;
            depth--;
            goto after_value;
        }
        if (s[p.i] != ',') return bad(&p, "a missing ',' or closing bracket");
        p.i++;
        if (stack[depth - 1] == '[') continue;
    object_key:
        skip_ws(&p);
        if (p.i >= n || s[p.i] != '"') return bad(&p, "an object key that is not a string");
        if ((rc = scan_string(&p))) return rc;
        skip_ws(&p);
        if (p.i >= n || s[p.i] != ':') return bad(&p, "a missing ':' after an object key");
        p.i++;
    }
}

/* ==== Duplicate keys ====
 * Per object, the members are sorted by key (ties by position), and every member but the
 * last of each key is removed: O(k log k) for k members, so a hostile object with many keys
 * costs no more than sorting them. */

struct member {
    cJSON *item;
    size_t pos;
};

static int member_cmp(const void *a, const void *b)
{
    const struct member *x = a, *y = b;
    int c = strcmp(x->item->string, y->item->string);
    if (c) return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int dedupe(cJSON *o, struct vlm_err *err)
{
    size_t k = 0;
    for (cJSON *c = o->child; c; c = c->next) {
        if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && dedupe(c, err)) return VLM_ENOMEM;
        k++;
    }
    if (!cJSON_IsObject(o) || k < 2) return 0;
    struct member *m = trymalloc(k * sizeof *m);
    if (!m) return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory while parsing the request");
    size_t i = 0;
    for (cJSON *c = o->child; c; c = c->next, i++) m[i] = (struct member){c, i};
    qsort(m, k, sizeof *m, member_cmp);
    for (i = 0; i + 1 < k; i++)
        if (!strcmp(m[i].item->string, m[i + 1].item->string))
            cJSON_Delete(cJSON_DetachItemViaPointer(o, m[i].item));
    free(m);
    return 0;
}

int json_parse_strict(const char *s, size_t n, cJSON **out, struct vlm_err *err)
{
    *out = NULL;
    int rc = json_check(s, n, err);
    if (rc) return rc;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!root) /* the grammar was fine: a \u escape cJSON refuses (a lone surrogate), or memory */
        return vlm_err_set(err, VLM_EINVAL, 400, "invalid JSON in the request body near byte %zu",
                           end ? (size_t)(end - s) : (size_t)0);
    if ((cJSON_IsObject(root) || cJSON_IsArray(root)) && (rc = dedupe(root, err))) {
        cJSON_Delete(root);
        return rc;
    }
    *out = root;
    return 0;
}
