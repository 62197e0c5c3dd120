// One browser session: a webrtcbin pipeline of its own,
//   browser mic (Opus/RTP) -> depay/decode -> 16 kHz -> glmvoicetokenize -> glmvoicellm
//   -> glmvoicedecode -> 48 kHz -> clocksync -> Opus/RTP -> browser,
// plus typed questions (appsrc -> glmvoicellm.text_sink) and the answer text
// (glmvoicellm.text_src -> appsink). The server is the WebRTC offerer; signalling, controls
// and everything the page shows travel as JSON over the session's WebSocket.
//
// Threads: the public methods run on the main loop's thread. GStreamer callbacks (streaming
// threads, webrtcbin's thread) only gather data and hand it to the main thread; they hold a
// weak reference, so a callback after close() finds no session and does nothing. close()
// frees the pipeline on a worker thread so a slow element never stalls the server.
#pragma once

#include <gst/gst.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model_set.h"
#include "pacer.h"

namespace glmvoice::web {

struct SessionOptions {
  int endpoint_silence_ms = 600;    // glmvoicetokenize: a turn ends after this much silence
  double silence_threshold_db = -40;
  int max_new_tokens = 2000;        // initial glmvoicellm max-new-tokens
  // ICE gathers candidates only on this address (a loopback server keeps its media on
  // loopback too); empty = every interface.
  std::string ice_address;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  using Send = std::function<void(const nlohmann::json&)>;      // to the page (main thread)
  using Closed = std::function<void(int id, const std::string& reason)>;

  Session(int id, ModelSet models, SessionOptions options, Send send, Closed closed);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  int id() const { return id_; }
  bool started() const { return pipeline_ != nullptr; }

  // One message from the page. Throws std::invalid_argument with a reason when it is
  // malformed (the caller reports it and keeps the session).
  void handle(const nlohmann::json& message);

  // Tears the session down (idempotent); the pipeline goes to NULL and is freed off the main
  // thread, then the freed-pipeline count grows.
  void close(const std::string& reason);

  // Process-wide counts, for the /stats page and the tests.
  static int pipelines_alive();
  static int pipelines_freed();

 private:
  struct Weak;  // heap-held weak_ptr handed to GStreamer callbacks

  void start();
  void emit(const nlohmann::json& message);  // main thread: to the page while open
  void set_controls(const nlohmann::json& controls);
  void push_text(const std::string& text);
  void set_remote_answer(const std::string& sdp);
  void add_ice_candidate(const nlohmann::json& message);
  void send_offer(GstPromise* promise);

  void on_bus_message(GstMessage* message);
  void on_decoded(GstPadProbeInfo* info);  // decoder src: the answer ends
  void on_packet(GstBuffer* buffer);       // payloader src: pacing, the answer starts
  void install_probes();

  // Streaming-thread side of the question capture (protected by question_lock_).
  void capture_question(GstBuffer* buffer);
  std::vector<float> take_question();

  const int id_;
  const ModelSet models_;
  const SessionOptions options_;
  Send send_;
  Closed closed_;
  bool closed_flag_ = false;          // main thread
  GstElement* pipeline_ = nullptr;    // main thread owns the ref until close()
  GstElement* webrtc_ = nullptr;      // borrowed from pipeline_; cleared by close() under webrtc_lock_
  std::mutex webrtc_lock_;            // webrtcbin's thread reads webrtc_ (send_offer) while close() runs
  GstElement* llm_ = nullptr;         // borrowed
  GstElement* gate_ = nullptr;        // borrowed: valve before the tokenizer (type mode drops)
  GstElement* text_in_ = nullptr;     // borrowed: appsrc
  guint bus_watch_ = 0;               // main thread
  nlohmann::json pending_controls_ = nlohmann::json::object();  // main thread: last values set

  std::mutex question_lock_;
  std::vector<float> question_;       // protected by question_lock_: 16 kHz mono samples
  // The decoder's streaming thread only (pacer_.stop() from any thread):
  Pacer pacer_;
  bool answering_ = false;
  GstClockTime answer_audio_ = 0;     // audio duration sent for the current answer
  std::chrono::steady_clock::time_point answer_started_;
};

}  // namespace glmvoice::web
