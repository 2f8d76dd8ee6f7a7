#!/usr/bin/env bash
# The one release-build recipe, used by the README's first command and by deploy/Dockerfile*.
#   deploy/build.sh [BUILD_DIR] [extra cmake -D options]
# CUDA is built when nvcc is found (CUDA toolkit in /usr/local/cuda); -DVLM_CUDA=OFF to skip.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/build}"
[ $# -gt 0 ] && shift
cmake -S "$root" -B "$out" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$out" -j "$(nproc)"
