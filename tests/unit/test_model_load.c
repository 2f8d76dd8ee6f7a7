/*
 * model_load: a generated checkpoint loads with the right config and views; configs that
 * do not match their tensors, missing tensors and bad config values fail with a message
 * that names the key or the first bad tensor; tied embeddings work without lm_head; f32,
 * sharded and text-only variants load. Checkpoints are generated into a temporary folder
 * (synthesized tokenizer), plus the ctest-generated gqa4 with the real Qwen3 tokenizer.
 */
// models: gqa4
#include "engine/model.h"
#include "engine/safetensors.h"
#include "engine/testmodel.h"
#include "test.h"
#include "tmpdir.h"

#include <stdlib.h>
#include <unistd.h>

static void small_params(struct testmodel_params *p)
{
    testmodel_defaults(p);
    p->seed = 7;
    p->hidden = 64, p->layers = 2, p->heads = 4, p->kv_heads = 2, p->head_dim = 16, p->ffn = 96;
    p->vit_depth = 2, p->vit_dim = 32, p->vit_heads = 2, p->merger_hidden = 48;
}

static void put(const char *dir, const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

/* Replaces key's value in dir/config.json by val (text substitution on "key": ...). */
static void edit_config(const char *dir, const char *key, const char *val)
{
    char path[600], pat[128];
    size_t n;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *s = vlm_read_file(path, &n);
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    char *at = strstr(s, pat);
    struct strbuf b = {0};
    if (at) {
        char *v = at + strlen(pat), *end = v;
        if (*v == '{' || *v == '[') { /* a nested value: up to the matching bracket */
            int depth = 0;
            do {
                depth += (*end == '{' || *end == '[') - (*end == '}' || *end == ']');
                end++;
            } while (*end && depth > 0);
        } else {
            while (*end && *end != ',' && *end != '\n') end++;
        }
        sb_append(&b, s, (size_t)(v - s));
        sb_puts(&b, val);
        sb_puts(&b, end);
    } else { /* add the key */
        sb_puts(&b, "{\n");
        sb_printf(&b, "  %s%s,", pat, val);
        sb_puts(&b, s + 1);
    }
    put(dir, "config.json", b.s);
    sb_free(&b);
    free(s);
}

/* Rewrites dir/model.safetensors without the tensor named drop. */
static void drop_tensor(const char *dir, const char *drop)
{
    char path[600], tmp[620];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    struct st_set *s = NULL;
    struct vlm_err err = {0};
    if (st_open_file(&s, path, &err)) return;
    struct st_tensor *keep = calloc((size_t)st_count(s), sizeof *keep);
    int32_t n = 0;
    for (int32_t i = 0; i < st_count(s); i++)
        if (strcmp(st_get(s, i)->name, drop)) keep[n++] = *st_get(s, i);
    st_write_file(tmp, keep, n, &err);
    rename(tmp, path);
    free(keep);
    st_close(s);
}

/* Rewrites dir/model.safetensors with one more bf16 tensor [4] named add. */
static void add_tensor(const char *dir, const char *add)
{
    char path[600], tmp[620];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    struct st_set *s = NULL;
    struct vlm_err err = {0};
    if (st_open_file(&s, path, &err)) return;
    struct st_tensor *all = calloc((size_t)st_count(s) + 1, sizeof *all);
    static const uint16_t four[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80};
    for (int32_t i = 0; i < st_count(s); i++) all[i] = *st_get(s, i);
    all[st_count(s)] = (struct st_tensor){.name = add, .type = DT_BF16, .rank = 1, .shape = {4},
                                          .data = four, .nbytes = sizeof four};
    st_write_file(tmp, all, st_count(s) + 1, &err);
    rename(tmp, path);
    free(all);
    st_close(s);
}

static int gen(const char *name, const struct testmodel_params *p)
{
    struct vlm_err err = {0};
    int rc = testmodel_write(sub(name), p, &err);
    if (rc) fprintf(stderr, "  generate %s: %s\n", name, err.msg);
    return rc;
}

/* Expects model_load(dir) to fail with code and a message containing want. */
static void expect_fail(const char *dir, int code, const char *want)
{
    struct model m;
    struct vlm_err err = {0};
    int rc = model_load(&m, dir, &err);
    CHECK_EQ(rc, code);
    if (!strstr(err.msg, want)) CHECK_STR(err.msg, want);
    CHECK(m.files == NULL && m.w.layers == NULL && m.dir == NULL);
    model_destroy(&m);
}

static void test_load_ok(void)
{
    struct testmodel_params p;
    small_params(&p);
    TEST("generated checkpoint loads: config") {
        CHECK_EQ(gen("base", &p), 0);
        struct model m;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("base"), &err), 0);
        if (err.msg[0]) fprintf(stderr, "  %s\n", err.msg);
        const struct model_config *c = &m.cfg;
        CHECK_EQ(c->hidden_size, 64);
        CHECK_EQ(c->n_layers, 2);
        CHECK_EQ(c->n_heads, 4);
        CHECK_EQ(c->n_kv_heads, 2);
        CHECK_EQ(c->head_dim, 16);
        CHECK_EQ(c->intermediate_size, 96);
        CHECK_EQ(c->vocab_size % 64, 0);
        CHECK(c->rope_theta == 1e6f);
        CHECK(c->rms_norm_eps == 1e-6f);
        CHECK(!c->tie_word_embeddings);
        CHECK(!c->use_special_start_end_token);
        CHECK_EQ(c->tokenizer_model_max_length, 0);
        CHECK_EQ(c->max_position_embeddings, 40960);
        CHECK_EQ(c->n_eos, 2);
        CHECK(c->bos_token_id > 255);
        CHECK_EQ(c->eos_token_ids[0], c->bos_token_id + 2); /* <|im_end|>, <|endoftext|> */
        CHECK_EQ(c->eos_token_ids[1], c->bos_token_id);
        CHECK(c->has_vision);
        CHECK_EQ(c->vit_depth, 2);
        CHECK_EQ(c->vit_embed_dim, 32);
        CHECK_EQ(c->vit_num_heads, 2);
        CHECK_EQ(c->vit_mlp_hidden, 128);
        CHECK_EQ(c->patch_size, 14);
        CHECK_EQ(c->temporal_patch_size, 2);
        CHECK_EQ(c->spatial_merge_size, 2);
        CHECK_EQ(c->in_chans, 3);
        CHECK(c->vit_quick_gelu);
        CHECK_EQ(c->merger_hidden, 48);
        model_destroy(&m);
    }
    TEST("generated checkpoint loads: views") {
        struct model m;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("base"), &err), 0);
        const struct model_weights *w = &m.w;
        CHECK_EQ(w->embed.type, DT_BF16);
        CHECK_EQ(w->embed.ne[0], 64);
        CHECK_EQ(w->embed.ne[1], m.cfg.vocab_size);
        CHECK_EQ(w->embed.nb[1], 128);
        CHECK(w->lm_head.data && w->lm_head.data != w->embed.data);
        CHECK_EQ(w->layers[1].wq.ne[0], 64);
        CHECK_EQ(w->layers[1].wq.ne[1], 64);
        CHECK_EQ(w->layers[1].wk.ne[1], 32);
        CHECK_EQ(w->layers[1].wo.ne[0], 64);
        CHECK_EQ(w->layers[1].w_down.ne[0], 96);
        CHECK_EQ(w->layers[1].w_down.ne[1], 64);
        CHECK_EQ(w->layers[0].q_norm.ne[0], 16);
        CHECK_EQ(w->patch_embed.ne[0], 3 * 2 * 14 * 14);
        CHECK_EQ(w->patch_embed.ne[1], 32);
        CHECK_EQ(w->patch_embed.ne[2], 1);
        CHECK_EQ(w->vit_blocks[1].qkv_w.ne[1], 96);
        CHECK_EQ(w->vit_blocks[1].fc1_w.ne[1], 128);
        CHECK_EQ(w->merger_fc1_w.ne[0], 128);
        CHECK_EQ(w->merger_fc1_w.ne[1], 48);
        CHECK_EQ(w->merger_fc2_w.ne[0], 48);
        CHECK_EQ(w->merger_fc2_w.ne[1], 64);
        /* norms near 1, linears within sqrt(3/fan_in), biases within 1/16 */
        float g = bf16_to_f32(((const uint16_t *)w->final_norm.data)[3]);
        CHECK(g >= 0.875f && g <= 1.125f);
        float q = bf16_to_f32(((const uint16_t *)w->layers[0].wq.data)[5]);
        CHECK(q != 0.0f && fabsf(q) <= 0.2166f);
        float bb = bf16_to_f32(((const uint16_t *)w->merger_fc2_b.data)[1]);
        CHECK(fabsf(bb) <= 0.0625f);
        CHECK_STR(m.dir, sub("base"));
        model_destroy(&m);
        model_destroy(&m); /* destroy is idempotent on a zeroed struct */
    }
    TEST("model_read_config reads config only") {
        struct model_config c;
        struct vlm_err err = {0};
        CHECK_EQ(model_read_config(&c, sub("base"), &err), 0);
        CHECK_EQ(c.hidden_size, 64);
        CHECK(!c.has_vision);
        CHECK_EQ(c.merger_hidden, 48);
    }
}

