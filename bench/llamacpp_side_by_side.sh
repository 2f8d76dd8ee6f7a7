#!/usr/bin/env bash
# llamacpp_side_by_side.sh: our CPU engine (bench_engine) against llama.cpp on the same random
# weights, on the same machine, with the same thread count, back to back.
#
#   bench/llamacpp_side_by_side.sh [--build DIR (build)] [--cache DIR (/work/cache/llamacpp)]
#       [--threads T (2)] [--python PY (python3)] [--sizes 0.6b[,8b]] [--reps R (3)]
#       [--ours-runs N (5): bench_engine's best of N]
#       [--ours-wait default|passive|active: OMP_WAIT_POLICY for ours; default leaves libgomp's
#        own (spin a while, then sleep), as llama-bench keeps its default polling]
#       [--skip-bench]   (build, convert and check only)
#
# Steps (each skipped when its output is already in the cache):
#  1. `pip download --no-binary :all: --no-deps llama-cpp-python` into the cache; its source
#     package vendors llama.cpp (vendor/llama.cpp). CMake builds llama-bench and
#     llama-batched-bench (Release, -DGGML_NATIVE=ON, no CURL/OpenSSL, static), and
#     bench/llamacpp_greedy.c is compiled against the libllama built alongside.
#  2. valley-make-model writes the checkpoint (text only, tied, Qwen3 tokenizer fixture); a
#     second folder is its Qwen3ForCausalLM view (config.json rewritten, the same safetensors
#     and tokenizer by symlink), which the vendored convert_hf_to_gguf.py turns into GGUF bf16
#     and Q8_0. PY needs torch, numpy, safetensors, transformers and pyyaml; sentencepiece is
#     pip-installed into the cache when PY lacks it (the converter imports it for Qwen).
#  3. Greedy check: the same 8 prompt ids through `bench_engine --greedy` (exact and fast)
#     and llamacpp_greedy (bf16 and Q8_0): the 8 largest logits after the prompt and 16
#     greedy tokens each, printed; the run stops unless both our modes produce llama.cpp
#     bf16's 16 tokens and share at least 6 of its top-8 ids (random weights often make
#     greedy repeat one token, so the logit values are the finer check).
#  4. `uptime`, bench_membw (the floor's bandwidth), then per model: bench_engine fast and
#     exact (prefill 512, decode 32 steps at batch 1 and 8), llama-bench bf16 and Q8_0
#     (pp512, tg32), llama-batched-bench bf16 and Q8_0 (8 sequences of 16 prompt tokens,
#     32 decode steps: speed_tg), R times each, best kept; `uptime` again; then the table:
#     tok/s per figure, ours / llama.cpp bf16, and the decode floor (weight bytes read per
#     token / bandwidth).
#
# Everything it writes goes under the cache (sources, build, checkpoints, GGUF files, logs).
# Prints figures, asserts nothing; not run by CI (tests only `bash -n` it).
set -euo pipefail

BUILD=build CACHE=/work/cache/llamacpp THREADS=2 PY=python3 SIZES=0.6b REPS=3 OURS_RUNS=5 OURS_WAIT=default SKIP_BENCH=0
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --ours-runs) OURS_RUNS=$2; shift 2 ;;
    --ours-wait) OURS_WAIT=$2; shift 2 ;;
    --skip-bench) SKIP_BENCH=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--cache DIR] [--threads T] [--python PY] [--sizes 0.6b,8b] [--reps R] [--ours-runs N] [--ours-wait W] [--skip-bench]" >&2; exit 2 ;;
    esac
done
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
case "$OURS_WAIT" in
default) OURS_ENV=(env) ;;
passive|active) OURS_ENV=(env OMP_WAIT_POLICY="$OURS_WAIT") ;;
*) echo "--ours-wait: default, passive or active" >&2; exit 2 ;;
esac
mkdir -p "$CACHE/work" "$CACHE/logs"
CACHE=$(cd "$CACHE" && pwd)
W=$CACHE/work LOGS=$CACHE/logs
say() { printf '== %s\n' "$*"; }
for t in valley-make-model tests/bench_engine tests/bench_membw; do
    [ -x "$BUILD/$t" ] || { echo "missing $BUILD/$t (build the project first)" >&2; exit 1; }
