#!/usr/bin/env bash
# Prepares a GPU lease: builds here what scripts/gpu-check.sh runs (lib, glmvoice-bench and
# three test binaries, CUDA enabled, no GStreamer) against the venv's torch wheel, and packs it
# with the shared libraries and Debian .debs a bare GPU box may lack, and the fixtures:
#
#   scripts/gpu-pack.sh [DIR]          (default .gpucarry; kept out of git by .git/info/exclude)
#
# On the GPU box (same torch wheel version; its own torch is used at run time):
#   GPU_CHECK_PREBUILT=DIR/build GLMVOICE_FIXTURES=DIR/fixtures scripts/gpu-check.sh   (no build there)
#   GPU_CHECK_DEBS=DIR/debs GLMVOICE_FIXTURES=DIR/fixtures scripts/gpu-check.sh        (build there)
# Why both: a GPU lease is short; building there spends it on compiling, but proves the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR="${1:-.gpucarry}"
BUILD="$ROOT/build-cuda"
TORCH=$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/torch | head -n1)
TARGETS=(lib/libglmvoice.so tools/glmvoice-bench tests/precision/test_cuda_parity
         tests/lib/llm/test_llm_sampler tests/precision/test_quantized)

grep -qx "/$DIR/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/$DIR/" >> .git/info/exclude; }
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" --buildtype=release -Dgstreamer=disabled -Dcuda=enabled -Dlibtorch="$TORCH"
fi
ninja -C "$BUILD" "${TARGETS[@]}"

rm -rf "$DIR"
mkdir -p "$DIR/build/deps" "$DIR/debs"
for t in "${TARGETS[@]}"; do
  mkdir -p "$DIR/build/$(dirname "$t")"
  cp "$BUILD/$t" "$DIR/build/$t"
done
strip --strip-debug "$DIR"/build/lib/*.so "$DIR"/build/tools/* "$DIR"/build/tests/*/* "$DIR"/build/tests/*/*/* 2>/dev/null || true
python3 -c 'import sys; print(sys.argv[1])' "$(grep -o "__version__ = '[^']*'" "$TORCH/version.py" | cut -d"'" -f2)" \
  > "$DIR/build/TORCH_VERSION"
# Shared libraries outside torch that the binaries link (Debian's yaml-cpp 0.7, PCRE2).
for lib in libyaml-cpp.so.0.7 libpcre2-8.so.0; do
  cp -L "/lib/x86_64-linux-gnu/$lib" "$DIR/build/deps/"
done
# The build prerequisites as .debs, for a build on the GPU box (GPU_CHECK_DEBS).
(cd "$DIR/debs" && apt-get download nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 libpcre2-dev \
  libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libgtest-dev pkgconf pkgconf-bin libpkgconf3 \
  >/dev/null 2>&1) || echo "gpu-pack: apt-get download failed: no .debs (GPU_CHECK_DEBS will not work)"
FIX="${GLMVOICE_FIXTURES:-$(cd "$ROOT/.." && pwd)/shared/fixtures}"
[ -d "$FIX" ] && cp -r "$FIX" "$DIR/fixtures"
du -sh "$DIR"
echo "gpu-pack: $DIR ready; run with carry [\"$DIR\"]"
