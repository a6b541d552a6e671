#!/usr/bin/env bash
# The main job on the default model: sets up, builds, runs the demo sweep
# (experiments/demo.yaml: SmolLM2-135M-Instruct on the CPU, two harm
# categories, two layers x three strengths plus the no-steering baseline) into
# runs/demo/, and writes its HTML report.  Rerunning resumes: finished cells
# are kept.  Extra arguments go to `safesteer sweep` (e.g. --threads 2).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${SAFESTEER_BUILD:-$repo/build}
out=${SAFESTEER_DEMO_OUT:-$repo/runs/demo}
"$repo/scripts/setup.sh"
export PATH="$repo/.venv/bin:$PATH"   # the Python packages setup.sh installed
"$build/safesteer" sweep "$repo/experiments/demo.yaml" --out "$out" --resume "$@"
"$build/safesteer" report "$out" --out "$out/report.html"
echo "demo: $out/summary.csv, $out/results.h5, $out/generations.jsonl, $out/report.html"
