/*
 * model: a Valley-family checkpoint folder read as it is: Valley2.5 (Qwen3 decoder, Qwen2-VL
 * tower) or Valley2 (Qwen2.5 decoder, SigLIP + Qwen2-VL towers), chosen from config.json
 * (docs/MODEL.md, "Recognising a checkpoint"). config.json → struct model_config;
 * every tensor the model needs bound by name to a host view into the memory-mapped
 * safetensors files, with shape and dtype checked. Read-only after model_load(); any thread.
 *
 * Tensor names (docs/MODEL.md, "Checkpoint layout"): model.embed_tokens.weight,
 * model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm,
 * post_attention_layernorm, mlp.{gate,up,down}_proj}.weight, model.norm.weight, lm_head.weight
 * (absent when tied); vision under model.qwen2vl_vision_tower. (patch_embed.proj, blocks.N.*,
 * merger.*). Valley2 adds model.layers.N.self_attn.{q,k,v}_proj.bias (and has no q/k norms),
 * the SigLIP tower under model.vision_tower.vision_tower.vision_model. and the projector under
 * model.mm_projector. (docs/MODEL.md, "Valley2 checkpoint layout").
 */
#ifndef VLM_MODEL_H
#define VLM_MODEL_H

#include "engine/backend.h"

#define VLM_MAX_EOS 8

/* Which member of the family a folder holds (docs/MODEL.md, "Recognising a checkpoint"). */
enum model_arch {
    MODEL_VALLEY25, /* ValleyQwen3ForCausalLM: Qwen3 decoder, only the Qwen2-VL tower */
    MODEL_VALLEY2,  /* ValleyQwen2ForCausalLM: Qwen2.5 decoder, SigLIP + Qwen2-VL towers */
};
const char *model_arch_name(enum model_arch a); /* "Valley2.5" / "Valley2" */

/* Valley2's projector types (config.json mm_projector_type) whose tensors are bound. */
enum mm_projector { MM_PROJ_NONE, MM_PROJ_CONV_ADAPTER, MM_PROJ_OVIS_CONV_ADAPTER };

struct model_config {
    enum model_arch arch;
    /* decoder (Qwen3, or Qwen2.5 for Valley2) */
    int32_t vocab_size;          /* embedding rows */
    int32_t hidden_size;
    int32_t intermediate_size;
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    float rope_theta;
    float rms_norm_eps;
    bool tie_word_embeddings;
    int32_t max_position_embeddings;
    int32_t bos_token_id;                 /* -1 if none */
    int32_t eos_token_ids[VLM_MAX_EOS];   /* config.json (+ generation_config.json) */
    int32_t n_eos;
    /* vision tower (docs/MODEL.md, "Vision tower", "Vision geometry in config.json");
     * has_vision false if the tensors are absent */
    bool has_vision;
    int32_t vit_depth, vit_embed_dim, vit_num_heads, vit_mlp_hidden;
    int32_t patch_size, temporal_patch_size, spatial_merge_size, in_chans;
    bool vit_quick_gelu;                  /* hidden_act quick_gelu (else exact gelu) */
    int32_t merger_hidden;                /* from merger.mlp.0.weight's shape */
    /* prompt settings carried by config.json */
    bool use_special_start_end_token;     /* absent = true: wrap images in <im_start>/<im_end> */
    int32_t tokenizer_model_max_length;   /* 0 if absent; the server refuses longer prompts
                                             (the reference truncates the spliced sequence) */
    bool only_navit;                      /* Valley2.5: absent = true; false with SigLIP tensors is
                                             refused. Valley2: absent = false; true is refused */
    bool qkv_bias;                        /* q/k/v projections carry biases (Valley2) */
    bool qk_norm;                         /* per-head q/k RMS norms before RoPE (Valley2.5) */
    /* Valley2's SigLIP tower and projector (docs/MODEL.md, "Valley2 checkpoint layout"):
     * bound and checked by name and shape; has_siglip false when the tensors are absent.
     * With both towers bound has_vision is true: every image runs through both. */
    bool has_siglip;
    int32_t sig_hidden, sig_ffn, sig_layers, sig_heads, sig_image, sig_patch, sig_channels;
    float sig_eps;
    bool sig_use_head;                    /* vision_use_head: the pooling head's tensors */
    enum mm_projector mm_projector;
    int32_t mm_hidden_size;               /* the projector's input width (= sig_hidden) */
    int32_t mm_mlp_hidden;                /* mlp_hidden_dim (0: conv_adapter's default) */
    bool has_eagle_tower;                 /* Valley2's Qwen2-VL tower was bound */
};

