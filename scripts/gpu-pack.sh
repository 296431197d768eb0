#!/usr/bin/env bash
# scripts/gpu-pack.sh — builds tensorplug with the CUDA backend on this
# (development) machine and packs what scripts/gpu-check.sh needs on a GPU
# machine into one git-ignored folder, .gpu/ (or the folder given):
#
#   .gpu/tensorplug-gpu.tar.xz   the build (CLI, core, plugins, the test
#                                programs gpu-check.sh runs), the shared
#                                libraries none of which a CUDA + PyTorch
#                                machine has (GLib, json-glib, OpenBLAS with
#                                its Fortran and OpenMP runtimes, the Vulkan
#                                loader when the Vulkan plugin is built), from
#                                the Debian packages (apt-get download, dpkg
#                                -x), and the test fixtures of ../shared
#   .gpu/MANIFEST                what is in it, from which commit and packages
#
# The GPU machine has CUDA and PyTorch but none of our apt packages and no
# network, and what travels there is at most 64 MiB: the tarball is checked
# against that. The build lives at the same absolute path on both machines
# ($TP_GPU_ROOT, default /tmp/tensorplug-gpu): test programs find plugins
# and the CLI through the build folder they were compiled in.
#
# Usage: bash scripts/gpu-pack.sh [PACK_DIR]     (then, there: bash scripts/gpu-check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
pack=${1:-.gpu}
root=${TP_GPU_ROOT:-/tmp/tensorplug-gpu}
build=$root/build
shared=${TP_SHARED_DIR:-$repo/../shared}
limit=$((64 * 1024 * 1024))
say() { echo "gpu-pack: $*" >&2; }
die() { say "error: $*"; exit 1; }

command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] ||
  die "nvcc not found: the CUDA toolkit must be installed here (put /usr/local/cuda/bin on PATH)"
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
[ -d "$shared/reference" ] || die "$shared/reference not found: set TP_SHARED_DIR"

# ---- build (release, CUDA required) ----
if [ -f "$build/build.ninja" ]; then
  meson configure "$build" -Dbuildtype=release -Dcuda=enabled >/dev/null
else
  rm -rf "$build"
  meson setup "$build" "$repo" -Dbuildtype=release -Dcuda=enabled >/dev/null
fi
say "building in $build"
nice -n 10 ninja -C "$build" -j "${TP_JOBS:-2}" >&2

# ---- stage ----
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/build" "$stage/lib" "$stage/shared"
copy_build() { # relative paths under $build (globs), kept as they are (symlinks too)
  for rel in "$@"; do
    for f in $build/$rel; do
      [ -e "$f" ] && [ ! -d "$f" ] || continue
      mkdir -p "$stage/build/$(dirname "${f#$build/}")"
      cp -a "$f" "$stage/build/${f#$build/}"
    done
  done
}
copy_build cli/tensorplug 'core/libtensorplug.so*' 'plugins/cpu/*.so' 'plugins/cuda/*.so' \
  'plugins/vulkan/*.so' 'plugins/vulkan/*.spv' 'models/*.so' 'tests/*.so' \
  tests/test_backend_ops tests/test_backend_train tests/test_models tests/test_backend_curve \
  tests/test_cuda_plugin tests/test_cuda_host tests/test_vulkan_plugin
[ -f "$stage/build/plugins/cuda/libtp_backend_cuda.so" ] || die "the CUDA plugin was not built"
for t in test_backend_curve test_cuda_plugin test_models; do
  [ -x "$stage/build/tests/$t" ] || die "tests/$t was not built"
done

# ---- shared libraries: what the build needs beyond glibc, libstdc++ and
# libgcc, from the Debian packages installed here ----
declare -A need=()
while read -r so path; do
  case "$so" in
  libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | librt.so.* | ld-linux* | \
    libstdc++.so.* | libgcc_s.so.* | libtensorplug.so.* | libcuda.so.*) ;;
  *) [ -n "$path" ] && need[$so]=$path ;;
  esac
done < <(find "$stage/build" -type f \( -name '*.so*' -o -perm -u+x \) -print0 |
  xargs -0 -n1 sh -c 'ldd "$0" 2>/dev/null' |
  awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u)
debs=$(mktemp -d)
declare -A pkgs=()
for so in "${!need[@]}"; do
  real=$(readlink -f "${need[$so]}")
  pkg=$(dpkg -S "$real" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null ||
        dpkg -S "/usr$real" 2>/dev/null || true)
  pkg=${pkg%%:*}
  [ -n "$pkg" ] || die "no Debian package owns $real ($so)"
  pkgs[$pkg]=1
done
(cd "$debs" && for p in "${!pkgs[@]}"; do
  v=$(dpkg-query -W -f='${Version}' "$p")
  apt-get download -q "$p=$v" >&2 || die "apt-get download $p=$v failed (network?)"
done)
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$debs/x"; done
for so in "${!need[@]}"; do
  f=$(find "$debs/x" -name "$so" \( -type f -o -type l \) | head -1)
  [ -n "$f" ] || die "$so is not in the downloaded packages"
  cp -L "$f" "$stage/lib/$so"
done
rm -rf "$debs"

# ---- fixtures ----
cp -a "$shared/reference" "$stage/shared/"
for m in bert-base-uncased distilbert-base-uncased; do
  mkdir -p "$stage/shared/data/$m"
  cp "$shared/data/$m/vocab.txt" "$shared/data/$m/config.json" "$stage/shared/data/$m/"
done

# ---- manifest and tarball ----
{
  echo "build_root=$build"
  echo "commit=$(git -C "$repo" rev-parse HEAD)$(git -C "$repo" diff --quiet HEAD || echo '+changes')"
  echo "made=$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(nvcc --version | tail -1)"
  for p in "${!pkgs[@]}"; do echo "package=$p $(dpkg-query -W -f='${Version}' "$p")"; done | sort
  (cd "$stage" && find . -type f | sort | sed 's/^/file=/')
} >"$stage/MANIFEST"
mkdir -p "$pack"
cp "$stage/MANIFEST" "$pack/MANIFEST"
say "compressing"
tar -C "$stage" -cf - . | xz -T2 -6 >"$pack/tensorplug-gpu.tar.xz"
size=$(stat -c %s "$pack/tensorplug-gpu.tar.xz")
[ "$size" -le "$limit" ] || die "$pack/tensorplug-gpu.tar.xz is $size bytes, over 64 MiB"
say "$pack/tensorplug-gpu.tar.xz: $((size / 1024 / 1024)) MiB ($(grep -c '^file=' "$pack/MANIFEST") files, ${#need[@]} libraries from ${#pkgs[@]} packages)"
