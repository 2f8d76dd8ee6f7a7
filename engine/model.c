/*
 * model: config.json (+ generation_config.json) -> struct model_config, then every tensor
 * bound by name to a host view into the mapped safetensors files, with its shape checked
 * against the config. See model.h for the names and docs/MODEL.md, "Checkpoint layout" and
 * "Vision geometry in config.json" for the keys.
 */
#include "engine/model.h"

#include "engine/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define MODEL_VIT_PREFIX "model.qwen2vl_vision_tower."

/* ==== config.json ====
 * Keys are read one by one with a default (or "required"), a type check and bounds, so a
 * bad value fails with the key's name. The text keys are Qwen3's, at the top level; the
 * vision keys are under "vision_config" and fall back to the Qwen2-VL values (docs/MODEL.md,
 * "Vision tower"). */

struct cfg_ctx {
    const char *file;     /* "config.json", for messages */
    struct vlm_err *err;
    int rc;               /* first error; later reads are skipped */
};

/* o[key] as an integer in [lo, hi]; def when absent or null, unless required. */
static int32_t cfg_int(struct cfg_ctx *c, const cJSON *o, const char *key, bool required,
                       int64_t def, int64_t lo, int64_t hi)
{
    if (c->rc) return 0;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) {
        if (required) c->rc = vlm_err_set(c->err, VLM_EINVAL, 500, "%s: missing key \"%s\"", c->file, key);
        return (int32_t)def;
    }
    double v = cJSON_IsNumber(j) ? j->valuedouble : -1e300;
    if (!cJSON_IsNumber(j) || !(v >= (double)lo && v <= (double)hi) || v != (double)(int64_t)v) {
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "%s: \"%s\" must be an integer in [%lld, %lld]", c->file, key,
                            (long long)lo, (long long)hi);
        return 0;
    }
    return (int32_t)v;
}

/* o[key] as a number in (lo, hi]; def when absent or null. */
static double cfg_num(struct cfg_ctx *c, const cJSON *o, const char *key, double def, double lo,
                      double hi)
{
    if (c->rc) return 0;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return def;
    if (!cJSON_IsNumber(j) || !(j->valuedouble > lo && j->valuedouble <= hi)) {
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500, "%s: \"%s\" must be a number in (%g, %g]",
                            c->file, key, lo, hi);
        return 0;
    }
    return j->valuedouble;
}

static bool cfg_bool(struct cfg_ctx *c, const cJSON *o, const char *key, bool def)
{
    if (c->rc) return false;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return def;
    if (!cJSON_IsBool(j)) {
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500, "%s: \"%s\" must be true or false", c->file, key);
        return false;
    }
    return cJSON_IsTrue(j);
}

/* eos_token_id: an integer or a list of integers; appended to cfg->eos_token_ids without
 * duplicates. */
static void cfg_eos(struct cfg_ctx *c, const cJSON *o, struct model_config *cfg)
{
    if (c->rc) return;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, "eos_token_id");
    if (!j || cJSON_IsNull(j)) return;
    const cJSON *first = cJSON_IsArray(j) ? j->child : j;
    for (const cJSON *v = first; v; v = cJSON_IsArray(j) ? v->next : NULL) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= INT32_MAX) ||
            v->valuedouble != (double)(int32_t)v->valuedouble) {
            c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                                "%s: \"eos_token_id\" must be a token id or a list of them", c->file);
            return;
        }
        int32_t id = (int32_t)v->valuedouble;
        bool dup = false;
        for (int32_t i = 0; i < cfg->n_eos; i++) dup |= cfg->eos_token_ids[i] == id;
        if (!dup && cfg->n_eos < VLM_MAX_EOS) cfg->eos_token_ids[cfg->n_eos++] = id;
    }
}

static cJSON *read_json(const char *dir, const char *name, bool required, struct vlm_err *err,
                        int *rc)
{
    char path[4096];
    size_t len;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = vlm_read_file(path, &len);
    *rc = 0;
    if (!text) {
        if (required || errno != ENOENT)
            *rc = vlm_err_set(err, VLM_EIO, 500, "%s: cannot read: %s", path, strerror(errno));
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        *rc = vlm_err_set(err, VLM_EINVAL, 500, "%s: not a JSON object", path);
        return NULL;
    }
    return root;
}

