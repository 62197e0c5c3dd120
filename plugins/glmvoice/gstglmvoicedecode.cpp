/* glmvoicedecode: GLM-4-Voice speech decoder element.
 * SPDX-License-Identifier: Apache-2.0 */

/**
 * SECTION:element-glmvoicedecode
 * @title: glmvoicedecode
 *
 * Turns GLM-4-Voice speech tokens (12.5 per second) into 22050 Hz mono speech with the flow
 * matching decoder and the HiFT vocoder, streaming block by block as upstream's web demo does
 * (lib/voice/decoder_model.h, decoder spec §5).
 *
 * Caps: sink `audio/x-glm-speech-tokens, framerate=25/2, codebook-size=N` (N at most the
 * decoder's vocab_size; one little-endian int32 id per token); src `audio/x-raw,
 * format=F32LE, rate=22050, channels=1, layout=interleaved` (rate from the model config).
 *
 * One response (utterance) is decoded with a growing prompt: blocks of
 * #GstGlmVoiceDecode:block-sizes tokens (default 25, 50, 100, 150, 200, the last repeating)
 * are decoded once one more token has arrived (one-token lag), with a 34-frame mel cross-fade
 * and a one-frame vocoder cache between blocks. The custom downstream event end-of-response
 * (GstGlmVoiceEndOfResponse, sent by glmvoicellm) and EOS decode the pending tokens as the
 * final block, push that audio, then forward the event; the next tokens start a new response.
 * FLUSH drops everything pending. Token ids >= vocab_size are refused with a STREAM/DECODE
 * error.
 *
 * Timestamps: sample-accurate from the start of each response: PTS = anchor + samples / 22050,
 * offset = running sample count. The anchor is the PTS of the response's first token buffer
 * (or the end of the previous audio when that is later or the PTS is missing); in a live
 * pipeline it is moved forward to the running time at which the response's first audio is
 * ready, so the audio is never late by construction.
 *
 * ## Latency and live behaviour
 * The first audio of a response comes out when block-sizes[0] + 1 tokens have arrived (the
 * block plus the one-token lag) and the first block has been decoded. The latency query adds
 * `(block-sizes[0] + 1) x 80 ms + compute` to upstream's, where compute is the measured time
 * of the last first-block decode (0 until one was measured; a latency message is posted when
 * it is first measured or grows). Default: 26 x 80 ms = 2.08 s + compute. Later blocks are
 * longer than the audio they wait for, so a real-time source never waits longer than that.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=speech.wav ! decodebin ! audioconvert ! audioresample ! \
 *     glmvoicetokenize ! glmvoicedecode model-path=/models/glm-4-voice-decoder ! \
 *     audioconvert ! wavenc ! filesink location=resynth.wav
 * ]|
 * (run with the tiny models from glmvoice-mkmodel on CPU in tests/elements/test_glmvoicedecode.cpp.)
 */

#include "gstglmvoicedecode.h"

#include <gst/audio/audio.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "glmvoice_caps.h"
#include "glmvoice_element_util.h"
#include "glmvoice_events.h"
#include "glmvoice_model_cache.h"
#include "voice/decoder_model.h"

GST_DEBUG_CATEGORY_STATIC(gst_glm_voice_decode_debug);
#define GST_CAT_DEFAULT gst_glm_voice_decode_debug

#define DEFAULT_MODEL_PATH ""
#define DEFAULT_DEVICE ""
#define DEFAULT_DTYPE "float32"
#define DEFAULT_BLOCK_SIZES "25,50,100,150,200" /* web_demo.py block_size_list */
#define DEFAULT_SEED 42                         /* ConditionalCFM torch.manual_seed(42) */
#define DEFAULT_N_TIMESTEPS 10                  /* flow.py n_timesteps=10 */
#define DEFAULT_CFG_RATE -1.0                   /* < 0: inference_cfg_rate from config.yaml */
/* Model subdirectory under $GLMVOICE_MODEL_DIR (the Hugging Face repo name). */
#define MODEL_SUBDIR "glm-4-voice-decoder"

enum {
  PROP_0,
  PROP_MODEL_PATH,
  PROP_DEVICE,
  PROP_DTYPE,
  PROP_BLOCK_SIZES,
  PROP_SEED,
  PROP_N_TIMESTEPS,
  PROP_CFG_RATE,
};

