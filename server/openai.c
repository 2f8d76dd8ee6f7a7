/*
 * openai.c: request parsing and validation, response and chunk building, and the output
 * text pipeline (stop strings, <think> split). See openai.h for the contracts.
 */
#include "server/openai.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jsonstrict.h"
#include "server/pyjson.h"
#include "server/structured.h"
#include "server/utf8.h"

/* ==== Field access ====
 * Every accessor treats a JSON null like an absent field (clients send null for "unset"),
 * returns 1 when a value was read, 0 when absent, or VLM_EINVAL with err naming the field. */

static int bad_type(struct vlm_err *err, const char *param, const char *want)
{
    return vlm_err_param(err, VLM_EINVAL, 400, param, "'%s' must be %s", param, want);
}

static int bad_range(struct vlm_err *err, const char *param, const char *range)
{
    return vlm_err_param(err, VLM_EINVAL, 400, param, "'%s' must be %s", param, range);
}

static const cJSON *field(const cJSON *obj, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

static int get_bool(const cJSON *obj, const char *name, bool *out, struct vlm_err *err)
{
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return bad_type(err, name, "a boolean");
    *out = cJSON_IsTrue(f);
    return 1;
}

static int get_num(const cJSON *obj, const char *name, double lo, double hi, const char *range,
                   double *out, struct vlm_err *err)
{
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f)) return bad_type(err, name, "a number");
    double v = f->valuedouble;
    if (!isfinite(v) || v < lo || v > hi) return bad_range(err, name, range);
    *out = v;
    return 1;
}

static bool is_integer(const cJSON *f, double lo, double hi)
{
    if (!cJSON_IsNumber(f)) return false;
    double v = f->valuedouble;
    return isfinite(v) && v == floor(v) && v >= lo && v <= hi;
}

static int get_int(const cJSON *obj, const char *name, int64_t lo, int64_t hi, const char *range,
                   int64_t *out, struct vlm_err *err)
{
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f) || !is_integer(f, -9.3e18, 9.3e18))
        return bad_type(err, name, "an integer");
    double v = f->valuedouble;
    /* 2^63 rounds to (double)INT64_MAX: compare with it exactly, never cast past it */
    if (v < (double)lo || v > (double)hi || v >= 0x1p63) return bad_range(err, name, range);
    *out = (int64_t)v;
    return 1;
}

