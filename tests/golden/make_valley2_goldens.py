#!/usr/bin/env python3
"""Golden outputs of Valley2 for tests/model/test_forward_valley2.c (the Qwen2.5 decoder on text)
and, with --images, tests/model/test_forward_valley2_images.c (image prompts).

Developer script (needs torch, transformers==4.51.2, safetensors, tokenizers: the reference
venv; CI never runs it, CI reads what it writes). For each Valley2 test checkpoint of
tests/models.txt (valley2: bf16 weights, valley2_f16: f16 weights) it regenerates the folder
with valley-make-model, checks that every tensor of the folder has the name and shape the
reference modules give it (the decoder: transformers' Qwen2ForCausalLM; the SigLIP tower:
SiglipVisionModel under model.vision_tower.vision_tower; the projector: Valley2's
conv_adapter, Linear-GELU-Linear then Conv2d(3, stride 2, pad 1); the Qwen2-VL tower with
its original PatchMerger), loads the decoder weights, widened to float32, into
Qwen2ForCausalLM (eager attention) and records for every prompt, as make_goldens.py does for
Valley2.5:

  * the prompt ids (the fixture tokenizer.json: the same ids as the folder's slow files);
  * at EVERY prompt position the final hidden state after model.norm (<name>.bin), argmax,
    max|logit|, logsumexp and the top-8 (id, logit);
  * the greedy continuation of 32 tokens (HF generate, do_sample=False) and the gap between
    the two best logits per step;
  * the same model run in the checkpoint's own dtype (bf16 or f16, as Valley2's demos run
    fp16): per prompt the worst max|logit - f32 logit| / max|logit| over its positions
    ("native_rel"), what the engine's --numerics fast bound is compared with.

With --images it writes tests/golden/valley2/e2e.json instead: image prompts on the "valley2"
checkpoint, every image through both towers as Valley2 runs them (docs/MODEL.md, "Valley2"):

  * the SigLIP side: the Valley2 processor's tiling (make_valley2_prep_goldens.py's
    re-implementation: AnyRes for a lone image, one tile each when several) through
    transformers' SiglipVisionModel, the conv_adapter projector and the AnyRes assembly
    (make_siglip_goldens.siglip_image_features);
  * the Qwen2-VL side: qwen-vl-utils fetch_image + Qwen2VLImageProcessor (the pixels), then
    transformers' Qwen2VisionTransformerPretrainedModel with its own PatchMerger;
  * the prompt: the folder's chat template (jinja2), markers wrapped as <im_start><image><im_end>,
    chunked tokenization (make_chat_goldens.py) with AutoTokenizer on the folder's slow files
    (<im_start>, <im_end> are its added tokens), the implicit 3x3 black image for a text-only
    conversation; each sentinel replaced by the SigLIP rows then the Qwen2-VL rows;
  * Qwen2ForCausalLM on the spliced inputs_embeds, float32: logits at a few rows (every 1024th id
    and the top 16), the smallest top-2 margin and 32 greedy tokens.

  /work/refvenv/bin/python tests/golden/make_valley2_goldens.py --make-model build/valley-make-model
  /work/refvenv/bin/python tests/golden/make_valley2_goldens.py --make-model build/valley-make-model --images
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
from tokenizers import Tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import make_goldens as mg  # noqa: E402  (the Valley2.5 script: helpers and prompts)
import vlm_fixtures  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = ["valley2", "valley2_f16"]
N_GEN = 32
TOPK = 8
PROMPTS = [
    ("single", None),
    ("hello", "Hello, world! How are you today?"),
    ("chat", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
             "Write a haiku about paged attention.<|im_end|>\n<|im_start|>assistant\n"),
    ("code", "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"),
    ("long", mg.LONG_PARA * 5),
]
SIGLIP = "model.vision_tower.vision_tower."
PROJ = "model.mm_projector."
VIT = "model.qwen2vl_vision_tower."


def read_folder(model_dir):
    """name -> (dtype string, shape, float32 tensor) for every tensor of the folder."""
    import struct
    out = {}
    for fn in sorted(os.listdir(model_dir)):
        if not fn.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, fn), "rb") as f:
            hlen = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(hlen))
            base = 8 + hlen
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                s, e = info["data_offsets"]
                f.seek(base + s)
                raw = f.read(e - s)
                if info["dtype"] == "BF16":
                    arr = mg.bf16_to_f32(np.frombuffer(raw, dtype=np.uint16))
                elif info["dtype"] == "F16":
                    arr = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
                elif info["dtype"] == "F32":
                    arr = np.frombuffer(raw, dtype=np.float32)
                else:
                    raise SystemExit(f"unexpected dtype {info['dtype']} for {name}")
                out[name] = (info["dtype"], tuple(info["shape"]),
                             torch.from_numpy(arr.reshape(info["shape"]).copy()))
    return out


class ConvAdapter(nn.Module):
    """Valley2's conv_adapter projector (its module layout, for the tensor names)."""

    def __init__(self, dim_in, dim_out, mlp_hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim_in, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim_out))
        self.conv = nn.Conv2d(dim_out, dim_out, kernel_size=(3, 3), stride=(2, 2), padding=1)