static void parse_vision_config(struct cfg_ctx *c, const cJSON *root, struct model_config *cfg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "vision_config");
    if (v && !cJSON_IsObject(v) && !cJSON_IsNull(v)) {
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500, "config.json: \"vision_config\" must be an object");
        return;
    }
    if (!cJSON_IsObject(v)) v = NULL; /* all defaults: cJSON lookups on NULL return NULL */
    c->file = "config.json vision_config";
    cfg->vit_depth = cfg_int(c, v, "depth", false, 32, 1, 1024);
    cfg->vit_embed_dim = cfg_int(c, v, "embed_dim", false, 1280, 1, 1 << 16);
    cfg->vit_num_heads = cfg_int(c, v, "num_heads", false, 16, 1, 1024);
    double ratio = cfg_num(c, v, "mlp_ratio", 4.0, 0.0, 64.0);
    cfg->vit_mlp_hidden = (int32_t)((double)cfg->vit_embed_dim * ratio); /* int(dim*ratio), as HF */
    int32_t p = cfg_int(c, v, "spatial_patch_size", false, 14, 1, 1024);
    cfg->patch_size = cfg_int(c, v, "patch_size", false, p, 1, 1024);
    cfg->temporal_patch_size = cfg_int(c, v, "temporal_patch_size", false, 2, 1, 64);
    cfg->spatial_merge_size = cfg_int(c, v, "spatial_merge_size", false, 2, 1, 64);
    int32_t ch = cfg_int(c, v, "in_channels", false, 3, 1, 64);
    cfg->in_chans = cfg_int(c, v, "in_chans", false, ch, 1, 64);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(v, "hidden_act");
    cfg->vit_quick_gelu = true;
    if (!c->rc && act && !cJSON_IsNull(act)) {
        if (cJSON_IsString(act) && !strcmp(act->valuestring, "quick_gelu")) cfg->vit_quick_gelu = true;
        else if (cJSON_IsString(act) && !strcmp(act->valuestring, "gelu")) cfg->vit_quick_gelu = false;
        else c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                                 "config.json vision_config: \"hidden_act\" must be \"quick_gelu\" or \"gelu\"");
    }
    if (!c->rc && (cfg->vit_embed_dim % cfg->vit_num_heads || cfg->vit_mlp_hidden < 1))
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json vision_config: embed_dim %d is not a multiple of num_heads %d",
                            cfg->vit_embed_dim, cfg->vit_num_heads);
    c->file = "config.json";
}

const char *model_arch_name(enum model_arch a)
{
    return a == MODEL_VALLEY2 ? "Valley2" : "Valley2.5";
}

/* o[key] as a string; NULL when absent or null; an error when present and not a string. */
static const char *cfg_str(struct cfg_ctx *c, const cJSON *o, const char *key)
{
    if (c->rc) return NULL;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return NULL;
    if (!cJSON_IsString(j)) {
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500, "%s: \"%s\" must be a string", c->file, key);
        return NULL;
    }
    return j->valuestring;
}

/* docs/MODEL.md, "Recognising a checkpoint": architectures[0] names the decoder
 * (ValleyQwen3ForCausalLM: Valley2.5, ValleyQwen2ForCausalLM: Valley2), model_type must be
 * "valley" when given, and the tower keys must form a combination that was released:
 * Valley2.5 is the only-NaViT path; Valley2 has both towers (or, for a text-only test
 * folder, neither) and never only_navit. Anything else is refused by name. */
