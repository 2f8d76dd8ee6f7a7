/*
 * valley-make-model: writes a small deterministic Valley2.5-layout checkpoint folder
 * (engine/testmodel.h). Used by the ctest fixtures of tests/models.txt and by developers.
 *
 *   valley-make-model --out DIR [--seed N] [--hidden N] [--layers N] [--heads N]
 *       [--kv-heads N] [--head-dim N] [--ffn N] [--vocab N] [--tie] [--vit-depth N]
 *       [--vit-dim N] [--vit-heads N] [--vit-mlp-ratio N] [--merger-hidden N] [--no-vision]
 *       [--dtype bf16|f16|f32] [--arch valley2] [--sig-dim N] [--sig-layers N]
 *       [--sig-heads N] [--sig-ffn N] [--sig-image N] [--proj-hidden N]
 *       [--mm-projector conv_adapter|ovis_conv_adapter] [--shards N] [--tokenizer DIR] [--slow-tokenizer]
 *       [--valley-tokens] [--script ID,ID,...] [--layout release] [--preset valley2.5]
 *
 * Prints one line: the folder, whether it was written or already up to date, and a hash of
 * its weight files (the same on every machine for the same arguments).
 */
#include "engine/safetensors.h"
#include "engine/testmodel.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    struct testmodel_params d;
    testmodel_defaults(&d);
    fprintf(f,
            "usage: valley-make-model --out DIR [options]\n"
            "  --seed N           weight generator seed (%llu)\n"
            "  --hidden N         hidden size (%d)\n"
            "  --layers N         decoder layers (%d)\n"
            "  --heads N          attention heads (%d)\n"
            "  --kv-heads N       key/value heads (%d)\n"
            "  --head-dim N       head dimension (%d)\n"
            "  --ffn N            MLP intermediate size (%d)\n"
            "  --vocab N          embedding rows (151936 with --tokenizer, else the small\n"
            "                     synthesized tokenizer's size)\n"
            "  --tie              tie the output projection to the embedding\n"
            "  --vit-depth N      vision blocks (%d)\n"
            "  --vit-dim N        vision width (%d)\n"
            "  --vit-heads N      vision heads (%d)\n"
            "  --vit-mlp-ratio N  vision MLP ratio (%d)\n"
            "  --merger-hidden N  projector hidden width (%d)\n"
            "  --no-vision        text only: no vision tower or projector\n"
            "  --dtype bf16|f16|f32 weight dtype (bf16)\n"
            "  --arch valley2     the Valley2 layout: Qwen2.5 decoder (q/k/v biases, no q/k\n"
            "                     norms), eos <|im_end|>, the Qwen2.5 chat template; with\n"
            "                     vision also the SigLIP tower, the conv_adapter projector and\n"
            "                     the Qwen2-VL tower with the original merger (hidden 4 x\n"
            "                     vit-dim unless --merger-hidden)\n"
            "  --sig-dim N, --sig-layers N, --sig-heads N, --sig-ffn N, --sig-image N,\n"
            "  --proj-hidden N    Valley2's SigLIP geometry and projector hidden width\n"
            "                     (32, 2, 2, 64, 384, 64)\n"
            "  --mm-projector conv_adapter|ovis_conv_adapter\n"
            "                     Valley2's projector (conv_adapter); ovis_conv_adapter's\n"
            "                     visual vocabulary has --proj-hidden entries\n"
            "  --shards N         split the weights into N files with an index (1)\n"
            "  --tokenizer DIR    copy tokenizer.json and tokenizer_config.json from DIR\n"
            "                     (default: synthesize a small byte-level BPE tokenizer)\n"
            "  --slow-tokenizer   write the tokenizer as vocab.json, merges.txt,\n"
            "                     added_tokens.json, special_tokens_map.json and\n"
            "                     tokenizer_config.json, without tokenizer.json\n"
            "  --valley-tokens    add the 10 Valley added tokens (<im_start> ... <box_end>)\n"
            "                     after the tokenizer's last id; vocab defaults to the\n"
            "                     tokenizer's size (151679 with the Qwen3 tokenizer)\n"
            "  --script IDS       a scripted decoder for API tests: comma-separated ids, -1\n"
            "                     between chains; after an id, greedy decoding emits the next\n"
            "                     id of its chain (engine/testmodel.h)\n"
            "  --layout release   the release folder's shape: --slow-tokenizer --valley-tokens,\n"
            "                     no use_special_start_end_token key, eos 151643 only,\n"
            "                     weights in 4 shards (unless --shards)\n"
            "  --preset valley2.5 the full Valley2.5 geometry, random bf16 weights in the\n"
            "                     release layout, 8 shards, about 19 GB (options after it\n"
            "                     still apply)\n"
            "  --greeting         with the synthesized tokenizer: answer every chat request\n"
            "                     with the built-in greeting (what the server's embedded\n"
            "                     default model does)\n",
            (unsigned long long)d.seed, d.hidden, d.layers, d.heads, d.kv_heads, d.head_dim,
            d.ffn, d.vit_depth, d.vit_dim, d.vit_heads, d.vit_mlp_ratio, d.merger_hidden);
}

