#!/usr/bin/env bash
# Runs the example pipeline scripts and the Python example end to end on tiny models and
# checks what a user sees: the answer lines on stdout, WAVs read back with a real reader
# (sox's soxi), the one "random models" note, converse.py's transcript, summary,
# error and timeout handling (with Debian's /usr/bin/python3, which has python3-gi).
# Usage: test_scripts.sh BUILD_DIR SOURCE_DIR   (exit 77 = skipped, with the reason)
set -uo pipefail
build="$1"; src="$2"
export GLMVOICE_BUILD="$build"
unset GLMVOICE_MODEL_DIR
command -v espeak-ng >/dev/null || { echo "SKIP: espeak-ng not available"; exit 77; }
command -v soxi >/dev/null || { echo "SKIP: sox (soxi) not available"; exit 77; }
work="$build/test-scratch/scripts-$$"
rm -rf "$work"; mkdir -p "$work"
fail=0
problem() { echo "FAIL: $*"; fail=1; }

# check_wav FILE: read back with sox's soxi (a real reader): 22.05 kHz mono, and a header that
# agrees with the file (no length placeholder claiming gigabytes for a short answer).
check_wav() {
  local rate channels samples bits size
  rate=$(soxi -r "$1" 2>/dev/null) && channels=$(soxi -c "$1" 2>/dev/null) && samples=$(soxi -s "$1" 2>/dev/null) \
    && bits=$(soxi -b "$1" 2>/dev/null) || { echo "$1: not a readable WAV"; soxi "$1"; return 1; }
  size=$(stat -c %s "$1")
  [ "$rate" -eq 22050 ] && [ "$channels" -eq 1 ] || { echo "$1: $rate Hz, $channels channels"; return 1; }
  [ $((samples * channels * bits / 8)) -le "$size" ] || { echo "$1: header claims $samples samples, file is $size bytes"; return 1; }
  echo "$(basename "$1"): $samples samples at $rate Hz"
}

# check_lines FILE N: exactly N lines, no control bytes (escaped by text-lines).
check_lines() {
  local n; n=$(wc -l < "$1")
  [ "$n" -eq "$2" ] || { echo "$1: $n lines, expected $2:"; cat -v "$1"; return 1; }
  if LC_ALL=C grep -q -P '[\x00-\x09\x0b-\x1f\x7f]' "$1"; then echo "$1: control bytes:"; cat -v "$1"; return 1; fi
}

espeak-ng -v en -w "$work/q.wav" "What time is it?"

echo "== converse-file.sh"
GLMVOICE_MAX_NEW_TOKENS=60 "$src/pipelines/converse-file.sh" "$work/q.wav" "$work/a.wav" > "$work/text.txt" 2> "$work/err.txt" \
  || { problem "converse-file.sh failed:"; cat "$work/err.txt"; }
check_wav "$work/a.wav" || problem "converse-file.sh: bad answer WAV"
check_lines "$work/text.txt" 1 || problem "converse-file.sh: expected one answer line"

echo "== text-chat.sh (one line per turn, one line per answer)"
printf 'Hello there\nHow are you?\nBye\n' | GLMVOICE_MAX_NEW_TOKENS=30 "$src/pipelines/text-chat.sh" \
    > "$work/chat.txt" 2> "$work/err2.txt" || { problem "text-chat.sh failed:"; cat "$work/err2.txt"; }
check_lines "$work/chat.txt" 3 || problem "text-chat.sh: expected three answer lines"
[ "$(grep -c 'tiny RANDOM models' "$work/err2.txt")" -eq 1 ] || { problem "text-chat.sh: the random-model note should appear once:"; cat "$work/err2.txt"; }

echo "== text-chat.sh with empty input"
printf '' | timeout 120 "$src/pipelines/text-chat.sh" > "$work/chat0.txt" 2> "$work/err0.txt" \
  || { problem "text-chat.sh with empty input failed (hang = 124):"; cat "$work/err0.txt"; }
check_lines "$work/chat0.txt" 0 || problem "text-chat.sh: empty input, expected no answer"

echo "== text-to-speech.sh"
echo "Say something" | GLMVOICE_MAX_NEW_TOKENS=60 "$src/pipelines/text-to-speech.sh" "$work/tts.wav" > "$work/tts.txt" 2> "$work/err3.txt" \
  || { problem "text-to-speech.sh failed:"; cat "$work/err3.txt"; }
check_wav "$work/tts.wav" || problem "text-to-speech.sh: bad answer WAV"
check_lines "$work/tts.txt" 1 || problem "text-to-speech.sh: expected one answer line"

echo "== converse.py (GObject introspection, /usr/bin/python3)"
py=/usr/bin/python3
if "$py" -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst' 2>/dev/null; then
  models="$build/tiny-models"
  "$py" "$src/pipelines/converse.py" --tokenizer "$models/glm-4-voice-tokenizer" --llm "$models/glm-4-voice-9b" \
      --decoder "$models/glm-4-voice-decoder" --max-new-tokens 40 "$work/q.wav" "$work/py.wav" > "$work/py.txt" 2>&1 \
    || { problem "converse.py failed:"; cat "$work/py.txt"; }
  grep -q "^answer 1: " "$work/py.txt" || { problem "converse.py: no transcript line"; cat "$work/py.txt"; }
  grep -q "^turn 1: reason=.*prompt [0-9]* tokens, [0-9]* generated" "$work/py.txt" || { problem "converse.py: no summary line"; cat "$work/py.txt"; }
  grep -q "^turns answered: 1$" "$work/py.txt" || problem "converse.py: expected one answered turn"
  grep -q "load-model" "$work/py.txt" || problem "converse.py: no model-load progress message seen"
  check_wav "$work/py.wav" || problem "converse.py: bad answer WAV"
  "$py" "$src/pipelines/converse.py" --tokenizer "$models/glm-4-voice-tokenizer" --llm /nonexistent \
      --decoder "$models/glm-4-voice-decoder" "$work/q.wav" "$work/py2.wav" > "$work/py2.txt" 2>&1
  rc=$?
  [ $rc -eq 1 ] && grep -q "error from .*nonexistent" "$work/py2.txt" || { problem "converse.py: bad model path should be an error (rc $rc)"; cat "$work/py2.txt"; }
  "$py" "$src/pipelines/converse.py" --tokenizer "$models/glm-4-voice-tokenizer" --llm "$models/glm-4-voice-9b" \
      --decoder "$models/glm-4-voice-decoder" --timeout 0.001 "$work/q.wav" "$work/py3.wav" > "$work/py3.txt" 2>&1
  rc=$?
  [ $rc -eq 2 ] && grep -q "giving up" "$work/py3.txt" || { problem "converse.py: --timeout should give up (rc $rc)"; cat "$work/py3.txt"; }
else
  if [ "${CI:-}" = "true" ]; then problem "python3-gi missing for /usr/bin/python3 (scripts/setup.sh installs it)"; fi
  echo "python3-gi not present: converse.py not run"
fi

[ $fail -eq 0 ] && echo "all pipeline scripts ran" || exit 1
