#!/usr/bin/env bash
# One prepared check of the CUDA path, for a GPU machine with PyTorch (CUDA) but maybe no
# GStreamer: builds lib/ and tools/ (and their tests) against that PyTorch's libtorch with CUDA,
# runs the CUDA parity tests, then benchmarks at real sizes with random weights:
#   LLM    GLM-4-Voice-9B shapes built on the GPU in memory (no checkpoint file): prefill and
#          decode ms/token at batch 1 for bfloat16, int8 and int4 (glmvoice-bench dtypes --real)
#   tokenizer  real width, 16 layers: RTF                (glmvoice-bench tokenizer)
#   decoder    release size: first-block latency and RTF (glmvoice-bench decoder)
#   e2e        end of turn -> first audio (TTFA), 9B-shape LLM (glmvoice-bench e2e --real-llm)
#   batch      N calls sharing each 9B decode step, N = 1..32 (glmvoice-bench llm --concurrent)
# prints one table and writes it as JSON. Budget: under 8 minutes on one H100/H200.
#
#   scripts/gpu-check.sh [OUT_DIR]        (default build-gpu/gpu-check; $OUT when set)
# Environment: GLMVOICE_TORCH=/path/to/site-packages/torch (default: python3's torch, else
# .venv), GLMVOICE_FIXTURES (default ../shared/fixtures), GPU_CHECK_JOBS (build jobs),
# GPU_CHECK_MODELS (where the random-weight models are written; default /tmp/glmvoice-gpu-models),
# GPU_CHECK_DEBS=DIR  Debian .debs of the build prerequisites (scripts/gpu-pack.sh fetches them),
#                     unpacked into a private sysroot when this machine lacks them (a GPU box
#                     with PyTorch but no Debian -dev packages and no network),
# GPU_CHECK_BENCH=0   build and test only (no benchmarks, no table),
# GPU_CHECK_BENCHES="llm eager int8pack tokenizer decoder e2e batch"  the benchmarks to run (all),
# GPU_CHECK_PREBUILT=DIR  skip the build: run the binaries scripts/gpu-pack.sh built elsewhere
#                     against the same torch wheel (DIR/{lib,tools,tests}; DIR/deps: shared
#                     libraries the GPU box may lack), to spend the GPU lease on the checks.
# Exit status: 0 all ran and the tests passed, 1 a failure, 77 no GPU here (skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_DIR="${1:-${OUT:-$ROOT/build-gpu/gpu-check}}"
BUILD="$ROOT/build-gpu"
T0=$(date +%s)
say() { printf '[gpu-check %4ds] %s\n' $(( $(date +%s) - T0 )) "$*"; }

# ---- 1. a GPU, a libtorch with CUDA
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi missing or failing): skipped"
  exit 77
fi
nvidia-smi -L
TORCH="${GLMVOICE_TORCH:-}"
if [ -z "$TORCH" ]; then
  TORCH=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null || true)
fi
if [ -z "$TORCH" ]; then TORCH=$(ls -d "$ROOT"/.venv/lib/python3*/site-packages/torch 2>/dev/null | head -n1); fi
if [ -z "$TORCH" ] || [ ! -f "$TORCH/lib/libtorch_cuda.so" ]; then
  echo "gpu-check: no libtorch with CUDA found (set GLMVOICE_TORCH=.../site-packages/torch)" >&2
  exit 1
fi
say "libtorch: $TORCH ($(cat "$TORCH/version.py" 2>/dev/null | grep -o "__version__ = '[^']*'" | cut -d"'" -f2))"
export GLMVOICE_FIXTURES="${GLMVOICE_FIXTURES:-$(cd "$ROOT/.." && pwd)/shared/fixtures}"
[ -d "$GLMVOICE_FIXTURES" ] || say "no fixtures at $GLMVOICE_FIXTURES: the fixture parity cases will skip"
MODELS="${GPU_CHECK_MODELS:-/tmp/glmvoice-gpu-models}"
mkdir -p "$OUT_DIR" "$MODELS"

