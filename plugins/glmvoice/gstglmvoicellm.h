/* glmvoicellm: GLM-4-Voice language model element (speech tokens / text in, interleaved
 * speech tokens + text out).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_GLM_VOICE_LLM (gst_glm_voice_llm_get_type())
#define GST_GLM_VOICE_LLM(obj) (G_TYPE_CHECK_INSTANCE_CAST((obj), GST_TYPE_GLM_VOICE_LLM, GstGlmVoiceLlm))

typedef struct _GstGlmVoiceLlm GstGlmVoiceLlm;
typedef struct _GstGlmVoiceLlmClass GstGlmVoiceLlmClass;
struct GstGlmVoiceLlmImpl;

struct _GstGlmVoiceLlm {
  GstElement parent;
  GstPad* sinkpad;     /* speech tokens of the user (always) */
  GstPad* textsinkpad; /* text of the user (request pad "text_sink"), or NULL */
  GstPad* srcpad;      /* speech tokens of the answer; runs the generation task */
  GstPad* textsrcpad;  /* text of the answer */
  GstGlmVoiceLlmImpl* impl; /* C++ side: made in init, deleted in finalize */
};

struct _GstGlmVoiceLlmClass {
  GstElementClass parent_class;
  /* action signal */
  void (*reset_history)(GstGlmVoiceLlm* self);
};

GType gst_glm_voice_llm_get_type(void);

GST_ELEMENT_REGISTER_DECLARE(glmvoicellm);

G_END_DECLS
