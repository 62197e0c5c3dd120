/* glmvoicetokenize: GLM-4-Voice speech tokenizer element.
 * SPDX-License-Identifier: LGPL-2.1-or-later */

/**
 * SECTION:element-glmvoicetokenize
 * @title: glmvoicetokenize
 *
 * Turns 16 kHz mono speech into GLM-4-Voice speech tokens (Whisper-VQ tokenizer, 12.5 tokens
 * per second, one little-endian int32 id per 80 ms) with the streaming algorithm of
 * lib/speech/tokenizer_state.h.
 *
 * Caps: sink `audio/x-raw, format=F32LE, rate=16000, channels=1` (other formats are refused
 * at negotiation: put `audioconvert ! audioresample` in front); src
 * `audio/x-glm-speech-tokens, framerate=25/2, codebook-size=N` (N from the model config).
 * Each output buffer holds consecutive tokens; PTS = the input timestamp of the token's first
 * sample (token g of an utterance starts at sample 1280 g), duration 80 ms per token, offset
 * = running token count. A timestamp gap or DISCONT on the input re-anchors the clock and the
 * next output buffer carries DISCONT.
 *
 * Events sent: at EOS the partial attention block is flushed, its tokens pushed, then the
 * custom downstream event end-of-turn (GstGlmVoiceEndOfTurn), then EOS. With
 * #GstGlmVoiceTokenize:endpoint-silence-ms > 0 the same flush + end-of-turn happens after that
 * much trailing silence; the pause that follows belongs to no turn (it is skipped until a
 * 10 ms frame rises above #GstGlmVoiceTokenize:silence-threshold-db again, so an EOS after
 * the pause sends no silence-only turn), and the next speech starts a new utterance (live
 * conversations need no application code). FLUSH_STOP resets the stream state.
 *
 * start-of-speech (GstGlmVoiceStartOfSpeech, field timestamp) is sent as soon as the
 * endpointer hears speech begin (first 10 ms frame above the threshold after silence; also
 * with endpointing off), ahead of the tokens of that audio, for glmvoicellm's barge-in.
 *
 * GAP: outside an utterance it goes on at once; inside one it is tokenized as digital silence
 * (tokens stay in order and contiguous) and counts towards endpoint-silence-ms; the part of
 * it after an endpoint goes on as a GAP after the turn's tokens and end-of-turn.
 *
 * ## Latency and live behaviour
 * The tokens of one attention block (quantize_causal_block_size conv frames = 4.0 s, 50
 * tokens with the real model) are emitted when the first sample after the block arrives, so
 * latency = block + block compute: `block_samples / 16000` s (4.0 s; 30 s with
 * #GstGlmVoiceTokenize:offline-exact) + the largest measured block compute time (a LATENCY
 * message is posted as it grows), or #GstGlmVoiceTokenize:latency when set (one warning when
 * the need exceeds it). The LATENCY query adds it to upstream's only when upstream is live. The block's floor (max - 8 of the log-mel, spec §4.3) is the running
 * maximum of the segment so far: a louder sound later in the same 30 s segment can make the
 * ids differ from the offline tokenizer (spec §5.2); at an utterance end everything equals
 * the offline path.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 filesrc location=speech.wav ! decodebin ! audioconvert ! audioresample ! \
 *     glmvoicetokenize model-path=/models/glm-4-voice-tokenizer ! fakesink dump=true
 * ]|
 * (run on the tiny mk-a model from glmvoice-mkmodel, CPU.)
 */

#include "gstglmvoicetokenize.h"

#include <gst/audio/audio.h>

#include <memory>
#include <string>
#include <vector>

#include "glmvoice_caps.h"
#include "glmvoice_element_util.h"
#include "glmvoice_events.h"
#include "glmvoice_latency.h"
#include "glmvoice_model_props.h"
#include "speech/endpointer.h"
#include "speech/tokenizer_model.h"
#include "speech/tokenizer_state.h"

GST_DEBUG_CATEGORY_STATIC(gst_glm_voice_tokenize_debug);
#define GST_CAT_DEFAULT gst_glm_voice_tokenize_debug

#define DEFAULT_ENDPOINT_SILENCE_MS 0
#define DEFAULT_SILENCE_THRESHOLD_DB -50.0
#define DEFAULT_OFFLINE_EXACT FALSE
/* Model subdirectory under $GLMVOICE_MODEL_DIR (the Hugging Face repo name). */
#define MODEL_SUBDIR "glm-4-voice-tokenizer"
/* Input timestamps further than this from the sample count re-anchor the clock (cf.
 * audiobasesink alignment-threshold, 40 ms). */
