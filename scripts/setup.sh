#!/usr/bin/env bash
# Installs what safesteer needs on Debian 12 and builds it.  Idempotent: a
# second run installs nothing and rebuilds only what changed; offline once the
# packages and the default model are in place.
#
#   SAFESTEER_CACHE   cache folder (default ~/.cache/safesteer); the default
#                     model lives in $SAFESTEER_CACHE/models/
#   SAFESTEER_BUILD   build folder (default <repo>/build)
#   SAFESTEER_NO_APT=1  skip the apt-get step (packages installed by hand)
#
# Python packages go into <repo>/.venv (it also sees the system's packages):
# Debian's own python3 refuses pip installs outside a virtual environment.
# scripts/test.sh and scripts/demo.sh put .venv/bin first on PATH.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${SAFESTEER_CACHE:-$HOME/.cache/safesteer}
build=${SAFESTEER_BUILD:-$repo/build}

# slurm-wlm and munge: the Slurm array test (tests/python/test_slurm.py) starts its own
# daemons on loopback; chromium: the report's screenshot and layout test; clang, its
# sanitizer/libFuzzer runtimes and OpenMP: the sanitizer build (scripts/sanitize.sh).
debs=(build-essential cmake pkg-config unzip python3 python3-pip python3-venv libopenblas-dev libhdf5-dev
      libcriterion-dev libyaml-dev libjansson-dev libpcre2-dev slurm-wlm munge chromium
      clang libclang-rt-14-dev libomp-dev)
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

venv=$repo/.venv
[ -x "$venv/bin/python3" ] || python3 -m venv --system-site-packages "$venv"
export PATH="$venv/bin:$PATH"

# Python oracles, test tools and the analysis package's needs, pinned; pip runs
# only when an installed version differs from requirements-dev.txt.
if ! python3 - "$repo/requirements-dev.txt" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        try:
            assert version(name) == want
        except (PackageNotFoundError, AssertionError):
            sys.exit(1)
PY
then
    echo "setup: installing Python packages from requirements-dev.txt" >&2
    python3 -m pip install -q -r "$repo/requirements-dev.txt"
fi

"$repo/scripts/fetch-model.sh"

cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if ! cmake --build "$build" -j"$(nproc)" >"$build/build.log" 2>&1; then
    grep -E "error|Error" "$build/build.log" | head -40 >&2
    echo "setup: build failed (full log: $build/build.log)" >&2
    exit 1
fi
grep -E "warning:" "$build/build.log" >&2 || true
