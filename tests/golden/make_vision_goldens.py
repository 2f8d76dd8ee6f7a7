#!/usr/bin/env python3
"""Golden outputs for the vision tower + projector and for image+text prompts.

Developer script (needs torch and transformers==4.51.2; CI never runs it, CI reads the JSON it
writes). It regenerates the gqa4 test checkpoint with valley-make-model (arguments from
tests/models.txt), then runs the reference in float32:

  * tower: transformers' Qwen2VisionTransformerPretrainedModel (eager attention) built from a
    Qwen2VLVisionConfig of the checkpoint's small geometry, with the tower weights loaded from
    the safetensors; its PatchMerger is replaced by Valley2.5's projector written from
    MODEL.md "Projector": LayerNorm(dim, eps 1e-6) -> view(-1, 4*dim) -> Linear -> GELU() -> Linear;
  * prompts (--e2e): Qwen3ForCausalLM fed inputs_embeds built by splicing projector rows into
    the token embeddings at the -200 sentinels (MODEL.md "Splicing and positions"),
    positions 0..L-1.

Inputs are not committed: pixel rows are a pure function of (image, row, element) through
splitmix64 (pixel_value() below; tests/model/test_vit.c has the same function), with the two
temporal slices of a row identical as for a real still image.

  python3 tests/golden/make_vision_goldens.py --make-model build/valley-make-model
  python3 tests/golden/make_vision_goldens.py --model release --e2e   # prompts_release.json

On a checkpoint whose config.json does not set use_special_start_end_token false (release),
every image of the prompts is wrapped as <im_start> IMG <im_end> (ids 151669, 151670).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import vlm_fixtures  # noqa: E402  (the committed Qwen3 tokenizer fixture)

M64 = (1 << 64) - 1
VIT_PREFIX = "model.qwen2vl_vision_tower."
# (t, h, w) patch grids of the three golden images: 56x84, 112x112 and 84x140 pixels
GRIDS = [(1, 4, 6), (1, 8, 8), (1, 6, 10)]


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def pixel_value(img, row, c, yx):
    """Value of channel c, in-patch pixel yx (= y*p + x) of patch row `row` of image img:
    (k - 2^23) / 2^22 with k the top 24 bits of splitmix64(key), exact in float32, in [-2, 2)."""
    key = (img << 40) | (row << 16) | (c * 1024 + yx)
    k = splitmix64(key) >> 40
    return (k - (1 << 23)) / float(1 << 22)


def make_pixels(img, grid, chans, tps, ps):
    t, h, w = grid
    rows = t * h * w
    out = np.zeros((rows, chans * tps * ps * ps), dtype=np.float32)
    for r in range(rows):
        for c in range(chans):
            vals = [pixel_value(img, r, c, yx) for yx in range(ps * ps)]
            for ts in range(tps):
                base = (c * tps + ts) * ps * ps
                out[r, base:base + ps * ps] = vals
    return out


def model_args(name, source_dir):
    with open(os.path.join(source_dir, "tests", "models.txt")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return shlex.split(line.split(":", 1)[1])
    sys.exit(f"no model {name} in tests/models.txt")


class Projector(nn.Module):
    """Valley2.5's merger (docs/MODEL.md, "Projector"), written from that description."""

    def __init__(self, dim, merge2, hidden, out_dim):
        super().__init__()
        self.dim4 = dim * merge2
        self.ln_q = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(self.dim4, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x):
        return self.mlp(self.ln_q(x).view(-1, self.dim4))


def build_vision(cfg, sd):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    vc = cfg.get("vision_config", {})
    vcfg = Qwen2VLVisionConfig(
        depth=vc["depth"], embed_dim=vc["embed_dim"], num_heads=vc["num_heads"],
        mlp_ratio=vc.get("mlp_ratio", 4), hidden_act=vc.get("hidden_act", "quick_gelu"),
        in_channels=vc.get("in_chans", 3), patch_size=vc.get("patch_size", 14),
        temporal_patch_size=vc.get("temporal_patch_size", 2),
        spatial_merge_size=vc.get("spatial_merge_size", 2), hidden_size=cfg["hidden_size"])
    vcfg._attn_implementation = "eager"
    tower = Qwen2VisionTransformerPretrainedModel(vcfg).float().eval()
    tower.merger = nn.Identity()
    tsd = {k[len(VIT_PREFIX):]: v for k, v in sd.items()
           if k.startswith(VIT_PREFIX) and not k.startswith(VIT_PREFIX + "merger.")}
    missing, unexpected = tower.load_state_dict(tsd, strict=False)
    assert not unexpected and all(k.startswith("merger") for k in missing), (missing, unexpected)

    fc1 = sd[VIT_PREFIX + "merger.mlp.0.weight"]
    m2 = vcfg.spatial_merge_size ** 2
    proj = Projector(vcfg.embed_dim, m2, fc1.shape[0], cfg["hidden_size"]).float().eval()
    proj.load_state_dict({k[len(VIT_PREFIX + "merger."):]: v for k, v in sd.items()
                          if k.startswith(VIT_PREFIX + "merger.")})
    return vcfg, tower, proj


