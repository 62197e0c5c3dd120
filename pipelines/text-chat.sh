#!/usr/bin/env bash
# Text chat: text in through text_sink, the answer's text on stdout; the speech tokens are
# dropped (fakesink), so no decoder is needed.
#   echo "Hello" | pipelines/text-chat.sh
source "$(dirname "$0")/common.sh"
glmvoice_models
exec gst-launch-1.0 -q \
  fdsrc fd=0 ! text/x-raw,format=utf8 ! llm.text_sink \
  glmvoicellm name=llm model-path="$LLM_DIR" max-new-tokens="${GLMVOICE_MAX_NEW_TOKENS:-2000}" ! fakesink \
  llm.text_src ! queue ! fdsink fd=1 sync=false
