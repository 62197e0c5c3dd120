/* glmvoicedecode: GLM-4-Voice speech decoder element.
 * SPDX-License-Identifier: LGPL-2.1-or-later */

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
 * Token ids >= vocab_size are refused with a STREAM/DECODE error.
 *
 * ## Threads
 * The sink pad only queues: tokens (at most 4096, more than a whole answer; then it blocks)
 * and serialized events, in order. Decoding runs on the src pad's own streaming task, so the
 * LLM upstream never waits while a block is synthesized. FLUSH_START stops the task after
 * the block in progress (one block at most); FLUSH_STOP drops everything queued and pending
 * and restarts the task if the pad is still active.
 *
 * ## Barge-in
 * An end-of-response with reason "interrupted" (glmvoicellm barge-in=true, after the
 * tokenizer's start-of-speech) drops the queued tokens of the interrupted response and the
 * audio of a block being decoded for it; nothing of it is decoded any more. With
 * #GstGlmVoiceDecode:flush-on-interrupt (default) the audio already downstream (queues, the
 * sink's buffer) is flushed too (FLUSH_START + FLUSH_STOP without resetting the running time,
 * then the segment again), so the speaker goes quiet within the block in progress.
 *
 * ## GAP
 * A GAP between responses goes on downstream (clipped so that it never starts before audio
 * already pushed); inside a response it is dropped, the response's audio covers that time.
 *
 * Timestamps: sample-accurate from the start of each response: PTS = anchor + samples / 22050,
 * offset = running sample count. The anchor is the PTS of the response's first token buffer
 * (or the end of the previous audio when that is later or the PTS is missing).
 *
 * ## Latency and live behaviour
 * The first audio of a response comes out when block-sizes[0] + 1 tokens have arrived (the
 * block plus the one-token lag) and the first block has been decoded:
 *
 *   latency = (block-sizes[0] + 1) x 80 ms + first-block compute
 *
 * (default 26 x 80 ms = 2.08 s + compute; compute is the largest measured first-block decode
 * time, 0 until one was measured; a LATENCY message is posted when it grows) or, when set,
 * #GstGlmVoiceDecode:latency (a warning is posted once when the measured need exceeds it).
 * The LATENCY query adds it to upstream's when upstream is live; otherwise the answer is
 * upstream's (not live). Later blocks are longer than the audio they wait for, so a
 * real-time source never waits longer than that. In a live pipeline a response keeps the
 * timeline of its tokens: the sink renders it at token time + pipeline latency. Only audio
 * that would be late (its running time + the pipeline latency, from the LATENCY event, already
 * past) is moved forward, to the earliest time it can still be rendered.
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

#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "glmvoice_caps.h"
#include "glmvoice_element_util.h"
#include "glmvoice_events.h"
#include "glmvoice_latency.h"
#include "glmvoice_model_props.h"
#include "io/error.h"
#include "voice/decoder_model.h"

GST_DEBUG_CATEGORY_STATIC(gst_glm_voice_decode_debug);
#define GST_CAT_DEFAULT gst_glm_voice_decode_debug

#define DEFAULT_BLOCK_SIZES "25,50,100,150,200" /* web_demo.py block_size_list */
#define DEFAULT_SEED 42                         /* ConditionalCFM torch.manual_seed(42) */
#define DEFAULT_N_TIMESTEPS 10                  /* flow.py n_timesteps=10 */
#define DEFAULT_CFG_RATE -1.0                   /* < 0: inference_cfg_rate from config.yaml */
#define DEFAULT_FLUSH_ON_INTERRUPT TRUE
#define DEFAULT_MODE glmvoice::voice::StreamMode::kReference /* upstream's schedule, exact */
/* Model subdirectory under $GLMVOICE_MODEL_DIR (the Hugging Face repo name). */
#define MODEL_SUBDIR "glm-4-voice-decoder"
/* Tokens the sink pad queues for the decoding task before it blocks upstream: 4096 (5.5 min
 * of speech, 16 KiB) holds more than a whole answer (glmvoicellm max-new-tokens defaults to
 * 2000), so the LLM never waits for a block to be synthesized, and its end-of-response
 * "interrupted" (barge-in) is never stuck behind a full queue. */
#define MAX_QUEUED_TOKENS 4096
/* Audio moved forward because it would be late starts this much after the earliest time it
 * could still be rendered (the push to the sink takes a moment too). */
#define LIVE_MARGIN (20 * GST_MSECOND)

enum {
  PROP_0,
  PROP_MODEL_PATH,
  PROP_DEVICE,
  PROP_DTYPE,
  PROP_BLOCK_SIZES,
  PROP_SEED,
  PROP_N_TIMESTEPS,
  PROP_CFG_RATE,
  PROP_LATENCY,
  PROP_FLUSH_ON_INTERRUPT,
  PROP_MODE,
  PROP_CONTEXT_TOKENS,
};

