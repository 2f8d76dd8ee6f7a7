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
#                               3. compute-sanitizer memcheck over test_ops;
#                               4. test_ops --perf: µs and GB/s per op at the real shapes;
#                               5. model parity and engine benchmarks on the CUDA backend, when
#                                  those binaries take a CUDA backend (not yet: see PERF.md).
#   Full logs go to $OUT (the device tool brings them back) or build-gpulogs/.
#
# Example device call: run(command="tests/gpu/run.sh", carry=["build-gpucarry"]).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
CARRY=$ROOT/build-gpucarry
LOGS=${OUT:-$ROOT/build-gpulogs}
mkdir -p "$LOGS"
BINS="test_ops"            # GPU binaries packed and run (add model tests here when they take CUDA)

# ---- pack (development machine) ----------------------------------------------------------
if [ "${1:-}" = pack ]; then
    set -e
    BUILD=${VLM_GPU_BUILD:-build-cuda}     # the CUDA build directory to take binaries from
    cmake -S . -B "$BUILD" -DVLM_CUDA=ON >/dev/null
    for b in $BINS; do cmake --build "$BUILD" -j2 --target "$b"; done
    rm -rf "$CARRY" && mkdir -p "$CARRY/lib"
    for b in $BINS; do
        cp "$BUILD"/tests/"$b" "$CARRY/"
        # shared libraries outside glibc/gcc and CUDA (the GPU image has those)
        ldd "$BUILD"/tests/"$b" | awk '$3 ~ /^\// {print $3}' |
            grep -Ev '/(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl|ld-linux)[.-]' |
            while read -r so; do cp -L "$so" "$CARRY/lib/"; done
    done
    du -sh "$CARRY"
    echo "packed: carry build-gpucarry in the device call"
    exit 0
fi

# ---- run (GPU machine) ---------------------------------------------------------------------
declare -a ROWS
row() { ROWS+=("$(printf '%-34s %-6s %7s  %s' "$1" "$2" "$3" "$4")"); }

# CUDA libraries: the toolkit's, else the ones pip installed beside torch
CUDA_LIBS=/usr/local/cuda/lib64
for d in $(python3 -c 'import nvidia, os; p = nvidia.__path__[0]; print(" ".join(os.path.join(p, x, "lib") for x in os.listdir(p)))' 2>/dev/null); do
    CUDA_LIBS=$CUDA_LIBS:$d
done
export LD_LIBRARY_PATH=$CARRY/lib:$CUDA_LIBS:${LD_LIBRARY_PATH:-}

# 1. the device
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv \
    > "$LOGS/device.txt" 2>&1
DEV=$(tail -1 "$LOGS/device.txt")
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
       cmake --build build-gpu -j16 --target $BINS >> "$LOGS/build.txt" 2>&1; then
        BIN=build-gpu/tests
        row "build" "ok" "$(( $(date +%s) - t0 ))s" "cmake, CUDA on"
    else
        row "build" "FAIL" "$(( $(date +%s) - t0 ))s" "see build.txt (deps missing? run 'tests/gpu/run.sh pack' and carry build-gpucarry)"
        tail -20 "$LOGS/build.txt"
        printf '\n%s\n' "${ROWS[@]}"
        exit 1
    fi
fi

# runs one step: name, log file, command...; records status, seconds and the summary line
step() {
    local name=$1 log=$2
    shift 2
    local t0=$(date +%s)
    "$@" > "$LOGS/$log" 2>&1
    local rc=$? st=ok
    [ $rc -eq 77 ] && st=skip
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && st=FAIL
    row "$name" "$st" "$(( $(date +%s) - t0 ))s" "$(grep -E 'passed, .* failed|ERROR SUMMARY|skipped' "$LOGS/$log" | tail -1)"
    return $rc
}

MISSING=$(ldd "$BIN/test_ops" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')
[ -n "$MISSING" ] && row "shared libraries" "FAIL" "" "not found: $MISSING"

export VLM_SOURCE_DIR=$ROOT VLM_FIXTURES=$ROOT/../shared/fixtures
step "test_ops (parity vs CPU)" test_ops.txt "$BIN/test_ops"
if command -v compute-sanitizer > /dev/null; then
    # small cases only: the CPU reference is the same, memcheck slows the kernels ~100x
    step "test_ops under memcheck" memcheck.txt timeout 240 \
        compute-sanitizer --tool memcheck --leak-check no --error-exitcode 3 "$BIN/test_ops"
else
    row "test_ops under memcheck" "skip" "" "compute-sanitizer not found"
fi
step "test_ops --perf" perf.txt timeout 240 "$BIN/test_ops" --perf
# 5. model parity / engine benchmarks on CUDA: not wired yet (test_forward and bench_engine
#    select the CPU backend); add them to BINS and here when they take --backend cuda.
row "model parity, engine bench" "todo" "" "binaries do not select the CUDA backend yet"
# TP (docs/TP.md): "test_tp --cuda" (tp=1 over NCCL == plain CUDA engine) and "bench_comm --nccl"
row "tp: test_tp --cuda, bench_comm --nccl" "todo" "" "wait for the CUDA decoder; see docs/TP.md"

# the short table last
echo
grep -E 'FAIL|non-finite' "$LOGS/test_ops.txt" | head -20
echo
sed -n '/^perf on/,$p' "$LOGS/perf.txt" | head -40
echo
printf '%-34s %-6s %7s  %s\n' "step" "status" "time" "summary"
printf '%s\n' "${ROWS[@]}"