static char *dup_or_fail(const char *s, size_t n)
{
    char *d = trymalloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int oom(struct vlm_err *err)
{
    return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory while parsing the request");
}

/* ==== Messages ====
 * A message's content is a string, null (assistant turns), or a list of parts: text,
 * image_url ({"url": ...} or a bare string) and video_url. Text parts are joined with "\n"
 * (docs/MODEL.md, "OpenAI messages to prompt"); every image part is one marker bound to the next
 * media entry. */

static int add_media(struct oai_request *r, enum oai_media kind, const char *url,
                     const struct oai_limits *lim, const char *param, struct vlm_err *err)
{
    if (r->n_media >= lim->max_images)
        return vlm_err_param(err, VLM_EINVAL, 400, param,
                             "at most %d images per request", (int)lim->max_images);
    struct oai_media_ref *m = tryrealloc(r->media, sizeof *m * (size_t)(r->n_media + 1));
    if (!m) return oom(err);
    r->media = m;
    char *u = dup_or_fail(url, strlen(url));
    if (!u) return oom(err);
    m[r->n_media] = (struct oai_media_ref){.kind = kind, .url = u};
    r->n_media++;
    return 0;
}

/* The sampling options vLLM accepts for a video, from a video_url object or from
 * mm_processor_kwargs: num_frames (an integer >= 1) and fps (a number > 0). The server's
 * --video-max-frames bound is applied where the frames are sampled (server/prep.c). */
static int parse_video_opts(const cJSON *obj, struct oai_media_ref *m, const char *param,
                            struct vlm_err *err)
{
    char name[80];
    int64_t iv = 0;
    double dv = 0;
    int rc;
    snprintf(name, sizeof name, "%s.num_frames", param);
    if ((rc = get_int(obj, "num_frames", 1, INT32_MAX, "", &iv, err)) < 0)
        return bad_type(err, name, "an integer >= 1");
    if (rc) m->num_frames = (int32_t)iv;
    snprintf(name, sizeof name, "%s.fps", param);
    if ((rc = get_num(obj, "fps", 1e-3, 1000.0, "", &dv, err)) < 0)
        return bad_type(err, name, "a number in [0.001, 1000]");
    if (rc) m->fps = dv;
    return 0;
}

static int parse_part(const cJSON *part, int32_t mi, int32_t pi, struct oai_request *r,
                      struct oai_message *msg, struct strbuf *text, const struct oai_limits *lim,
                      struct vlm_err *err)
{
    char param[48];
    snprintf(param, sizeof param, "messages[%d].content[%d]", (int)mi, (int)pi);
    if (!cJSON_IsObject(part)) return bad_type(err, param, "an object");
    const cJSON *type = field(part, "type");
    if (!cJSON_IsString(type)) {
        snprintf(param, sizeof param, "messages[%d].content[%d].type", (int)mi, (int)pi);
        return bad_type(err, param, "a string");
    }
    const char *t = type->valuestring;
    if (!strcmp(t, "text")) {
        const cJSON *tx = field(part, "text");
        if (!cJSON_IsString(tx)) {
            snprintf(param, sizeof param, "messages[%d].content[%d].text", (int)mi, (int)pi);
            return bad_type(err, param, "a string");
        }
        if (text->n) sb_puts(text, "\n");
        sb_puts(text, tx->valuestring);
        return 0;
    }
    bool image = !strcmp(t, "image_url"), video = !strcmp(t, "video_url");
    if (image || video) {
        const cJSON *u = field(part, t), *obj = cJSON_IsObject(u) ? u : NULL;
        if (obj) u = field(obj, "url");
        snprintf(param, sizeof param, "messages[%d].content[%d].%s", (int)mi, (int)pi, t);
        if (!cJSON_IsString(u) || !u->valuestring[0])
            return bad_type(err, param, "an object with a non-empty \"url\" string");
        if (msg->role != OAI_ROLE_USER)
            return vlm_err_param(err, VLM_EINVAL, 400, param,
                                 "media parts are only allowed in user messages");
        int rc = add_media(r, video ? OAI_MEDIA_VIDEO : OAI_MEDIA_IMAGE, u->valuestring, lim,
                           param, err);
        if (rc) return rc;
        if (video && obj && (rc = parse_video_opts(obj, &r->media[r->n_media - 1], param, err)))
            return rc;
        msg->n_media++;
        if (!video) msg->n_images++;
        return 0;
    }
    snprintf(param, sizeof param, "messages[%d].content[%d].type", (int)mi, (int)pi);
    return vlm_err_param(err, VLM_EINVAL, 400, param,
                         "unsupported content part type '%.40s' (text, image_url)", t);
}

/* An assistant message's "tool_calls": [{"id"?, "type"?: "function", "function": {"name",
 * "arguments"?}}]. The arguments (a JSON string, as OpenAI clients send them; an object is
 * taken too) are parsed and kept as the template writes them back; empty or absent -> {},
 * as vLLM does. */
static int parse_tool_calls(const cJSON *m, int32_t mi, struct oai_message *msg,
                            struct vlm_err *err)
{
    const cJSON *tcs = field(m, "tool_calls");
    char param[96]; /* vlm_err keeps the first 47 bytes */
    snprintf(param, sizeof param, "messages[%d].tool_calls", (int)mi);
    if (!tcs) return 0;
    if (!cJSON_IsArray(tcs)) return bad_type(err, param, "an array");
    int n = cJSON_GetArraySize(tcs);
    if (n > OAI_MAX_TOOL_CALLS)
        return bad_range(err, param, "an array of at most 128 tool calls");
    if (n == 0) return 0;
    msg->tool_calls = trycalloc((size_t)n, sizeof *msg->tool_calls);
    if (!msg->tool_calls) return oom(err);
    int32_t k = 0;
    int rc = 0;
    for (const cJSON *tc = tcs->child; tc; tc = tc->next, k++) {
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d]", (int)mi, (int)k);
        if (!cJSON_IsObject(tc)) return bad_type(err, param, "an object");
        const cJSON *type = field(tc, "type"), *fn = field(tc, "function"), *id = field(tc, "id");
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d].type", (int)mi, (int)k);
        if (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "function")))
            return bad_type(err, param, "\"function\"");
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d].id", (int)mi, (int)k);
        if (id && !cJSON_IsString(id)) return bad_type(err, param, "a string");
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d].function", (int)mi, (int)k);
        if (!cJSON_IsObject(fn)) return bad_type(err, param, "an object");
        const cJSON *name = field(fn, "name"), *args = field(fn, "arguments");
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d].function.name", (int)mi, (int)k);
        if (!cJSON_IsString(name) || !name->valuestring[0])
            return bad_type(err, param, "a non-empty string");
        snprintf(param, sizeof param, "messages[%d].tool_calls[%d].function.arguments", (int)mi,
                 (int)k);
        struct strbuf a = {0};
        if (cJSON_IsString(args) && args->valuestring[0]) {
            rc = pyjson_dumps(args->valuestring, strlen(args->valuestring), &a);
        } else if (cJSON_IsObject(args)) { /* not OpenAI's type, but vLLM takes it */
            char *t = cJSON_PrintUnformatted(args);
            rc = t ? pyjson_dumps(t, strlen(t), &a) : VLM_ENOMEM;
            free(t);
        } else if (args && !cJSON_IsString(args)) {
            rc = VLM_EINVAL;
        } else {
            sb_puts(&a, "{}");
        }
        msg->tool_calls[k].arguments = a.s;
        msg->n_tool_calls = k + 1;
        if (rc == VLM_ENOMEM) return oom(err);
        if (rc) return bad_type(err, param, "a string holding JSON");
        msg->n_tool_calls = k + 1;
        msg->tool_calls[k].name = dup_or_fail(name->valuestring, strlen(name->valuestring));
        if (!msg->tool_calls[k].name) return oom(err);
    }
    return 0;
}

/* "tools", "tool_choice" and "parallel_tool_calls" (accepted; several calls are always
 * parsed). Each tool is validated as vLLM's pydantic model would and kept in the form the
 * template renders (chat_tool_json). */
