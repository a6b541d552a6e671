#!/usr/bin/env bash
# prepare.sh - runs HERE (no GPU): builds the CUDA engine, tests and CLI for
# sm_90 into build-device/, and downloads the runtime .debs the GPU machine
# lacks into .device/debs/ (both git-ignored).  The lead then runs
#   device run: carry [build-device, .device], command `bash scripts/device/run.sh`
# Every shared library the device binaries load (ldd, transitively) is mapped
# to its Debian package; libc, libstdc++/libgcc and CUDA's own libraries are
# left to the GPU machine.  run.sh links in only those the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

cmake -S "$root" -B "$root/build-device" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
cmake --build "$root/build-device" -j"$(nproc)" \
    --target safesteer_cli test_cuda_kernels test_cuda_engine
bins="build-device/safesteer build-device/test_cuda_kernels build-device/test_cuda_engine"

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

# object files are not needed there; keep what travels small
find build-device -name '*.o' -delete
du -sh .device/debs build-device
total=$(du -sm .device build-device | awk '{s += $1} END {print s}')
echo "prepare: ${total} MB to carry (limit 64 MiB)"
[ "$total" -lt 62 ] || { echo "prepare: too large to carry" >&2; exit 1; }
