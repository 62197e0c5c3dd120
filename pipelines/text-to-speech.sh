#!/usr/bin/env bash
# Text in through the LLM's text_sink pad (text-input mode, as the reference demo): the answer
# as speech (WAV) and text (stdout).
#   echo "Tell me a joke" | pipelines/text-to-speech.sh ANSWER.wav
source "$(dirname "$0")/common.sh"
[ $# -eq 1 ] || { echo "usage: echo TEXT | $0 ANSWER.wav" >&2; exit 2; }
glmvoice_models
gst-launch-1.0 -q \
  fdsrc fd=0 ! text/x-raw,format=utf8 ! llm.text_sink \
  glmvoicellm name=llm model-path="$LLM_DIR" max-new-tokens="${GLMVOICE_MAX_NEW_TOKENS:-2000}" text-lines=true \
  ! glmvoicedecode model-path="$DECODER_DIR" ! audioconvert ! wavenc ! filesink location="$1" \
  llm.text_src ! fdsink fd=1 sync=false
glmvoice_fix_empty_wav "$1"
