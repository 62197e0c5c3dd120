#!/usr/bin/env bash
# One prepared check of the CUDA path, for a GPU machine with PyTorch (CUDA) but maybe no
# GStreamer: builds lib/ and tools/ (and their tests) against that PyTorch's libtorch with CUDA,
# runs the CUDA parity tests, then benchmarks at real sizes with random weights:
#   LLM    GLM-4-Voice-9B shapes built on the GPU in memory (no checkpoint file): prefill and
#          decode ms/token at batch 1 for bfloat16, int8 and int4 (glmvoice-bench dtypes --real)
#   tokenizer  real width, 16 layers: RTF                (glmvoice-bench tokenizer)
#   decoder    release size: first-block latency and RTF (glmvoice-bench decoder)
#   e2e        end of turn -> first audio (TTFA)         (glmvoice-bench e2e)
# prints one table and writes it as JSON. Budget: under 8 minutes on one H100/H200.
#
#   scripts/gpu-check.sh [OUT_DIR]        (default build-gpu/gpu-check; $OUT when set)
# Environment: GLMVOICE_TORCH=/path/to/site-packages/torch (default: python3's torch, else
# .venv), GLMVOICE_FIXTURES (default ../shared/fixtures), GPU_CHECK_JOBS (build jobs).
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
missing=""
for tool in meson ninja c++ pkg-config; do command -v $tool >/dev/null 2>&1 || missing="$missing $tool"; done
for pc in nlohmann_json yaml-cpp libpcre2-8 gtest; do pkg-config --exists $pc 2>/dev/null || missing="$missing $pc"; done
if [ -n "$missing" ]; then
  echo "gpu-check: missing build prerequisites:$missing" >&2
  echo "  Debian: apt-get install meson ninja-build g++ pkg-config nlohmann-json3-dev libyaml-cpp-dev libpcre2-dev libgtest-dev" >&2
  exit 1
fi
export GLMVOICE_FIXTURES="${GLMVOICE_FIXTURES:-$(cd "$ROOT/.." && pwd)/shared/fixtures}"
[ -d "$GLMVOICE_FIXTURES" ] || say "no fixtures at $GLMVOICE_FIXTURES: the fixture parity cases will skip"
mkdir -p "$OUT_DIR"

# ---- 2. build lib/, tools/ and their tests with CUDA, no GStreamer
say "configure + build ($BUILD)"
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" --buildtype=release -Dgstreamer=disabled -Dcuda=enabled -Dlibtorch="$TORCH" \
    > "$OUT_DIR/meson.log" 2>&1 || { tail -30 "$OUT_DIR/meson.log"; exit 1; }
fi
ninja -C "$BUILD" -j "${GPU_CHECK_JOBS:-$(nproc)}" > "$OUT_DIR/build.log" 2>&1 || { tail -40 "$OUT_DIR/build.log"; exit 1; }
grep -A1 "cuda" "$OUT_DIR/meson.log" 2>/dev/null | head -2
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

# ---- 4. benchmarks (each bounded; a failure is reported and the rest still run)
run_bench() {  # NAME SECONDS ARGS...
  local name=$1 secs=$2; shift 2
  say "bench $name"
  timeout "$secs" "$BENCH" "$@" > "$OUT_DIR/$name.txt" 2>&1
  local rc=$?
  cat "$OUT_DIR/$name.txt"
  [ $rc -eq 0 ] || { echo "gpu-check: bench $name exited $rc"; status=1; }
}
run_bench llm 200 dtypes --real --device cuda --dtypes bfloat16,int8,int4 --prompt 512 --decode 64 --repeat 2 \
  --dir "$OUT_DIR/models" --json "$OUT_DIR/llm.json"
run_bench tokenizer 90 tokenizer --layers 16 --seconds 20 --device cuda --dir "$OUT_DIR/models"
run_bench decoder 90 decoder --tokens 200 --device cuda --dir "$OUT_DIR/models"
run_bench e2e 150 e2e --size mid --device cuda --dir "$OUT_DIR/models"
if grep -qi "unknown option" "$OUT_DIR/e2e.txt"; then
  echo "gpu-check: this glmvoice-bench e2e has no --device option: e2e TTFA not measured on the GPU"
fi

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
for name, keys in (("tokenizer", r"RTF"), ("decoder", r"RTF|first audio"), ("e2e", r"RTF|first|TTFA|ttfa")):
    lines = [l.strip() for l in text(name).splitlines() if re.search(keys, l) and not l.strip().startswith("call ")]
    for l in lines[:6] or ["no result (see %s.txt)" % name]:
        rows.append((name, l))
width = max(len(k) for k, _ in rows)
print("\n%-*s  %s" % (width, "gpu-check", "result"))
for k, v in rows:
    print("%-*s  %s" % (width, k, v))
json.dump({"rows": [{"what": k, "result": v} for k, v in rows],
           "raw": {n: text(n) for n in ("tokenizer", "decoder", "e2e")}},
          open(os.path.join(out, "gpu-check.json"), "w"), indent=2)
print("\nJSON: " + os.path.join(out, "gpu-check.json"))
PY
say "done (status $status)"
exit $status
