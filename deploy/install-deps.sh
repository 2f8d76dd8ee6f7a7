#!/usr/bin/env bash
# Installs every Debian package (and the Python test packages) this project needs.
# Idempotent and quiet; safe to run again. Used by the README's two commands,
# by .ci/run and by deploy/Dockerfile, so there is exactly one recipe.
#
#   deploy/install-deps.sh            build + run dependencies
#   deploy/install-deps.sh --test     also the test tools (ffmpeg CLI, clang for fuzzing,
#                                     Chromium, and a Python venv with openai + pytest)
set -euo pipefail

want_test=0
for a in "$@"; do
    case "$a" in
        --test) want_test=1 ;;
        *) echo "install-deps.sh: unknown argument '$a'" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

pkgs=(build-essential cmake pkg-config git ca-certificates
      libmicrohttpd-dev libcjson-dev libpcre2-dev libutf8proc-dev libopenblas-dev
      libjpeg-dev libpng-dev libwebp-dev libgif-dev
      libavformat-dev libavcodec-dev libswscale-dev libavutil-dev libcurl4-openssl-dev
      python3 python3-venv)
if [ "$want_test" = 1 ]; then
    pkgs+=(ffmpeg clang libclang-rt-14-dev chromium chromium-driver yamllint)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$want_test" = 1 ]; then
    venv="$root/.venv"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        -r "$root/tests/requirements.txt"
fi