#define SRC_CAPS "audio/x-raw, format=(string)F32LE, rate=(int)[1, MAX], channels=(int)1, layout=(string)interleaved"

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_GLM_VOICE_TOKENS_CAPS_TEMPLATE));
static GstStaticPadTemplate src_template =
    GST_STATIC_PAD_TEMPLATE("src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(SRC_CAPS));

namespace {

// One entry of the queue between the sink pad and the decoding task: tokens or an event.
struct QueueItem {
  std::vector<int32_t> ids;
  GstClockTime pts = GST_CLOCK_TIME_NONE;
  GstEvent* event = nullptr;  // owned; nullptr for tokens
};

}  // namespace

struct GstGlmVoiceDecodeImpl {
  // Settings: protected by the object lock; model ones copied at NULL->READY, stream ones
  // each time a State is made (READY->PAUSED, after every response, after a flush).
  glmvoice::gst::ModelProperties model_props{PROP_MODEL_PATH, MODEL_SUBDIR};
  glmvoice::gst::LatencyBudget latency{PROP_LATENCY};
  std::vector<int64_t> block_sizes = glmvoice::voice::parse_block_sizes(DEFAULT_BLOCK_SIZES);
  std::string block_sizes_error;  // a bad block-sizes value: the next State fails with it
  guint64 seed = DEFAULT_SEED;
  gint n_timesteps = DEFAULT_N_TIMESTEPS;
  gdouble cfg_rate = DEFAULT_CFG_RATE;
  gboolean flush_on_interrupt = DEFAULT_FLUSH_ON_INTERRUPT;
  glmvoice::voice::StreamMode mode = DEFAULT_MODE;
  gint context_tokens = glmvoice::voice::kDefaultContextTokens;
  bool block_sizes_set = false;  // block-sizes given: a mode change keeps it
  GstClockTime pipeline_latency = GST_CLOCK_TIME_NONE;  // from the LATENCY event (object lock)

  // Set at NULL->READY, dropped at READY->NULL (object lock for readers outside streaming).
  std::shared_ptr<const glmvoice::voice::DecoderModel> model;

  // The queue between the sink pad and the task: protected by `lock`.
  std::mutex lock;
  std::condition_variable cond;  // queue changed, flushing changed, interrupt flush done
  std::deque<QueueItem> queue;
  size_t queued_tokens = 0;
  bool flushing = true;                       // FLUSH_START or src pad inactive
  GstFlowReturn srcresult = GST_FLOW_FLUSHING;  // why the task stopped
  bool abandon_response = false;              // drop the audio of the response being decoded
  bool interrupt_flushing = false;            // a barge-in flush of downstream is under way
  guint64 interrupt_flushes = 0;              // how many were started
  bool resend_segment = false;                // after one: the task pushes the segment again

  // Sink pad side: protected by the sink pad's stream lock.
  bool have_caps = false;
  gint64 vocab_size = 0;

  // Task side: only the src pad's task touches these (and state changes while it is stopped).
  std::unique_ptr<glmvoice::voice::DecoderState> state;
  GstSegment segment;
  gint rate = 22050;
  bool live = false;
  bool live_known = false;
  bool in_response = false;                            // tokens received since the last finish
  GstClockTime token_anchor = GST_CLOCK_TIME_NONE;     // PTS of the response's first tokens
  GstClockTime anchor = GST_CLOCK_TIME_NONE;           // PTS of the response's first sample
  guint64 response_samples = 0;
  GstClockTime next_pts = GST_CLOCK_TIME_NONE;         // end of the last pushed audio (or GAP)
  guint64 sample_offset = 0;
  bool discont = true;

  void reset_response() {
    in_response = false;
    token_anchor = GST_CLOCK_TIME_NONE;
    anchor = GST_CLOCK_TIME_NONE;
    response_samples = 0;
  }
  void reset_timeline() {
    next_pts = GST_CLOCK_TIME_NONE;
    sample_offset = 0;
    discont = true;
    live_known = false;
  }
  // Drops every queued item (lock held).
  void clear_queue() {
    for (QueueItem& item : queue) {
      if (item.event) gst_event_unref(item.event);
    }
    queue.clear();
    queued_tokens = 0;
  }
};

// What a response waits for before its first audio: the first block plus the one-token lag.
/* GstGlmVoiceDecodeMode: the lib's StreamMode as a GEnum. */
static GType gst_glm_voice_decode_mode_get_type() {
  static gsize type = 0;
  if (g_once_init_enter(&type)) {
    static const GEnumValue values[] = {
        {static_cast<gint>(glmvoice::voice::StreamMode::kReference),
         "Upstream's schedule: the whole answer so far is the flow prompt of every block (exact)", "reference"},
        {static_cast<gint>(glmvoice::voice::StreamMode::kFast),
         "Bounded prompt (context-tokens): each block costs O(block + window), output as long as offline", "fast"},
        {0, nullptr, nullptr}};
    g_once_init_leave(&type, g_enum_register_static("GstGlmVoiceDecodeMode", values));
  }
  return static_cast<GType>(type);
}

static GstClockTime first_block_delay(const std::vector<int64_t>& block_sizes) {
  return static_cast<GstClockTime>(block_sizes.front() + 1) * GST_GLM_VOICE_TOKEN_DURATION;
}

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
static gboolean gst_glm_voice_decode_src_event(GstPad* pad, GstObject* parent, GstEvent* event);
static gboolean gst_glm_voice_decode_src_query(GstPad* pad, GstObject* parent, GstQuery* query);
static gboolean gst_glm_voice_decode_src_activate_mode(GstPad* pad, GstObject* parent, GstPadMode mode,
                                                       gboolean active);
static GstFlowReturn gst_glm_voice_decode_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer);
static void gst_glm_voice_decode_loop(GstGlmVoiceDecode* self);
static void gst_glm_voice_decode_class_init(GstGlmVoiceDecodeClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);

  GST_DEBUG_CATEGORY_INIT(gst_glm_voice_decode_debug, "glmvoicedecode", 0, "GLM-4-Voice speech decoder");

  gobject_class->finalize = gst_glm_voice_decode_finalize;
  gobject_class->set_property = gst_glm_voice_decode_set_property;
  gobject_class->get_property = gst_glm_voice_decode_get_property;

  const GParamFlags per_response =
      (GParamFlags)(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING);
  /**
   * GstGlmVoiceDecode:model-path:
   * Decoder directory (config.yaml, flow.pt, hift.pt). Empty: $GLMVOICE_MODEL_DIR/glm-4-voice-decoder.
   *
   * GstGlmVoiceDecode:device:
   * "cpu", "cuda" or "cuda:N"; empty = CUDA when available. Reads back the device in use.
   *
   * GstGlmVoiceDecode:dtype:
   * Flow compute dtype: float32 (reference parity), bfloat16 or float16. The HiFT vocoder
   * always runs in float32 (its phase accumulation is ill-conditioned, spec P16).
   */
  glmvoice::gst::ModelProperties::install(gobject_class, PROP_MODEL_PATH, MODEL_SUBDIR,
                                          "config.yaml, flow.pt, hift.pt");
  /**
   * GstGlmVoiceDecode:block-sizes:
   * Comma-separated block schedule in tokens; the last entry repeats. Applies from the next
   * response (can be changed while PLAYING). A bad value is an error: the next response (or
   * READY->PAUSED) fails with RESOURCE/SETTINGS naming it.
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
  /**
   * GstGlmVoiceDecode:mode:
   * reference (default): upstream's schedule, every block re-encodes the whole answer so far
   * (cost grows with the square of the answer). fast: the flow prompt is the last
   * context-tokens tokens; output as long as the offline decode; block-sizes defaults to
   * 10,25,50 unless set. Applies from the next response. See the README, "Fast streaming decoder".
   */
  g_object_class_install_property(
      gobject_class, PROP_MODE,
      g_param_spec_enum("mode", "Mode", "Streaming schedule: reference (exact, upstream) or fast (bounded prompt)",
                        gst_glm_voice_decode_mode_get_type(), static_cast<gint>(DEFAULT_MODE), per_response));
  /**
   * GstGlmVoiceDecode:context-tokens:
   * mode=fast: tokens of earlier audio given to the flow as prompt (with their mel).
   */
  g_object_class_install_property(
      gobject_class, PROP_CONTEXT_TOKENS,
      g_param_spec_int("context-tokens", "Context tokens", "mode=fast: prompt window in tokens",
                       static_cast<gint>(glmvoice::voice::kMinContextTokens), 100000,
                       static_cast<gint>(glmvoice::voice::kDefaultContextTokens), per_response));
  /**
   * GstGlmVoiceDecode:latency:
   * Latency budget in nanoseconds; 0 = automatic: (block-sizes[0] + 1) x 80 ms + the
   * largest measured first-block decode time.
   */
  glmvoice::gst::LatencyBudget::install(
      gobject_class, PROP_LATENCY,
      "Latency budget in ns added in live pipelines (0 = automatic: first block + 1 token + measured compute)");
  /**
   * GstGlmVoiceDecode:flush-on-interrupt:
   * On an end-of-response with reason "interrupted" (barge-in), also flush the audio already
   * downstream so that the speaker stops at once. Can be changed while PLAYING.
   */
  g_object_class_install_property(
      gobject_class, PROP_FLUSH_ON_INTERRUPT,
      g_param_spec_boolean("flush-on-interrupt", "Flush on interrupt",
                           "Flush the audio already downstream when a response is interrupted (barge-in)",
                           DEFAULT_FLUSH_ON_INTERRUPT, per_response));

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_set_static_metadata(
      element_class, "GLM-4-Voice speech decoder", "Codec/Decoder/Audio",
      "Turns GLM-4-Voice speech tokens into 22050 Hz speech (flow matching + HiFT), streaming", "glmvoice");
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_glm_voice_decode_change_state);
}

