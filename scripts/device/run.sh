#!/usr/bin/env bash
# run.sh - runs THERE (GPU machine, repo root, $OUT set), after prepare.sh
# here and its three carries (see prepare.sh).  One call, under 5 minutes:
# each step has its own timeout and starts only if it fits in what is left
# of BUDGET seconds, in the order of issue 16 (pending checks first):
#   1. device tests: kernels, engine (with the memory footprint), capture
#      (CPU/CUDA agreement on the default model)
#   2. the demo sweep on --device cuda and cpu with --trace-tokens, compared
#      by compare_sweeps.py (cells, tokens up to the first near-tie, metrics)
#   3. bench llama3-8b: batches 1..256 with rooflines, grids of 64 and 256
#      distinct plans
#   4. the synthetic Llama-3-8B sweep (experiments/gpu-throughput.yaml, batch
#      chosen from free memory) and a bench at its batch and context
#   5. compute-sanitizer memcheck on the kernel tests and the random-model
#      engine tests
#   6. bench_cuda_variants, bench smollm2-135m
# then a summary table LAST.  Logs and JSON under $OUT.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ss_out}
BUDGET=${BUDGET:-285}
mkdir -p "$OUT"
t_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - t_start )); }
declare -A rc took

# step NAME LIMIT CMD...: runs CMD with a timeout of LIMIT seconds, stdout and
# stderr to $OUT/NAME.log, unless it would end past BUDGET (rc "skip").
step() {
    local name=$1 limit=$2
    shift 2
    if [ $(( $(elapsed) + limit )) -gt "$BUDGET" ]; then
        rc[$name]=skip
        echo "$name: skipped at $(elapsed) s (limit $limit s would pass the $BUDGET s budget)"
        return
    fi
    local t0=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc[$name]=$?
    took[$name]=$(( $(date +%s) - t0 ))
    echo "$name rc=${rc[$name]} in ${took[$name]} s (at $(elapsed) s)"
}