done

# ---- 1. llama.cpp from the llama-cpp-python source package
if ! ls "$CACHE"/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
    say "downloading the llama-cpp-python source package"
    "$PY" -m pip download --no-binary :all: --no-deps llama-cpp-python -d "$CACHE"
fi
TARBALL=$(ls "$CACHE"/llama_cpp_python-*.tar.gz | sort -V | tail -1)
SRCDIR=$CACHE/$(basename "$TARBALL" .tar.gz)
[ -d "$SRCDIR" ] || tar -C "$CACHE" -xzf "$TARBALL"
LCPP=$SRCDIR/vendor/llama.cpp
LB=$CACHE/build
if [ ! -x "$LB/bin/llama-bench" ] || [ ! -x "$LB/bin/llama-batched-bench" ]; then
    say "building llama.cpp ($(basename "$SRCDIR"))"
    cmake -S "$LCPP" -B "$LB" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >"$LOGS/llamacpp-cmake.log"
    cmake --build "$LB" -j"$(nproc)" --target llama-bench llama-batched-bench >"$LOGS/llamacpp-build.log"
fi
GREEDY=$LB/bin/llamacpp_greedy
if [ ! -x "$GREEDY" ] || [ "$SRC/bench/llamacpp_greedy.c" -nt "$GREEDY" ]; then
    gcc -O2 -c "$SRC/bench/llamacpp_greedy.c" -I"$LCPP/include" -I"$LCPP/ggml/include" -o "$LB/llamacpp_greedy.o"
    LIBS=$(find "$LB/src" "$LB/ggml" -name '*.a' | grep -E '/lib(llama|ggml[^/]*)\.a$' | sort -r)
    g++ -o "$GREEDY" "$LB/llamacpp_greedy.o" -Wl,--start-group $LIBS -Wl,--end-group -fopenmp -lpthread -lm
fi
LLAMA_COMMIT=$(sed -n 's/.*ggml commit: *//p' "$LOGS/llamacpp-cmake.log" 2>/dev/null | head -1)

# ---- 2. checkpoints and GGUF files
if ! "$PY" -c 'import sentencepiece' 2>/dev/null && [ ! -d "$CACHE/pylib/sentencepiece" ]; then
    "$PY" -m pip install -q --target "$CACHE/pylib" sentencepiece