#define SRC_CAPS "audio/x-raw, format=(string)F32LE, rate=(int)[1, MAX], channels=(int)1, layout=(string)interleaved"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_GLM_VOICE_TOKENS_CAPS_TEMPLATE));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(SRC_CAPS));

struct GstGlmVoiceDecodeImpl {
  // Settings: protected by the object lock; model ones copied at NULL->READY, stream ones
  // each time a State is made (READY->PAUSED, after every response, after a flush).
  std::string model_path = DEFAULT_MODEL_PATH;
  std::string device = DEFAULT_DEVICE;
  std::string dtype = DEFAULT_DTYPE;
  std::vector<int64_t> block_sizes = glmvoice::voice::parse_block_sizes(DEFAULT_BLOCK_SIZES);
  guint64 seed = DEFAULT_SEED;
  gint n_timesteps = DEFAULT_N_TIMESTEPS;
  gdouble cfg_rate = DEFAULT_CFG_RATE;

  // Set at NULL->READY, dropped at READY->NULL (object lock for readers outside streaming).
  std::shared_ptr<const glmvoice::voice::DecoderModel> model;
  GstClockTime compute_latency = 0;  // measured first-block decode time (object lock)

  // Streaming state: protected by the sink pad's stream lock.
  std::unique_ptr<glmvoice::voice::DecoderState> state;
  GstSegment segment;
  bool have_caps = false;
  gint rate = 22050;
  bool live = false;
  bool live_known = false;
  bool in_response = false;                            // tokens received since the last finish
  GstClockTime token_anchor = GST_CLOCK_TIME_NONE;     // PTS of the response's first tokens
  GstClockTime anchor = GST_CLOCK_TIME_NONE;           // PTS of the response's first sample
  guint64 response_samples = 0;
  GstClockTime next_pts = GST_CLOCK_TIME_NONE;         // end of the last pushed audio
  guint64 sample_offset = 0;
  bool discont = true;

  void reset_response() {
    in_response = false;
    token_anchor = GST_CLOCK_TIME_NONE;
    anchor = GST_CLOCK_TIME_NONE;
    response_samples = 0;
  }
};

#define gst_glm_voice_decode_parent_class parent_class
G_DEFINE_TYPE(GstGlmVoiceDecode, gst_glm_voice_decode, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE(glmvoicedecode, "glmvoicedecode", GST_RANK_NONE, GST_TYPE_GLM_VOICE_DECODE);

static void gst_glm_voice_decode_finalize(GObject* object);
static void gst_glm_voice_decode_set_property(GObject* object, guint prop_id, const GValue* value,
                                              GParamSpec* pspec);
static void gst_glm_voice_decode_get_property(GObject* object, guint prop_id, GValue* value,
                                              GParamSpec* pspec);
static GstStateChangeReturn gst_glm_voice_decode_change_state(GstElement* element, GstStateChange transition);
static gboolean gst_glm_voice_decode_sink_event(GstPad* pad, GstObject* parent, GstEvent* event);
static gboolean gst_glm_voice_decode_sink_query(GstPad* pad, GstObject* parent, GstQuery* query);
static gboolean gst_glm_voice_decode_src_query(GstPad* pad, GstObject* parent, GstQuery* query);
static GstFlowReturn gst_glm_voice_decode_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer);

