#include "glmvoice_latency.h"

GST_DEBUG_CATEGORY_STATIC(glmvoice_latency_debug);
#define GST_CAT_DEFAULT glmvoice_latency_debug

namespace glmvoice::gst {

void LatencyBudget::install(GObjectClass* klass, guint prop_id, const char* blurb) {
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    GST_DEBUG_CATEGORY_INIT(glmvoice_latency_debug, "glmvoicelatency", 0, "glmvoice latency budgets");
    g_once_init_leave(&once, 1);
  }
  g_object_class_install_property(
      klass, prop_id,
      g_param_spec_uint64("latency", "Latency budget", blurb, 0, G_MAXUINT64, 0,
                          static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS |
                                                   GST_PARAM_MUTABLE_PLAYING)));
}

bool LatencyBudget::set_property(GstElement* element, guint prop_id, const GValue* value) {
  if (prop_id != prop_id_) return false;
  const GstClockTime budget = g_value_get_uint64(value);
  GST_OBJECT_LOCK(element);
  const bool changed = budget != budget_;
  budget_ = budget;
  if (changed) warned_ = false;
  GST_OBJECT_UNLOCK(element);
  if (changed) {
    GST_DEBUG_OBJECT(element, "latency budget %" GST_TIME_FORMAT, GST_TIME_ARGS(budget));
    gst_element_post_message(element, gst_message_new_latency(GST_OBJECT(element)));
  }
  return true;
}

bool LatencyBudget::get_property(GstElement* element, guint prop_id, GValue* value) {
  if (prop_id != prop_id_) return false;
  GST_OBJECT_LOCK(element);
  g_value_set_uint64(value, budget_);
  GST_OBJECT_UNLOCK(element);
  return true;
}

void LatencyBudget::set_inherent(GstElement* element, GstClockTime inherent) {
  GST_OBJECT_LOCK(element);
  inherent_ = inherent;
  GST_OBJECT_UNLOCK(element);
}

void LatencyBudget::record_compute(GstElement* element, GstClockTime compute) {
  GST_OBJECT_LOCK(element);
  if (compute > compute_) compute_ = compute;
  const GstClockTime needed = inherent_ + compute;
  const bool over = budget_ > 0 && needed > budget_ && !warned_;
  if (over) warned_ = true;
  const GstClockTime budget = budget_;
  // automatic: follow the estimate, without a message for every small change
  const bool grew = budget_ == 0 && compute_ > reported_compute_ + reported_compute_ / 5;
  if (grew) reported_compute_ = compute_;
  GST_OBJECT_UNLOCK(element);
  GST_LOG_OBJECT(element, "processing took %" GST_TIME_FORMAT " + %" GST_TIME_FORMAT " waiting",
                 GST_TIME_ARGS(compute), GST_TIME_ARGS(needed - compute));
  if (over) {
    GST_ELEMENT_WARNING(element, CORE, CLOCK, ("Processing is slower than the latency budget"),
                        ("waiting %" GST_TIME_FORMAT " + computing %" GST_TIME_FORMAT " = %" GST_TIME_FORMAT
                         " exceeds latency=%" GST_TIME_FORMAT ": output will be late; raise the "
                         "latency property or use a faster device",
                         GST_TIME_ARGS(needed - compute), GST_TIME_ARGS(compute), GST_TIME_ARGS(needed),
                         GST_TIME_ARGS(budget)));
  }
  if (grew) gst_element_post_message(element, gst_message_new_latency(GST_OBJECT(element)));
}

void LatencyBudget::reset_measured(GstElement* element) {
  GST_OBJECT_LOCK(element);
  compute_ = 0;
  reported_compute_ = 0;
  GST_OBJECT_UNLOCK(element);
}

GstClockTime LatencyBudget::latency_locked() const { return budget_ > 0 ? budget_ : inherent_ + compute_; }

GstClockTime LatencyBudget::latency(GstElement* element) {
  GST_OBJECT_LOCK(element);
  const GstClockTime ours = latency_locked();
  GST_OBJECT_UNLOCK(element);
  return ours;
}

gboolean LatencyBudget::answer_query(GstElement* element, GstPad* sinkpad, GstQuery* query) {
  if (!gst_pad_peer_query(sinkpad, query)) return FALSE;
  gboolean live = FALSE;
  GstClockTime min = 0, max = GST_CLOCK_TIME_NONE;
  gst_query_parse_latency(query, &live, &min, &max);
  if (!live) {
    GST_DEBUG_OBJECT(element, "upstream is not live: latency query answered as upstream's");
    return TRUE;
  }
  const GstClockTime ours = latency(element);
  min += ours;
  if (GST_CLOCK_TIME_IS_VALID(max)) max += ours;
  GST_DEBUG_OBJECT(element, "latency: ours %" GST_TIME_FORMAT ", total min %" GST_TIME_FORMAT " max %" GST_TIME_FORMAT,
                   GST_TIME_ARGS(ours), GST_TIME_ARGS(min), GST_TIME_ARGS(max));
  gst_query_set_latency(query, TRUE, min, max);
  return TRUE;
}

}  // namespace glmvoice::gst
