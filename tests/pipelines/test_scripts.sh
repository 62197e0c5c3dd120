#!/usr/bin/env bash
# Runs the example pipeline scripts and the Python example end to end on tiny models.
# Usage: test_scripts.sh BUILD_DIR SOURCE_DIR   (exit 77 = skipped, with the reason)
set -uo pipefail
build="$1"; src="$2"
export GLMVOICE_BUILD="$build"
unset GLMVOICE_MODEL_DIR
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng not available"; exit 77; }
work="$build/test-scratch/scripts-$$"
rm -rf "$work"; mkdir -p "$work"
fail=0

espeak-ng -v en -w "$work/q.wav" "What time is it?"

echo "== converse-file.sh"
GLMVOICE_MAX_NEW_TOKENS=60 "$src/pipelines/converse-file.sh" "$work/q.wav" "$work/a.wav" > "$work/text.txt" 2> "$work/err.txt" \
  || { echo "converse-file.sh failed:"; cat "$work/err.txt"; fail=1; }
head -c 4 "$work/a.wav" 2>/dev/null | grep -q RIFF || { echo "converse-file.sh: no WAV written"; fail=1; }

echo "== text-chat.sh"
echo "Hello there" | GLMVOICE_MAX_NEW_TOKENS=30 "$src/pipelines/text-chat.sh" > "$work/chat.txt" 2> "$work/err2.txt" \
  || { echo "text-chat.sh failed:"; cat "$work/err2.txt"; fail=1; }

echo "== text-to-speech.sh"
echo "Say something" | GLMVOICE_MAX_NEW_TOKENS=60 "$src/pipelines/text-to-speech.sh" "$work/tts.wav" > /dev/null 2> "$work/err3.txt" \
  || { echo "text-to-speech.sh failed:"; cat "$work/err3.txt"; fail=1; }
head -c 4 "$work/tts.wav" 2>/dev/null | grep -q RIFF || { echo "text-to-speech.sh: no WAV written"; fail=1; }

echo "== converse.py (GObject introspection)"
if python3 -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst' 2>/dev/null; then
  models="$build/tiny-models"
  python3 "$src/pipelines/converse.py" --tokenizer "$models/glm-4-voice-tokenizer" --llm "$models/glm-4-voice-9b" \
      --decoder "$models/glm-4-voice-decoder" --max-new-tokens 40 "$work/q.wav" "$work/py.wav" > "$work/py.txt" 2>&1 \
    || { echo "converse.py failed:"; cat "$work/py.txt"; fail=1; }
  grep -q "glmvoicellm-turn" "$work/py.txt" || { echo "converse.py: no per-turn debug message seen"; cat "$work/py.txt"; fail=1; }
  grep -q "turns answered: 1" "$work/py.txt" || { echo "converse.py: expected one answered turn"; fail=1; }
  grep -q "load-model" "$work/py.txt" || { echo "converse.py: no model-load progress message seen"; fail=1; }
else
  echo "python3-gi not present: converse.py not run"
fi

[ $fail -eq 0 ] && echo "all pipeline scripts ran" || exit 1