def check_layout(c, tensors):
    """Every tensor of the folder is one the reference modules have, with their shape."""
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
    want = {}
    dec = build_hf(c, native=None)[0]
    for k, v in dec.state_dict().items():
        want[k] = tuple(v.shape)
    if "mm_vision_tower" in c:
        sc = c["siglip_vision_config"]
        sig = SiglipVisionModel(SiglipVisionConfig(**sc))
        for k, v in sig.state_dict().items():
            want[SIGLIP + k] = tuple(v.shape)
        proj = ConvAdapter(c["mm_hidden_size"], c["hidden_size"], c["mlp_hidden_dim"])
        for k, v in proj.state_dict().items():
            want[PROJ + k] = tuple(v.shape)
        vc = c["vision_config"]
        vit = Qwen2VisionTransformerPretrainedModel(Qwen2VLVisionConfig(
            depth=vc["depth"], embed_dim=vc["embed_dim"], num_heads=vc["num_heads"],
            mlp_ratio=vc["mlp_ratio"], hidden_size=c["hidden_size"], hidden_act="quick_gelu",
            patch_size=14, temporal_patch_size=2, spatial_merge_size=2, in_channels=3))
        for k, v in vit.state_dict().items():
            want[VIT + k] = tuple(v.shape)
    have = {k: v[1] for k, v in tensors.items()}
    if c.get("tie_word_embeddings"):
        want.pop("lm_head.weight", None)
    if have != want:
        extra = sorted(set(have) - set(want))[:5]
        missing = sorted(set(want) - set(have))[:5]
        shapes = [(k, have[k], want[k]) for k in have if k in want and have[k] != want[k]][:5]
        raise SystemExit(f"layout mismatch: extra {extra}, missing {missing}, shapes {shapes}")
    return len(have)