static void parse_arch(struct cfg_ctx *c, const cJSON *root, struct model_config *cfg)
{
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    const char *arch = NULL;
    if (archs && !cJSON_IsNull(archs)) {
        const cJSON *a0 = cJSON_IsArray(archs) ? archs->child : NULL;
        if (!a0 || !cJSON_IsString(a0) || a0->next) {
            c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                                "config.json: \"architectures\" must be a list of one name");
            return;
        }
        arch = a0->valuestring;
    }
    const char *type = cfg_str(c, root, "model_type");
    const char *siglip = cfg_str(c, root, "mm_vision_tower");
    const char *eagle = cfg_str(c, root, "eagle_vision_tower");
    if (c->rc) return;
    const cJSON *navit = cJSON_GetObjectItemCaseSensitive(root, "only_navit");
    bool navit_given = navit && !cJSON_IsNull(navit);
    if (type && strcmp(type, "valley"))
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: model_type \"%.60s\" is not supported: this server serves "
                            "Valley checkpoints (model_type \"valley\")", type);
    else if (!arch || !strcmp(arch, "ValleyQwen3ForCausalLM"))
        cfg->arch = MODEL_VALLEY25;
    else if (!strcmp(arch, "ValleyQwen2ForCausalLM"))
        cfg->arch = MODEL_VALLEY2;
    else
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: architectures \"%.60s\" is not supported: this server "
                            "serves ValleyQwen3ForCausalLM (Valley2.5) and ValleyQwen2ForCausalLM "
                            "(Valley2)", arch);
    if (c->rc) return;
    cfg->only_navit = cfg_bool(c, root, "only_navit", cfg->arch == MODEL_VALLEY25);
    cfg->qk_norm = cfg->arch == MODEL_VALLEY25;
    cfg->qkv_bias = cfg->arch == MODEL_VALLEY2;
    if (c->rc || cfg->arch != MODEL_VALLEY2) return;
    if (navit_given && cfg->only_navit)
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: \"only_navit\": true with ValleyQwen2ForCausalLM (a Qwen2.5 "
                            "decoder without the SigLIP tower) is not a released combination and is "
                            "not supported");
    else if (!siglip != !eagle)
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: ValleyQwen2ForCausalLM with %s but no %s is not supported "
                            "(Valley2 has both towers: mm_vision_tower and eagle_vision_tower)",
                            siglip ? "mm_vision_tower" : "eagle_vision_tower",
                            siglip ? "eagle_vision_tower" : "mm_vision_tower");
    else if (siglip && !strstr(siglip, "siglip-so400m-patch14-384"))
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: mm_vision_tower \"%.80s\" is not supported (Valley2 builds "
                            "only siglip-so400m-patch14-384)", siglip);
    if (c->rc || !siglip) return;
    const char *proj = cfg_str(c, root, "mm_projector_type");
    if (c->rc) return;
    if (proj && !strcmp(proj, "conv_adapter")) cfg->mm_projector = MM_PROJ_CONV_ADAPTER;
    else if (proj && !strcmp(proj, "ovis_conv_adapter")) cfg->mm_projector = MM_PROJ_OVIS_CONV_ADAPTER;
    else {
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: mm_projector_type \"%.60s\" is not supported with Valley2 "
                            "(conv_adapter or ovis_conv_adapter)", proj ? proj : "(absent)");
        return;
    }
    const char *sel = cfg_str(c, root, "mm_vision_select_feature");
    if (!c->rc && sel && strcmp(sel, "cls_patch"))
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: mm_vision_select_feature \"%.60s\" is not supported "
                            "(Valley2's SigLIP tower selects cls_patch)", sel);
    cfg->mm_mlp_hidden = cfg_int(c, root, "mlp_hidden_dim", false, 0, 0, 1 << 24);
    /* the SigLIP geometry: siglip_vision_config, else so400m-patch14-384's */
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "siglip_vision_config");
    if (!c->rc && v && !cJSON_IsObject(v) && !cJSON_IsNull(v)) {
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: \"siglip_vision_config\" must be an object");
        return;
    }
    if (!cJSON_IsObject(v)) v = NULL;
    c->file = "config.json siglip_vision_config";
    cfg->sig_hidden = cfg_int(c, v, "hidden_size", false, 1152, 1, 1 << 16);
    cfg->sig_ffn = cfg_int(c, v, "intermediate_size", false, 4304, 1, 1 << 20);
    cfg->sig_layers = cfg_int(c, v, "num_hidden_layers", false, 27, 1, 1024);
    cfg->sig_heads = cfg_int(c, v, "num_attention_heads", false, 16, 1, 1024);
    cfg->sig_image = cfg_int(c, v, "image_size", false, 384, 1, 1 << 14);
    cfg->sig_patch = cfg_int(c, v, "patch_size", false, 14, 1, 1024);
    cfg->sig_channels = cfg_int(c, v, "num_channels", false, 3, 1, 64);
    cfg->sig_eps = (float)cfg_num(c, v, "layer_norm_eps", 1e-6, 0.0, 1.0);
    cfg->sig_use_head = cfg_bool(c, v, "vision_use_head", true);
    const char *act = cfg_str(c, v, "hidden_act");
    if (!c->rc && act && strcmp(act, "gelu_pytorch_tanh"))
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json siglip_vision_config: \"hidden_act\" must be \"gelu_pytorch_tanh\"");
    /* (image_size need not be a multiple of patch_size: 384 / 14 gives 27 x 27 patches) */
    if (!c->rc && (cfg->sig_hidden % cfg->sig_heads || cfg->sig_image < cfg->sig_patch))
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json siglip_vision_config: hidden_size %d must be a multiple of "
                            "num_attention_heads %d and image_size %d at least patch_size %d",
                            cfg->sig_hidden, cfg->sig_heads, cfg->sig_image, cfg->sig_patch);
    c->file = "config.json";
    cfg->mm_hidden_size = cfg_int(c, root, "mm_hidden_size", false, cfg->sig_hidden, 1, 1 << 16);
    if (!c->rc && cfg->mm_hidden_size != cfg->sig_hidden)
        c->rc = vlm_err_set(c->err, VLM_EINVAL, 500,
                            "config.json: mm_hidden_size %d differs from the SigLIP width %d",
                            cfg->mm_hidden_size, cfg->sig_hidden);
}

