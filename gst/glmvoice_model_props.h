// The model-path / device / dtype properties every glmvoice element has, and the NULL->READY
// load that uses them: one implementation so the three elements say and check the same.
//
//   class_init:    glmvoice::gst::ModelProperties::install(gobject_class, PROP_MODEL_PATH,
//                                                          "glm-4-voice-tokenizer", "Tokenizer");
//   instance:      glmvoice::gst::ModelProperties model_props{PROP_MODEL_PATH, "glm-4-voice-tokenizer"};
//   set_property:  if (impl->model_props.set_property(object, prop_id, value)) return;
//   get_property:  if (impl->model_props.get_property(object, prop_id, value)) return;
//   NULL->READY:   model = impl->model_props.load<TokenizerModel>(element, "tokenizer", "speech tokenizer");
//   READY->NULL:   impl->model_props.unload();
//
// The three property ids must be consecutive: model-path, device, dtype. All three are
// GST_PARAM_MUTABLE_READY. `device` is checked when set (a GLib warning names the bad value;
// the load then fails with RESOURCE/SETTINGS instead of falling back); `dtype` is a GEnum.
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

typedef enum {
  GST_GLM_VOICE_DTYPE_FLOAT32 = 0,
  GST_GLM_VOICE_DTYPE_BFLOAT16 = 1,
  GST_GLM_VOICE_DTYPE_FLOAT16 = 2,
  GST_GLM_VOICE_DTYPE_INT8 = 3,  // LLM only: int8 weights, bfloat16 activations
  GST_GLM_VOICE_DTYPE_INT4 = 4,  // LLM only: int4 weights (groups of 128), bfloat16 activations
  GST_GLM_VOICE_DTYPE_AUTO = 5,  // the stage default: LLM bfloat16 on CUDA, else float32
} GstGlmVoiceDtype;

GType gst_glm_voice_dtype_get_type(void);
#define GST_TYPE_GLM_VOICE_DTYPE (gst_glm_voice_dtype_get_type())

G_END_DECLS

#ifdef __cplusplus
#include <memory>
#include <optional>
#include <string>

#include "glmvoice_element_util.h"
#include "runtime/options.h"

namespace glmvoice::gst {

// Nick of a dtype value ("float32", "bfloat16", "float16", "int8", "int4", "auto").
const char* dtype_nick(GstGlmVoiceDtype dtype);

class ModelProperties {
 public:
  // `first_id`: id of model-path (device = first_id + 1, dtype = first_id + 2); `subdir`: the
  // Hugging Face repo name under $GLMVOICE_MODEL_DIR.
  ModelProperties(guint first_id, const char* subdir,
                  GstGlmVoiceDtype default_dtype = GST_GLM_VOICE_DTYPE_FLOAT32)
      : first_id_(first_id), subdir_(subdir), dtype_(default_dtype) {}

  // class_init: installs the three properties. `contents` names the files the directory
  // holds, for the model-path blurb ("config.json, model.safetensors").
  static void install(GObjectClass* klass, guint first_id, const char* subdir, const char* contents,
                      GstGlmVoiceDtype default_dtype = GST_GLM_VOICE_DTYPE_FLOAT32);

  // set/get_property for the three ids (they take the object lock); FALSE for other ids.
  bool set_property(GObject* object, guint prop_id, const GValue* value);
  bool get_property(GObject* object, guint prop_id, GValue* value);

  // The NULL->READY load (see load_shared_model): settings copied under the object lock,
  // the shared copy from the model cache. nullptr after posting the error. Remembers the
  // options in use so that `device` reads back an automatic choice.
  // `where`: the element's call site (GLMVOICE_HERE) for the error's debug location.
  template <class Model>
  std::shared_ptr<const Model> load(GstElement* element, const std::string& kind, const std::string& what,
                                    SourceLocation where = GLMVOICE_HERE) {
    GST_OBJECT_LOCK(element);
    const std::string path = path_, device = device_, dtype = dtype_nick(dtype_);
    GST_OBJECT_UNLOCK(element);
    auto model = load_shared_model<Model>(element, kind, what, path, subdir_, device, dtype, where);
    if (model) {
      GST_OBJECT_LOCK(element);
      loaded_ = model->options();
      GST_OBJECT_UNLOCK(element);
    }
    return model;
  }
  // READY->NULL: forgets the options in use.
  void unload(GstElement* element);

 private:
  const guint first_id_;
  const std::string subdir_;
  // Settings and the options in use: protected by the element's object lock.
  std::string path_;
  std::string device_;  // "" = CUDA when available
  GstGlmVoiceDtype dtype_;
  std::optional<ModelOptions> loaded_;
};

}  // namespace glmvoice::gst
#endif
