#include "stress_pipeline.h"

#include <gst/app/gstappsrc.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include <unistd.h>

namespace glmvoice::test {

namespace {
constexpr int kRate = 16000;
constexpr int kChunkMs = 100;
constexpr size_t kHistory = 30;
}  // namespace

Watchdog::Watchdog() : thread_([this] { run(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Watchdog::arm(const std::string& what, double seconds) {
  static const bool verbose = std::getenv("GLMVOICE_STRESS_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "  -> %s\n", what.c_str());
  std::lock_guard<std::mutex> lock(mutex_);
  current_ = what;
  recent_.push_back(what);
  if (recent_.size() > kHistory) recent_.pop_front();
  deadline_ = std::chrono::steady_clock::now() +
              std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  armed_ = true;
  cv_.notify_all();
}

void Watchdog::note(const std::string& what) {
  std::lock_guard<std::mutex> lock(mutex_);
  recent_.push_back(what);
  if (recent_.size() > kHistory) recent_.pop_front();
}

void Watchdog::disarm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
}

std::string Watchdog::history() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  for (const auto& s : recent_) out += "  " + s + "\n";
  return out;
}

void Watchdog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    if (!armed_) {
      cv_.wait(lock);
      continue;
    }
    if (cv_.wait_until(lock, deadline_) == std::cv_status::timeout && armed_ && !stop_ &&
        std::chrono::steady_clock::now() >= deadline_) {
      std::fprintf(stderr, "WATCHDOG: '%s' did not return in time (a hang). Last operations:\n", current_.c_str());
      for (const auto& s : recent_) std::fprintf(stderr, "  %s\n", s.c_str());
      std::fflush(stderr);
      std::abort();
    }
  }
}

namespace {

GstBusSyncReply on_message(GstBus*, GstMessage* message, gpointer data) {
  auto* log = static_cast<BusLog*>(data);
  std::lock_guard<std::mutex> lock(log->mutex);
  switch (GST_MESSAGE_TYPE(message)) {
    case GST_MESSAGE_ERROR: {
      GError* error = nullptr;
      gchar* debug = nullptr;
      gst_message_parse_error(message, &error, &debug);
      log->errors.push_back({GST_OBJECT_NAME(GST_MESSAGE_SRC(message)), error ? error->message : "",
                             debug ? debug : ""});
      g_clear_error(&error);
      g_free(debug);
      break;
    }
    case GST_MESSAGE_WARNING: {
      GError* error = nullptr;
      gst_message_parse_warning(message, &error, nullptr);
      log->warnings.push_back(std::string(GST_OBJECT_NAME(GST_MESSAGE_SRC(message))) + ": " +
                              (error ? error->message : ""));
      g_clear_error(&error);
      break;
    }
    case GST_MESSAGE_EOS:
      ++log->eos;
      break;
    case GST_MESSAGE_ELEMENT: {
      const GstStructure* s = gst_message_get_structure(message);
      if (s && gst_structure_has_name(s, "glmvoicellm-turn")) {
        ++log->turns;
        gint prompt = 0;
        gst_structure_get_int(s, "prompt-tokens", &prompt);
        log->prompt_tokens.push_back(prompt);
      } else if (s && gst_structure_has_name(s, "glmvoicellm-context")) {
        ++log->context_drops;
      }
      break;
    }
    default:
      break;
  }
  gst_message_unref(message);  // a sync handler that drops a message owns it
  return GST_BUS_DROP;
}

}  // namespace

StressPipeline::StressPipeline(const std::string& tokenizer, const std::string& llm, const std::string& decoder,
                               const std::string& llm_extra, const std::string& decode_extra) {
  const std::string line =
      "appsrc name=mic is-live=true format=time do-timestamp=true block=false max-bytes=64000 "
      "caps=audio/x-raw,format=F32LE,rate=16000,channels=1,layout=interleaved "
      "! glmvoicetokenize name=tok endpoint-silence-ms=300 model-path=\"" + tokenizer + "\" "
      "! glmvoicellm name=llm max-new-tokens=30 model-path=\"" + llm + "\" " + llm_extra +
      " ! glmvoicedecode name=dec model-path=\"" + decoder + "\" " + decode_extra +
      " ! fakesink name=speaker sync=false async=false "
      "llm.text_src ! fakesink name=words sync=false async=false "
      "appsrc name=typed is-live=true format=time do-timestamp=true caps=text/x-raw,format=utf8 ! llm.text_sink";
  GError* error = nullptr;
  pipeline_ = gst_parse_launch(line.c_str(), &error);
  if (error != nullptr) {
    const std::string why = error->message;
    g_clear_error(&error);
    if (pipeline_) gst_object_unref(pipeline_);
    throw std::runtime_error("gst_parse_launch: " + why);
  }
  mic_ = gst_bin_get_by_name(GST_BIN(pipeline_), "mic");
  typed_ = gst_bin_get_by_name(GST_BIN(pipeline_), "typed");
  llm_ = gst_bin_get_by_name(GST_BIN(pipeline_), "llm");
  GstBus* bus = gst_element_get_bus(pipeline_);
  gst_bus_set_sync_handler(bus, on_message, &log_, nullptr);
  gst_object_unref(bus);
}

StressPipeline::~StressPipeline() {
  stop_feeder();
  gst_element_set_state(pipeline_, GST_STATE_NULL);
  GstBus* bus = gst_element_get_bus(pipeline_);
  gst_bus_set_sync_handler(bus, nullptr, nullptr, nullptr);
  gst_object_unref(bus);
  gst_object_unref(mic_);
  gst_object_unref(typed_);
  gst_object_unref(llm_);
  gst_object_unref(pipeline_);
}

GstElement* StressPipeline::element(const char* name) const {
  GstElement* e = gst_bin_get_by_name(GST_BIN(pipeline_), name);
  if (e) gst_object_unref(e);  // the bin keeps it alive
  return e;
}

GstStateChangeReturn StressPipeline::set_state(GstState state, double timeout_s) {
  GstStateChangeReturn r = gst_element_set_state(pipeline_, state);
  if (r == GST_STATE_CHANGE_ASYNC) {
    r = gst_element_get_state(pipeline_, nullptr, nullptr, static_cast<GstClockTime>(timeout_s * GST_SECOND));
  }
  return r;
}

GstBuffer* StressPipeline::audio_buffer(size_t samples, bool tone, uint64_t& phase) {
  GstBuffer* buffer = gst_buffer_new_allocate(nullptr, samples * sizeof(float), nullptr);
  GstMapInfo map;
  gst_buffer_map(buffer, &map, GST_MAP_WRITE);
  auto* out = reinterpret_cast<float*>(map.data);
  for (size_t i = 0; i < samples; ++i, ++phase) {
    // A vowel-like tone (two harmonics) at -12 dBFS, or digital silence.
    const double t = static_cast<double>(phase) / kRate;
    out[i] = tone ? static_cast<float>(0.2 * std::sin(2 * M_PI * 180 * t) + 0.05 * std::sin(2 * M_PI * 720 * t)) : 0.f;
  }
  gst_buffer_unmap(buffer, &map);
  return buffer;
}

GstFlowReturn StressPipeline::push_turn(int tone_ms, int silence_ms, uint64_t seed) {
  uint64_t phase = seed * 977;
  GstFlowReturn last = GST_FLOW_OK;
  for (int ms = 0; ms < tone_ms + silence_ms; ms += kChunkMs) {
    GstBuffer* b = audio_buffer(kRate * kChunkMs / 1000, ms < tone_ms, phase);
    last = gst_app_src_push_buffer(GST_APP_SRC(mic_), b);
    if (last != GST_FLOW_OK) break;
  }
  return last;
}

void StressPipeline::feed_loop() {
  uint64_t phase = 0;
  int position_ms = 0;
  while (feeding_) {
    if (gst_app_src_get_current_level_bytes(GST_APP_SRC(mic_)) > 16000) {
      g_usleep(5000);
      continue;
    }
    const int period = tone_ms_ + silence_ms_;
    GstBuffer* b = audio_buffer(kRate * kChunkMs / 1000, position_ms % period < tone_ms_, phase);
    gst_app_src_push_buffer(GST_APP_SRC(mic_), b);  // FLUSHING / EOS while stopped: dropped, fine
    position_ms += kChunkMs;
    g_usleep(kChunkMs * 1000 / 4);  // about 4x real time
  }
}

void StressPipeline::start_feeder(int tone_ms, int silence_ms) {
  stop_feeder();
  tone_ms_ = tone_ms;
  silence_ms_ = silence_ms;
  feeding_ = true;
  feeder_ = std::thread([this] { feed_loop(); });
}

void StressPipeline::stop_feeder() {
  feeding_ = false;
  if (feeder_.joinable()) feeder_.join();
}

GstFlowReturn StressPipeline::push_text(const std::string& text) {
  GstBuffer* b = gst_buffer_new_memdup(text.data(), text.size());
  return gst_app_src_push_buffer(GST_APP_SRC(typed_), b);
}

void StressPipeline::mic_eos() { gst_app_src_end_of_stream(GST_APP_SRC(mic_)); }

namespace {

struct Relink {
  GstElement* llm;
  bool release, unlink;
  bool done = false;
};

// IDLE probe: runs when no buffer or event is in flight on the typed appsrc's pad.
GstPadProbeReturn relink_when_idle(GstPad* src, GstPadProbeInfo*, gpointer data) {
  auto* r = static_cast<Relink*>(data);
  if (r->unlink) {
    GstPad* peer = gst_pad_get_peer(src);
    if (peer) {
      gst_pad_unlink(src, peer);
      if (r->release) gst_element_release_request_pad(r->llm, peer);
      gst_object_unref(peer);
    }
  } else {
    GstPad* sink = gst_element_get_static_pad(r->llm, "text_sink");
    if (sink == nullptr) sink = gst_element_request_pad_simple(r->llm, "text_sink");
    if (sink) {
      gst_pad_link(src, sink);
      gst_object_unref(sink);
    }
  }
  r->done = true;
  return GST_PAD_PROBE_REMOVE;
}

void change_text_link(GstElement* typed, GstElement* llm, bool unlink, bool release) {
  GstPad* src = gst_element_get_static_pad(typed, "src");
  auto* r = new Relink{llm, release, unlink};
  gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_IDLE, relink_when_idle, r, [](gpointer p) { delete static_cast<Relink*>(p); });
  gst_object_unref(src);
}

}  // namespace

void StressPipeline::unlink_text(bool release_pad) {
  if (!text_linked_) return;
  change_text_link(typed_, llm_, true, release_pad);
  text_linked_ = false;
}

void StressPipeline::relink_text() {
  if (text_linked_) return;
  change_text_link(typed_, llm_, false, false);
  text_linked_ = true;
}

int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

}  // namespace glmvoice::test
