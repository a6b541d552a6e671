#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz, each for a bounded time, and fails
# on the first sanitizer report, crash, hang (> 10 s) or oracle rejection.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]   (default: every target, 20 s)
#
#   SAFESTEER_SANITIZE_BUILD  build folder (default <repo>/build-sanitize), made by
#                             scripts/sanitize.sh --build-only if it has no fuzzers
#
# Seed corpora come from tests/fuzz/make_seeds.py (regenerated when it
# changes); what the fuzzers find grows in BUILD/fuzz-corpus/TARGET and a
# failing input is kept in BUILD/fuzz-artifacts/TARGET/ (replay it with
# BUILD/tests/fuzz/fuzz_TARGET FILE).  J targets run side by side at nice 10.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${SAFESTEER_SANITIZE_BUILD:-$repo/build-sanitize}
seconds=20 jobs=1 targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --seconds) seconds=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(gguf hf_model tokenizer_json tokenize sweep_config dataset capture vectors)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

[ -x "$build/tests/fuzz/fuzz_gguf" ] || "$repo/scripts/sanitize.sh" --build-only
py=$repo/.venv/bin/python3
[ -x "$py" ] || py=python3
seeds=$build/fuzz-seeds
if [ ! -f "$seeds/.made" ] || [ "$repo/tests/fuzz/make_seeds.py" -nt "$seeds/.made" ]; then
    rm -rf "$seeds"
    "$py" "$repo/tests/fuzz/make_seeds.py" --out "$seeds" >/dev/null
    touch "$seeds/.made"
fi
# fuzz_tokenize: the default model's tokenizer and the seeds' three small ones
export SS_FUZZ_TOKENIZERS=${SS_FUZZ_TOKENIZERS:-default:$seeds/tokenizers/byte-level.gguf:$seeds/tokenizers/spm.gguf:$seeds/tokenizers/spm-json}

run_one() {
    local t=$1 corpus=$build/fuzz-corpus/$1 art=$build/fuzz-artifacts/$1 log=$build/fuzz-logs/$1.log
    mkdir -p "$corpus" "$art" "$(dirname "$log")"
    # -timeout: a hang is an input taking over 10 s; -max_len: the largest seed is ~100 KB
    if ! nice -n 10 "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 -artifact_prefix="$art/" \
        "$corpus" "$seeds/$t" >"$log" 2>&1; then
        echo "fuzz: $t FAILED (log: $log)" >&2
        grep -E "ERROR|oracle|SUMMARY|Test unit written" "$log" | head -8 >&2
        return 1
    fi
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $t clean: $runs executions in ${seconds} s"
}

fail=0 running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || fail=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || fail=1
    running=$((running - 1))
done
exit $fail
