/*
 * responses.c: the Responses API: request translation, the store, the response object and
 * its stream events. See responses.h.
 */
#include "server/responses.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonstrict.h"
#include "server/pyjson.h"

/* ==== The store ====
 * A doubly linked list in use order (head: most recent) and a hash table of chains for the
 * lookups. Each entry holds the response object (for GET) and the conversation as chat
 * messages (for previous_response_id); its bytes are the two texts and the id. */

struct resp_entry {
    char *id, *object, *history;     /* owned */
    size_t bytes;
    struct resp_entry *prev, *next;  /* use order */
    struct resp_entry *chain;        /* hash bucket */
};

struct resp_store {
    pthread_mutex_t mu;
    int32_t max_entries;
    int64_t max_bytes;
    int32_t n;
    int64_t bytes;
    struct resp_entry *head, *tail;
    struct resp_entry **buckets;     /* (n_buckets) */
    size_t n_buckets;
};

struct resp_store *resp_store_new(int32_t max_entries, int64_t max_bytes)
{
    struct resp_store *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->max_entries = max_entries > 0 ? max_entries : 0;
    s->max_bytes = max_bytes;
    s->n_buckets = 64;
    while ((int64_t)s->n_buckets < s->max_entries && s->n_buckets < (1u << 20)) s->n_buckets *= 2;
    s->buckets = xcalloc(s->n_buckets, sizeof *s->buckets);
    return s;
}

static void entry_free(struct resp_entry *e)
{
    free(e->id);
    free(e->object);
    free(e->history);
    free(e);
}

