// Custom serialized downstream events, as new/is/parse trios around named structures
// (cf. gst-plugins-base video-event.c).
//   end-of-turn     (GstGlmVoiceEndOfTurn): the user finished speaking; the LLM answers.
//   end-of-response (GstGlmVoiceEndOfResponse, field "reason"): the LLM finished or was
//                   stopped in one answer; the decoder finalizes that response's audio.
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

G_END_DECLS
