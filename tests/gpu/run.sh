#!/usr/bin/env bash
# tests/gpu/run.sh: everything that needs a GPU, in one command that fits one 10-minute call
# of a lent GPU machine. Prints a short table last (the device tool returns the output's tail).
#
#   tests/gpu/run.sh pack     on the development machine (all build dependencies installed):
#                             build the GPU binaries with CUDA (in build-cuda/, or
#                             $VLM_GPU_BUILD) and copy them,
#                             with the shared libraries the GPU image lacks, into
#                             build-gpucarry/ (ignored by git; name it in the device call's
#                             `carry`)
#   tests/gpu/run.sh          on the GPU machine: use build-gpucarry/ if it was carried, else
#                             configure and build with CMake there (needs every dependency of
#                             the project, which the stock GPU image does not have); then run
#                               1. nvidia-smi, the device copy bandwidth (the decode floor's
#                                  denominator), through torch when it is there;
#                               2. test_ops: every CUDA op against the CPU backend;
#                                  test_cuda_sample: sample_summary against the CPU, and its
#                                  time at (1/64/256, 151936);
#                               3. compute-sanitizer memcheck over test_ops;
#                               4. bench_cuda: the Qwen3-8B decoder (decode b=1/8/64/256 at
#                                  ctx 512, prefill 2k) and the ViT (one 1024x1024 image) with
#                                  random weights through the backend table, then --fused,
#                                  then --fused --graphs (decode steps as CUDA graphs);
#                               5. bench/bench_cuda_hf.py: the same shapes through HF
#                                  transformers (torch on the GPU image), for the ratio;
#                               6. test_ops --perf: µs and GB/s per op at the real shapes;
#                               7. test_cuda_forward: the engine on CUDA against the engine on
#                                  the CPU on generated checkpoints (logits, 16 greedy tokens,
#                                  image+text; Valley2: text and an image through SigLIP and
#                                  Qwen2-VL), and decode as CUDA graphs against eager.
#   Steps that would not fit in the call's 10 minutes (each has its own limit) are skipped;
#   VLM_GPU_ONLY=REGEX runs only the steps whose name matches it.
#   Full logs go to $OUT (the device tool brings them back) or build-gpulogs/.
#
# Example device call: run(command="tests/gpu/run.sh", carry=["build-gpucarry"]).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARRY=$ROOT/build-gpucarry   # what pack leaves: carry.tgz (the call's 64 MiB limit counts
                             # the working tree too; OpenBLAS alone is 36 MB unpacked)
LOGS=${OUT:-$ROOT/build-gpulogs}
mkdir -p "$LOGS"
BINS="test_ops test_cuda_sample bench_cuda test_cuda_forward test_tp test_batch_invariance bench_comm bench_constrained" # test binaries packed and run on the GPU
DEADLINE=$(( $(date +%s) + ${VLM_GPU_BUDGET_S:-560} ))

# ---- pack (development machine) ----------------------------------------------------------
if [ "${1:-}" = pack ]; then
    set -e
    BUILD=${VLM_GPU_BUILD:-build-cuda}     # the CUDA build directory to take binaries from
    cmake -S . -B "$BUILD" -DVLM_CUDA=ON >/dev/null
    for b in $BINS valley-make-model valley-generate; do cmake --build "$BUILD" -j2 --target "$b"; done
    STAGE=$(mktemp -d)
    mkdir -p "$STAGE/lib"
    for b in $BINS ../valley-make-model ../valley-generate; do
        cp "$BUILD"/tests/"$b" "$STAGE/"
        # shared libraries outside glibc/gcc and CUDA (the GPU image has those)
        ldd "$BUILD"/tests/"$b" | awk '$3 ~ /^\// {print $3}' |
            grep -Ev '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|ld-linux)[.-]' |
            while read -r so; do cp -L "$so" "$STAGE/lib/"; done
    done
    # the server alone, without its libraries (FFmpeg's dependencies are ~200 MB): the run
    # lists which of them the GPU image lacks, for a later carry of just those
    cmake --build "$BUILD" -j2 --target valley-server
    cp "$BUILD"/valley-server "$STAGE/"
    rm -rf "$CARRY" && mkdir -p "$CARRY"
    tar czf "$CARRY/carry.tgz" -C "$STAGE" .
    rm -rf "$STAGE"
    du -sh "$CARRY/carry.tgz"
    echo "packed: carry build-gpucarry in the device call"
    exit 0