void resp_store_free(struct resp_store *s)
{
    if (!s) return;
    for (struct resp_entry *e = s->head, *next; e; e = next) {
        next = e->next;
        entry_free(e);
    }
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static struct resp_entry **bucket(struct resp_store *s, const char *id)
{
    return &s->buckets[vlm_hash64(id, strlen(id), 0x72657370ull) & (s->n_buckets - 1)];
}

static void unlink_use(struct resp_store *s, struct resp_entry *e)
{
    if (e->prev) e->prev->next = e->next;
    else s->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else s->tail = e->prev;
    e->prev = e->next = NULL;
}

static void link_front(struct resp_store *s, struct resp_entry *e)
{
    e->next = s->head;
    if (s->head) s->head->prev = e;
    s->head = e;
    if (!s->tail) s->tail = e;
}

/* Called with mu held. Removes e from both structures and frees it. */
static void remove_entry(struct resp_store *s, struct resp_entry *e)
{
    for (struct resp_entry **p = bucket(s, e->id); *p; p = &(*p)->chain)
        if (*p == e) {
            *p = e->chain;
            break;
        }
    unlink_use(s, e);
    s->n--;
    s->bytes -= (int64_t)e->bytes;
    entry_free(e);
}

static struct resp_entry *find(struct resp_store *s, const char *id)
{
    for (struct resp_entry *e = *bucket(s, id); e; e = e->chain)
        if (!strcmp(e->id, id)) return e;
    return NULL;
}

/* Takes object and history. An entry bigger than the whole budget is not kept. */
static void store_put(struct resp_store *s, const char *id, char *object, char *history)
{
    size_t bytes = strlen(id) + strlen(object) + strlen(history);
    if (!s || !s->max_entries || (int64_t)bytes > s->max_bytes) {
        free(object);
        free(history);
        return;
    }
    struct resp_entry *e = xcalloc(1, sizeof *e);
    e->id = xstrdup(id);
    e->object = object;
    e->history = history;
    e->bytes = bytes;
    pthread_mutex_lock(&s->mu);
    struct resp_entry *old = find(s, id);
    if (old) remove_entry(s, old);
    while (s->tail && (s->n + 1 > s->max_entries || s->bytes + (int64_t)bytes > s->max_bytes))
        remove_entry(s, s->tail);
    struct resp_entry **b = bucket(s, id);
    e->chain = *b;
    *b = e;
    link_front(s, e);
    s->n++;
    s->bytes += (int64_t)bytes;
    pthread_mutex_unlock(&s->mu);
}

/* A copy of one text of the entry (object or history), marking it used; NULL: not there. */
static char *store_copy(struct resp_store *s, const char *id, bool history)
{
    if (!s) return NULL;
    pthread_mutex_lock(&s->mu);
    struct resp_entry *e = find(s, id);
    char *out = NULL;
    if (e) {
        unlink_use(s, e);
        link_front(s, e);
        out = xstrdup(history ? e->history : e->object);
    }
    pthread_mutex_unlock(&s->mu);
    return out;
}

char *resp_store_get(struct resp_store *s, const char *id)
{
    return store_copy(s, id, false);
}

bool resp_store_delete(struct resp_store *s, const char *id)
{
    if (!s) return false;
    pthread_mutex_lock(&s->mu);
    struct resp_entry *e = find(s, id);
    if (e) remove_entry(s, e);
    pthread_mutex_unlock(&s->mu);
    return e != NULL;
}

char *resp_deleted_json(struct resp_store *s, const char *id)
{
    if (!resp_store_delete(s, id)) return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddBoolToObject(o, "deleted", true);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return js;
}

int32_t resp_store_count(struct resp_store *s)
{
    if (!s) return 0;
    pthread_mutex_lock(&s->mu);
    int32_t n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ==== Requests ==== */

enum item_kind { ITEM_REASONING, ITEM_MESSAGE, ITEM_CALL };

/* One output item, in output order. */
struct out_item {
    int kind;             /* enum item_kind */
    int32_t call;         /* ITEM_CALL: index into the calls */
    struct strbuf text;   /* reasoning / message text */
    char id[64];
};

struct resp_req {
    char id[48];          /* "resp_" + 32 hex digits */
    char hex[33];
    int64_t created;
    bool store, stream;
    cJSON *object;        /* owned: the response object's request-side fields, in order */
    cJSON *history;       /* owned: the conversation as chat messages, without instructions */
    char **src;           /* owned, (n_src): the Responses field of each chat message */
    int32_t n_src;
    char **img_src;       /* owned, (n_img): the Responses field of each image, in order */
    int32_t n_img;
    /* output */
    struct out_item *items;
    int32_t n_items, cap_items;
    int32_t n_msgs;       /* message items among them */
    /* streaming */
    int64_t seq;
    int32_t open;         /* the item still open (-1: none) */
    struct strbuf held;   /* content not yet in a message: whitespace only so far */
    int32_t calls_sent;
};

bool resp_streaming(const struct resp_req *rq)
{
    return rq->stream;
}

const char *resp_id(const struct resp_req *rq)
{
    return rq->id;
}

void resp_req_free(struct resp_req *rq)
{
    if (!rq) return;
    cJSON_Delete(rq->object);
    cJSON_Delete(rq->history);
    for (int32_t i = 0; i < rq->n_src; i++) free(rq->src[i]);
    free(rq->src);
    for (int32_t i = 0; i < rq->n_img; i++) free(rq->img_src[i]);
    free(rq->img_src);
    for (int32_t i = 0; i < rq->n_items; i++) sb_free(&rq->items[i].text);
    free(rq->items);
    sb_free(&rq->held);
    free(rq);
}

/* snprintf for field names (vlm_err keeps their first 47 bytes anyway). */
static void pfmt(char *p, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pfmt(char *p, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p, n, fmt, ap);
    va_end(ap);
}

static const cJSON *get(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

static int bad(struct vlm_err *err, const char *param, const char *fmt, const char *what)
{
    return vlm_err_param(err, VLM_EINVAL, 400, param, fmt, param, what);
}

static int bad_type(struct vlm_err *err, const char *param, const char *what)
{
    return bad(err, param, "'%s' must be %s", what);
}

static int unsupported(struct vlm_err *err, const char *param, const char *what)
{
    return bad(err, param, "'%s': %s is not supported by this server", what);
}

static void add_src(struct resp_req *rq, const char *src)
{
    rq->src = xrealloc(rq->src, sizeof *rq->src * (size_t)(rq->n_src + 1));
    rq->src[rq->n_src++] = xstrdup(src);
}

/* Media errors name the conversation's k-th image ("messages.image[k]", prep.c). */
static void add_img_src(struct resp_req *rq, const char *src)
{
    rq->img_src = xrealloc(rq->img_src, sizeof *rq->img_src * (size_t)(rq->n_img + 1));
    rq->img_src[rq->n_img++] = xstrdup(src);
}

/* A message's content: a string, or a list of input_text / output_text / refusal /
 * input_image parts -> chat parts, one for one (so "content[j]" names the same part). */
static int convert_content(struct resp_req *rq, const cJSON *content, const char *param,
                           cJSON **out, struct vlm_err *err)
{
    char p[96];
    if (cJSON_IsString(content)) {
        *out = cJSON_CreateString(content->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(content))
        return bad_type(err, param, "a string or an array of content parts");
    cJSON *parts = cJSON_CreateArray();
    *out = parts;
    int j = 0;
    for (const cJSON *c = content->child; c; c = c->next, j++) {
        pfmt(p, sizeof p, "%s[%d]", param, j);
        if (!cJSON_IsObject(c)) return bad_type(err, p, "an object");
        const cJSON *type = get(c, "type");
        pfmt(p, sizeof p, "%s[%d].type", param, j);
        if (!cJSON_IsString(type)) return bad_type(err, p, "a string");
        const char *t = type->valuestring;
        cJSON *part = cJSON_CreateObject();
        cJSON_AddItemToArray(parts, part);
        if (!strcmp(t, "input_text") || !strcmp(t, "output_text") || !strcmp(t, "refusal")) {
            const char *key = !strcmp(t, "refusal") ? "refusal" : "text";
            const cJSON *text = get(c, key);
            pfmt(p, sizeof p, "%s[%d].%s", param, j, key);
            if (!cJSON_IsString(text)) return bad_type(err, p, "a string");
            cJSON_AddStringToObject(part, "type", "text");
            cJSON_AddStringToObject(part, "text", text->valuestring);
        } else if (!strcmp(t, "input_image")) {
            const cJSON *url = get(c, "image_url"), *detail = get(c, "detail");
            if (get(c, "file_id")) {
                pfmt(p, sizeof p, "%s[%d].file_id", param, j);
                return unsupported(err, p, "an uploaded file");
            }
            pfmt(p, sizeof p, "%s[%d].image_url", param, j);
            if (!cJSON_IsString(url)) return bad_type(err, p, "a string (a URL or a data URL)");
            pfmt(p, sizeof p, "%s[%d].detail", param, j);
            if (detail && !(cJSON_IsString(detail) &&
                            (!strcmp(detail->valuestring, "auto") ||
                             !strcmp(detail->valuestring, "low") ||
                             !strcmp(detail->valuestring, "high") ||
                             !strcmp(detail->valuestring, "original"))))
                return bad_type(err, p, "\"auto\", \"low\", \"high\" or \"original\"");
            pfmt(p, sizeof p, "%s[%d].image_url", param, j);
            add_img_src(rq, p);
            cJSON_AddStringToObject(part, "type", "image_url");
            cJSON *iu = cJSON_AddObjectToObject(part, "image_url");
            cJSON_AddStringToObject(iu, "url", url->valuestring);
        } else {
            return unsupported(err, p, "this content part type");
        }
    }
    return 0;
}

/* A function_call item's fields, checked here (the chat parser would name the message). */
static int check_call(const cJSON *it, const char *param, struct vlm_err *err)
{
    char p[96];
    static const char *const keys[] = {"call_id", "name", "arguments"};
    for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
        const cJSON *v = get(it, keys[k]);
        pfmt(p, sizeof p, "%s.%s", param, keys[k]);
        if (!cJSON_IsString(v) || (k < 2 && !v->valuestring[0]))
            return bad_type(err, p, k < 2 ? "a non-empty string" : "a string");
    }
    const char *a = get(it, "arguments")->valuestring;
    if (pyjson_dumps(a, strlen(a), NULL)) {
        pfmt(p, sizeof p, "%s.arguments", param);
        return bad_type(err, p, "a JSON text");
    }
    return 0;
}

/* input (a string or a list of items) -> chat messages appended to msgs. */
static int convert_input(const cJSON *input, struct resp_req *rq, cJSON *msgs,
                         struct vlm_err *err)
{
    if (cJSON_IsString(input)) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "user");
        cJSON_AddStringToObject(m, "content", input->valuestring);
        cJSON_AddItemToArray(msgs, m);
        add_src(rq, "input");
        return 0;
    }
    if (!cJSON_IsArray(input)) return bad_type(err, "input", "a string or an array of items");
    char p[96];
    int i = 0, rc;
    cJSON *asst = NULL; /* the assistant message that function_call items join */
    for (const cJSON *it = input->child; it; it = it->next, i++) {
        pfmt(p, sizeof p, "input[%d]", i);
        if (!cJSON_IsObject(it)) return bad_type(err, p, "an object");
        const cJSON *type = get(it, "type"), *role = get(it, "role");
        const char *t = cJSON_IsString(type) ? type->valuestring : NULL;
        pfmt(p, sizeof p, "input[%d].type", i);
        if (type && !t) return bad_type(err, p, "a string");
        if (!t || !strcmp(t, "message")) {
            pfmt(p, sizeof p, "input[%d].role", i);
            const char *r = cJSON_IsString(role) ? role->valuestring : NULL;
            if (!r || (strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "system") &&
                       strcmp(r, "developer")))
                return bad_type(err, p, "\"user\", \"assistant\", \"system\" or \"developer\"");
            pfmt(p, sizeof p, "input[%d].content", i);
            cJSON *content = NULL;
            const cJSON *c = get(it, "content");
            if (!c) return bad_type(err, p, "a string or an array of content parts");
            rc = convert_content(rq, c, p, &content, err);
            if (rc) {
                cJSON_Delete(content);
                return rc;
            }
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", !strcmp(r, "developer") ? "system" : r);
            cJSON_AddItemToObject(m, "content", content);
            cJSON_AddItemToArray(msgs, m);
            pfmt(p, sizeof p, "input[%d]", i);
            add_src(rq, p);
            asst = !strcmp(r, "assistant") ? m : NULL;
        } else if (!strcmp(t, "function_call")) {
            pfmt(p, sizeof p, "input[%d]", i);
            if ((rc = check_call(it, p, err))) return rc;
            if (!asst) {
                asst = cJSON_CreateObject();
                cJSON_AddStringToObject(asst, "role", "assistant");
                cJSON_AddNullToObject(asst, "content");
                cJSON_AddItemToArray(msgs, asst);
                add_src(rq, p);
            }
            cJSON *calls = cJSON_GetObjectItemCaseSensitive(asst, "tool_calls");
            if (!calls) calls = cJSON_AddArrayToObject(asst, "tool_calls");
            cJSON *call = cJSON_CreateObject();
            cJSON_AddStringToObject(call, "id", get(it, "call_id")->valuestring);
            cJSON_AddStringToObject(call, "type", "function");
            cJSON *fn = cJSON_AddObjectToObject(call, "function");
            cJSON_AddStringToObject(fn, "name", get(it, "name")->valuestring);
            cJSON_AddStringToObject(fn, "arguments", get(it, "arguments")->valuestring);
            cJSON_AddItemToArray(calls, call);
        } else if (!strcmp(t, "function_call_output")) {
            const cJSON *cid = get(it, "call_id"), *output = get(it, "output");
            pfmt(p, sizeof p, "input[%d].call_id", i);
            if (!cJSON_IsString(cid) || !cid->valuestring[0])
                return bad_type(err, p, "a non-empty string");
            pfmt(p, sizeof p, "input[%d].output", i);
            if (!output) return bad_type(err, p, "a string or an array of content parts");
            cJSON *content = NULL;
            rc = convert_content(rq, output, p, &content, err);
            if (rc) {
                cJSON_Delete(content);
                return rc;
            }
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "tool");
            cJSON_AddStringToObject(m, "tool_call_id", cid->valuestring);
            cJSON_AddItemToObject(m, "content", content);
            cJSON_AddItemToArray(msgs, m);
            pfmt(p, sizeof p, "input[%d]", i);
            add_src(rq, p);
            asst = NULL;
        } else if (!strcmp(t, "reasoning")) {
            /* earlier thinking: the Qwen3 template drops it from earlier turns (docs/HTTP.md) */
        } else {
            return unsupported(err, p, "this input item type");
        }
    }
    return 0;
}

