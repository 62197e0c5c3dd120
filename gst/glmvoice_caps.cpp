#include "glmvoice_caps.h"

#include <cstring>

GstCaps* gst_glm_voice_tokens_caps_new(gint codebook_size) {
  return gst_caps_new_simple(GST_GLM_VOICE_TOKENS_MEDIA_TYPE, "framerate", GST_TYPE_FRACTION, 25, 2,
                             "codebook-size", G_TYPE_INT, codebook_size, NULL);
}

gboolean gst_glm_voice_tokens_caps_parse(const GstCaps* caps, gint* codebook_size) {
  if (caps == nullptr || !gst_caps_is_fixed(caps)) return FALSE;
  const GstStructure* s = gst_caps_get_structure(caps, 0);
  if (!gst_structure_has_name(s, GST_GLM_VOICE_TOKENS_MEDIA_TYPE)) return FALSE;
  gint size = 0;
  if (!gst_structure_get_int(s, "codebook-size", &size) || size <= 0) return FALSE;
  if (codebook_size) *codebook_size = size;
  return TRUE;
}

GstBuffer* gst_glm_voice_tokens_buffer_new(const gint32* tokens, gsize n_tokens) {
  GstBuffer* buffer = gst_buffer_new_allocate(nullptr, n_tokens * sizeof(gint32), nullptr);
  GstMapInfo map;
  gst_buffer_map(buffer, &map, GST_MAP_WRITE);
  for (gsize i = 0; i < n_tokens; ++i) {
    guint32 le = GUINT32_TO_LE(static_cast<guint32>(tokens[i]));
    std::memcpy(map.data + i * sizeof(gint32), &le, sizeof(le));
  }
  gst_buffer_unmap(buffer, &map);
  return buffer;
}

namespace glmvoice::gst {

TokenRead read_tokens(GstBuffer* buffer, std::vector<int32_t>& tokens) {
  tokens.clear();
  GstMapInfo map;
  if (!gst_buffer_map(buffer, &map, GST_MAP_READ)) return TokenRead::kMapFailed;
  const bool ragged = map.size % sizeof(gint32) != 0;
  if (!ragged) {
    tokens.resize(map.size / sizeof(gint32));
    for (size_t i = 0; i < tokens.size(); ++i) {
      guint32 le;
      std::memcpy(&le, map.data + i * sizeof(gint32), sizeof(le));
      tokens[i] = static_cast<int32_t>(GUINT32_FROM_LE(le));
    }
  }
  gst_buffer_unmap(buffer, &map);
  return ragged ? TokenRead::kRagged : TokenRead::kOk;
}

}  // namespace glmvoice::gst
