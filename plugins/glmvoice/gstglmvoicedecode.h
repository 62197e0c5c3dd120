/* glmvoicedecode: GLM-4-Voice speech decoder element (speech tokens -> 22050 Hz mono audio).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

#define GST_TYPE_GLM_VOICE_DECODE (gst_glm_voice_decode_get_type())
#define GST_GLM_VOICE_DECODE(obj) \
  (G_TYPE_CHECK_INSTANCE_CAST((obj), GST_TYPE_GLM_VOICE_DECODE, GstGlmVoiceDecode))

typedef struct _GstGlmVoiceDecode GstGlmVoiceDecode;
typedef struct _GstGlmVoiceDecodeClass GstGlmVoiceDecodeClass;
struct GstGlmVoiceDecodeImpl;

struct _GstGlmVoiceDecode {
  GstElement parent;
  GstPad* sinkpad;
  GstPad* srcpad;
  GstGlmVoiceDecodeImpl* impl; /* C++ side: made in init, deleted in finalize */
};

struct _GstGlmVoiceDecodeClass {
  GstElementClass parent_class;
};

GType gst_glm_voice_decode_get_type(void);

GST_ELEMENT_REGISTER_DECLARE(glmvoicedecode);

G_END_DECLS