#define ALIGNMENT_THRESHOLD (40 * GST_MSECOND)
#define SAMPLE_RATE 16000

enum {
  PROP_0,
  PROP_MODEL_PATH,
  PROP_DEVICE,
  PROP_DTYPE,
  PROP_ENDPOINT_SILENCE_MS,
  PROP_SILENCE_THRESHOLD_DB,
  PROP_OFFLINE_EXACT,
  PROP_LATENCY,
};

#define SINK_CAPS "audio/x-raw, format=(string)F32LE, rate=(int)16000, channels=(int)1, layout=(string)interleaved"

static GstStaticPadTemplate sink_template =
    GST_STATIC_PAD_TEMPLATE("sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(SINK_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_GLM_VOICE_TOKENS_CAPS_TEMPLATE));

namespace {

// Input sample index (in the utterance) -> timestamp, recorded at the start and at every gap.
struct Anchor {
  int64_t sample;
  GstClockTime pts;
};

}  // namespace

struct GstGlmVoiceTokenizeImpl {
  // Settings: protected by the object lock; copied at NULL->READY / READY->PAUSED.
  glmvoice::gst::ModelProperties model_props{PROP_MODEL_PATH, MODEL_SUBDIR};
  glmvoice::gst::LatencyBudget latency{PROP_LATENCY};
  guint endpoint_silence_ms = DEFAULT_ENDPOINT_SILENCE_MS;
  gdouble silence_threshold_db = DEFAULT_SILENCE_THRESHOLD_DB;
  gboolean offline_exact = DEFAULT_OFFLINE_EXACT;
  bool endpointing_changed = false;  // endpoint-silence-ms / silence-threshold-db set while streaming

  // Set at NULL->READY, dropped at READY->NULL (state-change thread; read by the
  // streaming thread only in PAUSED/PLAYING).
  std::shared_ptr<const glmvoice::speech::TokenizerModel> model;

  // Streaming state: protected by the sink pad's stream lock.
  std::unique_ptr<glmvoice::speech::TokenizerState> state;
  std::unique_ptr<glmvoice::speech::SilenceEndpointer> endpointer;
  GstSegment segment;
  bool have_caps = false;
  std::vector<Anchor> anchors;          // of the current utterance
  GstClockTime next_pts = GST_CLOCK_TIME_NONE;  // timestamp of the next input sample
  GstClockTime last_token_end = GST_CLOCK_TIME_NONE;
  bool discont = true;                  // mark the next output buffer DISCONT
  guint64 token_offset = 0;             // tokens pushed since start / flush
  // After an endpoint the pause is no part of any turn: input is skipped until speech
  // resumes, so an EOS after the pause does not make a silence-only turn.
  bool awaiting_speech = false;
  int64_t pause_frame_fill = 0;         // samples of the endpointer's current 10 ms frame

  void reset_stream() {
    if (state) state->reset();
    if (endpointer) endpointer->reset();
    anchors.clear();
    next_pts = GST_CLOCK_TIME_NONE;
    last_token_end = GST_CLOCK_TIME_NONE;
    discont = true;
    token_offset = 0;
    awaiting_speech = false;
    pause_frame_fill = 0;
  }
};

#define gst_glm_voice_tokenize_parent_class parent_class
G_DEFINE_TYPE(GstGlmVoiceTokenize, gst_glm_voice_tokenize, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE(glmvoicetokenize, "glmvoicetokenize", GST_RANK_NONE,
                            GST_TYPE_GLM_VOICE_TOKENIZE);

static void gst_glm_voice_tokenize_finalize(GObject* object);
static void gst_glm_voice_tokenize_set_property(GObject* object, guint prop_id, const GValue* value,
                                                GParamSpec* pspec);
static void gst_glm_voice_tokenize_get_property(GObject* object, guint prop_id, GValue* value,
                                                GParamSpec* pspec);
static GstStateChangeReturn gst_glm_voice_tokenize_change_state(GstElement* element,
                                                                GstStateChange transition);
static gboolean gst_glm_voice_tokenize_sink_event(GstPad* pad, GstObject* parent, GstEvent* event);
static gboolean gst_glm_voice_tokenize_sink_query(GstPad* pad, GstObject* parent, GstQuery* query);
static gboolean gst_glm_voice_tokenize_src_query(GstPad* pad, GstObject* parent, GstQuery* query);
static GstFlowReturn gst_glm_voice_tokenize_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer);

static void gst_glm_voice_tokenize_class_init(GstGlmVoiceTokenizeClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);

  GST_DEBUG_CATEGORY_INIT(gst_glm_voice_tokenize_debug, "glmvoicetokenize", 0,
                          "GLM-4-Voice speech tokenizer");

  gobject_class->finalize = gst_glm_voice_tokenize_finalize;
  gobject_class->set_property = gst_glm_voice_tokenize_set_property;
  gobject_class->get_property = gst_glm_voice_tokenize_get_property;

  /**
   * GstGlmVoiceTokenize:model-path:
   * Directory of the tokenizer in the Hugging Face layout (config.json,
   * preprocessor_config.json, model.safetensors). Empty: $GLMVOICE_MODEL_DIR/glm-4-voice-tokenizer.
   *
   * GstGlmVoiceTokenize:device:
   * "cpu", "cuda" or "cuda:N"; empty = CUDA when available, else CPU. Reads back the device
   * in use once the model is loaded.
   *
   * GstGlmVoiceTokenize:dtype:
   * Compute dtype: float32 (exact parity), bfloat16 or float16 (GPU). VQ distances stay float32.
   */
  glmvoice::gst::ModelProperties::install(gobject_class, PROP_MODEL_PATH, MODEL_SUBDIR,
                                          "config.json, preprocessor_config.json, model.safetensors");
  /**
   * GstGlmVoiceTokenize:endpoint-silence-ms:
   * After this much trailing silence (following speech) the element flushes the partial
   * block, sends end-of-turn and starts a new utterance. 0 disables endpointing (speech
   * starts are still detected for start-of-speech). Can be changed while PLAYING.
   */
  g_object_class_install_property(
      gobject_class, PROP_ENDPOINT_SILENCE_MS,
      g_param_spec_uint("endpoint-silence-ms", "Endpoint silence (ms)",
                        "Trailing silence that ends a turn (0 = off)", 0, 600000,
                        DEFAULT_ENDPOINT_SILENCE_MS,
                        (GParamFlags)(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING)));
  /**
   * GstGlmVoiceTokenize:silence-threshold-db:
   * 10 ms frames whose RMS level (dBFS) is below this count as silence for endpointing and
   * start-of-speech. Can be changed while PLAYING.
   */
  g_object_class_install_property(
      gobject_class, PROP_SILENCE_THRESHOLD_DB,
      g_param_spec_double("silence-threshold-db", "Silence threshold (dB)",
                          "RMS level in dBFS below which a 10 ms frame is silent", -200.0, 0.0,
                          DEFAULT_SILENCE_THRESHOLD_DB,
                          (GParamFlags)(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING)));

  /**
   * GstGlmVoiceTokenize:offline-exact:
   * Buffer each utterance segment (up to 30 s) and tokenize it when it ends, exactly like the
   * offline tokenizer (no running-maximum effect, spec §5.2) - for files; latency up to 30 s.
   */
  g_object_class_install_property(
      gobject_class, PROP_OFFLINE_EXACT,
      g_param_spec_boolean("offline-exact", "Offline exact",
                           "Tokenize whole segments (<= 30 s) at their end, exactly as offline "
                           "(latency up to 30 s)",
                           DEFAULT_OFFLINE_EXACT,
                           (GParamFlags)(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY)));
  /**
   * GstGlmVoiceTokenize:latency:
   * Latency budget in nanoseconds; 0 = automatic: one attention block (or one 30 s segment
   * with offline-exact) + the largest measured block compute time.
   */
  glmvoice::gst::LatencyBudget::install(
      gobject_class, PROP_LATENCY,
      "Latency budget in ns added in live pipelines (0 = automatic: one block + measured compute)");

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "GLM-4-Voice speech tokenizer", "Filter/Audio/Converter",
      "Turns 16 kHz mono speech into GLM-4-Voice speech tokens (12.5 per second)", "glmvoice");
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_glm_voice_tokenize_change_state);
}