static void gst_glm_voice_decode_init(GstGlmVoiceDecode* self) {
  self->impl = new GstGlmVoiceDecodeImpl();
  self->impl->latency.set_inherent(GST_ELEMENT(self), first_block_delay(self->impl->block_sizes));
  gst_segment_init(&self->impl->segment, GST_FORMAT_TIME);

  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_chain));
  gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_sink_event));
  gst_pad_set_query_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_sink_query));
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_src_query));
  gst_pad_set_event_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_src_event));
  gst_pad_set_activatemode_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_decode_src_activate_mode));
  gst_pad_use_fixed_caps(self->srcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);
}

static void gst_glm_voice_decode_finalize(GObject* object) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(object);
  self->impl->clear_queue();
  delete self->impl;
  self->impl = nullptr;
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_glm_voice_decode_set_property(GObject* object, guint prop_id, const GValue* value,
                                              GParamSpec* pspec) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(object);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (impl->model_props.set_property(object, prop_id, value)) return;
  if (impl->latency.set_property(GST_ELEMENT(self), prop_id, value)) return;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_BLOCK_SIZES: {
      const gchar* s = g_value_get_string(value);
      try {
        impl->block_sizes = s ? glmvoice::voice::parse_block_sizes(s) : glmvoice::voice::default_block_sizes(impl->mode);
        impl->block_sizes_error.clear();
        impl->block_sizes_set = s != nullptr;
      } catch (const glmvoice::Error& e) {
        // An error, not a fallback: the next State (READY->PAUSED or the next response)
        // fails with RESOURCE/SETTINGS naming the value.
        impl->block_sizes_error = e.reason();
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
    case PROP_FLUSH_ON_INTERRUPT:
      impl->flush_on_interrupt = g_value_get_boolean(value);
      break;
    case PROP_MODE:
      impl->mode = static_cast<glmvoice::voice::StreamMode>(g_value_get_enum(value));
      if (!impl->block_sizes_set) impl->block_sizes = glmvoice::voice::default_block_sizes(impl->mode);
      break;
    case PROP_CONTEXT_TOKENS:
      impl->context_tokens = g_value_get_int(value);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
      break;
  }
  const GstClockTime first_block = first_block_delay(impl->block_sizes);
  const std::string bad_blocks = impl->block_sizes_error;
  GST_OBJECT_UNLOCK(self);
  if (prop_id == PROP_BLOCK_SIZES || prop_id == PROP_MODE) {
    if (!bad_blocks.empty()) g_warning("%s: block-sizes: %s", GST_OBJECT_NAME(self), bad_blocks.c_str());
    impl->latency.set_inherent(GST_ELEMENT(self), first_block);
    gst_element_post_message(GST_ELEMENT(self), gst_message_new_latency(GST_OBJECT(self)));
  }
}

