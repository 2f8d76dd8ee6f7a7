/*
 * valley-inspect: loads a checkpoint folder as valley-server would (config.json checks,
 * every tensor bound by name and shape, unknown tensors refused) and prints what it holds
 * and what serving it would need, without running a step and without converting or even
 * reading the weights (they stay memory-mapped and untouched, so this works on a machine
 * with less memory than the checkpoint).
 *
 *   valley-inspect --model DIR [--list] [valley-server options]
 *
 * Prints: the config, the tensor inventory (every name, with the layer or block index folded
 * into "N", its shape, dtype and count), bytes per component and in total, the memory plan
 * (weights on a bf16 device and on the CPU backend, KV cache per token and at
 * --max-model-len, workspace for --max-num-batched-tokens, encoder cache), the load time and
 * the peak RSS. --list also prints every tensor with its file. The server options that size
 * the plan are read as valley-server reads them. Exit status: 0, or 1 when the folder does
 * not load (the message names the key or tensor).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config/config.h"
#include "engine/model.h"
#include "engine/safetensors.h"

enum component { C_EMBED, C_LAYERS, C_NORM, C_HEAD, C_VIT, C_PROJ, C_COUNT };
static const char *const comp_name[C_COUNT] = {
    "embedding", "decoder layers", "final norm", "lm_head", "vision tower", "projector",
};

/* Which part of the model a (bound) tensor belongs to; model_load has refused any other. */
static enum component component_of(const char *name)
{
    if (!strncmp(name, "model.embed_tokens.", 19)) return C_EMBED;
    if (!strncmp(name, "model.layers.", 13)) return C_LAYERS;
    if (!strncmp(name, "model.norm.", 11)) return C_NORM;
    if (!strncmp(name, "lm_head.", 8)) return C_HEAD;
    if (!strncmp(name, "model.qwen2vl_vision_tower.merger.", 34)) return C_PROJ;
    return C_VIT;
}

/* name with its first all-digit dotted component replaced by "N". */
static void fold_index(const char *name, char *out, size_t cap)
{
    const char *p = name;
    while (*p) {
        const char *seg = p, *end = strchr(p, '.');
        if (!end) break;
        bool digits = end > seg;
        for (const char *q = seg; q < end; q++) digits &= isdigit((unsigned char)*q) != 0;
        if (digits) {
            snprintf(out, cap, "%.*sN%s", (int)(seg - name), name, end);
            return;
        }
        p = end + 1;
    }
    snprintf(out, cap, "%s", name);
}

static void fmt_shape(char *buf, size_t n, const struct st_tensor *t)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->rank && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

struct group {
    char pattern[160], shape[96];
    const char *dtype;
    int32_t count;
    uint64_t bytes;
};

static double gib(uint64_t b) { return (double)b / (double)(1ull << 30); }

