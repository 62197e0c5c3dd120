#!/usr/bin/env bash
# Idempotent setup: Debian packages, a project venv with the pinned torch wheel,
# then configure + build into build/. Safe to run again; skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${GLMVOICE_TORCH_VERSION:-2.11.*}"
APT_PACKAGES=(
  build-essential libgtest-dev meson ninja-build pkg-config python3-venv
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  libpcre2-dev nlohmann-json3-dev libyaml-cpp-dev
  espeak-ng sox python3-gi gir1.2-gstreamer-1.0
  # web demo (glmvoice-web): WebRTC (webrtcbin + libnice), Opus, libsoup 3
  gstreamer1.0-plugins-bad gstreamer1.0-nice libgstreamer-plugins-bad1.0-dev libsoup-3.0-dev
  python3-websocket
)
# Only for the web demo's browser test (tests/web), which skips with the reason without it.
OPTIONAL_APT_PACKAGES=(chromium)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

optional_missing=()
for p in "${OPTIONAL_APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || optional_missing+=("$p")
done
if [ ${#optional_missing[@]} -gt 0 ]; then
  echo "setup: installing optional Debian packages: ${optional_missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${optional_missing[@]}" >/dev/null \
    || echo "setup: could not install ${optional_missing[*]}: the web demo's browser test will be skipped"
fi

# libtorch from the PyPI wheel. The C++ side links only libc10 + libtorch_cpu (and the
# CUDA libraries when they load), so the wheel is installed without its Python deps.
if ! ls .venv/lib/python3*/site-packages/torch/lib/libtorch_cpu.so >/dev/null 2>&1; then
  echo "setup: creating .venv with torch ${TORCH_VERSION} (PyPI wheel, C++ libraries only)"
  python3 -m venv .venv
  .venv/bin/pip install -q --no-deps "torch==${TORCH_VERSION}"
fi

if [ ! -f build/build.ninja ]; then
  meson setup build --buildtype=release ${GLMVOICE_MESON_ARGS:-}
fi
ninja -C build
