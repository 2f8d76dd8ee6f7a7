#!/usr/bin/env python3
"""Writes the image-preprocessing goldens under tests/golden/images/ (developer script).

Generates small deterministic test images (PNG in every colour type / bit depth, with and
without Adam7 interlacing, baseline / progressive / grayscale / CMYK JPEG, GIF, WebP, extreme
aspect ratios, 1x1 up to 4000x3000 as highly compressible PNGs), runs the reference pipeline on
each one - PIL Image.open().convert("RGB") -> qwen-vl-utils 0.0.8 fetch_image ->
transformers 4.51.2 Qwen2VLImageProcessor (MODEL.md "Image preprocessing") - and writes goldens.json:

  file, format, params, the decoded size and vlm_hash64 of PIL's decoded RGB bytes,
  resized size, grid, vlm_hash64 of the 8-bit image the processor rescales, a sum of all
  pixel_values (float64) and a few sampled pixel_values, or the error the reference raised.

For lossy or library-dependent decoders (JPEG) the script also writes PIL's decoded pixels as
<file>.ref.png, so the C test can check "within 1 level" of PIL's decode.

Needs: pillow, numpy, transformers==4.51.2, qwen-vl-utils==0.0.8 (torchvision is stubbed: the
image path of fetch_image does not use it). CI never runs this; it only reads the outputs.
Usage: python3 tests/golden/make_image_goldens.py [--out tests/golden/images]
"""
import argparse
import json
import os
import struct
import sys
import types
import zlib

import numpy as np
from PIL import Image


def load_reference():
    from transformers import Qwen2VLImageProcessor  # before the stub below
    # qwen_vl_utils imports torchvision at module level for its video path only.
    for name in ("torchvision", "torchvision.io", "torchvision.transforms"):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    tv = sys.modules["torchvision"]
    tv.io = sys.modules["torchvision.io"]
    tv.transforms = sys.modules["torchvision.transforms"]
    tv.transforms.InterpolationMode = types.SimpleNamespace(BICUBIC=3, BILINEAR=2)
    tv.__version__ = "0.0"
    from qwen_vl_utils import vision_process
    return vision_process, Qwen2VLImageProcessor


# ---- vlm_hash64 (engine/base.c), byte for byte -------------------------------------------
M64 = (1 << 64) - 1


def vlm_hash64(data: bytes, seed: int = 0) -> int:
    h = 0xCBF29CE484222325 ^ seed
    n = len(data)
    words = np.frombuffer(data[: n - n % 8], dtype="<u8").tolist()
    for w in words:
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


