// Keeps the three models loaded for the server's lifetime: a pipeline of the three elements
// held in READY (the elements load at NULL->READY and the model cache releases a model when
// its last user goes). Session pipelines then find them in the cache. The load runs on its own
// thread; its progress messages reach `on_progress` on the main thread.
#pragma once

#include <gst/gst.h>

#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "model_set.h"

namespace glmvoice::web {

class ModelHolder {
 public:
  // state: "loading", "ready" or "failed"; event: one progress message as JSON
  // {"type":"progress","element","kind","code","text"} or a state change {"type":"models",...}.
  using Listener = std::function<void(const nlohmann::json& event)>;

  ModelHolder(const ModelSet& models, Listener listener);
  ~ModelHolder();
  ModelHolder(const ModelHolder&) = delete;
  ModelHolder& operator=(const ModelHolder&) = delete;

  void start();                        // main thread
  nlohmann::json status() const;       // main thread: {"type":"models","state",...}

 private:
  static gboolean on_bus(GstBus* bus, GstMessage* message, gpointer self);

  ModelSet models_;
  Listener listener_;
  GstElement* pipeline_ = nullptr;
  guint bus_watch_ = 0;
  std::string state_ = "loading";  // main thread only
  std::string error_;              // main thread only
  nlohmann::json progress_ = nlohmann::json::array();  // main thread only: the load's steps
};

// One GST_MESSAGE_PROGRESS as JSON (null when `message` is not one).
nlohmann::json progress_to_json(GstMessage* message);

}  // namespace glmvoice::web