static int parse_tools(const cJSON *root, struct pyjson_span body, struct oai_request *r,
                       struct vlm_err *err)
{
    const cJSON *tools = field(root, "tools"), *tc = field(root, "tool_choice");
    bool b = false;
    int rc = get_bool(root, "parallel_tool_calls", &b, err);
    if (rc < 0) return rc;
    r->tool_choice = OAI_TOOL_CHOICE_AUTO;
    if (tc) {
        const char *c = cJSON_IsString(tc) ? tc->valuestring : NULL;
        if (c && !strcmp(c, "none")) r->tool_choice = OAI_TOOL_CHOICE_NONE;
        else if (c && !strcmp(c, "auto")) r->tool_choice = OAI_TOOL_CHOICE_AUTO;
        else if (c && !strcmp(c, "required")) r->tool_choice = OAI_TOOL_CHOICE_REQUIRED;
        else if (cJSON_IsObject(tc)) r->tool_choice = OAI_TOOL_CHOICE_NAMED; /* structured.c */
        else
            return bad_type(err, "tool_choice",
                            "\"auto\", \"none\", \"required\" or a named function");
        if (!tools && r->tool_choice != OAI_TOOL_CHOICE_NONE)
            return vlm_err_param(err, VLM_EINVAL, 400, "tool_choice",
                                 "'tool_choice' requires 'tools' to be set");
    }
    if (!tools) return 0;
    if (!cJSON_IsArray(tools)) return bad_type(err, "tools", "an array of tools");
    int n = cJSON_GetArraySize(tools);
    if (n > OAI_MAX_TOOLS) return bad_range(err, "tools", "an array of at most 128 tools");
    if (n == 0) return 0;
    r->tools = trycalloc((size_t)n, sizeof *r->tools);
    if (!r->tools) return oom(err);
    /* the tools' own text, for their number literals (pyjson.h); cJSON has read the body
     * leniently, pyjson reads it strictly */
    struct pyjson_span span = {0}, key, raw;
    struct pyjson_iter it;
    if (body.n >= 3 && !memcmp(body.s, "\xef\xbb\xbf", 3)) body.s += 3, body.n -= 3;
    if (!pyjson_member(body, "tools", &span) || !pyjson_iter_init(&it, span))
        return vlm_err_param(err, VLM_EINVAL, 400, "tools", "'tools' is not valid JSON");
    char param[96]; /* vlm_err keeps the first 47 bytes */
    int32_t i = 0;
    for (const cJSON *t = tools->child; t; t = t->next, i++) {
        snprintf(param, sizeof param, "tools[%d]", (int)i);
        if (!cJSON_IsObject(t)) return bad_type(err, param, "an object");
        const cJSON *type = field(t, "type"), *fn = field(t, "function");
        snprintf(param, sizeof param, "tools[%d].type", (int)i);
        if (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "function")))
            return bad_type(err, param, "\"function\"");
        snprintf(param, sizeof param, "tools[%d].function", (int)i);
        if (!cJSON_IsObject(fn)) return bad_type(err, param, "an object");
        const cJSON *name = field(fn, "name"), *desc = field(fn, "description"),
                    *params = field(fn, "parameters");
        snprintf(param, sizeof param, "tools[%d].function.name", (int)i);
        if (!cJSON_IsString(name) || !name->valuestring[0])
            return bad_type(err, param, "a non-empty string");
        snprintf(param, sizeof param, "tools[%d].function.description", (int)i);
        if (desc && !cJSON_IsString(desc)) return bad_type(err, param, "a string");
        snprintf(param, sizeof param, "tools[%d].function.parameters", (int)i);
        if (params && !cJSON_IsObject(params)) return bad_type(err, param, "an object");
        struct strbuf s = {0};
        snprintf(param, sizeof param, "tools[%d]", (int)i);
        rc = pyjson_iter_next(&it, &key, &raw) ? pyjson_tool(raw, &s) : VLM_EINVAL;
        r->tools[i] = s.s;
        r->n_tools = i + 1;
        if (rc) return vlm_err_param(err, VLM_EINVAL, 400, param, "'%s' is not valid JSON", param);
    }
    return 0;
}

static int parse_messages(const cJSON *root, struct oai_request *r, const struct oai_limits *lim,
                          struct vlm_err *err)
{
    const cJSON *msgs = field(root, "messages");
    if (!msgs) return vlm_err_param(err, VLM_EINVAL, 400, "messages", "'messages' is required");
    if (!cJSON_IsArray(msgs)) return bad_type(err, "messages", "an array");
    int n = cJSON_GetArraySize(msgs);
    if (n == 0)
        return vlm_err_param(err, VLM_EINVAL, 400, "messages", "'messages' must not be empty");
    r->msgs = trycalloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return oom(err);
    char param[48];
    int32_t mi = 0;
    for (const cJSON *m = msgs->child; m; m = m->next, mi++) {
        struct oai_message *msg = &r->msgs[mi];
        r->n_msgs = mi + 1;
        snprintf(param, sizeof param, "messages[%d]", (int)mi);
        if (!cJSON_IsObject(m)) return bad_type(err, param, "an object");
        const cJSON *role = field(m, "role");
        snprintf(param, sizeof param, "messages[%d].role", (int)mi);
        if (!cJSON_IsString(role)) return bad_type(err, param, "a string");
        const char *rs = role->valuestring;
        if (!strcmp(rs, "system") || !strcmp(rs, "developer")) msg->role = OAI_ROLE_SYSTEM;
        else if (!strcmp(rs, "user")) msg->role = OAI_ROLE_USER;
        else if (!strcmp(rs, "assistant")) msg->role = OAI_ROLE_ASSISTANT;
        else if (!strcmp(rs, "tool")) msg->role = OAI_ROLE_TOOL;
        else if (rs[0]) msg->role = OAI_ROLE_OTHER; /* custom roles: vLLM passes them on */
        else return bad_type(err, param, "a non-empty string");
        int rc = 0;
        if (msg->role == OAI_ROLE_ASSISTANT && (rc = parse_tool_calls(m, mi, msg, err))) return rc;
        const cJSON *tcid = field(m, "tool_call_id");
        snprintf(param, sizeof param, "messages[%d].tool_call_id", (int)mi);
        if (msg->role == OAI_ROLE_TOOL && tcid && !cJSON_IsString(tcid))
            return bad_type(err, param, "a string");
        const cJSON *content = field(m, "content");
        struct strbuf text = {0};
        snprintf(param, sizeof param, "messages[%d].content", (int)mi);
        if (!content) {
            if (msg->role != OAI_ROLE_ASSISTANT)
                rc = vlm_err_param(err, VLM_EINVAL, 400, param, "'%s' is required", param);
        } else if (cJSON_IsString(content)) {
            sb_puts(&text, content->valuestring);
        } else if (cJSON_IsArray(content)) {
            int32_t pi = 0;
            for (const cJSON *p = content->child; p && !rc; p = p->next, pi++)
                rc = parse_part(p, mi, pi, r, msg, &text, lim, err);
        } else {
            rc = bad_type(err, param, "a string or an array of content parts");
        }
        if (rc) {
            sb_free(&text);
            return rc;
        }
        msg->text = text.s ? text.s : dup_or_fail("", 0);
        if (!msg->text) return oom(err);
    }
    return 0;
}

/* ==== Generation parameters ==== */

static int parse_stop(const cJSON *root, struct oai_request *r, struct vlm_err *err)
{
    const cJSON *stop = field(root, "stop");
    if (!stop) return 0;
    const cJSON *one = stop;
    if (cJSON_IsArray(stop)) {
        if (cJSON_GetArraySize(stop) > OAI_MAX_STOP)
            return bad_range(err, "stop", "a list of at most 16 strings");
        one = stop->child;
    } else if (!cJSON_IsString(stop)) {
        return bad_type(err, "stop", "a string or an array of strings");
    }
    for (; one; one = cJSON_IsArray(stop) ? one->next : NULL) {
        if (!cJSON_IsString(one)) return bad_type(err, "stop", "a string or an array of strings");
        size_t n = strlen(one->valuestring);
        if (n == 0) return bad_range(err, "stop", "made of non-empty strings");
        if (n > OAI_MAX_STOP_LEN) return bad_range(err, "stop", "made of strings of <= 256 bytes");
        char *s = dup_or_fail(one->valuestring, n);
        if (!s) return oom(err);
        r->stop[r->n_stop++] = s;
    }
    return 0;
}