static bool parse_i32(const char *s, int32_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > INT32_MAX) return false;
    *out = (int32_t)v;
    return true;
}

/* Hash of the weight files in name order, chained; 0 (not computed) when they are over
 * 1 GiB together (the real-geometry preset: reading 19 GB back would double the time). */
static uint64_t weights_hash(const char *dir)
{
    uint64_t h = 0, total = 0;
    struct dirent **all;
    int na = scandir(dir, &all, NULL, alphasort);
    for (int i = 0; i < na; i++) {
        struct stat sb;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, all[i]->d_name);
        if (strstr(all[i]->d_name, ".safetensors") && stat(path, &sb) == 0)
            total += (uint64_t)sb.st_size;
        free(all[i]);
    }
    if (na >= 0) free(all);
    if (total > ((uint64_t)1 << 30)) return 0;
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        size_t len = strlen(nm);
        if (len > 12 && !strcmp(nm + len - 12, ".safetensors")) {
            char path[4096];
            size_t sz;
            snprintf(path, sizeof path, "%s/%s", dir, nm);
            char *data = vlm_read_file(path, &sz);
            if (data) h = vlm_hash64(data, sz, h);
            free(data);
        }
        free(names[i]);
    }
    if (n >= 0) free(names);
    return h;
}

int main(int argc, char **argv)
{
    struct testmodel_params p;
    testmodel_defaults(&p);
    const char *out = NULL;
    int32_t script[4096];
    bool shards_given = false, merger_given = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int32_t *ip = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--tie")) { p.tie = true; continue; }
        else if (!strcmp(a, "--no-vision")) { p.vision = false; continue; }
        else if (!strcmp(a, "--slow-tokenizer")) { p.slow_tokenizer = true; continue; }
        else if (!strcmp(a, "--valley-tokens")) { p.valley_tokens = true; continue; }
        else if (!strcmp(a, "--greeting")) { p.greeting = true; continue; }
        else if (!v) {
            fprintf(stderr, "valley-make-model: '%s' is unknown or needs a value\n", a);
            usage(stderr);
            return 2;
        }
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--layout")) {
            if (strcmp(v, "release")) {
                fprintf(stderr, "valley-make-model: --layout must be release, not '%s'\n", v);
                return 2;
            }
            p.release = true;
            p.slow_tokenizer = p.valley_tokens = true;
            if (!shards_given) p.shards = 4;
        } else if (!strcmp(a, "--preset")) {
            if (strcmp(v, "valley2.5")) {
                fprintf(stderr, "valley-make-model: --preset must be valley2.5, not '%s'\n", v);
                return 2;
            }
            const char *tok = p.tokenizer_dir;
            testmodel_preset_valley25(&p);
            p.tokenizer_dir = tok;
        }
        else if (!strcmp(a, "--arch")) {
            if (strcmp(v, "valley2")) {
                fprintf(stderr, "valley-make-model: --arch must be valley2, not '%s'\n", v);
                return 2;
            }
            testmodel_arch_valley2(&p);
        }
        else if (!strcmp(a, "--mm-projector")) {
            if (!strcmp(v, "ovis_conv_adapter")) p.ovis_projector = true;
            else if (!strcmp(v, "conv_adapter")) p.ovis_projector = false;
            else {
                fprintf(stderr, "valley-make-model: --mm-projector must be conv_adapter or "
                        "ovis_conv_adapter, not '%s'\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--tokenizer")) p.tokenizer_dir = v;
        else if (!strcmp(a, "--script")) {
            const char *s = v;
            p.n_script = 0;
            for (;;) {
                char *end;
                errno = 0;
                long id = strtol(s, &end, 10);
                if (errno || end == s || id < -1 || id > INT32_MAX || p.n_script == 4096 ||
                    (*end && *end != ',')) {
                    fprintf(stderr, "valley-make-model: bad --script '%s'\n", v);
                    return 2;
                }
                script[p.n_script++] = (int32_t)id;
                if (!*end) break;
                s = end + 1;
            }
            p.script = script;
        }
        else if (!strcmp(a, "--dtype")) {
            if (!strcmp(v, "bf16")) p.dtype = DT_BF16;
            else if (!strcmp(v, "f16")) p.dtype = DT_F16;
            else if (!strcmp(v, "f32")) p.dtype = DT_F32;
            else { fprintf(stderr, "valley-make-model: --dtype must be bf16, f16 or f32, not '%s'\n", v); return 2; }
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            p.seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') { fprintf(stderr, "valley-make-model: bad --seed '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--hidden")) ip = &p.hidden;
        else if (!strcmp(a, "--layers")) ip = &p.layers;
        else if (!strcmp(a, "--heads")) ip = &p.heads;
        else if (!strcmp(a, "--kv-heads")) ip = &p.kv_heads;
        else if (!strcmp(a, "--head-dim")) ip = &p.head_dim;
        else if (!strcmp(a, "--ffn")) ip = &p.ffn;
        else if (!strcmp(a, "--vocab")) ip = &p.vocab;
        else if (!strcmp(a, "--vit-depth")) ip = &p.vit_depth;
        else if (!strcmp(a, "--vit-dim")) ip = &p.vit_dim;
        else if (!strcmp(a, "--vit-heads")) ip = &p.vit_heads;
        else if (!strcmp(a, "--vit-mlp-ratio")) ip = &p.vit_mlp_ratio;
        else if (!strcmp(a, "--merger-hidden")) ip = &p.merger_hidden, merger_given = true;
        else if (!strcmp(a, "--sig-dim")) ip = &p.sig_dim;
        else if (!strcmp(a, "--sig-layers")) ip = &p.sig_layers;
        else if (!strcmp(a, "--sig-heads")) ip = &p.sig_heads;
        else if (!strcmp(a, "--sig-ffn")) ip = &p.sig_ffn;
        else if (!strcmp(a, "--sig-image")) ip = &p.sig_image;
        else if (!strcmp(a, "--proj-hidden")) ip = &p.proj_hidden;
        else if (!strcmp(a, "--shards")) ip = &p.shards, shards_given = true;
        else { fprintf(stderr, "valley-make-model: unknown option '%s'\n", a); usage(stderr); return 2; }
        if (ip && !parse_i32(v, ip)) {
            fprintf(stderr, "valley-make-model: %s needs a non-negative integer, not '%s'\n", a, v);
            return 2;
        }
        i++;
    }
    if (!out) { usage(stderr); return 2; }
    /* Valley2's Qwen2-VL tower keeps the original PatchMerger unless asked otherwise */
    if (p.valley2 && !merger_given) p.merger_hidden = 4 * p.vit_dim;

    bool fresh = testmodel_up_to_date(out, &p);
    struct vlm_err err = {0};
    uint64_t t0 = vlm_now_ns();
    if (testmodel_write(out, &p, &err)) {
        fprintf(stderr, "valley-make-model: %s\n", err.msg);
        return 1;
    }
    double secs = (double)(vlm_now_ns() - t0) * 1e-9;
    uint64_t h = weights_hash(out);
    if (h) printf("%s: %s in %.2f s, weights hash %016llx\n", out, fresh ? "up to date" : "written",
                  secs, (unsigned long long)h);
    else printf("%s: %s in %.2f s (weights over 1 GiB: not hashed)\n", out,
                fresh ? "up to date" : "written", secs);
    return 0;
}