static void gst_glm_voice_decode_class_init(GstGlmVoiceDecodeClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);

  GST_DEBUG_CATEGORY_INIT(gst_glm_voice_decode_debug, "glmvoicedecode", 0, "GLM-4-Voice speech decoder");

  gobject_class->finalize = gst_glm_voice_decode_finalize;
  gobject_class->set_property = gst_glm_voice_decode_set_property;
  gobject_class->get_property = gst_glm_voice_decode_get_property;

  const GParamFlags ready_only =
      (GParamFlags)(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY);
  const GParamFlags per_response =
      (GParamFlags)(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING);
  /**
   * GstGlmVoiceDecode:model-path:
   * Decoder directory (config.yaml, flow.pt, hift.pt). Empty: $GLMVOICE_MODEL_DIR/glm-4-voice-decoder.
   */
  g_object_class_install_property(
      gobject_class, PROP_MODEL_PATH,
      g_param_spec_string("model-path", "Model path",
                          "Decoder model directory (empty: $GLMVOICE_MODEL_DIR/" MODEL_SUBDIR ")",
                          DEFAULT_MODEL_PATH, ready_only));
  /**
   * GstGlmVoiceDecode:device:
   * "cpu", "cuda" or "cuda:N"; empty = CUDA when available. Reads back the device in use.
   */
  g_object_class_install_property(
      gobject_class, PROP_DEVICE,
      g_param_spec_string("device", "Device", "cpu, cuda, cuda:N (empty: CUDA when available)",
                          DEFAULT_DEVICE, ready_only));
  /**
   * GstGlmVoiceDecode:dtype:
   * Flow compute dtype: float32 (reference parity), bfloat16 or float16. The HiFT vocoder
   * always runs in float32 (its phase accumulation is ill-conditioned, spec P16).
   */
  g_object_class_install_property(
      gobject_class, PROP_DTYPE,
      g_param_spec_string("dtype", "Dtype", "float32, bfloat16 or float16 (flow only)", DEFAULT_DTYPE,
                          ready_only));
  /**
   * GstGlmVoiceDecode:block-sizes:
   * Comma-separated block schedule in tokens; the last entry repeats. Applies from the next
   * response.
   */
  g_object_class_install_property(
      gobject_class, PROP_BLOCK_SIZES,
      g_param_spec_string("block-sizes", "Block sizes",
                          "Tokens per decoded block, comma separated; the last one repeats",
                          DEFAULT_BLOCK_SIZES, per_response));
  /**
   * GstGlmVoiceDecode:seed:
   * Seed of the element's private generator, reseeded at every block (upstream: 42).
   */
  g_object_class_install_property(
      gobject_class, PROP_SEED,
      g_param_spec_uint64("seed", "Seed", "Noise seed, reseeded at every block", 0, G_MAXUINT64, DEFAULT_SEED,
                          per_response));
  /**
   * GstGlmVoiceDecode:n-timesteps:
   * Euler steps of the flow matching solver (each runs the estimator twice with CFG).
   */
  g_object_class_install_property(
      gobject_class, PROP_N_TIMESTEPS,
      g_param_spec_int("n-timesteps", "Euler steps", "Flow matching Euler steps", 1, 1000, DEFAULT_N_TIMESTEPS,
                       per_response));
  /**
   * GstGlmVoiceDecode:cfg-rate:
   * Classifier-free guidance weight; negative = the config's inference_cfg_rate (0.7); 0
   * disables the unconditional estimator pass. Reads back the value in use once loaded.
   */
  g_object_class_install_property(
      gobject_class, PROP_CFG_RATE,
      g_param_spec_double("cfg-rate", "CFG rate", "Classifier-free guidance weight (< 0: from config)", -1.0,
                          100.0, DEFAULT_CFG_RATE, per_response));

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "GLM-4-Voice speech decoder", "Codec/Decoder/Audio",
      "Turns GLM-4-Voice speech tokens into 22050 Hz speech (flow matching + HiFT), streaming", "glmvoice");
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_glm_voice_decode_change_state);
}

static void gst_glm_voice_decode_init(GstGlmVoiceDecode* self) {
  self->impl = new GstGlmVoiceDecodeImpl();
  gst_segment_init(&self->impl->segment, GST_FORMAT_TIME);

  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_chain));
  gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_sink_event));
  gst_pad_set_query_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_sink_query));
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_src_query));
  gst_pad_use_fixed_caps(self->srcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);
}

static void gst_glm_voice_decode_finalize(GObject* object) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(object);
  delete self->impl;
  self->impl = nullptr;
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_glm_voice_decode_set_property(GObject* object, guint prop_id, const GValue* value,
                                              GParamSpec* pspec) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(object);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  std::string bad_blocks;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_MODEL_PATH: {
      const gchar* s = g_value_get_string(value);
      impl->model_path = s ? s : "";
      break;
    }
    case PROP_DEVICE: {
      const gchar* s = g_value_get_string(value);
      impl->device = s ? s : "";
      break;
    }
    case PROP_DTYPE: {
      const gchar* s = g_value_get_string(value);
      impl->dtype = s ? s : DEFAULT_DTYPE;
      break;
    }
    case PROP_BLOCK_SIZES: {
      const gchar* s = g_value_get_string(value);
      try {
        impl->block_sizes = glmvoice::voice::parse_block_sizes(s ? s : DEFAULT_BLOCK_SIZES);
      } catch (const std::exception& e) {
        bad_blocks = e.what();
      }
      break;
    }
    case PROP_SEED:
      impl->seed = g_value_get_uint64(value);
      break;
    case PROP_N_TIMESTEPS:
      impl->n_timesteps = g_value_get_int(value);
      break;
    case PROP_CFG_RATE:
      impl->cfg_rate = g_value_get_double(value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK(self);
  if (!bad_blocks.empty()) GST_WARNING_OBJECT(self, "block-sizes ignored: %s", bad_blocks.c_str());
}

