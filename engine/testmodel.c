/*
 * testmodel: the deterministic test-checkpoint generator. See testmodel.h.
 *
 * Sections: the random numbers, the tensor list, the synthesized tokenizer, the JSON
 * files, and the folder write (temporary folder + rename, stamp file).
 */
#include "engine/testmodel.h"

#include "engine/safetensors.h"
#include "engine/slowtok.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bump when the output for the same parameters changes, so stale folders are rewritten. */
#define TESTMODEL_VERSION "testmodel-1"
#define QWEN3_VOCAB 151936

void testmodel_defaults(struct testmodel_params *p)
{
    *p = (struct testmodel_params){
        .seed = 0, .hidden = 256, .layers = 4, .heads = 8, .kv_heads = 2, .head_dim = 32,
        .ffn = 512, .vocab = 0, .tie = false, .vision = true, .vit_depth = 2, .vit_dim = 64,
        .vit_heads = 4, .vit_mlp_ratio = 4, .merger_hidden = 256, .dtype = DT_BF16,
        .shards = 1, .tokenizer_dir = NULL,
    };
}

void testmodel_preset_valley25(struct testmodel_params *p)
{
    testmodel_defaults(p);
    p->hidden = 4096, p->layers = 36, p->heads = 32, p->kv_heads = 8, p->head_dim = 128;
    p->ffn = 12288, p->vocab = 151679, p->tie = false;
    p->vit_depth = 32, p->vit_dim = 1280, p->vit_heads = 16, p->vit_mlp_ratio = 4;
    p->merger_hidden = 65536;
    p->shards = 8;
    p->release = p->slow_tokenizer = p->valley_tokens = true;
}

void testmodel_arch_valley2(struct testmodel_params *p)
{
    p->valley2 = true;
    p->sig_dim = 32, p->sig_layers = 2, p->sig_heads = 2, p->sig_ffn = 64, p->sig_image = 384;
    p->proj_hidden = 64;
    p->merger_hidden = 4 * p->vit_dim;
}

/* ==== Random numbers ====
 * splitmix64 (vlm_mix64_next), one stream per tensor seeded from (seed, tensor name), so a
 * tensor's values do not depend on which other tensors exist. A value is 24 random bits
 * turned into an exact float u in [-1, 1), then scaled by a power of two or by a float
 * computed with sqrt (correctly rounded everywhere). */

static float uniform_pm1(uint64_t *s)
{
    int32_t k = (int32_t)(vlm_mix64_next(s) >> 40) - (1 << 23); /* [-2^23, 2^23) */
    return (float)k * (1.0f / 8388608.0f);
}

/* ==== The tensor list ====
 * Every tensor of the Valley2.5 layout with its shape and how its values are drawn:
 *   linear: u * sqrt(3 / fan_in)   (variance 1 / fan_in)
 *   embed:  u
 *   norm:   1 + u / 8              (RMSNorm / LayerNorm weights near 1)
 *   bias:   u / 16                 (small) */

enum gen_kind { GEN_LINEAR, GEN_EMBED, GEN_NORM, GEN_BIAS };

struct gen_tensor {
    char name[128];
    int32_t rank;
    int64_t shape[5];
    enum gen_kind kind;
    int64_t fan_in;
};

struct gen_list {
    struct gen_tensor *t; /* owned */
    int32_t n, cap;
};

static void gen_add(struct gen_list *g, enum gen_kind kind, int64_t d0, int64_t d1,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void gen_add(struct gen_list *g, enum gen_kind kind, int64_t d0, int64_t d1,
                    const char *fmt, ...)
{
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 64;
        g->t = xrealloc(g->t, (size_t)g->cap * sizeof *g->t);
    }
    struct gen_tensor *t = &g->t[g->n++];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->kind = kind;
    t->rank = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->fan_in = d1 ? d1 : d0;
}

/* The last tensor added, reshaped to rank 4 (d0, d1, d2, d3): conv weights. */
static void gen_rank4(struct gen_list *g, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    struct gen_tensor *t = &g->t[g->n - 1];
    t->rank = 4;
    t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2, t->shape[3] = d3;
    t->fan_in = d1 * d2 * d3;
}

/* Valley2's SigLIP tower (transformers' SiglipVisionModel names, with the attention-pooling
 * head it saves) and its conv_adapter (or ovis_conv_adapter) projector. */
static void gen_build_valley2(struct gen_list *g, const struct testmodel_params *p)
{
    const char *sv = "model.vision_tower.vision_tower.vision_model.";
    const char *pj = "model.mm_projector.";
    int64_t E = p->sig_dim, F = p->sig_ffn, side = p->sig_image / 14, H = p->hidden;
    int64_t MH = p->proj_hidden;
    gen_add(g, GEN_LINEAR, E, 3 * 14 * 14, "%sembeddings.patch_embedding.weight", sv);
    gen_rank4(g, E, 3, 14, 14);
    gen_add(g, GEN_BIAS, E, 0, "%sembeddings.patch_embedding.bias", sv);
    gen_add(g, GEN_EMBED, side * side, E, "%sembeddings.position_embedding.weight", sv);
    static const char *const qkvo[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int32_t l = 0; l < p->sig_layers; l++) {
        gen_add(g, GEN_NORM, E, 0, "%sencoder.layers.%d.layer_norm1.weight", sv, l);
        gen_add(g, GEN_BIAS, E, 0, "%sencoder.layers.%d.layer_norm1.bias", sv, l);
        for (int i = 0; i < 4; i++) {
            gen_add(g, GEN_LINEAR, E, E, "%sencoder.layers.%d.self_attn.%s.weight", sv, l, qkvo[i]);
            gen_add(g, GEN_BIAS, E, 0, "%sencoder.layers.%d.self_attn.%s.bias", sv, l, qkvo[i]);
        }
        gen_add(g, GEN_NORM, E, 0, "%sencoder.layers.%d.layer_norm2.weight", sv, l);
        gen_add(g, GEN_BIAS, E, 0, "%sencoder.layers.%d.layer_norm2.bias", sv, l);
        gen_add(g, GEN_LINEAR, F, E, "%sencoder.layers.%d.mlp.fc1.weight", sv, l);
        gen_add(g, GEN_BIAS, F, 0, "%sencoder.layers.%d.mlp.fc1.bias", sv, l);
        gen_add(g, GEN_LINEAR, E, F, "%sencoder.layers.%d.mlp.fc2.weight", sv, l);
        gen_add(g, GEN_BIAS, E, 0, "%sencoder.layers.%d.mlp.fc2.bias", sv, l);
    }
    gen_add(g, GEN_NORM, E, 0, "%spost_layernorm.weight", sv);
    gen_add(g, GEN_BIAS, E, 0, "%spost_layernorm.bias", sv);
    gen_add(g, GEN_EMBED, E, 0, "%shead.probe", sv);
    struct gen_tensor *probe = &g->t[g->n - 1];
    probe->rank = 3, probe->shape[0] = 1, probe->shape[1] = 1, probe->shape[2] = E;
    gen_add(g, GEN_LINEAR, 3 * E, E, "%shead.attention.in_proj_weight", sv);
    gen_add(g, GEN_BIAS, 3 * E, 0, "%shead.attention.in_proj_bias", sv);
    gen_add(g, GEN_LINEAR, E, E, "%shead.attention.out_proj.weight", sv);
    gen_add(g, GEN_BIAS, E, 0, "%shead.attention.out_proj.bias", sv);
    gen_add(g, GEN_NORM, E, 0, "%shead.layernorm.weight", sv);
    gen_add(g, GEN_BIAS, E, 0, "%shead.layernorm.bias", sv);
    gen_add(g, GEN_LINEAR, F, E, "%shead.mlp.fc1.weight", sv);
    gen_add(g, GEN_BIAS, F, 0, "%shead.mlp.fc1.bias", sv);
    gen_add(g, GEN_LINEAR, E, F, "%shead.mlp.fc2.weight", sv);
    gen_add(g, GEN_BIAS, E, 0, "%shead.mlp.fc2.bias", sv);
    if (p->ovis_projector) {
        /* ovis_conv_adapter: Conv2d(E, E, 3, stride 2, pad 1), Linear(E, MH) without bias,
         * LayerNorm(MH), the embedding table (MH, H) */
        gen_add(g, GEN_LINEAR, E, E * 9, "%sconv.weight", pj);
        gen_rank4(g, E, E, 3, 3);
        gen_add(g, GEN_BIAS, E, 0, "%sconv.bias", pj);
        gen_add(g, GEN_LINEAR, MH, E, "%smlp.0.weight", pj);
        gen_add(g, GEN_NORM, MH, 0, "%smlp.1.weight", pj);
        gen_add(g, GEN_BIAS, MH, 0, "%smlp.1.bias", pj);
        gen_add(g, GEN_EMBED, MH, H, "%sembedding.weight", pj);
        return;
    }
    /* conv_adapter: Linear(E, MH), GELU, Linear(MH, H), Conv2d(H, H, 3, stride 2, pad 1) */
    gen_add(g, GEN_LINEAR, MH, E, "%smlp.0.weight", pj);
    gen_add(g, GEN_BIAS, MH, 0, "%smlp.0.bias", pj);
    gen_add(g, GEN_LINEAR, H, MH, "%smlp.2.weight", pj);
    gen_add(g, GEN_BIAS, H, 0, "%smlp.2.bias", pj);
    gen_add(g, GEN_LINEAR, H, H * 9, "%sconv.weight", pj);
    gen_rank4(g, H, H, 3, 3);
    gen_add(g, GEN_BIAS, H, 0, "%sconv.bias", pj);
}