static int parse_ids(const cJSON *arr, const char *param, int32_t vocab, int32_t **out,
                     int32_t *n, struct vlm_err *err)
{
    int cnt = cJSON_GetArraySize(arr);
    *out = trymalloc(sizeof(int32_t) * (size_t)(cnt > 0 ? cnt : 1));
    if (!*out) return oom(err);
    for (const cJSON *e = arr->child; e; e = e->next) {
        if (!is_integer(e, 0, vocab > 0 ? vocab - 1 : INT32_MAX))
            return vlm_err_param(err, VLM_EINVAL, 400, param,
                                 "'%s' must hold token ids in [0, %d)", param, (int)vocab);
        (*out)[(*n)++] = (int32_t)e->valuedouble;
    }
    return 0;
}

static int parse_sampling(const cJSON *root, struct oai_request *r, const struct oai_limits *lim,
                          struct vlm_err *err)
{
    int64_t iv = 0;
    double dv = 0;
    int rc;
    /* max_completion_tokens (the newer name) wins over max_tokens */
    const char *mt[] = {"max_tokens", "max_completion_tokens"};
    for (size_t i = 0; i < ARRAY_LEN(mt); i++) {
        if ((rc = get_int(root, mt[i], 0, INT32_MAX, "an integer >= 1", &iv, err)) < 0) return rc;
        if (rc && iv == 0 && r->kind != OAI_KIND_COMPLETION)
            return bad_range(err, mt[i], "an integer >= 1");
        if (rc) r->max_tokens = (int32_t)iv; /* 0: allowed with echo (openai_extra.c) */
        if (rc) r->max_tokens_zero = iv == 0;
    }
    if ((rc = get_num(root, "temperature", 0, 2, "between 0 and 2", &dv, err)) < 0) return rc;
    if (rc) r->sp.temperature = (float)dv;
    if ((rc = get_num(root, "top_p", 1e-9, 1, "in (0, 1]", &dv, err)) < 0) return rc;
    if (rc) r->sp.top_p = (float)dv;
    if ((rc = get_int(root, "top_k", -1, INT32_MAX, "-1, 0 (off) or a positive integer", &iv,
                      err)) < 0)
        return rc;
    if (rc) r->sp.top_k = iv < 0 ? 0 : (int32_t)iv;
    if ((rc = get_num(root, "min_p", 0, 1, "in [0, 1]", &dv, err)) < 0) return rc;
    if (rc) r->sp.min_p = (float)dv;
    if ((rc = get_num(root, "presence_penalty", -2, 2, "between -2 and 2", &dv, err)) < 0)
        return rc;
    if (rc) r->sp.presence_penalty = (float)dv;
    if ((rc = get_num(root, "frequency_penalty", -2, 2, "between -2 and 2", &dv, err)) < 0)
        return rc;
    if (rc) r->sp.frequency_penalty = (float)dv;
    if ((rc = get_num(root, "repetition_penalty", 1e-6, 10, "in (0, 10]", &dv, err)) < 0)
        return rc;
    if (rc) r->sp.repetition_penalty = (float)dv;
    if ((rc = get_int(root, "seed", INT64_MIN, INT64_MAX, "between -2^63 and 2^63 - 1", &iv,
                      err)) < 0)
        return rc;
    if (rc) {
        r->has_seed = true;
        r->sp.seed = (uint64_t)iv;
    }
    char nrange[48];
    snprintf(nrange, sizeof nrange, "between 1 and %d", (int)lim->max_n);
    if ((rc = get_int(root, "n", 1, lim->max_n, nrange, &iv, err)) < 0) return rc;
    if (rc) r->n = (int32_t)iv;
    if ((rc = parse_stop(root, r, err)) < 0) return rc;
    const cJSON *sti = field(root, "stop_token_ids");
    if (sti) {
        if (!cJSON_IsArray(sti) || cJSON_GetArraySize(sti) > VLM_MAX_STOP_IDS)
            return bad_type(err, "stop_token_ids", "an array of at most 16 token ids");
        for (const cJSON *e = sti->child; e; e = e->next) {
            if (!is_integer(e, 0, lim->vocab_size > 0 ? lim->vocab_size - 1 : INT32_MAX))
                return bad_range(err, "stop_token_ids", "made of valid token ids");
            r->stop_ids[r->n_stop_ids++] = (int32_t)e->valuedouble;
        }
    }
    if ((rc = get_bool(root, "ignore_eos", &r->ignore_eos, err)) < 0) return rc;
    if ((rc = get_bool(root, "skip_special_tokens", &r->skip_special_tokens, err)) < 0) return rc;
    if ((rc = get_bool(root, "stream", &r->stream, err)) < 0) return rc;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) return bad_type(err, "stream_options", "an object");
        if ((rc = get_bool(so, "include_usage", &r->include_usage, err)) < 0) {
            vlm_err_param(err, VLM_EINVAL, 400, "stream_options.include_usage",
                          "'stream_options.include_usage' must be a boolean");
            return rc;
        }
    }
    return 0;
}

static int parse_logprobs(const cJSON *root, struct oai_request *r, struct vlm_err *err)
{
    int rc;
    int64_t iv = 0;
    if (r->kind == OAI_KIND_CHAT) {
        if ((rc = get_bool(root, "logprobs", &r->logprobs, err)) < 0) return rc;
        if ((rc = get_int(root, "top_logprobs", 0, VLM_MAX_TOP_LOGPROBS, "between 0 and 20", &iv,
                          err)) < 0)
            return rc;
        if (rc) {
            if (!r->logprobs)
                return vlm_err_param(err, VLM_EINVAL, 400, "top_logprobs",
                                     "'top_logprobs' requires 'logprobs' to be true");
            r->top_logprobs = (int32_t)iv;
        }
    } else {
        if ((rc = get_int(root, "logprobs", 0, VLM_MAX_TOP_LOGPROBS, "between 0 and 20", &iv,
                          err)) < 0)
            return rc;
        if (rc) {
            r->logprobs = true;
            r->top_logprobs = (int32_t)iv;
        }
    }
    r->sp.logprobs = r->logprobs ? r->top_logprobs : -1;
    return 0;
}