static void gst_glm_voice_decode_get_property(GObject* object, guint prop_id, GValue* value,
                                              GParamSpec* pspec) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(object);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (impl->model_props.get_property(object, prop_id, value)) return;
  if (impl->latency.get_property(GST_ELEMENT(self), prop_id, value)) return;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
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
    case PROP_FLUSH_ON_INTERRUPT:
      g_value_set_boolean(value, impl->flush_on_interrupt);
      break;
    case PROP_MODE:
      g_value_set_enum(value, static_cast<gint>(impl->mode));
      break;
    case PROP_CONTEXT_TOKENS:
      g_value_set_int(value, impl->context_tokens);
      break;
    default:
      G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec);
      break;
  }
  GST_OBJECT_UNLOCK(self);
}

static gboolean load_model(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  auto model =
      impl->model_props.load<glmvoice::voice::DecoderModel>(GST_ELEMENT(self), "decoder", "speech decoder", GLMVOICE_HERE);
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

/* ---- the lib calls: one State per response ------------------------------------------------ */

// A fresh State with the current stream settings (task stopped, or on the task). Throws
// glmvoice::Error for a bad block-sizes value.
static void make_state(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  glmvoice::voice::StreamOptions so;
  GST_OBJECT_LOCK(self);
  if (!impl->block_sizes_error.empty()) {
    const std::string error = impl->block_sizes_error;
    GST_OBJECT_UNLOCK(self);
    throw glmvoice::Error(glmvoice::ErrorCode::kBadConfig, "", "block-sizes", error);
  }
  so.block_sizes = impl->block_sizes;
  so.seed = impl->seed;
  so.n_timesteps = impl->n_timesteps;
  so.cfg_rate = impl->cfg_rate;
  so.mode = impl->mode;
  so.context_tokens = impl->context_tokens;
  auto model = impl->model;
  GST_OBJECT_UNLOCK(self);
  impl->state = std::make_unique<glmvoice::voice::DecoderState>(model, so);
  impl->reset_response();
}

// Decodes `ids` of the current response: f32 [samples] (possibly empty). Measures the first
// block's compute for the latency estimate.
static at::Tensor decode_tokens(GstGlmVoiceDecode* self, const std::vector<int32_t>& ids) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  const bool first_block = impl->response_samples == 0;
  const gint64 t0 = g_get_monotonic_time();
  at::Tensor audio = impl->state->push(ids);
  if (first_block && audio.numel() > 0) {
    const GstClockTime compute = static_cast<GstClockTime>(g_get_monotonic_time() - t0) * GST_USECOND;
    GST_DEBUG_OBJECT(self, "first block decoded in %" GST_TIME_FORMAT, GST_TIME_ARGS(compute));
    impl->latency.record_compute(GST_ELEMENT(self), compute);
  }
  return audio;
}

// The response's final block (or tail flush); the State is then made afresh.
static at::Tensor finish_tokens(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  at::Tensor audio;
  if (impl->in_response || !impl->state->idle()) audio = impl->state->finish();
  return audio;
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
      impl->reset_timeline();
      GST_OBJECT_LOCK(self);
      impl->pipeline_latency = GST_CLOCK_TIME_NONE;
      GST_OBJECT_UNLOCK(self);
      break;
    default:
      break;
  }

  const GstStateChangeReturn ret = GST_ELEMENT_CLASS(parent_class)->change_state(element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) return ret;

  switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      impl->state.reset();  // the task was stopped when the src pad was deactivated
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

/* ---- output (task) ------------------------------------------------------------------------ */