int model_read_config(struct model_config *cfg, const char *dir, struct vlm_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    int rc;
    cJSON *root = read_json(dir, "config.json", true, err, &rc);
    if (!root) return rc;
    struct cfg_ctx c = {.file = "config.json", .err = err};

    cfg->hidden_size = cfg_int(&c, root, "hidden_size", true, 0, 1, 1 << 16);
    cfg->n_layers = cfg_int(&c, root, "num_hidden_layers", true, 0, 1, 1024);
    cfg->n_heads = cfg_int(&c, root, "num_attention_heads", true, 0, 1, 1024);
    cfg->n_kv_heads = cfg_int(&c, root, "num_key_value_heads", false, cfg->n_heads, 1, 1024);
    cfg->head_dim = cfg_int(&c, root, "head_dim", false,
                            cfg->n_heads ? cfg->hidden_size / cfg->n_heads : 0, 1, 4096);
    cfg->intermediate_size = cfg_int(&c, root, "intermediate_size", true, 0, 1, 1 << 20);
    cfg->vocab_size = cfg_int(&c, root, "vocab_size", true, 0, 1, 1 << 24);
    /* absent: transformers' Qwen3Config default, said out loud (Qwen3 itself uses 1e6) */
    if (!cJSON_GetObjectItemCaseSensitive(root, "rope_theta"))
        log_warn("model: config.json has no \"rope_theta\": using 10000 (the transformers "
                 "default; Qwen3 checkpoints set 1000000)");
    cfg->rope_theta = (float)cfg_num(&c, root, "rope_theta", 10000.0, 0.0, 1e12);
    /* only plain RoPE is implemented: a scaled variant would serve different numbers */
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!c.rc && rs && !cJSON_IsNull(rs))
        c.rc = vlm_err_set(err, VLM_EINVAL, 500,
                           "config.json: \"rope_scaling\" is set; this server implements plain "
                           "RoPE only (rope_scaling must be null or absent)");
    parse_arch(&c, root, cfg);
    cfg->rms_norm_eps = (float)cfg_num(&c, root, "rms_norm_eps", 1e-6, 0.0, 1.0);
    cfg->tie_word_embeddings = cfg_bool(&c, root, "tie_word_embeddings", false);
    cfg->max_position_embeddings = cfg_int(&c, root, "max_position_embeddings", false, 32768, 1, INT32_MAX);
    cfg->bos_token_id = cfg_int(&c, root, "bos_token_id", false, -1, 0, INT32_MAX);
    cfg_eos(&c, root, cfg);
    /* The Valley processor wraps every image as <im_start><image><im_end> by default and
     * never reads config.json; an explicit false here is the checkpoint author's statement
     * that the model was trained without the markers (docs/MODEL.md, "Image markers"). */
    cfg->use_special_start_end_token = cfg_bool(&c, root, "use_special_start_end_token", true);
    cfg->tokenizer_model_max_length = cfg_int(&c, root, "tokenizer_model_max_length", false, 0, 0, INT32_MAX);
    if (!c.rc && cfg->n_heads % cfg->n_kv_heads)
        c.rc = vlm_err_set(err, VLM_EINVAL, 500,
                           "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                           cfg->n_heads, cfg->n_kv_heads);
    if (!c.rc) parse_vision_config(&c, root, cfg);
    /* merger_hidden and has_vision come from the tensors (model_load); the config's
     * navit_merger_hidden_dim, when present, must agree with them. */
    cfg->merger_hidden = cfg_int(&c, root, "navit_merger_hidden_dim", false, 0, 0, 1 << 24);
    cJSON_Delete(root);
    if (c.rc) return c.rc;

    /* generation_config.json's eos ids stop generation too (docs/MODEL.md, "Generation and
     * stopping") */
    root = read_json(dir, "generation_config.json", false, err, &rc);
    if (rc) return rc;
    if (root) {
        c.file = "generation_config.json";
        cfg_eos(&c, root, cfg);
        cJSON_Delete(root);
    }
    return c.rc;
}

/* ==== Binding tensors ====
 * bind() looks a tensor up by name and checks dtype and shape. Shapes in messages are
 * written outermost first, as PyTorch prints them; the view's ne[] is innermost first. */

static void fmt_shape(char *buf, size_t n, const int64_t *d, int rank)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* The mapped files and which of their tensors have been bound (used[i] for st_get(set, i)):
 * whatever is left unbound after loading is a tensor this server does not know. */
struct binder {
    const struct st_set *set;
    uint8_t *used; /* (st_count(set)), owned */
};

static const struct st_tensor *bfind(struct binder *st, const char *name)
{
    const struct st_tensor *t = st_find(st->set, name);
    if (t) st->used[t - st_get(st->set, 0)] = 1;
    return t;
}

/* Binds name with expected shape want[0..rank) (outermost first) into *out. */
static int bind(struct binder *st, struct tensor *out, const char *name, int rank,
                const int64_t *want, struct vlm_err *err)
{
    char ws[96], hs[96];
    fmt_shape(ws, sizeof ws, want, rank);
    const struct st_tensor *t = bfind(st, name);
    if (!t) return vlm_err_set(err, VLM_EINVAL, 500, "model: missing tensor '%s' (expected %s)", name, ws);
    if (t->type != DT_BF16 && t->type != DT_F16 && t->type != DT_F32)
        return vlm_err_set(err, VLM_EINVAL, 500, "model: tensor '%s' has dtype %s, want BF16, F16 or F32",
                           name, st_dtype_name(t->type));
    bool ok = t->rank == rank;
    for (int i = 0; ok && i < rank; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        fmt_shape(hs, sizeof hs, t->shape, t->rank);
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "model: tensor '%s' has shape %s, config.json implies %s", name, hs, ws);
    }
    /* rank > 4 (the Conv3d weight): the caller reshapes */
    int64_t ne[4] = {1, 1, 1, 1};
    for (int i = 0; i < rank && i < 4; i++) ne[i] = want[rank - 1 - i];
    *out = tensor_make((void *)t->data, t->type, ne[0], ne[1], ne[2], ne[3]);
    return 0;
}

static int bind1(struct binder *st, struct tensor *out, const char *name, int64_t d0,
                 struct vlm_err *err)
{
    return bind(st, out, name, 1, (int64_t[]){d0}, err);
}

static int bind2(struct binder *st, struct tensor *out, const char *name, int64_t d0,
                 int64_t d1, struct vlm_err *err)
{
    return bind(st, out, name, 2, (int64_t[]){d0, d1}, err);
}

