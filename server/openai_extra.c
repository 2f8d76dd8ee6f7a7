/*
 * openai_extra.c: the request fields that came after the core chat / completions set:
 * completions batches (a list of prompts), logit_bias, echo, prompt_logprobs, suffix, and
 * vLLM's extras (return_token_ids, return_tokens_as_token_ids, include_reasoning,
 * truncate_prompt_tokens, stream_options.continuous_usage_stats). Same conventions as
 * openai.c: null is absent, a bad value is a 400 whose param names the field. What each
 * field does and how it differs from vLLM: docs/HTTP.md.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai.h"

static const cJSON *field(const cJSON *obj, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

static int bad(struct vlm_err *err, const char *param, const char *want)
{
    return vlm_err_param(err, VLM_EINVAL, 400, param, "'%s' must be %s", param, want);
}

static int oom(struct vlm_err *err)
{
    return vlm_err_set(err, VLM_ENOMEM, 503, "out of memory while parsing the request");
}

static bool is_int(const cJSON *f, double lo, double hi)
{
    if (!cJSON_IsNumber(f)) return false;
    double v = f->valuedouble;
    return isfinite(v) && v == floor(v) && v >= lo && v <= hi;
}

static int opt_bool(const cJSON *obj, const char *name, const char *param, bool *out,
                    struct vlm_err *err)
{
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return bad(err, param, "a boolean");
    *out = cJSON_IsTrue(f);
    return 0;
}

/* ==== Completions prompts ====
 * "prompt": a string, a list of strings, a list of token ids, or a list of token-id lists
 * (vLLM's four forms). Each entry becomes one struct oai_prompt. */

static int add_ids(const cJSON *arr, const char *param, int32_t vocab, struct oai_prompt *p,
                   struct vlm_err *err)
{
    int n = cJSON_GetArraySize(arr);
    if (n == 0) return bad(err, param, "a non-empty list of token ids");
    p->ids = trymalloc(sizeof(int32_t) * (size_t)n);
    if (!p->ids) return oom(err);
    for (const cJSON *e = arr->child; e; e = e->next) {
        if (!is_int(e, 0, vocab > 0 ? vocab - 1 : INT32_MAX))
            return vlm_err_param(err, VLM_EINVAL, 400, param,
                                 "'%s' must hold token ids in [0, %d)", param, (int)vocab);
        p->ids[p->n_ids++] = (int32_t)e->valuedouble;
    }
    return 0;
}

int oai_parse_prompts(const cJSON *root, struct oai_request *r, const struct oai_limits *lim,
                      struct vlm_err *err)
{
    const cJSON *p = field(root, "prompt");
    if (!p) return vlm_err_param(err, VLM_EINVAL, 400, "prompt", "'prompt' is required");
    const char *want = "a string, a list of strings, a list of token ids or a list of "
                       "token-id lists";
    if (!cJSON_IsString(p) && !cJSON_IsArray(p)) return bad(err, "prompt", want);
    bool one = cJSON_IsString(p) || (p->child && cJSON_IsNumber(p->child));
    int n = one ? 1 : cJSON_GetArraySize(p);
    if (n == 0) return bad(err, "prompt", "a non-empty string or list");
    if (n > OAI_MAX_PROMPTS)
        return vlm_err_param(err, VLM_EINVAL, 400, "prompt",
                             "'prompt' may hold at most %d prompts", OAI_MAX_PROMPTS);
    r->prompts = trycalloc((size_t)n, sizeof *r->prompts);
    if (!r->prompts) return oom(err);
    const cJSON *e = one ? p : p->child;
    bool strings = cJSON_IsString(e);
    char param[32];
    for (int32_t i = 0; i < n; i++, e = e->next) {
        struct oai_prompt *q = &r->prompts[i];
        r->n_prompts = i + 1;
        if (one) snprintf(param, sizeof param, "prompt");
        else snprintf(param, sizeof param, "prompt[%d]", (int)i);
        if (!one && (strings ? !cJSON_IsString(e) : !cJSON_IsArray(e)))
            return bad(err, "prompt", want); /* no mixing of the forms */
        if (strings) {
            q->len = strlen(e->valuestring);
            q->text = trymalloc(q->len + 1);
            if (!q->text) return oom(err);
            memcpy(q->text, e->valuestring, q->len + 1);
        } else {
            int rc = add_ids(one ? p : e, param, lim->vocab_size, q, err);
            if (rc) return rc;
        }
    }
    return 0;
}

/* ==== logit_bias ====
 * {"<token id>": bias, ...}: keys are decimal token ids inside the vocabulary, values
 * numbers, clamped to [-100, 100] as vLLM does (SamplingParams). */

