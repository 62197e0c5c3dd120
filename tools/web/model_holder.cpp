#include "model_holder.h"

#include <thread>

#include "main_thread.h"

namespace glmvoice::web {

nlohmann::json progress_to_json(GstMessage* message) {
  if (GST_MESSAGE_TYPE(message) != GST_MESSAGE_PROGRESS) return nullptr;
  GstProgressType type;
  gchar* code = nullptr;
  gchar* text = nullptr;
  gst_message_parse_progress(message, &type, &code, &text);
  const char* kind = type == GST_PROGRESS_TYPE_START      ? "start"
                     : type == GST_PROGRESS_TYPE_CONTINUE ? "continue"
                     : type == GST_PROGRESS_TYPE_COMPLETE ? "complete"
                     : type == GST_PROGRESS_TYPE_CANCELED ? "canceled"
                                                          : "error";
  nlohmann::json out = {{"type", "progress"},
                        {"element", GST_OBJECT_NAME(GST_MESSAGE_SRC(message))},
                        {"kind", kind},
                        {"code", code ? code : ""},
                        {"text", text ? text : ""}};
  g_free(code);
  g_free(text);
  return out;
}

ModelHolder::ModelHolder(const ModelSet& models, Listener listener)
    : models_(models), listener_(std::move(listener)) {}

ModelHolder::~ModelHolder() {
  if (bus_watch_) g_source_remove(bus_watch_);
  if (pipeline_) {
    gst_element_set_state(pipeline_, GST_STATE_NULL);
    gst_object_unref(pipeline_);
  }
}

void ModelHolder::start() {
  const std::string description =
      "glmvoicetokenize name=tokenizer" + element_model_properties(models_, models_.tokenizer_dir) +
      " glmvoicellm name=llm" + element_model_properties(models_, models_.llm_dir) +
      " glmvoicedecode name=decoder" + element_model_properties(models_, models_.decoder_dir);
  GError* error = nullptr;
  pipeline_ = gst_parse_launch(description.c_str(), &error);
  if (!pipeline_ || error) {
    state_ = "failed";
    error_ = std::string("cannot create the elements (is GST_PLUGIN_PATH set?): ") +
             (error ? error->message : "unknown error");
    if (error) g_error_free(error);
    if (pipeline_) gst_object_unref(pipeline_);
    pipeline_ = nullptr;
    listener_(status());
    return;
  }
  GstBus* bus = gst_element_get_bus(pipeline_);
  bus_watch_ = gst_bus_add_watch(bus, &ModelHolder::on_bus, this);
  gst_object_unref(bus);
  GstElement* pipeline = GST_ELEMENT(gst_object_ref(pipeline_));
  // NULL->READY loads the models and blocks: off the main loop, so pages see the progress.
  std::thread([this, pipeline] {
    const GstStateChangeReturn ret = gst_element_set_state(pipeline, GST_STATE_READY);
    gst_object_unref(pipeline);
    run_on_main([this, ret] {
      // Messages still queued on the bus come first, so "ready" follows the last step.
      GstBus* bus = gst_element_get_bus(pipeline_);
      while (GstMessage* message = gst_bus_pop(bus)) {
        on_bus(bus, message, this);
        gst_message_unref(message);
      }
      gst_object_unref(bus);
      if (state_ != "loading") return;  // an error message already said why
      state_ = ret == GST_STATE_CHANGE_FAILURE ? "failed" : "ready";
      if (state_ == "failed" && error_.empty()) error_ = "the elements failed to load their models";
      listener_(status());
    });
  }).detach();
}

nlohmann::json ModelHolder::status() const {
  nlohmann::json out = {{"type", "models"}, {"state", state_}, {"tiny", models_.tiny},
                        {"steps", progress_}};
  if (!error_.empty()) out["error"] = error_;
  return out;
}

gboolean ModelHolder::on_bus(GstBus*, GstMessage* message, gpointer data) {
  auto* self = static_cast<ModelHolder*>(data);
  if (GST_MESSAGE_TYPE(message) == GST_MESSAGE_PROGRESS) {
    nlohmann::json event = progress_to_json(message);
    self->progress_.push_back(event);
    self->listener_(event);
  } else if (GST_MESSAGE_TYPE(message) == GST_MESSAGE_ERROR) {
    GError* error = nullptr;
    gchar* debug = nullptr;
    gst_message_parse_error(message, &error, &debug);
    self->state_ = "failed";
    self->error_ = std::string(error->message) + (debug ? std::string(" (") + debug + ")" : "");
    g_error_free(error);
    g_free(debug);
    self->listener_(self->status());
  }
  return G_SOURCE_CONTINUE;
}

}  // namespace glmvoice::web