# ---- a minimal PNG writer: every colour type, bit depth, tRNS, Adam7 ---------------------
def png_chunk(tag, data):
    c = struct.pack(">I", len(data)) + tag + data
    return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def pack_rows(samples, bit_depth):
    """samples: (h, w*channels) ints -> list of packed row bytes."""
    rows = []
    for r in samples:
        r = np.asarray(r)
        if bit_depth == 16:
            rows.append(r.astype(">u2").tobytes())
        elif bit_depth == 8:
            rows.append(r.astype(np.uint8).tobytes())
        else:
            per = 8 // bit_depth
            pad = (-len(r)) % per
            r = np.concatenate([r, np.zeros(pad, r.dtype)]).reshape(-1, per).astype(np.uint32)
            shifts = np.array([8 - bit_depth * (i + 1) for i in range(per)], np.uint32)
            rows.append((r << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def write_png(path, arr, color_type, bit_depth, palette=None, trns=None, interlace=False):
    """arr: (h, w, channels) or (h, w) integer samples (palette indices for type 3)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    h, w, ch = arr.shape
    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        for i, row in enumerate(pack_rows(sub.reshape(sub.shape[0], -1), bit_depth)):
            raw += b"\x00" + row  # filter type None
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                          1 if interlace else 0))
    if palette is not None:
        out += png_chunk(b"PLTE", bytes(np.asarray(palette, np.uint8).reshape(-1)))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    out += png_chunk(b"IDAT", zlib.compress(raw, 9))
    out += png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(out)


# ---- deterministic content ----------------------------------------------------------------
def scene(w, h, seed, noise=0.0):
    """A smooth 'photo': gradients, waves, a few hard-edged shapes, a little noise (uint8)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = x / max(w, 1), y / max(h, 1)
    img = np.zeros((h, w, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 6.3)
        wave = np.sin(2 * np.pi * (fx * u + fy * v) + ph)
        img[:, :, c] = 128 + 70 * wave + 50 * (u - v) * (c - 1)
    for _ in range(4):
        x0, y0 = rng.integers(0, max(w, 1)), rng.integers(0, max(h, 1))
        rw, rh = rng.integers(1, max(w // 3, 2)), rng.integers(1, max(h // 3, 2))
        img[y0:y0 + rh, x0:x0 + rw] = rng.integers(0, 256, 3)
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def flat_scene(w, h, seed):
    """A large image that compresses to a few KB as PNG: axis-aligned bands and edges."""
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    xs = (np.arange(w) * 12 // w)
    ys = (np.arange(h) * 7 // h)
    img = cols[(xs[None, :] + 3 * ys[:, None]) % 12].copy()
    img[h // 3: h // 3 + 3, :] = 255  # thin lines: ringing / clipping in the bicubic filter
    img[:, w // 5: w // 5 + 2] = 0
    return img


# ---- the cases ----------------------------------------------------------------------------
def make_images(out):
    """Writes every test image; returns [(file, params or None)]."""
    cases = []

    def add(name, params=None):
        cases.append((name, params))

    def save_rgb_png(name, arr):
        Image.fromarray(arr, "RGB").save(os.path.join(out, name), optimize=True)
        add(name)

    # plain RGB, sizes from 1x1 up
    for (w, h, s) in [(1, 1, 1), (3, 3, 2), (5, 7, 3), (28, 28, 4), (64, 48, 5), (100, 37, 6),
                      (224, 224, 7), (233, 317, 8), (400, 300, 9), (57, 85, 31)]:
        save_rgb_png(f"rgb_{w}x{h}.png", scene(w, h, s))
    Image.new("RGB", (3, 3)).save(os.path.join(out, "black_3x3.png"))
    add("black_3x3.png")
    # extreme aspect ratios (200 is allowed, more is rejected)
    save_rgb_png("aspect_28x2000.png", scene(28, 2000, 10, noise=0))
    save_rgb_png("aspect_2000x28.png", scene(2000, 28, 11, noise=0))
    save_rgb_png("aspect_10x2000.png", scene(10, 2000, 12, noise=0))
    save_rgb_png("aspect_2000x9.png", scene(2000, 9, 13, noise=0))  # ratio 222: rejected
    save_rgb_png("aspect_1x150.png", scene(1, 150, 14, noise=0))
    # big, compressible
    save_rgb_png("noisy_40x30.png", scene(40, 30, 34, noise=8))
    save_rgb_png("big_4000x3000.png", flat_scene(4000, 3000, 15))
    save_rgb_png("big_5000x4000.png", flat_scene(5000, 4000, 16))  # over max_pixels: shrinks
    # a 1080p frame: 1932x1092 after fetch_image, 588x336 (252 tokens) after the processor
    # with the multi-image demo limit (added with the demo params below)
    Image.fromarray(flat_scene(1920, 1080, 49)).save(os.path.join(out, "hd_1920x1080.png"))
    # colour types and bit depths (own writer, so every combination is covered)
    g = scene(200, 150, 17)[:, :, 1]
    Image.fromarray(g, "L").save(os.path.join(out, "gray_200x150.png"))
    add("gray_200x150.png")
    g16 = (scene(120, 90, 18)[:, :, 0].astype(np.uint32) * 3).astype(np.uint16)  # > 255 clips
    write_png(os.path.join(out, "gray16_120x90.png"), g16, 0, 16)
    add("gray16_120x90.png")
    write_png(os.path.join(out, "gray1_77x55.png"), (scene(77, 55, 19)[:, :, 0] > 128), 0, 1)
    add("gray1_77x55.png")
    write_png(os.path.join(out, "gray2_61x40.png"), scene(61, 40, 20)[:, :, 0] >> 6, 0, 2)
    add("gray2_61x40.png")
    write_png(os.path.join(out, "gray4_90x61_trns.png"), scene(90, 61, 21)[:, :, 0] >> 4, 0, 4,
              trns=struct.pack(">H", 3))
    add("gray4_90x61_trns.png")
    sc = scene(150, 100, 22)
    write_png(os.path.join(out, "la_150x100.png"), np.dstack([sc[:, :, 0], sc[:, :, 1]]), 4, 8)
    add("la_150x100.png")
    write_png(os.path.join(out, "la16_64x50.png"),
              np.dstack([sc[:50, :64, 0].astype(np.uint16) * 257 + 7, sc[:50, :64, 2]]), 4, 16)
    add("la16_64x50.png")
    rgba = np.dstack([scene(300, 200, 23), scene(300, 200, 24)[:, :, 0]])
    Image.fromarray(rgba, "RGBA").save(os.path.join(out, "rgba_300x200.png"))
    add("rgba_300x200.png")
    s16 = scene(96, 80, 25).astype(np.uint16) * 257 + np.arange(96, dtype=np.uint16)[None, :, None]
    write_png(os.path.join(out, "rgb16_96x80.png"), s16, 2, 16)
    add("rgb16_96x80.png")
    write_png(os.path.join(out, "rgba16_70x45.png"),
              np.dstack([s16[:45, :70], s16[:45, :70, :1]]), 6, 16)
    add("rgba16_70x45.png")
    write_png(os.path.join(out, "rgb_trns_80x60.png"), scene(80, 60, 26), 2, 8,
              trns=struct.pack(">HHH", 10, 20, 30))
    add("rgb_trns_80x60.png")
    rng = np.random.default_rng(27)
    pal = rng.integers(0, 256, (256, 3))
    idx = (scene(180, 120, 28)[:, :, 0].astype(np.int32) * 7) % 256
    write_png(os.path.join(out, "palette8_trns_180x120.png"), idx, 3, 8, palette=pal,
              trns=bytes(rng.integers(0, 256, 40, dtype=np.uint8)))
    add("palette8_trns_180x120.png")
    write_png(os.path.join(out, "palette4_99x66.png"), scene(99, 66, 29)[:, :, 2] >> 4, 3, 4,
              palette=pal[:16])
    add("palette4_99x66.png")
    write_png(os.path.join(out, "palette1_45x30.png"), scene(45, 30, 30)[:, :, 2] >> 7, 3, 1,
              palette=pal[:2])
    add("palette1_45x30.png")
    write_png(os.path.join(out, "interlaced_rgb_211x143.png"), scene(211, 143, 32), 2, 8,
              interlace=True)
    add("interlaced_rgb_211x143.png")
    write_png(os.path.join(out, "interlaced_palette2_37x29.png"), scene(37, 29, 33)[:, :, 1] >> 6,
              3, 2, palette=pal[:4], interlace=True)
    add("interlaced_palette2_37x29.png")
    write_png(os.path.join(out, "interlaced_rgba16_33x21.png"),
              np.dstack([s16[:21, :33], s16[:21, :33, :1]]), 6, 16, interlace=True)
    add("interlaced_rgba16_33x21.png")
    # second resize in the processor: fetch_image keeps its defaults, the processor is built
    # with the multi-image demo limits (max 28*28*256)
    demo = {"proc_max_pixels": 200704}
    add("rgb_400x300.png", demo)
    add("big_4000x3000.png", demo)
    add("hd_1920x1080.png", demo)
    # fetch_image with a small max_pixels and a large min_pixels
    add("rgb_233x317.png", {"fetch_max_pixels": 50176})
    add("rgb_64x48.png", {"fetch_min_pixels": 401408})
    # JPEG
    Image.fromarray(scene(320, 240, 40)).save(os.path.join(out, "jpeg_baseline_320x240.jpg"),
                                              quality=90)
    add("jpeg_baseline_320x240.jpg")
    Image.fromarray(scene(250, 187, 41)).save(
        os.path.join(out, "jpeg_progressive_250x187.jpg"), quality=85, progressive=True)
    add("jpeg_progressive_250x187.jpg")
    Image.fromarray(scene(300, 200, 42)[:, :, 0], "L").save(
        os.path.join(out, "jpeg_gray_300x200.jpg"), quality=90)
    add("jpeg_gray_300x200.jpg")
    Image.fromarray(scene(240, 180, 43)).convert("CMYK").save(
        os.path.join(out, "jpeg_cmyk_240x180.jpg"), quality=90)
    add("jpeg_cmyk_240x180.jpg")
    Image.fromarray(scene(233, 151, 44)).save(os.path.join(out, "jpeg_420_233x151.jpg"),
                                              quality=80, subsampling=2)
    add("jpeg_420_233x151.jpg")
    Image.fromarray(scene(129, 97, 45)).save(os.path.join(out, "jpeg_444_129x97.jpg"),
                                             quality=95, subsampling=0)
    add("jpeg_444_129x97.jpg")
    # GIF (first frame) and WebP: only checked when the C build has the library
    gi = Image.fromarray(scene(160, 120, 47)).quantize(64)
    gi.info["transparency"] = 5
    gi.save(os.path.join(out, "gif_160x120.gif"), transparency=5)
    add("gif_160x120.gif")
    Image.fromarray(scene(200, 150, 48)).save(os.path.join(out, "webp_lossless_200x150.webp"),
                                              lossless=True)
    add("webp_lossless_200x150.webp")
    Image.fromarray(rgba[:150, :200]).save(os.path.join(out, "webp_lossy_alpha_200x150.webp"),
                                           quality=80)
    add("webp_lossy_alpha_200x150.webp")
    return cases


DEFAULTS = {"fetch_min_pixels": 3136, "fetch_max_pixels": 12845056,
            "proc_min_pixels": 3136, "proc_max_pixels": 12845056}


def reference(vision_process, proc_cls, path, params):
    """Runs the reference; returns (decoded RGB, resized RGB or None, pixel_values, grid, err)."""
    rgb = Image.open(path).convert("RGB")
    dec = np.asarray(rgb)
    try:
        ele = {"image": rgb, "min_pixels": params["fetch_min_pixels"],
               "max_pixels": params["fetch_max_pixels"]}
        stage1 = vision_process.fetch_image(ele)
        proc = proc_cls(min_pixels=params["proc_min_pixels"], max_pixels=params["proc_max_pixels"],
                        patch_size=14, temporal_patch_size=2, merge_size=2)
        out = proc(images=[stage1], return_tensors="np")
    except ValueError as e:
        return dec, None, None, None, str(e)
    # the 8-bit image the processor rescales: its own smart_resize of stage 1, PIL bicubic
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
    h2, w2 = smart_resize(stage1.height, stage1.width, 28, params["proc_min_pixels"],
                          params["proc_max_pixels"])
    resized = stage1 if (w2, h2) == stage1.size else stage1.resize((w2, h2), Image.BICUBIC)
    return dec, np.asarray(resized), out["pixel_values"], out["image_grid_thw"][0], None


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "images"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    vision_process, proc_cls = load_reference()
    cases = make_images(args.out)
    goldens = []
    for name, overrides in cases:
        params = dict(DEFAULTS, **(overrides or {}))
        path = os.path.join(args.out, name)
        fmt = Image.open(path).format.lower()
        dec, resized, pv, grid, err = reference(vision_process, proc_cls, path, params)
        g = {"file": name, "format": fmt, "params": params,
             "decoded": [int(dec.shape[1]), int(dec.shape[0])],
             "decoded_hash": "%016x" % vlm_hash64(np.ascontiguousarray(dec).tobytes())}
        if (fmt == "jpeg" or "lossy" in name) and not overrides:
            ref = name + ".ref.png"
            Image.fromarray(dec).save(os.path.join(args.out, ref), optimize=True)
            g["decoded_ref"] = ref
        if err is not None:
            g["error"] = err
        else:
            pv = np.asarray(pv)
            rng = np.random.default_rng(len(goldens))
            n = pv.size
            picks = sorted(set([0, n - 1] + [int(i) for i in rng.integers(0, n, 10)]))
            flat = pv.reshape(-1)
            g.update({
                "resized": [int(resized.shape[1]), int(resized.shape[0])],
                "grid": [int(x) for x in grid],
                "resized_hash": "%016x" % vlm_hash64(np.ascontiguousarray(resized).tobytes()),
                "n_rows": int(pv.shape[0]), "row_len": int(pv.shape[1]),
                "sum": float(pv.astype(np.float64).sum()),
                "samples": [[i, float(flat[i])] for i in picks],
            })
        goldens.append(g)
        print(name, overrides or "", g.get("resized"), g.get("grid"), g.get("error", ""))
    with open(os.path.join(args.out, "goldens.json"), "w") as f:
        json.dump({"pillow": Image.__version__, "cases": goldens}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