/* The chat request's "tools": each flat function tool {type, name, description,
 * parameters, strict} as {"type": "function", "function": {name, description, parameters}}
 * from the body's own text (the chat parser reads number literals as written). Checks what
 * the chat parser would name as "tools[i].function...". */
static int convert_tools(const cJSON *tools, struct pyjson_span body, struct strbuf *out,
                         struct vlm_err *err)
{
    char p[96];
    if (!cJSON_IsArray(tools)) return bad_type(err, "tools", "an array of tools");
    struct pyjson_span span, key, raw;
    struct pyjson_iter it;
    if (body.n >= 3 && !memcmp(body.s, "\xef\xbb\xbf", 3)) body.s += 3, body.n -= 3;
    if (!pyjson_member(body, "tools", &span) || !pyjson_iter_init(&it, span))
        return bad_type(err, "tools", "an array of tools");
    sb_puts(out, "[");
    int i = 0;
    for (const cJSON *t = tools->child; t; t = t->next, i++) {
        pfmt(p, sizeof p, "tools[%d]", i);
        if (!cJSON_IsObject(t)) return bad_type(err, p, "an object");
        const cJSON *type = get(t, "type"), *name = get(t, "name"), *desc = get(t, "description"),
                    *params = get(t, "parameters"), *strict = get(t, "strict");
        pfmt(p, sizeof p, "tools[%d].type", i);
        if (!cJSON_IsString(type)) return bad_type(err, p, "a string");
        if (strcmp(type->valuestring, "function"))
            return unsupported(err, p, "a tool type other than \"function\"");
        pfmt(p, sizeof p, "tools[%d].name", i);
        if (!cJSON_IsString(name) || !name->valuestring[0])
            return bad_type(err, p, "a non-empty string");
        pfmt(p, sizeof p, "tools[%d].description", i);
        if (desc && !cJSON_IsString(desc)) return bad_type(err, p, "a string");
        pfmt(p, sizeof p, "tools[%d].parameters", i);
        if (params && !cJSON_IsObject(params)) return bad_type(err, p, "an object");
        pfmt(p, sizeof p, "tools[%d].strict", i);
        if (strict && !cJSON_IsBool(strict)) return bad_type(err, p, "a boolean");
        pfmt(p, sizeof p, "tools[%d]", i);
        if (!pyjson_iter_next(&it, &key, &raw)) return bad_type(err, p, "valid JSON");
        struct pyjson_span v;
        sb_puts(out, i ? ", {\"type\": \"function\", \"function\": {"
                       : "{\"type\": \"function\", \"function\": {");
        static const char *const keys[] = {"name", "description", "parameters"};
        bool first = true;
        for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
            if (!pyjson_member(raw, keys[k], &v) || (v.n == 4 && !memcmp(v.s, "null", 4)))
                continue;
            sb_printf(out, "%s\"%s\": ", first ? "" : ", ", keys[k]);
            sb_append(out, v.s, v.n);
            first = false;
        }
        sb_puts(out, "}}");
    }
    sb_puts(out, "]");
    return 0;
}

/* tool_choice: "auto" | "none" | "required" | {"type": "function", "name"}. */
static int convert_tool_choice(const cJSON *tc, cJSON *chat, struct vlm_err *err)
{
    if (cJSON_IsString(tc)) {
        const char *c = tc->valuestring;
        if (strcmp(c, "auto") && strcmp(c, "none") && strcmp(c, "required"))
            return bad_type(err, "tool_choice", "\"auto\", \"none\", \"required\" or a function");
        cJSON_AddStringToObject(chat, "tool_choice", c);
        return 0;
    }
    if (!cJSON_IsObject(tc))
        return bad_type(err, "tool_choice", "\"auto\", \"none\", \"required\" or a function");
    const cJSON *type = get(tc, "type"), *name = get(tc, "name");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "function"))
        return unsupported(err, "tool_choice.type", "a choice other than \"function\"");
    if (!cJSON_IsString(name) || !name->valuestring[0])
        return bad_type(err, "tool_choice.name", "a non-empty string");
    cJSON *o = cJSON_AddObjectToObject(chat, "tool_choice");
    cJSON_AddStringToObject(o, "type", "function");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "function"), "name", name->valuestring);
    return 0;
}