# ---- libraries: system first, carried debs only where the system has none
root=/tmp/ssroot
rm -rf "$root"
mkdir -p "$root/fill"
for f in .device/debs/*.deb; do dpkg -x "$f" "$root"; done
for so in $(find "$root" -name 'lib*.so*' \( -type f -o -type l \)); do
    name=$(basename "$so")
    if ! ldconfig -p | grep -q "^[[:space:]]$name "; then
        ln -sf "$so" "$root/fill/$name"
    fi
done
cudalib=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64 \
    $(python3 -c 'import nvidia.cublas, os; print(os.path.join(nvidia.cublas.__path__[0], "lib"))' \
        2>/dev/null); do
    if [ -e "$d/libcublas.so.13" ]; then cudalib="$d"; break; fi
done
export LD_LIBRARY_PATH="$root/fill${cudalib:+:$cudalib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee "$OUT/env.txt"
tests="test_cuda_kernels test_cuda_engine test_cuda_capture"

# ---- the default model, carried in parts by earlier calls (prepare.sh)
if [ -f .devmodel/part00 ] && [ -f .device/model.sha256 ]; then
    cat .devmodel/part?? >/tmp/model.gguf
    if [ "$(sha256sum </tmp/model.gguf | cut -d' ' -f1)" = "$(cat .device/model.sha256)" ]; then
        export SAFESTEER_MODEL=/tmp/model.gguf
        echo "model: /tmp/model.gguf (checksum ok)"
    else
        echo "model: parts present but the checksum differs; default-model tests will skip"
    fi
else
    echo "model: not carried; default-model tests will skip"
fi
for b in build-device/safesteer $(printf 'build-device/%s ' $tests); do
    ldd "$b" | grep "not found" | sed "s|^|$b: |" | tee -a "$OUT/env.txt"
done

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
head -12 "$OUT/nvidia-smi.txt"
B=build-device/safesteer

# ---- 1. device tests (Criterion, one job so GPU logs stay in order)
step test_cuda_kernels 70 build-device/test_cuda_kernels --jobs 1 --verbose=1
step test_cuda_engine 80 build-device/test_cuda_engine --jobs 1 --verbose=1
step test_cuda_capture 70 build-device/test_cuda_capture --jobs 1 --verbose=1

# ---- 2. the demo sweep on both engines, compared (outputs in /tmp; the
# comparison and the summaries come back)
if [ -n "${SAFESTEER_MODEL:-}" ]; then
    for dev in cuda cpu; do
        rm -rf "/tmp/sweep_$dev"
        step "sweep_$dev" 60 $B sweep experiments/demo.yaml --device "$dev" --out "/tmp/sweep_$dev" \
            --trace-tokens --quiet
        cp "/tmp/sweep_$dev/summary.csv" "$OUT/demo_summary_$dev.csv" 2>/dev/null
    done
    step compare_sweeps 20 python3 scripts/device/compare_sweeps.py /tmp/sweep_cuda /tmp/sweep_cpu
else
    rc[sweep_cuda]=skip rc[sweep_cpu]=skip rc[compare_sweeps]=skip
fi

# ---- 3. batched decode, grids
step bench_llama3-8b 110 $B bench --device cuda --shape llama3-8b --prompt-len 512 --steps 32 \
    --batches 1,8,32,64,128,256 --grid 64,256 --json "$OUT/bench_llama3-8b.json"

# ---- 4. whole-sweep throughput on the 8B shape, then the bench at the same
# batch and context (mean prompt tokens, max_new steps)
rc[sweep_8b]=skip rc[bench_sweep_batch]=skip
if [ -n "${SAFESTEER_MODEL:-}" ] && [ -f .device/data/catqa_en.jsonl ]; then
    sed "s|\.\./\.\./shared/data|$PWD/.device/data|" experiments/gpu-throughput.yaml \
        >/tmp/gpu-throughput.yaml
    rm -rf /tmp/sweep_8b
    step sweep_8b 80 $B sweep /tmp/gpu-throughput.yaml --device cuda --out /tmp/sweep_8b --quiet \
        --model "synthetic:llama3-8b,weights=device,tokenizer=$SAFESTEER_MODEL"
    cp /tmp/sweep_8b/throughput.json "$OUT/sweep_8b_throughput.json" 2>/dev/null
    if [ -f /tmp/sweep_8b/throughput.json ]; then
        read -r sb sp < <(python3 -c 'import json,sys; t=json.load(open(sys.argv[1]))
print(t["batch"], max(1, round(t["prompt_tokens"] / max(1, t["generations"]))))' \
            /tmp/sweep_8b/throughput.json)
        step bench_sweep_batch 45 $B bench --device cuda --shape llama3-8b --prompt-len "$sp" \
            --steps 64 --batches "$sb" --reps 1 --json "$OUT/bench_sweep_batch.json"
    fi
fi

# ---- 5. memcheck: the kernel tests, then the engine tests on random models
step memcheck_kernels 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
    build-device/test_cuda_kernels --jobs 1
step memcheck_engine 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
    build-device/test_cuda_engine --jobs 1 --filter '!(*default_model*)'

# ---- 6. kernel variants side by side; the small shape
step bench_variants 40 build-device/bench_cuda_variants --shape llama3-8b --batches 1,8,32
step bench_smollm2-135m 25 $B bench --device cuda --shape smollm2-135m --prompt-len 512 \
    --batches 1,8,32 --steps 32 --json "$OUT/bench_smollm2-135m.json"

# ---- summary (last, so the reply's tail holds it)
synth() { grep -h "Synthesis" "$OUT/$1.log" 2>/dev/null | tail -1 | sed 's/^\[====\] //'; }
errsum() { grep -h 'ERROR SUMMARY' "$OUT/$1.log" 2>/dev/null | sort | uniq -c | tr -s ' ' | tr '\n' ' '; }
echo
echo "==================== safesteer device run summary ($(elapsed) s of $BUDGET)"
grep -m1 -o "NVIDIA [A-Za-z0-9 ]*" "$OUT/nvidia-smi.txt" 2>/dev/null
printf '%-22s %-5s %5s  %s\n' step rc s result
for t in test_cuda_kernels test_cuda_engine test_cuda_capture; do
    printf '%-22s %-5s %5s  %s\n' "$t" "${rc[$t]}" "${took[$t]:--}" "$(synth $t)"
done
for t in memcheck_kernels memcheck_engine; do
    printf '%-22s %-5s %5s  %s\n' "$t" "${rc[$t]}" "${took[$t]:--}" "$(errsum $t)"
done
for t in sweep_cuda sweep_cpu compare_sweeps bench_llama3-8b sweep_8b bench_sweep_batch \
    bench_variants bench_smollm2-135m; do
    printf '%-22s %-5s %5s  %s\n' "$t" "${rc[$t]}" "${took[$t]:--}" \
        "$(grep -v '^bench: ' "$OUT/$t.log" 2>/dev/null | tail -1 | cut -c1-110)"
done
for t in test_cuda_kernels test_cuda_engine test_cuda_capture; do
    grep -hE "\[FAIL\]|\[----\].*(Assertion|failed|err)|diverged|\[SKIP\]" "$OUT/$t.log" 2>/dev/null | head -4
done
echo "--- CPU/CUDA agreement (bf16 budget, docs/testing.md); engine footprint"
grep -h "KL(CPU || CUDA)" "$OUT/test_cuda_capture.log" 2>/dev/null | head -4
awk '/worst row relative L2/ { if ($NF > m) { m = $NF; w = $0 } } END { if (w) print "largest: " w }' \
    "$OUT/test_cuda_capture.log" 2>/dev/null
grep -h "^footprint:" "$OUT/test_cuda_engine.log" 2>/dev/null
echo "--- demo sweep, cuda vs cpu (compare_sweeps.py)"
grep -hE "^(diverged|near-tie|cell)" "$OUT/compare_sweeps.log" 2>/dev/null | head -6
echo "--- whole-sweep throughput (synthetic llama3-8b; target >= 80% of the bench at its batch)"
python3 - "$OUT/sweep_8b_throughput.json" "$OUT/bench_sweep_batch.json" <<'PY' 2>/dev/null
import json, sys
t = json.load(open(sys.argv[1]))
line = (f"batch {t['batch']}{' (auto)' if t['batch_auto'] else ''}: {t['generations']} generations, "
        f"{t['generated_tokens']} tokens in {t['loop_seconds']:.1f} s = "
        f"{t['generated_tokens_per_second']:.0f} tok/s (generate {t['generate_seconds']:.1f} s, "
        f"perplexity {t['quality_seconds']:.1f} s, judge {t['judge_seconds']:.1f} s; "
        f"capture+vectors {t['capture_seconds']:.1f} s)")
print(line)
try:
    b = json.load(open(sys.argv[2]))
    d = [x for x in b["decode"] if x["batch"] == t["batch"]][0]
    print(f"bench at batch {d['batch']}, prompt {b['prefill']['tokens']}: {d['tokens_per_s']:.0f} tok/s"
          f" -> sweep = {100 * t['generated_tokens_per_second'] / d['tokens_per_s']:.0f}% of it")
except Exception as e:
    print(f"bench at the sweep's batch: not available ({e})")
PY
echo "--- bench llama3-8b (rc=${rc[bench_llama3-8b]})"
grep -vE "^bench: " "$OUT/bench_llama3-8b.log" 2>/dev/null | tail -30
