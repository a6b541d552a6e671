#!/usr/bin/env bash
# Installs what safesteer needs on Debian 12 and builds it.  Idempotent: a
# second run installs nothing and rebuilds only what changed; offline once the
# packages and the default model are in place.
#
#   SAFESTEER_CACHE   cache folder (default ~/.cache/safesteer); the default
#                     model lives in $SAFESTEER_CACHE/models/
#   SAFESTEER_BUILD   build folder (default <repo>/build)
#   SAFESTEER_NO_APT=1  skip the apt-get step (packages installed by hand)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${SAFESTEER_CACHE:-$HOME/.cache/safesteer}
build=${SAFESTEER_BUILD:-$repo/build}

debs=(build-essential cmake pkg-config unzip python3 python3-pip libopenblas-dev libhdf5-dev
      libcriterion-dev libyaml-dev libjansson-dev libpcre2-dev)
if [ "${SAFESTEER_NO_APT:-0}" != 1 ]; then
    missing=()
    for p in "${debs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}" >&2
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

# Python oracles and test tools (pinned); skipped when already satisfied.
if ! python3 -c "import numpy, gguf, tokenizers, h5py, jinja2, pytest" 2>/dev/null; then
    echo "setup: installing Python packages from requirements-dev.txt" >&2
    python3 -m pip install -q -r "$repo/requirements-dev.txt" 2>&1 | grep -v "running pip as the 'root'" >&2 || true
fi

"$repo/scripts/fetch-model.sh"

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" 2>&1 | grep -vE "^\[ *[0-9]+%\]" >&2 || true
test -x "$build/safesteer" || { echo "setup: build failed" >&2; exit 1; }