int main(int argc, char **argv, char **envp)
{
    bool list = false;
    /* --list is ours; everything else is valley-server's */
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int n_args = 0;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && !strcmp(argv[i], "--list")) list = true;
        else args[n_args++] = argv[i];
    }
    struct config cfg;
    struct vlm_err err = {0};
    config_defaults(&cfg);
    int rc = config_parse(&cfg, n_args, args, envp, &err);
    free(args);
    if (rc == 1) {
        config_destroy(&cfg);
        return 0;
    }
    if (rc || !cfg.engine.model || !cfg.engine.model[0]) {
        fprintf(stderr, "valley-inspect: %s\nusage: valley-inspect --model DIR [--list] "
                        "[valley-server options]\n", rc ? err.msg : "--model DIR is required");
        config_destroy(&cfg);
        return 2;
    }
    vlm_log_level = cfg.log.level;

    uint64_t t0 = vlm_now_ns();
    struct model m;
    if (model_load(&m, cfg.engine.model, &err)) {
        fprintf(stderr, "valley-inspect: %s\n", err.msg);
        config_destroy(&cfg);
        return 1;
    }
    double load_s = (double)(vlm_now_ns() - t0) * 1e-9;
    const struct model_config *c = &m.cfg;

    printf("checkpoint %s\n", m.dir);
    printf("  decoder: %d layers, hidden %d, heads %d/%d x %d, ffn %d, vocab %d, %s, "
           "rope_theta %g, max_position_embeddings %d\n",
           c->n_layers, c->hidden_size, c->n_heads, c->n_kv_heads, c->head_dim,
           c->intermediate_size, c->vocab_size, c->tie_word_embeddings ? "tied" : "untied lm_head",
           (double)c->rope_theta, c->max_position_embeddings);
    if (c->has_vision)
        printf("  vision: depth %d, dim %d, heads %d, mlp %d, patch %d, merge %d; projector %d -> "
               "%d -> %d\n", c->vit_depth, c->vit_embed_dim, c->vit_num_heads, c->vit_mlp_hidden,
               c->patch_size, c->spatial_merge_size,
               c->vit_embed_dim * c->spatial_merge_size * c->spatial_merge_size, c->merger_hidden,
               c->hidden_size);
    printf("  eos ids:");
    for (int32_t i = 0; i < c->n_eos; i++) printf(" %d", c->eos_token_ids[i]);
    printf("; images wrapped in <im_start>/<im_end>: %s\n",
           c->use_special_start_end_token ? "yes" : "no (config.json says false)");

    /* ---- inventory ---- */
    int32_t n = st_count(m.files);
    struct group *g = calloc((size_t)n, sizeof *g);
    int32_t ng = 0;
    uint64_t comp_bytes[C_COUNT] = {0}, total = 0;
    int64_t comp_params[C_COUNT] = {0};
    int32_t comp_count[C_COUNT] = {0};
    if (list) printf("\ntensors (name, shape, dtype, file):\n");
    for (int32_t i = 0; i < n; i++) {
        const struct st_tensor *t = st_get(m.files, i);
        char pat[160], shape[96];
        fold_index(t->name, pat, sizeof pat);
        fmt_shape(shape, sizeof shape, t);
        if (list) printf("  %s %s %s %s\n", t->name, shape, st_dtype_name(t->type), t->file);
        enum component k = component_of(t->name);
        comp_bytes[k] += t->nbytes;
        comp_params[k] += st_nelem(t);
        comp_count[k]++;
        total += t->nbytes;
        int32_t j = 0;
        while (j < ng && (strcmp(g[j].pattern, pat) || strcmp(g[j].shape, shape) ||
                          strcmp(g[j].dtype, st_dtype_name(t->type))))
            j++;
        if (j == ng) {
            snprintf(g[ng].pattern, sizeof g[ng].pattern, "%s", pat);
            snprintf(g[ng].shape, sizeof g[ng].shape, "%s", shape);
            g[ng++].dtype = st_dtype_name(t->type);
        }
        g[j].count++;
        g[j].bytes += t->nbytes;
    }
    printf("\ninventory: %d tensors, all bound by name and shape, 0 unknown "
           "(N = layer or block)\n", n);
    for (int32_t j = 0; j < ng; j++)
        printf("  %-62s %-22s %-4s x%-3d %10.3f MiB\n", g[j].pattern, g[j].shape, g[j].dtype,
               g[j].count, (double)g[j].bytes / (1 << 20));
    free(g);

    printf("\nbytes per component (as stored):\n");
    for (int k = 0; k < C_COUNT; k++)
        if (comp_count[k])
            printf("  %-15s %4d tensors %14lld params %16llu bytes (%7.3f GiB)\n", comp_name[k],
                   comp_count[k], (long long)comp_params[k], (unsigned long long)comp_bytes[k],
                   gib(comp_bytes[k]));
    int64_t params = 0;
    for (int k = 0; k < C_COUNT; k++) params += comp_params[k];
    printf("  %-15s %4d tensors %14lld params %16llu bytes (%7.3f GiB)\n", "total", n,
           (long long)params, (unsigned long long)total, gib(total));

    /* ---- memory plan (what engine_init would allocate; nothing is allocated here) ---- */
    uint64_t T = (uint64_t)cfg.sched.max_num_batched_tokens, S = (uint64_t)cfg.sched.max_num_seqs;
    uint64_t H = (uint64_t)c->hidden_size, F = (uint64_t)c->intermediate_size;
    uint64_t QD = (uint64_t)c->n_heads * (uint64_t)c->head_dim;
    uint64_t KD = (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim;
    int32_t max_len = cfg.sched.max_model_len > 0 ? cfg.sched.max_model_len
                                                  : c->max_position_embeddings;
    uint64_t enc = c->has_vision ? (uint64_t)cfg.sched.encoder_cache_tokens : 0;
    printf("\nmemory plan (--max-num-batched-tokens %llu, --max-num-seqs %llu, max_model_len %d, "
           "--encoder-cache-tokens %llu):\n", (unsigned long long)T, (unsigned long long)S,
           max_len, (unsigned long long)enc);
    for (int dev = 0; dev < 2; dev++) {
        /* device (CUDA): bf16 weights and activations; CPU backend: the weights used in place
         * from the mapped files (page cache, not anonymous memory), f32 activations and KV */
        uint64_t es = dev == 0 ? 2 : 4;
        uint64_t w = dev == 0 ? (uint64_t)params * es : total;
        uint64_t kv_tok = 2ull * (uint64_t)c->n_layers * KD * es;
        uint64_t kv = kv_tok * (uint64_t)max_len;
        uint64_t ws = T * (2 * H + 2 * QD + 2 * KD + 2 * F) * es + S * H * es +
                      S * (uint64_t)c->vocab_size * 4;
        uint64_t ec = enc * H * es;
        printf("  %-24s weights %7.2f GiB, KV %llu B/token = %6.2f GiB at %d tokens, workspace "
               "%5.2f GiB, encoder cache %5.2f GiB: %6.2f GiB\n",
               dev == 0 ? "bf16 device (cuda)" : "cpu backend (mapped)", gib(w),
               (unsigned long long)kv_tok, gib(kv), max_len, gib(ws), gib(ec),
               gib(w + kv + ws + ec));
    }
    printf("  here: the files are mapped, not read (%.2f GiB of address space; pages load on "
           "first use)\n", gib(total));

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\nload (config + map + bind + checks): %.3f s; peak RSS %.1f MiB\n", load_s,
           (double)ru.ru_maxrss / 1024.0);
    model_destroy(&m);
    config_destroy(&cfg);
    return 0;
}