static void gst_glm_voice_decode_get_property(GObject* object, guint prop_id, GValue* value,
                                              GParamSpec* pspec) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(object);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_MODEL_PATH:
      g_value_set_string(value, impl->model_path.c_str());
      break;
    case PROP_DEVICE:
      g_value_set_string(value, impl->model && impl->device.empty() ? impl->model->options().device.str().c_str()
                                                                    : impl->device.c_str());
      break;
    case PROP_DTYPE:
      g_value_set_string(value, impl->dtype.c_str());
      break;
    case PROP_BLOCK_SIZES:
      g_value_set_string(value, glmvoice::voice::format_block_sizes(impl->block_sizes).c_str());
      break;
    case PROP_SEED:
      g_value_set_uint64(value, impl->seed);
      break;
    case PROP_N_TIMESTEPS:
      g_value_set_int(value, impl->n_timesteps);
      break;
    case PROP_CFG_RATE:
      g_value_set_double(value, impl->cfg_rate < 0 && impl->model ? impl->model->config().flow.inference_cfg_rate
                                                                  : impl->cfg_rate);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK(self);
}

static gboolean load_model(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  const std::string path = impl->model_path, device = impl->device, dtype = impl->dtype;
  GST_OBJECT_UNLOCK(self);
  auto model = glmvoice::gst::load_shared_model<glmvoice::voice::DecoderModel>(
      GST_ELEMENT(self), "decoder", "speech decoder", path, MODEL_SUBDIR, device, dtype);
  if (!model) return FALSE;
  GST_OBJECT_LOCK(self);
  impl->model = model;
  GST_OBJECT_UNLOCK(self);
  GST_INFO_OBJECT(self, "decoder %s on %s: vocab %" G_GINT64_FORMAT ", flow %" G_GINT64_FORMAT
                  " params, HiFT %" G_GINT64_FORMAT " params",
                  model->options().path.c_str(), model->options().device.str().c_str(), model->vocab_size(),
                  model->flow_parameters(), model->hift_parameters());
  return TRUE;
}

// A fresh State with the current stream settings (stream lock held, or not streaming).
static void make_state(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  glmvoice::voice::StreamOptions so;
  GST_OBJECT_LOCK(self);
  so.block_sizes = impl->block_sizes;
  so.seed = impl->seed;
  so.n_timesteps = impl->n_timesteps;
  so.cfg_rate = impl->cfg_rate;
  auto model = impl->model;
  GST_OBJECT_UNLOCK(self);
  impl->state = std::make_unique<glmvoice::voice::DecoderState>(model, so);
  impl->reset_response();
}

static GstStateChangeReturn gst_glm_voice_decode_change_state(GstElement* element, GstStateChange transition) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(element);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  switch (transition) {
    case GST_STATE_CHANGE_NULL_TO_READY:
      if (!load_model(self)) return GST_STATE_CHANGE_FAILURE;
      break;
    case GST_STATE_CHANGE_READY_TO_PAUSED:
      try {
        make_state(self);
      } catch (...) {
        glmvoice::gst::post_error(element, "Bad speech decoder settings", std::current_exception());
        return GST_STATE_CHANGE_FAILURE;
      }
      gst_segment_init(&impl->segment, GST_FORMAT_TIME);
      impl->have_caps = false;
      impl->live_known = false;
      impl->next_pts = GST_CLOCK_TIME_NONE;
      impl->sample_offset = 0;
      impl->discont = true;
      break;
    default:
      break;
  }

  const GstStateChangeReturn ret = GST_ELEMENT_CLASS(parent_class)->change_state(element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) return ret;

  switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      impl->state.reset();
      break;
    case GST_STATE_CHANGE_READY_TO_NULL:
      GST_OBJECT_LOCK(self);
      impl->model.reset();
      GST_OBJECT_UNLOCK(self);
      break;
    default:
      break;
  }
  return ret;
}

