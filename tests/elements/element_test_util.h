// Shared by the GstHarness and pipeline tests: gst_init before any test and, at the end, a
// leak check (with GST_TRACERS=leaks, as meson sets it: any GstObject or GstMiniObject still
// alive at gst_deinit fails the binary; GST_DEBUG=GST_TRACER:7 lists them), and pad probes
// that record what leaves an element.
#pragma once

#include <gst/gst.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "glmvoice_events.h"

namespace glmvoice::test {

class GstEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { gst_init(nullptr, nullptr); }
  void TearDown() override {
    const char* tracers = g_getenv("GST_TRACERS");
    if (tracers == nullptr || std::strstr(tracers, "leaks") == nullptr) return;
    // The leaks tracer reports at gst_deinit() with a g_warning: catch it.
    static bool leaked = false;
    g_log_set_default_handler(
        [](const gchar* domain, GLogLevelFlags level, const gchar* message, gpointer) {
          if (message && std::strstr(message, "Leaks detected")) leaked = true;
          g_log_default_handler(domain, level, message, nullptr);
        },
        nullptr);
    gst_deinit();
    if (leaked) ADD_FAILURE() << "GStreamer objects leaked (rerun with GST_DEBUG=GST_TRACER:7 to list them)";
  }
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

// Records the timeline of a pad in order: buffers and GAP events with their PTS/duration,
// other events by name ("end-of-response", "segment", "eos", ...). Thread-safe.
struct Timeline {
  struct Item {
    std::string kind;  // "buffer", "gap", or the event's name
    GstClockTime pts = GST_CLOCK_TIME_NONE, duration = GST_CLOCK_TIME_NONE;
  };
  std::mutex mutex;
  std::vector<Item> items;

  void attach(GstElement* element, const char* pad_name) {
    GstPad* pad = gst_element_get_static_pad(element, pad_name);
    gst_pad_add_probe(pad,
                      static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM |
                                                   GST_PAD_PROBE_TYPE_EVENT_FLUSH),
                      probe, this, nullptr);
    gst_object_unref(pad);
  }
  static GstPadProbeReturn probe(GstPad*, GstPadProbeInfo* info, gpointer data) {
    auto* self = static_cast<Timeline*>(data);
    Item item;
    if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) {
      GstBuffer* b = GST_PAD_PROBE_INFO_BUFFER(info);
      item = {"buffer", GST_BUFFER_PTS(b), GST_BUFFER_DURATION(b)};
    } else {
      GstEvent* event = GST_PAD_PROBE_INFO_EVENT(info);
      if (GST_EVENT_TYPE(event) == GST_EVENT_GAP) {
        item.kind = "gap";
        gst_event_parse_gap(event, &item.pts, &item.duration);
      } else if (gst_glm_voice_event_is_end_of_response(event)) {
        item.kind = "end-of-response";
      } else {
        item.kind = GST_EVENT_TYPE_NAME(event);
      }
    }
    std::lock_guard<std::mutex> lock(self->mutex);
    self->items.push_back(item);
    return GST_PAD_PROBE_OK;
  }
  std::vector<Item> snapshot() {
    std::lock_guard<std::mutex> lock(mutex);
    return items;
  }
  size_t count(const std::string& kind) {
    size_t n = 0;
    for (const auto& i : snapshot()) n += i.kind == kind;
    return n;
  }
  // Waits (polling, up to `timeout_s`) until `kind` was seen `n` times.
  bool wait_for(const std::string& kind, size_t n, double timeout_s = 60) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (count(kind) < n) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  // "" when buffer and GAP timestamps never go backwards, else a description of the first step back.
  std::string backwards() {
    GstClockTime last = 0;
    for (const auto& i : snapshot()) {
      if (i.kind != "buffer" && i.kind != "gap") continue;
      if (!GST_CLOCK_TIME_IS_VALID(i.pts)) return i.kind + " without PTS";
      if (i.pts < last) return i.kind + " at " + std::to_string(i.pts) + " after " + std::to_string(last);
      last = i.pts;
    }
    return "";
  }
  // End of the covered timeline (max pts + duration of buffers and GAPs).
  GstClockTime covered() {
    GstClockTime end = 0;
    for (const auto& i : snapshot()) {
      if ((i.kind == "buffer" || i.kind == "gap") && GST_CLOCK_TIME_IS_VALID(i.pts)) {
        const GstClockTime e = i.pts + (GST_CLOCK_TIME_IS_VALID(i.duration) ? i.duration : 0);
        if (e > end) end = e;
      }
    }
    return end;
  }
};

}  // namespace glmvoice::test
