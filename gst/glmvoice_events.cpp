#include "glmvoice_events.h"

static const gchar kEndOfTurn[] = "GstGlmVoiceEndOfTurn";
static const gchar kEndOfResponse[] = "GstGlmVoiceEndOfResponse";
static const gchar kStartOfSpeech[] = "GstGlmVoiceStartOfSpeech";

static gboolean event_has_name(GstEvent* event, const gchar* name) {
  if (event == nullptr || GST_EVENT_TYPE(event) != GST_EVENT_CUSTOM_DOWNSTREAM) return FALSE;
  const GstStructure* s = gst_event_get_structure(event);
  return s != nullptr && gst_structure_has_name(s, name);
}

GstEvent* gst_glm_voice_event_new_end_of_turn(void) {
  return gst_event_new_custom(GST_EVENT_CUSTOM_DOWNSTREAM, gst_structure_new_empty(kEndOfTurn));
}

gboolean gst_glm_voice_event_is_end_of_turn(GstEvent* event) {
  return event_has_name(event, kEndOfTurn);
}

GstEvent* gst_glm_voice_event_new_end_of_response(const gchar* reason) {
  return gst_event_new_custom(
      GST_EVENT_CUSTOM_DOWNSTREAM,
      gst_structure_new(kEndOfResponse, "reason", G_TYPE_STRING, reason ? reason : "", NULL));
}

gboolean gst_glm_voice_event_is_end_of_response(GstEvent* event) {
  return event_has_name(event, kEndOfResponse);
}

gboolean gst_glm_voice_event_parse_end_of_response(GstEvent* event, const gchar** reason) {
  if (!gst_glm_voice_event_is_end_of_response(event)) return FALSE;
  if (reason) *reason = gst_structure_get_string(gst_event_get_structure(event), "reason");
  return TRUE;
}

GstEvent* gst_glm_voice_event_new_start_of_speech(GstClockTime timestamp) {
  return gst_event_new_custom(GST_EVENT_CUSTOM_DOWNSTREAM,
                              gst_structure_new(kStartOfSpeech, "timestamp", G_TYPE_UINT64,
                                                static_cast<guint64>(timestamp), NULL));
}

gboolean gst_glm_voice_event_is_start_of_speech(GstEvent* event) {
  return event_has_name(event, kStartOfSpeech);
}

gboolean gst_glm_voice_event_parse_start_of_speech(GstEvent* event, GstClockTime* timestamp) {
  if (!gst_glm_voice_event_is_start_of_speech(event)) return FALSE;
  if (timestamp) {
    guint64 t = GST_CLOCK_TIME_NONE;
    if (!gst_structure_get_uint64(gst_event_get_structure(event), "timestamp", &t)) t = GST_CLOCK_TIME_NONE;
    *timestamp = t;
  }
  return TRUE;
}
