#include "glmvoice_model_props.h"

#include <exception>

GType gst_glm_voice_dtype_get_type(void) {
  static gsize type = 0;
  static const GEnumValue values[] = {
      {GST_GLM_VOICE_DTYPE_FLOAT32, "32-bit float (reference parity)", "float32"},
      {GST_GLM_VOICE_DTYPE_BFLOAT16, "bfloat16 (GPU)", "bfloat16"},
      {GST_GLM_VOICE_DTYPE_FLOAT16, "16-bit float (GPU)", "float16"},
      {GST_GLM_VOICE_DTYPE_INT8, "int8 weights, bfloat16 compute (LLM only)", "int8"},
      {GST_GLM_VOICE_DTYPE_INT4, "int4 weights in groups of 128, bfloat16 compute (LLM only)", "int4"},
      {GST_GLM_VOICE_DTYPE_AUTO, "the stage default (LLM: bfloat16 on CUDA, float32 on CPU)", "auto"},
      {0, nullptr, nullptr},
  };
  if (g_once_init_enter(&type)) {
    g_once_init_leave(&type, g_enum_register_static("GstGlmVoiceDtype", values));
  }
  return type;
}

namespace glmvoice::gst {

const char* dtype_nick(GstGlmVoiceDtype dtype) {
  GEnumValue* value = g_enum_get_value(
      static_cast<GEnumClass*>(g_type_class_peek(GST_TYPE_GLM_VOICE_DTYPE)), dtype);
  return value ? value->value_nick : "float32";
}

void ModelProperties::install(GObjectClass* klass, guint first_id, const char* subdir,
                              const char* contents, GstGlmVoiceDtype default_dtype) {
  const auto flags =
      static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY);
  g_type_class_ref(GST_TYPE_GLM_VOICE_DTYPE);  // dtype_nick peeks it
  // The blurbs are built once per class and live as long as the class (static strings).
  const gchar* path_blurb = g_intern_string(
      (std::string("Model directory in the Hugging Face layout (") + contents +
       "); empty: $GLMVOICE_MODEL_DIR/" + subdir)
          .c_str());
  g_object_class_install_property(
      klass, first_id,
      g_param_spec_string("model-path", "Model path", path_blurb, "", flags));
  g_object_class_install_property(
      klass, first_id + 1,
      g_param_spec_string("device", "Device",
                          "cpu, cuda or cuda:N; empty: CUDA when available, else CPU (reads back "
                          "the device in use once loaded)",
                          "", flags));
  g_object_class_install_property(
      klass, first_id + 2,
      g_param_spec_enum("dtype", "Dtype", "Compute dtype", GST_TYPE_GLM_VOICE_DTYPE, default_dtype,
                        flags));
}

bool ModelProperties::set_property(GObject* object, guint prop_id, const GValue* value) {
  if (prop_id < first_id_ || prop_id > first_id_ + 2) return false;
  if (prop_id == first_id_ + 1) {
    const gchar* device = g_value_get_string(value);
    try {
      runtime::parse_device(device ? device : "");
    } catch (const std::exception& e) {
      // Kept, so that the load fails with this reason instead of running elsewhere.
      g_warning("%s: device: %s", GST_OBJECT_NAME(object), e.what());
    }
  }
  GST_OBJECT_LOCK(object);
  if (prop_id == first_id_) {
    const gchar* path = g_value_get_string(value);
    path_ = path ? path : "";
  } else if (prop_id == first_id_ + 1) {
    const gchar* device = g_value_get_string(value);
    device_ = device ? device : "";
  } else {
    dtype_ = static_cast<GstGlmVoiceDtype>(g_value_get_enum(value));
  }
  GST_OBJECT_UNLOCK(object);
  return true;
}

bool ModelProperties::get_property(GObject* object, guint prop_id, GValue* value) {
  if (prop_id < first_id_ || prop_id > first_id_ + 2) return false;
  GST_OBJECT_LOCK(object);
  if (prop_id == first_id_) {
    g_value_set_string(value, path_.c_str());
  } else if (prop_id == first_id_ + 1) {
    // the device in use once loaded (shows an automatic choice)
    g_value_set_string(value, loaded_ && device_.empty() ? loaded_->device.str().c_str() : device_.c_str());
  } else {
    g_value_set_enum(value, dtype_);
  }
  GST_OBJECT_UNLOCK(object);
  return true;
}

void ModelProperties::unload(GstElement* element) {
  GST_OBJECT_LOCK(element);
  loaded_.reset();
  GST_OBJECT_UNLOCK(element);
}

}  // namespace glmvoice::gst