static void gst_glm_voice_tokenize_init(GstGlmVoiceTokenize* self) {
  self->impl = new GstGlmVoiceTokenizeImpl();
  gst_segment_init(&self->impl->segment, GST_FORMAT_TIME);

  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_tokenize_chain));
  gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_tokenize_sink_event));
  gst_pad_set_query_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_tokenize_sink_query));
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_tokenize_src_query));
  gst_pad_use_fixed_caps(self->srcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);
}

static void gst_glm_voice_tokenize_finalize(GObject* object) {
  GstGlmVoiceTokenize* self = GST_GLM_VOICE_TOKENIZE(object);
  delete self->impl;
  self->impl = nullptr;
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_glm_voice_tokenize_set_property(GObject* object, guint prop_id, const GValue* value,
                                                GParamSpec* pspec) {
  GstGlmVoiceTokenize* self = GST_GLM_VOICE_TOKENIZE(object);
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  if (impl->model_props.set_property(object, prop_id, value)) return;
  if (impl->latency.set_property(GST_ELEMENT(self), prop_id, value)) return;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_ENDPOINT_SILENCE_MS:
      impl->endpoint_silence_ms = g_value_get_uint(value);
      impl->endpointing_changed = true;
      break;
    case PROP_SILENCE_THRESHOLD_DB:
      impl->silence_threshold_db = g_value_get_double(value);
      impl->endpointing_changed = true;
      break;
    case PROP_OFFLINE_EXACT:
      impl->offline_exact = g_value_get_boolean(value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_glm_voice_tokenize_get_property(GObject* object, guint prop_id, GValue* value,
                                                GParamSpec* pspec) {
  GstGlmVoiceTokenize* self = GST_GLM_VOICE_TOKENIZE(object);
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  if (impl->model_props.get_property(object, prop_id, value)) return;
  if (impl->latency.get_property(GST_ELEMENT(self), prop_id, value)) return;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_ENDPOINT_SILENCE_MS:
      g_value_set_uint(value, impl->endpoint_silence_ms);
      break;
    case PROP_SILENCE_THRESHOLD_DB:
      g_value_set_double(value, impl->silence_threshold_db);
      break;
    case PROP_OFFLINE_EXACT:
      g_value_set_boolean(value, impl->offline_exact);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK(self);
}

// What the tokenizer waits for before a token can come out: one attention block of input
// (one 30 s segment with offline-exact).
static GstClockTime input_delay(const glmvoice::speech::TokenizerConfig& config, bool offline_exact) {
  return gst_util_uint64_scale_int(offline_exact ? config.segment_samples() : config.block_samples(), GST_SECOND,
                                   static_cast<gint>(config.features.sampling_rate));
}

static gboolean load_model(GstGlmVoiceTokenize* self) {
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  auto model = impl->model_props.load<glmvoice::speech::TokenizerModel>(GST_ELEMENT(self), "tokenizer",
                                                                        "speech tokenizer", GLMVOICE_HERE);
  if (!model) return FALSE;
  const auto& config = model->config();
  GST_OBJECT_LOCK(self);
  impl->model = model;
  const bool offline_exact = impl->offline_exact;
  GST_OBJECT_UNLOCK(self);
  impl->latency.set_inherent(GST_ELEMENT(self), input_delay(config, offline_exact));
  GST_INFO_OBJECT(self, "tokenizer %s on %s: d_model %" G_GINT64_FORMAT ", %" G_GINT64_FORMAT
                  " layers, codebook %" G_GINT64_FORMAT ", block %" G_GINT64_FORMAT " frames",
                  model->options().path.c_str(), model->options().device.str().c_str(), config.d_model,
                  config.quantize_position, config.vocab_size, config.block_size);
  return TRUE;
}

static GstStateChangeReturn gst_glm_voice_tokenize_change_state(GstElement* element,
                                                                GstStateChange transition) {
  GstGlmVoiceTokenize* self = GST_GLM_VOICE_TOKENIZE(element);
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  switch (transition) {
    case GST_STATE_CHANGE_NULL_TO_READY:
      if (!load_model(self)) return GST_STATE_CHANGE_FAILURE;
      break;
    case GST_STATE_CHANGE_READY_TO_PAUSED: {
      GST_OBJECT_LOCK(self);
      const guint silence_ms = impl->endpoint_silence_ms;
      const gdouble threshold = impl->silence_threshold_db;
      impl->endpointing_changed = false;
      glmvoice::speech::TokenizerStreamOptions stream_options;
      stream_options.offline_exact = impl->offline_exact;
      GST_OBJECT_UNLOCK(self);
      impl->latency.set_inherent(element, input_delay(impl->model->config(), stream_options.offline_exact));
      impl->state = std::make_unique<glmvoice::speech::TokenizerState>(impl->model, stream_options);
      // Always there: with endpoint-silence-ms = 0 it only detects speech starts.
      impl->endpointer = std::make_unique<glmvoice::speech::SilenceEndpointer>(
          threshold, silence_ms, impl->model->config().features.sampling_rate);
      gst_segment_init(&impl->segment, GST_FORMAT_TIME);
      impl->have_caps = false;
      impl->reset_stream();
      break;
    }
    default:
      break;
  }

  const GstStateChangeReturn ret = GST_ELEMENT_CLASS(parent_class)->change_state(element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) return ret;

  switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      impl->state.reset();
      impl->endpointer.reset();
      impl->anchors.clear();
      break;
    case GST_STATE_CHANGE_READY_TO_NULL:
      GST_OBJECT_LOCK(self);
      impl->model.reset();
      GST_OBJECT_UNLOCK(self);
      impl->model_props.unload(element);
      impl->latency.reset_measured(element);
      break;
    default:
      break;
  }
  return ret;
}

/* ---- timestamps ---------------------------------------------------------------------- */

// Timestamp of utterance sample `sample` from the anchors (GST_CLOCK_TIME_NONE if none).
static GstClockTime sample_time(const GstGlmVoiceTokenizeImpl* impl, int64_t sample) {
  const Anchor* anchor = nullptr;
  for (const Anchor& a : impl->anchors) {
    if (a.sample <= sample) anchor = &a;
  }
  if (!anchor || !GST_CLOCK_TIME_IS_VALID(anchor->pts)) return GST_CLOCK_TIME_NONE;
  return anchor->pts + gst_util_uint64_scale_int(sample - anchor->sample, GST_SECOND, SAMPLE_RATE);
}

// Pushes `ids` (tokens first_token .. of the utterance) in runs of contiguous timestamps.
static GstFlowReturn push_tokens(GstGlmVoiceTokenize* self, const std::vector<int32_t>& ids,
                                 int64_t first_token) {
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  const int64_t per_token = impl->model->config().samples_per_token();
  size_t i = 0;
  while (i < ids.size()) {
    const GstClockTime pts = sample_time(impl, (first_token + static_cast<int64_t>(i)) * per_token);
    size_t j = i + 1;
    while (j < ids.size()) {
      const GstClockTime t = sample_time(impl, (first_token + static_cast<int64_t>(j)) * per_token);
      if (!GST_CLOCK_TIME_IS_VALID(pts) || t != pts + (j - i) * GST_GLM_VOICE_TOKEN_DURATION) break;
      ++j;
    }
    GstBuffer* buffer = gst_glm_voice_tokens_buffer_new(ids.data() + i, j - i);
    GST_BUFFER_PTS(buffer) = pts;
    GST_BUFFER_DURATION(buffer) = (j - i) * GST_GLM_VOICE_TOKEN_DURATION;
    GST_BUFFER_OFFSET(buffer) = impl->token_offset;
    GST_BUFFER_OFFSET_END(buffer) = impl->token_offset + (j - i);
    if (impl->discont || !GST_CLOCK_TIME_IS_VALID(pts) || pts != impl->last_token_end) {
      GST_BUFFER_FLAG_SET(buffer, GST_BUFFER_FLAG_DISCONT);
    }
    impl->discont = false;
    impl->token_offset += j - i;
    impl->last_token_end = GST_CLOCK_TIME_IS_VALID(pts) ? pts + GST_BUFFER_DURATION(buffer)
                                                        : GST_CLOCK_TIME_NONE;
    GST_LOG_OBJECT(self, "pushing %zu tokens at %" GST_TIME_FORMAT, j - i, GST_TIME_ARGS(pts));
    const GstFlowReturn ret = gst_pad_push(self->srcpad, buffer);
    if (ret != GST_FLOW_OK) return ret;
    i = j;
  }
  return GST_FLOW_OK;
}

// Ends the utterance: last partial block, its tokens, then end-of-turn.
static GstFlowReturn finish_utterance(GstGlmVoiceTokenize* self, bool at_endpoint) {
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  impl->awaiting_speech = at_endpoint;
  impl->pause_frame_fill = 0;
  if (!impl->state || impl->state->samples_pushed() == 0) return GST_FLOW_OK;
  const int64_t first = impl->state->tokens_emitted();
  const GstClockTime end = sample_time(impl, impl->state->samples_pushed());
  const std::vector<int32_t> ids = impl->state->finish();
  GstFlowReturn ret = push_tokens(self, ids, first);
  impl->anchors.clear();
  impl->next_pts = end;
  if (impl->endpointer) impl->endpointer->reset();
  GST_DEBUG_OBJECT(self, "end of turn after %zu final tokens", ids.size());
  gst_pad_push_event(self->srcpad, gst_glm_voice_event_new_end_of_turn());
  return ret;
}

/* ---- events and queries ------------------------------------------------------------- */

static GstFlowReturn gst_glm_voice_tokenize_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer);

// Forwards GAP [timestamp, +duration) clipped so that it never starts before the end of the
// tokens already pushed.
static void forward_gap(GstGlmVoiceTokenize* self, GstClockTime timestamp, GstClockTime duration) {
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  GstClockTime start = timestamp;
  if (GST_CLOCK_TIME_IS_VALID(impl->last_token_end) && impl->last_token_end > start) start = impl->last_token_end;
  GstClockTime length = duration;
  if (GST_CLOCK_TIME_IS_VALID(duration)) {
    const GstClockTime end = timestamp + duration;
    if (end <= start) return;  // all of it is covered by tokens already
    length = end - start;
  }
  GST_LOG_OBJECT(self, "forwarding gap %" GST_TIME_FORMAT " + %" GST_TIME_FORMAT, GST_TIME_ARGS(start),
                 GST_TIME_ARGS(length));
  gst_pad_push_event(self->srcpad, gst_event_new_gap(start, length));
}

// GAP: no audio for [timestamp, +duration), i.e. silence. Outside an utterance nothing is
// pending, so it goes on at once. Inside one it is tokenized as digital silence (that is what
// the user heard; it counts towards endpoint-silence-ms), so the tokens stay in order and
// contiguous; what is left of it after an endpoint it causes goes on as a GAP after them.
static GstFlowReturn handle_gap(GstGlmVoiceTokenize* self, GstClockTime timestamp, GstClockTime duration) {
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  const bool in_utterance = impl->state && impl->have_caps && impl->state->samples_pushed() > 0 &&
                            !impl->awaiting_speech;
  if (!in_utterance || !GST_CLOCK_TIME_IS_VALID(timestamp) || !GST_CLOCK_TIME_IS_VALID(duration)) {
    if (in_utterance) {
      // A GAP of unknown length inside an utterance: the next buffer's timestamp re-anchors.
      GST_DEBUG_OBJECT(self, "dropping a gap without timestamp or duration inside an utterance");
      return GST_FLOW_OK;
    }
    if (GST_CLOCK_TIME_IS_VALID(timestamp) && GST_CLOCK_TIME_IS_VALID(duration)) {
      impl->next_pts = timestamp + duration;
    }
    forward_gap(self, timestamp, duration);
    return GST_FLOW_OK;
  }
  GST_DEBUG_OBJECT(self, "gap of %" GST_TIME_FORMAT " inside an utterance: tokenized as silence",
                   GST_TIME_ARGS(duration));
  const int64_t total = static_cast<int64_t>(gst_util_uint64_scale_round(duration, SAMPLE_RATE, GST_SECOND));
  constexpr int64_t kPiece = SAMPLE_RATE;  // one second of zeros at a time
  GstFlowReturn ret = GST_FLOW_OK;
  for (int64_t done = 0; done < total && ret == GST_FLOW_OK; done += kPiece) {
    const int64_t n = std::min(kPiece, total - done);
    GstBuffer* zeros = gst_buffer_new_allocate(nullptr, n * sizeof(float), nullptr);
    gst_buffer_memset(zeros, 0, 0, n * sizeof(float));
    GST_BUFFER_PTS(zeros) = timestamp + gst_util_uint64_scale_int(done, GST_SECOND, SAMPLE_RATE);
    GST_BUFFER_DURATION(zeros) = gst_util_uint64_scale_int(n, GST_SECOND, SAMPLE_RATE);
    ret = gst_glm_voice_tokenize_chain(self->sinkpad, GST_OBJECT(self), zeros);
  }
  // An endpoint in the gap ended the utterance: the rest of the gap belongs to no turn.
  if (ret == GST_FLOW_OK && impl->awaiting_speech) forward_gap(self, timestamp, duration);
  return ret;
}

static gboolean gst_glm_voice_tokenize_sink_event(GstPad* pad, GstObject* parent, GstEvent* event) {
  GstGlmVoiceTokenize* self = GST_GLM_VOICE_TOKENIZE(parent);
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  GST_LOG_OBJECT(self, "sink event %" GST_PTR_FORMAT, event);
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_CAPS: {
      gst_event_unref(event);
      if (!impl->model) return FALSE;
      impl->have_caps = true;
      GstCaps* caps = gst_glm_voice_tokens_caps_new(static_cast<gint>(impl->model->config().vocab_size));
      const gboolean ok = gst_pad_set_caps(self->srcpad, caps);
      gst_caps_unref(caps);
      return ok;
    }
    case GST_EVENT_SEGMENT: {
      const GstSegment* segment;
      gst_event_parse_segment(event, &segment);
      if (segment->format != GST_FORMAT_TIME) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("glmvoicetokenize needs a TIME segment"),
                          ("got a %s segment", gst_format_get_name(segment->format)));
        gst_event_unref(event);
        return FALSE;
      }
      gst_segment_copy_into(segment, &impl->segment);
      return gst_pad_event_default(pad, parent, event);
    }
    case GST_EVENT_EOS: {
      try {
        finish_utterance(self, false);
      } catch (...) {
        glmvoice::gst::post_error(GST_ELEMENT(self), "Speech tokenizer failed", std::current_exception());
      }
      return gst_pad_event_default(pad, parent, event);
    }
    case GST_EVENT_FLUSH_STOP:
      impl->reset_stream();
      return gst_pad_event_default(pad, parent, event);
    case GST_EVENT_GAP: {
      GstClockTime timestamp, duration;
      gst_event_parse_gap(event, &timestamp, &duration);
      gst_event_unref(event);
      return handle_gap(self, timestamp, duration) == GST_FLOW_OK;
    }
    default:
      return gst_pad_event_default(pad, parent, event);
  }
}

