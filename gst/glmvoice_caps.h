// Caps of the glmvoice elements (ARCHITECTURE.md "Data between elements").
#pragma once

#include <gst/gst.h>

G_BEGIN_DECLS

// Speech tokens: little-endian int32 payload, one per token (80 ms each at 25/2 fps).
#define GST_GLM_VOICE_TOKENS_MEDIA_TYPE "audio/x-glm-speech-tokens"
#define GST_GLM_VOICE_TOKENS_CAPS_TEMPLATE \
  GST_GLM_VOICE_TOKENS_MEDIA_TYPE ", framerate=(fraction)25/2, codebook-size=(int)[1, MAX]"
// Text in/out of the LLM: complete UTF-8 sequences only.
#define GST_GLM_VOICE_TEXT_CAPS "text/x-raw, format=(string)utf8"

// Fixed token caps for a model whose codebook has `codebook_size` entries.
GstCaps* gst_glm_voice_tokens_caps_new(gint codebook_size);
// TRUE when `caps` are fixed token caps; sets `codebook_size` (may be NULL).
gboolean gst_glm_voice_tokens_caps_parse(const GstCaps* caps, gint* codebook_size);

// Duration of one speech token: 1 / framerate = 80 ms.
#define GST_GLM_VOICE_TOKEN_DURATION (GST_SECOND * 2 / 25)

// Wraps `n_tokens` int32 tokens in a new buffer (copies).
GstBuffer* gst_glm_voice_tokens_buffer_new(const gint32* tokens, gsize n_tokens);

G_END_DECLS

#ifdef __cplusplus
#include <cstdint>
#include <vector>

namespace glmvoice::gst {

enum class TokenRead { kOk, kMapFailed, kRagged };
// Reads the little-endian int32 tokens of `buffer` into `tokens`; kRagged when its size is
// not a multiple of 4 bytes (then `tokens` is left empty).
TokenRead read_tokens(GstBuffer* buffer, std::vector<int32_t>& tokens);

}  // namespace glmvoice::gst
#endif