# ---- 2. build lib/, tools/ and their tests with CUDA, no GStreamer (or take a prebuilt set)
if [ -n "${GPU_CHECK_PREBUILT:-}" ]; then
  BUILD=$(cd "$GPU_CHECK_PREBUILT" && pwd)
  say "prebuilt binaries from $BUILD (built by scripts/gpu-pack.sh against $(cat "$BUILD/TORCH_VERSION" 2>/dev/null))"
  export LD_LIBRARY_PATH="$BUILD/lib:$BUILD/deps:$TORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  use_sysroot() {  # unpack GPU_CHECK_DEBS into a sysroot that pkg-config, the compiler and ld.so see
    local root="$ROOT/build-gpu-sysroot"
    mkdir -p "$root"
    for d in "$GPU_CHECK_DEBS"/*.deb; do dpkg-deb -x "$d" "$root" 2>/dev/null || dpkg -x "$d" "$root"; done
    local multi=usr/lib/x86_64-linux-gnu
    export PATH="$root/usr/bin:$PATH"
    export LD_LIBRARY_PATH="$root/$multi${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PKG_CONFIG_PATH="$root/$multi/pkgconfig:$root/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export PKG_CONFIG_SYSROOT_DIR="$root"
    command -v pkg-config >/dev/null 2>&1 || ln -sf pkgconf "$root/usr/bin/pkg-config"
    say "build prerequisites from $GPU_CHECK_DEBS unpacked into $root"
  }
  prerequisites_missing() {
    local missing=""
    for tool in meson ninja c++ pkg-config; do command -v $tool >/dev/null 2>&1 || missing="$missing $tool"; done
    if command -v pkg-config >/dev/null 2>&1; then
      for pc in nlohmann_json yaml-cpp libpcre2-8 gtest; do pkg-config --exists $pc 2>/dev/null || missing="$missing $pc"; done
    fi
    echo "$missing"
  }
  missing=$(prerequisites_missing)
  if [ -n "$missing" ] && [ -n "${GPU_CHECK_DEBS:-}" ]; then use_sysroot; missing=$(prerequisites_missing); fi
  if [ -n "$missing" ]; then
    echo "gpu-check: missing build prerequisites:$missing" >&2
    echo "  Debian: apt-get install meson ninja-build g++ pkg-config nlohmann-json3-dev libyaml-cpp-dev libpcre2-dev libgtest-dev" >&2
    echo "  (or GPU_CHECK_DEBS=DIR with those .debs, or GPU_CHECK_PREBUILT=DIR: scripts/gpu-pack.sh)" >&2
    exit 1
  fi
  export LD_LIBRARY_PATH="$TORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "configure + build ($BUILD)"
  if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" --buildtype=release -Dgstreamer=disabled -Dcuda=enabled -Dlibtorch="$TORCH" \
      > "$OUT_DIR/meson.log" 2>&1 || { tail -30 "$OUT_DIR/meson.log"; exit 1; }
  fi
  # Only what this check runs: the library, the bench and three test binaries.
  ninja -C "$BUILD" -j "${GPU_CHECK_JOBS:-$(nproc)}" lib/libglmvoice.so tools/glmvoice-bench \
    tests/precision/test_cuda_parity tests/lib/llm/test_llm_sampler tests/precision/test_quantized \
    > "$OUT_DIR/build.log" 2>&1 || { tail -40 "$OUT_DIR/build.log"; exit 1; }
  grep -i -A1 "cuda" "$OUT_DIR/meson.log" 2>/dev/null | head -4
  say "built"
fi
BENCH="$BUILD/tools/glmvoice-bench"
status=0

# ---- 3. CUDA parity tests (they skip visibly without CUDA, so a skip here is a failure)
say "CUDA parity tests"
if "$BUILD/tests/precision/test_cuda_parity" > "$OUT_DIR/cuda_parity.log" 2>&1; then
  grep -E "^cuda |\[  (PASSED|SKIPPED|FAILED) " "$OUT_DIR/cuda_parity.log"
  grep -q "SKIPPED" "$OUT_DIR/cuda_parity.log" && grep -q "CPU-only\|no CUDA" "$OUT_DIR/cuda_parity.log" && status=1
else
  tail -40 "$OUT_DIR/cuda_parity.log"
  status=1
fi
say "sampler and reduced-precision tests"
for t in lib/llm/test_llm_sampler precision/test_quantized; do
  if ! timeout 300 "$BUILD/tests/$t" > "$OUT_DIR/$(basename $t).log" 2>&1; then tail -20 "$OUT_DIR/$(basename $t).log"; status=1; fi
done

if [ "${GPU_CHECK_BENCH:-1}" = 0 ]; then say "done, no benchmarks (status $status)"; exit $status; fi

# ---- 4. benchmarks (each bounded; a failure is reported and the rest still run)
run_bench() {  # NAME SECONDS ARGS...
  local name=$1 secs=$2; shift 2
  case " ${GPU_CHECK_BENCHES:-$name} " in *" $name "*) ;; *) say "bench $name skipped (GPU_CHECK_BENCHES)"; return ;; esac
  say "bench $name"
  timeout "$secs" "$BENCH" "$@" > "$OUT_DIR/$name.txt" 2>&1
  local rc=$?
  cat "$OUT_DIR/$name.txt"
  [ $rc -eq 0 ] || { echo "gpu-check: bench $name exited $rc"; status=1; }
}
run_bench llm 200 dtypes --real --device cuda --dtypes bfloat16,int8,int4 --prompt 512 --decode 64 --repeat 2 \
  --dir "$MODELS" --json "$OUT_DIR/llm.json"
# the decode step without its CUDA graph (eager launches), beside the default above
GLMVOICE_LLM_DECODE=eager run_bench eager 90 dtypes --real --device cuda --dtypes bfloat16,int4 --prompt 512 \
  --decode 64 --repeat 2 --dir "$MODELS"
# int8 through libtorch's own CUDA kernel (_weight_int8pack_mm), beside the default above
GLMVOICE_INT8_CUDA_KERNEL=pack run_bench int8pack 120 dtypes --real --device cuda --dtypes bfloat16,int8 --prompt 128 \
  --decode 32 --repeat 1 --dir "$MODELS"
run_bench tokenizer 120 tokenizer --layers 16 --seconds 20 --device cuda --dir "$MODELS/tokenizer"
run_bench decoder 120 decoder --tokens 200 --device cuda --dir "$MODELS/decoder"
run_bench e2e 180 e2e --size mid --device cuda --real-llm --threads 8 --dir "$MODELS/e2e"
run_bench batch 150 llm --configs real-9b --device cuda --dtype bfloat16 --concurrent 1,8,16,32 --decode 32 \
  --dir "$MODELS"

# ---- 5. one table + JSON
python3 - "$OUT_DIR" <<'PY'
import json, os, re, sys
out = sys.argv[1]
def text(name):
    p = os.path.join(out, name + ".txt")
    return open(p, encoding="utf-8", errors="replace").read() if os.path.exists(p) else ""
def grab(pattern, s, cast=float):
    m = re.search(pattern, s)
    return cast(m.group(1)) if m else None
rows = []
try:
    for r in json.load(open(os.path.join(out, "llm.json"))):
        if "error" in r:
            rows.append(("LLM 9B " + r["dtype"], "error: " + r["error"][:80]))
            continue
        rows.append(("LLM 9B %s prefill" % r["dtype"], "%.3f ms/token" % r["prefill_ms_per_token"]))
        extra = ""
        if "greedy_same_vs_bf16" in r:
            extra = ", greedy %d/%d = bf16, logits err %.3g" % (r["greedy_same_vs_bf16"], r["greedy_n"], r["logits_max_err_vs_bf16"])
        rows.append(("LLM 9B %s decode" % r["dtype"], "%.2f ms/token (floor %.2f, weights %.1f GB)%s" % (
            r["decode_ms_per_token"], r["decode_floor_ms"], r["weight_gb"], extra)))
except Exception as e:
    rows.append(("LLM 9B", "no result (%s)" % e))
# The other benches' own summary lines, verbatim (their formats belong to them).
for name, keys in (("eager", r"^\s*(bfloat16|int4) .*decode"), ("int8pack", r"^\s*int8 .*decode"), ("tokenizer", r"RTF"), ("decoder", r"RTF|first audio"), ("e2e", r"RTF|first|TTFA|ttfa"),
                   ("batch", r"^concurrent|real time")):
    lines = [l.strip() for l in text(name).splitlines() if re.search(keys, l) and not l.strip().startswith("call ")]
    for l in lines[:8] or ["no result (see %s.txt)" % name]:
        rows.append((name, l))
width = max(len(k) for k, _ in rows)
print("\n%-*s  %s" % (width, "gpu-check", "result"))
for k, v in rows:
    print("%-*s  %s" % (width, k, v))
json.dump({"rows": [{"what": k, "result": v} for k, v in rows],
           "raw": {n: text(n) for n in ("tokenizer", "decoder", "e2e", "batch")}},
          open(os.path.join(out, "gpu-check.json"), "w"), indent=2)
print("\nJSON: " + os.path.join(out, "gpu-check.json"))
PY
say "done (status $status)"
exit $status
