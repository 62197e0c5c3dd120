// The `latency` budget property every glmvoice element has, and its LATENCY query answer
// (cf. gst-plugins-rs audio/whisper transcriber: a budget property, the query adds it only
// when upstream is live, a warning when processing exceeds it).
//
//   class_init:    glmvoice::gst::LatencyBudget::install(gobject_class, PROP_LATENCY, "...");
//   instance:      glmvoice::gst::LatencyBudget latency{PROP_LATENCY};
//   set/get:       if (impl->latency.set_property(element, prop_id, value)) return;  (same for get)
//   model known:   impl->latency.set_inherent(element, block_duration);
//   after compute: impl->latency.record_compute(element, measured);
//   src query:     case GST_QUERY_LATENCY: return impl->latency.answer_query(element, sinkpad, query);
//
// The element's latency is the budget when one is set (> 0), else its own estimate:
// inherent delay (what it must wait for, e.g. one block of input) + the largest measured
// compute time. A budget change, and in automatic mode a growing estimate (> 20 %), post a
// LATENCY message so the pipeline re-computes its latency. When inherent + measured compute
// exceeds a set budget, one GST_ELEMENT_WARNING says so (again after the budget changes).
#pragma once

#include <gst/gst.h>

namespace glmvoice::gst {

class LatencyBudget {
 public:
  explicit LatencyBudget(guint prop_id) : prop_id_(prop_id) {}

  // Installs `latency` (guint64 nanoseconds, 0 = automatic, GST_PARAM_MUTABLE_PLAYING).
  static void install(GObjectClass* klass, guint prop_id, const char* blurb);
  // set/get_property for `latency` (object lock taken here); FALSE for other ids.
  bool set_property(GstElement* element, guint prop_id, const GValue* value);
  bool get_property(GstElement* element, guint prop_id, GValue* value);

  // What the element waits for before it can output anything (object lock taken here).
  void set_inherent(GstElement* element, GstClockTime inherent);
  // One measured processing time (e.g. one block's compute); see the header comment.
  void record_compute(GstElement* element, GstClockTime compute);
  // Forgets measured compute (e.g. at READY->NULL, when another model may be loaded).
  void reset_measured(GstElement* element);

  // The latency this element adds when live: the budget, or inherent + measured compute.
  GstClockTime latency(GstElement* element);
  // Answers LATENCY on the src pad: queries upstream through `sinkpad`; live: adds
  // latency() to min and (when valid) max; not live: upstream's answer as is.
  gboolean answer_query(GstElement* element, GstPad* sinkpad, GstQuery* query);

 private:
  GstClockTime latency_locked() const;

  const guint prop_id_;
  // Protected by the element's object lock.
  GstClockTime budget_ = 0;  // property; 0 = automatic
  GstClockTime inherent_ = 0;
  GstClockTime compute_ = 0;  // largest measured
  GstClockTime reported_compute_ = 0;  // compute_ when a LATENCY message was last posted
  bool warned_ = false;
};

}  // namespace glmvoice::gst