static int bind_decoder(struct model *m, struct binder *st, struct vlm_err *err)
{
    const struct model_config *c = &m->cfg;
    struct model_weights *w = &m->w;
    int64_t H = c->hidden_size, F = c->intermediate_size, D = c->head_dim;
    int64_t Q = (int64_t)c->n_heads * D, KV = (int64_t)c->n_kv_heads * D;
    char n[256];
    int rc;

    if ((rc = bind2(st, &w->embed, "model.embed_tokens.weight", c->vocab_size, H, err))) return rc;
    w->layers = xcalloc((size_t)c->n_layers, sizeof *w->layers);
    for (int32_t l = 0; l < c->n_layers; l++) {
        struct layer_weights *L = &w->layers[l];
#define LN(s) (snprintf(n, sizeof n, "model.layers.%d.%s", l, s), n)
        if ((rc = bind1(st, &L->attn_norm, LN("input_layernorm.weight"), H, err))) return rc;
        if ((rc = bind2(st, &L->wq, LN("self_attn.q_proj.weight"), Q, H, err))) return rc;
        if ((rc = bind2(st, &L->wk, LN("self_attn.k_proj.weight"), KV, H, err))) return rc;
        if ((rc = bind2(st, &L->wv, LN("self_attn.v_proj.weight"), KV, H, err))) return rc;
        if ((rc = bind2(st, &L->wo, LN("self_attn.o_proj.weight"), H, Q, err))) return rc;
        if (c->qkv_bias && ((rc = bind1(st, &L->bq, LN("self_attn.q_proj.bias"), Q, err)) ||
                            (rc = bind1(st, &L->bk, LN("self_attn.k_proj.bias"), KV, err)) ||
                            (rc = bind1(st, &L->bv, LN("self_attn.v_proj.bias"), KV, err))))
            return rc;
        if (c->qk_norm && ((rc = bind1(st, &L->q_norm, LN("self_attn.q_norm.weight"), D, err)) ||
                           (rc = bind1(st, &L->k_norm, LN("self_attn.k_norm.weight"), D, err))))
            return rc;
        if ((rc = bind1(st, &L->mlp_norm, LN("post_attention_layernorm.weight"), H, err))) return rc;
        if ((rc = bind2(st, &L->w_gate, LN("mlp.gate_proj.weight"), F, H, err))) return rc;
        if ((rc = bind2(st, &L->w_up, LN("mlp.up_proj.weight"), F, H, err))) return rc;
        if ((rc = bind2(st, &L->w_down, LN("mlp.down_proj.weight"), H, F, err))) return rc;
#undef LN
    }
    if ((rc = bind1(st, &w->final_norm, "model.norm.weight", H, err))) return rc;
    /* tied: lm_head is the embedding (a stored lm_head.weight is ignored, as HF does) */
    if (c->tie_word_embeddings) {
        w->lm_head = w->embed;
        (void)bfind(st, "lm_head.weight");
    } else if ((rc = bind2(st, &w->lm_head, "lm_head.weight", c->vocab_size, H, err))) return rc;
    return 0;
}

