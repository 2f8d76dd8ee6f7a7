#!/usr/bin/env bash
# tests/gpu/real_size.sh MAKE_MODEL VALLEY_GENERATE: the full Valley2.5 geometry on the GPU.
# Writes the release-geometry random-weight checkpoint (valley-make-model --preset valley2.5,
# 17.5 GiB of bf16), a 1000x1000 PNG, then runs valley-generate --backend cuda on the image
# and a short text for 32 tokens, twice (the second with the weights' files in the page
# cache), and prints each run's prompt and decode figures and its process time (load
# included). Run by tests/gpu/run.sh; needs python3 with Pillow and numpy for the image.
set -u
MAKE_MODEL=$1 GEN=$2
DIR=/tmp/vlm-valley25 IMG=/tmp/vlm-1mp.png
ms() { echo $(( $(date +%s%N) / 1000000 )); }
t0=$(ms)
"$MAKE_MODEL" --out "$DIR" --preset valley2.5 \
    ${VLM_FIXTURES:+--tokenizer "$VLM_FIXTURES/qwen3-tokenizer"} > /dev/null || exit 1
echo "real size: checkpoint written in $(( ($(ms) - t0) / 1000 )) s, $(du -sh "$DIR" | cut -f1)"
python3 - "$IMG" <<'PY' || exit 1
import sys
import numpy as np
from PIL import Image
y, x = np.mgrid[0:1000, 0:1000]
rgb = np.stack([x * 255 // 999, y * 255 // 999, (x ^ y) & 255], -1).astype("uint8")
Image.fromarray(rgb).save(sys.argv[1])
PY
for run in 1 2; do
    t0=$(ms)
    "$GEN" --model "$DIR" --backend cuda --prompt "Describe the image in detail." \
        --image "$IMG" --max-tokens 32 --seed 1 || exit 1
    echo
    echo "real size: run $run: process wall $(( $(ms) - t0 )) ms (load included)"
done
rm -rf "$DIR"