// In a live pipeline: the earliest position (in the output segment) that the sink can still
// render on time, i.e. running time now - pipeline latency; NONE when not live or nothing is
// late yet.
static GstClockTime earliest_on_time(GstGlmVoiceDecode* self) {
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
  // The latency the sinks add (LATENCY event); before one came: what the query reports.
  GST_OBJECT_LOCK(self);
  GstClockTime latency = impl->pipeline_latency;
  GST_OBJECT_UNLOCK(self);
  if (!GST_CLOCK_TIME_IS_VALID(latency)) {
    GstQuery* q = gst_query_new_latency();
    latency = 0;
    if (gst_pad_query(self->srcpad, q)) gst_query_parse_latency(q, nullptr, &latency, nullptr);
    gst_query_unref(q);
  }
  const GstClockTime running = now - base;
  if (running <= latency) return GST_CLOCK_TIME_NONE;
  guint64 position = 0;
  if (gst_segment_position_from_running_time_full(&impl->segment, GST_FORMAT_TIME, running - latency, &position) !=
      1) {
    return GST_CLOCK_TIME_NONE;
  }
  return position;
}

// How many barge-in flushes of downstream were started (to tell them from real flushes).
static guint64 interrupt_flush_count(GstGlmVoiceDecodeImpl* impl) {
  std::lock_guard<std::mutex> lk(impl->lock);
  return impl->interrupt_flushes;
}

// A push from the task failed with FLUSHING: TRUE when a barge-in flush (started on the sink
// pad's thread after `count` was read) caused it; waits for that flush to end. FALSE for a
// real flush (FLUSH_START, deactivation).
static bool waited_for_interrupt_flush(GstGlmVoiceDecodeImpl* impl, guint64 count) {
  std::unique_lock<std::mutex> lk(impl->lock);
  if (impl->flushing || (count == impl->interrupt_flushes && !impl->interrupt_flushing)) return false;
  impl->cond.wait(lk, [impl] { return !impl->interrupt_flushing || impl->flushing; });
  return !impl->flushing;
}

// Pushes a serialized event from the task (takes `event`); pushed again after a barge-in
// flush made it fail, so no caps/segment/end-of-response is lost.
static gboolean push_event(GstGlmVoiceDecode* self, GstEvent* event) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const guint64 count = interrupt_flush_count(self->impl);
    if (gst_pad_push_event(self->srcpad, gst_event_ref(event))) {
      gst_event_unref(event);
      return TRUE;
    }
    if (!waited_for_interrupt_flush(self->impl, count)) break;
  }
  gst_event_unref(event);
  return FALSE;
}

// Pushes `audio` (f32 [n]) with sample-accurate timestamps from the response start.
static GstFlowReturn push_audio(GstGlmVoiceDecode* self, const at::Tensor& audio) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  const gsize n = audio.defined() ? static_cast<gsize>(audio.numel()) : 0;
  if (n == 0) return GST_FLOW_OK;
  if (!GST_CLOCK_TIME_IS_VALID(impl->anchor)) {
    GstClockTime a = impl->token_anchor;
    if (!GST_CLOCK_TIME_IS_VALID(a) || (GST_CLOCK_TIME_IS_VALID(impl->next_pts) && a < impl->next_pts)) {
      a = GST_CLOCK_TIME_IS_VALID(impl->next_pts) ? impl->next_pts : impl->segment.start;
    }
    // Live: the sink renders at running time + pipeline latency, which already covers the
    // wait for the first block; only audio that would be late moves forward.
    const GstClockTime earliest = earliest_on_time(self);
    if (GST_CLOCK_TIME_IS_VALID(earliest) && earliest > a) {
      GST_DEBUG_OBJECT(self, "response would be %" GST_TIME_FORMAT " late: moved forward",
                       GST_TIME_ARGS(earliest - a));
      a = earliest + LIVE_MARGIN;
    }
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
  const guint64 count = interrupt_flush_count(impl);
  const GstFlowReturn ret = gst_pad_push(self->srcpad, buffer);
  // audio flushed by a barge-in: gone, as intended
  if (ret == GST_FLOW_FLUSHING && waited_for_interrupt_flush(impl, count)) return GST_FLOW_OK;
  return ret;
}

// True when a barge-in abandoned the response being decoded (its audio is dropped).
static bool response_abandoned(GstGlmVoiceDecodeImpl* impl) {
  std::lock_guard<std::mutex> lk(impl->lock);
  return impl->abandon_response;
}

// End of the response: the final block, its audio, then a fresh State.
static GstFlowReturn finish_response(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  const at::Tensor audio = finish_tokens(self);
  GST_DEBUG_OBJECT(self, "response finished: %" G_GINT64_FORMAT " final samples",
                   audio.defined() ? audio.numel() : 0);
  const GstFlowReturn ret = response_abandoned(impl) ? GST_FLOW_OK : push_audio(self, audio);
  make_state(self);  // picks up changed block-sizes / seed / n-timesteps / cfg-rate
  return ret;
}

// A GAP between responses goes on (never before audio already pushed); inside one it is
// dropped, the response's audio covers that time.
static void forward_gap(GstGlmVoiceDecode* self, GstEvent* gap) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  GstClockTime timestamp, duration;
  gst_event_parse_gap(gap, &timestamp, &duration);
  if (impl->in_response || !impl->state->idle()) {
    GST_LOG_OBJECT(self, "gap inside a response dropped");
    return;
  }
  GstClockTime start = timestamp;
  if (GST_CLOCK_TIME_IS_VALID(impl->next_pts) && impl->next_pts > start) start = impl->next_pts;
  GstClockTime length = duration;
  if (GST_CLOCK_TIME_IS_VALID(duration)) {
    if (timestamp + duration <= start) return;
    length = timestamp + duration - start;
    impl->next_pts = start + length;
  }
  push_event(self, gst_event_new_gap(start, length));
}