struct layer_weights {                    /* host views into the mmap, [out, in] row-major */
    struct tensor attn_norm;              /* (hidden) */
    struct tensor wq, wk, wv, wo;         /* (n_heads*hd, hidden) (n_kv*hd, hidden) ... (hidden, n_heads*hd) */
    struct tensor bq, bk, bv;             /* (n_heads*hd) (n_kv*hd) (n_kv*hd); .data NULL without
                                             qkv_bias */
    struct tensor q_norm, k_norm;         /* (head_dim); .data NULL without qk_norm */
    struct tensor mlp_norm;               /* (hidden) */
    struct tensor w_gate, w_up, w_down;   /* (ffn, hidden) (ffn, hidden) (hidden, ffn) */
};

struct vit_block_weights {
    struct tensor norm1_w, norm1_b;       /* (dim) */
    struct tensor qkv_w, qkv_b;           /* (3*dim, dim), (3*dim) */
    struct tensor proj_w, proj_b;         /* (dim, dim), (dim) */
    struct tensor norm2_w, norm2_b;
    struct tensor fc1_w, fc1_b;           /* (mlp, dim), (mlp) */
    struct tensor fc2_w, fc2_b;           /* (dim, mlp), (dim) */
};

struct siglip_layer_weights {
    struct tensor ln1_w, ln1_b, ln2_w, ln2_b;        /* (E) */
    struct tensor q_w, q_b, k_w, k_b, v_w, v_b;      /* (E, E), (E) */
    struct tensor o_w, o_b;                          /* (E, E), (E) */
    struct tensor fc1_w, fc1_b, fc2_w, fc2_b;        /* (F, E), (F), (E, F), (E) */
};

/* Valley2's SigLIP tower and projector, as bound (engine/siglip.h runs them). */
struct valley2_weights {
    struct tensor patch_w, patch_b;       /* (E, C*P*P) the Conv2d weight flattened, (E) */
    struct tensor pos_embed;              /* ((image/patch)², E) */
    struct siglip_layer_weights *layers;  /* (sig_layers), owned */
    struct tensor post_ln_w, post_ln_b;   /* (E) */
    /* projector: conv_adapter: mlp.0 (mlp_hidden, E) + bias, mlp.2 (hidden, mlp_hidden) +
     * bias, conv (hidden, hidden*3*3) + bias; ovis_conv_adapter: conv (E, E*3*3) + bias,
     * mlp.0 (mlp_hidden, E) no bias, mlp.1 LayerNorm (mlp_hidden), embedding (mlp_hidden, hidden) */
    struct tensor mlp0_w, mlp0_b, mlp2_w, mlp2_b, conv_w, conv_b;
    struct tensor ln_w, ln_b, embedding;
};

struct model_weights {
    struct tensor embed;                  /* (vocab, hidden) */
    struct tensor final_norm;             /* (hidden) */
    struct tensor lm_head;                /* (vocab, hidden); == embed when tied */
    struct layer_weights *layers;         /* (n_layers), owned */
    /* vision */
    struct tensor patch_embed;            /* (vit_dim, in_chans*t*p*p): the Conv3d weight flattened */
    struct vit_block_weights *vit_blocks; /* (vit_depth), owned */
    struct tensor merger_ln_w, merger_ln_b;   /* (vit_dim) */
    struct tensor merger_fc1_w, merger_fc1_b; /* (merger_hidden, vit_dim*merge²), (merger_hidden) */
    struct tensor merger_fc2_w, merger_fc2_b; /* (hidden, merger_hidden), (hidden) */
    struct valley2_weights v2;            /* Valley2 only */
};

struct st_set; /* safetensors.h */

struct model {
    char *dir;                   /* owned */
    struct model_config cfg;
    struct model_weights w;
    struct st_set *files;        /* owned: the mapped safetensors files */
};

/* Loads config.json and maps the safetensors files of dir, binds and checks every tensor.
 * On failure returns a negative code with a message naming the first missing or
 * mismatched tensor (or the bad config key) in *err; *m is left zeroed. */
int model_load(struct model *m, const char *dir, struct vlm_err *err);
/* Reads only config.json (+ generation_config.json) of dir into *cfg, without mapping any
 * weights; has_vision is left false and merger_hidden is the config's
 * navit_merger_hidden_dim (0 if absent): model_load() sets both from the tensors. */
int model_read_config(struct model_config *cfg, const char *dir, struct vlm_err *err);
void model_destroy(struct model *m); /* accepts a zeroed struct */

#endif
