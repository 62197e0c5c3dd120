// A converse pipeline the stress and soak tests drive from the test thread: a microphone
// appsrc (16 kHz mono F32, fed by a thread with synthetic turns: a tone, then silence),
// glmvoicetokenize ! glmvoicellm ! glmvoicedecode ! fakesink, the LLM's text_src to a
// fakesink, and a typed-text appsrc on the LLM's text_sink request pad. Bus messages are
// collected by a sync handler (no main loop needed); a watchdog aborts the process with the
// last operations when one of them does not return in time.
#pragma once

#include <gst/gst.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace glmvoice::test {

// Aborts the process (printing the recent history) when an armed operation overruns.
class Watchdog {
 public:
  Watchdog();
  ~Watchdog();
  // Starts timing `what`; it must be disarmed within `seconds`.
  void arm(const std::string& what, double seconds);
  void disarm();
  // Records an operation that needs no bound (it cannot block) in the history.
  void note(const std::string& what);
  std::string history() const;

 private:
  void run();
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::string> recent_;
  std::string current_;
  std::chrono::steady_clock::time_point deadline_{};
  bool armed_ = false, stop_ = false;
  std::thread thread_;
};

struct BusLog {
  struct Error {
    std::string source, message, debug;
  };
  std::mutex mutex;
  std::vector<Error> errors;
  std::vector<std::string> warnings;
  int turns = 0, context_drops = 0, eos = 0;
  std::vector<int> prompt_tokens;  // per glmvoicellm-turn message
};

class StressPipeline {
 public:
  // Models: tiny tokenizer / LLM / decoder directories. Extra properties per element are
  // appended to the launch line.
  StressPipeline(const std::string& tokenizer, const std::string& llm, const std::string& decoder,
                 const std::string& llm_extra = "", const std::string& decode_extra = "");
  ~StressPipeline();

  GstElement* pipeline() const { return pipeline_; }
  GstElement* element(const char* name) const;  // borrowed
  BusLog& bus() { return log_; }

  // Sets `state` and waits for it (live: PAUSED returns NO_PREROLL). FALSE on failure.
  GstStateChangeReturn set_state(GstState state, double timeout_s = 30.0);

  // The feeder thread pushes turns of `tone_ms` of a tone then `silence_ms` of silence,
  // as fast as the appsrc queue accepts them (kept short) or paced by the caller.
  void start_feeder(int tone_ms, int silence_ms);
  void stop_feeder();
  // Pushes one whole turn (tone + silence) now, from the calling thread; FlowReturn of the push.
  GstFlowReturn push_turn(int tone_ms, int silence_ms, uint64_t seed);

  GstFlowReturn push_text(const std::string& text);
  void mic_eos();

  // text_sink: unlinked / relinked (or released and requested anew) while data may flow,
  // through an IDLE probe on the typed appsrc's pad (the documented way).
  bool text_linked() const { return text_linked_; }
  void unlink_text(bool release_pad);
  void relink_text();

 private:
  void feed_loop();
  GstBuffer* audio_buffer(size_t samples, bool tone, uint64_t& phase);

  GstElement* pipeline_ = nullptr;
  GstElement* mic_ = nullptr;    // owned ref
  GstElement* typed_ = nullptr;  // owned ref
  GstElement* llm_ = nullptr;    // owned ref
  BusLog log_;
  std::atomic<bool> feeding_{false};
  int tone_ms_ = 0, silence_ms_ = 0;
  std::thread feeder_;
  bool text_linked_ = true;
};

// Resident set size of this process in bytes (/proc/self/statm).
int64_t resident_bytes();

}  // namespace glmvoice::test