static void test_mismatch(void)
{
    struct testmodel_params p;
    small_params(&p);
    static const struct {
        const char *what, *key, *val, *want;
    } cases[] = {
        {"hidden_size edited: names the embedding", "hidden_size", "128",
         "tensor 'model.embed_tokens.weight' has shape ["},
        {"num_key_value_heads edited: names k_proj", "num_key_value_heads", "4",
         "tensor 'model.layers.0.self_attn.k_proj.weight' has shape [32, 64]"},
        {"head_dim edited: names q_proj", "head_dim", "8", "model.layers.0.self_attn.q_proj.weight"},
        {"intermediate_size edited: names gate_proj", "intermediate_size", "100", "model.layers.0.mlp.gate_proj.weight"},
        {"vocab_size edited: names the embedding", "vocab_size", "1000", "model.embed_tokens.weight"},
        {"more layers than tensors: names the first missing", "num_hidden_layers", "3",
         "missing tensor 'model.layers.2.input_layernorm.weight'"},
        {"vision depth edited: names the missing block", "vision_config", "{\"depth\": 3, \"embed_dim\": 32, \"num_heads\": 2}",
         "missing tensor 'model.qwen2vl_vision_tower.blocks.2.norm1.weight'"},
        {"vision dim edited: names patch_embed", "vision_config", "{\"depth\": 2, \"embed_dim\": 64, \"num_heads\": 2}",
         "tensor 'model.qwen2vl_vision_tower.patch_embed.proj.weight' has shape [32, 3, 2, 14, 14]"},
        {"vision mlp_ratio edited: names fc1", "vision_config", "{\"depth\": 2, \"embed_dim\": 32, \"num_heads\": 2, \"mlp_ratio\": 2}",
         "model.qwen2vl_vision_tower.blocks.0.mlp.fc1.weight"},
        {"navit_merger_hidden_dim disagrees with mlp.0", "navit_merger_hidden_dim", "64",
         "has 48 rows, config.json navit_merger_hidden_dim is 64"},
        {"missing hidden_size", "hidden_size", "null", "missing key \"hidden_size\""},
        {"hidden_size a string", "hidden_size", "\"64\"", "\"hidden_size\" must be an integer"},
        {"hidden_size negative", "hidden_size", "-64", "\"hidden_size\" must be an integer"},
        {"hidden_size fractional", "hidden_size", "64.5", "\"hidden_size\" must be an integer"},
        {"heads not a multiple of kv heads", "num_key_value_heads", "3", "not a multiple of num_key_value_heads 3"},
        {"rms_norm_eps zero", "rms_norm_eps", "0", "\"rms_norm_eps\" must be a number"},
        {"tie_word_embeddings a number", "tie_word_embeddings", "1", "\"tie_word_embeddings\" must be true or false"},
        {"eos_token_id a string", "eos_token_id", "\"<|im_end|>\"", "\"eos_token_id\" must be a token id"},
        {"eos list with a negative id", "eos_token_id", "[5, -1]", "\"eos_token_id\" must be a token id"},
        {"vision_config a list", "vision_config", "[1]", "\"vision_config\" must be an object"},
        {"vision hidden_act unknown", "vision_config", "{\"depth\": 2, \"embed_dim\": 32, \"num_heads\": 2, \"hidden_act\": \"relu\"}",
         "\"hidden_act\" must be"},
        {"rope_scaling set is refused", "rope_scaling", "{\"type\": \"yarn\", \"factor\": 4.0}",
         "config.json: \"rope_scaling\" is set; this server implements plain RoPE only "
         "(rope_scaling must be null or absent)"},
        {"only_navit a string", "only_navit", "\"yes\"", "\"only_navit\" must be true or false"},
        {"vision heads do not divide dim", "vision_config", "{\"depth\": 2, \"embed_dim\": 32, \"num_heads\": 3}",
         "not a multiple of num_heads 3"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        TEST(cases[i].what) {
            CHECK_EQ(gen("mm", &p), 0);
            /* generation is skipped when the stamp matches; restore config by regenerating */
            unlink(sub("mm/.stamp"));
            CHECK_EQ(gen("mm", &p), 0);
            edit_config(sub("mm"), cases[i].key, cases[i].val);
            expect_fail(sub("mm"), VLM_EINVAL, cases[i].want);
        }
    }
    TEST("config.json missing is VLM_EIO") {
        expect_fail(sub("none"), VLM_EIO, "config.json");
    }
    TEST("config.json not JSON") {
        CHECK_EQ(gen("nj", &p), 0);
        put(sub("nj"), "config.json", "{\"hidden_size\": ");
        expect_fail(sub("nj"), VLM_EINVAL, "config.json: not a JSON object");
    }
    TEST("corrupt weights file: error, not a crash") {
        CHECK_EQ(gen("cw", &p), 0);
        put(sub("cw"), "model.safetensors", "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":");
        expect_fail(sub("cw"), VLM_EINVAL, "model.safetensors");
    }
}

static void test_missing_and_tied(void)
{
    struct testmodel_params p;
    small_params(&p);
    TEST("missing tensor is named") {
        CHECK_EQ(gen("miss", &p), 0);
        drop_tensor(sub("miss"), "model.layers.1.mlp.down_proj.weight");
        expect_fail(sub("miss"), VLM_EINVAL, "missing tensor 'model.layers.1.mlp.down_proj.weight' (expected [64, 96])");
    }
    TEST("first of several missing tensors is named") {
        drop_tensor(sub("miss"), "model.layers.0.self_attn.q_norm.weight");
        expect_fail(sub("miss"), VLM_EINVAL, "missing tensor 'model.layers.0.self_attn.q_norm.weight'");
    }
    TEST("integer dtype for a weight is refused, naming tensor and dtype") {
        CHECK_EQ(gen("i32", &p), 0);
        char path[600], tmp[620];
        snprintf(path, sizeof path, "%s/model.safetensors", sub("i32"));
        snprintf(tmp, sizeof tmp, "%s.new", path);
        struct st_set *s = NULL;
        struct vlm_err err = {0};
        CHECK_EQ(st_open_file(&s, path, &err), 0);
        struct st_tensor *all = calloc((size_t)st_count(s), sizeof *all);
        int32_t zeros[64] = {0};
        for (int32_t i = 0; i < st_count(s); i++) {
            all[i] = *st_get(s, i);
            if (!strcmp(all[i].name, "model.norm.weight"))
                all[i] = (struct st_tensor){.name = "model.norm.weight", .type = DT_I32, .rank = 1,
                                            .shape = {64}, .data = zeros, .nbytes = sizeof zeros};
        }
        /* I32 (4 bytes) first, so every tensor stays aligned to its element size */
        for (int32_t i = 0; i < st_count(s); i++) {
            if (all[i].type != DT_I32) continue;
            struct st_tensor t = all[i];
            memmove(all + 1, all, (size_t)i * sizeof *all);
            all[0] = t;
        }
        CHECK_EQ(st_write_file(tmp, all, st_count(s), &err), 0);
        rename(tmp, path);
        free(all);
        st_close(s);
        expect_fail(sub("i32"), VLM_EINVAL, "tensor 'model.norm.weight' has dtype I32, want BF16, F16 or F32");
    }
    TEST("untied without lm_head fails naming lm_head.weight") {
        CHECK_EQ(gen("nolm", &p), 0);
        drop_tensor(sub("nolm"), "lm_head.weight");
        expect_fail(sub("nolm"), VLM_EINVAL, "missing tensor 'lm_head.weight'");
    }
    TEST("missing projector bias is named") {
        CHECK_EQ(gen("nob", &p), 0);
        drop_tensor(sub("nob"), "model.qwen2vl_vision_tower.merger.mlp.2.bias");
        expect_fail(sub("nob"), VLM_EINVAL, "model.qwen2vl_vision_tower.merger.mlp.2.bias");
    }
    TEST("only_navit false with a SigLIP tensor is refused, naming the tensor") {
        CHECK_EQ(gen("siglip", &p), 0);
        add_tensor(sub("siglip"),
                   "model.vision_tower.vision_tower.vision_model.post_layernorm.weight");
        edit_config(sub("siglip"), "only_navit", "false");
        expect_fail(sub("siglip"), VLM_EINVAL,
                    "model: \"only_navit\" is false and tensor "
                    "'model.vision_tower.vision_tower.vision_model.post_layernorm.weight' is "
                    "present: the SigLIP/mm_projector path is not supported");
    }
    TEST("only_navit false with an mm_projector tensor is refused") {
        CHECK_EQ(gen("mmproj", &p), 0);
        add_tensor(sub("mmproj"), "model.mm_projector.0.bias");
        edit_config(sub("mmproj"), "only_navit", "false");
        expect_fail(sub("mmproj"), VLM_EINVAL,
                    "model: \"only_navit\" is false and tensor 'model.mm_projector.0.bias' is "
                    "present: the SigLIP/mm_projector path is not supported");
    }
    TEST("only_navit false without SigLIP tensors loads") {
        CHECK_EQ(gen("navitoff", &p), 0);
        edit_config(sub("navitoff"), "only_navit", "false");
        struct model m;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("navitoff"), &err), 0);
        CHECK(!m.cfg.only_navit);
        model_destroy(&m);
    }
    TEST("a tensor the loader does not know is refused, naming it and its file") {
        CHECK_EQ(gen("unk", &p), 0);
        add_tensor(sub("unk"), "model.layers.0.self_attn.rotary_emb.inv_freq");
        expect_fail(sub("unk"), VLM_EINVAL,
                    "model: unknown tensor 'model.layers.0.self_attn.rotary_emb.inv_freq' in "
                    "model.safetensors: not part of the Valley2.5 layout config.json describes");
    }
    TEST("a SigLIP tensor with only_navit absent is an unknown tensor") {
        CHECK_EQ(gen("sig2", &p), 0);
        add_tensor(sub("sig2"), "model.vision_tower.x");
        expect_fail(sub("sig2"), VLM_EINVAL, "model: unknown tensor 'model.vision_tower.x'");
    }
    TEST("a text-only config over vision tensors: the vision tensors are unknown") {
        struct testmodel_params t = p;
        CHECK_EQ(gen("vt", &t), 0);
        drop_tensor(sub("vt"), "model.qwen2vl_vision_tower.patch_embed.proj.weight");
        expect_fail(sub("vt"), VLM_EINVAL, "model: unknown tensor 'model.qwen2vl_vision_tower.");
    }
    TEST("tied: a stored lm_head.weight is ignored, not unknown") {
        struct testmodel_params t = p;
        CHECK_EQ(gen("tiedlm", &t), 0);
        edit_config(sub("tiedlm"), "tie_word_embeddings", "true");
        struct model m;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("tiedlm"), &err), 0);
        CHECK(m.w.lm_head.data == m.w.embed.data);
        model_destroy(&m);
    }
    TEST("rope_theta absent: a warning with the value used") {
        CHECK_EQ(gen("rt", &p), 0);
        unlink(sub("rt/.stamp"));
        CHECK_EQ(gen("rt", &p), 0);
        edit_config(sub("rt"), "rope_theta", "null");
        /* the key is still present (null): still the default, but said only when absent */
        char path[600];
        snprintf(path, sizeof path, "%s/config.json", sub("rt"));
        size_t n;
        char *cj = vlm_read_file(path, &n);
        static const char line[] = "  \"rope_theta\": null,\n";
        char *at = strstr(cj, line);
        CHECK(at != NULL);
        if (at) memmove(at, at + strlen(line), strlen(at + strlen(line)) + 1);
        put(sub("rt"), "config.json", cj);
        free(cj);
        fflush(stderr);
        int saved = dup(2);
        FILE *cap = tmpfile();
        dup2(fileno(cap), 2);
        int old_level = vlm_log_level;
        vlm_log_level = VLM_LOG_WARN;
        struct model m;
        struct vlm_err err = {0};
        int rc = model_load(&m, sub("rt"), &err);
        vlm_log_level = old_level;
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        CHECK_EQ(rc, 0);
        CHECK(m.cfg.rope_theta == 10000.0f);
        model_destroy(&m);
        char logbuf[4096] = {0};
        rewind(cap);
        size_t got = fread(logbuf, 1, sizeof logbuf - 1, cap);
        fclose(cap);
        logbuf[got] = 0;
        const char *want = "model: config.json has no \"rope_theta\": using 10000 (the "
                           "transformers default; Qwen3 checkpoints set 1000000)";
        if (!strstr(logbuf, want)) CHECK_STR(logbuf, want);
    }
    TEST("tied embeddings without lm_head load; lm_head is the embedding") {
        struct testmodel_params t = p;
        t.tie = true;
        CHECK_EQ(gen("tied", &t), 0);
        struct model m;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("tied"), &err), 0);
        CHECK(st_find(m.files, "lm_head.weight") == NULL);
        CHECK(m.cfg.tie_word_embeddings);
        CHECK(m.w.lm_head.data == m.w.embed.data);
        CHECK_EQ(m.w.lm_head.ne[1], m.cfg.vocab_size);
        model_destroy(&m);
    }
    TEST("text-only checkpoint: has_vision false") {
        struct testmodel_params t = p;
        t.vision = false;
        CHECK_EQ(gen("text", &t), 0);
        struct model m;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("text"), &err), 0);
        CHECK(!m.cfg.has_vision);
        CHECK_EQ(m.cfg.merger_hidden, 0);
        CHECK(m.w.vit_blocks == NULL && m.w.patch_embed.data == NULL);
        model_destroy(&m);
    }
    TEST("f32 in 3 shards loads; values are the bf16 ones before rounding") {
        struct testmodel_params t = p;
        t.dtype = DT_F32;
        t.shards = 3;
        CHECK_EQ(gen("f32", &t), 0);
        CHECK(access(sub("f32/model.safetensors.index.json"), F_OK) == 0);
        CHECK(access(sub("f32/model-00003-of-00003.safetensors"), F_OK) == 0);
        struct model m, b;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("f32"), &err), 0);
        CHECK_EQ(model_load(&b, sub("base"), &err), 0);
        CHECK_EQ(m.w.layers[1].w_up.type, DT_F32);
        bool same = m.w.embed.data && b.w.embed.data;
        const struct tensor *pairs[][2] = {
            {&m.w.embed, &b.w.embed}, {&m.w.layers[1].w_up, &b.w.layers[1].w_up},
            {&m.w.merger_fc2_w, &b.w.merger_fc2_w}, {&m.w.vit_blocks[0].norm1_b, &b.w.vit_blocks[0].norm1_b},
        };
        for (size_t k = 0; same && k < ARRAY_LEN(pairs); k++)
            for (int64_t e = 0; e < tensor_nelem(pairs[k][0]); e++)
                same &= f32_to_bf16(((const float *)pairs[k][0]->data)[e]) ==
                        ((const uint16_t *)pairs[k][1]->data)[e];
        CHECK(same);
        model_destroy(&m);
        model_destroy(&b);
    }
    TEST("generation_config.json eos ids are added") {
        CHECK_EQ(gen("gc", &p), 0);
        struct model_config c;
        struct vlm_err err = {0};
        CHECK_EQ(model_read_config(&c, sub("gc"), &err), 0);
        char gcj[96];
        snprintf(gcj, sizeof gcj, "{\"eos_token_id\": [7, %d]}", c.eos_token_ids[1]);
        put(sub("gc"), "generation_config.json", gcj);
        CHECK_EQ(model_read_config(&c, sub("gc"), &err), 0);
        CHECK_EQ(c.n_eos, 3);
        CHECK_EQ(c.eos_token_ids[2], 7);
        put(sub("gc"), "generation_config.json", "{\"eos_token_id\": 9}");
        edit_config(sub("gc"), "eos_token_id", "5");
        edit_config(sub("gc"), "use_special_start_end_token", "false");
        edit_config(sub("gc"), "tokenizer_model_max_length", "8192");
        edit_config(sub("gc"), "bos_token_id", "null");
        CHECK_EQ(model_read_config(&c, sub("gc"), &err), 0);
        CHECK_EQ(c.n_eos, 2);
        CHECK_EQ(c.eos_token_ids[0], 5);
        CHECK_EQ(c.eos_token_ids[1], 9);
        CHECK(!c.use_special_start_end_token);
        CHECK_EQ(c.tokenizer_model_max_length, 8192);
        CHECK_EQ(c.bos_token_id, -1);
    }
    TEST("Qwen3 defaults for absent optional keys") {
        CHECK_EQ(gen("def", &p), 0);
        struct model_config c;
        struct vlm_err err = {0};
        CHECK_EQ(model_read_config(&c, sub("def"), &err), 0);
        char cj[256];
        snprintf(cj, sizeof cj,
                 "{\"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                 "\"intermediate_size\": 96, \"vocab_size\": %d}", c.vocab_size);
        put(sub("def"), "config.json", cj);
        unlink(sub("def/generation_config.json"));
        CHECK_EQ(model_read_config(&c, sub("def"), &err), 0);
        CHECK_EQ(c.n_kv_heads, 4);
        CHECK_EQ(c.head_dim, 16);
        CHECK(c.rope_theta == 10000.0f);
        CHECK_EQ(c.n_eos, 0);
        CHECK_EQ(c.vit_depth, 32);
        CHECK_EQ(c.vit_embed_dim, 1280);
        CHECK_EQ(c.vit_num_heads, 16);
        CHECK_EQ(c.vit_mlp_hidden, 5120);
        CHECK(c.use_special_start_end_token); /* absent: wrap, as the Valley processor */
        CHECK(c.only_navit);
        /* the tensors then disagree: the generated file has 2 kv heads of 16 */
        expect_fail(sub("def"), VLM_EINVAL, "model.layers.0.self_attn.k_proj.weight");
    }
}