static int parse_kwargs(const cJSON *root, struct oai_request *r, const struct oai_limits *lim,
                        struct vlm_err *err)
{
    int rc;
    const cJSON *ctk = field(root, "chat_template_kwargs");
    if (ctk) {
        if (!cJSON_IsObject(ctk)) return bad_type(err, "chat_template_kwargs", "an object");
        bool b = false;
        if ((rc = get_bool(ctk, "enable_thinking", &b, err)) < 0) {
            vlm_err_param(err, VLM_EINVAL, 400, "chat_template_kwargs.enable_thinking",
                          "'chat_template_kwargs.enable_thinking' must be a boolean");
            return rc;
        }
        if (rc) r->enable_thinking = b;
    }
    const cJSON *mm = field(root, "mm_processor_kwargs");
    if (mm) {
        if (!cJSON_IsObject(mm)) return bad_type(err, "mm_processor_kwargs", "an object");
        const char *names[2] = {"min_pixels", "max_pixels"};
        int32_t *dst[2] = {&r->min_pixels, &r->max_pixels};
        for (int i = 0; i < 2; i++) {
            int64_t v;
            char param[48];
            snprintf(param, sizeof param, "mm_processor_kwargs.%s", names[i]);
            if ((rc = get_int(mm, names[i], lim->min_pixels, lim->max_pixels, "", &v, err)) < 0)
                return vlm_err_param(err, VLM_EINVAL, 400, param,
                                     "'%s' must be an integer in [%d, %d]", param,
                                     (int)lim->min_pixels, (int)lim->max_pixels);
            if (rc) *dst[i] = (int32_t)v;
        }
        if (r->min_pixels && r->max_pixels && r->min_pixels > r->max_pixels)
            return vlm_err_param(err, VLM_EINVAL, 400, "mm_processor_kwargs.min_pixels",
                                 "'mm_processor_kwargs.min_pixels' must not exceed max_pixels");
        struct oai_media_ref v = {0};
        if ((rc = parse_video_opts(mm, &v, "mm_processor_kwargs", err))) return rc;
        r->num_frames = v.num_frames;
        r->fps = v.fps;
    }
    return 0;
}

/* tokenize "prompt": a string, or a list of token ids (completions: openai_extra.c). */
static int parse_prompt(const cJSON *root, struct oai_request *r, const struct oai_limits *lim,
                        struct vlm_err *err)
{
    const cJSON *p = field(root, "prompt");
    if (!p) return vlm_err_param(err, VLM_EINVAL, 400, "prompt", "'prompt' is required");
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child)) p = p->child;
    if (cJSON_IsString(p)) {
        r->prompt_len = strlen(p->valuestring);
        r->prompt = dup_or_fail(p->valuestring, r->prompt_len);
        return r->prompt ? 0 : oom(err);
    }
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0 && cJSON_IsNumber(p->child))
        return parse_ids(p, "prompt", lim->vocab_size, &r->prompt_ids, &r->n_prompt_ids, err);
    return bad_type(err, "prompt", "a non-empty string or a list of token ids");
}

int oai_parse(enum oai_kind kind, const char *body, size_t len, const struct oai_limits *lim,
              struct oai_request *out, struct vlm_err *err)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->n = 1;
    out->sp.temperature = 1.0f;
    out->sp.top_p = 1.0f;
    out->sp.repetition_penalty = 1.0f;
    out->sp.logprobs = -1;
    out->skip_special_tokens = true;
    out->enable_thinking = -1;
    out->add_generation_prompt = true;
    out->prompt_logprobs = -1;
    out->include_reasoning = true;
    if (len == 0)
        return vlm_err_set(err, VLM_EINVAL, 400, "the request body is empty (expected JSON)");
    cJSON *root = NULL;
    int rc = json_parse_strict(body, len, &root, err);
    if (rc) return rc;
    if (!cJSON_IsObject(root)) {
        rc = vlm_err_set(err, VLM_EINVAL, 400, "the request body must be a JSON object");
        goto done;
    }
    const cJSON *model = field(root, "model");
    if (model) {
        if (!cJSON_IsString(model)) {
            rc = bad_type(err, "model", "a string");
            goto done;
        }
        if (lim->model_name && strcmp(model->valuestring, lim->model_name)) {
            rc = vlm_err_param(err, VLM_EINVAL, 404, "model",
                               "The model `%.80s` does not exist.", model->valuestring);
            goto done;
        }
        if (!(out->model = dup_or_fail(model->valuestring, strlen(model->valuestring)))) {
            rc = oom(err);
            goto done;
        }
    }
    switch (kind) {
    case OAI_KIND_CHAT:
        if ((rc = parse_messages(root, out, lim, err)) < 0) goto done;
        if ((rc = parse_tools(root, (struct pyjson_span){body, len}, out, err)) < 0) goto done;
        if ((rc = parse_sampling(root, out, lim, err)) < 0) goto done;
        if ((rc = parse_logprobs(root, out, err)) < 0) goto done;
        if ((rc = parse_kwargs(root, out, lim, err)) < 0) goto done;
        rc = oai_parse_extras(root, out, lim, err);
        break;
    case OAI_KIND_COMPLETION:
        if ((rc = oai_parse_prompts(root, out, lim, err)) < 0) goto done;
        if ((rc = parse_sampling(root, out, lim, err)) < 0) goto done;
        if ((rc = parse_logprobs(root, out, err)) < 0) goto done;
        rc = oai_parse_extras(root, out, lim, err);
        break;
    case OAI_KIND_TOKENIZE:
        if (field(root, "messages")) {
            if ((rc = parse_messages(root, out, lim, err)) < 0) goto done;
            if ((rc = parse_tools(root, (struct pyjson_span){body, len}, out, err)) < 0)
                goto done;
            if ((rc = get_bool(root, "add_generation_prompt", &out->add_generation_prompt,
                               err)) < 0 ||
                (rc = get_bool(root, "continue_final_message", &out->continue_final, err)) < 0)
                goto done;
            rc = parse_kwargs(root, out, lim, err);
        } else {
            rc = parse_prompt(root, out, lim, err);
        }
        break;
    case OAI_KIND_DETOKENIZE: {
        const cJSON *t = field(root, "tokens");
        if (!t) rc = vlm_err_param(err, VLM_EINVAL, 400, "tokens", "'tokens' is required");
        else if (!cJSON_IsArray(t)) rc = bad_type(err, "tokens", "an array of token ids");
        else rc = parse_ids(t, "tokens", lim->vocab_size, &out->prompt_ids, &out->n_prompt_ids,
                            err);
        break;
    }
    }
    if (rc > 0) rc = 0;
    if (rc == 0 && (kind == OAI_KIND_CHAT || kind == OAI_KIND_COMPLETION)) {
        struct st_request st;
        rc = st_parse_request(root, kind == OAI_KIND_CHAT, &st, err);
        out->grammar = st.g;
        out->forced_tools = st.tool_calls;
    }
