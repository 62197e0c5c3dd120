# Sourced by the pipeline scripts: finds the build tree, the plugin and the models.
# Models: $GLMVOICE_MODEL_DIR with the three HF repos side by side (glm-4-voice-tokenizer,
# glm-4-voice-9b, glm-4-voice-decoder); without it, tiny random models made by
# glmvoice-mkmodel into build/tiny-models (they speak noise: the weights are random).
set -euo pipefail
GLMVOICE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GLMVOICE_BUILD="${GLMVOICE_BUILD:-$GLMVOICE_ROOT/build}"
export GST_PLUGIN_PATH="$GLMVOICE_BUILD/plugins${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"

glmvoice_models() {
  if [ -n "${GLMVOICE_MODEL_DIR:-}" ]; then
    TOKENIZER_DIR="$GLMVOICE_MODEL_DIR/glm-4-voice-tokenizer"
    LLM_DIR="$GLMVOICE_MODEL_DIR/glm-4-voice-9b"
    DECODER_DIR="$GLMVOICE_MODEL_DIR/glm-4-voice-decoder"
    for d in "$TOKENIZER_DIR" "$LLM_DIR" "$DECODER_DIR"; do
      [ -d "$d" ] || { echo "GLMVOICE_MODEL_DIR: missing $d" >&2; exit 1; }
    done
  else
    local tiny="$GLMVOICE_BUILD/tiny-models"
    TOKENIZER_DIR="$tiny/glm-4-voice-tokenizer"
    LLM_DIR="$tiny/glm-4-voice-9b"
    DECODER_DIR="$tiny/glm-4-voice-decoder"
    [ -f "$TOKENIZER_DIR/config.json" ] || "$GLMVOICE_BUILD/tools/glmvoice-mkmodel" --kind tokenizer --seed 1 --out "$TOKENIZER_DIR"
    [ -f "$LLM_DIR/config.json" ] || "$GLMVOICE_BUILD/tools/glmvoice-mkmodel" --kind llm --seed 2 --out "$LLM_DIR"
    [ -f "$DECODER_DIR/config.yaml" ] || "$GLMVOICE_BUILD/tools/glmvoice-mkmodel" --kind decoder --seed 3 --out "$DECODER_DIR"
    echo "NOTE: no GLMVOICE_MODEL_DIR given: using tiny RANDOM models; the answer is noise, not speech." >&2
  fi
}

# wavenc leaves its length placeholders (about 2 GB) in the header when no audio came at all
# (an answer without speech): write the real sizes of an empty WAV then.
glmvoice_fix_empty_wav() {
  local wav="$1"
  [ -f "$wav" ] && [ "$(stat -c %s "$wav")" -eq 44 ] || return 0
  printf '\x24\x00\x00\x00' | dd of="$wav" bs=1 seek=4 conv=notrunc status=none   # RIFF size 36
  printf '\x00\x00\x00\x00' | dd of="$wav" bs=1 seek=40 conv=notrunc status=none  # data size 0
  echo "NOTE: the answer has no speech: $wav is an empty WAV" >&2
}