/* ---- output ------------------------------------------------------------------------------ */

// In a live pipeline, the stream time "now" (running time of the clock), else NONE.
static GstClockTime live_now(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (!impl->live_known) {
    GstQuery* q = gst_query_new_latency();
    gboolean live = FALSE;
    if (gst_pad_peer_query(self->sinkpad, q)) gst_query_parse_latency(q, &live, nullptr, nullptr);
    impl->live = live;
    gst_query_unref(q);
    impl->live_known = true;
  }
  if (!impl->live) return GST_CLOCK_TIME_NONE;
  GstClock* clock = gst_element_get_clock(GST_ELEMENT(self));
  if (!clock) return GST_CLOCK_TIME_NONE;
  const GstClockTime now = gst_clock_get_time(clock);
  gst_object_unref(clock);
  const GstClockTime base = gst_element_get_base_time(GST_ELEMENT(self));
  if (now < base) return GST_CLOCK_TIME_NONE;
  guint64 position = 0;
  if (gst_segment_position_from_running_time_full(&impl->segment, GST_FORMAT_TIME, now - base, &position) != 1) {
    return GST_CLOCK_TIME_NONE;
  }
  return position;
}

// Pushes `audio` (f32 [n]) with sample-accurate timestamps from the response start.
static GstFlowReturn push_audio(GstGlmVoiceDecode* self, const at::Tensor& audio) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  const gsize n = static_cast<gsize>(audio.numel());
  if (n == 0) return GST_FLOW_OK;
  if (!GST_CLOCK_TIME_IS_VALID(impl->anchor)) {
    GstClockTime a = impl->token_anchor;
    if (!GST_CLOCK_TIME_IS_VALID(a) || (GST_CLOCK_TIME_IS_VALID(impl->next_pts) && a < impl->next_pts)) {
      a = GST_CLOCK_TIME_IS_VALID(impl->next_pts) ? impl->next_pts : impl->segment.start;
    }
    const GstClockTime now = live_now(self);
    if (GST_CLOCK_TIME_IS_VALID(now) && now > a) a = now;
    impl->anchor = a;
    GST_DEBUG_OBJECT(self, "response audio starts at %" GST_TIME_FORMAT, GST_TIME_ARGS(a));
  }
  GstBuffer* buffer = gst_buffer_new_allocate(nullptr, n * sizeof(float), nullptr);
  GstMapInfo map;
  gst_buffer_map(buffer, &map, GST_MAP_WRITE);
  std::memcpy(map.data, audio.data_ptr<float>(), n * sizeof(float));  // F32LE on little-endian hosts
  gst_buffer_unmap(buffer, &map);
  const GstClockTime pts = impl->anchor + gst_util_uint64_scale_int(impl->response_samples, GST_SECOND, impl->rate);
  const GstClockTime end = impl->anchor + gst_util_uint64_scale_int(impl->response_samples + n, GST_SECOND, impl->rate);
  GST_BUFFER_PTS(buffer) = pts;
  GST_BUFFER_DURATION(buffer) = end - pts;
  GST_BUFFER_OFFSET(buffer) = impl->sample_offset;
  GST_BUFFER_OFFSET_END(buffer) = impl->sample_offset + n;
  if (impl->discont || pts != impl->next_pts) GST_BUFFER_FLAG_SET(buffer, GST_BUFFER_FLAG_DISCONT);
  impl->discont = false;
  impl->response_samples += n;
  impl->sample_offset += n;
  impl->next_pts = end;
  GST_LOG_OBJECT(self, "pushing %" G_GSIZE_FORMAT " samples at %" GST_TIME_FORMAT, n, GST_TIME_ARGS(pts));
  return gst_pad_push(self->srcpad, buffer);
}

// End of the response: the final block (or tail flush), its audio, then a fresh State.
static GstFlowReturn finish_response(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (!impl->state) return GST_FLOW_OK;
  GstFlowReturn ret = GST_FLOW_OK;
  if (impl->in_response || !impl->state->idle()) {
    const at::Tensor audio = impl->state->finish();
    GST_DEBUG_OBJECT(self, "response finished: %" G_GINT64_FORMAT " final samples", audio.numel());
    ret = push_audio(self, audio);
  }
  make_state(self);  // picks up changed block-sizes / seed / n-timesteps / cfg-rate
  return ret;
}

