#!/usr/bin/env python3
"""Times the reference image path (developer script; needs pillow, numpy, transformers==4.51.2,
qwen-vl-utils==0.0.8) on the benchmark JPEGs, one thread, and writes those JPEGs if missing.

  python3 bench/bench_image_hf.py [--dir /tmp/vlm-bench-images] [--iters 5]
  build/bench_image --iters 10 /tmp/vlm-bench-images/bench_1024x768.jpg \
      /tmp/vlm-bench-images/bench_4000x3000.jpg

The reference path per image: Image.open(bytes).convert("RGB") -> qwen_vl_utils fetch_image
(smart_resize + PIL bicubic) -> Qwen2VLImageProcessor(images=..., return_tensors="np")
(smart_resize, rescale, normalise, patchify), exactly what tests/golden/make_image_goldens.py
runs. Prints best and median process CPU times per stage (stable on a loaded machine) and
the wall time of the whole path; never asserts.
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "golden"))
from make_image_goldens import load_reference, scene  # noqa: E402


def write_jpeg(path, w, h, seed):
    """A photo-like JPEG: the golden generator's scene plus sensor-like noise, quality 90."""
    img = scene(w, h, seed, noise=4.0)
    Image.fromarray(img).save(path, quality=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/vlm-bench-images")
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    vision_process, proc_cls = load_reference()
    proc = proc_cls(min_pixels=3136, max_pixels=12845056, patch_size=14, temporal_patch_size=2,
                    merge_size=2)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    for (w, h, seed) in [(1024, 768, 1), (4000, 3000, 2)]:
        path = os.path.join(args.dir, f"bench_{w}x{h}.jpg")
        if not os.path.exists(path):
            write_jpeg(path, w, h, seed)
        data = open(path, "rb").read()
        t_dec, t_fetch, t_proc, t_all, t_wall = [], [], [], [], []
        for _ in range(args.iters):
            w0 = time.perf_counter()
            t0 = time.process_time()
            im = Image.open(io.BytesIO(data)).convert("RGB")
            t1 = time.process_time()
            s1 = vision_process.fetch_image({"image": im})
            t2 = time.process_time()
            out = proc(images=[s1], return_tensors="np")
            t3 = time.process_time()
            t_wall.append(time.perf_counter() - w0)
            t_dec.append(t1 - t0)
            t_fetch.append(t2 - t1)
            t_proc.append(t3 - t2)
            t_all.append(t3 - t0)
        pv = out["pixel_values"]
        grid = [int(x) for x in out["image_grid_thw"][0]]
        print(f"{path}: {w}x{h} -> grid {grid}, {pv.shape[0]} patches,"
              f" {len(data)} bytes")
        for name, t in [("PIL decode+convert", t_dec), ("fetch_image resize", t_fetch),
                        ("Qwen2VLImageProcessor", t_proc), ("total, CPU", t_all),
                        ("total, wall", t_wall)]:
            t = sorted(t)
            print(f"  {name:28s} best {t[0] * 1e3:8.2f} ms  median {t[len(t) // 2] * 1e3:8.2f} ms")
        del pv, out


if __name__ == "__main__":
    main()