static gboolean gst_glm_voice_tokenize_sink_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  if (GST_QUERY_TYPE(query) == GST_QUERY_ACCEPT_CAPS) {
    const gboolean ret = gst_pad_query_default(pad, parent, query);
    gboolean accepted = FALSE;
    GstCaps* caps = nullptr;
    gst_query_parse_accept_caps_result(query, &accepted);
    gst_query_parse_accept_caps(query, &caps);
    if (!accepted) {
      GST_WARNING_OBJECT(parent,
                         "refusing %" GST_PTR_FORMAT ": glmvoicetokenize needs " SINK_CAPS
                         " (put audioconvert ! audioresample in front)",
                         caps);
    }
    return ret;
  }
  return gst_pad_query_default(pad, parent, query);
}

static gboolean gst_glm_voice_tokenize_src_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  GstGlmVoiceTokenize* self = GST_GLM_VOICE_TOKENIZE(parent);
  if (GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    return self->impl->latency.answer_query(GST_ELEMENT(self), self->sinkpad, query);
  }
  return gst_pad_query_default(pad, parent, query);
}

/* ---- streaming ------------------------------------------------------------------------ */

static GstClockTime sample_time_offset(int64_t samples) {
  return gst_util_uint64_scale_int(static_cast<guint64>(samples), GST_SECOND, SAMPLE_RATE);
}

