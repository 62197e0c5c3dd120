#!/usr/bin/env bash
# Setup (idempotent), then the main job: a spoken question through
# glmvoicetokenize ! glmvoicellm ! glmvoicedecode into a WAV.
# With GLMVOICE_MODEL_DIR (glm-4-voice-tokenizer, glm-4-voice-9b, glm-4-voice-decoder side
# by side) it runs the real model; without, tiny random models (noise, said plainly).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out="${GLMVOICE_DEMO_DIR:-build/demo}"
mkdir -p "$out"
question="${1:-$out/question.wav}"
if [ $# -eq 0 ]; then
  espeak-ng -v en -w "$question" "What is the weather like in Beijing today?"
fi
if [ -z "${GLMVOICE_MODEL_DIR:-}" ]; then
  export GLMVOICE_MAX_NEW_TOKENS="${GLMVOICE_MAX_NEW_TOKENS:-120}"
fi
echo "question: $question"
echo "--- answer text ---"
pipelines/converse-file.sh "$question" "$out/answer.wav"
echo
echo "--- answer audio: $out/answer.wav ---"
if command -v soxi >/dev/null; then soxi "$out/answer.wav"; fi
