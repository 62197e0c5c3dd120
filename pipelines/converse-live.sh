#!/usr/bin/env bash
# Talk with the model turn after turn: microphone -> tokenizer with endpointing (a turn ends
# after ENDPOINT_MS of silence) -> LLM -> decoder -> speakers. Use headphones (no echo
# cancellation here). Ctrl-C to stop.
#   pipelines/converse-live.sh [ENDPOINT_MS]
source "$(dirname "$0")/common.sh"
glmvoice_models
exec gst-launch-1.0 -e \
  autoaudiosrc ! audioconvert ! audioresample ! queue \
  ! glmvoicetokenize model-path="$TOKENIZER_DIR" endpoint-silence-ms="${1:-800}" silence-threshold-db=-40 \
  ! glmvoicellm name=llm model-path="$LLM_DIR" text-lines=true \
  ! glmvoicedecode model-path="$DECODER_DIR" \
  ! queue ! audioconvert ! audioresample ! autoaudiosink \
  llm.text_src ! fdsink fd=1 sync=false