static int bind_vision(struct model *m, struct binder *st, struct vlm_err *err)
{
    struct model_config *c = &m->cfg;
    struct model_weights *w = &m->w;
    int64_t E = c->vit_embed_dim, M = c->vit_mlp_hidden;
    int64_t K = (int64_t)c->in_chans * c->temporal_patch_size * c->patch_size * c->patch_size;
    int64_t merged = E * c->spatial_merge_size * c->spatial_merge_size;
    char n[256];
    int rc;

    /* the Conv3d weight [E, C, T, P, P] read as the matrix [E, C*T*P*P] */
    const struct st_tensor *pe = bfind(st, MODEL_VIT_PREFIX "patch_embed.proj.weight");
    int64_t pe_want[5] = {E, c->in_chans, c->temporal_patch_size, c->patch_size, c->patch_size};
    if ((rc = bind(st, &w->patch_embed, pe->name, pe->rank == 2 ? 2 : 5,
                   pe->rank == 2 ? (int64_t[]){E, K} : pe_want, err)))
        return rc;
    w->patch_embed = tensor_make(w->patch_embed.data, w->patch_embed.type, K, E, 1, 1);

    w->vit_blocks = xcalloc((size_t)c->vit_depth, sizeof *w->vit_blocks);
    for (int32_t b = 0; b < c->vit_depth; b++) {
        struct vit_block_weights *B = &w->vit_blocks[b];
#define BN(s) (snprintf(n, sizeof n, MODEL_VIT_PREFIX "blocks.%d.%s", b, s), n)
        if ((rc = bind1(st, &B->norm1_w, BN("norm1.weight"), E, err))) return rc;
        if ((rc = bind1(st, &B->norm1_b, BN("norm1.bias"), E, err))) return rc;
        if ((rc = bind2(st, &B->qkv_w, BN("attn.qkv.weight"), 3 * E, E, err))) return rc;
        if ((rc = bind1(st, &B->qkv_b, BN("attn.qkv.bias"), 3 * E, err))) return rc;
        if ((rc = bind2(st, &B->proj_w, BN("attn.proj.weight"), E, E, err))) return rc;
        if ((rc = bind1(st, &B->proj_b, BN("attn.proj.bias"), E, err))) return rc;
        if ((rc = bind1(st, &B->norm2_w, BN("norm2.weight"), E, err))) return rc;
        if ((rc = bind1(st, &B->norm2_b, BN("norm2.bias"), E, err))) return rc;
        if ((rc = bind2(st, &B->fc1_w, BN("mlp.fc1.weight"), M, E, err))) return rc;
        if ((rc = bind1(st, &B->fc1_b, BN("mlp.fc1.bias"), M, err))) return rc;
        if ((rc = bind2(st, &B->fc2_w, BN("mlp.fc2.weight"), E, M, err))) return rc;
        if ((rc = bind1(st, &B->fc2_b, BN("mlp.fc2.bias"), E, err))) return rc;
#undef BN
    }
    if ((rc = bind1(st, &w->merger_ln_w, MODEL_VIT_PREFIX "merger.ln_q.weight", E, err))) return rc;
    if ((rc = bind1(st, &w->merger_ln_b, MODEL_VIT_PREFIX "merger.ln_q.bias", E, err))) return rc;
    /* the projector's hidden width is whatever mlp.0 says (docs/MODEL.md, "Projector") */
    const char *fc1 = MODEL_VIT_PREFIX "merger.mlp.0.weight";
    const struct st_tensor *t = bfind(st, fc1);
    if (!t) return vlm_err_set(err, VLM_EINVAL, 500, "model: missing tensor '%s'", fc1);
    int64_t mh = t->rank == 2 ? t->shape[0] : 0;
    if (mh < 1 || mh > (1 << 24))
        return vlm_err_set(err, VLM_EINVAL, 500, "model: tensor '%s' is not a [hidden, %lld] matrix",
                           fc1, (long long)merged);
    if (c->merger_hidden && c->merger_hidden != mh)
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "model: tensor '%s' has %lld rows, config.json navit_merger_hidden_dim is %d",
                           fc1, (long long)mh, c->merger_hidden);
    c->merger_hidden = (int32_t)mh;
    if ((rc = bind2(st, &w->merger_fc1_w, fc1, mh, merged, err))) return rc;
    if ((rc = bind1(st, &w->merger_fc1_b, MODEL_VIT_PREFIX "merger.mlp.0.bias", mh, err))) return rc;
    if ((rc = bind2(st, &w->merger_fc2_w, MODEL_VIT_PREFIX "merger.mlp.2.weight", c->hidden_size, mh, err)))
        return rc;
    if ((rc = bind1(st, &w->merger_fc2_b, MODEL_VIT_PREFIX "merger.mlp.2.bias", c->hidden_size, err)))
        return rc;
    return 0;
}

#define SIGLIP_PREFIX "model.vision_tower.vision_tower.vision_model."
#define PROJ_PREFIX "model.mm_projector."

/* Valley2's SigLIP tower (transformers' SiglipVisionModel names under SIGLIP_PREFIX) and its
 * projector (docs/MODEL.md, "Valley2 checkpoint layout"). */