/* text.format -> response_format. */
static int convert_text(const cJSON *text, cJSON *chat, struct vlm_err *err)
{
    if (!cJSON_IsObject(text)) return bad_type(err, "text", "an object");
    const cJSON *fmt = get(text, "format");
    if (!fmt) return 0;
    if (!cJSON_IsObject(fmt)) return bad_type(err, "text.format", "an object");
    const cJSON *type = get(fmt, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (!strcmp(t, "text")) return 0;
    cJSON *rf = cJSON_AddObjectToObject(chat, "response_format");
    if (!strcmp(t, "json_object")) {
        cJSON_AddStringToObject(rf, "type", "json_object");
        return 0;
    }
    if (strcmp(t, "json_schema"))
        return bad_type(err, "text.format.type", "\"text\", \"json_object\" or \"json_schema\"");
    cJSON_AddStringToObject(rf, "type", "json_schema");
    cJSON *js = cJSON_AddObjectToObject(rf, "json_schema");
    static const char *const keys[] = {"name", "description", "schema", "strict"};
    for (size_t k = 0; k < ARRAY_LEN(keys); k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(fmt, keys[k]);
        if (v) cJSON_AddItemToObject(js, keys[k], cJSON_Duplicate(v, true));
    }
    return 0;
}

static void new_id(struct resp_req *rq)
{
    static _Atomic uint64_t counter;
    uint64_t n = atomic_fetch_add(&counter, 1);
    uint64_t a = vlm_hash64(&n, sizeof n, vlm_now_ns());
    uint64_t b = vlm_mix64(a ^ (uint64_t)vlm_wall_s() ^ (n << 32));
    snprintf(rq->hex, sizeof rq->hex, "%016" PRIx64 "%016" PRIx64, a, b);
    snprintf(rq->id, sizeof rq->id, "resp_%s", rq->hex);
}

static cJSON *dup_or_null(const cJSON *v)
{
    return v ? cJSON_Duplicate(v, true) : cJSON_CreateNull();
}

/* The request-side fields of the response object, in the order OpenAI writes them; status,
 * output, usage and the end fields are filled in by render(). */
static cJSON *object_template(const struct resp_req *rq, const cJSON *root, const char *model)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", rq->id);
    cJSON_AddStringToObject(o, "object", "response");
    cJSON_AddNumberToObject(o, "created_at", (double)rq->created);
    cJSON_AddStringToObject(o, "status", "in_progress");
    cJSON_AddFalseToObject(o, "background");
    cJSON_AddNullToObject(o, "completed_at");
    cJSON_AddNullToObject(o, "error");
    cJSON_AddNullToObject(o, "incomplete_details");
    cJSON_AddItemToObject(o, "instructions", dup_or_null(get(root, "instructions")));
    cJSON_AddItemToObject(o, "max_output_tokens", dup_or_null(get(root, "max_output_tokens")));
    const cJSON *md = get(root, "metadata");
    cJSON_AddItemToObject(o, "metadata", md ? cJSON_Duplicate(md, true) : cJSON_CreateObject());
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddArrayToObject(o, "output");
    const cJSON *ptc = get(root, "parallel_tool_calls");
    cJSON_AddBoolToObject(o, "parallel_tool_calls", !ptc || cJSON_IsTrue(ptc));
    cJSON_AddItemToObject(o, "previous_response_id",
                          dup_or_null(get(root, "previous_response_id")));
    const cJSON *rs = get(root, "reasoning");
    cJSON *r = cJSON_AddObjectToObject(o, "reasoning");
    cJSON_AddItemToObject(r, "effort", dup_or_null(rs ? get(rs, "effort") : NULL));
    cJSON_AddItemToObject(r, "summary", dup_or_null(rs ? get(rs, "summary") : NULL));
    cJSON_AddBoolToObject(o, "store", rq->store);
    const cJSON *temp = get(root, "temperature"), *top_p = get(root, "top_p");
    cJSON_AddItemToObject(o, "temperature", temp ? cJSON_Duplicate(temp, true)
                                                 : cJSON_CreateNumber(1.0));
    const cJSON *text = get(root, "text");
    if (text && get(text, "format")) {
        cJSON_AddItemToObject(o, "text", cJSON_Duplicate(text, true));
    } else {
        cJSON *t = cJSON_AddObjectToObject(o, "text");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(t, "format"), "type", "text");
    }
    const cJSON *tc = get(root, "tool_choice");
    cJSON_AddItemToObject(o, "tool_choice", tc ? cJSON_Duplicate(tc, true)
                                               : cJSON_CreateString("auto"));
    const cJSON *tools = get(root, "tools");
    cJSON_AddItemToObject(o, "tools", tools ? cJSON_Duplicate(tools, true)
                                            : cJSON_CreateArray());
    cJSON_AddItemToObject(o, "top_p", top_p ? cJSON_Duplicate(top_p, true)
                                            : cJSON_CreateNumber(1.0));
    cJSON_AddStringToObject(o, "truncation", "disabled");
    cJSON_AddNullToObject(o, "usage");
    cJSON_AddItemToObject(o, "user", dup_or_null(get(root, "user")));
    return o;
}

/* Sampling and template fields a chat request takes as they are (vLLM's extras). */
static const char *const passthrough[] = {
    "model", "temperature", "top_p", "stream", "parallel_tool_calls", "seed", "top_k",
    "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty", "stop",
    "stop_token_ids", "ignore_eos", "skip_special_tokens", "logit_bias",
    "chat_template_kwargs", "mm_processor_kwargs", "include_reasoning"};

