// models: script
/*
 * test_scripted: the scripted decoder of tests/models.txt ("script", engine/testmodel.h)
 * emits its chains through the real engine: after a prompt of arbitrary tokens ending in a
 * chain's first id, greedy decoding and seeded sampling at temperature 1 both produce the
 * rest of the chain, and its last id (<|im_end|>) is the end. The API tests of what only a
 * trained model emits (tests/api/test_scripted.py: <think> blocks, tool calls) rely on this.
 */
#include "engine/engine.h"
#include "engine/model.h"
#include "model_util.h"
#include "test.h"

#include <stdlib.h>

/* The two chains of tests/models.txt, each from its first id. */
static const int32_t chain_think[] = {198, 151667, 10061, 752, 1779, 13, 151668, 9707, 0, 151645};
static const int32_t chain_tool[] = {271,   151657, 4913, 606,   3252,  455,   69364,
                                     2198,  16370,  22317, 8926, 788,   330,   59604,
                                     30975, 151658, 151645};

/* Prefills 20 pseudo-random ids then the chain's first id, then generates the chain's length
 * - 1 tokens with sp; returns how many match the chain. */
static int follow(struct engine *e, const int32_t *chain, int n, const struct sampling_params *sp,
                  uint64_t salt)
{
    int32_t tok[64], blocks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t np = 21;
    for (int i = 0; i < 20; i++) tok[i] = (int32_t)(vlm_mix64(salt * 100 + (uint64_t)i) % 150000);
    tok[20] = chain[0];
    struct batch_seq s = {.pos = 0, .n_tokens = np, .tokens = tok, .blocks = blocks,
                          .n_blocks = 8, .sp = sp, .prompt = tok, .n_prompt = np};
    struct batch b = {.seqs = &s, .n_seqs = 1};
    struct batch_out o;
    int same = 0;
    for (int k = 1; k < n; k++) {
        VLM_ASSERT(engine_execute(e, &b, &o) == 0 && o.n == 1);
        tok[np + k - 1] = o.token[0];
        same += o.token[0] == chain[k];
        s = (struct batch_seq){.pos = np + k - 1, .n_tokens = 1, .tokens = tok + np + k - 1,
                               .blocks = blocks, .n_blocks = 8, .sp = sp, .prompt = tok,
                               .n_prompt = np, .output = tok + np, .n_out = k};
    }
    return same;
}

int main(void)
{
    struct model m = {0};
    int rc = test_load_model(&m, "script");
    if (rc) return test_report();
    struct engine_params ep = {.block_size = 16, .n_blocks = 16, .max_batched_tokens = 64,
                               .max_seqs = 2};
    struct vlm_err err = {0};
    struct engine e;
    VLM_ASSERT(engine_init(&e, &m, &ep, &err) == 0);
    struct sampling_params greedy = sampler_params_greedy(), t1 = greedy;
    t1.temperature = 1.0f;
    const struct {
        const char *name;
        const int32_t *chain;
        int n;
    } chains[] = {{"<think> chain", chain_think, (int)ARRAY_LEN(chain_think)},
                  {"<tool_call> chain", chain_tool, (int)ARRAY_LEN(chain_tool)}};
    for (size_t c = 0; c < ARRAY_LEN(chains); c++) {
        char name[96];
        snprintf(name, sizeof name, "%s: greedy, after 3 different prompts", chains[c].name);
        TEST(name) {
            for (uint64_t salt = 1; salt <= 3; salt++)
                CHECK_EQ(follow(&e, chains[c].chain, chains[c].n, &greedy, salt), chains[c].n - 1);
        }
        snprintf(name, sizeof name, "%s: sampled at temperature 1, 5 seeds", chains[c].name);
        TEST(name) {
            for (uint64_t seed = 1; seed <= 5; seed++) {
                t1.seed = seed;
                CHECK_EQ(follow(&e, chains[c].chain, chains[c].n, &t1, seed), chains[c].n - 1);
            }
        }
    }
    engine_destroy(&e);
    model_destroy(&m);
    return test_report();
}