/* docs/MODEL.md, "Recognising a checkpoint": the family member from config.json, and every
 * combination that was not released refused with a message that names it. */
static void test_arch(void)
{
    struct testmodel_params p;
    small_params(&p);
    testmodel_arch_valley2(&p);
    p.sig_image = 42; /* 3 x 3 patches: small files */
    TEST("a Valley2 folder loads as Valley2: biases, no q/k norms, towers bound, vision") {
        CHECK_EQ(gen("v2", &p), 0);
        struct model m;
        struct vlm_err err = {0};
        int rc = model_load(&m, sub("v2"), &err);
        if (rc) fprintf(stderr, "  %s\n", err.msg);
        CHECK_EQ(rc, 0);
        CHECK_EQ(m.cfg.arch, MODEL_VALLEY2);
        CHECK(m.cfg.qkv_bias && !m.cfg.qk_norm && m.cfg.has_siglip && m.cfg.has_eagle_tower);
        CHECK(m.cfg.has_vision && !m.cfg.only_navit);
        CHECK_EQ(m.w.layers[1].bk.ne[0], 2 * 16);
        CHECK_EQ(m.w.v2.pos_embed.ne[1], 9);
        CHECK_STR(model_arch_name(m.cfg.arch), "Valley2");
        model_destroy(&m);
    }
    TEST("a Valley2 text-only folder (no tower keys, no tower tensors) loads") {
        struct testmodel_params t = p;
        t.vision = false;
        CHECK_EQ(gen("v2t", &t), 0);
        struct model m;
        struct vlm_err err = {0};
        CHECK_EQ(model_load(&m, sub("v2t"), &err), 0);
        CHECK(m.cfg.arch == MODEL_VALLEY2 && !m.cfg.has_siglip && !m.cfg.has_vision);
        model_destroy(&m);
    }
    static const struct {
        const char *what, *key, *val, *want;
    } cases[] = {
        {"another architecture is refused by name", "architectures", "[\"Qwen2VLForConditionalGeneration\"]",
         "architectures \"Qwen2VLForConditionalGeneration\" is not supported: this server serves "
         "ValleyQwen3ForCausalLM (Valley2.5) and ValleyQwen2ForCausalLM (Valley2)"},
        {"architectures not a list of one name", "architectures", "\"ValleyQwen2ForCausalLM\"",
         "\"architectures\" must be a list of one name"},
        {"another model_type is refused", "model_type", "\"qwen2_vl\"",
         "model_type \"qwen2_vl\" is not supported"},
        {"Valley2 with only_navit true is refused", "only_navit", "true",
         "\"only_navit\": true with ValleyQwen2ForCausalLM"},
        {"Valley2 with the SigLIP tower but no eagle_vision_tower is refused", "eagle_vision_tower", "null",
         "with mm_vision_tower but no eagle_vision_tower is not supported"},
        {"Valley2 with another SigLIP tower is refused", "mm_vision_tower", "\"openai/clip-vit-large-patch14-336\"",
         "mm_vision_tower \"openai/clip-vit-large-patch14-336\" is not supported"},
        {"Valley2 with another projector type is refused", "mm_projector_type", "\"mlp2x_gelu\"",
         "mm_projector_type \"mlp2x_gelu\" is not supported with Valley2"},
        {"Valley2 with another feature selection is refused", "mm_vision_select_feature", "\"patch\"",
         "mm_vision_select_feature \"patch\" is not supported"},
        {"Valley2 SigLIP width edited: mm_hidden_size disagrees", "siglip_vision_config",
         "{\"hidden_size\": 64, \"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"image_size\": 42}",
         "mm_hidden_size 32 differs from the SigLIP width 64"},
        {"Valley2 SigLIP MLP edited: names fc1", "siglip_vision_config",
         "{\"hidden_size\": 32, \"intermediate_size\": 48, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"image_size\": 42}",
         "tensor 'model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight' has shape [64, 32]"},
        {"Valley2 SigLIP image size edited: names the position embedding", "siglip_vision_config",
         "{\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"image_size\": 56}",
         "tensor 'model.vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight' has shape [9, 32], config.json implies [16, 32]"},
        {"Valley2 SigLIP depth edited: names the missing layer", "siglip_vision_config",
         "{\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 3, \"num_attention_heads\": 2, \"image_size\": 42}",
         "missing tensor 'model.vision_tower.vision_tower.vision_model.encoder.layers.2.layer_norm1.weight'"},
        {"Valley2 SigLIP hidden_act other than tanh-GELU", "siglip_vision_config",
         "{\"hidden_size\": 32, \"hidden_act\": \"gelu\"}", "\"hidden_act\" must be \"gelu_pytorch_tanh\""},
        {"Valley2 projector hidden edited: names mlp.0", "mlp_hidden_dim", "32",
         "tensor 'model.mm_projector.mlp.0.weight' has shape [64, 32], config.json implies [32, 32]"},
        {"Valley2 without its tower keys over tower tensors: unknown tensor", "mm_vision_tower", "null",
         "not part of the Valley2 layout"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        TEST(cases[i].what) {
            unlink(sub("v2/.stamp"));
            CHECK_EQ(gen("v2", &p), 0);
            edit_config(sub("v2"), cases[i].key, cases[i].val);
            if (!strcmp(cases[i].key, "mm_vision_tower") && !strcmp(cases[i].val, "null"))
                edit_config(sub("v2"), "eagle_vision_tower", "null");
            expect_fail(sub("v2"), VLM_EINVAL, cases[i].want);
        }
    }
    TEST("Valley2 without q/k/v biases: names the missing bias") {
        unlink(sub("v2/.stamp"));
        CHECK_EQ(gen("v2", &p), 0);
        drop_tensor(sub("v2"), "model.layers.0.self_attn.k_proj.bias");
        expect_fail(sub("v2"), VLM_EINVAL, "missing tensor 'model.layers.0.self_attn.k_proj.bias' (expected [32])");
    }
    TEST("a Valley2.5 (Qwen3) folder with Valley2 biases: the biases are unknown") {
        struct testmodel_params q;
        small_params(&q);
        q.vision = false;
        CHECK_EQ(gen("q3b", &q), 0);
        add_tensor(sub("q3b"), "model.layers.0.self_attn.q_proj.bias");
        expect_fail(sub("q3b"), VLM_EINVAL, "unknown tensor 'model.layers.0.self_attn.q_proj.bias'");
    }
}

/* The ctest fixture checkpoint with the real Qwen3 tokenizer (tests/models.txt). */
static void test_fixture_model(void)
{
    TEST("gqa4 fixture (real tokenizer ids)") {
        struct model m;
        struct vlm_err err = {0};
        int rc = model_load(&m, test_path("VLM_MODELS", "gqa4"), &err);
        if (rc) fprintf(stderr, "  %s\n", err.msg);
        CHECK_EQ(rc, 0);
        CHECK_EQ(m.cfg.vocab_size, 151936);
        CHECK_EQ(m.cfg.n_eos, 2);
        CHECK_EQ(m.cfg.eos_token_ids[0], 151645);
        CHECK_EQ(m.cfg.eos_token_ids[1], 151643);
        CHECK_EQ(m.cfg.bos_token_id, 151643);
        CHECK_EQ(m.cfg.n_heads / m.cfg.n_kv_heads, 4);
        CHECK(m.cfg.has_vision);
        CHECK_EQ(m.cfg.merger_hidden, 128);
        model_destroy(&m);
    }
}

int main(void)
{
    tmpdir_make("/tmp/vlm_test_model_XXXXXX");
    vlm_log_level = VLM_LOG_WARN;
    test_load_ok();
    test_mismatch();
    test_missing_and_tied();
    test_arch();
    test_fixture_model();
    tmpdir_remove();
    return test_report();
}
