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
# CUDA libraries when they load), so the wheel is installed without its Python deps; the
# NVIDIA libraries come below, only on a CUDA machine.
if ! ls .venv/lib/python3*/site-packages/torch/lib/libtorch_cpu.so >/dev/null 2>&1; then
  echo "setup: creating .venv with torch ${TORCH_VERSION} (PyPI wheel, C++ libraries only)"
  python3 -m venv .venv
  .venv/bin/pip install -q --no-deps "torch==${TORCH_VERSION}"
fi

# CUDA: on a machine with an NVIDIA driver (nvidia-smi works) or when asked (GLMVOICE_CUDA=1;
# GLMVOICE_CUDA=0 never), add the NVIDIA runtime wheels the torch wheel declares, only those
# its C++ libraries link, so libtorch_cuda.so loads and meson builds the CUDA paths.
# GLMVOICE_CUDA_DRY_RUN=1 prints that list (as for a machine without any CUDA) and stops.
torch_dir=$(ls -d .venv/lib/python3*/site-packages/torch | head -n1)
if [ "${GLMVOICE_CUDA_DRY_RUN:-0}" = 1 ]; then
  echo "setup: CUDA wheels for $(basename "$(ls -d "$torch_dir"-*.dist-info)"):"
  python3 scripts/cuda_wheels.py "$torch_dir" --bare
  exit 0
fi
want_cuda=0
if [ "${GLMVOICE_CUDA:-}" = 1 ]; then
  want_cuda=1
elif [ "${GLMVOICE_CUDA:-}" != 0 ] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  want_cuda=1
fi
cuda_changed=0
if [ "$want_cuda" = 1 ]; then
  for round in 1 2 3; do   # a library found may need another (cuSPARSE -> nvJitLink)
    mapfile -t wheels < <(python3 scripts/cuda_wheels.py "$torch_dir")
    [ ${#wheels[@]} -eq 0 ] && break
    echo "setup: installing CUDA runtime wheels: ${wheels[*]}"
    .venv/bin/pip install -q "${wheels[@]}"
    cuda_changed=1
  done
  if ldd "$torch_dir/lib/libtorch_cuda.so" 2>/dev/null | grep -q "not found"; then
    echo "setup: warning: libtorch_cuda.so still misses: $(ldd "$torch_dir/lib/libtorch_cuda.so" | grep 'not found' | tr -s ' \t\n' ' ')" >&2
  fi
fi

if [ ! -f build/build.ninja ]; then
  meson setup build --buildtype=release ${GLMVOICE_MESON_ARGS:-}
elif [ "$cuda_changed" = 1 ]; then
  meson setup --reconfigure build   # CUDA detection runs at configure time
fi
ninja -C build
