#!/usr/bin/env bash
# Runs every test: the README's test command, and what .ci/run calls.
#   1. installs what is missing (deploy/install-deps.sh --test)
#   2. release build (CPU backend; CUDA compiled and linked when nvcc is present), ctest
#   3. ASan+UBSan build, ctest on the unit, model, tp and ops labels, and the API's
#      malformed-input, protocol and cost tables (tests/api/test_{errors,protocol,cost}.py)
#      against its server; ThreadSanitizer build of the scheduler test (scheduler and its loop
#      thread on a fake engine) and of the server under the streaming API tests
#   4. libFuzzer build (clang), each fuzz target for a bounded time
#   5. API and deployment tests: pytest (official openai package against the real server,
#      manifests and chart validated offline)
#
#   bash tests/run.sh --quick   the day-to-day subset: steps 1 and 2 with ctest limited to
#                               the unit and model labels, then the API tests (tests/api);
#                               no sanitizer, fuzz, deployment or browser run
# Environment: CI=true turns warnings into errors. VLM_FUZZ_SECONDS (default 20) bounds each
# fuzz target (default 20). VLM_JOBS sets build parallelism (default: all cores).
set -euo pipefail
quick=0
for a in "$@"; do
    case "$a" in
        --quick) quick=1 ;;
        *) echo "usage: bash tests/run.sh [--quick]" >&2; exit 2 ;;
    esac
done
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="${VLM_JOBS:-$(nproc)}"
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
export VLM_FUZZ_SECONDS="${VLM_FUZZ_SECONDS:-20}"

step() { printf '\n==== %s (at %ds) ====\n' "$*" "$SECONDS"; }

step "dependencies"
bash deploy/install-deps.sh --test

step "release build"
cmake -S . -B build -DVLM_WERROR=$werror -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
if [ "$quick" = 1 ]; then
    (cd build && ctest --output-on-failure -j "$jobs" -L 'unit|model|setup')
    step "API tests (pytest + openai)"
    VLM_BUILD_DIR="$root/build" .venv/bin/python -m pytest -q tests/api
    step "done (quick)"
    exit 0
fi
(cd build && ctest --output-on-failure -j "$jobs")

step "sanitizer build (ASan + UBSan)"
cmake -S . -B build-asan -DVLM_WERROR=$werror -DVLM_SANITIZE=ON -DVLM_CUDA=OFF \
      -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j "$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
    ctest --output-on-failure -j "$jobs" -L 'unit|setup|model|tp|ops')

step "ThreadSanitizer build (scheduler, loop, and the server under the streaming tests)"
# test_sched: the scheduler and its loop thread on a fake engine (no OpenMP in the way).
cmake -S . -B build-tsan -DVLM_WERROR=$werror -DVLM_TSAN=ON -DVLM_CUDA=OFF \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-tsan -j "$jobs" --target test_sched
(cd build-tsan && TSAN_OPTIONS=halt_on_error=1:exitcode=66 \
    ctest --output-on-failure -R '^test_sched$')
# The server under TSan: the HTTP threads, the prep workers and the scheduler loop, through
# the streaming API tests. The engine's OpenMP regions are left out by tests/tsan.supp
# (libgomp is not instrumented) and by one engine thread (VLM_TEST_THREADS=1); a report
# makes the server exit 66 and the test fail.
cmake --build build-tsan -j "$jobs" --target valley-server valley-make-model
VLM_BUILD_DIR="$root/build-tsan" VLM_TEST_THREADS=1 \
    TSAN_OPTIONS="halt_on_error=1:exitcode=66:history_size=4:suppressions=$root/tests/tsan.supp" \
    .venv/bin/python -m pytest -q tests/api/test_stream.py

step "malformed-input and protocol tables against the ASan+UBSan server (pytest)"
VLM_BUILD_DIR="$root/build-asan" ASAN_OPTIONS=detect_leaks=1 \
    LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
    .venv/bin/python -m pytest -q tests/api/test_errors.py tests/api/test_protocol.py \
    tests/api/test_cost.py

step "fuzz targets (libFuzzer, ${VLM_FUZZ_SECONDS}s each)"
CC=clang cmake -S . -B build-fuzz -DVLM_FUZZ=ON -DVLM_SANITIZE=ON -DVLM_CUDA=OFF \
      -DCMAKE_BUILD_TYPE=Debug -DVLM_WERROR=OFF >/dev/null
cmake --build build-fuzz -j "$jobs"
(cd build-fuzz && ctest --output-on-failure -L fuzz)

step "API and deployment tests (pytest + openai)"
VLM_BUILD_DIR="$root/build" .venv/bin/python -m pytest -q tests/deploy $(compgen -G "tests/api/test_*.py" >/dev/null && echo tests/api) tests/browser

step "done"
