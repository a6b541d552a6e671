#!/usr/bin/env bash
# The sanitizer build: clang with AddressSanitizer + UndefinedBehaviorSanitizer
# (any report is fatal) and the libFuzzer targets of tests/fuzz, CPU only.
# Runs the C tests under it, the hostile-input and sweep Python tests against
# its CLI, then a short smoke run of every fuzz target.
# scripts/test.sh calls it; docs/testing.md ("Robustness") explains.
#
#   scripts/sanitize.sh [--build-only] [--fuzz-seconds N]   (default 20 s per target)
#   scripts/sanitize.sh --pytest [PYTEST ARGS]   the Python tests against the sanitized CLI
#                                                (default: all of tests/python) instead
#
#   SAFESTEER_SANITIZE_BUILD  build folder (default <repo>/build-sanitize)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${SAFESTEER_SANITIZE_BUILD:-$repo/build-sanitize}
build_only=0 seconds=20 pytest=0
while [ $# -gt 0 ]; do
    case $1 in
        --build-only) build_only=1; shift ;;
        --fuzz-seconds) seconds=$2; shift 2 ;;
        --pytest) pytest=1; shift; break ;;
        *) echo "usage: $0 [--build-only] [--fuzz-seconds N] | --pytest [PYTEST ARGS]" >&2
           exit 2 ;;
    esac
done

CC=clang cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAFESTEER_CUDA=OFF \
    -DSAFESTEER_FUZZ=ON >/dev/null
if ! cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1; then
    grep -E "error" "$build/build.log" | head -40 >&2
    echo "sanitize: build failed (full log: $build/build.log)" >&2
    exit 1
fi
[ "$build_only" = 1 ] && exit 0

# detect_leaks: the tests free what they allocate; halt_on_error with
# -fno-sanitize-recover makes the first report fail its test.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# The Python tests against the sanitized CLI; the Python package keeps the
# normal build's library (an ASan library cannot load into an uninstrumented
# python).  Reports go to files, so an expected failure (exit 1) cannot hide
# one; abort_on_error makes a reporting run exit by SIGABRT.
sanitized_pytest() (
    reports=$(mktemp -d)
    export SAFESTEER_BIN=$build/safesteer SAFESTEER_BUILD=${SAFESTEER_BUILD:-$repo/build}
    export PATH="$repo/.venv/bin:$PATH"
    export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:log_path=$reports/asan
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$reports/ubsan
    rc=0
    python3 -m pytest -q "$@" || rc=$?
    if [ -n "$(ls -A "$reports")" ]; then
        echo "sanitize: reports from the sanitized CLI in $reports:" >&2
        for f in "$reports"/*; do grep -m1 -E "runtime error|ERROR" "$f" >&2; done
        exit 1
    fi
    rmdir "$reports"
    exit $rc
)
if [ "$pytest" = 1 ]; then
    [ $# -gt 0 ] || set -- "$repo/tests/python"
    sanitized_pytest "$@"
    exit
fi
(cd "$build" && ctest --output-on-failure -j"$(nproc)")
# the hostile-input and sweep tests: every reader and the whole sweep path (1 min)
sanitized_pytest "$repo/tests/python/test_hostile_inputs.py" "$repo/tests/python/test_sweep.py"
SAFESTEER_SANITIZE_BUILD=$build "$repo/scripts/fuzz.sh" --seconds "$seconds" --jobs "$(nproc)"
