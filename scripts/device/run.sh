#!/usr/bin/env bash
# run.sh - runs THERE (GPU machine, repo root, $OUT set), after prepare.sh
# here:  carry [build-device, .device], command `bash scripts/device/run.sh`.
# Unpacks the carried .debs into /tmp/ssroot and links in only the
# libraries the machine lacks, then: nvidia-smi, the device tests, the
# kernel tests under compute-sanitizer memcheck, `safesteer bench` for the
# llama3-8b and smollm2-135m shapes (JSON to $OUT), and a summary LAST.
# Budget: under 6 minutes (each step has its own timeout).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/ss_out}
mkdir -p "$OUT"
t_start=$(date +%s)

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
for b in build-device/safesteer build-device/test_cuda_kernels build-device/test_cuda_engine; do
    ldd "$b" | grep "not found" | sed "s|^|$b: |" | tee -a "$OUT/env.txt"
done

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
head -15 "$OUT/nvidia-smi.txt"

# ---- device tests (Criterion; one job so GPU logs stay in order)
timeout 90 build-device/test_cuda_kernels --jobs 1 --verbose=1 >"$OUT/test_cuda_kernels.log" 2>&1
rc_k=$?
timeout 110 build-device/test_cuda_engine --jobs 1 --verbose=1 >"$OUT/test_cuda_engine.log" 2>&1
rc_e=$?

# ---- memcheck on the kernel tests, in two runs so that a slow cuBLAS sweep
# under the sanitizer cannot starve the other kernels of their check
timeout 80 compute-sanitizer --tool memcheck --error-exitcode 9 \
    build-device/test_cuda_kernels --jobs 1 --filter '!(*matmul*)' >"$OUT/memcheck.log" 2>&1
rc_m=$?
timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 \
    build-device/test_cuda_kernels --jobs 1 --filter '*matmul*' >"$OUT/memcheck_matmul.log" 2>&1
rc_mm=$?

# ---- benchmarks
timeout 100 build-device/safesteer bench --device cuda --shape llama3-8b --prompt-len 512 \
    --batches 1,8,32 --steps 32 --json "$OUT/bench_llama3-8b.json" >"$OUT/bench_llama3-8b.txt" 2>&1
rc_b1=$?
timeout 40 build-device/safesteer bench --device cuda --shape smollm2-135m --prompt-len 512 \
    --batches 1,8,32 --steps 32 --json "$OUT/bench_smollm2-135m.json" \
    >"$OUT/bench_smollm2-135m.txt" 2>&1
rc_b2=$?

# ---- summary (last, so the reply's tail holds it)
synth() { grep -h "Synthesis" "$1" 2>/dev/null | tail -1; }
echo
echo "==================== safesteer device run summary ($(( $(date +%s) - t_start )) s)"
grep -m1 -o "NVIDIA [A-Za-z0-9 ]*" "$OUT/nvidia-smi.txt" 2>/dev/null
printf '%-26s rc=%-4s %s\n' test_cuda_kernels "$rc_k" "$(synth "$OUT/test_cuda_kernels.log")"
printf '%-26s rc=%-4s %s\n' test_cuda_engine "$rc_e" "$(synth "$OUT/test_cuda_engine.log")"
printf '%-26s rc=%-4s %s\n' memcheck "$rc_m" "$(grep -h 'ERROR SUMMARY' "$OUT/memcheck.log" | sort | uniq -c | tr '\n' ' ')"
printf '%-26s rc=%-4s %s\n' memcheck_matmul "$rc_mm" "$(grep -h 'ERROR SUMMARY' "$OUT/memcheck_matmul.log" | sort | uniq -c | tr '\n' ' ')"
for f in "$OUT/test_cuda_kernels.log" "$OUT/test_cuda_engine.log"; do
    grep -hE "\[FAIL\]|\[----\].*(Assertion|failed|err)|diverged|SKIP" "$f" | head -12
done
echo "--- bench llama3-8b (rc=$rc_b1)"
grep -vE "^bench: creating" "$OUT/bench_llama3-8b.txt" | tail -14
echo "--- bench smollm2-135m (rc=$rc_b2)"
grep -vE "^bench: creating" "$OUT/bench_smollm2-135m.txt" | tail -14
