// Shared by the GstHarness tests: gst_init before any test, and a pad probe that records
// the order of buffers and events leaving an element.
#pragma once

#include <gst/gst.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "glmvoice_events.h"

namespace glmvoice::test {

class GstEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { gst_init(nullptr, nullptr); }
};

// Records "buffer", "end-of-turn", "end-of-response" or the event type name ("eos", ...)
// for everything that passes the probed pad. Attach with GST_PAD_PROBE_TYPE_BUFFER |
// GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM.
struct Recorder {
  std::vector<std::string> items;
  static GstPadProbeReturn probe(GstPad*, GstPadProbeInfo* info, gpointer data) {
    auto* self = static_cast<Recorder*>(data);
    if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) {
      self->items.push_back("buffer");
    } else if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
      GstEvent* event = GST_PAD_PROBE_INFO_EVENT(info);
      if (gst_glm_voice_event_is_end_of_turn(event)) {
        self->items.push_back("end-of-turn");
      } else if (gst_glm_voice_event_is_end_of_response(event)) {
        self->items.push_back("end-of-response");
      } else {
        self->items.push_back(GST_EVENT_TYPE_NAME(event));
      }
    }
    return GST_PAD_PROBE_OK;
  }
};

}  // namespace glmvoice::test