def build_hf(c, native, tensors=None):
    cfg = Qwen2Config(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], num_key_value_heads=c["num_key_value_heads"],
        rms_norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
        max_position_embeddings=c["max_position_embeddings"],
        tie_word_embeddings=c["tie_word_embeddings"], use_sliding_window=False,
        sliding_window=None, torch_dtype=torch.float32)
    cfg._attn_implementation = "eager"
    model = Qwen2ForCausalLM(cfg).to(torch.float32).eval()
    if tensors is None:
        return model, cfg
    sd = {k: v[2] for k, v in tensors.items() if not k.startswith((SIGLIP, PROJ, VIT))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not (cfg.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if native is not None:
        model = model.to(native)  # the stored values exactly (they came from this dtype)
    return model, cfg


def run_config(name, make_model, tok_dir, out_dir):
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, name)
        cmd = [make_model, "--out", mdir, "--tokenizer", tok_dir] + mg.model_args(name)
        subprocess.run(cmd, check=True)
        with open(os.path.join(mdir, "config.json")) as f:
            c = json.load(f)
        tensors = read_folder(mdir)
    n_tensors = check_layout(c, tensors)
    dtypes = {v[0] for k, v in tensors.items()}
    if len(dtypes) != 1:
        raise SystemExit(f"mixed dtypes {dtypes}")
    stored = dtypes.pop()
    native = {"BF16": torch.bfloat16, "F16": torch.float16}.get(stored)
    model, _ = build_hf(c, None, tensors)
    model_native = build_hf(c, native, tensors)[0] if native is not None else None

    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    prompts, blobs, row = [], [], 0
    for pname, text in PROMPTS:
        ids = [9707] if text is None else tok.encode(text, add_special_tokens=False).ids
        x = torch.tensor([ids], dtype=torch.long)
        with torch.no_grad():
            h = model.model(input_ids=x).last_hidden_state[0]
            logits = model.lm_head(h).double()
            gen = model.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=N_GEN, do_sample=False,
                num_beams=1, eos_token_id=None, pad_token_id=0, output_scores=True,
                return_dict_in_generate=True, min_new_tokens=N_GEN)
            native_rel = None
            if model_native is not None:
                ln = model_native(input_ids=x).logits[0].double()
                mxr = logits.abs().max(dim=-1).values
                native_rel = float(((ln - logits).abs().max(dim=-1).values / mxr).max())
        new = gen.sequences[0, len(ids):].tolist()
        gaps = []
        for s in gen.scores:
            v, _ = torch.topk(s[0].double(), 2)
            gaps.append(float(v[0] - v[1]))
        top_v, top_i = torch.topk(logits, TOPK, dim=-1)
        lse = torch.logsumexp(logits, dim=-1)
        mx = logits.abs().max(dim=-1).values
        p = {
            "name": pname, "ids": ids, "hidden_row0": row,
            "argmax": logits.argmax(dim=-1).tolist(),
            "max_abs": [mg.g7(v) for v in mx], "lse": [mg.g7(v) for v in lse],
            "top_ids": top_i.tolist(), "top_logits": [[mg.g7(v) for v in r] for r in top_v],
            "greedy": new, "greedy_gap": [mg.g7(v) for v in gaps],
        }
        if native_rel is not None:
            p["native_rel"] = mg.g7(native_rel)
        prompts.append(p)
        blobs.append(h.float().numpy().astype("<f4"))
        row += len(ids)
        print(f"{name}/{pname}: {len(ids)} tokens, greedy {new[:8]}..., min gap {min(gaps):.4g}, "
              f"{stored} reference vs f32: {native_rel}", file=sys.stderr)
    hidden = np.concatenate(blobs, axis=0)
    with open(os.path.join(out_dir, f"{name}.bin"), "wb") as f:
        f.write(hidden.tobytes())
    meta = {
        "config": name, "make_model_args": mg.model_args(name),
        "hidden_size": c["hidden_size"], "vocab_size": c["vocab_size"], "n_gen": N_GEN,
        "topk": TOPK, "hidden_file": f"{name}.bin", "hidden_rows": int(hidden.shape[0]),
        "stored_dtype": stored, "layout_tensors": n_tensors,
        "reference": "transformers %s Qwen2ForCausalLM float32 eager" % __import__("transformers").__version__,
        "prompts": prompts,
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")


# ==== Image prompts (--images) ====

IMG_DIR = os.path.join(HERE, "images")
V2_DIR = os.path.join(HERE, "valley2")
STRIDE = 1024
N_GREEDY = 32
# (name, user text, image files, max_vision_token override or None). The test folder's
# max_vision_token is 500 (valley-make-model --arch valley2), so "wide" pools: 196 + 12 x 42
# kept tokens are over the cap and pooled to 9 x 32; "wide_unpooled" runs it as a folder with
# the released cap would, the 12 x 42 map kept.
IMG_PROMPTS = [
    ("text", "Hello! Who are you?", [], None),
    ("one", "Describe the image.", ["images/gray_200x150.png"], None),
    ("three", "Compare the three images.",
     ["images/rgb_100x37.png", "images/noisy_40x30.png", "images/gray_200x150.png"], None),
    ("wide", "What is in this picture?", ["valley2/wide_1000x300.png"], None),
    ("wide_unpooled", "What is in this picture?", ["valley2/wide_1000x300.png"], 100000),
]


def black_3x3():
    from PIL import Image
    return Image.new("RGB", (3, 3), (0, 0, 0))


def siglip_side(prep, sg, tensors, c, tower, img, n_images, mvt):
    """One image's SigLIP rows: the processor's tiles, then tower + projector + assembly."""
    cands = prep.pinpoints(c.get("grid_pinpoints", prep.DEFAULT_PINPOINTS))
    w, h = img.size
    if n_images == 1 and c.get("anyres", True):
        res, _, _, tiles = prep.anyres_tiles(img, cands)
        gw, gh = res[0] // prep.TILE, res[1] // prep.TILE
        px = np.stack([prep.siglip(t) for t in tiles])
    else:
        gw = gh = 0
        px = prep.siglip(img)[None]
    geom = sg.anyres_geometry(w, h, gw, gh, prep.TPS, mvt)
    return sg.siglip_image_features(tensors, c, px.astype(np.float32), geom, tower), geom


def qwen2vl_side(vision_process, proc_cls, vit, img):
    """One image's Qwen2-VL rows: fetch_image + Qwen2VLImageProcessor, tower + PatchMerger."""
    stage1 = vision_process.fetch_image({"image": img, "min_pixels": 3136, "max_pixels": 12845056})
    # Valley2's processor settings: max_pixels 1280 * 28 * 28 for the processor stage
    proc = proc_cls(min_pixels=3136, max_pixels=1280 * 28 * 28, patch_size=14,
                    temporal_patch_size=2, merge_size=2)
    out = proc(images=[stage1], return_tensors="pt")
    with torch.no_grad():
        return vit(out["pixel_values"].float(), grid_thw=out["image_grid_thw"]), \
            [int(x) for x in out["image_grid_thw"][0]]


def build_vit(c, tensors):
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
    vc = c["vision_config"]
    conf = Qwen2VLVisionConfig(
        depth=vc["depth"], embed_dim=vc["embed_dim"], num_heads=vc["num_heads"],
        mlp_ratio=vc["mlp_ratio"], hidden_size=c["hidden_size"], hidden_act="quick_gelu",
        patch_size=14, temporal_patch_size=2, spatial_merge_size=2, in_channels=3)
    conf._attn_implementation = "eager"
    vit = Qwen2VisionTransformerPretrainedModel(conf).to(torch.float32).eval()
    vit.load_state_dict({k[len(VIT):]: v[2] for k, v in tensors.items() if k.startswith(VIT)},
                        strict=True)  # the original PatchMerger: merger.ln_q, merger.mlp.{0,2}
    return vit


def run_images(make_model, tok_dir, out_path):
    from PIL import Image
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    import make_chat_goldens as mc
    import make_image_goldens as mi
    import make_siglip_goldens as sg
    import make_valley2_prep_goldens as prep

    name = "valley2"
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, name)
        subprocess.run([make_model, "--out", mdir, "--tokenizer", tok_dir] + mg.model_args(name),
                       check=True)
        with open(os.path.join(mdir, "config.json")) as f:
            c = json.load(f)
        with open(os.path.join(mdir, "tokenizer_config.json")) as f:
            template = json.load(f)["chat_template"]
        tensors = read_folder(mdir)
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(mdir)  # the folder's slow files, its added tokens
    check_layout(c, tensors)
    model, _ = build_hf(c, None, tensors)
    embed = model.get_input_embeddings()
    vit = build_vit(c, tensors)
    tower = sg.siglip_tower(tensors, c)
    vision_process, proc_cls = mi.load_reference()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = mc.hf_tojson
    tmpl = env.from_string(template)
    class HfTok:  # the reference tokenizer, shaped like tokenizers.Tokenizer for mc.tokenize
        def encode(self, s, add_special_tokens=False):
            return type("E", (), {"ids": hf.encode(s, add_special_tokens=False)})()

    tok = HfTok()
    wrap = c.get("use_special_start_end_token", True)
    vocab = c["vocab_size"]
    stride_ids = list(range(0, vocab, STRIDE))

    out = []
    for pname, text, files, mvt_override in IMG_PROMPTS:
        msgs = [{"role": "user", "text": text, "n_images": len(files)}]
        prepared, total = mc.prepare(msgs, {"implicit_image": True, "wrap_image_tokens": wrap})
        rendered = tmpl.render(messages=prepared, add_generation_prompt=True)
        ids = mc.tokenize(tok, rendered)
        imgs = [Image.open(os.path.join(HERE, f)).convert("RGB") for f in files] or [black_3x3()]
        assert ids.count(mc.SENTINEL) == total == len(imgs)
        mvt = mvt_override or c.get("max_vision_token", prep.DEFAULT_MAX_VISION_TOKEN)
        feats, per_image = [], []
        for img in imgs:
            s_rows, geom = siglip_side(prep, sg, tensors, c, tower, img, len(imgs), mvt)
            q_rows, grid = qwen2vl_side(vision_process, proc_cls, vit, img)
            feats.append(torch.cat([s_rows, q_rows], 0))
            per_image.append({"size": list(img.size), "siglip_tokens": int(s_rows.shape[0]),
                              "qwen2vl_tokens": int(q_rows.shape[0]), "grid": grid,
                              "geometry": geom})
        pieces, spans, k, L, run = [], [], 0, 0, []
        for t in ids + [None]:
            if t is None or t == mc.SENTINEL:
                if run:
                    pieces.append(embed(torch.tensor(run)))
                    L += len(run)
                    run = []
                if t == mc.SENTINEL:
                    spans.append([L, k])
                    pieces.append(feats[k])
                    L += feats[k].shape[0]
                    k += 1
            else:
                run.append(t)
        with torch.no_grad():
            res = model(inputs_embeds=torch.cat(pieces, 0)[None], use_cache=True)
            logits = res.logits[0].double()
            first, last = spans[0][0], spans[-1][0] + feats[-1].shape[0] - 1
            check = sorted({0, first, first + per_image[0]["siglip_tokens"], last, last + 1, L - 1})
            rows = []
            for r in check:
                lr = logits[r]
                keep = sorted(set(stride_ids) | set(torch.topk(lr, 16).indices.tolist()))
                rows.append({"row": r, "max_abs": float(lr.abs().max()), "argmax": int(lr.argmax()),
                             "ids": keep, "values": [float(lr[i]) for i in keep]})
            pkv, nxt, gen, margin = res.past_key_values, logits[-1], [], float("inf")
            for _ in range(N_GREEDY):
                t2 = torch.topk(nxt, 2).values
                margin = min(margin, float(t2[0] - t2[1]))
                t = int(nxt.argmax())
                gen.append(t)
                res = model(input_ids=torch.tensor([[t]]), past_key_values=pkv, use_cache=True)
                pkv, nxt = res.past_key_values, res.logits[0, -1].double()
        print(f"{pname}: L {L}, spans {spans}, per image {[(p['siglip_tokens'], p['qwen2vl_tokens']) for p in per_image]}, "
              f"greedy {gen[:8]}..., min top-2 margin {margin:.4g}", file=sys.stderr)
        out.append({"name": pname, "text": text, "files": files, "max_vision_token": mvt,
                    "ids": ids, "images": per_image, "spans": spans, "length": L,
                    "rows": rows, "greedy": gen, "min_margin": margin})
    gold = {
        "what": "Valley2 image prompts: SigLIP (SiglipVisionModel + conv_adapter + AnyRes "
                "assembly) then Qwen2-VL (Qwen2VisionTransformerPretrainedModel, PatchMerger) "
                "rows spliced at each sentinel, Qwen2ForCausalLM float32, transformers %s; made "
                "by tests/golden/make_valley2_goldens.py --images" % __import__("transformers").__version__,
        "model": name, "make_model_args": mg.model_args(name), "image_sentinel": mc.SENTINEL,
        "wrapped": bool(wrap), "prompts": out,
    }
    with open(out_path, "w") as f:
        json.dump(gold, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", out_path, os.path.getsize(out_path), "bytes", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-model", required=True, help="path to valley-make-model")
    ap.add_argument("--tokenizer", help="tokenizer folder (default: the committed fixture)")
    ap.add_argument("--out", default=os.path.join(HERE, "text"))
    ap.add_argument("--configs", nargs="*", default=CONFIGS)
    ap.add_argument("--images", action="store_true", help="write valley2/e2e.json (image prompts)")
    a = ap.parse_args()
    a.tokenizer = a.tokenizer or str(vlm_fixtures.tokenizer_dir())
    if a.images:
        torch.manual_seed(0)
        run_images(os.path.abspath(a.make_model), os.path.abspath(a.tokenizer),
                   os.path.join(V2_DIR, "e2e.json"))
        return
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    for name in a.configs:
        run_config(name, os.path.abspath(a.make_model), os.path.abspath(a.tokenizer), a.out)


if __name__ == "__main__":
    main()