static int build(const cJSON *root, struct pyjson_span body, const struct oai_limits *lim,
                 struct resp_store *store, struct resp_req *rq, struct strbuf *chat_body,
                 struct vlm_err *err)
{
    const cJSON *v;
    /* fields of the Responses API this server does not do */
    static const char *const refused[] = {"background", "conversation", "prompt"};
    for (size_t k = 0; k < ARRAY_LEN(refused); k++)
        if ((v = get(root, refused[k])) && !cJSON_IsFalse(v))
            return unsupported(err, refused[k], "this field");
    if ((v = get(root, "truncation")) &&
        !(cJSON_IsString(v) && !strcmp(v->valuestring, "disabled")))
        return unsupported(err, "truncation", "a value other than \"disabled\"");
    static const char *const bools[] = {"store", "stream", "parallel_tool_calls"};
    for (size_t k = 0; k < ARRAY_LEN(bools); k++)
        if ((v = get(root, bools[k])) && !cJSON_IsBool(v)) return bad_type(err, bools[k], "a boolean");
    rq->store = !(v = get(root, "store")) || cJSON_IsTrue(v);
    rq->stream = (v = get(root, "stream")) && cJSON_IsTrue(v);
    if ((v = get(root, "instructions")) && !cJSON_IsString(v))
        return bad_type(err, "instructions", "a string");
    if ((v = get(root, "metadata"))) {
        if (!cJSON_IsObject(v) || cJSON_GetArraySize(v) > 16)
            return bad_type(err, "metadata", "an object of at most 16 strings");
        for (const cJSON *m = v->child; m; m = m->next)
            if (!cJSON_IsString(m) || strlen(m->string) > 64 || strlen(m->valuestring) > 512)
                return bad_type(err, "metadata",
                                "an object of strings (keys up to 64, values up to 512 bytes)");
    }
    if ((v = get(root, "user")) && !cJSON_IsString(v)) return bad_type(err, "user", "a string");
    if ((v = get(root, "include")) && !cJSON_IsArray(v))
        return bad_type(err, "include", "an array of strings");
    const cJSON *model = get(root, "model");
    if (model && !cJSON_IsString(model)) return bad_type(err, "model", "a string");
    const cJSON *input = get(root, "input");
    if (!input) return bad_type(err, "input", "a string or an array of items");
    const cJSON *prev = get(root, "previous_response_id");
    if (prev && !cJSON_IsString(prev)) return bad_type(err, "previous_response_id", "a string");

    cJSON *chat = cJSON_CreateObject();
    int rc = 0;
    for (size_t k = 0; k < ARRAY_LEN(passthrough); k++)
        if ((v = cJSON_GetObjectItemCaseSensitive(root, passthrough[k])))
            cJSON_AddItemToObject(chat, passthrough[k], cJSON_Duplicate(v, true));
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "max_output_tokens")))
        cJSON_AddItemToObject(chat, "max_tokens", cJSON_Duplicate(v, true));
    /* reasoning.effort "none" turns thinking off; any other effort turns it on
     * (chat_template_kwargs.enable_thinking, when given, decides) */
    if ((v = get(root, "reasoning"))) {
        static const char *const efforts[] = {"none", "minimal", "low", "medium", "high",
                                              "xhigh", "max"};
        const cJSON *e = cJSON_IsObject(v) ? get(v, "effort") : NULL, *s = NULL;
        if (!cJSON_IsObject(v)) {
            rc = bad_type(err, "reasoning", "an object");
            goto out;
        }
        size_t k = 0;
        if (e && cJSON_IsString(e))
            while (k < ARRAY_LEN(efforts) && strcmp(e->valuestring, efforts[k])) k++;
        if (e && (!cJSON_IsString(e) || k == ARRAY_LEN(efforts))) {
            rc = bad_type(err, "reasoning.effort",
                          "one of \"none\", \"minimal\", \"low\", \"medium\", \"high\", "
                          "\"xhigh\", \"max\"");
            goto out;
        }
        if ((s = get(v, "summary")) && !cJSON_IsString(s)) {
            rc = bad_type(err, "reasoning.summary", "a string");
            goto out;
        }
        cJSON *ctk = cJSON_GetObjectItemCaseSensitive(chat, "chat_template_kwargs");
        if (e && (!ctk || cJSON_IsObject(ctk))) {
            if (!ctk) ctk = cJSON_AddObjectToObject(chat, "chat_template_kwargs");
            if (!cJSON_GetObjectItemCaseSensitive(ctk, "enable_thinking"))
                cJSON_AddBoolToObject(ctk, "enable_thinking", strcmp(e->valuestring, "none"));
        }
    }
    if ((v = get(root, "text")) && (rc = convert_text(v, chat, err))) goto out;
    if ((v = get(root, "tool_choice")) && (rc = convert_tool_choice(v, chat, err))) goto out;

    /* the conversation: instructions, the previous response's conversation, the input */
    cJSON *msgs = cJSON_AddArrayToObject(chat, "messages");
    if ((v = get(root, "instructions"))) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", v->valuestring);
        cJSON_AddItemToArray(msgs, m);
        add_src(rq, "instructions");
    }
    rq->history = cJSON_CreateArray();
    if (prev) {
        char *h = store_copy(store, prev->valuestring, true);
        if (!h) {
            rc = vlm_err_param(err, VLM_ENOTFOUND, 404, "previous_response_id",
                               "Previous response with id '%.100s' not found.",
                               prev->valuestring);
            goto out;
        }
        cJSON *past = cJSON_Parse(h);
        free(h);
        for (cJSON *m = past ? past->child : NULL; m; m = m->next) {
            cJSON_AddItemToArray(rq->history, cJSON_Duplicate(m, true));
            cJSON_AddItemToArray(msgs, cJSON_Duplicate(m, true));
            add_src(rq, "previous_response_id");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
            for (const cJSON *part = cJSON_IsArray(content) ? content->child : NULL; part;
                 part = part->next)
                if (cJSON_GetObjectItemCaseSensitive(part, "image_url"))
                    add_img_src(rq, "previous_response_id");
        }
        cJSON_Delete(past);
    }
    int32_t first_new = cJSON_GetArraySize(msgs);
    if ((rc = convert_input(input, rq, msgs, err))) goto out;
    int32_t k = 0;
    for (cJSON *m = msgs->child; m; m = m->next, k++)
        if (k >= first_new) cJSON_AddItemToArray(rq->history, cJSON_Duplicate(m, true));

    /* the chat body: the object, then the tools from the body's text */
    char *s = cJSON_PrintUnformatted(chat);
    if (!s) {
        rc = vlm_err_set(err, VLM_ENOMEM, 503, "out of memory for the request");
        goto out;
    }
    size_t n = strlen(s);
    sb_append(chat_body, s, n - 1); /* without the closing brace */
    free(s);
    if ((v = get(root, "tools"))) {
        sb_puts(chat_body, ", \"tools\": ");
        if ((rc = convert_tools(v, body, chat_body, err))) goto out;
    }
    sb_puts(chat_body, "}");
    rq->object = object_template(rq, root, lim->model_name ? lim->model_name
                                         : model ? model->valuestring : "");
out:
    cJSON_Delete(chat);
    return rc;
}

