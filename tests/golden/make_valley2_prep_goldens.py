#!/usr/bin/env python3
"""Writes the Valley2 SigLIP preprocessing goldens, tests/golden/valley2/goldens.json (developer
script; CI only reads its output). Compared by tests/unit/test_valley2_prep.c.

Inputs: the lossless images of tests/golden/images/ (for JPEG and lossy WebP, PIL's decode as
stored next to them in <file>.ref.png) plus a few made here in tests/golden/valley2/ (a very wide
and a very tall image, sizes that pick other grid pinpoints, images 1 and 3 pixels high).

For every image, opened with PIL and converted to RGB as the Valley processor does:

  single  transformers 4.51.2 SiglipImageProcessor (the Valley2 settings: 384x384, bicubic,
          1/255, mean = std = 0.5) on the whole image: the path of an image that gets a single
          tile (several images in a request). vlm_hash64 of the float32 array, its float64 sum
          and sampled values, or the error the processor raises.
  anyres  the AnyRes tiling of the Valley2 processor, re-implemented below from its behaviour
          (docs/MODEL.md, "Valley2 image preprocessing"): grid pinpoint chosen, the image
          resized into it and padded with black, the crops, the whole image squashed to one
          more tile in front; every tile through the same SiglipImageProcessor. Per tile the
          vlm_hash64 of its float32 values, sampled values; and the token geometry the model
          derives: the stitched crop token map, the window unpadding keeps (from the original
          size), the shape adaptive average pooling (torch.nn.AdaptiveAvgPool2d) gives above
          the vision-token cap, and the total token count. Run with the default settings on
          every image and with other pinpoint lists on some.
  tokens  the token geometry alone for other caps (max_vision_token).

Needs: pillow, numpy, torch, transformers==4.51.2 (the reference venv).
Usage: python3 tests/golden/make_valley2_prep_goldens.py
"""
import json
import math
import os
import re

import numpy as np
import torch
from PIL import Image
from transformers import SiglipImageProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "valley2")
TILE = 384
TPS = 14  # tokens per tile side after the ConvAdapter (27x27 patches, 3x3 stride 2)
DEFAULT_PINPOINTS = "(1x1),...,(3x3)"
DEFAULT_MAX_VISION_TOKEN = 900

# The Valley2 processor builds its SigLIP image processor from this fixed dictionary.
SIGLIP = SiglipImageProcessor.from_dict({
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "resample": 3, "rescale_factor": 1 / 255, "size": {"height": TILE, "width": TILE}})

M64 = (1 << 64) - 1


def vlm_hash64(data: bytes, seed: int = 0) -> int:
    """engine/base.c vlm_hash64, byte for byte."""
    h = 0xCBF29CE484222325 ^ seed
    n = len(data)
    for w in np.frombuffer(data[: n - n % 8], dtype="<u8").tolist():
        h = ((h ^ w) * 0x100000001B3) & M64
        h ^= h >> 29
    for b in data[n - n % 8:]:
        h = ((h ^ b) * 0x100000001B3) & M64
    h ^= n
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & M64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & M64
    h ^= h >> 31
    return h


def f32_hash(a):
    return "%016x" % vlm_hash64(np.ascontiguousarray(a, dtype="<f4").tobytes())


def siglip(img):
    return SIGLIP(img, return_tensors="np")["pixel_values"][0]


# ---- the tiling, re-implemented ------------------------------------------------------------
def pinpoints(spec):
    """(width, height) candidates in the order they are tried."""
    if isinstance(spec, str) and "x" in spec:
        found = re.findall(r"\((\d+)x(\d+)\)", spec)
        (a0, a1), (b0, b1) = map(int, found[0]), map(int, found[-1])
        return [(i * TILE, j * TILE) for i in range(a0, b0 + 1) for j in range(a1, b1 + 1)]
    nums = [int(x) for x in re.findall(r"\d+", spec)] if isinstance(spec, str) else \
        [int(x) for pair in spec for x in pair]
    return list(zip(nums[0::2], nums[1::2]))


def best_fit(w, h, cands):
    """Most image pixels kept after an aspect-preserving fit, then least waste, then first."""
    best, best_eff, best_waste = None, 0, math.inf
    for cw, ch in cands:
        s = min(cw / w, ch / h)
        eff = min(int(w * s) * int(h * s), w * h)
        waste = cw * ch - eff
        if eff > best_eff or (eff == best_eff and waste < best_waste):
            best, best_eff, best_waste = (cw, ch), eff, waste
    return best


def fit_size(w, h, rw, rh):
    sw, sh = rw / w, rh / h
    if sw < sh:
        return rw, min(math.ceil(h * sw), rh)
    return min(math.ceil(w * sh), rw), rh


def anyres_tiles(img, cands):
    w, h = img.size
    rw, rh = best_fit(w, h, cands)
    fw, fh = fit_size(w, h, rw, rh)
    canvas = Image.new("RGB", (rw, rh), (0, 0, 0))
    px, py = (rw - fw) // 2, (rh - fh) // 2
    canvas.paste(img.resize((fw, fh), Image.BICUBIC), (px, py))
    crops = [canvas.crop((x, y, x + TILE, y + TILE))
             for y in range(0, rh, TILE) for x in range(0, rw, TILE)]
    tiles = [img.resize((TILE, TILE), Image.BICUBIC)] + crops
    return (rw, rh), (fw, fh), (px, py), tiles