static int parse_logit_bias(const cJSON *root, struct oai_request *r, int32_t vocab,
                            struct vlm_err *err)
{
    const cJSON *lb = field(root, "logit_bias");
    if (!lb) return 0;
    if (!cJSON_IsObject(lb))
        return bad(err, "logit_bias", "an object mapping token ids to numbers");
    int n = cJSON_GetArraySize(lb);
    if (n == 0) return 0;
    r->bias_ids = trymalloc(sizeof(int32_t) * (size_t)n);
    r->bias = trymalloc(sizeof(float) * (size_t)n);
    if (!r->bias_ids || !r->bias) return oom(err);
    int32_t k = 0;
    char param[64];
    for (const cJSON *e = lb->child; e; e = e->next) {
        snprintf(param, sizeof param, "logit_bias.%.40s", e->string ? e->string : "");
        const char *s = e->string ? e->string : "";
        char *end = NULL;
        long long id = (s[0] >= '0' && s[0] <= '9') ? strtoll(s, &end, 10) : -1;
        if (id < 0 || !end || *end || id >= (long long)(vocab > 0 ? vocab : INT32_MAX))
            return vlm_err_param(err, VLM_EINVAL, 400, param,
                                 "'logit_bias' key '%.40s' is not a token id in [0, %d)", s,
                                 (int)vocab);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
            return bad(err, param, "a number in [-100, 100]");
        double v = e->valuedouble;
        r->bias_ids[k] = (int32_t)id;
        r->bias[k++] = (float)(v < -100 ? -100 : v > 100 ? 100 : v);
    }
    r->sp.n_bias = k;
    r->sp.bias_ids = r->bias_ids;
    r->sp.bias = r->bias;
    return 0;
}

/* ==== The rest ==== */

int oai_parse_extras(const cJSON *root, struct oai_request *r, const struct oai_limits *lim,
                     struct vlm_err *err)
{
    bool completion = r->kind == OAI_KIND_COMPLETION;
    int rc = parse_logit_bias(root, r, lim->vocab_size, err);
    if (rc) return rc;
    r->prompt_logprobs = -1;
    r->include_reasoning = true;
    if ((rc = opt_bool(root, "return_token_ids", "return_token_ids", &r->return_token_ids, err)) ||
        (rc = opt_bool(root, "return_tokens_as_token_ids", "return_tokens_as_token_ids",
                       &r->tokens_as_ids, err)) ||
        (rc = opt_bool(root, "include_reasoning", "include_reasoning", &r->include_reasoning,
                       err)))
        return rc;
    if ((rc = opt_bool(root, "echo", "echo", &r->echo, err))) return rc;
    if (!completion) { /* prefill: the conversation may end with an assistant message */
        if ((rc = opt_bool(root, "add_generation_prompt", "add_generation_prompt",
                           &r->add_generation_prompt, err)) ||
            (rc = opt_bool(root, "continue_final_message", "continue_final_message",
                           &r->continue_final, err)))
            return rc;
        if (r->continue_final && r->add_generation_prompt) /* vLLM's check */
            return vlm_err_param(err, VLM_EINVAL, 400, "continue_final_message",
                                 "Cannot set both 'continue_final_message' and "
                                 "'add_generation_prompt' to true");
    }
    const cJSON *suffix = field(root, "suffix");
    if (completion && suffix) {
        if (!cJSON_IsString(suffix)) return bad(err, "suffix", "a string");
        if (suffix->valuestring[0]) /* vLLM: 400 "suffix is not currently supported" */
            return vlm_err_param(err, VLM_EUNSUPPORTED, 400, "suffix",
                                 "suffix is not currently supported");
    }
    /* max_tokens 0: only to echo the prompt (vLLM generates one token and drops it) */
    if (r->max_tokens_zero && r->max_tokens == 0) {
        if (!(completion && r->echo))
            return vlm_err_param(err, VLM_EINVAL, 400, "max_tokens",
                                 "'max_tokens' must be at least 1 (0 only with 'echo')");
        r->echo_only = true;
        r->max_tokens = 1;
    }
    const cJSON *pl = field(root, "prompt_logprobs");
    if (pl) {
        if (!is_int(pl, 0, VLM_MAX_TOP_LOGPROBS))
            return bad(err, "prompt_logprobs", "an integer between 0 and 20");
        r->prompt_logprobs = (int32_t)pl->valuedouble;
        if (r->stream && r->prompt_logprobs > 0)
            return vlm_err_param(err, VLM_EINVAL, 400, "prompt_logprobs",
                                 "'prompt_logprobs' are not available when 'stream' is true");
    }
    /* completions echo with logprobs scores the prompt too (vLLM) */
    if (completion && r->echo && r->prompt_logprobs < 0 && r->logprobs)
        r->prompt_logprobs = r->top_logprobs;
    const cJSON *tp = field(root, "truncate_prompt_tokens");
    if (tp) {
        if (!is_int(tp, -1, 9.2e18) || tp->valuedouble == 0)
            return bad(err, "truncate_prompt_tokens", "-1 or an integer >= 1");
        double v = tp->valuedouble;
        if (lim->max_model_len > 0 && v > lim->max_model_len)
            return vlm_err_param(err, VLM_EINVAL, 400, "truncate_prompt_tokens",
                                 "'truncate_prompt_tokens' (%.0f) is greater than "
                                 "max_model_len (%d)", v, (int)lim->max_model_len);
        r->truncate_prompt_tokens = v < 0 ? lim->max_model_len : (int32_t)v;
    }
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!r->stream && cJSON_GetArraySize(so) > 0)
            return vlm_err_param(err, VLM_EINVAL, 400, "stream_options",
                                 "Stream options can only be defined when 'stream' is true");
        if ((rc = opt_bool(so, "continuous_usage_stats", "stream_options.continuous_usage_stats",
                           &r->continuous_usage, err)))
            return rc;
    }
    return 0;
}

void oai_extras_destroy(struct oai_request *r)
{
    for (int32_t i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    free(r->bias_ids);
    free(r->bias);
    free(r->request_id);
}
