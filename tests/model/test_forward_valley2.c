// models: valley2 valley2_f16
/*
 * test_forward_valley2: Valley2's Qwen2.5 decoder (q/k/v biases, no q/k norms, untied
 * lm_head) on the CPU engine against HF transformers' Qwen2ForCausalLM, goldens from
 * tests/golden/make_valley2_goldens.py in tests/golden/text/ (valley2: bf16 weights,
 * valley2_f16: f16 weights), with the checks of forward_golden.h: logits at every position
 * within 1e-4 x max|logit| (f32 numerics), greedy 32 tokens identical, --numerics fast within
 * the bf16 bound, which the reference's own bf16 / f16 run also meets.
 *
 * Also: the folders (the whole Valley-Eagle layout: SigLIP tower, conv_adapter projector,
 * Qwen2-VL tower with the original merger) load as Valley2 with every tensor bound and report
 * vision (images: test_forward_valley2_images.c); f16 weights are used in
 * place like bf16; on the emulated device backend (graphs, device-side sampling summaries)
 * greedy decoding gives the reference tokens too.
 */
#include "forward_golden.h"

static void check_layout(const char *name, enum dtype want)
{
    struct model m;
    struct vlm_err err = {0};
    int rc = model_load(&m, test_path("VLM_MODELS", name), &err);
    char *tname = tname_next();
    snprintf(tname, 160, "%s: loads as Valley2 with both towers and the projector bound", name);
    TEST(tname) {
        CHECK_EQ(rc, 0);
        if (rc) {
            fprintf(stderr, "  model_load: %s\n", err.msg);
            return;
        }
        CHECK_EQ(m.cfg.arch, MODEL_VALLEY2);
        CHECK(m.cfg.qkv_bias && !m.cfg.qk_norm && !m.cfg.tie_word_embeddings);
        CHECK(m.cfg.has_siglip && m.cfg.has_eagle_tower && m.cfg.has_vision);
        CHECK_EQ(m.cfg.mm_projector, MM_PROJ_CONV_ADAPTER);
        CHECK_EQ(m.cfg.sig_image, 384);
        CHECK_EQ(m.w.v2.pos_embed.ne[1], 27 * 27); /* 384 / 14 = 27 patches a side */
        CHECK_EQ(m.w.v2.conv_w.ne[1], m.cfg.hidden_size);
        /* the original PatchMerger: mlp.0 is (4 * vit_dim) square */
        CHECK_EQ(m.cfg.merger_hidden, 4 * m.cfg.vit_embed_dim);
        CHECK(m.w.layers[0].bq.data && m.w.layers[0].bk.data && m.w.layers[0].bv.data);
        CHECK(!m.w.layers[0].q_norm.data && !m.w.layers[0].k_norm.data);
        CHECK_EQ(m.w.layers[0].wq.type, want);
        CHECK_EQ(m.cfg.eos_token_ids[0], 151645);
    }
    model_destroy(&m);
}

/* The emulated device backend (backend_emulate: graphs recorded and replayed, device-side
 * sampling summaries): the greedy continuation of every golden prompt through engine_execute
 * with decode steps as graphs, the biases included in the recorded products. */
static void check_emulated(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s.json", test_path("VLM_SOURCE_DIR", "tests/golden/text/"), name);
    cJSON *g = load_json(path);
    struct model m;
    struct vlm_err err = {0};
    int rc = model_load(&m, test_path("VLM_MODELS", name), &err);
    struct engine_params ep = {.block_size = BS, .n_blocks = N_BLOCKS, .max_batched_tokens = 512,
                               .max_seqs = 4, .emulate.graphs = true, .sample_on_device = 1};
    struct engine e;
    if (!rc) rc = engine_init(&e, &m, &ep, &err);
    char *tname = tname_next();
    snprintf(tname, 160, "%s: engine on the emulated device backend", name);
    TEST(tname) {
        CHECK(g != NULL);
        CHECK_EQ(rc, 0);
        if (rc || !g) fprintf(stderr, "  %s\n", err.msg);
    }
    tname = tname_next();
    snprintf(tname, 160, "%s: emulated device backend (graphs): greedy 32 tokens identical", name);
    if (!rc && g) TEST(tname) {
        int32_t blocks[N_BLOCKS];
        for (int i = 0; i < N_BLOCKS - 1; i++) blocks[i] = i + 1;
        struct sampling_params sp = sampler_params_greedy();
        int n_prompts = 0;
        const cJSON *pr;
        cJSON_ArrayForEach(pr, cJSON_GetObjectItem(g, "prompts")) {
            int32_t ids[512], want[64], gen[64];
            int n = json_ints(cJSON_GetObjectItem(pr, "ids"), ids, 512);
            int n_gen = json_ints(cJSON_GetObjectItem(pr, "greedy"), want, 64);
            CHECK(n <= 512 && n_gen == 32);
            for (int k = 0; k < n_gen; k++) { /* step 0: the whole prompt; then one token */
                struct batch_seq s = {.pos = k ? n + k - 1 : 0, .n_tokens = k ? 1 : n,
                                      .tokens = k ? &gen[k - 1] : ids, .blocks = blocks,
                                      .n_blocks = N_BLOCKS - 1, .sp = &sp, .prompt = ids,
                                      .n_prompt = n, .output = gen, .n_out = k};
                struct batch b = {.seqs = &s, .n_seqs = 1};
                struct batch_out out;
                CHECK(engine_execute(&e, &b, &out) == 0 && out.n == 1);
                gen[k] = out.token[0];
            }
            CHECK_EQ(memcmp(gen, want, sizeof(int32_t) * (size_t)n_gen), 0);
            n_prompts++;
        }
        CHECK(n_prompts >= 5);
        CHECK(e.n_graph_steps >= 5 * 30); /* the decode steps ran as graphs */
        printf("# %s: emulated device backend: %lld graph steps\n", name, (long long)e.n_graph_steps);
    }
    if (!rc) engine_destroy(&e);
    model_destroy(&m);
    cJSON_Delete(g);
}

int main(void)
{
    check_layout("valley2", DT_BF16);
    check_layout("valley2_f16", DT_F16);
    check_config("valley2");
    check_config("valley2_f16");
    check_emulated("valley2");
    return test_report();
}