// While awaiting speech after an endpoint: feeds the endpointer 10 ms frame by frame and
// returns how many samples of `x` belong to the pause. Speech resumes at the start of the
// first frame piece that made the endpointer see a non-silent frame (awaiting_speech is
// then cleared and the endpointer reset, so that frame is examined again as speech).
static int64_t skip_pause(GstGlmVoiceTokenizeImpl* impl, const float* x, int64_t n) {
  constexpr int64_t kFrame = SAMPLE_RATE / 100;
  int64_t scanned = 0;
  while (scanned < n) {
    const int64_t step = std::min(kFrame - impl->pause_frame_fill, n - scanned);
    impl->endpointer->push(x + scanned, step);
    impl->pause_frame_fill = (impl->pause_frame_fill + step) % kFrame;
    if (impl->endpointer->in_speech()) {
      impl->endpointer->reset();
      impl->awaiting_speech = false;
      impl->pause_frame_fill = 0;
      return scanned;
    }
    scanned += step;
  }
  return scanned;
}

// endpoint-silence-ms / silence-threshold-db changed while streaming: apply them now.
static void apply_endpointing_settings(GstGlmVoiceTokenize* self) {
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  const bool changed = impl->endpointing_changed;
  impl->endpointing_changed = false;
  const guint silence_ms = impl->endpoint_silence_ms;
  const gdouble threshold = impl->silence_threshold_db;
  GST_OBJECT_UNLOCK(self);
  if (!changed) return;
  GST_DEBUG_OBJECT(self, "endpointing now %u ms below %.1f dB", silence_ms, threshold);
  impl->endpointer->configure(threshold, silence_ms);
}

