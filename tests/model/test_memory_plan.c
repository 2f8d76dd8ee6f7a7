// models: gqa4
/*
 * test_memory_plan: the engine's start-up memory plan on a device of known size (the CPU
 * backend behind backend_emulate's device_bytes: alloc fails past the size, mem_info
 * reports it), the path the CUDA backend takes with cudaMemGetInfo:
 *   - weights, workspace and caches first, then the KV pool takes what is left of
 *     --gpu-memory-utilization of the device: the engine ends at most at that share, and one
 *     more KV block would not have fitted;
 *   - a lower utilization gives fewer blocks, and the engine still runs a step;
 *   - a device too small for the weights, or with no room left for two KV blocks, is a clear
 *     start-up error (VLM_ENOMEM, a message naming what did not fit), never a crash.
 */
#include "engine/engine.h"
#include "engine/model.h"
#include "model_util.h"
#include "test.h"

#include <stdlib.h>

#define MiB ((size_t)1 << 20)

static struct engine_params params(size_t device, double util)
{
    return (struct engine_params){.block_size = 16, .max_batched_tokens = 256, .max_seqs = 8,
                                  .gpu_memory_utilization = util,
                                  .emulate.device_bytes = device};
}

/* Bytes of one KV block over all layers (K and V), f32 on the CPU backend. */
static size_t block_bytes(const struct engine *e)
{
    return (size_t)e->cfg.n_layers * 2 * (size_t)e->block_size * (size_t)e->n_kv_heads *
           (size_t)e->cfg.head_dim * sizeof(float);
}

/* One prefill step of 20 tokens and one decode step; returns engine_execute's result. */
static int run_step(struct engine *e)
{
    int32_t tok[21], blocks[4] = {1, 2, 3, 4};
    for (int i = 0; i < 21; i++) tok[i] = 100 + i;
    struct sampling_params sp = sampler_params_greedy();
    struct batch_seq s = {.pos = 0, .n_tokens = 20, .tokens = tok, .blocks = blocks,
                          .n_blocks = 4, .sp = &sp, .prompt = tok, .n_prompt = 20};
    struct batch b = {.seqs = &s, .n_seqs = 1};
    struct batch_out o;
    int rc = engine_execute(e, &b, &o);
    if (rc) return rc;
    tok[20] = o.token[0];
    s = (struct batch_seq){.pos = 20, .n_tokens = 1, .tokens = tok + 20, .blocks = blocks,
                           .n_blocks = 4, .sp = &sp, .prompt = tok, .n_prompt = 20,
                           .output = tok + 20, .n_out = 1};
    return engine_execute(e, &b, &o);
}

int main(void)
{
    struct model m = {0};
    struct vlm_err err = {0};
    int rc = test_load_model(&m, "gqa4");
    if (rc) return test_report();

    const size_t device = 512 * MiB;
    struct engine e;
    size_t fixed = 0; /* everything but the KV pool */
    size_t bb = 0;    /* one KV block over all layers */
    int32_t blocks_90 = 0;
    TEST("utilization 0.9 of 512 MiB: the KV pool takes the rest of the share") {
        struct engine_params ep = params(device, 0.9);
        rc = engine_init(&e, &m, &ep, &err);
        CHECK_EQ(rc, 0);
        if (!rc) {
            size_t free_b, total_b;
            e.be.ops->mem_info(e.be.ctx, &free_b, &total_b);
            size_t used = total_b - free_b, share = (size_t)(0.9 * (double)device);
            size_t kv = (size_t)e.n_blocks * block_bytes(&e);
            fixed = used - kv;
            bb = block_bytes(&e);
            blocks_90 = e.n_blocks;
            printf("  device %zu MiB: %zu bytes besides KV, %d blocks of %zu bytes\n",
                   device / MiB, fixed, e.n_blocks, block_bytes(&e));
            CHECK_EQ(total_b, device);
            CHECK(used <= share + 1);
            CHECK(used + block_bytes(&e) > share);
            CHECK(e.n_blocks > 100);
            CHECK_EQ(engine_kv_blocks(&e), e.n_blocks);
            CHECK_EQ(run_step(&e), 0);
            engine_destroy(&e);
        }
    }
    TEST("utilization 0.5: fewer blocks, same fixed part, still runs") {
        struct engine_params ep = params(device, 0.5);
        rc = engine_init(&e, &m, &ep, &err);
        CHECK_EQ(rc, 0);
        if (!rc) {
            size_t free_b, total_b;
            e.be.ops->mem_info(e.be.ctx, &free_b, &total_b);
            size_t used = total_b - free_b;
            CHECK(e.n_blocks < blocks_90);
            CHECK_EQ(used - (size_t)e.n_blocks * block_bytes(&e), fixed);
            CHECK(used <= (size_t)(0.5 * (double)device) + 1);
            CHECK_EQ(run_step(&e), 0);
            engine_destroy(&e);
        }
    }
    TEST("a device too small for the weights: VLM_ENOMEM naming the tensor") {
        struct engine_params ep = params(fixed / 4, 0.9);
        rc = engine_init(&e, &m, &ep, &err);
        CHECK_EQ(rc, VLM_ENOMEM);
        printf("  %s\n", err.msg);
        CHECK(strstr(err.msg, "out of") != NULL);
        CHECK(strstr(err.msg, "memory") != NULL);
        if (!rc) engine_destroy(&e);
    }
    TEST("weights fit, no room for 2 KV blocks: VLM_ENOMEM naming the KV cache") {
        /* the share covers the fixed part and one block, not two */
        size_t dev = (size_t)((double)(fixed + bb + bb / 2) / 0.9);
        struct engine_params ep = params(dev, 0.9);
        rc = engine_init(&e, &m, &ep, &err);
        CHECK_EQ(rc, VLM_ENOMEM);
        printf("  %s\n", err.msg);
        CHECK(strstr(err.msg, "KV cache") != NULL);
        if (!rc) engine_destroy(&e);
    }
    TEST("the smallest device that works: 2 blocks") {
        size_t dev = (size_t)((double)(fixed + 2 * bb + 4096) / 0.9) + 1;
        struct engine_params ep = params(dev, 0.9);
        rc = engine_init(&e, &m, &ep, &err);
        CHECK_EQ(rc, 0);
        if (!rc) {
            CHECK_EQ(e.n_blocks, 2);
            engine_destroy(&e);
        }
    }
    model_destroy(&m);
    return test_report();
}