def token_geometry(w, h, res, max_vision_token):
    """Stitched crop map -> the window unpadding keeps -> pooled shape -> token count."""
    gw, gh = res[0] // TILE, res[1] // TILE
    mh, mw = gh * TPS, gw * TPS
    feat = torch.arange(mh * mw, dtype=torch.float32).reshape(1, mh, mw)
    y0, x0 = 0, 0
    if w / h > mw / mh:  # the image is wider than the map: rows of padding
        pad = (mh - int(h * (mw / w))) // 2
        rows = range(mh)[pad:mh - pad]
        y0 = rows.start if len(rows) else 0
        feat = feat[:, pad:mh - pad, :]
    else:
        pad = (mw - int(w * (mh / h))) // 2
        cols = range(mw)[pad:mw - pad]
        x0 = cols.start if len(cols) else 0
        feat = feat[:, :, pad:mw - pad]
    kh, kw = feat.shape[1], feat.shape[2]
    max_sub = max_vision_token - TPS * TPS
    pooled = kh * kw > max_sub
    if pooled:
        ar = kh / kw
        shape = (int((max_sub / ar) ** 0.5 * ar), int((max_sub / ar) ** 0.5))
        feat = torch.nn.AdaptiveAvgPool2d(shape)(feat)
    return {"map": [mh, mw], "keep": [y0, x0, kh, kw], "pool": [feat.shape[1], feat.shape[2]],
            "pooled": pooled, "n_tokens": TPS * TPS + feat.shape[1] * feat.shape[2]}


def samples(arr, seed, k=12):
    flat = arr.reshape(-1)
    rng = np.random.default_rng(seed)
    picks = sorted(set([0, flat.size - 1] + [int(i) for i in rng.integers(0, flat.size, k)]))
    return [[i, float(flat[i])] for i in picks]


# ---- the inputs ----------------------------------------------------------------------------
def scene(w, h, seed):
    """Blocks of 8x8 pixels with a few hard-edged rectangles: varied enough for the bicubic
    filter (edges, ringing, clipping), small as PNG."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, ((h + 7) // 8, (w + 7) // 8, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(small, 8, axis=0), 8, axis=1)[:h, :w].copy()
    for _ in range(5):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0:y0 + rng.integers(1, max(h // 4, 2)), x0:x0 + rng.integers(1, max(w // 4, 2))] = \
            rng.integers(0, 256, 3)
    return img


def make_inputs():
    os.makedirs(OUT, exist_ok=True)
    made = [("wide_2400x160", 51), ("tall_150x1700", 52), ("wide_1000x300", 53),
            ("rgb_900x500", 54), ("rgb_800x800", 55), ("rgb_50x3", 56), ("rgb_40x1", 57),
            ("rgb_3x40", 58), ("rgb_500x1100", 59)]
    files = []
    for name, seed in made:
        w, h = map(int, name.split("_")[1].split("x"))
        Image.fromarray(scene(w, h, seed), "RGB").save(os.path.join(OUT, name + ".png"),
                                                       optimize=True)
        files.append("valley2/%s.png" % name)
    with open(os.path.join(HERE, "images", "goldens.json")) as f:
        image_cases = json.load(f)["cases"]
    seen = set()
    for c in image_cases:
        name = c.get("decoded_ref") or c["file"]
        if name in seen or not name.endswith(".png"):
            continue
        seen.add(name)
        files.append("images/" + name)
    return files


# Other settings tried on some images: (pinpoints, images they run on).
VARIANTS = [
    ("(1x1),...,(6x6)", ["valley2/wide_2400x160.png", "valley2/rgb_900x500.png",
                         "images/aspect_2000x28.png", "images/hd_1920x1080.png"]),
    ("[(384, 768), (768, 384), (768, 768), (1152, 384)]",
     ["valley2/tall_150x1700.png", "valley2/wide_1000x300.png", "images/rgb_233x317.png"]),
    ([[768, 384], [384, 384], [1152, 768]], ["images/rgba_300x200.png", "valley2/rgb_50x3.png"]),
]
TOKEN_CAPS = [250, 400, 2000]


def anyres_case(img, spec, max_vision_token, seed):
    cands = pinpoints(spec)
    res, fit, pad, tiles = anyres_tiles(img, cands)
    arrs = [siglip(t) for t in tiles]
    g = {"pinpoints": spec, "max_vision_token": max_vision_token, "res": list(res),
         "grid": [res[0] // TILE, res[1] // TILE], "fit": list(fit), "pad": list(pad),
         "n_tiles": len(tiles), "tile_hashes": [f32_hash(a) for a in arrs],
         "samples": samples(np.stack(arrs), seed)}
    g.update(token_geometry(img.width, img.height, res, max_vision_token))
    return g


def main():
    files = make_inputs()
    cases = []
    for k, rel in enumerate(files):
        img = Image.open(os.path.join(HERE, rel)).convert("RGB")
        case = {"file": rel, "size": list(img.size)}
        try:
            a = siglip(img)
            case["single"] = {"hash": f32_hash(a), "sum": float(a.astype(np.float64).sum()),
                              "samples": samples(a, 1000 + k)}
        except ValueError as e:
            case["single"] = {"error": str(e)}
        runs = [anyres_case(img, DEFAULT_PINPOINTS, DEFAULT_MAX_VISION_TOKEN, k)]
        for spec, which in VARIANTS:
            if rel in which:
                runs.append(anyres_case(img, spec, DEFAULT_MAX_VISION_TOKEN, 500 + k))
        case["anyres"] = runs
        res = best_fit(img.width, img.height, pinpoints(DEFAULT_PINPOINTS))
        case["tokens"] = [dict(token_geometry(img.width, img.height, res, cap),
                               max_vision_token=cap) for cap in TOKEN_CAPS]
        cases.append(case)
        print(rel, img.size, "single" if "hash" in case["single"] else case["single"]["error"],
              [(r["grid"], r["n_tokens"]) for r in runs])
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump({"pillow": Image.__version__, "tile": TILE, "tokens_per_side": TPS,
                   "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