fi
make_model() { # name, valley-make-model geometry arguments...
    local name=$1; shift
    if [ ! -f "$W/$name/model.safetensors" ] && [ ! -f "$W/$name/model.safetensors.index.json" ]; then
        say "writing the $name checkpoint"
        "$BUILD/valley-make-model" --out "$W/$name" --tokenizer "$BUILD/fixtures/qwen3-tokenizer" \
            --no-vision "$@" >"$LOGS/make-$name.log"
    fi
    local v=$W/$name-qwen3
    mkdir -p "$v"
    for f in "$W/$name"/*; do
        [ "$(basename "$f")" = config.json ] || ln -sf "$f" "$v/"
    done
    # the Qwen3 text model the checkpoint's decoder is (docs/MODEL.md): same tensors and
    # names, config.json says Qwen3ForCausalLM
    "$PY" - "$W/$name/config.json" "$v/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["architectures"] = ["Qwen3ForCausalLM"]
c["model_type"] = "qwen3"
c.pop("use_special_start_end_token", None)
json.dump(c, open(sys.argv[2], "w"), indent=2)
EOF
    for q in bf16 q8_0; do
        if [ ! -f "$W/$name-$q.gguf" ]; then
            say "converting $name to GGUF $q"
            PYTHONPATH="$LCPP/gguf-py:$CACHE/pylib" "$PY" "$LCPP/convert_hf_to_gguf.py" "$v" \
                --outtype "$q" --outfile "$W/$name-$q.gguf.part" >"$LOGS/convert-$name-$q.log" 2>&1
            mv "$W/$name-$q.gguf.part" "$W/$name-$q.gguf"
        fi
    done
}
MODELS=()
IFS=, read -r -a WANT <<<"$SIZES"
for s in "${WANT[@]}"; do
    case "$s" in
    0.6b)
        make_model m06 --seed 7 --hidden 1024 --layers 28 --heads 16 --kv-heads 8 --head-dim 128 \
            --ffn 3072 --vocab 151936 --tie
        MODELS+=(m06) ;;
    8b)
        # Qwen3-8B's decoder: 16.4 GB of bf16 weights, + 16.4 GB (bf16) and 8.7 GB (Q8_0) of GGUF
        avail_disk=$(df -Pk "$W" | awk 'NR==2 {print int($4 / 1048576)}')
        mem=$(awk '/MemTotal/ {print int($2 / 1048576)}' /proc/meminfo)
        # the engines run one after the other, so the page cache must hold one engine's 16.4 GB
        # at a time (less, and decode reads from disk: the figures would be the disk's)
        have=0; [ -f "$W/m8b-bf16.gguf" ] && [ -f "$W/m8b-q8_0.gguf" ] && [ -d "$W/m8b" ] && have=1
        if { [ "$have" = 0 ] && [ "$avail_disk" -lt 45 ]; } || [ "$mem" -lt 20 ]; then
            echo "skipping 8b: it needs ~42 GB of disk unless written already (free: $avail_disk GiB) and ~20 GiB of RAM" \
                "so that one engine's ~17 GB of weights stay in the page cache (MemTotal $mem GiB)"
            continue
        fi
        make_model m8b --seed 8 --hidden 4096 --layers 36 --heads 32 --kv-heads 8 --head-dim 128 \
            --ffn 12288 --vocab 151936 --shards 4
        MODELS+=(m8b) ;;
    *) echo "unknown size $s (0.6b, 8b)" >&2; exit 2 ;;
    esac
done

# ---- 3. greedy check
IDS=9707,11,1879,315,279,8131,13,358
for m in "${MODELS[@]}"; do
    say "greedy check on $m: prompt ids $IDS, 16 tokens"
    "${OURS_ENV[@]}" "$BUILD/tests/bench_engine" --model "$W/$m" --threads "$THREADS" \
        --numerics exact --greedy "$IDS" >"$LOGS/greedy-$m-exact.txt"
    "${OURS_ENV[@]}" "$BUILD/tests/bench_engine" --model "$W/$m" --threads "$THREADS" \
        --numerics fast --greedy "$IDS" >"$LOGS/greedy-$m-fast.txt"
    for q in bf16 q8_0; do
        "$GREEDY" "$W/$m-$q.gguf" "$IDS" 16 "$THREADS" >"$LOGS/greedy-$m-$q.txt" 2>"$LOGS/greedy-$m-$q.err"
    done
    # top-8 logits after the prompt and the 16 greedy tokens of each; the verdict compares
    # ours exact (f32 activations) and fast (bf16) with llama.cpp bf16
    if ! "$PY" - "$LOGS/greedy-$m" <<'EOF'
import sys
def load(path):
    top, toks = [], []
    for line in open(path):
        if line.startswith("top8:"):
            top = [(int(a), float(b)) for a, b in (t.split(":") for t in line.split()[1:])]
        elif line.startswith("greedy:"):
            toks = [int(t) for t in line.split()[1:]]
    return top, toks
runs = {k: load(f"{sys.argv[1]}-{k}.txt") for k in ("exact", "fast", "bf16", "q8_0")}
names = {"exact": "ours exact", "fast": "ours fast", "bf16": "llama.cpp bf16", "q8_0": "llama.cpp Q8_0"}
for k, (top, toks) in runs.items():
    print(f"  {names[k]:15s} top8   {' '.join(f'{i}:{v:.3f}' for i, v in top)}")
    print(f"  {names[k]:15s} greedy {' '.join(map(str, toks))}")
ok = True
ref_top, ref_toks = runs["bf16"]
ref = dict(ref_top)
for k in ("exact", "fast", "q8_0"):
    top, toks = runs[k]
    lead = next((i for i, (a, b) in enumerate(zip(toks, ref_toks)) if a != b), min(len(toks), len(ref_toks)))
    common = [i for i, _ in top if i in ref]
    diff = max((abs(v - ref[i]) for i, v in top if i in ref), default=float("inf"))
    print(f"  {names[k]} vs llama.cpp bf16: greedy tokens equal for {lead} of {len(ref_toks)}; "
          f"top-8 ids in common {len(common)}/8, same order {[i for i, _ in top] == [i for i, _ in ref_top]}; "
          f"max |logit difference| on them {diff:.4f} (top logit {ref_top[0][1]:.2f})")
    if k == "q8_0":
        continue
    # Random weights at the 8 B width give logits packed within a few hundredths of each
    # other, so greedy paths part at near ties (llama.cpp's own Q8_0 parts from its bf16 there).
    # Then the check is the logits: the same top-8 ids, each within 1% of the top logit.
    close = len(common) == 8 and diff <= 0.01 * abs(ref_top[0][1])
    if len(common) < 6 or (lead < len(ref_toks) and not close):
        ok = False
    elif lead < len(ref_toks):
        print(f"  {names[k]}: greedy paths part at step {lead}, a near tie (top-8 logits within "
              f"{diff:.4f} of llama.cpp's, 1% of the top logit is {0.01 * abs(ref_top[0][1]):.4f})")
sys.exit(0 if ok else 1)
EOF
    then
        echo "the engines disagree: the conversion or one engine is wrong; not benchmarking" >&2
        exit 1
    fi
done
[ "$SKIP_BENCH" = 1 ] && exit 0

# ---- 4. benchmarks, back to back
best() { sort -g | tail -1; } # the largest of the numbers on stdin
say "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, $THREADS threads; ours with OMP_WAIT_POLICY $OURS_WAIT; llama.cpp $(basename "$SRCDIR") (ggml ${LLAMA_COMMIT:-?})"
UP0=$(uptime)
echo "uptime before: $UP0"
BW=$("${OURS_ENV[@]}" "$BUILD/tests/bench_membw" --threads "$THREADS" | tee "$LOGS/membw.log" |
    sed -n 's/.*best *\([0-9.]*\) GB\/s.*/\1/p' | head -1)
echo "read bandwidth (bench_membw, $THREADS threads): $BW GB/s best"
declare -A R
for m in "${MODELS[@]}"; do
    for num in fast exact; do
        say "$m: bench_engine --numerics $num"
        "${OURS_ENV[@]}" "$BUILD/tests/bench_engine" --model "$W/$m" --threads "$THREADS" \
            --numerics "$num" --prefill 512 --decode 32 --batch 8 --runs "$OURS_RUNS" --no-matmul | tee "$LOGS/ours-$m-$num.log"
        R[$m,$num,pp]=$(sed -n 's/^prefill *512 tokens *\([0-9.]*\) tok\/s.*/\1/p' "$LOGS/ours-$m-$num.log")
        R[$m,$num,tg1]=$(sed -n 's/^decode  batch 1 .* steps *\([0-9.]*\) tok\/s.*/\1/p' "$LOGS/ours-$m-$num.log")
        R[$m,$num,tg8]=$(sed -n 's/^decode  batch 8 .* steps *\([0-9.]*\) tok\/s.*/\1/p' "$LOGS/ours-$m-$num.log")
    done
    for q in bf16 q8_0; do
        g=$W/$m-$q.gguf
        say "$m: llama-bench $q"
        "$LB/bin/llama-bench" -m "$g" -t "$THREADS" -p 512 -n 32 -r "$REPS" -o csv 2>"$LOGS/llama-bench-$m-$q.err" |
            tee "$LOGS/llama-bench-$m-$q.csv"
        # csv: the columns n_prompt, n_gen, avg_ts (mean over the repetitions)
        read -r R[$m,$q,pp] R[$m,$q,tg1] < <("$PY" - "$LOGS/llama-bench-$m-$q.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
pp = [float(r["avg_ts"]) for r in rows if int(r["n_prompt"]) > 0 and int(r["n_gen"]) == 0]
tg = [float(r["avg_ts"]) for r in rows if int(r["n_gen"]) > 0 and int(r["n_prompt"]) == 0]
print(max(pp), max(tg))
EOF
)
        say "$m: llama-batched-bench $q (8 x 16 prompt tokens, 32 steps) x $REPS"
        for r in $(seq "$REPS"); do
            "$LB/bin/llama-batched-bench" -m "$g" -t "$THREADS" -tb "$THREADS" -c 1024 -b 512 -ub 512 \
                -npp 16 -ntg 32 -npl 8 --output-format jsonl 2>>"$LOGS/batched-$m-$q.err" | grep '^{' || true
        done | tee "$LOGS/batched-$m-$q.jsonl"
        R[$m,$q,tg8]=$(sed -n 's/.*"speed_tg": *\([0-9.]*\).*/\1/p' "$LOGS/batched-$m-$q.jsonl" | best)
    done
done
UP1=$(uptime)
echo "uptime after: $UP1"

# weight bytes read per decode step: every matrix once (the tied embedding as lm_head); the
# embedding lookup reads one row; bf16 is 2 bytes per parameter, Q8_0 34 bytes per 32
wbytes() { # model, bytes-per-param
    "$PY" - "$W/$1/config.json" "$2" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
H, L, F, V = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
hd, nh, nk = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
per = H * (nh * hd) * 2 + H * (nk * hd) * 2 + 3 * H * F
print(float(sys.argv[2]) * (per * L + V * H))
EOF
}
ratio() { awk -v x="$1" -v y="$2" 'BEGIN { if (y > 0) printf "%.2fx", x / y; else printf "-" }'; }
echo
printf '%-6s %-22s %10s %10s %10s %10s %14s %14s\n' model figure "ours fast" "ours exact" "l.cpp bf16" "l.cpp Q8_0" "fast/bf16" "exact/bf16"
for m in "${MODELS[@]}"; do
    for f in pp tg1 tg8; do
        case $f in pp) name="prefill 512, tok/s" ;; tg1) name="decode b=1, tok/s" ;; tg8) name="decode b=8, tok/s" ;; esac
        a=${R[$m,fast,$f]:-0} b=${R[$m,exact,$f]:-0} c=${R[$m,bf16,$f]:-0} d=${R[$m,q8_0,$f]:-0}
        printf '%-6s %-22s %10.1f %10.1f %10.1f %10.1f %14s %14s\n' "$m" "$name" "$a" "$b" "$c" "$d" \
            "$(ratio "$a" "$c")" "$(ratio "$b" "$c")"
    done
    b16=$(wbytes "$m" 2) b8=$(wbytes "$m" 1.0625)
    awk -v b16="$b16" -v b8="$b8" -v bw="$BW" -v m="$m" -v f="${R[$m,fast,tg1]:-0}" -v e="${R[$m,exact,tg1]:-0}" \
        -v l="${R[$m,bf16,tg1]:-0}" -v q="${R[$m,q8_0,tg1]:-0}" 'BEGIN {
        fl16 = bw * 1e9 / b16; fl8 = bw * 1e9 / b8
        printf "%-6s decode floor at %.1f GB/s: bf16 %.2f GB/token -> %.1f tok/s (%.1f ms); Q8_0 %.2f GB/token -> %.1f tok/s\n", m, bw, b16 / 1e9, fl16, 1e3 / fl16, b8 / 1e9, fl8
        printf "%-6s decode b=1 vs its floor (ms/token / floor ms): ours fast %.2fx, exact %.2fx, llama.cpp bf16 %.2fx, Q8_0 %.2fx\n", m, (f > 0 ? fl16 / f : 0), (e > 0 ? fl16 / e : 0), (l > 0 ? fl16 / l : 0), (q > 0 ? fl8 / q : 0)
    }'
done
echo "uptime before: $UP0"
echo "uptime after:  $UP1"