static void gen_build(struct gen_list *g, const struct testmodel_params *p, int32_t vocab)
{
    int64_t H = p->hidden, Q = (int64_t)p->heads * p->head_dim;
    int64_t KV = (int64_t)p->kv_heads * p->head_dim, F = p->ffn;
    gen_add(g, GEN_EMBED, vocab, H, "model.embed_tokens.weight");
    for (int32_t l = 0; l < p->layers; l++) {
        gen_add(g, GEN_NORM, H, 0, "model.layers.%d.input_layernorm.weight", l);
        gen_add(g, GEN_LINEAR, Q, H, "model.layers.%d.self_attn.q_proj.weight", l);
        gen_add(g, GEN_LINEAR, KV, H, "model.layers.%d.self_attn.k_proj.weight", l);
        gen_add(g, GEN_LINEAR, KV, H, "model.layers.%d.self_attn.v_proj.weight", l);
        gen_add(g, GEN_LINEAR, H, Q, "model.layers.%d.self_attn.o_proj.weight", l);
        if (p->valley2) { /* Qwen2.5: q/k/v biases, no q/k norms */
            gen_add(g, GEN_BIAS, Q, 0, "model.layers.%d.self_attn.q_proj.bias", l);
            gen_add(g, GEN_BIAS, KV, 0, "model.layers.%d.self_attn.k_proj.bias", l);
            gen_add(g, GEN_BIAS, KV, 0, "model.layers.%d.self_attn.v_proj.bias", l);
        } else {
            gen_add(g, GEN_NORM, p->head_dim, 0, "model.layers.%d.self_attn.q_norm.weight", l);
            gen_add(g, GEN_NORM, p->head_dim, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        }
        gen_add(g, GEN_NORM, H, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        gen_add(g, GEN_LINEAR, F, H, "model.layers.%d.mlp.gate_proj.weight", l);
        gen_add(g, GEN_LINEAR, F, H, "model.layers.%d.mlp.up_proj.weight", l);
        gen_add(g, GEN_LINEAR, H, F, "model.layers.%d.mlp.down_proj.weight", l);
    }
    gen_add(g, GEN_NORM, H, 0, "model.norm.weight");
    if (!p->tie) gen_add(g, GEN_LINEAR, vocab, H, "lm_head.weight");
    if (!p->vision) return;

    const char *vt = "model.qwen2vl_vision_tower.";
    int64_t E = p->vit_dim, M = (int64_t)p->vit_dim * p->vit_mlp_ratio, MH = p->merger_hidden;
    /* Conv3d [E, 3, 2, 14, 14], no bias */
    gen_add(g, GEN_LINEAR, E, 3 * 2 * 14 * 14, "%spatch_embed.proj.weight", vt);
    struct gen_tensor *pe = &g->t[g->n - 1];
    pe->rank = 5;
    pe->shape[1] = 3, pe->shape[2] = 2, pe->shape[3] = 14, pe->shape[4] = 14;
    for (int32_t b = 0; b < p->vit_depth; b++) {
        gen_add(g, GEN_NORM, E, 0, "%sblocks.%d.norm1.weight", vt, b);
        gen_add(g, GEN_BIAS, E, 0, "%sblocks.%d.norm1.bias", vt, b);
        gen_add(g, GEN_NORM, E, 0, "%sblocks.%d.norm2.weight", vt, b);
        gen_add(g, GEN_BIAS, E, 0, "%sblocks.%d.norm2.bias", vt, b);
        gen_add(g, GEN_LINEAR, 3 * E, E, "%sblocks.%d.attn.qkv.weight", vt, b);
        gen_add(g, GEN_BIAS, 3 * E, 0, "%sblocks.%d.attn.qkv.bias", vt, b);
        gen_add(g, GEN_LINEAR, E, E, "%sblocks.%d.attn.proj.weight", vt, b);
        gen_add(g, GEN_BIAS, E, 0, "%sblocks.%d.attn.proj.bias", vt, b);
        gen_add(g, GEN_LINEAR, M, E, "%sblocks.%d.mlp.fc1.weight", vt, b);
        gen_add(g, GEN_BIAS, M, 0, "%sblocks.%d.mlp.fc1.bias", vt, b);
        gen_add(g, GEN_LINEAR, E, M, "%sblocks.%d.mlp.fc2.weight", vt, b);
        gen_add(g, GEN_BIAS, E, 0, "%sblocks.%d.mlp.fc2.bias", vt, b);
    }
    if (p->valley2) gen_build_valley2(g, p);
    gen_add(g, GEN_NORM, E, 0, "%smerger.ln_q.weight", vt);
    gen_add(g, GEN_BIAS, E, 0, "%smerger.ln_q.bias", vt);
    gen_add(g, GEN_LINEAR, MH, 4 * E, "%smerger.mlp.0.weight", vt);
    gen_add(g, GEN_BIAS, MH, 0, "%smerger.mlp.0.bias", vt);
    gen_add(g, GEN_LINEAR, H, MH, "%smerger.mlp.2.weight", vt);
    gen_add(g, GEN_BIAS, H, 0, "%smerger.mlp.2.bias", vt);
}

struct gen_ctx {
    const struct gen_list *g;
    const int32_t *index; /* (n) st tensor i -> gen tensor index */
    uint64_t seed;
    enum dtype dtype;
    const struct testmodel_params *p; /* for the scripted decoder */
};

/* The generator's state before element 0 of tensor name: element k is uniform_pm1 of the
 * state plus k steps (splitmix64 is a counter), so any element can be drawn directly. */
static uint64_t gen_state(uint64_t seed, const char *name)
{
    uint64_t s = seed ^ vlm_hash64(name, strlen(name), 0x76616c6c6579ull);
    (void)vlm_mix64_next(&s);
    return s;
}

static float gen_elem(uint64_t s0, int64_t k)
{
    uint64_t s = s0 + (uint64_t)k * 0x9e3779b97f4a7c15ull;
    return uniform_pm1(&s);
}

static float as_stored(float v, enum dtype t)
{
    return t == DT_BF16 ? bf16_to_f32(f32_to_bf16(v)) : t == DT_F16 ? f16_to_f32(f32_to_f16(v)) : v;
}

static void put(void *buf, enum dtype t, int64_t k, float v)
{
    if (t == DT_BF16) ((uint16_t *)buf)[k] = f32_to_bf16(v);
    else if (t == DT_F16) ((uint16_t *)buf)[k] = f32_to_f16(v);
    else ((float *)buf)[k] = v;
}

/* The scripted decoder's weights (testmodel.h): o_proj and down_proj zero; lm_head row b =
 * the sum over a -> b of the script of 8 * unit(norm(embed(a)) * final_norm_weight). Returns
 * false for every other tensor. */
static bool script_fill(const struct gen_ctx *c, const struct gen_tensor *t, void *buf)
{
    const struct testmodel_params *p = c->p;
    bool zero = strstr(t->name, ".self_attn.o_proj.") || strstr(t->name, ".mlp.down_proj.");
    bool head = !strcmp(t->name, "lm_head.weight");
    if (!zero && !head) return false;
    int64_t n = t->shape[0] * (t->rank > 1 ? t->shape[1] : 1), H = p->hidden;
    if (zero) {
        for (int64_t k = 0; k < n; k++) put(buf, c->dtype, k, 0.0f);
        return true;
    }
    uint64_t se = gen_state(c->seed, "model.embed_tokens.weight");
    uint64_t sn = gen_state(c->seed, "model.norm.weight");
    double *h = xmalloc((size_t)H * sizeof *h);
    float *rows = xcalloc((size_t)n, sizeof *rows);
    for (int32_t i = 0; i + 1 < p->n_script; i++) {
        int32_t a = p->script[i], b = p->script[i + 1];
        if (a < 0 || b < 0) continue;
        double ss = 0.0, hh = 0.0;
        for (int64_t j = 0; j < H; j++) {
            h[j] = as_stored(gen_elem(se, (int64_t)a * H + j), c->dtype);
            ss += h[j] * h[j];
        }
        for (int64_t j = 0; j < H; j++) {
            h[j] *= (double)as_stored(1.0f + gen_elem(sn, j) * 0.125f, c->dtype) / sqrt(ss / (double)H);
            hh += h[j] * h[j];
        }
        for (int64_t j = 0; j < H; j++) /* an id that ends two chains sums both directions */
            rows[(int64_t)b * H + j] += (float)(8.0 * h[j] / sqrt(hh));
    }
    for (int64_t k = 0; k < n; k++) put(buf, c->dtype, k, rows[k]);
    free(rows);
    free(h);
    return true;
}

/* st_fill_fn: draws gen tensor c->index[i] into buf. */
static void gen_fill(void *ctx, int32_t i, void *buf)
{
    const struct gen_ctx *c = ctx;
    const struct gen_tensor *t = &c->g->t[c->index[i]];
    if (c->p->n_script && script_fill(c, t, buf)) return;
    uint64_t s = gen_state(c->seed, t->name);
    int64_t n = 1;
    for (int32_t d = 0; d < t->rank; d++) n *= t->shape[d];
    float scale = t->kind == GEN_LINEAR ? (float)sqrt(3.0 / (double)t->fan_in)
                : t->kind == GEN_NORM  ? 0.125f
                : t->kind == GEN_BIAS  ? 0.0625f : 1.0f;
    for (int64_t k = 0; k < n; k++) {
        float v = uniform_pm1(&s) * scale;
        if (t->kind == GEN_NORM) v += 1.0f;
        put(buf, c->dtype, k, v);
    }
}

/* ==== The synthesized tokenizer ====
 * A byte-level BPE tokenizer in the Hugging Face tokenizer.json format, for the embedded
 * default model on machines without the Qwen3 tokenizer files. Ids 0..255 are the 256 byte
 * symbols in the GPT-2 byte-to-unicode order, then the merges learned here, then the 26
 * Qwen3 added tokens. The merges are learned from tok_corpus below (text written for this
 * project) by plain BPE training: count adjacent pairs over the pre-split words, merge the
 * most frequent (ties: smallest ids), repeat. The pre-split used for training is a simple
 * ASCII approximation of the Qwen2 regex; the tokenizer itself runs the real regex. */

static const char tok_corpus[] =
    "The valley server answers questions about pictures and text. It reads a model folder, "
    "maps the weights into memory, and waits for requests on a port. When a request "
    "arrives, the server turns the messages into tokens, runs the vision tower over every "
    "image, and places the image features where the placeholders were. Then the decoder "
    "predicts one token at a time until it reaches an end token or the length limit.\n"
    "A token is a small piece of text. Common words such as the, and, of, to, in, is, it, "
    "that, for, with, on, as, was, are, this, be, at, by, from, have, not, or, but, one, all, "
    "can, will, there, their, what, which, when, where, who, how, many, some, more, other, "
    "into, over, under, after, before, between, through, about, again are often one token; "
    "longer or rarer words are split into several pieces.\n"
    "We don't guess what the reference does; we read it, and we test it. It's easy to be "
    "wrong by one position, so every step is checked against numbers that were computed "
    "elsewhere. They'll tell you the same thing: measure first, then change the code.\n"
    "Numbers are written digit by digit: 1, 2, 3, 10, 42, 100, 2048, 65536, 3.14159 and "
    "2026-11-23 all become single digits and punctuation.\n"
    "Rivers run down the valley in the spring. The water is cold and clear, and the "
    "stones under it are round and smooth. Birds sing in the trees along the banks, and "
    "people walk there in the morning and in the evening. In the summer the grass grows "
    "tall and green; in the autumn the leaves turn red, orange and yellow; in the winter "
    "the snow covers everything and the valley is quiet.\n"
    "Questions people ask: What is in this image? How many cats are sitting on the sofa? "
    "Which colour is the car? Where was this photo taken? Describe the given image. "
    "Please answer in one sentence. Think step by step, then give the answer.\n"
    "def forward(self, x):\n    return self.norm(x + self.attention(x))\n"
    "for (int i = 0; i < n; i++) {\n    y[i] = x[i] * w[i];\n}\n"
    "The scheduler decides which requests run in each step, how many tokens each one gets, "
    "and which blocks of the cache they use. The engine owns the memory and does the math. "
    "Tests run on the processor of a small machine, and the graphics card runs the same "
    "steps much faster.\n"
    "Every request has a state: waiting, running, preempted or finished. A waiting request "
    "has not started yet; a running request is being computed; a preempted request gave its "
    "blocks back and will start again later; a finished request has stopped because it "
    "reached an end token, the length limit, or because the client went away. The server "
    "streams the answer as it is generated, one small chunk after another, so the reader "
    "sees the first words quickly. When the client closes the connection, the request is "
    "aborted and its blocks are returned to the pool at the end of the step.\n"
    "Images are resized so that both sides are multiples of twenty eight pixels, then cut "
    "into patches of fourteen by fourteen pixels. Each group of four neighbouring patches "
    "becomes one position in the language model, so a picture of four hundred and forty "
    "eight pixels square takes two hundred and fifty six positions. Videos are treated as "
    "a list of frames, and each frame is handled like an image.\n"
    "The configuration is read once at start-up. Options can be given on the command line, "
    "in the environment, or in a file; the command line wins. A wrong value stops the "
    "program with a message that names the option, the value, and what would be allowed. "
    "Nothing is changed while the server is running, which keeps the behaviour simple to "
    "explain and easy to test.\n";

#define TOK_MAX_MERGES 400      /* learned from tok_corpus */
#define TOK_GREETING_MERGES 160 /* appended for the greeting's pieces */
#define TOK_MAX_SYMS (256 + TOK_MAX_MERGES + TOK_GREETING_MERGES)
#define TOK_MAX_SCRIPT 96

/* The 26 Qwen3 added tokens in id order; the first 14 are special (docs/MODEL.md, "Tokenizer"). */
static const char *const tok_added[] = {
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
};
#define TOK_N_SPECIAL 14

/* The Qwen2 pre-tokenizer regex, as a JSON string body (backslashes escaped once). */
static const char tok_split_regex_json[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}"
    "| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+";

struct tok_model {
    char sym[TOK_MAX_SYMS][64]; /* UTF-8 of each vocab id (byte-level unicode chars) */
    int32_t n_sym;
    int32_t merge_a[TOK_MAX_MERGES + TOK_GREETING_MERGES];
    int32_t merge_b[TOK_MAX_MERGES + TOK_GREETING_MERGES];
    int32_t merge_out[TOK_MAX_MERGES + TOK_GREETING_MERGES]; /* the merged symbol's id */
    int32_t n_merges;
};

/* Records the merge (a, b) and returns the merged symbol's id: an existing one when the
 * string is already in the vocabulary (a different merge path), else a new one; -1 (nothing
 * recorded) when the merged string would not fit a symbol. */
static int32_t tok_add_merge(struct tok_model *m, int32_t a, int32_t b)
{
    char merged[sizeof m->sym[0]];
    size_t la = strlen(m->sym[a]), lb = strlen(m->sym[b]);
    if (la + lb >= sizeof merged) return -1;
    memcpy(merged, m->sym[a], la);
    memcpy(merged + la, m->sym[b], lb + 1);
    int32_t id = -1;
    for (int32_t k = 0; k < m->n_sym && id < 0; k++)
        if (!strcmp(m->sym[k], merged)) id = k;
    if (id < 0) {
        id = m->n_sym++;
        strcpy(m->sym[id], merged);
    }
    m->merge_a[m->n_merges] = a;
    m->merge_b[m->n_merges] = b;
    m->merge_out[m->n_merges++] = id;
    return id;
}

/* GPT-2's byte -> unicode code point map; order[i] is the byte of vocab id i. */
static void byte_map(uint32_t cp[256], uint8_t order[256])
{
    bool direct[256] = {false};
    int n = 0;
    for (int b = 0; b < 256; b++) {
        direct[b] = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        if (direct[b]) { cp[b] = (uint32_t)b; order[n++] = (uint8_t)b; }
    }
    uint32_t extra = 0;
    for (int b = 0; b < 256; b++)
        if (!direct[b]) { cp[b] = 256 + extra++; order[n++] = (uint8_t)b; }
}

static int utf8_put(char *o, uint32_t c)
{
    if (c < 0x80) { o[0] = (char)c; return 1; }
    o[0] = (char)(0xc0 | (c >> 6));
    o[1] = (char)(0x80 | (c & 0x3f));
    return 2; /* the byte map never exceeds U+0143 */
}

struct tok_word {
    int32_t *s; /* owned: symbol ids */
    int32_t len, count;
};

struct tok_pair {
    int32_t a, b, w;
};

static int cmp_pair(const void *x, const void *y)
{
    const struct tok_pair *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    if (p->b != q->b) return p->b < q->b ? -1 : 1;
    return 0;
}

/* ASCII approximation of the Qwen2 split: [ ]?letters+ | digit | [ ]?punct+[\n]* | spaces */
static size_t tok_next_piece(const char *s, size_t i, size_t n)
{
    size_t j = i;
#define ISAL(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define ISDG(c) ((c) >= '0' && (c) <= '9')
#define ISSP(c) ((c) == ' ' || (c) == '\n' || (c) == '\t')
    if (s[j] == ' ' && j + 1 < n && ISAL(s[j + 1])) j++;
    if (ISAL(s[j])) { while (j < n && ISAL(s[j])) j++; return j; }
    if (ISDG(s[j])) return j + 1;
    if (s[j] == ' ' && j + 1 < n && !ISSP(s[j + 1]) && !ISDG(s[j + 1])) j++;
    if (!ISSP(s[j])) {
        while (j < n && !ISSP(s[j]) && !ISAL(s[j]) && !ISDG(s[j])) j++;
        while (j < n && s[j] == '\n') j++;
        return j;
    }
    while (j < n && ISSP(s[j])) j++;
    return j;
#undef ISAL
#undef ISDG
#undef ISSP
}

static void tok_train(struct tok_model *m)
{
    uint32_t cp[256];
    uint8_t order[256];
    int32_t id_of_byte[256];
    byte_map(cp, order);
    memset(m, 0, sizeof *m);
    for (int i = 0; i < 256; i++) {
        int k = utf8_put(m->sym[i], cp[order[i]]);
        m->sym[i][k] = 0;
        id_of_byte[order[i]] = i;
    }
    m->n_sym = 256;

    /* unique words with counts, in first-seen order */
    size_t n = sizeof tok_corpus - 1;
    struct tok_word *w = xcalloc(n, sizeof *w);
    int32_t n_words = 0;
    for (size_t i = 0; i < n;) {
        size_t j = tok_next_piece(tok_corpus, i, n);
        int32_t k;
        for (k = 0; k < n_words; k++) {
            if ((size_t)w[k].len != j - i) continue;
            int32_t x = 0;
            while (x < w[k].len && w[k].s[x] == id_of_byte[(uint8_t)tok_corpus[i + (size_t)x]]) x++;
            if (x == w[k].len) break;
        }
        if (k == n_words) {
            w[k].len = (int32_t)(j - i);
            w[k].s = xmalloc((j - i) * sizeof(int32_t));
            for (size_t x = i; x < j; x++) w[k].s[x - i] = id_of_byte[(uint8_t)tok_corpus[x]];
            n_words++;
        }
        w[k].count++;
        i = j;
    }

    struct tok_pair *pairs = xmalloc(n * sizeof *pairs);
    while (m->n_merges < TOK_MAX_MERGES) {
        int32_t np = 0;
        for (int32_t k = 0; k < n_words; k++)
            for (int32_t x = 0; x + 1 < w[k].len; x++)
                pairs[np++] = (struct tok_pair){w[k].s[x], w[k].s[x + 1], w[k].count};
        if (!np) break;
        qsort(pairs, (size_t)np, sizeof *pairs, cmp_pair);
        struct tok_pair best = {0, 0, 0};
        for (int32_t x = 0; x < np;) {
            struct tok_pair cur = pairs[x];
            int32_t y = x + 1;
            while (y < np && !cmp_pair(&pairs[y], &cur)) cur.w += pairs[y++].w;
            if (cur.w > best.w) best = cur; /* sorted, so ties keep the smallest ids */
            x = y;
        }
        if (best.w < 2) break;
        int32_t id = tok_add_merge(m, best.a, best.b);
        if (id < 0) break;
        for (int32_t k = 0; k < n_words; k++) {
            int32_t o = 0;
            for (int32_t x = 0; x < w[k].len; x++) {
                if (x + 1 < w[k].len && w[k].s[x] == best.a && w[k].s[x + 1] == best.b) {
                    w[k].s[o++] = id;
                    x++;
                } else {
                    w[k].s[o++] = w[k].s[x];
                }
            }
            w[k].len = o;
        }
    }
    free(pairs);
    for (int32_t k = 0; k < n_words; k++) free(w[k].s);
    free(w);
}

/* ==== The greeting (testmodel.h) ====
 * TESTMODEL_GREETING cut the way the Qwen2 split pattern cuts it (tests check that the real
 * tokenizer gives one id per piece). Every piece is different, and none is a newline. */
static const char *const greeting_pieces[] = {
    "Hello", "!", " I", " am", " the", " built", "-in", " test", " model", " (", "random",
    " weights", ").", " To", " serve", " a", " real", " checkpoint", ",", " run", ":",
    " valley", "-server", " --", "model", " /", "path", "/to", "/Valley", "2", ".", "5",
};

/* The vocab id of each byte (the inverse of byte_map's order). */
static void tok_byte_ids(int32_t id_of_byte[256])
{
    uint32_t cp[256];
    uint8_t order[256];
    byte_map(cp, order);
    for (int i = 0; i < 256; i++) id_of_byte[order[i]] = i;
}

/* BPE over one piece with m's merges, lowest rank first (leftmost among equals), as the
 * tokenizers library does. ids needs strlen(s) entries; returns the number of ids. */
static int32_t tok_encode_piece(const struct tok_model *m, const char *s, int32_t *ids)
{
    int32_t id_of_byte[256], n = 0;
    tok_byte_ids(id_of_byte);
    for (; *s; s++) ids[n++] = id_of_byte[(uint8_t)*s];
    for (;;) {
        int32_t rank = m->n_merges, at = -1;
        for (int32_t x = 0; x + 1 < n; x++)
            for (int32_t r = 0; r < rank; r++)
                if (m->merge_a[r] == ids[x] && m->merge_b[r] == ids[x + 1]) {
                    rank = r;
                    at = x;
                    break;
                }
        if (at < 0) return n;
        ids[at] = m->merge_out[rank];
        memmove(ids + at + 1, ids + at + 2, (size_t)(n - at - 2) * sizeof *ids);
        n--;
    }
}

/* Appends the merges that make every greeting piece one token (joining, left to right, the
 * pieces the merges so far leave: later merges never fire before earlier ones, so the
 * earlier pieces stay single tokens), then writes the greeting script: the id ending the
 * thinking-on generation prompt ("\n"), the pieces, <|im_end|>; and, when the thinking-off
 * prompt ("\n\n") ends in another id, a second chain from it into the first piece. */
static void tok_add_greeting(struct tok_model *m, int32_t *script, int32_t *n_script)
{
    int32_t ids[64], piece_id[ARRAY_LEN(greeting_pieces)];
    for (size_t i = 0; i < ARRAY_LEN(greeting_pieces); i++) {
        int32_t n = tok_encode_piece(m, greeting_pieces[i], ids);
        for (; n > 1; n--) {
            int32_t id = tok_add_merge(m, ids[0], ids[1]);
            VLM_ASSERT(id >= 0); /* pieces are a few characters long */
            ids[0] = id;
            memmove(ids + 1, ids + 2, (size_t)(n - 2) * sizeof *ids);
        }
        piece_id[i] = ids[0];
    }
    int32_t k = 0, im_end = m->n_sym + 2; /* the added tokens follow the BPE vocab */
    int32_t nl = tok_encode_piece(m, "\n", ids) ? ids[0] : -1;
    script[k++] = nl;
    for (size_t i = 0; i < ARRAY_LEN(greeting_pieces); i++) script[k++] = piece_id[i];
    script[k++] = im_end;
    int32_t nlnl = ids[tok_encode_piece(m, "\n\n", ids) - 1];
    if (nlnl != nl) {
        script[k++] = -1;
        script[k++] = nlnl;
        script[k++] = piece_id[0];
    }
    *n_script = k;
}

/* A JSON string literal of s (UTF-8 passed through, quotes and backslashes escaped). */
static void sb_json_str(struct strbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') sb_printf(b, "\\%c", *s);
        else sb_append(b, s, 1);
    }
    sb_puts(b, "\"");
}

static void tok_json(struct strbuf *b, const struct tok_model *m)
{
    const char *bl = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                     "\"trim_offsets\": false, \"use_regex\": false}";
    sb_puts(b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
    sb_puts(b, "  \"added_tokens\": [\n");
    for (size_t i = 0; i < ARRAY_LEN(tok_added); i++)
        sb_printf(b, "    {\"id\": %d, \"content\": \"%s\", \"single_word\": false, \"lstrip\": false, "
                     "\"rstrip\": false, \"normalized\": false, \"special\": %s}%s\n",
                  m->n_sym + (int32_t)i, tok_added[i], i < TOK_N_SPECIAL ? "true" : "false",
                  i + 1 < ARRAY_LEN(tok_added) ? "," : "");
    sb_puts(b, "  ],\n  \"normalizer\": {\"type\": \"NFC\"},\n");
    sb_printf(b, "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", "
                 "\"pattern\": {\"Regex\": \"%s\"}, \"behavior\": \"Isolated\", \"invert\": false}, %s]},\n",
              tok_split_regex_json, bl);
    sb_printf(b, "  \"post_processor\": %s,\n  \"decoder\": %s,\n", bl, bl);
    sb_puts(b, "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
               "\"continuing_subword_prefix\": \"\", \"end_of_word_suffix\": \"\", \"fuse_unk\": false, "
               "\"byte_fallback\": false, \"ignore_merges\": false,\n    \"vocab\": {");
    for (int32_t i = 0; i < m->n_sym; i++) {
        sb_puts(b, i % 8 ? ", " : (i ? ",\n      " : "\n      "));
        sb_json_str(b, m->sym[i]);
        sb_printf(b, ": %d", i);
    }
    sb_puts(b, "\n    },\n    \"merges\": [");
    for (int32_t i = 0; i < m->n_merges; i++) {
        sb_puts(b, i % 8 ? ", [" : (i ? ",\n      [" : "\n      ["));
        sb_json_str(b, m->sym[m->merge_a[i]]);
        sb_puts(b, ", ");
        sb_json_str(b, m->sym[m->merge_b[i]]);
        sb_puts(b, "]");
    }
    sb_puts(b, "\n    ]\n  }\n}\n");
}

static void tok_config_json(struct strbuf *b, int32_t first_added)
{
    sb_puts(b, "{\n  \"add_bos_token\": false,\n  \"add_prefix_space\": false,\n"
               "  \"added_tokens_decoder\": {\n");
    for (size_t i = 0; i < ARRAY_LEN(tok_added); i++)
        sb_printf(b, "    \"%d\": {\"content\": \"%s\", \"lstrip\": false, \"normalized\": false, "
                     "\"rstrip\": false, \"single_word\": false, \"special\": %s}%s\n",
                  first_added + (int32_t)i, tok_added[i], i < TOK_N_SPECIAL ? "true" : "false",
                  i + 1 < ARRAY_LEN(tok_added) ? "," : "");
    sb_puts(b, "  },\n  \"bos_token\": null,\n  \"clean_up_tokenization_spaces\": false,\n"
               "  \"eos_token\": \"<|im_end|>\",\n  \"errors\": \"replace\",\n"
               "  \"model_max_length\": 131072,\n  \"pad_token\": \"<|endoftext|>\",\n"
               "  \"split_special_tokens\": false,\n  \"tokenizer_class\": \"Qwen2Tokenizer\",\n"
               "  \"unk_token\": null\n}\n");
}

/* ==== Files ==== */

static int write_text(const char *dir, const char *name, const char *s, size_t n,
                      struct vlm_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return vlm_err_set(err, VLM_EIO, 500, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fwrite(s, 1, n, f) == n;
    if (fclose(f) != 0) ok = false;
    if (!ok) return vlm_err_set(err, VLM_EIO, 500, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

static int tok_write(const char *dir, const struct tok_model *m, struct vlm_err *err)
{
    struct strbuf a = {0}, b = {0};
    tok_json(&a, m);
    tok_config_json(&b, m->n_sym);
    int rc = write_text(dir, "tokenizer.json", a.s, a.n, err);
    if (!rc) rc = write_text(dir, "tokenizer_config.json", b.s, b.n, err);
    sb_free(&a);
    sb_free(&b);
    return rc;
}

int testmodel_write_tokenizer(const char *dir, int32_t *n_tokens, struct vlm_err *err)
{
    struct tok_model *m = xmalloc(sizeof *m);
    tok_train(m);
    int rc = tok_write(dir, m, err);
    if (n_tokens) *n_tokens = m->n_sym + (int32_t)ARRAY_LEN(tok_added);
    free(m);
    return rc;
}

/* What the model folder needs to know about its tokenizer. */
struct tok_info {
    char *json, *config;      /* owned: copied files (NULL when synthesized) */
    size_t json_len, config_len;
    struct tok_model *model;  /* owned: the synthesized tokenizer (NULL when copied) */
    int32_t n_tokens;         /* max id + 1 */
    int32_t endoftext, im_end;
    int32_t script[TOK_MAX_SCRIPT], n_script; /* the greeting's script (n_script 0: none) */
};

static void tok_info_free(struct tok_info *t)
{
    free(t->json);
    free(t->config);
    free(t->model);
}

/* Reads the tokenizer files of dir, or describes the synthesized tokenizer (dir NULL),
 * with the greeting's pieces and script when greeting is set. */
static int tok_info_load(struct tok_info *t, const char *dir, bool greeting, struct vlm_err *err)
{
    memset(t, 0, sizeof *t);
    if (!dir) {
        struct tok_model *m = t->model = xmalloc(sizeof *m);
        tok_train(m);
        if (greeting) tok_add_greeting(m, t->script, &t->n_script);
        t->endoftext = m->n_sym;
        t->im_end = m->n_sym + 2;
        t->n_tokens = m->n_sym + (int32_t)ARRAY_LEN(tok_added);
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    t->json = vlm_read_file(path, &t->json_len);
    if (!t->json) return vlm_err_set(err, VLM_EIO, 500, "%s: cannot read: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    t->config = vlm_read_file(path, &t->config_len);
    if (!t->config) return vlm_err_set(err, VLM_EIO, 500, "%s: cannot read: %s", path, strerror(errno));
    cJSON *root = cJSON_ParseWithLength(t->json, t->json_len);
    if (!root) return vlm_err_set(err, VLM_EINVAL, 500, "%s/tokenizer.json: not JSON", dir);
    /* ids: the BPE vocab's and the added tokens' maximum; eos ids looked up by content */
    t->endoftext = t->im_end = -1;
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "model"), "vocab");
    for (const cJSON *v = vocab ? vocab->child : NULL; v; v = v->next)
        if (cJSON_IsNumber(v) && v->valueint + 1 > t->n_tokens) t->n_tokens = v->valueint + 1;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(c)) continue;
        if (id->valueint + 1 > t->n_tokens) t->n_tokens = id->valueint + 1;
        if (!strcmp(c->valuestring, "<|endoftext|>")) t->endoftext = id->valueint;
        if (!strcmp(c->valuestring, "<|im_end|>")) t->im_end = id->valueint;
    }
    cJSON_Delete(root);
    if (t->endoftext < 0 || t->im_end < 0)
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "%s/tokenizer.json: no <|endoftext|> / <|im_end|> added tokens", dir);
    return 0;
}

static const char *dtype_torch(enum dtype t)
{
    return t == DT_BF16 ? "bfloat16" : t == DT_F16 ? "float16" : "float32";
}

/* Valley2's config.json: the released Valley-Eagle-7B keys (eos <|im_end|>, no only_navit),
 * with the conv_adapter projector and, for the small towers, siglip_vision_config and
 * vision_config (docs/MODEL.md, "Valley2 test-checkpoint keys"). */
static void config_json_valley2(struct strbuf *b, const struct testmodel_params *p,
                                int32_t vocab, const struct tok_info *tk)
{
    sb_puts(b, "{\n  \"architectures\": [\"ValleyQwen2ForCausalLM\"],\n  \"model_type\": \"valley\",\n");
    sb_printf(b, "  \"attention_dropout\": 0.0,\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n",
              tk->endoftext, tk->im_end);
    sb_printf(b, "  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n",
              p->hidden, p->ffn);
    if (p->head_dim * p->heads != p->hidden) sb_printf(b, "  \"head_dim\": %d,\n", p->head_dim);
    sb_printf(b, "  \"initializer_range\": 0.02,\n  \"max_position_embeddings\": 32768,\n"
                 "  \"max_window_layers\": %d,\n", p->layers);
    sb_printf(b, "  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n"
                 "  \"num_key_value_heads\": %d,\n", p->heads, p->layers, p->kv_heads);
    sb_puts(b, "  \"rms_norm_eps\": 1e-06,\n  \"rope_scaling\": null,\n  \"rope_theta\": 1000000.0,\n"
               "  \"sliding_window\": null,\n  \"use_sliding_window\": false,\n");
    sb_printf(b, "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n",
              p->tie ? "true" : "false", dtype_torch(p->dtype));
    sb_printf(b, "  \"use_cache\": true,\n  \"vocab_size\": %d,\n"
                 "  \"use_special_start_end_token\": true", vocab);
    if (p->vision) {
        int32_t side = p->sig_image / 14;
        sb_puts(b, ",\n  \"mm_vision_tower\": \"google/siglip-so400m-patch14-384\",\n"
                   "  \"eagle_vision_tower\": \"Qwen/Qwen2-VL-7B-Instruct\",\n"
                   "  \"mm_projector_type\": ");
        sb_puts(b, p->ovis_projector ? "\"ovis_conv_adapter\",\n" : "\"conv_adapter\",\n");
        sb_printf(b, "  \"mm_hidden_size\": %d,\n  \"mlp_hidden_dim\": %d,\n", p->sig_dim, p->proj_hidden);
        sb_puts(b, "  \"mm_vision_select_layer\": -2,\n  \"mm_vision_select_feature\": \"cls_patch\",\n"
                   "  \"anyres\": true,\n  \"grid_pinpoints\": \"(1x1),...,(3x3)\",\n"
                   "  \"max_vision_token\": 500,\n  \"only_crop_single_image\": true,\n");
        sb_printf(b, "  \"num_patches_per_side\": %d,\n  \"vit_crop_size\": %d,\n",
                  (side + 1) / 2, p->sig_image);
        if (p->merger_hidden != 4 * p->vit_dim)
            sb_printf(b, "  \"navit_merger_hidden_dim\": %d,\n", p->merger_hidden);
        sb_printf(b, "  \"siglip_vision_config\": {\"hidden_size\": %d, \"intermediate_size\": %d, "
                     "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"image_size\": %d, "
                     "\"patch_size\": 14, \"num_channels\": 3, \"hidden_act\": \"gelu_pytorch_tanh\", "
                     "\"layer_norm_eps\": 1e-06, \"vision_use_head\": true},\n",
                  p->sig_dim, p->sig_ffn, p->sig_layers, p->sig_heads, p->sig_image);
        sb_printf(b, "  \"vision_config\": {\"depth\": %d, \"embed_dim\": %d, \"num_heads\": %d, "
                     "\"mlp_ratio\": %d, \"hidden_size\": %d, \"hidden_act\": \"quick_gelu\", "
                     "\"patch_size\": 14, \"temporal_patch_size\": 2, \"spatial_merge_size\": 2, "
                     "\"in_chans\": 3, \"in_channels\": 3}",
                  p->vit_depth, p->vit_dim, p->vit_heads, p->vit_mlp_ratio, p->hidden);
    }
    sb_puts(b, "\n}\n");
}

static void config_json(struct strbuf *b, const struct testmodel_params *p, int32_t vocab,
                        const struct tok_info *tk)
{
    if (p->valley2) {
        config_json_valley2(b, p, vocab, tk);
        return;
    }
    sb_puts(b, "{\n  \"architectures\": [\"ValleyQwen3ForCausalLM\"],\n  \"model_type\": \"valley\",\n");
    sb_puts(b, "  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n");
    if (p->release) /* a Qwen3 Base config: <|endoftext|> only */
        sb_printf(b, "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n", tk->endoftext,
                  tk->endoftext);
    else
        sb_printf(b, "  \"bos_token_id\": %d,\n  \"eos_token_id\": [%d, %d],\n", tk->endoftext,
                  tk->im_end, tk->endoftext);
    sb_printf(b, "  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n",
              p->head_dim, p->hidden);
    sb_printf(b, "  \"initializer_range\": 0.02,\n  \"intermediate_size\": %d,\n", p->ffn);
    sb_printf(b, "  \"max_position_embeddings\": 40960,\n  \"max_window_layers\": %d,\n", p->layers);
    sb_printf(b, "  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n"
                 "  \"num_key_value_heads\": %d,\n", p->heads, p->layers, p->kv_heads);
    sb_puts(b, "  \"rms_norm_eps\": 1e-06,\n  \"rope_scaling\": null,\n  \"rope_theta\": 1000000.0,\n"
               "  \"sliding_window\": null,\n  \"use_sliding_window\": false,\n");
    sb_printf(b, "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"%s\",\n",
              p->tie ? "true" : "false", dtype_torch(p->dtype));
    sb_printf(b, "  \"use_cache\": true,\n  \"vocab_size\": %d", vocab);
    if (!p->release) sb_puts(b, ",\n  \"use_special_start_end_token\": false");
    /* the real code hard-codes the Qwen2-VL tower: a release-shaped folder says nothing */
    bool qwen2vl_tower = p->vit_depth == 32 && p->vit_dim == 1280 && p->vit_heads == 16 &&
                         p->vit_mlp_ratio == 4;
    if (p->vision) {
        sb_puts(b, ",\n  \"only_navit\": true,\n  \"eagle_vision_tower\": \"Qwen/Qwen2-VL-7B-Instruct\",\n"
                   "  \"mm_vision_tower\": \"google/siglip-so400m-patch14-384\",\n");
        sb_printf(b, "  \"navit_merger_hidden_dim\": %d", p->merger_hidden);
    }
    if (p->vision && !(p->release && qwen2vl_tower)) {
        sb_printf(b, ",\n  \"vision_config\": {\"depth\": %d, \"embed_dim\": %d, \"num_heads\": %d, "
                     "\"mlp_ratio\": %d, \"hidden_size\": %d, \"hidden_act\": \"quick_gelu\", "
                     "\"patch_size\": 14, \"temporal_patch_size\": 2, \"spatial_merge_size\": 2, "
                     "\"in_chans\": 3, \"in_channels\": 3}",
                  p->vit_depth, p->vit_dim, p->vit_heads, p->vit_mlp_ratio, p->hidden);
    }
    sb_puts(b, "\n}\n");
}

static void generation_json(struct strbuf *b, const struct testmodel_params *p,
                            const struct tok_info *tk)
{
    if (p->valley2)
        sb_printf(b, "{\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d\n}\n", tk->endoftext,
                  tk->im_end);
    else if (p->release)
        sb_printf(b, "{\n  \"bos_token_id\": %d,\n  \"eos_token_id\": %d\n}\n", tk->endoftext,
                  tk->endoftext);
    else
        sb_printf(b, "{\n  \"bos_token_id\": %d,\n  \"eos_token_id\": [%d, %d],\n  \"pad_token_id\": %d\n}\n",
                  tk->endoftext, tk->im_end, tk->endoftext, tk->endoftext);
}

/* Writes the weights: one file, or p->shards files of roughly equal size + the index. */
static int write_weights(const char *dir, const struct testmodel_params *p, int32_t vocab,
                         struct vlm_err *err)
{
    struct gen_list g = {0};
    gen_build(&g, p, vocab);
    size_t es = dtype_size(p->dtype);
    struct st_tensor *st = xcalloc((size_t)g.n, sizeof *st);
    int32_t *index = xcalloc((size_t)g.n, sizeof *index);
    uint64_t total = 0;
    for (int32_t i = 0; i < g.n; i++) {
        struct gen_tensor *t = &g.t[i];
        st[i] = (struct st_tensor){.name = t->name, .type = p->dtype, .rank = t->rank};
        memcpy(st[i].shape, t->shape, sizeof t->shape);
        st[i].nbytes = (size_t)st_nelem(&st[i]) * es;
        index[i] = i;
        total += st[i].nbytes;
    }
    int rc = 0;
    struct gen_ctx ctx = {.g = &g, .index = index, .seed = p->seed, .dtype = p->dtype, .p = p};
    if (p->shards <= 1) {
        char path[4096];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = st_write_file_fill(path, st, g.n, gen_fill, &ctx, err);
    } else {
        struct strbuf ix = {0};
        sb_printf(&ix, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {",
                  (unsigned long long)total);
        int32_t first = 0;
        uint64_t done = 0;
        for (int32_t s = 0; s < p->shards && !rc; s++) {
            /* shard s ends once the running size passes (s+1)/shards of the total */
            int32_t last = first;
            uint64_t goal = total / (uint64_t)p->shards * (uint64_t)(s + 1);
            while (last < g.n && (s == p->shards - 1 || done < goal)) done += st[last++].nbytes;
            char name[64], path[4096];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, p->shards);
            snprintf(path, sizeof path, "%s/%s", dir, name);
            ctx.index = index + first;
            rc = st_write_file_fill(path, st + first, last - first, gen_fill, &ctx, err);
            for (int32_t i = first; i < last; i++)
                sb_printf(&ix, "%s\n    \"%s\": \"%s\"", i ? "," : "", st[i].name, name);
            first = last;
        }
        sb_puts(&ix, "\n  }\n}\n");
        if (!rc) rc = write_text(dir, "model.safetensors.index.json", ix.s, ix.n, err);
        sb_free(&ix);
    }
    free(index);
    free(st);
    free(g.t);
    return rc;
}

/* ==== Folder write ====
 * Everything goes to "<dir>.tmp.<pid>", the stamp last, then the folder is renamed into
 * place. A stamp (generator version, every parameter, a hash of the copied tokenizer files)
 * marks a finished folder; a folder whose stamp matches is left alone. */

static void stamp_text(struct strbuf *b, const struct testmodel_params *p, const struct tok_info *tk)
{
    sb_printf(b, "%s seed=%llu hidden=%d layers=%d heads=%d kv_heads=%d head_dim=%d ffn=%d "
                 "vocab=%d tie=%d vision=%d vit_depth=%d vit_dim=%d vit_heads=%d vit_mlp_ratio=%d "
                 "merger_hidden=%d dtype=%s shards=%d release=%d tokenizer=",
              TESTMODEL_VERSION, (unsigned long long)p->seed, p->hidden, p->layers, p->heads,
              p->kv_heads, p->head_dim, p->ffn, p->vocab, p->tie, p->vision, p->vit_depth,
              p->vit_dim, p->vit_heads, p->vit_mlp_ratio, p->merger_hidden, dtype_name(p->dtype),
              p->shards, p->release);
    if (p->valley2)
        sb_printf(b, "valley2 sig=%d,%d,%d,%d,%d proj=%d ", p->sig_dim, p->sig_layers,
                  p->sig_heads, p->sig_ffn, p->sig_image, p->proj_hidden);
    if (p->valley2 && p->ovis_projector) sb_puts(b, "ovis ");
    if (p->n_script) {
        sb_puts(b, "script=");
        for (int32_t i = 0; i < p->n_script; i++) sb_printf(b, "%s%d", i ? "," : "", p->script[i]);
        sb_puts(b, " tokenizer=");
    }
    if (p->slow_tokenizer || p->valley_tokens)
        sb_printf(b, "%s%s", p->slow_tokenizer ? "slow " : "", p->valley_tokens ? "valley " : "");
    if (p->greeting && !tk->json)
        sb_printf(b, "greeting=%016llx ",
                  (unsigned long long)vlm_hash64(TESTMODEL_GREETING, strlen(TESTMODEL_GREETING), 3));
    if (tk->json)
        sb_printf(b, "%016llx:%016llx\n",
                  (unsigned long long)vlm_hash64(tk->json, tk->json_len, 1),
                  (unsigned long long)vlm_hash64(tk->config, tk->config_len, 2));
    else
        sb_puts(b, "synthesized\n");
}

/* Valley2's chat template (written for this project): the Qwen2.5 ChatML rendering. A
 * leading system message replaces the default system text; tools add the "# Tools" block to
 * the system turn; an assistant turn is its content, then its tool calls as <tool_call>
 * blocks; consecutive tool messages share one user turn of <tool_response> blocks; other
 * roles render nothing. (docs/MODEL.md, "Valley2 prompt".) */
static const char valley2_chat_template[] =
    "{%- set ns = namespace(system='You are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.', start=0) %}"
    "{%- if messages and messages[0].role == 'system' %}"
    "{%- set ns.system = messages[0].content %}{%- set ns.start = 1 %}{%- endif %}"
    "{{- '<|im_start|>system\\n' + ns.system }}"
    "{%- if tools %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for t in tools %}{{- '\\n' }}{{- t | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\\n</tool_call>' }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- for m in messages[ns.start:] %}"
    "{%- if m.role == 'user' or m.role == 'system' %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- elif m.role == 'assistant' %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- if m.content or not m.tool_calls %}{{- '\\n' + (m.content or '') }}{%- endif %}"
    "{%- for c in (m.tool_calls or []) %}"
    "{%- set f = c.function if c.function is defined else c %}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + f.name + '\", \"arguments\": ' }}"
    "{{- f.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}"
    "{%- set i = ns.start + loop.index0 %}"
    "{%- if i == 0 or messages[i - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + m.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[i + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/* Valley2: tokenizer_config.json gets the Qwen2.5 template and eos <|im_end|>, as the
 * released folder's. */
static int tokenizer_config_valley2(const char *dir, struct vlm_err *err)
{
    char path[4096];
    size_t n;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *text = vlm_read_file(path, &n);
    if (!text) return vlm_err_set(err, VLM_EIO, 500, "%s: cannot read: %s", path, strerror(errno));
    cJSON *root = cJSON_ParseWithLength(text, n);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vlm_err_set(err, VLM_EINVAL, 500, "%s: not a JSON object", path);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, "chat_template");
    cJSON_AddStringToObject(root, "chat_template", valley2_chat_template);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "eos_token");
    cJSON_AddStringToObject(root, "eos_token", "<|im_end|>");
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    int rc = write_text(dir, "tokenizer_config.json", out, strlen(out), err);
    free(out);
    return rc;
}