static int bind_siglip(struct model *m, struct binder *st, struct vlm_err *err)
{
    struct model_config *c = &m->cfg;
    struct valley2_weights *w = &m->w.v2;
    int64_t E = c->sig_hidden, F = c->sig_ffn, P = c->sig_patch, C = c->sig_channels;
    int64_t N = (int64_t)(c->sig_image / c->sig_patch) * (c->sig_image / c->sig_patch);
    int64_t H = c->hidden_size;
    char n[256];
    int rc;

    if ((rc = bind(st, &w->patch_w, SIGLIP_PREFIX "embeddings.patch_embedding.weight", 4,
                   (int64_t[]){E, C, P, P}, err)))
        return rc;
    w->patch_w = tensor_make(w->patch_w.data, w->patch_w.type, C * P * P, E, 1, 1);
    if ((rc = bind1(st, &w->patch_b, SIGLIP_PREFIX "embeddings.patch_embedding.bias", E, err)) ||
        (rc = bind2(st, &w->pos_embed, SIGLIP_PREFIX "embeddings.position_embedding.weight", N, E, err)))
        return rc;
    w->layers = xcalloc((size_t)c->sig_layers, sizeof *w->layers);
    for (int32_t l = 0; l < c->sig_layers; l++) {
        struct siglip_layer_weights *L = &w->layers[l];
#define SN(s) (snprintf(n, sizeof n, SIGLIP_PREFIX "encoder.layers.%d.%s", l, s), n)
        if ((rc = bind1(st, &L->ln1_w, SN("layer_norm1.weight"), E, err)) ||
            (rc = bind1(st, &L->ln1_b, SN("layer_norm1.bias"), E, err)) ||
            (rc = bind2(st, &L->q_w, SN("self_attn.q_proj.weight"), E, E, err)) ||
            (rc = bind1(st, &L->q_b, SN("self_attn.q_proj.bias"), E, err)) ||
            (rc = bind2(st, &L->k_w, SN("self_attn.k_proj.weight"), E, E, err)) ||
            (rc = bind1(st, &L->k_b, SN("self_attn.k_proj.bias"), E, err)) ||
            (rc = bind2(st, &L->v_w, SN("self_attn.v_proj.weight"), E, E, err)) ||
            (rc = bind1(st, &L->v_b, SN("self_attn.v_proj.bias"), E, err)) ||
            (rc = bind2(st, &L->o_w, SN("self_attn.out_proj.weight"), E, E, err)) ||
            (rc = bind1(st, &L->o_b, SN("self_attn.out_proj.bias"), E, err)) ||
            (rc = bind1(st, &L->ln2_w, SN("layer_norm2.weight"), E, err)) ||
            (rc = bind1(st, &L->ln2_b, SN("layer_norm2.bias"), E, err)) ||
            (rc = bind2(st, &L->fc1_w, SN("mlp.fc1.weight"), F, E, err)) ||
            (rc = bind1(st, &L->fc1_b, SN("mlp.fc1.bias"), F, err)) ||
            (rc = bind2(st, &L->fc2_w, SN("mlp.fc2.weight"), E, F, err)) ||
            (rc = bind1(st, &L->fc2_b, SN("mlp.fc2.bias"), E, err)))
            return rc;
#undef SN
    }
    if ((rc = bind1(st, &w->post_ln_w, SIGLIP_PREFIX "post_layernorm.weight", E, err)) ||
        (rc = bind1(st, &w->post_ln_b, SIGLIP_PREFIX "post_layernorm.bias", E, err)))
        return rc;
    if (c->sig_use_head) {
        /* the attention-pooling head: saved with the tower, never read (cls_patch takes the
         * last hidden state); checked so a folder of another shape is still refused */
        struct tensor unused;
        if ((rc = bind(st, &unused, SIGLIP_PREFIX "head.probe", 3, (int64_t[]){1, 1, E}, err)) ||
            (rc = bind2(st, &unused, SIGLIP_PREFIX "head.attention.in_proj_weight", 3 * E, E, err)) ||
            (rc = bind1(st, &unused, SIGLIP_PREFIX "head.attention.in_proj_bias", 3 * E, err)) ||
            (rc = bind2(st, &unused, SIGLIP_PREFIX "head.attention.out_proj.weight", E, E, err)) ||
            (rc = bind1(st, &unused, SIGLIP_PREFIX "head.attention.out_proj.bias", E, err)) ||
            (rc = bind1(st, &unused, SIGLIP_PREFIX "head.layernorm.weight", E, err)) ||
            (rc = bind1(st, &unused, SIGLIP_PREFIX "head.layernorm.bias", E, err)) ||
            (rc = bind2(st, &unused, SIGLIP_PREFIX "head.mlp.fc1.weight", F, E, err)) ||
            (rc = bind1(st, &unused, SIGLIP_PREFIX "head.mlp.fc1.bias", F, err)) ||
            (rc = bind2(st, &unused, SIGLIP_PREFIX "head.mlp.fc2.weight", E, F, err)) ||
            (rc = bind1(st, &unused, SIGLIP_PREFIX "head.mlp.fc2.bias", E, err)))
            return rc;
    }

    if (c->mm_projector == MM_PROJ_CONV_ADAPTER) {
        /* Linear(E -> mlp_hidden_dim, default the LLM width), GELU, Linear(-> H), then
         * Conv2d(H, H, 3, stride 2, pad 1) */
        int64_t MH = c->mm_mlp_hidden ? c->mm_mlp_hidden : H;
        if ((rc = bind2(st, &w->mlp0_w, PROJ_PREFIX "mlp.0.weight", MH, E, err)) ||
            (rc = bind1(st, &w->mlp0_b, PROJ_PREFIX "mlp.0.bias", MH, err)) ||
            (rc = bind2(st, &w->mlp2_w, PROJ_PREFIX "mlp.2.weight", H, MH, err)) ||
            (rc = bind1(st, &w->mlp2_b, PROJ_PREFIX "mlp.2.bias", H, err)) ||
            (rc = bind(st, &w->conv_w, PROJ_PREFIX "conv.weight", 4, (int64_t[]){H, H, 3, 3}, err)) ||
            (rc = bind1(st, &w->conv_b, PROJ_PREFIX "conv.bias", H, err)))
            return rc;
        w->conv_w = tensor_make(w->conv_w.data, w->conv_w.type, H * 9, H, 1, 1);
    } else {
        /* Conv2d(E, E, 3, stride 2, pad 1), Linear(E -> mlp_hidden_dim (32000), no bias),
         * LayerNorm, softmax over it, embedding table (mlp_hidden_dim, H) */
        int64_t MH = c->mm_mlp_hidden ? c->mm_mlp_hidden : 32000;
        if ((rc = bind(st, &w->conv_w, PROJ_PREFIX "conv.weight", 4, (int64_t[]){E, E, 3, 3}, err)) ||
            (rc = bind1(st, &w->conv_b, PROJ_PREFIX "conv.bias", E, err)) ||
            (rc = bind2(st, &w->mlp0_w, PROJ_PREFIX "mlp.0.weight", MH, E, err)) ||
            (rc = bind1(st, &w->ln_w, PROJ_PREFIX "mlp.1.weight", MH, err)) ||
            (rc = bind1(st, &w->ln_b, PROJ_PREFIX "mlp.1.bias", MH, err)) ||
            (rc = bind2(st, &w->embedding, PROJ_PREFIX "embedding.weight", MH, H, err)))
            return rc;
        w->conv_w = tensor_make(w->conv_w.data, w->conv_w.type, E * 9, E, 1, 1);
    }
    c->has_siglip = true;
    return 0;
}

