#!/usr/bin/env bash
# A spoken question (any format decodebin reads) -> glmvoicetokenize ! glmvoicellm !
# glmvoicedecode -> the spoken answer as a WAV; the answer's text goes to stdout.
#   pipelines/converse-file.sh QUESTION.wav ANSWER.wav
source "$(dirname "$0")/common.sh"
[ $# -eq 2 ] || { echo "usage: $0 QUESTION ANSWER.wav" >&2; exit 2; }
glmvoice_models
gst-launch-1.0 -q \
  filesrc location="$1" ! decodebin ! audioconvert ! audioresample \
  ! glmvoicetokenize model-path="$TOKENIZER_DIR" \
  ! glmvoicellm name=llm model-path="$LLM_DIR" max-new-tokens="${GLMVOICE_MAX_NEW_TOKENS:-2000}" text-lines=true \
  ! glmvoicedecode model-path="$DECODER_DIR" \
  ! audioconvert ! wavenc ! filesink location="$2" \
  llm.text_src ! fdsink fd=1 sync=false
glmvoice_fix_empty_wav "$2"
