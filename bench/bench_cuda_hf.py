#!/usr/bin/env python3
"""bench_cuda_hf: the shapes of bench/bench_cuda.c through HF transformers on the same GPU
(random weights, bf16, sdpa attention), for the side-by-side ratio in docs/PERF.md.
Developer script for a GPU machine (torch + transformers); prints figures, asserts nothing.

    python3 bench/bench_cuda_hf.py [--layers 36] [--ctx 512] [--steps 10]
"""
import argparse
import statistics
import time

import torch


def timed(fn, steps):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def decoder(args):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                      num_hidden_layers=args.layers, num_attention_heads=32,
                      num_key_value_heads=8, head_dim=128, rope_theta=1e6,
                      max_position_embeddings=40960, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, use_sliding_window=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    print(f"hf decoder: {args.layers} layers, transformers attention "
          f"{model.config._attn_implementation}")
    for b in (1, 8, 64, 256):
        ids = torch.randint(0, cfg.vocab_size, (b, args.ctx - 1), device="cuda")
        with torch.no_grad():
            out = model(ids, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            nxt = torch.randint(0, cfg.vocab_size, (b, 1), device="cuda")

            def step():
                model(nxt, past_key_values=cache, use_cache=True, logits_to_keep=1)
                # keep the context at ctx: drop the token just added
                cache.crop(args.ctx - 1)

            ms = timed(step, args.steps)
        print(f"  decode  b={b:<3d} ctx={args.ctx:<5d} {ms:8.2f} ms/step {b / ms * 1e3:9.1f} tok/s",
              flush=True)
        del cache, out
        torch.cuda.empty_cache()
    ids = torch.randint(0, cfg.vocab_size, (1, 2048), device="cuda")
    with torch.no_grad():
        ms = timed(lambda: model(ids, use_cache=False, logits_to_keep=1), max(args.steps // 2, 3))
    print(f"  prefill 1 x 2048 tokens   {ms:8.2f} ms      {2048 / ms * 1e3:9.1f} tok/s", flush=True)
    del model
    torch.cuda.empty_cache()


def vit(args):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    cfg = Qwen2VLVisionConfig(depth=32, embed_dim=1280, hidden_size=4096, hidden_act="quick_gelu",
                              mlp_ratio=4, num_heads=16, in_channels=3, patch_size=14,
                              spatial_merge_size=2, temporal_patch_size=2)
    with torch.device("cuda"):
        model = Qwen2VisionTransformerPretrainedModel._from_config(cfg).to(torch.bfloat16).eval()
    side = 74
    pix = torch.rand(side * side, 3 * 2 * 14 * 14, device="cuda", dtype=torch.bfloat16)
    grid = torch.tensor([[1, side, side]], device="cuda")
    with torch.no_grad():
        ms = timed(lambda: model(pix, grid_thw=grid), max(args.steps // 2, 3))
    print(f"hf vit: 1024x1024 image (74x74 patches) {ms:.2f} ms "
          f"(attention {model.config._attn_implementation})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    for part in (decoder, vit):
        try:
            part(args)
        except Exception as e:  # one part failing (API drift) must not hide the other
            print(f"{part.__name__}: failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