done:
    cJSON_Delete(root);
    if (rc < 0) oai_request_destroy(out);
    return rc;
}

void oai_request_destroy(struct oai_request *r)
{
    if (!r) return;
    free(r->model);
    for (int32_t i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].text);
        for (int32_t k = 0; k < r->msgs[i].n_tool_calls; k++) {
            free(r->msgs[i].tool_calls[k].name);
            free(r->msgs[i].tool_calls[k].arguments);
        }
        free(r->msgs[i].tool_calls);
    }
    for (int32_t i = 0; i < r->n_tools; i++) free(r->tools[i]);
    free(r->tools);
    free(r->msgs);
    for (int32_t i = 0; i < r->n_media; i++) free(r->media[i].url);
    free(r->media);
    free(r->prompt);
    free(r->prompt_ids);
    for (int32_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    oai_extras_destroy(r);
    grammar_release(r->grammar);
    enum oai_kind k = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = k;
}

/* ==== Errors ==== */

const char *oai_error_type(int http_status)
{
    switch (http_status) {
    case 400: case 404: case 405: case 413: case 422: return "invalid_request_error";
    case 401: return "authentication_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return "server_error";
    }
}

static const char *error_code(const struct vlm_err *e)
{
    switch (e->http_status) {
    case 401: return "invalid_api_key";
    case 404: return e->param[0] ? "model_not_found" : "not_found";
    case 405: return "method_not_allowed";
    case 413: return "request_too_large";
    case 429: return "rate_limit_exceeded";
    case 503: return "service_unavailable";
    case 400:
        if (e->code == VLM_ETOOBIG) return "context_length_exceeded";
        if (e->code == VLM_EUNSUPPORTED) return "unsupported_value";
        return e->param[0] ? "invalid_value" : "invalid_request";
    default: return "internal_error";
    }
}

static cJSON *error_object(const struct vlm_err *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *o = cJSON_AddObjectToObject(root, "error");
    struct strbuf msg = {0};
    utf8_sanitize(&msg, e->msg, strlen(e->msg));
    cJSON_AddStringToObject(o, "message", msg.s ? msg.s : "error");
    sb_free(&msg);
    cJSON_AddStringToObject(o, "type", oai_error_type(e->http_status));
    if (e->param[0]) cJSON_AddStringToObject(o, "param", e->param);
    else cJSON_AddNullToObject(o, "param");
    cJSON_AddStringToObject(o, "code", error_code(e));
    return root;
}

char *oai_error_json(const struct vlm_err *e)
{
    cJSON *root = error_object(e);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    VLM_ASSERT(s);
    return s;
}

/* ==== Responses ==== */

void oai_meta_init(struct oai_meta *m, enum oai_kind kind, const char *model, uint64_t uniq)
{
    m->kind = kind;
    m->created = (int64_t)vlm_wall_s();
    m->model = model;
    uint64_t h = vlm_hash64(&uniq, sizeof uniq, vlm_now_ns());
    snprintf(m->id, sizeof m->id, "%s-%016" PRIx64 "%08" PRIx64,
             kind == OAI_KIND_CHAT ? "chatcmpl" : "cmpl", h, uniq & 0xffffffffu);
}

/* A token as logprobs name it: its text (invalid UTF-8 replaced), or "token_id:N". */
static char *token_text(const struct tokenizer *tok, int32_t id, bool as_ids)
{
    struct strbuf s = {0};
    if (as_ids) {
        char b[32];
        snprintf(b, sizeof b, "token_id:%d", (int)id);
        sb_puts(&s, b);
        return s.s;
    }
    size_t n = 0;
    const char *b = tok_bytes(tok, id, &n);
    utf8_sanitize(&s, b ? b : "", b ? n : 0);
    if (!s.s) sb_puts(&s, "");
    return s.s;
}

static cJSON *token_entry(const struct tokenizer *tok, int32_t id, float lp, bool as_ids)
{
    cJSON *o = cJSON_CreateObject();
    size_t n = 0;
    char *t = token_text(tok, id, as_ids);
    /* bytes: the token's own bytes; vLLM's "token_id:N" form gives that string's bytes */
    const char *b = as_ids ? t : tok_bytes(tok, id, &n);
    if (as_ids) n = strlen(t);
    cJSON_AddStringToObject(o, "token", t);
    cJSON_AddNumberToObject(o, "logprob", isfinite(lp) ? lp : -9999.0);
    cJSON *bytes = cJSON_AddArrayToObject(o, "bytes");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)b[i]));
    free(t);
    return o;
}

void oai_logprob_add_chat(cJSON *arr, const struct tokenizer *tok, int32_t token, float logprob,
                          int32_t n_top, const int32_t *top_ids, const float *top_lp,
                          bool as_ids)
{
    cJSON *e = token_entry(tok, token, logprob, as_ids);
    cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
    for (int32_t i = 0; i < n_top; i++)
        cJSON_AddItemToArray(top, token_entry(tok, top_ids[i], top_lp[i], as_ids));
    cJSON_AddItemToArray(arr, e);
}

