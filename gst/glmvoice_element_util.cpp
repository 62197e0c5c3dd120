#include "glmvoice_element_util.h"

#include "runtime/dtype.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <filesystem>

#include "io/error.h"

GST_DEBUG_CATEGORY_STATIC(glmvoicelib_debug);
#define GST_CAT_DEFAULT glmvoicelib_debug

namespace glmvoice::gst {

namespace {

void post(GstElement* element, GQuark domain, gint code, const char* what, const std::string& detail,
          const SourceLocation& where) {
  // The detail names file, key and reason: it goes into the message text itself (not only the
  // debug string) so that gst-launch and bus watchers show it to the user.
  gchar* text = g_strdup_printf("%s: %s", what, detail.c_str());
  gchar* debug = g_strdup(detail.c_str());
  gst_element_message_full(element, GST_MESSAGE_ERROR, domain, code, text, debug, where.file,
                           where.function, where.line);
}

}  // namespace

void post_error(GstElement* element, const char* what, const std::exception& error) {
  post_error(element, what, error, SourceLocation{__FILE__, GST_FUNCTION, __LINE__});
}

void post_error(GstElement* element, const char* what, std::exception_ptr error) {
  post_error(element, what, error, SourceLocation{__FILE__, GST_FUNCTION, __LINE__});
}

void post_error(GstElement* element, const char* what, const std::exception& error, SourceLocation where) {
  if (const auto* e = dynamic_cast<const Error*>(&error)) {
    switch (e->code()) {
      case ErrorCode::kNotFound:
        post(element, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND, what, e->what(), where);
        return;
      case ErrorCode::kBadInput:
        post(element, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE, what, e->what(), where);
        return;
      case ErrorCode::kDevice:
        post(element, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_FAILED, what, e->what(), where);
        return;
      default:
        post(element, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS, what, e->what(), where);
        return;
    }
  }
  if (const auto* e = dynamic_cast<const c10::Error*>(&error)) {
    post(element, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_FAILED, what, e->what_without_backtrace(), where);
    return;
  }
  post(element, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_FAILED, what, error.what(), where);
}

void post_error(GstElement* element, const char* what, std::exception_ptr error, SourceLocation where) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    post_error(element, what, e, where);
  } catch (...) {
    post(element, GST_CORE_ERROR, GST_CORE_ERROR_FAILED, what, "unknown exception", where);
  }
}

ModelOptions make_model_options(const std::string& path, const std::string& subdir,
                                const std::string& device, const std::string& dtype) {
  ModelOptions options;
  options.path = path;
  if (options.path.empty()) {
    const char* env = std::getenv("GLMVOICE_MODEL_DIR");
    if (env == nullptr || *env == '\0') {
      throw Error(ErrorCode::kNotFound, "", "model-path",
                  "no model-path set and GLMVOICE_MODEL_DIR is not set");
    }
    options.path = (std::filesystem::path(env) / subdir).string();
  }
  if (!std::filesystem::is_directory(options.path)) {
    throw Error(ErrorCode::kNotFound, options.path, "model-path", "no such model directory");
  }
  options.device = runtime::parse_device(device);
  options.dtype = runtime::parse_dtype(dtype.empty() ? "float32" : dtype);
  return options;
}

ModelOptions resolve_auto_dtype(const std::string& kind, ModelOptions options) {
  if (options.dtype != c10::ScalarType::Undefined) return options;
  const runtime::Stage stage = kind == "llm"         ? runtime::Stage::kLlm
                               : kind == "tokenizer" ? runtime::Stage::kTokenizer
                                                     : runtime::Stage::kDecoder;
  options.dtype = runtime::default_dtype(stage, options.device);
  return options;
}

void install_log_bridge() {
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    GST_DEBUG_CATEGORY_INIT(glmvoicelib_debug, "glmvoicelib", 0, "glmvoice model library");
    runtime::set_log_hook([](runtime::LogLevel level, const std::string& message) {
      switch (level) {
        case runtime::LogLevel::kDebug: GST_DEBUG("%s", message.c_str()); break;
        case runtime::LogLevel::kInfo: GST_INFO("%s", message.c_str()); break;
        case runtime::LogLevel::kWarning: GST_WARNING("%s", message.c_str()); break;
      }
    });
    g_once_init_leave(&once, 1);
  }
}

void post_load_progress(GstElement* element, GstProgressType type, const std::string& text) {
  gst_element_post_message(element, gst_message_new_progress(GST_OBJECT(element), type,
                                                             "load-model", text.c_str()));
}

}  // namespace glmvoice::gst
