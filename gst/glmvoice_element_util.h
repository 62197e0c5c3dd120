// Helpers every glmvoice element uses at the lib boundary.
#pragma once

#include <gst/gst.h>

#include <exception>
#include <string>

#include "glmvoice_model_cache.h"
#include "runtime/options.h"

namespace glmvoice::gst {

// Posts GST_ELEMENT_ERROR for an exception from lib: glmvoice::Error kNotFound ->
// RESOURCE/NOT_FOUND; kBadFile/kMismatch/kBadConfig/kUnsupported -> RESOURCE/SETTINGS;
// kBadInput -> STREAM/DECODE; kDevice and c10::Error -> RESOURCE/FAILED. `what` is a short
// user text ("Could not load the speech tokenizer"); the exception message (file, key,
// reason) becomes part of the message so it reaches the user too.
void post_error(GstElement* element, const char* what, const std::exception& error);
void post_error(GstElement* element, const char* what, std::exception_ptr error);

// Where an error was raised: the element's call site, so that the debug location of the
// posted message (GST_ELEMENT_ERROR's file:function:line) names the element, not this helper.
struct SourceLocation {
  const char* file;
  const char* function;
  int line;
};
void post_error(GstElement* element, const char* what, const std::exception& error, SourceLocation where);
void post_error(GstElement* element, const char* what, std::exception_ptr error, SourceLocation where);

}  // namespace glmvoice::gst

// The caller's file, function and line, for the helpers that post on an element's behalf.
#define GLMVOICE_HERE ::glmvoice::gst::SourceLocation{__FILE__, GST_FUNCTION, __LINE__}

// post_error() with the caller's file, function and line (use this in elements):
//   GLMVOICE_ELEMENT_ERROR(self, "Language model failed", std::current_exception());
#define GLMVOICE_ELEMENT_ERROR(element, what, error)                        \
  ::glmvoice::gst::post_error(GST_ELEMENT(element), (what), (error),        \
                              ::glmvoice::gst::SourceLocation{__FILE__, GST_FUNCTION, __LINE__})

namespace glmvoice::gst {

// Builds ModelOptions from the element properties: empty path -> $GLMVOICE_MODEL_DIR
// joined with `subdir` (e.g. "glm-4-voice-tokenizer"), device "" -> auto, dtype string.
// Throws glmvoice::Error (kBadConfig / kNotFound) on bad values.
ModelOptions make_model_options(const std::string& path, const std::string& subdir,
                                const std::string& device, const std::string& dtype);

// dtype "auto" (Undefined) becomes the stage's default for `kind` ("llm": bfloat16 on CUDA,
// float32 on CPU; "tokenizer", "decoder": float32), so that "auto" and the dtype it means
// share one model in the cache.
ModelOptions resolve_auto_dtype(const std::string& kind, ModelOptions options);

// Routes lib's runtime::log hook to the `glmvoicelib` GST_DEBUG category (idempotent).
void install_log_bridge();

// Posts GST_MESSAGE_PROGRESS (START / COMPLETE / ERROR) for a model load, code "load-model".
void post_load_progress(GstElement* element, GstProgressType type, const std::string& text);

// The NULL->READY model load every element does: options from its property values, the
// shared copy from the model cache (or Model::load), progress START then COMPLETE. On failure
// posts progress ERROR and the element error "Could not load the <what>: <file: key: reason>"
// and returns nullptr. Runs on the state-change thread, never a streaming thread. `where`:
// the element's call site (GLMVOICE_HERE), named as the error's debug location.
template <class Model>
std::shared_ptr<const Model> load_shared_model(GstElement* element, const std::string& kind,
                                               const std::string& what, const std::string& path,
                                               const std::string& subdir, const std::string& device,
                                               const std::string& dtype,
                                               SourceLocation where = GLMVOICE_HERE) {
  post_load_progress(element, GST_PROGRESS_TYPE_START, "Loading the " + what);
  try {
    const ModelOptions options = resolve_auto_dtype(kind, make_model_options(path, subdir, device, dtype));
    auto model = model_cache_get<Model>(kind, options, [&options] { return Model::load(options); });
    post_load_progress(element, GST_PROGRESS_TYPE_COMPLETE, "Loaded the " + what);
    return model;
  } catch (...) {
    const std::string failed = "Could not load the " + what;
    post_load_progress(element, GST_PROGRESS_TYPE_ERROR, failed);
    post_error(element, failed.c_str(), std::current_exception(), where);
    return nullptr;
  }
}

}  // namespace glmvoice::gst
