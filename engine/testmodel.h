/*
 * testmodel: writes a complete Valley2.5-layout model folder with small dimensions and
 * weights from a seeded deterministic generator: config.json, generation_config.json,
 * model.safetensors (or shards + index) in the real tensor names (docs/MODEL.md, "Checkpoint
 * layout"), and the tokenizer files (copied from a folder, or a small synthesized byte-level
 * BPE tokenizer; as tokenizer.json or as the slow files, optionally with the Valley added
 * tokens).
 *
 * The output is a pure function of the parameters (and the copied tokenizer files): only
 * integer arithmetic, exactly rounded IEEE operations and sqrt are used, so the bytes are
 * identical on every machine and CI regenerates checkpoints instead of storing them.
 *
 * Callers: valley-make-model (engine/make_model_main.c), the ctest fixtures of
 * tests/models.txt, unit tests, and the server when it creates its embedded default model.
 * Thread-safe (no shared state); writing the same folder from several processes at once is
 * safe (write to a temporary folder, then rename).
 */
#ifndef VLM_TESTMODEL_H
#define VLM_TESTMODEL_H

#include "engine/base.h"
#include "engine/backend.h"

struct testmodel_params {
    uint64_t seed;
    /* decoder (Qwen3) */
    int32_t hidden, layers, heads, kv_heads, head_dim, ffn;
    int32_t vocab;          /* embedding rows; 0: 151936 with a copied tokenizer, else the
                               synthesized tokenizer's size rounded up to a multiple of 64 */
    bool tie;               /* tie_word_embeddings: no lm_head.weight */
    /* vision tower + projector */
    bool vision;
    int32_t vit_depth, vit_dim, vit_heads, vit_mlp_ratio, merger_hidden;
    enum dtype dtype;       /* DT_BF16, DT_F16 or DT_F32 */
    /* Valley2 (valley-make-model --arch valley2; docs/MODEL.md, "Valley2 checkpoint layout"):
     * ValleyQwen2ForCausalLM, a Qwen2.5 decoder (q/k/v biases, no q/k norms), eos <|im_end|>,
     * the Qwen2.5-style chat template in tokenizer_config.json; with vision, the SigLIP tower
     * (sig_* geometry, in siglip_vision_config), the conv_adapter projector (hidden
     * proj_hidden, in mlp_hidden_dim) and the Qwen2-VL tower with the original PatchMerger
     * (merger hidden 4 * vit_dim) unless merger_hidden is set otherwise, which writes the
     * custom merger and navit_merger_hidden_dim. */
    bool valley2;
    int32_t sig_dim, sig_layers, sig_heads, sig_ffn, sig_image, proj_hidden;
    bool ovis_projector;    /* Valley2: the ovis_conv_adapter projector instead (conv on the
                               SigLIP width, a proj_hidden-entry visual vocabulary) */
    int32_t shards;         /* 1: model.safetensors; n > 1: n shards + model.safetensors.index.json */
    const char *tokenizer_dir; /* borrowed; NULL: synthesize a small tokenizer */
    bool slow_tokenizer;    /* write the tokenizer as the slow files (vocab.json, merges.txt,
                               added_tokens.json, special_tokens_map.json, tokenizer_config.json;
                               engine/slowtok.h) and no tokenizer.json */
    bool valley_tokens;     /* add the 10 Valley added tokens after the tokenizer's last id
                               (151669..151678 with the Qwen3 tokenizer); vocab then defaults
                               to the tokenizer's size (151679) */
    /* the release folder's shape (docs/MODEL.md, "Checkpoint layout"): config.json without
     * use_special_start_end_token, eos_token_id <|endoftext|> only (config.json and
     * generation_config.json, as Qwen3 Base configs), and no vision_config when the tower
     * has the Qwen2-VL geometry (the real code hard-codes it) */
    bool release;
    /* (optional) a scripted decoder, for API tests of what only a trained model emits
     * (<think> blocks, tool calls): script holds chains of ids separated by -1; after id a,
     * greedy decoding emits the id that follows a in its chain, whatever came before
     * (o_proj and down_proj are zero, so each position's hidden state is its own embedding,
     * and lm_head row b points along the final-normed embedding of its predecessor a, with
     * every other row zero: b wins by a wide margin even when sampling at temperature 1).
     * Every id that has a successor appears once as a predecessor (an id may end several
     * chains); needs an untied lm_head. Borrowed. */
    const int32_t *script;
    int32_t n_script;
    /* (optional) the built-in greeting: with the synthesized tokenizer and no script, the
     * tokenizer gets one token per piece of TESTMODEL_GREETING (extra merges after the
     * trained ones) and the decoder is scripted so that, after the last token of either
     * generation prompt (thinking on: "...assistant\n"; off: "...</think>\n\n"), greedy
     * decoding answers exactly TESTMODEL_GREETING then <|im_end|>. The server's embedded
     * default model sets it, so a first request explains what is answering. */
    bool greeting;
};

/* The built-in greeting. Its pre-tokenizer pieces are all different (the scripted decoder
 * has one successor per id), so the wording is chosen with that in mind. */
#define TESTMODEL_GREETING                                                                   \
    "Hello! I am the built-in test model (random weights). To serve a real checkpoint, run: " \
    "valley-server --model /path/to/Valley2.5"

/* The embedded default model's geometry: hidden 256, 4 layers, 8 heads / 2 KV heads,
 * head_dim 32, ffn 512, vision depth 2, dim 64, 4 heads, merger hidden 256, bf16,
 * synthesized tokenizer. (The server adds .greeting = true.) */
void testmodel_defaults(struct testmodel_params *p);

/* The full Valley2.5 geometry (36 layers, hidden 4096, 32/8 heads x 128, ffn 12288, untied,
 * vocab 151679, ViT 32 x 1280 x 16 heads, projector 5120 -> 65536 -> 4096), bf16, in the
 * release shape (slow tokenizer files with the Valley tokens), 8 shards: about 19 GB,
 * written tensor by tensor (one tensor in memory at a time). */
void testmodel_preset_valley25(struct testmodel_params *p);

/* Switches p to the Valley2 layout (sets .valley2 and the small SigLIP defaults: width 32,
 * 2 layers, 2 heads, MLP 64, 384-pixel input (27 x 27 patches, as so400m), projector hidden
 * 64; merger hidden 4 * vit_dim). Options given after it still apply. */
void testmodel_arch_valley2(struct testmodel_params *p);

/* Writes the folder dir (created with its parents as needed). If dir already holds the
 * output of the same parameters (its .stamp matches), nothing is rewritten. */
int testmodel_write(const char *dir, const struct testmodel_params *p, struct vlm_err *err);

/* True if dir holds the output of p already (what testmodel_write would skip). */
bool testmodel_up_to_date(const char *dir, const struct testmodel_params *p);

/* Writes only the synthesized tokenizer (tokenizer.json, tokenizer_config.json) into the
 * existing folder dir. *n_tokens (if non-NULL) gets the number of ids it defines: BPE vocab
 * then the 26 Qwen3 added tokens, <|endoftext|> first. */
int testmodel_write_tokenizer(const char *dir, int32_t *n_tokens, struct vlm_err *err);

#endif