/* ==== Load / destroy ==== */

/* The Valley2 path (SigLIP tower + mm_projector) is not implemented: a checkpoint saved with
 * only_navit false that carries its tensors is refused by name, before anything else. */
static int check_only_navit(const struct model *m, struct vlm_err *err)
{
    if (m->cfg.only_navit || m->cfg.arch != MODEL_VALLEY25) return 0;
    for (int32_t i = 0; i < st_count(m->files); i++) {
        const char *n = st_get(m->files, i)->name;
        if (!strncmp(n, "model.vision_tower.", 19) || !strncmp(n, "model.mm_projector.", 19))
            return vlm_err_set(err, VLM_EINVAL, 500,
                               "model: \"only_navit\" is false and tensor '%.100s' is present: "
                               "the SigLIP/mm_projector path is not supported", n);
    }
    return 0;
}

/* Every tensor in the files must have been bound: anything else would be silently ignored. */
static int check_unknown(const struct binder *st, enum model_arch m_arch, struct vlm_err *err)
{
    for (int32_t i = 0; i < st_count(st->set); i++) {
        if (st->used[i]) continue;
        const struct st_tensor *t = st_get(st->set, i);
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "model: unknown tensor '%.100s' in %.40s: not part of the %s "
                           "layout config.json describes", t->name, t->file,
                           model_arch_name(m_arch));
    }
    return 0;
}

int model_load(struct model *m, const char *dir, struct vlm_err *err)
{
    memset(m, 0, sizeof *m);
    struct binder st = {0};
    int rc = model_read_config(&m->cfg, dir, err);
    if (!rc) rc = st_open_dir(&m->files, dir, err);
    if (!rc) rc = check_only_navit(m, err);
    if (!rc) {
        st.set = m->files;
        st.used = xcalloc((size_t)VLM_MAX(st_count(m->files), 1), 1);
        rc = bind_decoder(m, &st, err);
    }
    if (!rc && m->cfg.arch == MODEL_VALLEY25) {
        m->cfg.has_vision = st_find(m->files, MODEL_VIT_PREFIX "patch_embed.proj.weight") != NULL;
        if (m->cfg.has_vision) rc = bind_vision(m, &st, err);
        else m->cfg.merger_hidden = 0;
    } else if (!rc && m->cfg.mm_projector != MM_PROJ_NONE) {
        /* Valley2 with its towers: both bound by name and shape; every image goes through
         * both (docs/MODEL.md, "Valley2") */
        rc = bind_siglip(m, &st, err);
        if (!rc && !st_find(m->files, MODEL_VIT_PREFIX "patch_embed.proj.weight"))
            rc = vlm_err_set(err, VLM_EINVAL, 500,
                             "model: missing tensor '" MODEL_VIT_PREFIX "patch_embed.proj.weight' "
                             "(config.json names eagle_vision_tower: Valley2's Qwen2-VL tower)");
        if (!rc) rc = bind_vision(m, &st, err);
        m->cfg.has_eagle_tower = !rc;
        m->cfg.has_vision = !rc;
    } else if (!rc) {
        m->cfg.merger_hidden = 0;
    }
    if (!rc) rc = check_unknown(&st, m->cfg.arch, err);
    free(st.used);
    if (rc) {
        model_destroy(m);
        return rc;
    }
    m->dir = xstrdup(dir);
    const struct model_config *c = &m->cfg;
    log_info("model: %s: %s (%s decoder), %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d, %s%s",
             dir, model_arch_name(c->arch), c->arch == MODEL_VALLEY2 ? "Qwen2.5" : "Qwen3", c->n_layers, c->hidden_size, c->n_heads, c->n_kv_heads, c->head_dim,
             c->intermediate_size, c->vocab_size, c->tie_word_embeddings ? "tied, " : "",
             c->has_vision ? "vision" : "text only");
    if (c->has_siglip)
        log_info("model: Valley2 towers: SigLIP %d x %d, %s projector, Qwen2-VL depth %d",
                 c->sig_layers, c->sig_hidden,
                 c->mm_projector == MM_PROJ_CONV_ADAPTER ? "conv_adapter" : "ovis_conv_adapter",
                 c->vit_depth);
    if (c->has_vision)
        log_info("model: vision: depth %d, dim %d, heads %d, mlp %d, patch %d, merger hidden %d",
                 c->vit_depth, c->vit_embed_dim, c->vit_num_heads, c->vit_mlp_hidden,
                 c->patch_size, c->merger_hidden);
    return 0;
}

void model_destroy(struct model *m)
{
    if (!m) return;
    free(m->w.layers);
    free(m->w.vit_blocks);
    free(m->w.v2.layers);
    st_close(m->files);
    free(m->dir);
    memset(m, 0, sizeof *m);
}