/* ---- the task ----------------------------------------------------------------------------- */

// Handles one serialized event on the task, in order with the tokens (the caller keeps
// `event`). Returns the flow.
static GstFlowReturn process_event(GstGlmVoiceDecode* self, GstEvent* event) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_SEGMENT: {
      const GstSegment* segment;
      gst_event_parse_segment(event, &segment);
      gst_segment_copy_into(segment, &impl->segment);
      break;
    }
    case GST_EVENT_CAPS: {
      GstCaps* caps;
      gst_event_parse_caps(event, &caps);
      gint rate = 0;
      if (gst_structure_get_int(gst_caps_get_structure(caps, 0), "rate", &rate)) impl->rate = rate;
      break;
    }
    case GST_EVENT_GAP:
      forward_gap(self, event);
      return GST_FLOW_OK;
    case GST_EVENT_EOS: {
      const GstFlowReturn ret = finish_response(self);
      push_event(self, gst_event_ref(event));
      return ret == GST_FLOW_OK ? GST_FLOW_EOS : ret;
    }
    case GST_EVENT_CUSTOM_DOWNSTREAM:
      if (gst_glm_voice_event_is_end_of_response(event)) {
        const gchar* reason = nullptr;
        gst_glm_voice_event_parse_end_of_response(event, &reason);
        GST_DEBUG_OBJECT(self, "end-of-response (%s)", reason ? reason : "no reason");
        GstFlowReturn ret = GST_FLOW_OK;
        if (g_strcmp0(reason, GST_GLM_VOICE_REASON_INTERRUPTED) == 0) {
          make_state(self);  // nothing of the interrupted response is decoded any more
          std::lock_guard<std::mutex> lk(impl->lock);
          impl->abandon_response = false;
        } else {
          ret = finish_response(self);
        }
        push_event(self, gst_event_ref(event));
        return ret;
      }
      break;
    default:
      break;
  }
  push_event(self, gst_event_ref(event));
  return GST_FLOW_OK;
}

static GstFlowReturn process_tokens(GstGlmVoiceDecode* self, QueueItem& item) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (response_abandoned(impl)) return GST_FLOW_OK;  // interrupted before it was decoded
  if (!impl->in_response) {
    impl->in_response = true;
    impl->token_anchor = item.pts;
  }
  // Token by token, as they would arrive from the LLM: each block's audio goes out as soon
  // as it is decoded (a long buffer of tokens does not become one long wait), and a flush or
  // a barge-in is noticed between blocks.
  for (int32_t id : item.ids) {
    const at::Tensor audio = decode_tokens(self, std::vector<int32_t>{id});
    if (audio.numel() == 0) continue;
    {
      std::lock_guard<std::mutex> lk(impl->lock);
      if (impl->flushing) return GST_FLOW_FLUSHING;
      if (impl->abandon_response) {
        GST_DEBUG_OBJECT(self, "dropping the audio of an interrupted response");
        return GST_FLOW_OK;
      }
    }
    const GstFlowReturn ret = push_audio(self, audio);
    if (ret != GST_FLOW_OK) return ret;
  }
  return GST_FLOW_OK;
}

static bool has_sticky(GstPad* pad, GstEventType type) {
  GstEvent* event = gst_pad_get_sticky_event(pad, type, 0);
  if (event) gst_event_unref(event);
  return event != nullptr;
}

static void gst_glm_voice_decode_loop(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  QueueItem item;
  bool resend_segment = false;
  {
    std::unique_lock<std::mutex> lk(impl->lock);
    impl->cond.wait(lk, [impl] { return impl->flushing || !impl->queue.empty(); });
    if (impl->flushing) {
      lk.unlock();
      GST_DEBUG_OBJECT(self, "pausing the task: flushing");
      gst_pad_pause_task(self->srcpad);
      return;
    }
    item = std::move(impl->queue.front());
    impl->queue.pop_front();
    impl->queued_tokens -= item.ids.size();
    resend_segment = impl->resend_segment;
    impl->resend_segment = false;
    impl->cond.notify_all();  // room in the queue
  }
  if (resend_segment && has_sticky(self->srcpad, GST_EVENT_STREAM_START) && has_sticky(self->srcpad, GST_EVENT_CAPS)) {
    // a barge-in flush went downstream: the sink needs the segment again before data (not
    // when the flush came before this stream began: its segment is still queued, in order)
    push_event(self, gst_event_new_segment(&impl->segment));
  }

  GstFlowReturn ret;
  try {
    ret = item.event ? process_event(self, item.event) : process_tokens(self, item);
  } catch (...) {
    glmvoice::gst::post_error(GST_ELEMENT(self), "Speech decoder failed", std::current_exception());
    ret = GST_FLOW_ERROR;
    gst_pad_push_event(self->srcpad, gst_event_new_eos());
  }
  if (item.event) gst_event_unref(item.event);
  if (ret == GST_FLOW_OK) return;

  {
    std::lock_guard<std::mutex> lk(impl->lock);
    if (!impl->flushing) impl->srcresult = ret;
    impl->cond.notify_all();
  }
  GST_DEBUG_OBJECT(self, "pausing the task: %s", gst_flow_get_name(ret));
  gst_pad_pause_task(self->srcpad);
  if (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS) {
    if (ret != GST_FLOW_ERROR) {  // an ERROR from the decoder was posted above
      GST_ELEMENT_FLOW_ERROR(self, ret);
      gst_pad_push_event(self->srcpad, gst_event_new_eos());
    }
  }
}

