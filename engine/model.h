/*
 * model: a Valley2.5 checkpoint folder read as it is. config.json → struct model_config;
 * every tensor the model needs bound by name to a host view into the memory-mapped
 * safetensors files, with shape and dtype checked. Read-only after model_load(); any thread.
 *
 * Tensor names (docs/MODEL.md, "Checkpoint layout"): model.embed_tokens.weight,
 * model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm,
 * post_attention_layernorm, mlp.{gate,up,down}_proj}.weight, model.norm.weight, lm_head.weight
 * (absent when tied); vision under model.qwen2vl_vision_tower. (patch_embed.proj, blocks.N.*,
 * merger.*).
 */
#ifndef VLM_MODEL_H
#define VLM_MODEL_H

#include "engine/backend.h"

#define VLM_MAX_EOS 8

struct model_config {
    /* decoder (Qwen3) */
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
    bool only_navit;                      /* absent = true; false with SigLIP tensors is refused */
};

struct layer_weights {                    /* host views into the mmap, [out, in] row-major */
    struct tensor attn_norm;              /* (hidden) */
    struct tensor wq, wk, wv, wo;         /* (n_heads*hd, hidden) (n_kv*hd, hidden) ... (hidden, n_heads*hd) */
    struct tensor q_norm, k_norm;         /* (head_dim) */
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