fi

# ---- run (GPU machine) ---------------------------------------------------------------------
declare -a ROWS
row() { ROWS+=("$(printf '%-34s %-6s %7s  %s' "$1" "$2" "$3" "$4")"); }

# CUDA libraries: the toolkit's, else the ones pip installed beside torch
CUDA_LIBS=/usr/local/cuda/lib64
for d in $(python3 -c 'import nvidia, os; p = list(nvidia.__path__)[0]; print(" ".join(os.path.join(p, x, "lib") for x in os.listdir(p)))' 2>/dev/null); do
    CUDA_LIBS=$CUDA_LIBS:$d
done
if [ -f "$CARRY/carry.tgz" ]; then  # unpacked outside the (possibly read-only) tree
    UNPACKED=/tmp/vlm-gpucarry
    rm -rf "$UNPACKED" && mkdir -p "$UNPACKED" && tar xzf "$CARRY/carry.tgz" -C "$UNPACKED"
    CARRY=$UNPACKED
fi
export LD_LIBRARY_PATH=$CARRY/lib:$CUDA_LIBS:${LD_LIBRARY_PATH:-}

# 1. the device
DEV=$(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem \
      --format=csv,noheader 2>&1 | head -1)
BW=$(python3 - 2>/dev/null <<'EOF'
import torch
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")   # 1 GiB
y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize()
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
t = []
for _ in range(20):
    s.record(); y.copy_(x); e.record(); e.synchronize(); t.append(s.elapsed_time(e))
t.sort()
print("%.0f" % (2 * x.numel() / (t[len(t) // 2] * 1e-3) / 1e9))   # read + write, GB/s
EOF
)
row "device" "info" "" "$DEV"
row "d2d copy bandwidth (GB/s)" "${BW:+ok}" "" "${BW:-torch not available}"

# 2. binaries: carried, else built here
if [ -x "$CARRY/test_ops" ]; then
    BIN=$CARRY
    row "build" "carry" "" "prebuilt binaries from build-gpucarry/"
else
    t0=$(date +%s)
    if cmake -S . -B build-gpu -DVLM_CUDA=ON -DCMAKE_BUILD_TYPE=Release > "$LOGS/build.txt" 2>&1 &&
       cmake --build build-gpu -j16 --target $BINS valley-make-model valley-generate >> "$LOGS/build.txt" 2>&1; then
        BIN=build-gpu/tests
        row "build" "ok" "$(( $(date +%s) - t0 ))s" "cmake, CUDA on"
    else
        row "build" "FAIL" "$(( $(date +%s) - t0 ))s" "see build.txt (deps missing? run 'tests/gpu/run.sh pack' and carry build-gpucarry)"
        tail -20 "$LOGS/build.txt"
        printf '\n%s\n' "${ROWS[@]}"
        exit 1
    fi
fi

# runs one step: name, log file, time limit (s), command...; records status, seconds and a
# summary line (the last line matching $SUMMARY); skipped when the limit would pass the
# deadline
SUMMARY='passed, .* failed|ERROR SUMMARY|skipped'
step() {
    local name=$1 log=$2 limit=$3
    shift 3
    # VLM_GPU_ONLY=REGEX: only the steps whose name matches (a rerun of what failed)
    [ -n "${VLM_GPU_ONLY:-}" ] && ! [[ $name =~ $VLM_GPU_ONLY ]] && return 0
    if [ $(( $(date +%s) + limit )) -gt "$DEADLINE" ]; then
        row "$name" "skip" "" "no time left in this call"
        return 0
    fi
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$LOGS/$log" 2>&1
    local rc=$? st=ok
    [ $rc -eq 77 ] && st=skip
    [ $rc -eq 124 ] && st=TIME
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ $rc -ne 124 ] && st=FAIL
    row "$name" "$st" "$(( $(date +%s) - t0 ))s" "$(grep -E "$SUMMARY" "$LOGS/$log" | tail -1)"
    return $rc
}

MISSING=$(ldd "$BIN/test_ops" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')
[ -n "$MISSING" ] && row "shared libraries" "FAIL" "" "not found: $MISSING"
if [ -x "$BIN/valley-server" ]; then
    SRV_MISSING=$(ldd "$BIN/valley-server" 2>&1 | grep 'not found' | awk '{print $1}' | sort -u)
    echo "$SRV_MISSING" > "$LOGS/server_libs_missing.txt"
    row "valley-server's libraries here" "info" "" \
        "$(echo "$SRV_MISSING" | grep -c .) not found (server_libs_missing.txt)"
fi

export VLM_SOURCE_DIR=$ROOT
# the committed tokenizer fixture (tests/fixtures), unpacked by Python's standard library
FX=$(python3 tests/fixtures/vlm_fixtures.py 2>/dev/null) && export VLM_FIXTURES=${FX%/*}
step "test_ops (parity vs CPU)" test_ops.txt 120 "$BIN/test_ops"
step "test_cuda_sample (sampling parity)" cuda_sample.txt 60 "$BIN/test_cuda_sample"

# end-to-end parity needs the generated checkpoints (tests/models.txt); without the
# tokenizer fixture they get make-model's small synthesized vocabulary, which is enough
# for CUDA against CPU
MAKE_MODEL=$BIN/valley-make-model
[ -x "$MAKE_MODEL" ] || MAKE_MODEL=build-gpu/valley-make-model
export VLM_MODELS=$ROOT/build-gpumodels
for mname in gqa4 mha tp8 valley2; do
    margs=$(sed -n "s/^$mname:[ ]*//p" tests/models.txt)
    [ -d "$VLM_MODELS/$mname" ] || "$MAKE_MODEL" --out "$VLM_MODELS/$mname" $margs > /dev/null 2>&1
done
step "test_cuda_forward (engine parity)" cuda_forward.txt 120 "$BIN/test_cuda_forward"
SUMMARY='floor|prefill|vit:'
step "bench_cuda" bench.txt 120 "$BIN/bench_cuda"
step "bench_cuda --fused" bench_fused.txt 60 "$BIN/bench_cuda" --fused --no-vit
step "bench_cuda --fused --graphs" bench_graphs.txt 60 "$BIN/bench_cuda" --fused --graphs --no-vit
SUMMARY='decode  b=1 |vit'
step "HF transformers, same shapes" bench_hf.txt 150 python3 bench/bench_cuda_hf.py
SUMMARY='passed, .* failed|ERROR SUMMARY|skipped'
if command -v compute-sanitizer > /dev/null; then
    # small cases: memcheck slows the kernels ~100x; the CPU reference runs as usual
    step "test_ops under memcheck" memcheck.txt 150 \
        compute-sanitizer --tool memcheck --leak-check no --error-exitcode 3 "$BIN/test_ops"
else
    row "test_ops under memcheck" "skip" "" "compute-sanitizer not found"
fi
SUMMARY='perf on'
step "test_ops --perf" perf.txt 100 "$BIN/test_ops" --perf
# TP (docs/TP.md): tp=1 through the NCCL communicator == the plain CUDA engine
step "test_tp --cuda (NCCL tp=1)" tp.txt 90 "$BIN/test_tp" --cuda
step "test_batch_invariance --cuda" batch_inv.txt 60 "$BIN/test_batch_invariance" --cuda
SUMMARY='bytes|us'
step "bench_comm --nccl (all-reduce latency)" comm.txt 30 "$BIN/bench_comm" --nccl 1 2000
SUMMARY='passed, .* failed|ERROR SUMMARY|skipped'
if command -v compute-sanitizer > /dev/null; then
    step "test_cuda_forward under memcheck" memcheck_fwd.txt 120 \
        compute-sanitizer --tool memcheck --leak-check no --error-exitcode 3 "$BIN/test_cuda_forward"
fi
# structured outputs on the device: every sequence of a batch-64 decode constrained by one
# JSON Schema, the masks joined after the forward pass was launched and applied on the GPU
# (needs the Qwen3 tokenizer: a gqa4 geometry made with it)
if [ -n "${VLM_FIXTURES:-}" ]; then
    margs=$(sed -n "s/^gqa4:[ ]*//p" tests/models.txt)
    [ -d "$VLM_MODELS/gqa4tok" ] || "$MAKE_MODEL" --out "$VLM_MODELS/gqa4tok" $margs \
        --tokenizer "$VLM_FIXTURES/qwen3-tokenizer" > /dev/null 2>&1
    SUMMARY='overlapped warm'
    step "bench_constrained --backend cuda" constrained.txt 150 \
        "$BIN/bench_constrained" --model "$VLM_MODELS/gqa4tok" --backend cuda --decode 32 --batch 64
    step "bench_constrained cuda, 4 mask threads" constrained4.txt 150 \
        "$BIN/bench_constrained" --model "$VLM_MODELS/gqa4tok" --backend cuda --decode 32 \
        --batch 64 --mask-threads 4
fi

# the full Valley2.5 geometry (random weights, 17.5 GiB bf16) run by valley-generate on the
# GPU: load, one 1000x1000 image + text, 32 tokens (tests/gpu/real_size.sh)
SUMMARY='real size: run|prompt:'
step "real size: Valley2.5 geometry, 1 MP image" real_size.txt 240 \
    bash tests/gpu/real_size.sh "$MAKE_MODEL" "$BIN/valley-generate"

# the short table last
echo
grep -E 'FAIL|non-finite' "$LOGS/test_ops.txt" 2>/dev/null | head -20
echo
sed -n '/^perf on/,$p' "$LOGS/perf.txt" 2>/dev/null | head -30
grep -h '^perf sample_summary' "$LOGS/cuda_sample.txt" 2>/dev/null
grep -h 'graphs vs eager\|worst max' "$LOGS/cuda_forward.txt" 2>/dev/null | head -12
grep -E '^perf sample_summary|FAILED|mismatches' "$LOGS/cuda_sample.txt" 2>/dev/null | head -8
echo
cat "$LOGS/bench.txt" "$LOGS/bench_fused.txt" "$LOGS/bench_graphs.txt" "$LOGS/bench_hf.txt" "$LOGS/comm.txt" \
    2>/dev/null | grep -vi warn | head -50
grep -h 'batch\|warm\|per row\|thread' "$LOGS/constrained.txt" "$LOGS/constrained4.txt" 2>/dev/null | head -20
grep -h 'real size\|prompt:\|engine:\|cuda:' "$LOGS/real_size.txt" 2>/dev/null | head -12
echo
printf '%-34s %-6s %7s  %s\n' "step" "status" "time" "summary"
printf '%s\n' "${ROWS[@]}"

# the device call brings back at most 8 files from $OUT: every log in one archive
if [ -n "${OUT:-}" ] && [ "$LOGS" = "$OUT" ]; then
    (cd "$OUT" && tar czf /tmp/vlm-gpulogs.tgz --exclude=logs.tgz . && rm -f ./*.txt &&
     mv /tmp/vlm-gpulogs.tgz logs.tgz)
fi
