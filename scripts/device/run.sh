#!/usr/bin/env bash
# run.sh - runs THERE (GPU machine, repo root, $OUT set), after prepare.sh
# here and its three carries (see prepare.sh).  Unpacks the carried .debs
# into /tmp/ssroot and links in only the libraries the machine lacks, then:
# nvidia-smi, the device tests, `safesteer bench` for the llama3-8b and
# smollm2-135m shapes (JSON to $OUT), the demo sweep on --device cuda and
# cpu (with the model), compute-sanitizer memcheck on the kernel tests
# (skipped when the run is already past 170 s), and a summary LAST.
# Budget: under 4 minutes (about 3 expected; each step has its own timeout).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ss_out}
mkdir -p "$OUT"
t_start=$(date +%s)
elapsed() { echo $(( $(date +%s) - t_start )); }

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
head -15 "$OUT/nvidia-smi.txt"

# ---- device tests (Criterion; one job so GPU logs stay in order)
declare -A rc
declare -A limit=([test_cuda_kernels]=90 [test_cuda_engine]=100 [test_cuda_capture]=60)
for t in $tests; do
    timeout "${limit[$t]}" build-device/$t --jobs 1 --verbose=1 >"$OUT/$t.log" 2>&1
    rc[$t]=$?
    echo "$t rc=${rc[$t]} at $(elapsed) s"
done

# ---- benchmarks (before memcheck: they matter most if time runs short)
timeout 120 build-device/safesteer bench --device cuda --shape llama3-8b --prompt-len 512 \
    --batches 1,8,32 --steps 32 --json "$OUT/bench_llama3-8b.json" >"$OUT/bench_llama3-8b.txt" 2>&1
rc_b1=$?
echo "bench llama3-8b rc=$rc_b1 at $(elapsed) s"
timeout 50 build-device/safesteer bench --device cuda --shape smollm2-135m --prompt-len 512 \
    --batches 1,8,32 --steps 32 --json "$OUT/bench_smollm2-135m.json" \
    >"$OUT/bench_smollm2-135m.txt" 2>&1
rc_b2=$?
echo "bench smollm2-135m rc=$rc_b2 at $(elapsed) s"

# ---- the demo sweep end to end on both engines (model needed): outputs in
# /tmp, only the summaries are printed (few files come back from $OUT)
rc[sweep_cuda]=skip
rc[sweep_cpu]=skip
if [ -n "${SAFESTEER_MODEL:-}" ]; then
    for dev in cuda cpu; do
        rm -rf "/tmp/sweep_$dev"
        timeout 60 build-device/safesteer sweep experiments/demo.yaml --device "$dev" \
            --out "/tmp/sweep_$dev" >"/tmp/sweep_$dev.log" 2>&1
        rc[sweep_$dev]=$?
        echo "sweep --device $dev rc=${rc[sweep_$dev]} at $(elapsed) s"
    done
fi

# ---- memcheck on the kernel tests: everything but the matmul sweeps, then
# the new tensor-core matvec (v1 and cuBLAS were memcheck-clean on
# 2026-11-28 and are unchanged)
rc_m=skip
rc_mm=skip
if [ "$(elapsed)" -lt 170 ]; then
    timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 \
        build-device/test_cuda_kernels --jobs 1 --filter '!(*matmul*)' >"$OUT/memcheck.log" 2>&1
    rc_m=$?
fi
if [ "$(elapsed)" -lt 200 ]; then
    timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 \
        build-device/test_cuda_kernels --jobs 1 --filter '*matmul_mma*' \
        >"$OUT/memcheck_matmul.log" 2>&1
    rc_mm=$?
fi

# ---- summary (last, so the reply's tail holds it)
synth() { grep -h "Synthesis" "$1" 2>/dev/null | tail -1; }
errsum() { grep -h 'ERROR SUMMARY' "$1" 2>/dev/null | sort | uniq -c | tr '\n' ' '; }
echo
echo "==================== safesteer device run summary ($(elapsed) s)"
grep -m1 -o "NVIDIA [A-Za-z0-9 ]*" "$OUT/nvidia-smi.txt" 2>/dev/null
for t in $tests; do
    printf '%-26s rc=%-4s %s\n' "$t" "${rc[$t]}" "$(synth "$OUT/$t.log")"
done
printf '%-26s rc=%-4s %s\n' memcheck "$rc_m" "$(errsum "$OUT/memcheck.log")"
printf '%-26s rc=%-4s %s\n' memcheck_matmul_mma "$rc_mm" "$(errsum "$OUT/memcheck_matmul.log")"
for t in $tests; do
    grep -hE "\[FAIL\]|\[----\].*(Assertion|failed|err)|diverged|SKIP" "$OUT/$t.log" | head -8
done
# CPU/CUDA agreement against the bf16 budget (docs/testing.md)
grep -h "KL(CPU || CUDA)" "$OUT"/test_cuda_capture.log 2>/dev/null | head -8
awk '/worst row relative L2/ { if ($NF > m) { m = $NF; w = $0 } } END { if (w) print "largest: " w }' \
    "$OUT"/test_cuda_capture.log 2>/dev/null
echo "--- demo sweep: cell, category, layer, strength, unsafe, refusal, perplexity (cuda | cpu)"
echo "rc: cuda ${rc[sweep_cuda]}, cpu ${rc[sweep_cpu]}"
for dev in cuda cpu; do
    case ${rc[sweep_$dev]} in 0 | skip) ;; *) tail -n 3 "/tmp/sweep_$dev.log" ;; esac
    [ -f "/tmp/sweep_$dev/summary.csv" ] || echo "cell,category,layer,strength,-,-,-" >"/tmp/sweep_$dev.none"
done
paste -d'|' <(cut -d, -f1,2,4,5,8,9,10 /tmp/sweep_cuda/summary.csv 2>/dev/null || cat /tmp/sweep_cuda.none) \
    <(cut -d, -f8,9,10 /tmp/sweep_cpu/summary.csv 2>/dev/null || echo "-") | head -15
echo "--- bench smollm2-135m (rc=$rc_b2)"
grep -A4 "^  targets:" "$OUT/bench_smollm2-135m.txt" | tail -4
grep -E "^  (1|8|32) " "$OUT/bench_smollm2-135m.txt" | head -6
echo "--- bench llama3-8b (rc=$rc_b1)"
grep -vE "^bench: " "$OUT/bench_llama3-8b.txt" | tail -32
