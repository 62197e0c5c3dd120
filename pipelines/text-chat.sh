#!/usr/bin/env bash
# Text chat: every line on stdin is one user turn (text-lines), every answer is one line on
# stdout (newlines and control characters inside it escaped as \n, \xNN); the speech tokens
# are dropped (fakesink), so no decoder is needed. History is kept from line to line.
#   printf 'Hello\nHow are you?\n' | pipelines/text-chat.sh
source "$(dirname "$0")/common.sh"
glmvoice_models
exec gst-launch-1.0 -q \
  fdsrc fd=0 ! text/x-raw,format=utf8 ! llm.text_sink \
  glmvoicellm name=llm model-path="$LLM_DIR" max-new-tokens="${GLMVOICE_MAX_NEW_TOKENS:-2000}" text-lines=true \
  ! fakesink  llm.text_src ! fdsink fd=1 sync=false