static void add_plp(cJSON *o, const struct tokenizer *tok, int32_t id, float lp, int32_t rank,
                    bool as_ids)
{
    char key[16];
    snprintf(key, sizeof key, "%d", (int)id);
    if (cJSON_GetObjectItemCaseSensitive(o, key)) return;
    cJSON *e = cJSON_AddObjectToObject(o, key);
    cJSON_AddNumberToObject(e, "logprob", isfinite(lp) ? lp : -9999.0);
    cJSON_AddNumberToObject(e, "rank", rank);
    char *t = token_text(tok, id, as_ids);
    cJSON_AddStringToObject(e, "decoded_token", t);
    free(t);
}

cJSON *oai_prompt_logprob_entry(const struct tokenizer *tok, int32_t token, float logprob,
                                int32_t rank, int32_t n_top, const int32_t *top_ids,
                                const float *top_lp, bool as_ids)
{
    cJSON *o = cJSON_CreateObject();
    add_plp(o, tok, token, logprob, rank, as_ids);
    for (int32_t i = 0; i < n_top; i++)
        if (top_ids[i] >= 0) add_plp(o, tok, top_ids[i], top_lp[i], i + 1, as_ids);
    return o;
}

cJSON *oai_logprobs_completion_new(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddArrayToObject(o, "tokens");
    cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON_AddArrayToObject(o, "top_logprobs");
    cJSON_AddArrayToObject(o, "text_offset");
    return o;
}

void oai_logprob_add_completion(cJSON *lp, const struct tokenizer *tok, int32_t token,
                                float logprob, int32_t n_top, const int32_t *top_ids,
                                const float *top_lp, int32_t text_offset, bool as_ids)
{
    char *s = token_text(tok, token, as_ids);
    cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "tokens"), cJSON_CreateString(s));
    free(s);
    cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "text_offset"), cJSON_CreateNumber(text_offset));
    if (isnan(logprob)) { /* the first prompt token: nothing to condition on */
        cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "token_logprobs"), cJSON_CreateNull());
        cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "top_logprobs"), cJSON_CreateNull());
        return;
    }
    cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "token_logprobs"),
                         cJSON_CreateNumber(isfinite(logprob) ? logprob : -9999.0));
    cJSON *top = cJSON_CreateObject();
    for (int32_t i = 0; i < n_top; i++) {
        char *ts = token_text(tok, top_ids[i], as_ids);
        if (!cJSON_GetObjectItemCaseSensitive(top, ts))
            cJSON_AddNumberToObject(top, ts, isfinite(top_lp[i]) ? top_lp[i] : -9999.0);
        free(ts);
    }
    cJSON_AddItemToArray(cJSON_GetObjectItem(lp, "top_logprobs"), top);
}

static void add_meta(cJSON *o, const struct oai_meta *m, bool chunk)
{
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "object",
                            m->kind == OAI_KIND_CHAT
                                ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "model", m->model);
}

static cJSON *usage_object(const struct oai_usage *u)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prompt_tokens", u->prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", u->completion_tokens);
    cJSON_AddNumberToObject(o, "total_tokens", u->prompt_tokens + u->completion_tokens);
    if (u->cached_tokens >= 0) {
        cJSON *d = cJSON_AddObjectToObject(o, "prompt_tokens_details");
        cJSON_AddNumberToObject(d, "cached_tokens", u->cached_tokens);
    }
    return o;
}

/* {["index",] "id", "type": "function", "function": {"name", "arguments"}}; index < 0: none */
static cJSON *tool_call_object(const struct textout_call *t, int32_t index)
{
    cJSON *o = cJSON_CreateObject();
    if (index >= 0) cJSON_AddNumberToObject(o, "index", index);
    cJSON_AddStringToObject(o, "id", t->id);
    cJSON_AddStringToObject(o, "type", "function");
    cJSON *f = cJSON_AddObjectToObject(o, "function");
    struct strbuf s = {0};
    utf8_sanitize(&s, t->name, strlen(t->name));
    cJSON_AddStringToObject(f, "name", s.s);
    s.n = 0;
    utf8_sanitize(&s, t->arguments, strlen(t->arguments));
    cJSON_AddStringToObject(f, "arguments", s.s);
    sb_free(&s);
    return o;
}