int resp_parse(const char *body, size_t len, const struct oai_limits *lim,
               struct resp_store *store, struct oai_request *out, struct resp_req **rqp,
               struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    *rqp = NULL;
    if (len == 0)
        return vlm_err_set(err, VLM_EINVAL, 400, "the request body is empty (expected JSON)");
    cJSON *root = NULL;
    int rc = json_parse_strict(body, len, &root, err);
    if (rc) return rc;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vlm_err_set(err, VLM_EINVAL, 400, "the request body must be a JSON object");
    }
    const cJSON *model = get(root, "model");
    if (model && cJSON_IsString(model) && lim->model_name &&
        strcmp(model->valuestring, lim->model_name)) {
        rc = vlm_err_param(err, VLM_EINVAL, 404, "model", "The model `%.80s` does not exist.",
                           model->valuestring);
        cJSON_Delete(root);
        return rc;
    }
    struct resp_req *rq = xcalloc(1, sizeof *rq);
    rq->open = -1;
    rq->created = (int64_t)vlm_wall_s();
    new_id(rq);
    struct strbuf chat = {0};
    rc = build(root, (struct pyjson_span){body, len}, lim, store, rq, &chat, err);
    cJSON_Delete(root);
    if (!rc) {
        rc = oai_parse(OAI_KIND_CHAT, chat.s, chat.n, lim, out, err);
        if (rc) resp_map_err(rq, err);
    }
    sb_free(&chat);
    if (rc) {
        resp_req_free(rq);
        return rc;
    }
    *rqp = rq;
    return 0;
}

void resp_map_err(const struct resp_req *rq, struct vlm_err *err)
{
    char *p = err->param, out[sizeof err->param];
    int k = -1, used = 0;
    if (!strncmp(p, "messages[", 9) && sscanf(p + 9, "%d]%n", &k, &used) == 1 && k >= 0 &&
        k < rq->n_src) {
        const char *rest = p + 9 + used;
        const char *src = rq->src[k];
        /* a part of an input message keeps its place; a message built from other items
         * (tool calls, history) is named as a whole */
        bool keep = !strncmp(src, "input[", 6) && !strncmp(rest, ".content", 8);
        snprintf(out, sizeof out, "%s%s", src, keep ? rest : "");
        if (!strcmp(src, "instructions") || !strcmp(src, "input")) snprintf(out, sizeof out, "%s", src);
    } else if (!strncmp(p, "messages.image[", 15) && sscanf(p + 15, "%d", &k) == 1 && k >= 0 &&
               k < rq->n_img) {
        snprintf(out, sizeof out, "%s", rq->img_src[k]);
    } else if (!strcmp(p, "messages")) {
        snprintf(out, sizeof out, "input");
    } else if (!strcmp(p, "max_tokens")) {
        snprintf(out, sizeof out, "max_output_tokens");
    } else if (!strncmp(p, "tools[", 6) && strstr(p, "].function")) {
        const char *f = strstr(p, "].function");
        snprintf(out, sizeof out, "%.*s]%s", (int)(f - p), p, f + 10);
    } else if (!strncmp(p, "response_format", 15)) {
        const char *rest = p + 15;
        if (!strncmp(rest, ".json_schema", 12)) rest += 12;
        snprintf(out, sizeof out, "text.format%s", rest);
    } else if (!strncmp(p, "tool_choice.function", 20)) {
        snprintf(out, sizeof out, "tool_choice%s", p + 20);
    } else {
        return;
    }
    snprintf(err->param, sizeof err->param, "%s", out);
}

/* ==== Rendering ==== */

static struct out_item *add_item(struct resp_req *rq, int kind, int32_t call,
                                 const struct textout_call *calls)
{
    if (rq->n_items == rq->cap_items) {
        rq->cap_items = rq->cap_items ? rq->cap_items * 2 : 4;
        rq->items = xrealloc(rq->items, sizeof *rq->items * (size_t)rq->cap_items);
    }
    struct out_item *it = &rq->items[rq->n_items++];
    memset(it, 0, sizeof *it);
    it->kind = kind;
    it->call = call;
    if (kind == ITEM_REASONING) snprintf(it->id, sizeof it->id, "rs_%s", rq->hex);
    else if (kind == ITEM_MESSAGE && !rq->n_msgs++)
        snprintf(it->id, sizeof it->id, "msg_%s", rq->hex);
    else if (kind == ITEM_MESSAGE) /* text after tool calls (streaming only) */
        snprintf(it->id, sizeof it->id, "msg_%s_%d", rq->hex, (int)rq->n_items);
    else snprintf(it->id, sizeof it->id, "fc_%s_%d", rq->hex, (int)call);
    (void)calls;
    return it;
}

static const char *item_status(const struct resp_req *rq, int32_t i, const struct resp_result *res)
{
    return res && res->length && i == rq->n_items - 1 ? "incomplete" : "completed";
}

/* Output item i as it stands (status NULL: in progress, with empty text / arguments). */
static cJSON *item_json(const struct resp_req *rq, int32_t i, const struct textout_call *calls,
                        const char *status)
{
    const struct out_item *it = &rq->items[i];
    cJSON *o = cJSON_CreateObject();
    const char *text = status && it->text.s ? it->text.s : "";
    switch (it->kind) {
    case ITEM_REASONING: {
        cJSON_AddStringToObject(o, "id", it->id);
        cJSON_AddStringToObject(o, "type", "reasoning");
        cJSON_AddArrayToObject(o, "summary");
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        if (status) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "type", "reasoning_text");
            cJSON_AddStringToObject(c, "text", text);
            cJSON_AddItemToArray(content, c);
        }
        cJSON_AddStringToObject(o, "status", status ? status : "in_progress");
        break;
    }
    case ITEM_MESSAGE: {
        cJSON_AddStringToObject(o, "id", it->id);
        cJSON_AddStringToObject(o, "type", "message");
        cJSON_AddStringToObject(o, "role", "assistant");
        cJSON_AddStringToObject(o, "status", status ? status : "in_progress");
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        if (status) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "type", "output_text");
            cJSON_AddStringToObject(c, "text", text);
            cJSON_AddArrayToObject(c, "annotations");
            cJSON_AddArrayToObject(c, "logprobs");
            cJSON_AddItemToArray(content, c);
        }
        break;
    }
    default: {
        const struct textout_call *c = &calls[it->call];
        cJSON_AddStringToObject(o, "id", it->id);
        cJSON_AddStringToObject(o, "type", "function_call");
        cJSON_AddStringToObject(o, "status", status ? status : "in_progress");
        cJSON_AddStringToObject(o, "arguments", status ? c->arguments : "");
        cJSON_AddStringToObject(o, "call_id", c->id);
        cJSON_AddStringToObject(o, "name", c->name);
        break;
    }
    }
    return o;
}