static gboolean gst_glm_voice_decode_src_activate_mode(GstPad* pad, GstObject* parent, GstPadMode mode,
                                                       gboolean active) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (active) {
    std::lock_guard<std::mutex> lk(impl->lock);
    impl->flushing = false;
    impl->srcresult = GST_FLOW_OK;
    impl->abandon_response = false;
    return gst_pad_start_task(pad, (GstTaskFunction)gst_glm_voice_decode_loop, self, nullptr);
  }
  {
    std::lock_guard<std::mutex> lk(impl->lock);
    impl->flushing = true;
    impl->srcresult = GST_FLOW_FLUSHING;
    impl->clear_queue();
    impl->cond.notify_all();
  }
  return gst_pad_stop_task(pad);  // waits for the block in progress
}

/* ---- events and queries ------------------------------------------------------------------ */

// Queues a serialized event for the task; FALSE (event dropped) while flushing.
static gboolean queue_event(GstGlmVoiceDecode* self, GstEvent* event) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  std::lock_guard<std::mutex> lk(impl->lock);
  if (impl->flushing) {
    gst_event_unref(event);
    return FALSE;
  }
  QueueItem item;
  item.event = event;
  impl->queue.push_back(std::move(item));
  impl->cond.notify_all();
  return TRUE;
}

// Barge-in: the response now decoding (or queued) was interrupted. Every queued token goes,
// the block in progress is dropped when done, and (flush-on-interrupt) downstream is flushed.
static void interrupt_response(GstGlmVoiceDecode* self) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  const bool flush = impl->flush_on_interrupt;
  GST_OBJECT_UNLOCK(self);
  {
    std::lock_guard<std::mutex> lk(impl->lock);
    if (impl->flushing) return;
    // The user is speaking: no queued speech is played any more, neither the interrupted
    // response's nor that of an earlier response that was generated but not yet decoded
    // (the LLM is faster than playback). Events stay, in order.
    size_t dropped = 0;
    for (size_t i = impl->queue.size(); i > 0; --i) {
      QueueItem& item = impl->queue[i - 1];
      if (item.event) continue;
      dropped += item.ids.size();
      impl->queued_tokens -= item.ids.size();
      impl->queue.erase(impl->queue.begin() + static_cast<std::ptrdiff_t>(i - 1));
    }
    // The response the task decodes now (if any) is dropped too, up to this end-of-response.
    impl->abandon_response = true;
    GST_DEBUG_OBJECT(self, "interrupted: %zu queued tokens dropped", dropped);
    if (flush) {
      impl->interrupt_flushing = true;
      ++impl->interrupt_flushes;
    }
    impl->cond.notify_all();
  }
  if (!flush) return;
  GST_DEBUG_OBJECT(self, "interrupted: flushing the audio downstream");
  gst_pad_push_event(self->srcpad, gst_event_new_flush_start());
  gst_pad_push_event(self->srcpad, gst_event_new_flush_stop(FALSE));
  std::lock_guard<std::mutex> lk(impl->lock);
  impl->interrupt_flushing = false;
  impl->resend_segment = true;
  impl->cond.notify_all();
}

static gboolean handle_caps(GstGlmVoiceDecode* self, GstEvent* event) {
  GstGlmVoiceDecodeImpl* impl = self->impl;
  GstCaps* caps;
  gst_event_parse_caps(event, &caps);
  gint codebook = 0;
  const gboolean ok = gst_glm_voice_tokens_caps_parse(caps, &codebook);
  GST_OBJECT_LOCK(self);
  auto model = impl->model;
  GST_OBJECT_UNLOCK(self);
  if (!model) {
    gst_event_unref(event);
    return FALSE;
  }
  const gint64 vocab = model->vocab_size();
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
  GstCaps* src = gst_caps_new_simple("audio/x-raw", "format", G_TYPE_STRING, "F32LE", "rate", G_TYPE_INT,
                                     static_cast<gint>(model->sample_rate()), "channels", G_TYPE_INT, 1, "layout",
                                     G_TYPE_STRING, "interleaved", nullptr);
  impl->vocab_size = vocab;
  impl->have_caps = queue_event(self, gst_event_new_caps(src));
  gst_caps_unref(src);
  return impl->have_caps;
}