/* ---- events and queries ------------------------------------------------------------------ */

static gboolean gst_glm_voice_decode_sink_event(GstPad* pad, GstObject* parent, GstEvent* event) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  GST_LOG_OBJECT(self, "sink event %" GST_PTR_FORMAT, event);
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_CAPS: {
      GstCaps* caps;
      gst_event_parse_caps(event, &caps);
      gint codebook = 0;
      const gboolean ok = gst_glm_voice_tokens_caps_parse(caps, &codebook);
      if (!impl->model) {
        gst_event_unref(event);
        return FALSE;
      }
      const gint64 vocab = impl->model->vocab_size();
      if (!ok || codebook > vocab) {
        GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("Speech token caps do not match the speech decoder"),
                          ("got %" GST_PTR_FORMAT "; the decoder's vocab_size is %" G_GINT64_FORMAT, caps, vocab));
        gst_event_unref(event);
        return FALSE;
      }
      if (codebook != vocab) {
        GST_WARNING_OBJECT(self, "codebook-size %d smaller than the decoder vocab_size %" G_GINT64_FORMAT, codebook,
                           vocab);
      }
      gst_event_unref(event);
      impl->rate = static_cast<gint>(impl->model->sample_rate());
      GstCaps* src = gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "F32LE", "rate", G_TYPE_INT,
                                         impl->rate, "channels", G_TYPE_INT, 1, "layout", G_TYPE_STRING,
                                         "interleaved", nullptr);
      const gboolean set = gst_pad_set_caps(self->srcpad, src);
      gst_caps_unref(src);
      impl->have_caps = set;
      return set;
    }
    case GST_EVENT_SEGMENT: {
      const GstSegment* segment;
      gst_event_parse_segment(event, &segment);
      if (segment->format == GST_FORMAT_BYTES) {
        // A token stream read back from a file (filesrc): its audio starts at time 0.
        GST_DEBUG_OBJECT(self, "BYTES segment upstream: the audio gets a TIME segment from 0");
        gst_event_unref(event);
        gst_segment_init(&impl->segment, GST_FORMAT_TIME);
        return gst_pad_push_event(self->srcpad, gst_event_new_segment(&impl->segment));
      }
      if (segment->format != GST_FORMAT_TIME) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("glmvoicedecode needs a TIME (or BYTES) segment"),
                          ("got a %s segment", gst_format_get_name(segment->format)));
        gst_event_unref(event);
        return FALSE;
      }
      gst_segment_copy_into(segment, &impl->segment);
      return gst_pad_event_default(pad, parent, event);
    }
    case GST_EVENT_EOS: {
      try {
        finish_response(self);
      } catch (...) {
        glmvoice::gst::post_error(GST_ELEMENT(self), "Speech decoder failed", std::current_exception());
      }
      return gst_pad_event_default(pad, parent, event);
    }
    case GST_EVENT_FLUSH_STOP:
      try {
        make_state(self);
      } catch (...) {
        glmvoice::gst::post_error(GST_ELEMENT(self), "Speech decoder failed", std::current_exception());
      }
      impl->next_pts = GST_CLOCK_TIME_NONE;
      impl->discont = true;
      return gst_pad_event_default(pad, parent, event);
    case GST_EVENT_CUSTOM_DOWNSTREAM:
      if (gst_glm_voice_event_is_end_of_response(event)) {
        const gchar* reason = nullptr;
        gst_glm_voice_event_parse_end_of_response(event, &reason);
        GST_DEBUG_OBJECT(self, "end-of-response (%s)", reason ? reason : "no reason");
        try {
          finish_response(self);
        } catch (...) {
          glmvoice::gst::post_error(GST_ELEMENT(self), "Speech decoder failed", std::current_exception());
        }
      }
      return gst_pad_event_default(pad, parent, event);
    default:
      return gst_pad_event_default(pad, parent, event);
  }
}