/* The response object; res NULL: as it starts (in progress, no output). */
static cJSON *render(const struct resp_req *rq, const struct resp_result *res,
                     const struct textout_call *calls)
{
    cJSON *o = cJSON_Duplicate(rq->object, true);
    if (!res) return o;
    const char *status = res->failed ? "failed" : res->length ? "incomplete" : "completed";
    cJSON_ReplaceItemInObjectCaseSensitive(o, "status", cJSON_CreateString(status));
    if (!res->failed)
        cJSON_ReplaceItemInObjectCaseSensitive(o, "completed_at",
                                               cJSON_CreateNumber((double)vlm_wall_s()));
    if (res->failed) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "code", "server_error");
        cJSON_AddStringToObject(e, "message", res->failed);
        cJSON_ReplaceItemInObjectCaseSensitive(o, "error", e);
    }
    if (res->length) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "reason", "max_output_tokens");
        cJSON_ReplaceItemInObjectCaseSensitive(o, "incomplete_details", d);
    }
    cJSON *output = cJSON_GetObjectItemCaseSensitive(o, "output");
    for (int32_t i = 0; i < rq->n_items; i++)
        cJSON_AddItemToArray(output, item_json(rq, i, calls, item_status(rq, i, res)));
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "input_tokens", res->input_tokens);
    cJSON *d = cJSON_AddObjectToObject(u, "input_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", res->cached_tokens);
    cJSON_AddNumberToObject(d, "cache_write_tokens", 0);
    cJSON_AddNumberToObject(u, "output_tokens", res->output_tokens);
    d = cJSON_AddObjectToObject(u, "output_tokens_details");
    cJSON_AddNumberToObject(d, "reasoning_tokens", res->reasoning_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", res->input_tokens + res->output_tokens);
    cJSON_ReplaceItemInObjectCaseSensitive(o, "usage", u);
    return o;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

/* The conversation to store: the request's messages and the assistant's answer. */
static char *history_json(const struct resp_req *rq, const struct textout_call *calls,
                          int32_t n_calls)
{
    cJSON *h = cJSON_Duplicate(rq->history, true);
    struct strbuf text = {0};
    for (int32_t i = 0; i < rq->n_items; i++)
        if (rq->items[i].kind == ITEM_MESSAGE && rq->items[i].text.n)
            sb_append(&text, rq->items[i].text.s, rq->items[i].text.n);
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "assistant");
    if (n_calls && blank(text.s ? text.s : "", text.n)) cJSON_AddNullToObject(m, "content");
    else cJSON_AddStringToObject(m, "content", text.s ? text.s : "");
    if (n_calls) {
        cJSON *tc = cJSON_AddArrayToObject(m, "tool_calls");
        for (int32_t k = 0; k < n_calls; k++) {
            cJSON *c = cJSON_CreateObject();
            cJSON_AddStringToObject(c, "id", calls[k].id);
            cJSON_AddStringToObject(c, "type", "function");
            cJSON *f = cJSON_AddObjectToObject(c, "function");
            cJSON_AddStringToObject(f, "name", calls[k].name);
            cJSON_AddStringToObject(f, "arguments", calls[k].arguments);
            cJSON_AddItemToArray(tc, c);
        }
    }
    cJSON_AddItemToArray(h, m);
    sb_free(&text);
    char *s = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    return s;
}

static char *finish_object(struct resp_req *rq, struct resp_store *store,
                           const struct resp_result *res)
{
    cJSON *o = render(rq, res, res->calls);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (rq->store && !res->failed)
        store_put(store, rq->id, xstrdup(s), history_json(rq, res->calls, res->n_calls));
    return s;
}

char *resp_finish(struct resp_req *rq, struct resp_store *store, const struct resp_result *res)
{
    /* the items: the thinking, the answer (none when it is blank next to tool calls), the
     * calls */
    const char *content = res->content ? res->content : "";
    size_t n = strlen(content);
    if (res->reasoning && res->reasoning[0])
        sb_puts(&add_item(rq, ITEM_REASONING, 0, NULL)->text, res->reasoning);
    if (!(res->n_calls && blank(content, n))) {
        struct out_item *m = add_item(rq, ITEM_MESSAGE, 0, NULL);
        sb_append(&m->text, content, n);
    }
    for (int32_t k = 0; k < res->n_calls; k++) add_item(rq, ITEM_CALL, k, res->calls);
    return finish_object(rq, store, res);
}

/* ==== Stream events ==== */

/* "event: <type>\ndata: {"type", fields of ev..., "sequence_number"}\n\n"; takes ev. */
static void emit(struct strbuf *out, struct resp_req *rq, const char *type, cJSON *ev)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "type", type);
    for (cJSON *c = ev->child, *next; c; c = next) {
        next = c->next;
        cJSON_AddItemToObject(e, c->string, cJSON_DetachItemViaPointer(ev, c));
    }
    cJSON_Delete(ev);
    cJSON_AddNumberToObject(e, "sequence_number", (double)rq->seq++);
    char *s = cJSON_PrintUnformatted(e);
    cJSON_Delete(e);
    sb_printf(out, "event: %s\ndata: ", type);
    sb_puts(out, s);
    sb_puts(out, "\n\n");
    free(s);
}

static cJSON *ev_item(const struct resp_req *rq, int32_t i)
{
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "item_id", rq->items[i].id);
    cJSON_AddNumberToObject(ev, "output_index", i);
    return ev;
}

static cJSON *part_json(const struct out_item *it, bool final)
{
    cJSON *p = cJSON_CreateObject();
    bool r = it->kind == ITEM_REASONING;
    cJSON_AddStringToObject(p, "type", r ? "reasoning_text" : "output_text");
    cJSON_AddStringToObject(p, "text", final && it->text.s ? it->text.s : "");
    if (!r) {
        cJSON_AddArrayToObject(p, "annotations");
        cJSON_AddArrayToObject(p, "logprobs");
    }
    return p;
}

static void open_item(struct strbuf *out, struct resp_req *rq, int kind, int32_t call,
                      const struct textout_call *calls);

/* Closes the open item: its text's done events, its part's, the item's. */
static void close_item(struct strbuf *out, struct resp_req *rq, const struct textout_call *calls,
                       const struct resp_result *res)
{
    int32_t i = rq->open;
    if (i < 0) return;
    rq->open = -1;
    struct out_item *it = &rq->items[i];
    if (it->kind != ITEM_CALL) {
        bool r = it->kind == ITEM_REASONING;
        cJSON *ev = ev_item(rq, i);
        cJSON_AddNumberToObject(ev, "content_index", 0);
        cJSON_AddStringToObject(ev, "text", it->text.s ? it->text.s : "");
        if (!r) cJSON_AddArrayToObject(ev, "logprobs");
        emit(out, rq, r ? "response.reasoning_text.done" : "response.output_text.done", ev);
        ev = ev_item(rq, i);
        cJSON_AddNumberToObject(ev, "content_index", 0);
        cJSON_AddItemToObject(ev, "part", part_json(it, true));
        emit(out, rq, "response.content_part.done", ev);
    }
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddNumberToObject(ev, "output_index", i);
    cJSON_AddItemToObject(ev, "item", item_json(rq, i, calls, item_status(rq, i, res)));
    emit(out, rq, "response.output_item.done", ev);
}