static void add_ids(cJSON *o, const char *name, const int32_t *ids, int32_t n)
{
    cJSON *a = cJSON_AddArrayToObject(o, name);
    for (int32_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
}

/* vLLM's stop_reason: the stop string, the stop token id, or null (EOS, length, ...) */
static void add_stop_reason(cJSON *c, const char *str, bool has_token, int32_t token)
{
    if (str) cJSON_AddStringToObject(c, "stop_reason", str);
    else if (has_token) cJSON_AddNumberToObject(c, "stop_reason", token);
    else cJSON_AddNullToObject(c, "stop_reason");
}

char *oai_response_json(const struct oai_meta *m, const struct oai_choice_out *ch, int32_t n,
                        const struct oai_usage *u)
{
    cJSON *root = cJSON_CreateObject();
    add_meta(root, m, false);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    for (int32_t i = 0; i < n; i++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", i);
        if (m->kind == OAI_KIND_CHAT) {
            cJSON *msg = cJSON_AddObjectToObject(c, "message");
            cJSON_AddStringToObject(msg, "role", "assistant");
            if (ch[i].content) cJSON_AddStringToObject(msg, "content", ch[i].content);
            else cJSON_AddNullToObject(msg, "content");
            if (ch[i].reasoning && ch[i].reasoning[0]) { /* both names vLLM has used */
                cJSON_AddStringToObject(msg, "reasoning_content", ch[i].reasoning);
                cJSON_AddStringToObject(msg, "reasoning", ch[i].reasoning);
            }
            cJSON *calls = cJSON_AddArrayToObject(msg, "tool_calls");
            for (int32_t k = 0; k < ch[i].n_tool_calls; k++)
                cJSON_AddItemToArray(calls, tool_call_object(&ch[i].tool_calls[k], -1));
        } else {
            cJSON_AddStringToObject(c, "text", ch[i].content ? ch[i].content : "");
        }
        if (ch[i].logprobs) {
            if (m->kind == OAI_KIND_CHAT) {
                cJSON *lp = cJSON_AddObjectToObject(c, "logprobs");
                cJSON_AddItemToObject(lp, "content", ch[i].logprobs);
            } else {
                cJSON_AddItemToObject(c, "logprobs", ch[i].logprobs);
            }
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
        cJSON_AddStringToObject(c, "finish_reason", ch[i].finish ? ch[i].finish : "stop");
        add_stop_reason(c, ch[i].stop_str, ch[i].has_stop_token, ch[i].stop_token);
        if (ch[i].token_ids) add_ids(c, "token_ids", ch[i].token_ids, ch[i].n_token_ids);
        if (m->kind != OAI_KIND_CHAT) {
            if (ch[i].prompt_logprobs) cJSON_AddItemToObject(c, "prompt_logprobs", ch[i].prompt_logprobs);
            if (ch[i].prompt_ids) add_ids(c, "prompt_token_ids", ch[i].prompt_ids, ch[i].n_prompt_ids);
        } else if (i > 0) {
            cJSON_Delete(ch[i].prompt_logprobs);
        }
        cJSON_AddItemToArray(choices, c);
    }
    if (m->kind == OAI_KIND_CHAT && n > 0) { /* vLLM: once, at the top level */
        if (ch[0].prompt_logprobs) cJSON_AddItemToObject(root, "prompt_logprobs", ch[0].prompt_logprobs);
        if (ch[0].prompt_ids) add_ids(root, "prompt_token_ids", ch[0].prompt_ids, ch[0].n_prompt_ids);
    }
    cJSON_AddItemToObject(root, "usage", usage_object(u));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    VLM_ASSERT(s);
    return s;
}

static void sse_emit(struct strbuf *out, cJSON *root)
{
    char *s = cJSON_PrintUnformatted(root);
    VLM_ASSERT(s);
    sb_puts(out, "data: ");
    sb_puts(out, s);
    sb_puts(out, "\n\n");
    free(s);
    cJSON_Delete(root);
}

static cJSON *string_n(const char *s, size_t n)
{
    char *d = xstrndup(s, n);
    cJSON *j = cJSON_CreateString(d);
    free(d);
    return j;
}

void oai_sse_chunk(struct strbuf *out, const struct oai_meta *m, int32_t index, const char *role,
                   const char *content, size_t content_len, const char *reasoning,
                   size_t reasoning_len, const char *finish, cJSON *logprobs)
{
    oai_sse_chunk_x(out, m, index, role, content, content_len, reasoning, reasoning_len, finish,
                    logprobs, NULL);
}

void oai_sse_chunk_x(struct strbuf *out, const struct oai_meta *m, int32_t index,
                     const char *role, const char *content, size_t content_len,
                     const char *reasoning, size_t reasoning_len, const char *finish,
                     cJSON *logprobs, const struct oai_chunk_extra *x)
{
    cJSON *root = cJSON_CreateObject();
    add_meta(root, m, true);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", index);
    if (m->kind == OAI_KIND_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (role) cJSON_AddStringToObject(d, "role", role);
        if (content) cJSON_AddItemToObject(d, "content", string_n(content, content_len));
        if (reasoning) {
            cJSON_AddItemToObject(d, "reasoning_content", string_n(reasoning, reasoning_len));
            cJSON_AddItemToObject(d, "reasoning", string_n(reasoning, reasoning_len));
        }
        if (logprobs) {
            cJSON *lp = cJSON_AddObjectToObject(c, "logprobs");
            cJSON_AddItemToObject(lp, "content", logprobs);
        } else {
            cJSON_AddNullToObject(c, "logprobs");
        }
    } else {
        cJSON_AddItemToObject(c, "text", string_n(content ? content : "", content ? content_len : 0));
        if (logprobs) cJSON_AddItemToObject(c, "logprobs", logprobs);
        else cJSON_AddNullToObject(c, "logprobs");
    }
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    if (x && finish) add_stop_reason(c, x->stop_str, x->has_stop_token, x->stop_token);
    if (x && x->token_ids) add_ids(c, "token_ids", x->token_ids, x->n_token_ids);
    if (x && x->prompt_ids) /* vLLM: in the choice for completions, at the top for chat */
        add_ids(m->kind == OAI_KIND_CHAT ? root : c, "prompt_token_ids", x->prompt_ids,
                x->n_prompt_ids);
    cJSON_AddItemToArray(choices, c);
    if (x && x->usage) cJSON_AddItemToObject(root, "usage", usage_object(x->usage));
    sse_emit(out, root);
}

void oai_sse_tool_calls(struct strbuf *out, const struct oai_meta *m, int32_t index,
                        const struct textout_call *calls, int32_t first, int32_t n,
                        const char *finish)
{
    cJSON *root = cJSON_CreateObject();
    add_meta(root, m, true);
    cJSON *choices = cJSON_AddArrayToObject(root, "choices");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", index);
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    cJSON *arr = cJSON_AddArrayToObject(d, "tool_calls");
    for (int32_t k = 0; k < n; k++)
        cJSON_AddItemToArray(arr, tool_call_object(&calls[first + k], first + k));
    cJSON_AddNullToObject(c, "logprobs");
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    cJSON_AddItemToArray(choices, c);
    sse_emit(out, root);
}

void oai_sse_usage(struct strbuf *out, const struct oai_meta *m, const struct oai_usage *u)
{
    cJSON *root = cJSON_CreateObject();
    add_meta(root, m, true);
    cJSON_AddArrayToObject(root, "choices");
    cJSON_AddItemToObject(root, "usage", usage_object(u));
    sse_emit(out, root);
}

void oai_sse_error(struct strbuf *out, const struct vlm_err *e)
{
    sse_emit(out, error_object(e));
}

void oai_sse_done(struct strbuf *out)
{
    sb_puts(out, "data: [DONE]\n\n");
}
