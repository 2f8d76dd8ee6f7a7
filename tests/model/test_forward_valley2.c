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
 * Qwen2-VL tower with the original merger) load as Valley2 with every tensor bound; the
 * towers are bound but not run, so the model reports no vision; f16 weights are used in
 * place like bf16.
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
        CHECK(m.cfg.has_siglip && m.cfg.has_eagle_tower && !m.cfg.has_vision);
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

int main(void)
{
    check_layout("valley2", DT_BF16);
    check_layout("valley2_f16", DT_F16);
    check_config("valley2");
    check_config("valley2_f16");
    return test_report();
}