@torch.no_grad()
def encode(tower, proj, pixels, grids):
    x = torch.from_numpy(np.concatenate(pixels, 0))
    g = torch.tensor(grids, dtype=torch.int64)
    return proj(tower(x, grid_thw=g))


def rows_list(t):
    return [[float(v) for v in row] for row in t.numpy().astype(np.float32)]


def load_checkpoint(args, work, name, argv):
    """Generates checkpoint `name` with valley-make-model argv (or uses --checkpoint for gqa4);
    returns (config, float32 state dict)."""
    from safetensors.torch import load_file

    mdir = args.checkpoint if (args.checkpoint and name == args.model) else None
    if not mdir:
        mdir = os.path.join(work, name)
        subprocess.run([args.make_model, "--out", mdir] + argv, check=True)
    with open(os.path.join(mdir, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(mdir, "model.safetensors.index.json")
    if os.path.exists(index):  # shards (the release layout)
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for name in files:
        sd.update({k: v.float() for k, v in load_file(os.path.join(mdir, name)).items()})
    return cfg, sd


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes")


WHAT = ("Valley2.5 vision tower + projector outputs (float32), HF transformers 4.51.2 "
        "Qwen2VisionTransformerPretrainedModel + spec projector; made by "
        "tests/golden/make_vision_goldens.py")
# A second tower with the real head size 80 (dim 160, 2 heads: 20 rotary frequencies per
# axis, as the 1280/16 tower) and a two-slice item (grid_t 2: one attention segment per
# slice). Not in tests/models.txt: test_vit.c writes it itself with testmodel_write() from
# the same parameters (valley-make-model defaults + these, synthesized tokenizer).
HD80_ARGS = ["--seed", "7", "--hidden", "64", "--layers", "1", "--heads", "2", "--kv-heads", "1",
             "--ffn", "128", "--vit-depth", "2", "--vit-dim", "160", "--vit-heads", "2",
             "--merger-hidden", "96"]
HD80_GRIDS = [(1, 4, 6), (2, 4, 4), (1, 6, 2)]
TEMPORAL_GRID = (2, 4, 4)  # gqa4: image index 3, encoded alone


def main():
    ap = argparse.ArgumentParser()
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--make-model", default=os.path.join(src, "build", "valley-make-model"))
    ap.add_argument("--tokenizer", help="tokenizer folder (default: the committed fixture)")
    ap.add_argument("--model", default="gqa4")
    ap.add_argument("--out", default=os.path.join(src, "tests", "golden", "vision"))
    ap.add_argument("--checkpoint", help="use this checkpoint folder instead of generating one")
    ap.add_argument("--e2e", action="store_true", help="also write image+text logits goldens")
    args = ap.parse_args()
    args.tokenizer = args.tokenizer or str(vlm_fixtures.tokenizer_dir())
    torch.manual_seed(0)
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)

    if args.model != "gqa4":
        # another checkpoint of tests/models.txt (release): the image+text prompts only,
        # written to prompts_<model>.json
        with tempfile.TemporaryDirectory() as work:
            margs = model_args(args.model, src)
            cfg, sd = load_checkpoint(args, work, args.model,
                                      ["--tokenizer", args.tokenizer] + margs)
        vcfg, tower, proj = build_vision(cfg, sd)
        ps, tps, ch = vcfg.patch_size, vcfg.temporal_patch_size, vcfg.in_channels
        pixels = [make_pixels(i, g, ch, tps, ps) for i, g in enumerate(GRIDS)]
        make_e2e(args, src, cfg, sd, proj, tower, pixels)
        return

    with tempfile.TemporaryDirectory() as work:
        margs = model_args(args.model, src)
        cfg, sd = load_checkpoint(args, work, args.model, ["--tokenizer", args.tokenizer] + margs)
        cfg80, sd80 = load_checkpoint(args, work, "hd80", HD80_ARGS)

    # gqa4: three images of different sizes in one call, image 0 alone, a two-slice item
    vcfg, tower, proj = build_vision(cfg, sd)
    ps, tps, ch = vcfg.patch_size, vcfg.temporal_patch_size, vcfg.in_channels
    pixels = [make_pixels(i, g, ch, tps, ps) for i, g in enumerate(GRIDS)]
    together = encode(tower, proj, pixels, GRIDS)
    alone = [encode(tower, proj, [p], [g]) for p, g in zip(pixels, GRIDS)]
    # the reference itself must give the same rows alone and in a batch
    assert torch.allclose(torch.cat(alone, 0), together, rtol=0, atol=1e-5)
    temporal = encode(tower, proj, [make_pixels(3, TEMPORAL_GRID, ch, tps, ps)], [TEMPORAL_GRID])
    write_json(os.path.join(args.out, "embeddings.json"), {
        "what": WHAT, "model": args.model, "model_args": " ".join(margs),
        "pixels": "pixel_value(image, row, c, yx) of make_vision_goldens.py",
        "grids": [list(g) for g in GRIDS], "hidden": cfg["hidden_size"],
        "embeddings": rows_list(together),  # (sum n_tokens, hidden), images in order
        "single": rows_list(alone[0]),      # image 0 encoded alone
        "temporal_grid": list(TEMPORAL_GRID),
        "temporal": rows_list(temporal),    # image 3 (TEMPORAL_GRID) encoded alone
    })

    # hd80: three items, one of two temporal slices, in one call
    vcfg80, tower80, proj80 = build_vision(cfg80, sd80)
    assert vcfg80.embed_dim // vcfg80.num_heads == 80
    px80 = [make_pixels(i, g, ch, tps, ps) for i, g in enumerate(HD80_GRIDS)]
    out80 = encode(tower80, proj80, px80, HD80_GRIDS)
    write_json(os.path.join(args.out, "embeddings_hd80.json"), {
        "what": WHAT, "model": "hd80", "model_args": " ".join(HD80_ARGS),
        "grids": [list(g) for g in HD80_GRIDS], "hidden": cfg80["hidden_size"],
        "embeddings": rows_list(out80),
    })

    if args.e2e:
        make_e2e(args, src, cfg, sd, proj, tower, pixels)


# Chat-format prompts around the images (header ids: docs/MODEL.md, "Chunked tokenization"). IMG marks an
# image sentinel (-200); text pieces are tokenised with the fixture tokenizer.
IMG = -200
IM_START, IM_END, NL, USER, ASSISTANT = 151644, 151645, 198, 872, 77091
VALLEY_IM_START, VALLEY_IM_END = 151669, 151670  # <im_start>, <im_end> (release tokenizer)
PROMPTS = [
    ("one image", [[IM_START, USER, NL], IMG, "\nDescribe the given image.",
                   [IM_END, NL, IM_START, ASSISTANT, NL]], [0]),
    ("three images of different sizes", [[IM_START, USER, NL], IMG, " ", IMG, " ", IMG,
                                         "\nWhat differs between these pictures?",
                                         [IM_END, NL, IM_START, ASSISTANT, NL]], [0, 1, 2]),
    ("an image between two text parts", [[IM_START, USER, NL], "Here is a photo: ", IMG,
                                         " What is in it?", [IM_END, NL, IM_START, ASSISTANT, NL]],
     [2]),
]
N_GREEDY = 32
STRIDE = 499  # logits kept at ids 0, STRIDE, 2*STRIDE, ... plus each row's top 16


def prompt_ids(tok, parts):
    ids = []
    for p in parts:
        if p == IMG:
            ids.append(IMG)
        elif isinstance(p, str):
            ids.extend(tok.encode(p, add_special_tokens=False).ids)
        else:
            ids.extend(p)
    return ids


@torch.no_grad()
def make_e2e(args, src, cfg, sd, proj, tower, pixels):
    """Image+text prompts through Qwen3ForCausalLM with spliced inputs_embeds."""
    from tokenizers import Tokenizer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    qcfg = Qwen3Config(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        head_dim=cfg.get("head_dim"), rope_theta=cfg.get("rope_theta", 10000.0),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        max_position_embeddings=cfg.get("max_position_embeddings", 32768), attention_bias=False,
        use_sliding_window=False, sliding_window=None)
    qcfg._attn_implementation = "eager"
    lm = Qwen3ForCausalLM(qcfg).float().eval()
    lsd = {k: v for k, v in sd.items() if not k.startswith(VIT_PREFIX)}
    missing, unexpected = lm.load_state_dict(lsd, strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    if qcfg.tie_word_embeddings:
        lm.tie_weights()
    embed = lm.get_input_embeddings()
    vocab = cfg["vocab_size"]
    stride_ids = list(range(0, vocab, STRIDE))

    # images wrapped as <im_start> IMG <im_end> unless config.json says false (the Valley
    # processor's default); on the release tokenizer the markers are added ids 151669/151670
    wrap = cfg.get("use_special_start_end_token", True)
    if wrap:
        assert cfg["vocab_size"] >= 151679, "wrapping needs the Valley added tokens"
    out = []
    for name, parts, imgs in PROMPTS:
        if wrap:
            parts = [q for p in parts for q in ([[VALLEY_IM_START], IMG, [VALLEY_IM_END]]
                                                 if p == IMG else [p])]
        ids = prompt_ids(tok, parts)
        assert ids.count(IMG) == len(imgs)
        feats = [encode(tower, proj, [pixels[i]], [GRIDS[i]]) for i in imgs]
        # splice (docs/MODEL.md, "Splicing and positions"): text embeddings, image k's rows at the k-th sentinel
        pieces, spans, k, L = [], [], 0, 0
        text = []
        for t in ids + [None]:
            if t is None or t == IMG:
                if text:
                    pieces.append(embed(torch.tensor(text)))
                    L += len(text)
                    text = []
                if t == IMG:
                    spans.append([L, imgs[k]])
                    pieces.append(feats[k])
                    L += feats[k].shape[0]
                    k += 1
            else:
                text.append(t)
        emb = torch.cat(pieces, 0)[None]
        res = lm(inputs_embeds=emb, use_cache=True)
        logits = res.logits[0]
        check_rows = sorted({0, spans[0][0], spans[-1][0] + feats[-1].shape[0] - 1,
                             spans[-1][0] + feats[-1].shape[0], L - 1})
        rows = []
        for r in check_rows:
            lr = logits[r]
            top = torch.topk(lr, 16).indices.tolist()
            keep = sorted(set(stride_ids) | set(top))
            rows.append({"row": r, "max_abs": float(lr.abs().max()), "argmax": int(lr.argmax()),
                         "ids": keep, "values": [float(lr[i]) for i in keep]})
        # greedy continuation with the KV cache; record the smallest top-1/top-2 margin
        pkv, nxt, gen, margin = res.past_key_values, logits[-1], [], float("inf")
        for _ in range(N_GREEDY):
            t2 = torch.topk(nxt, 2).values
            margin = min(margin, float(t2[0] - t2[1]))
            t = int(nxt.argmax())
            gen.append(t)
            res = lm(input_ids=torch.tensor([[t]]), past_key_values=pkv, use_cache=True)
            pkv, nxt = res.past_key_values, res.logits[0, -1]
        print(f"{name}: L {L}, spans {spans}, greedy {gen[:8]}..., min top-2 margin {margin:.4g}")
        out.append({"name": name, "ids": ids, "images": imgs, "spans": spans, "length": L,
                    "rows": rows, "greedy": gen, "min_margin": margin})

    gold = {
        "what": "image+text logits (float32) of Qwen3ForCausalLM on spliced inputs_embeds, "
                "transformers 4.51.2; made by tests/golden/make_vision_goldens.py --e2e",
        "model": args.model, "model_args": " ".join(model_args(args.model, src)),
        "image_sentinel": IMG, "grids": [list(g) for g in GRIDS], "wrapped": bool(wrap),
        "prompts": out,
    }
    path = os.path.join(args.out, "prompts.json" if args.model == "gqa4"
                        else "prompts_%s.json" % args.model)
    with open(path, "w") as f:
        json.dump(gold, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