static gboolean gst_glm_voice_decode_sink_event(GstPad* pad, GstObject* parent, GstEvent* event) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  GST_LOG_OBJECT(self, "sink event %" GST_PTR_FORMAT, event);
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_FLUSH_START: {
      gst_pad_push_event(self->srcpad, event);  // unblocks a push of the task
      {
        std::lock_guard<std::mutex> lk(impl->lock);
        impl->flushing = true;
        impl->srcresult = GST_FLOW_FLUSHING;
        impl->cond.notify_all();
      }
      gst_pad_pause_task(self->srcpad);  // returns once the block in progress is done
      return TRUE;
    }
    case GST_EVENT_FLUSH_STOP: {
      const gboolean ret = gst_pad_push_event(self->srcpad, event);
      // The task is paused: its state may be touched here.
      try {
        make_state(self);
      } catch (...) {
        glmvoice::gst::post_error(GST_ELEMENT(self), "Speech decoder failed", std::current_exception());
      }
      impl->reset_timeline();
      std::lock_guard<std::mutex> lk(impl->lock);
      impl->clear_queue();
      impl->abandon_response = false;
      // Restart only on an active pad: a PAUSED->READY may have deactivated it meanwhile
      // (cf. gstqueue.c), and a task started then would never be stopped.
      if (gst_pad_is_active(self->srcpad)) {
        impl->flushing = false;
        impl->srcresult = GST_FLOW_OK;
        gst_pad_start_task(self->srcpad, (GstTaskFunction)gst_glm_voice_decode_loop, self, nullptr);
      } else {
        GST_DEBUG_OBJECT(self, "not restarting the task: src pad inactive");
      }
      return ret;
    }
    case GST_EVENT_CAPS:
      return handle_caps(self, event);
    case GST_EVENT_SEGMENT: {
      const GstSegment* segment;
      gst_event_parse_segment(event, &segment);
      if (segment->format == GST_FORMAT_BYTES) {
        // A token stream read back from a file (filesrc): its audio starts at time 0.
        GST_DEBUG_OBJECT(self, "BYTES segment upstream: the audio gets a TIME segment from 0");
        gst_event_unref(event);
        GstSegment time;
        gst_segment_init(&time, GST_FORMAT_TIME);
        return queue_event(self, gst_event_new_segment(&time));
      }
      if (segment->format != GST_FORMAT_TIME) {
        GST_ELEMENT_ERROR(self, STREAM, FORMAT, ("glmvoicedecode needs a TIME (or BYTES) segment"),
                          ("got a %s segment", gst_format_get_name(segment->format)));
        gst_event_unref(event);
        return FALSE;
      }
      return queue_event(self, event);
    }
    case GST_EVENT_CUSTOM_DOWNSTREAM: {
      const gchar* reason = nullptr;
      if (gst_glm_voice_event_parse_end_of_response(event, &reason) &&
          g_strcmp0(reason, GST_GLM_VOICE_REASON_INTERRUPTED) == 0) {
        interrupt_response(self);
      }
      return queue_event(self, event);
    }
    default:
      if (GST_EVENT_IS_SERIALIZED(event)) return queue_event(self, event);
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

static gboolean gst_glm_voice_decode_src_event(GstPad* pad, GstObject* parent, GstEvent* event) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  if (GST_EVENT_TYPE(event) == GST_EVENT_LATENCY) {
    // What the sinks add to every running time: the live re-stamp needs it.
    GstClockTime latency = 0;
    gst_event_parse_latency(event, &latency);
    GST_DEBUG_OBJECT(self, "pipeline latency %" GST_TIME_FORMAT, GST_TIME_ARGS(latency));
    GST_OBJECT_LOCK(self);
    self->impl->pipeline_latency = latency;
    GST_OBJECT_UNLOCK(self);
  }
  return gst_pad_event_default(pad, parent, event);
}

static gboolean gst_glm_voice_decode_src_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  if (GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    return self->impl->latency.answer_query(GST_ELEMENT(self), self->sinkpad, query);
  }
  return gst_pad_query_default(pad, parent, query);
}

/* ---- streaming (sink pad) ------------------------------------------------------------------ */

static GstFlowReturn gst_glm_voice_decode_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer) {
  (void)pad;
  GstGlmVoiceDecode* self = GST_GLM_VOICE_DECODE(parent);
  GstGlmVoiceDecodeImpl* impl = self->impl;
  if (!impl->have_caps) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, CORE, NEGOTIATION, ("glmvoicedecode needs " GST_GLM_VOICE_TOKENS_MEDIA_TYPE " input"),
                      ("no caps received before the first buffer"));
    return GST_FLOW_NOT_NEGOTIATED;
  }
  QueueItem item;
  const glmvoice::gst::TokenRead read = glmvoice::gst::read_tokens(buffer, item.ids);
  item.pts = GST_BUFFER_PTS(buffer);
  const gsize size = gst_buffer_get_size(buffer);
  gst_buffer_unref(buffer);
  if (read != glmvoice::gst::TokenRead::kOk) {
    if (read == glmvoice::gst::TokenRead::kMapFailed) {
      GST_ELEMENT_ERROR(self, STREAM, FAILED, ("could not map an input buffer"), (nullptr));
    } else {
      GST_ELEMENT_ERROR(self, STREAM, DECODE, ("Malformed speech token buffer"),
                        ("%" G_GSIZE_FORMAT " bytes is not a whole number of int32 tokens", size));
    }
    return GST_FLOW_ERROR;
  }
  // Checked here, on the caller's thread, so the error points at the input.
  for (int32_t id : item.ids) {
    if (id >= impl->vocab_size) {
      GST_ELEMENT_ERROR(self, STREAM, DECODE, ("Speech token %d is outside the decoder's codebook", id),
                        ("speech token %d >= vocab_size %" G_GINT64_FORMAT, id, impl->vocab_size));
      return GST_FLOW_ERROR;
    }
  }
  if (item.ids.empty()) return GST_FLOW_OK;

  std::unique_lock<std::mutex> lk(impl->lock);
  impl->cond.wait(lk, [impl] {
    return impl->flushing || impl->srcresult != GST_FLOW_OK || impl->queued_tokens < MAX_QUEUED_TOKENS;
  });
  if (impl->flushing || impl->srcresult != GST_FLOW_OK) return impl->srcresult;
  impl->queued_tokens += item.ids.size();
  impl->queue.push_back(std::move(item));
  impl->cond.notify_all();
  return GST_FLOW_OK;
}
