#!/usr/bin/env bash
# Builds safesteer and runs every test: Criterion (C, through ctest; device
# tests print a SKIP line without a GPU) and pytest (tests/python).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${SAFESTEER_BUILD:-$repo/build}
"$repo/scripts/setup.sh"
export SAFESTEER_BIN=$build/safesteer
(cd "$build" && ctest --output-on-failure -j"$(nproc)")
python3 -m pytest -q "$repo/tests/python"
