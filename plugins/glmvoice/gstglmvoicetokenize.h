/* glmvoicetokenize: GLM-4-Voice speech tokenizer element (16 kHz mono audio -> speech tokens).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_GLM_VOICE_TOKENIZE (gst_glm_voice_tokenize_get_type())
#define GST_GLM_VOICE_TOKENIZE(obj) \
  (G_TYPE_CHECK_INSTANCE_CAST((obj), GST_TYPE_GLM_VOICE_TOKENIZE, GstGlmVoiceTokenize))

typedef struct _GstGlmVoiceTokenize GstGlmVoiceTokenize;
typedef struct _GstGlmVoiceTokenizeClass GstGlmVoiceTokenizeClass;
struct GstGlmVoiceTokenizeImpl;

struct _GstGlmVoiceTokenize {
  GstElement parent;
  GstPad* sinkpad;
  GstPad* srcpad;
  GstGlmVoiceTokenizeImpl* impl; /* C++ side: made in init, deleted in finalize */
};

struct _GstGlmVoiceTokenizeClass {
  GstElementClass parent_class;
};

GType gst_glm_voice_tokenize_get_type(void);

GST_ELEMENT_REGISTER_DECLARE(glmvoicetokenize);

G_END_DECLS
