/*
 * llamacpp_greedy: the llama.cpp side of bench/llamacpp_side_by_side.sh's greedy check.
 * Loads a GGUF with libllama, evaluates the given prompt ids, then decodes N tokens by
 * argmax over the logits (no sampler chain, no chat template, no BOS added) and prints them
 * on one line ("greedy: ..."), after the 8 largest logits of the prompt's last position
 * ("top8: id:logit ..."), the format of `bench_engine --greedy`. Not part of the CMake
 * build: the script compiles it against the llama.cpp it built (llama.h is not a dependency
 * of this project).
 *
 *   llamacpp_greedy MODEL.gguf ID,ID,... N [THREADS]
 */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: llamacpp_greedy MODEL.gguf ID,ID,... N [THREADS]\n");
        return 2;
    }
    llama_token ids[512];
    int n_ids = 0, n = atoi(argv[3]), threads = argc > 4 ? atoi(argv[4]) : 2;
    for (char *p = argv[2], *end; *p && n_ids < 512; p = *end ? end + 1 : end) {
        ids[n_ids++] = (llama_token)strtol(p, &end, 10);
        if (end == p) return 2;
    }
    if (n < 1 || n_ids < 1) return 2;
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 512;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch b = llama_batch_get_one(ids, n_ids);
    llama_token tok;
    if (llama_decode(ctx, b)) return 1;
    {
        /* the 8 largest logits after the prompt (the format of bench_engine --greedy) */
        const float *lg = llama_get_logits_ith(ctx, -1);
        int top[8];
        printf("top8:");
        for (int i = 0; i < 8; i++) {
            top[i] = -1;
            for (int v = 0; v < n_vocab; v++) {
                int used = 0;
                for (int k = 0; k < i; k++) used |= top[k] == v;
                if (!used && (top[i] < 0 || lg[v] > lg[top[i]])) top[i] = v;
            }
            printf(" %d:%.4f", top[i], lg[top[i]]);
        }
        printf("\n");
    }
    llama_memory_clear(llama_get_memory(ctx), true);
    printf("greedy:");
    for (int step = 0; step < n; step++) {
        if (llama_decode(ctx, b)) return 1;
        const float *logits = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int v = 1; v < n_vocab; v++)
            if (logits[v] > logits[best]) best = v;
        tok = best;
        printf(" %d", best);
        b = llama_batch_get_one(&tok, 1);
    }
    printf("\n");
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