/* Rewrites the tokenizer files in dir as --slow-tokenizer / --valley-tokens ask. */
static int tokenizer_convert(const char *dir, const struct testmodel_params *p, struct vlm_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (!p->slow_tokenizer) return slowtok_add_valley(path, dir, err);
    int rc = slowtok_write(path, dir, p->valley_tokens, err);
    if (!rc && unlink(path) != 0)
        rc = vlm_err_set(err, VLM_EIO, 500, "%s: cannot remove: %s", path, strerror(errno));
    return rc;
}

static bool stamp_matches(const char *dir, const struct strbuf *want)
{
    char path[4096];
    size_t n;
    snprintf(path, sizeof path, "%s/.stamp", dir);
    char *have = vlm_read_file(path, &n);
    bool ok = have && n == want->n && !memcmp(have, want->s, n);
    free(have);
    return ok;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Removes a flat folder (the generator never makes subfolders). */
static void rm_flat(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static int check_params(const struct testmodel_params *p, struct vlm_err *err)
{
#define NEED(cond, ...) do { if (!(cond)) return vlm_err_set(err, VLM_EINVAL, 400, __VA_ARGS__); } while (0)
    NEED(p->hidden > 0 && p->hidden <= 65536, "hidden must be in [1, 65536]");
    NEED(p->layers > 0 && p->layers <= 1024, "layers must be in [1, 1024]");
    NEED(p->heads > 0 && p->heads <= 1024, "heads must be in [1, 1024]");
    NEED(p->kv_heads > 0 && p->heads % p->kv_heads == 0, "heads must be a multiple of kv-heads");
    NEED(p->head_dim > 0 && p->head_dim <= 1024 && p->head_dim % 2 == 0,
         "head-dim must be even and in [2, 1024]");
    NEED(p->ffn > 0 && p->ffn <= (1 << 20), "ffn must be in [1, 1048576]");
    NEED(p->vocab >= 0 && p->vocab <= (1 << 24), "vocab must be in [0, 16777216]");
    NEED(p->dtype == DT_BF16 || p->dtype == DT_F16 || p->dtype == DT_F32,
         "dtype must be bf16, f16 or f32");
    if (p->valley2 && p->vision) {
        NEED(p->sig_dim > 0 && p->sig_heads > 0 && p->sig_dim % p->sig_heads == 0 &&
             p->sig_dim <= 8192, "SigLIP width must be a multiple of its heads, at most 8192");
        NEED(p->sig_layers > 0 && p->sig_layers <= 64 && p->sig_ffn > 0 && p->sig_ffn <= (1 << 16),
             "SigLIP layers in [1, 64] and MLP in [1, 65536]");
        NEED(p->sig_image >= 14 && p->sig_image <= 1008, "SigLIP image size must be in [14, 1008]");
        NEED(p->proj_hidden > 0 && p->proj_hidden <= (1 << 20), "projector hidden in [1, 1048576]");
    }
    NEED(p->shards >= 1 && p->shards <= 99, "shards must be in [1, 99]");
    if (p->vision) {
        NEED(p->vit_depth > 0 && p->vit_depth <= 64, "vit-depth must be in [1, 64]");
        NEED(p->vit_dim > 0 && p->vit_dim <= 8192, "vit-dim must be in [1, 8192]");
        NEED(p->vit_heads > 0 && p->vit_dim % p->vit_heads == 0 && (p->vit_dim / p->vit_heads) % 4 == 0,
             "vit-dim / vit-heads must be a multiple of 4 (2-D rotary halves)");
        NEED(p->vit_mlp_ratio > 0 && p->vit_mlp_ratio <= 16, "vit-mlp-ratio must be in [1, 16]");
        NEED(p->merger_hidden > 0 && p->merger_hidden <= (1 << 20), "merger-hidden must be in [1, 1048576]");
    }
    if (p->n_script) {
        NEED(!p->tie, "a script needs an untied lm_head (no --tie)");
        NEED(p->n_script >= 2 && p->n_script <= 4096, "a script has 2 to 4096 entries");
        for (int32_t i = 0; i + 1 < p->n_script; i++) {
            NEED(p->script[i] >= -1 && p->script[i + 1] >= -1, "script ids must be >= 0 (-1 separates chains)");
            if (p->script[i] < 0) continue;
            for (int32_t k = 0; k < i; k++)
                NEED(p->script[k] != p->script[i] || p->script[k + 1] < 0 || p->script[i + 1] < 0,
                     "script id %d has two successors", p->script[i]);
        }
    }
#undef NEED
    return 0;
}

/* The tokenizer, and the parameters with the greeting's script filled in (q). */
static int resolve(const struct testmodel_params *p, struct tok_info *tk,
                   struct testmodel_params *q, struct vlm_err *err)
{
    int rc = check_params(p, err);
    if (rc) return rc;
    bool greeting = p->greeting && !p->tokenizer_dir && !p->n_script;
    if ((rc = tok_info_load(tk, p->tokenizer_dir, greeting, err))) return rc;
    *q = *p;
    if (greeting) {
        q->script = tk->script;
        q->n_script = tk->n_script;
        if ((rc = check_params(q, err))) return rc; /* the pieces' ids must all differ */
    }
    return 0;
}

bool testmodel_up_to_date(const char *dir, const struct testmodel_params *p0)
{
    struct tok_info tk = {0};
    struct testmodel_params q, *p = &q;
    struct vlm_err err;
    if (resolve(p0, &tk, &q, &err)) {
        tok_info_free(&tk);
        return false;
    }
    struct strbuf stamp = {0};
    stamp_text(&stamp, p, &tk);
    bool ok = stamp_matches(dir, &stamp);
    sb_free(&stamp);
    tok_info_free(&tk);
    return ok;
}

int testmodel_write(const char *dir, const struct testmodel_params *p0, struct vlm_err *err)
{
    struct tok_info tk = {0};
    struct testmodel_params q, *p = &q;
    struct strbuf stamp = {0}, text = {0};
    char tmp[4096], old[4096];
    tmp[0] = 0;
    int rc = resolve(p0, &tk, &q, err);
    if (rc) goto out;
    if (p->valley_tokens) tk.n_tokens += SLOWTOK_N_VALLEY;
    int32_t vocab = p->vocab            ? p->vocab
                    : !tk.json          ? (tk.n_tokens + 63) / 64 * 64
                    : p->valley_tokens  ? tk.n_tokens
                                        : QWEN3_VOCAB;
    if (vocab < tk.n_tokens) {
        rc = vlm_err_set(err, VLM_EINVAL, 400, "vocab %d is smaller than the tokenizer's %d ids",
                         vocab, tk.n_tokens);
        goto out;
    }
    for (int32_t i = 0; i < p->n_script; i++) {
        if (p->script[i] >= vocab) {
            rc = vlm_err_set(err, VLM_EINVAL, 400, "script id %d is outside the vocab (%d)",
                             p->script[i], vocab);
            goto out;
        }
    }
    stamp_text(&stamp, p, &tk);
    if (stamp_matches(dir, &stamp)) {
        log_debug("testmodel: %s is up to date", dir);
        goto out;
    }

    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    rm_flat(tmp);
    if (mkdir_p(tmp) != 0) {
        rc = vlm_err_set(err, VLM_EIO, 500, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    config_json(&text, p, vocab, &tk);
    if ((rc = write_text(tmp, "config.json", text.s, text.n, err))) goto out;
    text.n = 0;
    generation_json(&text, p, &tk);
    if ((rc = write_text(tmp, "generation_config.json", text.s, text.n, err))) goto out;
    if (tk.json) {
        if ((rc = write_text(tmp, "tokenizer.json", tk.json, tk.json_len, err))) goto out;
        if ((rc = write_text(tmp, "tokenizer_config.json", tk.config, tk.config_len, err))) goto out;
    } else if ((rc = tok_write(tmp, tk.model, err))) {
        goto out;
    }
    if ((p->slow_tokenizer || p->valley_tokens) && (rc = tokenizer_convert(tmp, p, err))) goto out;
    if (p->valley2 && (rc = tokenizer_config_valley2(tmp, err))) goto out;
    if ((rc = write_weights(tmp, p, vocab, err))) goto out;
    if ((rc = write_text(tmp, ".stamp", stamp.s, stamp.n, err))) goto out;

    /* move into place; an older folder is moved aside first and removed after, unless
     * another process has finished the same folder meanwhile */
    if (stamp_matches(dir, &stamp)) goto out;
    snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
    if (rename(dir, old) != 0) old[0] = 0;
    if (rename(tmp, dir) != 0) {
        int e = errno;
        if (!stamp_matches(dir, &stamp)) /* else another process just wrote the same */
            rc = vlm_err_set(err, VLM_EIO, 500, "%s: cannot rename into place: %s", dir, strerror(e));
    } else {
        tmp[0] = 0;
    }
    if (old[0]) rm_flat(old);
out:
    if (tmp[0]) rm_flat(tmp);
    sb_free(&stamp);
    sb_free(&text);
    tok_info_free(&tk);
    return rc;
}