static gboolean gst_glm_voice_decode_sink_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  if (GST_QUERY_TYPE(query) == GST_QUERY_CAPS) {
    // Token caps whose codebook fits the loaded decoder's vocabulary.
    GstCaps* filter = nullptr;
    gst_query_parse_caps(query, &filter);
    GstCaps* caps = gst_pad_get_pad_template_caps(pad);
    GST_OBJECT_LOCK(self);
    const gint64 vocab = self->impl->model ? self->impl->model->vocab_size() : 0;
    GST_OBJECT_UNLOCK(self);
    if (vocab > 0) {
      caps = gst_caps_make_writable(caps);
      gst_caps_set_simple(caps, "codebook-size", GST_TYPE_INT_RANGE, 1, static_cast<gint>(vocab), nullptr);
    }
    if (filter) {
      GstCaps* tmp = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
      gst_caps_unref(caps);
      caps = tmp;
    }
    gst_query_set_caps_result(query, caps);
    gst_caps_unref(caps);
    return TRUE;
  }
  return gst_pad_query_default(pad, parent, query);
}

static gboolean gst_glm_voice_decode_src_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  if (GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    if (!gst_pad_peer_query(self->sinkpad, query)) return FALSE;
    gboolean live;
    GstClockTime min, max;
    gst_query_parse_latency(query, &live, &min, &max);
    GST_OBJECT_LOCK(self);
    const GstClockTime ours = static_cast<GstClockTime>(self->impl->block_sizes.front() + 1) *
                                  GST_GLM_VOICE_TOKEN_DURATION +
                              self->impl->compute_latency;
    GST_OBJECT_UNLOCK(self);
    min += ours;
    if (GST_CLOCK_TIME_IS_VALID(max)) max += ours;
    GST_DEBUG_OBJECT(self, "latency: live %d, ours %" GST_TIME_FORMAT ", total min %" GST_TIME_FORMAT, live,
                     GST_TIME_ARGS(ours), GST_TIME_ARGS(min));
    gst_query_set_latency(query, live, min, max);
    return TRUE;
  }
  return gst_pad_query_default(pad, parent, query);
}

/* ---- streaming ----------------------------------------------------------------------------- */

static GstFlowReturn gst_glm_voice_decode_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer) {
  (void)pad;
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (!impl->have_caps || !impl->state) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("glmvoicedecode needs " GST_GLM_VOICE_TOKENS_MEDIA_TYPE " input"),
                      ("no caps received before the first buffer"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  std::vector<int32_t> ids;
  const glmvoice::gst::TokenRead read = glmvoice::gst::read_tokens(buffer, ids);
  if (read != glmvoice::gst::TokenRead::kOk) {
    const gsize size = gst_buffer_get_size(buffer);
    gst_buffer_unref(buffer);
    if (read == glmvoice::gst::TokenRead::kMapFailed) {
      GST_ELEMENT_ERROR(self, STREAM, FAILED, ("could not map an input buffer"), (nullptr));
    } else {
      GST_ELEMENT_ERROR(self, STREAM, DECODE, ("Malformed speech token buffer"),
                        ("%" G_GSIZE_FORMAT " bytes is not a whole number of int32 tokens", size));
    }
    return GST_FLOW_ERROR;
  }
  if (!impl->in_response && !ids.empty()) {
    impl->in_response = true;
    impl->token_anchor = GST_BUFFER_PTS(buffer);
  }
  gst_buffer_unref(buffer);

  GstFlowReturn ret = GST_FLOW_OK;
  try {
    const bool first_block = impl->response_samples == 0;
    const gint64 t0 = g_get_monotonic_time();
    const at::Tensor audio = impl->state->push(ids);
    if (first_block && audio.numel() > 0) {
      const GstClockTime compute = static_cast<GstClockTime>(g_get_monotonic_time() - t0) * GST_USECOND;
      GST_OBJECT_LOCK(self);
      const bool grew = compute > impl->compute_latency + impl->compute_latency / 5;
      if (grew) impl->compute_latency = compute;
      GST_OBJECT_UNLOCK(self);
      GST_DEBUG_OBJECT(self, "first block decoded in %" GST_TIME_FORMAT, GST_TIME_ARGS(compute));
      if (grew) gst_element_post_message(GST_ELEMENT(self), gst_message_new_latency(GST_OBJECT(self)));
    }
    ret = push_audio(self, audio);
  } catch (...) {
    glmvoice::gst::post_error(GST_ELEMENT(self), "Speech decoder failed", std::current_exception());
    ret = GST_FLOW_ERROR;
  }
  return ret;
}
