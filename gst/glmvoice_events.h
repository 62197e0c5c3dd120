// Custom serialized downstream events, as new/is/parse trios around named structures
// (cf. gst-plugins-base video-event.c).
//   end-of-turn     (GstGlmVoiceEndOfTurn): the user finished speaking; the LLM answers.
//   end-of-response (GstGlmVoiceEndOfResponse, field "reason"): the LLM finished or was
//                   stopped in one answer; the decoder finalizes that response's audio
//                   (reason "interrupted": it drops what is pending instead).
//   start-of-speech (GstGlmVoiceStartOfSpeech, field "timestamp"): the tokenizer's endpointer
//                   heard speech begin at `timestamp` (buffer time of the input, may be NONE).
//                   Sent at once, ahead of the tokens of that audio (they come with their
//                   block), so a barge-in can stop the answer the user is talking over.
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

GstEvent* gst_glm_voice_event_new_end_of_turn(void);
gboolean gst_glm_voice_event_is_end_of_turn(GstEvent* event);

// `reason`: "stop-token", "max-new-tokens", "interrupted", ...
GstEvent* gst_glm_voice_event_new_end_of_response(const gchar* reason);
gboolean gst_glm_voice_event_is_end_of_response(GstEvent* event);
// Returns TRUE and sets *reason (owned by the event; may be NULL) when `event` is one.
gboolean gst_glm_voice_event_parse_end_of_response(GstEvent* event, const gchar** reason);

// The reason glmvoicellm gives when a barge-in (start-of-speech) stopped the answer.
#define GST_GLM_VOICE_REASON_INTERRUPTED "interrupted"

// `timestamp`: input buffer time at which speech began (GST_CLOCK_TIME_NONE if unknown).
GstEvent* gst_glm_voice_event_new_start_of_speech(GstClockTime timestamp);
gboolean gst_glm_voice_event_is_start_of_speech(GstEvent* event);
// Returns TRUE and sets *timestamp (may be NULL) when `event` is one.
gboolean gst_glm_voice_event_parse_start_of_speech(GstEvent* event, GstClockTime* timestamp);

G_END_DECLS
