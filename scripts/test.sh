#!/usr/bin/env bash
# Builds safesteer and runs every test: Criterion (C, through ctest; device
# tests print a SKIP line without a GPU), pytest (tests/python), then the C
# tests again under ASan + UBSan and a 20 s run of every fuzz target
# (scripts/sanitize.sh; SAFESTEER_NO_SANITIZE=1 skips that part).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${SAFESTEER_BUILD:-$repo/build}
"$repo/scripts/setup.sh"
export PATH="$repo/.venv/bin:$PATH"   # the Python packages setup.sh installed
export SAFESTEER_BIN=$build/safesteer
# Spinning OpenMP waits starve the tests that run side by side (docs/cpu-engine.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
(cd "$build" && ctest --output-on-failure -j"$(nproc)")
# ctest lists the device tests as skipped on a machine without a GPU; say why
grep -h "^SKIP: no CUDA device" "$build/Testing/Temporary/LastTest.log" | sort -u |
    sed 's/^/device tests: /' || true
[ -e "$build/test_cuda_kernels" ] || echo "device tests: not built (CMake found no CUDA compiler)"
python3 -m pytest -q "$repo/tests/python"
[ "${SAFESTEER_NO_SANITIZE:-0}" = 1 ] || "$repo/scripts/sanitize.sh"
