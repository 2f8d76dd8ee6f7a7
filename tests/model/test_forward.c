// models: gqa4 mha
/*
 * test_forward: the CPU engine against HF transformers' Qwen3ForCausalLM (float32, eager) on
 * the generated gqa4 (GQA ratio 4) and mha (ratio 1) checkpoints, goldens from
 * tests/golden/make_goldens.py in tests/golden/text/.
 *
 *  - logits at EVERY prompt position, over the full vocabulary, within 1e-4 x max|logit|:
 *    the reference rows are rebuilt as lm_head · h from the golden final hidden states h
 *    (the goldens' own HF top-8 logits and logsumexp check that rebuild);
 *  - greedy continuation of 32 tokens identical to HF generate;
 *  - prompts include one token and one longer than 40 blocks of 16; prefill runs in chunks
 *    of 96 tokens, so several chunks read KV written by earlier steps;
 *  - a model whose config does not match its tensors is refused by engine_init;
 *  - all of it with the bf16 weights used in place (no copy) under --numerics exact; and the
 *    same prefills under --numerics fast (activations rounded to bf16, bf16 dot products)
 *    within FAST_BOUND, the bound the CUDA backend's bf16 logits meet (test_cuda_forward).
 * Prints a hash of the final logits of each prompt so numerical drift shows in the logs.
 */
#include "forward_golden.h"

int main(void)
{
    check_config("gqa4");
    check_config("mha");
    return test_report();
}
