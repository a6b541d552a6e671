#!/usr/bin/env bash
# prepare.sh - runs HERE (no GPU): builds the CUDA engine, tests and CLI for
# sm_90 into build-device/, downloads the runtime .debs the GPU machine
# lacks into .device/debs/, and splits the default model into
# .devmodel/part* (all git-ignored).  One carry holds at most 64 MiB, and
# carried ignored paths stay on a warm machine, so the device tool is
# called three times in a row (each within the machine's idle window):
#   carry [.devmodel/part00]                 command `true`
#   carry [.devmodel/part01, .device]        command `true`
#   carry [build-device]                     command `bash scripts/device/run.sh`
# run.sh reassembles the model when its parts are there and checks it
# against .device/model.sha256.
# Every shared library the device binaries load (ldd, transitively) is mapped
# to its Debian package; libc, libstdc++/libgcc and CUDA's own libraries are
# left to the GPU machine.  run.sh links in only those the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

cmake -S "$root" -B "$root/build-device" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build "$root/build-device" -j"$(nproc)" \
    --target safesteer_cli test_cuda_kernels test_cuda_engine test_cuda_capture bench_cuda_variants
bins="build-device/safesteer build-device/test_cuda_kernels build-device/test_cuda_engine"
bins="$bins build-device/test_cuda_capture build-device/bench_cuda_variants"

# packages of every non-system library the binaries need
pkgs=""
for lib in $(ldd $bins | awk '/=> \//{print $3}' | sort -u); do
    case $(basename "$lib") in
    libc.so* | libm.so* | libpthread* | libdl.so* | librt.so* | libresolv* | ld-linux* | \
        libgcc_s* | libstdc++* | libcublas* | libcudart* | libcuda.so*) continue ;;
    esac
    owner=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null ||
        dpkg -S "${lib#/usr}" 2>/dev/null || true)
    if [ -z "$owner" ]; then
        echo "prepare: no Debian package owns $lib" >&2
        exit 1
    fi
    pkgs="$pkgs ${owner%%:*}"
done
pkgs=$(echo $pkgs | tr ' ' '\n' | sort -u | tr '\n' ' ')
echo "prepare: packages: $pkgs"

rm -rf .device/debs
mkdir -p .device/debs
(cd .device/debs && apt-get download $pkgs >/dev/null)

# check: every library ldd resolved is inside the unpacked debs (or skipped)
scratch=$(mktemp -d)
for f in .device/debs/*.deb; do dpkg -x "$f" "$scratch"; done
missing=0
for lib in $(ldd $bins | awk '/=> \//{print $3}' | sort -u); do
    b=$(basename "$lib")
    case $b in
    libc.so* | libm.so* | libpthread* | libdl.so* | librt.so* | libresolv* | ld-linux* | \
        libgcc_s* | libstdc++* | libcublas* | libcudart* | libcuda.so*) continue ;;
    esac
    if [ -z "$(find "$scratch" -name "$b" -print -quit)" ]; then
        echo "prepare: $b not in the downloaded debs" >&2
        missing=1
    fi
done
rm -rf "$scratch"
[ $missing = 0 ] || exit 1

# the public prompt sets experiments/gpu-throughput.yaml reads (run.sh points
# the config at this copy)
rm -rf .device/data
mkdir -p .device/data
cp "$root/../shared/data/catqa_en.jsonl" "$root/../shared/data/alpaca_instructions.jsonl" \
    .device/data/

# object files, static libraries and CMake's probe builds are not needed
# there; keep what travels small (the next prepare rebuilds them)
find build-device -name '*.o' -delete
find build-device -maxdepth 1 -name '*.a' -delete
rm -rf build-device/CMakeFiles/CheckCUDA build-device/CMakeFiles/hdf5
find build-device/CMakeFiles -path '*CompilerId*' \( -name 'a.out' -o -name tmp \) -prune \
    -exec rm -rf {} +
find build-device/CMakeFiles -name 'CMakeDetermineCompilerABI_*.bin' -delete
du -sh .device/debs build-device
total=$(du -sm .device build-device | awk '{s += $1} END {print s}')
echo "prepare: ${total} MB to carry (limit 48 MB: the model travels separately)"
[ "$total" -le 48 ] || { echo "prepare: too large to carry" >&2; exit 1; }

# the default model in parts under the carry limit, with its checksum
model=${SAFESTEER_MODEL:-${SAFESTEER_CACHE:-$HOME/.cache/safesteer}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
rm -rf .devmodel .device/model.sha256
if [ -f "$model" ]; then
    mkdir -p .devmodel
    split -b 62000000 -d "$model" .devmodel/part
    sha256sum <"$model" | cut -d' ' -f1 >.device/model.sha256
    ls .devmodel/part?? | sed 's|^|prepare: model part |'
else
    echo "prepare: no model at $model; the default-model device tests will skip" >&2
fi
