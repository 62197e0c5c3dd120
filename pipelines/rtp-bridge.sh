#!/usr/bin/env bash
# The shape of a telephony bridge: Opus/RTP in over UDP -> conversation -> Opus/RTP out.
#   pipelines/rtp-bridge.sh [IN_PORT] [OUT_HOST] [OUT_PORT] [PT]
# Defaults: listen on 5004, send to 127.0.0.1:5006, payload type 96. Turns end after 600 ms
# of silence in the caller's audio (tokenizer endpointing); the jitterbuffer absorbs 100 ms.
source "$(dirname "$0")/common.sh"
IN_PORT="${1:-5004}"; OUT_HOST="${2:-127.0.0.1}"; OUT_PORT="${3:-5006}"; PT="${4:-96}"
glmvoice_models
exec gst-launch-1.0 -e \
  udpsrc port="$IN_PORT" caps="application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=$PT" \
  ! rtpjitterbuffer latency=100 ! rtpopusdepay ! opusdec ! audioconvert ! audioresample \
  ! glmvoicetokenize model-path="$TOKENIZER_DIR" endpoint-silence-ms="${GLMVOICE_ENDPOINT_MS:-600}" \
  ! glmvoicellm model-path="$LLM_DIR" max-new-tokens="${GLMVOICE_MAX_NEW_TOKENS:-2000}" \
  ! glmvoicedecode model-path="$DECODER_DIR" \
  ! audioconvert ! audioresample ! opusenc ! rtpopuspay pt="$PT" \
  ! udpsink host="$OUT_HOST" port="$OUT_PORT"