// The endpointer heard speech begin: the frame ending at utterance sample `frame_end`.
// Sent at once (ahead of the tokens of that audio, which wait for their block) so that a
// barge-in stops the answer the user talks over without a block's delay.
static void send_start_of_speech(GstGlmVoiceTokenize* self, int64_t frame_end) {
  constexpr int64_t kFrame = SAMPLE_RATE / 100;  // the endpointer's 10 ms frame
  const GstClockTime start = sample_time(self->impl, std::max<int64_t>(0, frame_end - kFrame));
  GST_DEBUG_OBJECT(self, "start of speech at %" GST_TIME_FORMAT, GST_TIME_ARGS(start));
  gst_pad_push_event(self->srcpad, gst_glm_voice_event_new_start_of_speech(start));
}

static GstFlowReturn gst_glm_voice_tokenize_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer) {
  (void)pad;
  GstGlmVoiceTokenize* self = GST_GLM_VOICE_TOKENIZE(parent);
  GstGlmVoiceTokenizeImpl* impl = self->impl;
  if (!impl->have_caps || !impl->state) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION,
                      ("glmvoicetokenize needs audio/x-raw, F32LE, 16000 Hz, mono input: put "
                       "audioconvert ! audioresample in front of it"),
                      ("no caps received before the first buffer"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  GstMapInfo map;
  if (!gst_buffer_map(buffer, &map, GST_MAP_READ)) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("could not map an input buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  const float* samples = reinterpret_cast<const float*>(map.data);
  const int64_t count = static_cast<int64_t>(map.size / sizeof(float));
  GstClockTime pts = GST_BUFFER_PTS(buffer);
  const bool discont = GST_BUFFER_FLAG_IS_SET(buffer, GST_BUFFER_FLAG_DISCONT);
  GstFlowReturn ret = GST_FLOW_OK;
  apply_endpointing_settings(self);

  try {
    int64_t done = 0;
    while (done < count) {
      if (impl->awaiting_speech) {
        const int64_t skipped = skip_pause(impl, samples + done, count - done);
        done += skipped;
        if (GST_CLOCK_TIME_IS_VALID(pts)) {
          impl->next_pts = pts + sample_time_offset(done);
        } else if (GST_CLOCK_TIME_IS_VALID(impl->next_pts)) {
          impl->next_pts += sample_time_offset(skipped);
        }
        if (done >= count) break;
      }
      // clock anchor for the first sample of this piece
      const int64_t s0 = impl->state->samples_pushed();
      GstClockTime t0 = done == 0 ? pts : GST_CLOCK_TIME_NONE;
      if (GST_CLOCK_TIME_IS_VALID(t0) && done == 0) {
        const GstClockTime expected = impl->next_pts;
        const bool gap = !GST_CLOCK_TIME_IS_VALID(expected) ||
                         (t0 > expected ? t0 - expected : expected - t0) > ALIGNMENT_THRESHOLD;
        if (impl->anchors.empty() || ((discont || gap) && t0 != expected)) {
          if (!impl->anchors.empty()) {
            GST_DEBUG_OBJECT(self, "timestamp jump to %" GST_TIME_FORMAT " (expected %" GST_TIME_FORMAT ")",
                             GST_TIME_ARGS(t0), GST_TIME_ARGS(expected));
          }
          impl->anchors.push_back({s0, t0});
        }
      } else if (impl->anchors.empty()) {
        GstClockTime t = impl->next_pts;
        if (!GST_CLOCK_TIME_IS_VALID(t)) t = impl->segment.start;
        impl->anchors.push_back({s0, t});
      }
      // endpointing: split the buffer where the trailing silence completes
      int64_t take = count - done;
      bool endpoint = false;
      const int64_t at = impl->endpointer->push(samples + done, take);
      if (impl->endpointer->speech_start() >= 0) {
        send_start_of_speech(self, s0 + impl->endpointer->speech_start());
      }
      if (at >= 0) {
        take = at;
        endpoint = true;
      }
      const int64_t first = impl->state->tokens_emitted();
      const gint64 started = g_get_monotonic_time();
      const std::vector<int32_t> ids = impl->state->push(samples + done, take);
      if (!ids.empty()) {
        impl->latency.record_compute(GST_ELEMENT(self),
                                     static_cast<GstClockTime>(g_get_monotonic_time() - started) * GST_USECOND);
      }
      done += take;
      impl->next_pts = sample_time(impl, impl->state->samples_pushed());
      ret = push_tokens(self, ids, first);
      if (ret != GST_FLOW_OK) break;
      if (endpoint) {
        GST_DEBUG_OBJECT(self, "endpoint: trailing silence reached");
        ret = finish_utterance(self, true);
        if (ret != GST_FLOW_OK) break;
      }
    }
  } catch (...) {
    glmvoice::gst::post_error(GST_ELEMENT(self), "Speech tokenizer failed", std::current_exception());
    ret = GST_FLOW_ERROR;
  }
  gst_buffer_unmap(buffer, &map);
  gst_buffer_unref(buffer);
  return ret;
}
