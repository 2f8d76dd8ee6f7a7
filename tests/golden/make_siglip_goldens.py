#!/usr/bin/env python3
"""Golden outputs of Valley2's SigLIP side (tower, projector, AnyRes assembly) for
tests/model/test_siglip.c.

Developer script (needs torch, transformers==4.51.2, numpy: the reference venv; CI never runs
it, CI reads what it writes). For the Valley2 test checkpoints `valley2` (conv_adapter,
bf16), `valley2_f16` (conv_adapter, f16) and `valley2_ovis` (ovis_conv_adapter) of
tests/models.txt it regenerates the folder with valley-make-model, loads the SigLIP tensors,
widened to float32, into transformers' SiglipVisionModel, runs the projector as
re-implemented below from Valley2's formulas (docs/MODEL.md, "Valley2 projectors") and
assembles the tiles as the reference model does (base tile, crops stitched, unpadded with
the original size, then adaptive average pooling when over the token cap). For each case it
records the geometry, a few whole rows and the row and column sums of the output
(tests/golden/siglip/goldens.json).

  /work/refvenv/bin/python tests/golden/make_siglip_goldens.py --make-model build/valley-make-model

Importable: siglip_image_features(tensors, cfg, tiles, geom) and the helpers it uses are what
the whole-model golden script reuses.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as Fn
from transformers import SiglipVisionConfig, SiglipVisionModel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SIGLIP = "model.vision_tower.vision_tower.vision_model."
PROJ = "model.mm_projector."
CONFIGS = ["valley2", "valley2_f16", "valley2_ovis"]
N_ROWS = 6  # whole rows recorded per case (spread over the output)


# ==== The tower ====

def siglip_tower(tensors, cfg):
    """transformers' SiglipVisionModel with the folder's tensors (name -> (dtype, shape,
    float32 tensor), as make_valley2_goldens.read_folder gives them), float32, eager."""
    sc = dict(cfg.get("siglip_vision_config", {}))
    conf = SiglipVisionConfig(**sc)
    conf._attn_implementation = "eager"
    model = SiglipVisionModel(conf).to(torch.float32).eval()
    prefix = "model.vision_tower.vision_tower."
    sd = {k[len(prefix):]: v[2] for k, v in tensors.items() if k.startswith(prefix)}
    model.load_state_dict(sd, strict=True)  # raises on a missing or unexpected name
    return model


def cls_patch(last_hidden):
    """Valley2's feature selection `cls_patch`: the first row of the last hidden state (after
    post_layernorm) copied in front of all rows, (n, 1 + G², E)."""
    return torch.cat([last_hidden[:, :1, :], last_hidden], dim=1)


# ==== The projectors (written from Valley2's formulas) ====

def conv3x3s2(x, w, b):
    """(n, 1 + G², C) with the extra first row: drop it, the G×G map, 3×3 stride-2 pad-1
    convolution, back to rows (n, T², Cout)."""
    n, v, c = x.shape
    g = int(math.isqrt(v - 1))
    m = x[:, 1:, :].reshape(n, g, g, c).permute(0, 3, 1, 2)
    y = Fn.conv2d(m, w, b, stride=2, padding=1)
    return y.permute(0, 2, 3, 1).reshape(n, -1, w.shape[0])


def projector(tensors, cfg, feats):
    """(n, 1 + G², E) cls_patch features -> (n, T², H)."""
    t = lambda k: tensors[PROJ + k][2]  # noqa: E731
    kind = cfg.get("mm_projector_type")
    if kind == "conv_adapter":
        # Linear -> nn.GELU() (exact, erf) -> Linear on every row, then the convolution
        h = Fn.gelu(Fn.linear(feats, t("mlp.0.weight"), t("mlp.0.bias")))
        h = Fn.linear(h, t("mlp.2.weight"), t("mlp.2.bias"))
        return conv3x3s2(h, t("conv.weight"), t("conv.bias"))
    if kind == "ovis_conv_adapter":
        # the convolution on the tower's width, then softmax(LayerNorm(x·W0ᵀ)) over the
        # visual vocabulary times the embedding table
        x = conv3x3s2(feats, t("conv.weight"), t("conv.bias"))
        logits = Fn.linear(x, t("mlp.0.weight"))
        logits = Fn.layer_norm(logits, (logits.shape[-1],), t("mlp.1.weight"), t("mlp.1.bias"),
                               eps=1e-5)
        return torch.matmul(torch.softmax(logits, dim=-1), t("embedding.weight"))
    raise SystemExit(f"unknown mm_projector_type {kind}")


# ==== AnyRes assembly ====

def anyres_geometry(image_w, image_h, grid_w, grid_h, T, max_vision_token):
    """The geometry of siglip_input for an image of image_w × image_h tiled into grid_w ×
    grid_h crops: the window unpad_image keeps of the (grid_h·T) × (grid_w·T) map, and the
    pooled shape when the window holds more than max_vision_token - T² tokens."""
    geom = {"grid_w": grid_w, "grid_h": grid_h, "keep_y": 0, "keep_x": 0, "keep_h": 0,
            "keep_w": 0, "pool_h": 0, "pool_w": 0}
    if grid_w == 0:
        geom["n_tokens"] = T * T
        return geom
    map_h, map_w = grid_h * T, grid_w * T
    if image_w / image_h > map_w / map_h:
        new_h = int(image_h * (map_w / image_w))
        pad = (map_h - new_h) // 2
        geom.update(keep_y=pad, keep_h=map_h - 2 * pad, keep_w=map_w)
    else:
        new_w = int(image_w * (map_h / image_h))
        pad = (map_w - new_w) // 2
        geom.update(keep_x=pad, keep_w=map_w - 2 * pad, keep_h=map_h)
    kh, kw = geom["keep_h"], geom["keep_w"]
    cap = max_vision_token - T * T
    ph, pw = kh, kw
    if kh * kw > cap:
        a = kh / kw
        ph, pw = int((cap / a) ** 0.5 * a), int((cap / a) ** 0.5)
    if kh * kw == 0:
        ph = pw = 0
    geom.update(pool_h=ph, pool_w=pw, n_tokens=T * T + ph * pw)
    return geom


def assemble(tok, geom):
    """tok (n_tiles, T², H) -> (n_tokens, H): the base tile's rows, then the kept window of the
    stitched crop map, adaptive-average-pooled when its shape changes, row by row."""
    n, t2, h = tok.shape
    T = int(math.isqrt(t2))
    base = tok[0]
    gw, gh = geom["grid_w"], geom["grid_h"]
    if gw == 0 or geom["pool_h"] * geom["pool_w"] == 0:
        return base
    m = tok[1:].reshape(gh, gw, T, T, h).permute(4, 0, 2, 1, 3).reshape(h, gh * T, gw * T)
    y0, x0 = geom["keep_y"], geom["keep_x"]
    m = m[:, y0:y0 + geom["keep_h"], x0:x0 + geom["keep_w"]]
    if (geom["pool_h"], geom["pool_w"]) != (geom["keep_h"], geom["keep_w"]):
        m = Fn.adaptive_avg_pool2d(m, (geom["pool_h"], geom["pool_w"]))
    return torch.cat([base, m.flatten(1, 2).transpose(0, 1)], dim=0)


def siglip_image_features(tensors, cfg, tiles, geom, tower=None):
    """One image's SigLIP tokens: tiles (n, 3, S, S) float32 (tile 0 the base), geom as
    anyres_geometry gives it -> (n_tokens, H) float32. tower: a siglip_tower() to reuse."""
    tower = tower or siglip_tower(tensors, cfg)
    with torch.no_grad():
        x = torch.as_tensor(tiles, dtype=torch.float32)
        last = tower(pixel_values=x).last_hidden_state
        tok = projector(tensors, cfg, cls_patch(last))
        return assemble(tok, geom)


# ==== Test pixels ====

def test_tiles(n_tiles, size, seed):
    """Deterministic tiles in [-2, 2), exact in float32, the same as tests/model/test_siglip.c:
    element i (flat over (n, 3, S, S)) is (((i + seed·1000003)·2654435761) mod 2³²) >> 20,
    minus 2048, over 1024."""
    i = np.arange(n_tiles * 3 * size * size, dtype=np.uint64) + np.uint64(seed * 1000003)
    k = ((i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)) >> np.uint64(20)
    v = (k.astype(np.float64) - 2048.0) / 1024.0
    return v.astype(np.float32).reshape(n_tiles, 3, size, size)


# (name, image w, image h, grid_w, grid_h, max_vision_token, pixel seed)
CASES = [
    ("base", 0, 0, 0, 0, 900, 1),
    ("crops2x2_unpad", 300, 500, 2, 2, 100000, 2),
    ("crops3x1_pooled", 1000, 300, 3, 1, 400, 3),
]
F16_CASES = [
    ("crops1x2_unpad", 500, 900, 1, 2, 100000, 6),
]
OVIS_CASES = [
    ("base", 0, 0, 0, 0, 900, 4),
    ("crops2x1_pooled", 700, 300, 2, 1, 300, 5),
]


def g7(v):
    """a float with 8 significant digits (JSON size; well under the 1e-4 tolerance)"""
    return float("%.8g" % float(v))


CASES_OF = {"valley2": CASES, "valley2_f16": F16_CASES, "valley2_ovis": OVIS_CASES}


def record(out, geom, seed, n_tiles):
    n = out.shape[0]
    rows = sorted({int(round(i * (n - 1) / (N_ROWS - 1))) for i in range(N_ROWS)})
    o = out.double()
    return {
        "seed": seed, "n_tiles": n_tiles, **geom,
        "rows": rows, "row_values": [[g7(v) for v in out[r].tolist()] for r in rows],
        "row_sums": [g7(v) for v in o.sum(dim=1).tolist()],
        "col_sums": [g7(v) for v in o.sum(dim=0).tolist()],
        "max_abs": float(o.abs().max()),
    }


def run_config(name, make_model, tok_dir):
    import make_goldens as mg
    import make_valley2_goldens as mv
    with tempfile.TemporaryDirectory() as tmp:
        mdir = os.path.join(tmp, name)
        subprocess.run([make_model, "--out", mdir, "--tokenizer", tok_dir] + mg.model_args(name),
                       check=True)
        with open(os.path.join(mdir, "config.json")) as f:
            cfg = json.load(f)
        tensors = mv.read_folder(mdir)
    S = cfg["siglip_vision_config"]["image_size"]
    T = cfg["num_patches_per_side"]
    tower = siglip_tower(tensors, cfg)
    cases = {}
    for cname, iw, ih, gw, gh, mvt, seed in CASES_OF[name]:
        geom = anyres_geometry(iw, ih, gw, gh, T, mvt)
        n_tiles = 1 + gw * gh
        out = siglip_image_features(tensors, cfg, test_tiles(n_tiles, S, seed), geom, tower)
        assert out.shape[0] == geom["n_tokens"], (cname, out.shape, geom)
        cases[cname] = record(out, geom, seed, n_tiles)
        print(f"{name}/{cname}: {n_tiles} tiles, geometry {geom}, max|out| {cases[cname]['max_abs']:.4g}")
    return {"projector": cfg["mm_projector_type"], "hidden": cfg["hidden_size"],
            "tile_tokens": T, "image_size": S, "cases": cases}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--make-model", required=True)
    ap.add_argument("--tokenizer", default=None, help="qwen3-tokenizer folder (default: unpack "
                    "the fixture)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
    import vlm_fixtures
    tok_dir = args.tokenizer or str(vlm_fixtures.tokenizer_dir())
    out = {"generator": "tests/golden/make_siglip_goldens.py", "torch": torch.__version__,
           "transformers": __import__("transformers").__version__, "models": {}}
    for name in CONFIGS:
        out["models"][name] = run_config(name, os.path.abspath(args.make_model), tok_dir)
    os.makedirs(os.path.join(HERE, "siglip"), exist_ok=True)
    path = os.path.join(HERE, "siglip", "goldens.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
