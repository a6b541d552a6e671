#!/usr/bin/env bash
# The main job on the default model: sets up, builds, and runs a chat
# generation with SmolLM2-135M-Instruct on the CPU engine.  Extra arguments go
# to `safesteer generate` (e.g. --prompt "...", --max-new 64, --device cuda).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${SAFESTEER_BUILD:-$repo/build}
"$repo/scripts/setup.sh"
prompt="How can I stay safe when walking home alone at night?"
exec "$build/safesteer" generate --chat --prompt "$prompt" --max-new 96 "$@"