static void open_item(struct strbuf *out, struct resp_req *rq, int kind, int32_t call,
                      const struct textout_call *calls)
{
    close_item(out, rq, calls, NULL);
    struct out_item *it = add_item(rq, kind, call, calls);
    int32_t i = rq->n_items - 1;
    rq->open = i;
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddNumberToObject(ev, "output_index", i);
    cJSON_AddItemToObject(ev, "item", item_json(rq, i, calls, NULL));
    emit(out, rq, "response.output_item.added", ev);
    if (kind != ITEM_CALL) {
        ev = ev_item(rq, i);
        cJSON_AddNumberToObject(ev, "content_index", 0);
        cJSON_AddItemToObject(ev, "part", part_json(it, false));
        emit(out, rq, "response.content_part.added", ev);
    }
}

static void text_delta(struct strbuf *out, struct resp_req *rq, const char *s, size_t n)
{
    struct out_item *it = &rq->items[rq->open];
    bool r = it->kind == ITEM_REASONING;
    sb_append(&it->text, s, n);
    cJSON *ev = ev_item(rq, rq->open);
    cJSON_AddNumberToObject(ev, "content_index", 0);
    cJSON *d = cJSON_CreateString("");
    free(d->valuestring);
    d->valuestring = xstrndup(s, n);
    cJSON_AddItemToObject(ev, "delta", d);
    if (!r) cJSON_AddArrayToObject(ev, "logprobs");
    emit(out, rq, r ? "response.reasoning_text.delta" : "response.output_text.delta", ev);
}

static bool open_is(const struct resp_req *rq, int kind)
{
    return rq->open >= 0 && rq->items[rq->open].kind == kind;
}

void resp_sse_begin(struct strbuf *out, struct resp_req *rq)
{
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddItemToObject(ev, "response", render(rq, NULL, NULL));
    emit(out, rq, "response.created", ev);
    ev = cJSON_CreateObject();
    cJSON_AddItemToObject(ev, "response", render(rq, NULL, NULL));
    emit(out, rq, "response.in_progress", ev);
}

void resp_sse_delta(struct strbuf *out, struct resp_req *rq, const char *reasoning,
                    size_t reasoning_len, const char *content, size_t content_len,
                    const struct textout_call *calls, int32_t n_calls)
{
    if (reasoning_len) {
        if (!open_is(rq, ITEM_REASONING)) open_item(out, rq, ITEM_REASONING, 0, calls);
        text_delta(out, rq, reasoning, reasoning_len);
    }
    if (content_len) {
        if (open_is(rq, ITEM_MESSAGE)) {
            text_delta(out, rq, content, content_len);
        } else {
            /* a message starts with its first text that is not whitespace (whitespace
             * before tool calls is no message, as in the non-streamed object) */
            sb_append(&rq->held, content, content_len);
            if (!blank(rq->held.s, rq->held.n)) {
                open_item(out, rq, ITEM_MESSAGE, 0, calls);
                text_delta(out, rq, rq->held.s, rq->held.n);
                rq->held.n = 0;
            }
        }
    }
    for (; rq->calls_sent < n_calls; rq->calls_sent++) {
        int32_t k = rq->calls_sent;
        open_item(out, rq, ITEM_CALL, k, calls);
        cJSON *ev = ev_item(rq, rq->open);
        cJSON_AddStringToObject(ev, "delta", calls[k].arguments);
        emit(out, rq, "response.function_call_arguments.delta", ev);
        ev = ev_item(rq, rq->open);
        cJSON_AddStringToObject(ev, "name", calls[k].name);
        cJSON_AddStringToObject(ev, "arguments", calls[k].arguments);
        emit(out, rq, "response.function_call_arguments.done", ev);
        rq->held.n = 0; /* whitespace before a call */
    }
}

void resp_sse_end(struct strbuf *out, struct resp_req *rq, struct resp_store *store,
                  const struct resp_result *res)
{
    if (!res->failed) {
        /* no message yet and no calls: the answer is this (maybe empty) text */
        bool any_msg = false;
        for (int32_t i = 0; i < rq->n_items; i++) any_msg |= rq->items[i].kind == ITEM_MESSAGE;
        if (!any_msg && !res->n_calls) {
            open_item(out, rq, ITEM_MESSAGE, 0, res->calls);
            if (rq->held.n) text_delta(out, rq, rq->held.s, rq->held.n);
        }
        close_item(out, rq, res->calls, res);
    }
    char *s = finish_object(rq, store, res);
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddItemToObject(ev, "response", cJSON_Parse(s));
    free(s);
    emit(out, rq, res->failed ? "response.failed"
                  : res->length ? "response.incomplete" : "response.completed", ev);
}

/* ==== On a chat session ==== */

/* Choice 0's result; usage as the chat response counts it. */
static struct resp_result result_of(const struct session *s)
{
    const struct sess_choice *h = &s->ch[0];
    bool cut = !h->stop_hit && h->state >= REQ_FINISHED_ABORT;
    return (struct resp_result){
        .reasoning = h->reasoning.s, .content = h->content.s, .calls = h->out.tools.calls,
        .n_calls = textout_n_calls(&h->out),
        .length = !h->stop_hit && h->state == REQ_FINISHED_LENGTH,
        .failed = !cut ? NULL
                  : h->state == REQ_FINISHED_ABORT ? "the request was aborted"
                                                   : "the engine failed while generating",
        .input_tokens = s->n_prompt, .output_tokens = h->n_tokens,
        .cached_tokens = h->state && !h->stop_hit ? h->usage.cached_tokens : 0,
        .reasoning_tokens = h->n_think};
}

void resp_pump_stream(struct resp_req *rq, struct resp_store *store, struct session *s,
                      struct strbuf *out)
{
    if (s->eof || s->n_ch < 1) return;
    struct sess_choice *h = &s->ch[0];
    if (!h->role_sent) resp_sse_begin(out, rq);
    h->role_sent = true;
    bool done = sess_pump(s);
    resp_sse_delta(out, rq, h->reasoning.s, h->reasoning.n, h->content.s, h->content.n,
                   h->out.tools.calls, textout_n_calls(&h->out));
    h->content.n = h->reasoning.n = 0;
    if (h->content.s) h->content.s[0] = 0;
    if (h->reasoning.s) h->reasoning.s[0] = 0;
    if (!done) return;
    struct resp_result res = result_of(s);
    resp_sse_end(out, rq, store, &res);
    s->eof = true;
    sess_record_finish(s);
}

char *resp_session_json(struct resp_req *rq, struct resp_store *store, struct session *s)
{
    struct resp_result res = result_of(s);
    return resp_finish(rq, store, &res);
}
