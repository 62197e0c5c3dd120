/* glmvoicellm: GLM-4-Voice language model element.
 * SPDX-License-Identifier: Apache-2.0 */

/**
 * SECTION:element-glmvoicellm
 * @title: glmvoicellm
 *
 * Answers a spoken (or written) user turn with GLM-4-Voice-9B: the answer streams out as
 * speech tokens on `src` (for glmvoicedecode) and as text on `text_src`, interleaved the way
 * the model emits them (about 13 text tokens, then 26 speech tokens, ...). Prompt building,
 * history, sampling and stop handling live in lib/llm/chat.h (spec llm.md §4, §6).
 *
 * Pads:
 * - `sink` (always): `audio/x-glm-speech-tokens, codebook-size=N`: the user's speech tokens;
 *   N must equal the model's number of `<|audio_N|>` tokens and every token must be < N
 *   (otherwise a STREAM/DECODE error).
 * - `text_sink` (request): `text/x-raw, format=utf8`: text input mode (as the reference
 *   demo's text box). Every buffer is one complete user message and starts a turn.
 * - `src` (always): `audio/x-glm-speech-tokens`: the answer's speech tokens, one buffer per
 *   token as it is sampled, PTS = response start + index × 80 ms, duration 80 ms.
 * - `text_src` (always): `text/x-raw, format=utf8`: the answer's text as complete UTF-8
 *   runs (a character split over two tokens, even with speech tokens in between, is held back
 *   until complete); PTS = the PTS of the next speech token. May stay unlinked.
 *
 * Events: the custom end-of-turn event (gst/glmvoice_events.h) on `sink` (or EOS) completes
 * the user's speech turn and starts the answer. After every answer, whatever the stop reason
 * (`stop-token`, `max-new-tokens`, `context`, `interrupted`), an end-of-response event with
 * that reason goes out on both src pads; EOS follows once every linked sink pad got EOS and
 * the queued turns are answered. FLUSH_START stops generation within one token; FLUSH_STOP
 * drops the interrupted answer and any pending input (the history keeps what was generated;
 * use the `reset-history` action signal to forget it).
 *
 * Messages: after each turn an element message `glmvoicellm-turn` with `input-ids` and
 * `completion-ids` (arrays of int), `text` (string: the full transcript of the answer),
 * `reason` (string), `turn`, `prompt-tokens`, `generated-tokens`, `speech-tokens` (int),
 * `prefill-ms`, `decode-ms-per-token` (double): the reference web demo's debug view.
 *
 * ## Latency and live behaviour
 * Nothing comes out before the user's turn is complete; then the first token needs one
 * prefill of the prompt (the whole history) and each further token one decode step. The
 * answer must be generated faster than it is played (≥ 18.75 tokens/s for 12.5 speech
 * tokens/s with the 13/26 interleave): the real 9B model needs a GPU for that. The latency
 * query adds nothing of its own (the answer's timeline starts when the turn ends).
 *
 * Threads: generation runs on the task of `src` (one token per iteration, so FLUSH and
 * barge-in act within a token); `text_src` is pushed from its own task through an internal
 * queue, so a text branch that blocks (e.g. a sink waiting for preroll) never stalls the
 * speech branch: no `queue` is needed after either src pad.
 *
 * ## Example launch line
 * |[
 * gst-launch-1.0 -m filesrc location=question.wav ! decodebin ! audioconvert ! audioresample ! \
 *     glmvoicetokenize model-path=TOKDIR ! glmvoicellm name=llm model-path=LLMDIR ! \
 *     fakesink dump=true  llm.text_src ! fakesink dump=true
 * ]|
 * (run with the mk-a tokenizer and the tiny-script LLM of glmvoice-mkmodel on
 * ../shared/fixtures/common/inputs/en.wav, CPU: text "Hi的 world", tokens 3 4, then the
 * glmvoicellm-turn message and EOS.) With the decoder: `llm. ! glmvoicedecode !
 * audioconvert ! autoaudiosink`.
 */

#include "gstglmvoicellm.h"

#include <atomic>
#include <chrono>
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
#include "glmvoice_model_cache.h"
#include "io/error.h"
#include "llm/chat.h"
#include "llm/chatglm_model.h"

GST_DEBUG_CATEGORY_STATIC(gst_glm_voice_llm_debug);
#define GST_CAT_DEFAULT gst_glm_voice_llm_debug

#define DEFAULT_MODEL_PATH ""
#define DEFAULT_DEVICE ""
#define DEFAULT_DTYPE "float32"
/* Web demo defaults (spec llm.md §4.4), not generation_config.json's. */
#define DEFAULT_TEMPERATURE 0.2
#define DEFAULT_TOP_P 0.8
#define DEFAULT_TOP_K 50
#define DEFAULT_MAX_NEW_TOKENS 2000
#define DEFAULT_SEED 0
#define DEFAULT_SYSTEM_PROMPT ""
#define DEFAULT_INSTRUCTION ""
#define DEFAULT_KEEP_HISTORY TRUE
#define DEFAULT_BARGE_IN FALSE
#define DEFAULT_TEXT_SEGMENTS FALSE
/* Model subdirectory under $GLMVOICE_MODEL_DIR (the Hugging Face repo name). */
#define MODEL_SUBDIR "glm-4-voice-9b"
#define TURN_MESSAGE_NAME "glmvoicellm-turn"

enum {
  PROP_0,
  PROP_MODEL_PATH,
  PROP_DEVICE,
  PROP_DTYPE,
  PROP_TEMPERATURE,
  PROP_TOP_P,
  PROP_TOP_K,
  PROP_MAX_NEW_TOKENS,
  PROP_SEED,
  PROP_SYSTEM_PROMPT,
  PROP_INSTRUCTION,
  PROP_KEEP_HISTORY,
  PROP_BARGE_IN,
  PROP_TEXT_SEGMENTS,
};

enum { SIGNAL_RESET_HISTORY, LAST_SIGNAL };
static guint gst_glm_voice_llm_signals[LAST_SIGNAL] = {0};

static GstStaticPadTemplate sink_template = GST_STATIC_PAD_TEMPLATE(
    "sink", GST_PAD_SINK, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_GLM_VOICE_TOKENS_CAPS_TEMPLATE));
static GstStaticPadTemplate text_sink_template =
    GST_STATIC_PAD_TEMPLATE("text_sink", GST_PAD_SINK, GST_PAD_REQUEST, GST_STATIC_CAPS(GST_GLM_VOICE_TEXT_CAPS));
static GstStaticPadTemplate src_template = GST_STATIC_PAD_TEMPLATE(
    "src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_GLM_VOICE_TOKENS_CAPS_TEMPLATE));
static GstStaticPadTemplate text_src_template =
    GST_STATIC_PAD_TEMPLATE("text_src", GST_PAD_SRC, GST_PAD_ALWAYS, GST_STATIC_CAPS(GST_GLM_VOICE_TEXT_CAPS));

namespace {

struct QueuedTurn {
  glmvoice::llm::UserTurn turn;
  GstClockTime input_end = GST_CLOCK_TIME_NONE;  // end timestamp of the user's input
};

}  // namespace

struct GstGlmVoiceLlmImpl {
  // Settings: protected by the object lock; sampling knobs are copied at every turn start.
  std::string model_path = DEFAULT_MODEL_PATH;
  std::string device = DEFAULT_DEVICE;
  std::string dtype = DEFAULT_DTYPE;
  gdouble temperature = DEFAULT_TEMPERATURE;
  gdouble top_p = DEFAULT_TOP_P;
  gint top_k = DEFAULT_TOP_K;
  gint max_new_tokens = DEFAULT_MAX_NEW_TOKENS;
  guint64 seed = DEFAULT_SEED;
  std::string system_prompt = DEFAULT_SYSTEM_PROMPT;
  std::string instruction = DEFAULT_INSTRUCTION;
  gboolean keep_history = DEFAULT_KEEP_HISTORY;
  gboolean barge_in = DEFAULT_BARGE_IN;
  gboolean text_segments = DEFAULT_TEXT_SEGMENTS;

  // Set at NULL->READY, dropped at READY->NULL (object lock for the pointer).
  std::shared_ptr<const glmvoice::llm::LlmModel> model;

  // Input side and task control: protected by `mutex`; `cond` wakes the task.
  std::mutex mutex;
  std::condition_variable cond;
  bool flushing = true;
  GstFlowReturn srcresult = GST_FLOW_FLUSHING;  // what chain functions return when not OK
  std::vector<int64_t> speech;                  // speech tokens of the unfinished user turn
  GstClockTime input_end = GST_CLOCK_TIME_NONE;
  std::deque<QueuedTurn> turns;
  bool sink_eos = false, text_sink_eos = false, eos_pending = false;
  bool cancel_requested = false;  // barge-in
  bool reset_requested = false;   // reset-history action
  int64_t codebook = 0;           // model's n_audio, for caps and token checks

  // Generation: owned by the src pad task (and by FLUSH_STOP / state changes while the task
  // is paused or stopped, under the src pad's stream lock).
  std::unique_ptr<glmvoice::llm::ChatState> chat;
  bool need_stream_start = true, need_segment = true, discont = true;
  GstClockTime next_out = 0;        // end of the last answer on the output timeline
  GstClockTime response_start = 0;  // PTS of the current answer's first speech token
  int64_t speech_index = 0;         // speech tokens of the current answer so far
  guint64 token_offset = 0;         // speech tokens pushed since start / flush
  int64_t turn_count = 0;
  bool segment_mode = false;   // text-segments, copied per turn
  std::string text_accum;      // text-segments mode: text of the current segment
  std::chrono::steady_clock::time_point turn_t0;
  double prefill_ms = 0;

  // text_src output: buffers and events queued in order and pushed by the text_src pad's own
  // task, so a text branch that blocks (a sink waiting for preroll) never stalls generation
  // and the speech branch needs no queue. Protected by text_mutex.
  std::mutex text_mutex;
  std::condition_variable text_cond;
  std::deque<GstMiniObject*> text_queue;
  bool text_flushing = true;
  GstFlowReturn text_flow = GST_FLOW_OK;  // last fatal flow of the text branch
};

#define gst_glm_voice_llm_parent_class parent_class
G_DEFINE_TYPE(GstGlmVoiceLlm, gst_glm_voice_llm, GST_TYPE_ELEMENT);
GST_ELEMENT_REGISTER_DEFINE(glmvoicellm, "glmvoicellm", GST_RANK_NONE, GST_TYPE_GLM_VOICE_LLM);

static void gst_glm_voice_llm_finalize(GObject* object);
static void gst_glm_voice_llm_set_property(GObject* object, guint prop_id, const GValue* value, GParamSpec* pspec);
static void gst_glm_voice_llm_get_property(GObject* object, guint prop_id, GValue* value, GParamSpec* pspec);
static GstStateChangeReturn gst_glm_voice_llm_change_state(GstElement* element, GstStateChange transition);
static GstPad* gst_glm_voice_llm_request_new_pad(GstElement* element, GstPadTemplate* templ, const gchar* name,
                                                 const GstCaps* caps);
static void gst_glm_voice_llm_release_pad(GstElement* element, GstPad* pad);
static void gst_glm_voice_llm_reset_history(GstGlmVoiceLlm* self);
static gboolean gst_glm_voice_llm_sink_event(GstPad* pad, GstObject* parent, GstEvent* event);
static gboolean gst_glm_voice_llm_src_query(GstPad* pad, GstObject* parent, GstQuery* query);
static gboolean gst_glm_voice_llm_src_activate_mode(GstPad* pad, GstObject* parent, GstPadMode mode,
                                                    gboolean active);
static GstFlowReturn gst_glm_voice_llm_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer);
static GstFlowReturn gst_glm_voice_llm_text_chain(GstPad* pad, GstObject* parent, GstBuffer* buffer);
static gboolean gst_glm_voice_llm_text_src_activate_mode(GstPad* pad, GstObject* parent, GstPadMode mode,
                                                         gboolean active);
static void gst_glm_voice_llm_loop(gpointer user_data);
static void gst_glm_voice_llm_text_loop(gpointer user_data);

static void gst_glm_voice_llm_class_init(GstGlmVoiceLlmClass* klass) {
  GObjectClass* gobject_class = G_OBJECT_CLASS(klass);
  GstElementClass* element_class = GST_ELEMENT_CLASS(klass);

  GST_DEBUG_CATEGORY_INIT(gst_glm_voice_llm_debug, "glmvoicellm", 0, "GLM-4-Voice language model");

  gobject_class->finalize = gst_glm_voice_llm_finalize;
  gobject_class->set_property = gst_glm_voice_llm_set_property;
  gobject_class->get_property = gst_glm_voice_llm_get_property;
  const auto ready = static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_READY);
  const auto playing =
      static_cast<GParamFlags>(G_PARAM_READWRITE | G_PARAM_STATIC_STRINGS | GST_PARAM_MUTABLE_PLAYING);

  /**
   * GstGlmVoiceLlm:model-path:
   * Directory of glm-4-voice-9b in the Hugging Face layout. Empty: $GLMVOICE_MODEL_DIR/glm-4-voice-9b.
   */
  g_object_class_install_property(
      gobject_class, PROP_MODEL_PATH,
      g_param_spec_string("model-path", "Model path", "LLM directory (empty: $GLMVOICE_MODEL_DIR/" MODEL_SUBDIR ")",
                          DEFAULT_MODEL_PATH, ready));
  /**
   * GstGlmVoiceLlm:device:
   * "cpu", "cuda" or "cuda:N"; empty = CUDA when available. Reads back the device in use.
   */
  g_object_class_install_property(gobject_class, PROP_DEVICE,
                                  g_param_spec_string("device", "Device", "cpu, cuda, cuda:N (empty: CUDA when available)",
                                                      DEFAULT_DEVICE, ready));
  /**
   * GstGlmVoiceLlm:dtype:
   * Compute dtype: float32 (CPU, exact parity) or bfloat16 (GPU, like the release). float16
   * is accepted but unsafe for GLM-4 activations.
   */
  g_object_class_install_property(gobject_class, PROP_DTYPE,
                                  g_param_spec_string("dtype", "Dtype", "float32, bfloat16 or float16", DEFAULT_DTYPE, ready));
  /**
   * GstGlmVoiceLlm:temperature:
   * Sampling temperature; 0 = greedy (argmax). Read at the start of every turn.
   */
  g_object_class_install_property(gobject_class, PROP_TEMPERATURE,
                                  g_param_spec_double("temperature", "Temperature", "Sampling temperature (0 = greedy)",
                                                      0.0, 100.0, DEFAULT_TEMPERATURE, playing));
  g_object_class_install_property(gobject_class, PROP_TOP_P,
                                  g_param_spec_double("top-p", "Top p", "Nucleus sampling mass (1 = off)", 0.0, 1.0,
                                                      DEFAULT_TOP_P, playing));
  g_object_class_install_property(gobject_class, PROP_TOP_K,
                                  g_param_spec_int("top-k", "Top k", "Keep the k most likely tokens (0 = off)", 0,
                                                   G_MAXINT, DEFAULT_TOP_K, playing));
  g_object_class_install_property(gobject_class, PROP_MAX_NEW_TOKENS,
                                  g_param_spec_int("max-new-tokens", "Max new tokens",
                                                   "Most tokens generated per answer", 1, G_MAXINT,
                                                   DEFAULT_MAX_NEW_TOKENS, playing));
  /**
   * GstGlmVoiceLlm:seed:
   * Seed of this element's own random generator (set at READY->PAUSED and reset-history).
   */
  g_object_class_install_property(gobject_class, PROP_SEED,
                                  g_param_spec_uint64("seed", "Seed", "Sampling seed", 0, G_MAXUINT64, DEFAULT_SEED,
                                                      ready));
  /**
   * GstGlmVoiceLlm:system-prompt:
   * Empty: the reference prompt for the input mode (speech or text). Changing it (or the
   * input mode) starts a new history.
   */
  g_object_class_install_property(gobject_class, PROP_SYSTEM_PROMPT,
                                  g_param_spec_string("system-prompt", "System prompt",
                                                      "System prompt (empty: the reference one for the input mode)",
                                                      DEFAULT_SYSTEM_PROMPT, playing));
  /**
   * GstGlmVoiceLlm:instruction:
   * Appended to every user turn after a newline, e.g. "Speak faster, in a cheerful voice."
   * (emotion / tone / speed / dialect control).
   */
  g_object_class_install_property(gobject_class, PROP_INSTRUCTION,
                                  g_param_spec_string("instruction", "Instruction", "Text appended to each user turn",
                                                      DEFAULT_INSTRUCTION, playing));
  g_object_class_install_property(gobject_class, PROP_KEEP_HISTORY,
                                  g_param_spec_boolean("keep-history", "Keep history",
                                                       "Answer each turn with the previous turns as context",
                                                       DEFAULT_KEEP_HISTORY, playing));
  /**
   * GstGlmVoiceLlm:barge-in:
   * When a new user turn completes while an answer is being generated: TRUE stops that
   * answer (end-of-response "interrupted") and answers the new turn; FALSE queues it.
   */
  g_object_class_install_property(gobject_class, PROP_BARGE_IN,
                                  g_param_spec_boolean("barge-in", "Barge in", "A new turn interrupts the current answer",
                                                       DEFAULT_BARGE_IN, playing));

  /**
   * GstGlmVoiceLlm:text-segments:
   * FALSE: push every completed character run as soon as its token is sampled. TRUE: push
   * the text of a whole segment (the ~13 tokens between two runs of speech tokens) when the
   * next speech token arrives (spec llm.md §6.6).
   */
  g_object_class_install_property(gobject_class, PROP_TEXT_SEGMENTS,
                                  g_param_spec_boolean("text-segments", "Text segments",
                                                       "Push text per segment (at the next speech token) "
                                                       "instead of per token",
                                                       DEFAULT_TEXT_SEGMENTS, playing));

  /**
   * GstGlmVoiceLlm::reset-history:
   * Action signal: forget the conversation; applied before the next turn starts.
   */
  gst_glm_voice_llm_signals[SIGNAL_RESET_HISTORY] = g_signal_new(
      "reset-history", G_TYPE_FROM_CLASS(klass), static_cast<GSignalFlags>(G_SIGNAL_RUN_LAST | G_SIGNAL_ACTION),
      G_STRUCT_OFFSET(GstGlmVoiceLlmClass, reset_history), nullptr, nullptr, nullptr, G_TYPE_NONE, 0);
  klass->reset_history = gst_glm_voice_llm_reset_history;

  gst_element_class_add_static_pad_template(element_class, &sink_template);
  gst_element_class_add_static_pad_template(element_class, &text_sink_template);
  gst_element_class_add_static_pad_template(element_class, &src_template);
  gst_element_class_add_static_pad_template(element_class, &text_src_template);
  gst_element_class_set_static_metadata(element_class, "GLM-4-Voice language model", "Filter/Audio/Text",
                                        "Answers speech or text turns with interleaved speech tokens and text",
                                        "glmvoice");
  element_class->change_state = GST_DEBUG_FUNCPTR(gst_glm_voice_llm_change_state);
  element_class->request_new_pad = GST_DEBUG_FUNCPTR(gst_glm_voice_llm_request_new_pad);
  element_class->release_pad = GST_DEBUG_FUNCPTR(gst_glm_voice_llm_release_pad);
}

static void gst_glm_voice_llm_init(GstGlmVoiceLlm* self) {
  self->impl = new GstGlmVoiceLlmImpl();

  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_chain));
  gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_sink_event));
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_activatemode_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_src_activate_mode));
  gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_src_query));
  gst_pad_use_fixed_caps(self->srcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);

  self->textsrcpad = gst_pad_new_from_static_template(&text_src_template, "text_src");
  gst_pad_set_activatemode_function(self->textsrcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_text_src_activate_mode));
  gst_pad_use_fixed_caps(self->textsrcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->textsrcpad);

  self->textsinkpad = nullptr;
}

static void gst_glm_voice_llm_finalize(GObject* object) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(object);
  delete self->impl;
  self->impl = nullptr;
  G_OBJECT_CLASS(parent_class)->finalize(object);
}

static void gst_glm_voice_llm_set_property(GObject* object, guint prop_id, const GValue* value, GParamSpec* pspec) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(object);
  GstGlmVoiceLlmImpl* impl = self->impl;
  auto str = [value](const char* fallback) {
    const gchar* s = g_value_get_string(value);
    return std::string(s ? s : fallback);
  };
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_MODEL_PATH: impl->model_path = str(""); break;
    case PROP_DEVICE: impl->device = str(""); break;
    case PROP_DTYPE: impl->dtype = str(DEFAULT_DTYPE); break;
    case PROP_TEMPERATURE: impl->temperature = g_value_get_double(value); break;
    case PROP_TOP_P: impl->top_p = g_value_get_double(value); break;
    case PROP_TOP_K: impl->top_k = g_value_get_int(value); break;
    case PROP_MAX_NEW_TOKENS: impl->max_new_tokens = g_value_get_int(value); break;
    case PROP_SEED: impl->seed = g_value_get_uint64(value); break;
    case PROP_SYSTEM_PROMPT: impl->system_prompt = str(""); break;
    case PROP_INSTRUCTION: impl->instruction = str(""); break;
    case PROP_KEEP_HISTORY: impl->keep_history = g_value_get_boolean(value); break;
    case PROP_BARGE_IN: impl->barge_in = g_value_get_boolean(value); break;
    case PROP_TEXT_SEGMENTS: impl->text_segments = g_value_get_boolean(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_glm_voice_llm_get_property(GObject* object, guint prop_id, GValue* value, GParamSpec* pspec) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(object);
  GstGlmVoiceLlmImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
    case PROP_MODEL_PATH: g_value_set_string(value, impl->model_path.c_str()); break;
    case PROP_DEVICE:
      g_value_set_string(value, impl->model && impl->device.empty() ? impl->model->options().device.str().c_str()
                                                                    : impl->device.c_str());
      break;
    case PROP_DTYPE: g_value_set_string(value, impl->dtype.c_str()); break;
    case PROP_TEMPERATURE: g_value_set_double(value, impl->temperature); break;
    case PROP_TOP_P: g_value_set_double(value, impl->top_p); break;
    case PROP_TOP_K: g_value_set_int(value, impl->top_k); break;
    case PROP_MAX_NEW_TOKENS: g_value_set_int(value, impl->max_new_tokens); break;
    case PROP_SEED: g_value_set_uint64(value, impl->seed); break;
    case PROP_SYSTEM_PROMPT: g_value_set_string(value, impl->system_prompt.c_str()); break;
    case PROP_INSTRUCTION: g_value_set_string(value, impl->instruction.c_str()); break;
    case PROP_KEEP_HISTORY: g_value_set_boolean(value, impl->keep_history); break;
    case PROP_BARGE_IN: g_value_set_boolean(value, impl->barge_in); break;
    case PROP_TEXT_SEGMENTS: g_value_set_boolean(value, impl->text_segments); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

/* ---- state ------------------------------------------------------------------------- */

static gboolean load_model(GstGlmVoiceLlm* self) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  const std::string path = impl->model_path, device = impl->device, dtype = impl->dtype;
  GST_OBJECT_UNLOCK(self);
  auto model = glmvoice::gst::load_shared_model<glmvoice::llm::LlmModel>(
      GST_ELEMENT(self), "llm", "language model", path, MODEL_SUBDIR, device, dtype);
  if (!model) return FALSE;
  if (model->tokenizer().n_audio() <= 0) {
    glmvoice::gst::post_error(GST_ELEMENT(self), "Could not load the language model",
                              glmvoice::Error(glmvoice::ErrorCode::kMismatch, model->options().path,
                                              "tokenizer_config.json",
                                              "the tokenizer defines no <|audio_N|> tokens"));
    return FALSE;
  }
  GST_OBJECT_LOCK(self);
  impl->model = model;
  GST_OBJECT_UNLOCK(self);
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    impl->codebook = model->tokenizer().n_audio();
  }
  const auto& c = model->config();
  GST_INFO_OBJECT(self,
                  "llm %s on %s: %" G_GINT64_FORMAT " layers, hidden %" G_GINT64_FORMAT ", vocab %" G_GINT64_FORMAT
                  ", %" G_GINT64_FORMAT " speech tokens from id %" G_GINT64_FORMAT ", context %" G_GINT64_FORMAT,
                  model->options().path.c_str(), model->options().device.str().c_str(), c.num_layers,
                  c.hidden_size, c.padded_vocab_size, model->tokenizer().n_audio(),
                  model->tokenizer().audio_offset(), c.seq_length);
  return TRUE;
}

// Resets everything about the output stream (not the conversation history).
static void reset_output(GstGlmVoiceLlmImpl* impl) {
  impl->need_segment = true;
  impl->discont = true;
  impl->next_out = 0;
  impl->speech_index = 0;
  impl->token_offset = 0;
  impl->text_accum.clear();
}

static GstStateChangeReturn gst_glm_voice_llm_change_state(GstElement* element, GstStateChange transition) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(element);
  GstGlmVoiceLlmImpl* impl = self->impl;
  switch (transition) {
    case GST_STATE_CHANGE_NULL_TO_READY:
      if (!load_model(self)) return GST_STATE_CHANGE_FAILURE;
      break;
    case GST_STATE_CHANGE_READY_TO_PAUSED: {
      GST_OBJECT_LOCK(self);
      glmvoice::llm::ChatOptions options;
      options.seed = impl->seed;
      auto model = impl->model;
      GST_OBJECT_UNLOCK(self);
      impl->chat = std::make_unique<glmvoice::llm::ChatState>(model, options);
      {
        std::lock_guard<std::mutex> lock(impl->mutex);
        impl->speech.clear();
        impl->turns.clear();
        impl->input_end = GST_CLOCK_TIME_NONE;
        impl->sink_eos = impl->text_sink_eos = impl->eos_pending = false;
        impl->cancel_requested = impl->reset_requested = false;
      }
      impl->need_stream_start = true;
      impl->turn_count = 0;
      reset_output(impl);
      break;
    }
    default:
      break;
  }

  const GstStateChangeReturn ret = GST_ELEMENT_CLASS(parent_class)->change_state(element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) return ret;

  switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      impl->chat.reset();  // the task is stopped (pads deactivated)
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

static void gst_glm_voice_llm_reset_history(GstGlmVoiceLlm* self) {
  std::lock_guard<std::mutex> lock(self->impl->mutex);
  self->impl->reset_requested = true;
  GST_INFO_OBJECT(self, "history reset requested");
}

/* ---- request pad ------------------------------------------------------------------- */

static GstPad* gst_glm_voice_llm_request_new_pad(GstElement* element, GstPadTemplate* templ, const gchar*,
                                                 const GstCaps*) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(element);
  if (templ != gst_element_class_get_pad_template(GST_ELEMENT_GET_CLASS(element), "text_sink")) return nullptr;
  GST_OBJECT_LOCK(self);
  if (self->textsinkpad) {
    GST_OBJECT_UNLOCK(self);
    GST_WARNING_OBJECT(self, "text_sink already exists");
    return nullptr;
  }
  GST_OBJECT_UNLOCK(self);
  GstPad* pad = gst_pad_new_from_template(templ, "text_sink");
  gst_pad_set_chain_function(pad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_text_chain));
  gst_pad_set_event_function(pad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_sink_event));
  GST_OBJECT_LOCK(self);
  self->textsinkpad = pad;
  GST_OBJECT_UNLOCK(self);
  {
    std::lock_guard<std::mutex> lock(self->impl->mutex);
    self->impl->text_sink_eos = false;
  }
  if (GST_STATE(element) > GST_STATE_READY) gst_pad_set_active(pad, TRUE);
  gst_element_add_pad(element, pad);
  return pad;
}

static void gst_glm_voice_llm_release_pad(GstElement* element, GstPad* pad) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(element);
  GST_OBJECT_LOCK(self);
  if (pad == self->textsinkpad) self->textsinkpad = nullptr;
  GST_OBJECT_UNLOCK(self);
  gst_pad_set_active(pad, FALSE);
  gst_element_remove_pad(element, pad);
}

/* ---- text output queue -------------------------------------------------------------- */

static void text_set_flushing(GstGlmVoiceLlmImpl* impl, bool flushing) {
  std::lock_guard<std::mutex> lock(impl->text_mutex);
  impl->text_flushing = flushing;
  for (GstMiniObject* obj : impl->text_queue) gst_mini_object_unref(obj);
  impl->text_queue.clear();
  if (!flushing) impl->text_flow = GST_FLOW_OK;
  impl->text_cond.notify_all();
}

// Queues a buffer or event for text_src (takes ownership). Returns the text branch's last
// fatal flow (GST_FLOW_OK if none).
static GstFlowReturn text_enqueue(GstGlmVoiceLlmImpl* impl, GstMiniObject* obj) {
  std::lock_guard<std::mutex> lock(impl->text_mutex);
  if (impl->text_flushing) {
    gst_mini_object_unref(obj);
    return GST_FLOW_OK;
  }
  impl->text_queue.push_back(obj);
  impl->text_cond.notify_all();
  return impl->text_flow;
}

static void gst_glm_voice_llm_text_loop(gpointer user_data) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(user_data);
  GstGlmVoiceLlmImpl* impl = self->impl;
  GstMiniObject* obj = nullptr;
  {
    std::unique_lock<std::mutex> lock(impl->text_mutex);
    impl->text_cond.wait(lock, [&] { return impl->text_flushing || !impl->text_queue.empty(); });
    if (impl->text_flushing) {
      lock.unlock();
      gst_pad_pause_task(self->textsrcpad);
      return;
    }
    obj = impl->text_queue.front();
    impl->text_queue.pop_front();
  }
  if (GST_IS_BUFFER(obj)) {
    const GstFlowReturn ret = gst_pad_push(self->textsrcpad, GST_BUFFER(obj));
    // An unlinked text pad is fine; fatal flows (not-negotiated, error) stop the element.
    if (ret < GST_FLOW_EOS && ret != GST_FLOW_NOT_LINKED) {
      std::lock_guard<std::mutex> lock(impl->text_mutex);
      impl->text_flow = ret;
    }
  } else {
    gst_pad_push_event(self->textsrcpad, GST_EVENT(obj));
  }
}

static gboolean gst_glm_voice_llm_text_src_activate_mode(GstPad* pad, GstObject* parent, GstPadMode mode,
                                                         gboolean active) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (active) {
    text_set_flushing(self->impl, false);
    return gst_pad_start_task(pad, gst_glm_voice_llm_text_loop, self, nullptr);
  }
  text_set_flushing(self->impl, true);
  return gst_pad_stop_task(pad);
}

/* ---- input side -------------------------------------------------------------------- */

// Queues a completed user turn (caller holds impl->mutex) and wakes the task.
static void queue_turn(GstGlmVoiceLlm* self, glmvoice::llm::UserTurn turn) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  QueuedTurn q;
  q.turn = std::move(turn);
  q.input_end = impl->input_end;
  impl->turns.push_back(std::move(q));
  GST_OBJECT_LOCK(self);
  const bool barge_in = impl->barge_in;
  GST_OBJECT_UNLOCK(self);
  if (barge_in) impl->cancel_requested = true;
  impl->cond.notify_all();
}

// The user's speech turn is complete (end-of-turn or EOS); caller holds impl->mutex.
static void finish_speech_turn(GstGlmVoiceLlm* self) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  if (impl->speech.empty()) {
    GST_DEBUG_OBJECT(self, "end of turn without speech tokens: nothing to answer");
    return;
  }
  GST_OBJECT_LOCK(self);
  const std::string instruction = impl->instruction;
  GST_OBJECT_UNLOCK(self);
  GST_INFO_OBJECT(self, "user speech turn of %zu tokens complete", impl->speech.size());
  queue_turn(self, glmvoice::llm::UserTurn::speech(std::move(impl->speech), instruction));
  impl->speech.clear();
}

static void note_input_time(GstGlmVoiceLlmImpl* impl, GstBuffer* buffer, GstClockTime fallback_duration) {
  if (!GST_BUFFER_PTS_IS_VALID(buffer)) return;
  GstClockTime end = GST_BUFFER_PTS(buffer);
  end += GST_BUFFER_DURATION_IS_VALID(buffer) ? GST_BUFFER_DURATION(buffer) : fallback_duration;
  if (!GST_CLOCK_TIME_IS_VALID(impl->input_end) || end > impl->input_end) impl->input_end = end;
}

static GstFlowReturn gst_glm_voice_llm_chain(GstPad*, GstObject* parent, GstBuffer* buffer) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  GstGlmVoiceLlmImpl* impl = self->impl;
  std::vector<int32_t> tokens;
  const glmvoice::gst::TokenRead read = glmvoice::gst::read_tokens(buffer, tokens);
  if (read == glmvoice::gst::TokenRead::kMapFailed) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("could not map an input buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  const bool ragged = read == glmvoice::gst::TokenRead::kRagged;
  const gsize n = tokens.size();

  std::unique_lock<std::mutex> lock(impl->mutex);
  const int64_t codebook = impl->codebook;
  if (impl->srcresult != GST_FLOW_OK) {
    const GstFlowReturn ret = impl->srcresult;
    lock.unlock();
    gst_buffer_unref(buffer);
    return ret;
  }
  std::string bad = ragged ? "buffer size is not a multiple of 4 bytes" : "";
  for (size_t i = 0; i < tokens.size() && bad.empty(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= codebook) {
      bad = std::to_string(tokens[i]) + " is outside the model's " + std::to_string(codebook) + " speech tokens";
    }
  }
  if (!bad.empty()) {
    lock.unlock();
    gst_buffer_unref(buffer);
    glmvoice::gst::post_error(GST_ELEMENT(self), "Invalid speech token",
                              glmvoice::Error(glmvoice::ErrorCode::kBadInput, "", "speech token", bad));
    return GST_FLOW_ERROR;
  }
  note_input_time(impl, buffer, n * GST_GLM_VOICE_TOKEN_DURATION);
  impl->speech.insert(impl->speech.end(), tokens.begin(), tokens.end());
  lock.unlock();
  gst_buffer_unref(buffer);
  return GST_FLOW_OK;
}

static GstFlowReturn gst_glm_voice_llm_text_chain(GstPad*, GstObject* parent, GstBuffer* buffer) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  GstGlmVoiceLlmImpl* impl = self->impl;
  GstMapInfo map;
  if (!gst_buffer_map(buffer, &map, GST_MAP_READ)) {
    gst_buffer_unref(buffer);
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("could not map an input buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  std::string text(reinterpret_cast<const char*>(map.data), map.size);
  gst_buffer_unmap(buffer, &map);
  while (!text.empty() && text.back() == '\0') text.pop_back();
  GST_OBJECT_LOCK(self);
  const std::string instruction = impl->instruction;
  GST_OBJECT_UNLOCK(self);
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (impl->srcresult != GST_FLOW_OK) {
    gst_buffer_unref(buffer);
    return impl->srcresult;
  }
  note_input_time(impl, buffer, 0);
  gst_buffer_unref(buffer);
  if (text.empty()) return GST_FLOW_OK;
  GST_INFO_OBJECT(self, "user text turn of %zu bytes", text.size());
  queue_turn(self, glmvoice::llm::UserTurn::from_text(std::move(text), instruction));
  return GST_FLOW_OK;
}

static void check_all_eos(GstGlmVoiceLlm* self) {  // caller holds impl->mutex
  GstGlmVoiceLlmImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  GstPad* text_sink = self->textsinkpad ? GST_PAD(gst_object_ref(self->textsinkpad)) : nullptr;
  GST_OBJECT_UNLOCK(self);
  const bool speech_done = impl->sink_eos || !gst_pad_is_linked(self->sinkpad);
  const bool text_done = !text_sink || impl->text_sink_eos || !gst_pad_is_linked(text_sink);
  if (text_sink) gst_object_unref(text_sink);
  if (speech_done && text_done && (impl->sink_eos || impl->text_sink_eos)) {
    impl->eos_pending = true;
    impl->cond.notify_all();
  }
}

static gboolean gst_glm_voice_llm_sink_event(GstPad* pad, GstObject* parent, GstEvent* event) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  GstGlmVoiceLlmImpl* impl = self->impl;
  const bool is_text = pad != self->sinkpad;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_CAPS: {
      GstCaps* caps = nullptr;
      gst_event_parse_caps(event, &caps);
      gboolean ok = TRUE;
      if (!is_text) {
        gint size = 0;
        std::lock_guard<std::mutex> lock(impl->mutex);
        if (!gst_glm_voice_tokens_caps_parse(caps, &size) || size != impl->codebook) {
          glmvoice::gst::post_error(
              GST_ELEMENT(self), "Speech token caps do not match the model",
              glmvoice::Error(glmvoice::ErrorCode::kBadInput, "", "codebook-size",
                              "input codebook-size " + std::to_string(size) + " but the model has " +
                                  std::to_string(impl->codebook) + " speech tokens"));
          ok = FALSE;
        }
      }
      gst_event_unref(event);
      return ok;
    }
    case GST_EVENT_STREAM_START:
    case GST_EVENT_SEGMENT:
    case GST_EVENT_TAG:
      gst_event_unref(event);  // the answer is a new stream with its own timeline
      return TRUE;
    case GST_EVENT_EOS: {
      std::lock_guard<std::mutex> lock(impl->mutex);
      if (is_text) {
        impl->text_sink_eos = true;
      } else {
        impl->sink_eos = true;
        finish_speech_turn(self);
      }
      check_all_eos(self);
      gst_event_unref(event);
      return TRUE;
    }
    case GST_EVENT_FLUSH_START: {
      {
        std::lock_guard<std::mutex> lock(impl->mutex);
        impl->flushing = true;
        impl->srcresult = GST_FLOW_FLUSHING;
        impl->cond.notify_all();
      }
      text_set_flushing(impl, true);
      gst_pad_push_event(self->textsrcpad, gst_event_ref(event));
      gst_pad_push_event(self->srcpad, event);
      gst_pad_pause_task(self->textsrcpad);
      gst_pad_pause_task(self->srcpad);  // waits for the current token to finish
      GST_DEBUG_OBJECT(self, "flush start: generation paused");
      return TRUE;
    }
    case GST_EVENT_FLUSH_STOP: {
      gst_pad_push_event(self->textsrcpad, gst_event_ref(event));
      gst_pad_push_event(self->srcpad, event);
      GST_PAD_STREAM_LOCK(self->srcpad);
      if (impl->chat && impl->chat->in_turn()) impl->chat->cancel();  // history keeps the generated part
      reset_output(impl);
      GST_PAD_STREAM_UNLOCK(self->srcpad);
      text_set_flushing(impl, false);
      gst_pad_start_task(self->textsrcpad, gst_glm_voice_llm_text_loop, self, nullptr);
      {
        std::lock_guard<std::mutex> lock(impl->mutex);
        impl->speech.clear();
        impl->turns.clear();
        impl->input_end = GST_CLOCK_TIME_NONE;
        impl->sink_eos = impl->text_sink_eos = impl->eos_pending = false;
        impl->cancel_requested = false;
        impl->flushing = false;
        impl->srcresult = GST_FLOW_OK;
      }
      gst_pad_start_task(self->srcpad, gst_glm_voice_llm_loop, self, nullptr);
      return TRUE;
    }
    default:
      break;
  }
  if (gst_glm_voice_event_is_end_of_turn(event)) {
    std::lock_guard<std::mutex> lock(impl->mutex);
    if (!is_text) finish_speech_turn(self);
    gst_event_unref(event);
    return TRUE;
  }
  if (GST_EVENT_IS_SERIALIZED(event)) {
    gst_event_unref(event);  // other serialized events do not apply to the answer stream
    return TRUE;
  }
  return gst_pad_event_default(pad, parent, event);
}

/* ---- output side ------------------------------------------------------------------- */

static gboolean gst_glm_voice_llm_src_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  if (GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    // Nothing of our own: the answer's timeline starts when the user's turn ends.
    gboolean res = gst_pad_peer_query(self->sinkpad, query);
    if (!res) gst_query_set_latency(query, FALSE, 0, GST_CLOCK_TIME_NONE);
    return TRUE;
  }
  return gst_pad_query_default(pad, parent, query);
}

static gboolean gst_glm_voice_llm_src_activate_mode(GstPad* pad, GstObject* parent, GstPadMode mode,
                                                    gboolean active) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  GstGlmVoiceLlmImpl* impl = self->impl;
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (active) {
    {
      std::lock_guard<std::mutex> lock(impl->mutex);
      impl->flushing = false;
      impl->srcresult = GST_FLOW_OK;
    }
    return gst_pad_start_task(pad, gst_glm_voice_llm_loop, self, nullptr);
  }
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    impl->flushing = true;
    impl->srcresult = GST_FLOW_FLUSHING;
    impl->cond.notify_all();
  }
  return gst_pad_stop_task(pad);
}

static void push_sticky_events(GstGlmVoiceLlm* self) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  if (impl->need_stream_start) {
    // The answer is a new stream (not derived from one upstream stream: there can be two
    // sink pads, so gst_pad_create_stream_id() cannot be used).
    const guint group = gst_util_group_id_next();
    const guint32 r1 = g_random_int(), r2 = g_random_int();
    for (GstPad* pad : {self->srcpad, self->textsrcpad}) {
      gchar* id = g_strdup_printf("%08x%08x/%s", r1, r2, pad == self->srcpad ? "speech" : "text");
      GstEvent* ev = gst_event_new_stream_start(id);
      gst_event_set_group_id(ev, group);
      if (pad == self->srcpad) {
        gst_pad_push_event(pad, ev);
      } else {
        text_enqueue(impl, GST_MINI_OBJECT_CAST(ev));
      }
      g_free(id);
    }
    GstCaps* caps = gst_glm_voice_tokens_caps_new(static_cast<gint>(impl->chat->model().tokenizer().n_audio()));
    gst_pad_push_event(self->srcpad, gst_event_new_caps(caps));
    gst_caps_unref(caps);
    caps = gst_caps_from_string(GST_GLM_VOICE_TEXT_CAPS);
    text_enqueue(impl, GST_MINI_OBJECT_CAST(gst_event_new_caps(caps)));
    gst_caps_unref(caps);
    impl->need_stream_start = false;
  }
  if (impl->need_segment) {
    GstSegment segment;
    gst_segment_init(&segment, GST_FORMAT_TIME);
    gst_pad_push_event(self->srcpad, gst_event_new_segment(&segment));
    text_enqueue(impl, GST_MINI_OBJECT_CAST(gst_event_new_segment(&segment)));
    impl->need_segment = false;
  }
}

static GstFlowReturn push_text(GstGlmVoiceLlm* self, const std::string& text) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  if (text.empty()) return GST_FLOW_OK;
  GstBuffer* buf = gst_buffer_new_memdup(text.data(), text.size());
  GST_BUFFER_PTS(buf) = impl->response_start + impl->speech_index * GST_GLM_VOICE_TOKEN_DURATION;
  return text_enqueue(impl, GST_MINI_OBJECT_CAST(buf));
}

static GstFlowReturn push_speech_token(GstGlmVoiceLlm* self, int64_t token) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  const gint32 value = static_cast<gint32>(token);
  GstBuffer* buf = gst_glm_voice_tokens_buffer_new(&value, 1);
  GST_BUFFER_PTS(buf) = impl->response_start + impl->speech_index * GST_GLM_VOICE_TOKEN_DURATION;
  GST_BUFFER_DURATION(buf) = GST_GLM_VOICE_TOKEN_DURATION;
  GST_BUFFER_OFFSET(buf) = impl->token_offset;
  GST_BUFFER_OFFSET_END(buf) = impl->token_offset + 1;
  if (impl->discont) {
    GST_BUFFER_FLAG_SET(buf, GST_BUFFER_FLAG_DISCONT);
    impl->discont = false;
  }
  ++impl->speech_index;
  ++impl->token_offset;
  const GstFlowReturn ret = gst_pad_push(self->srcpad, buf);
  // Text-only use: an unlinked speech pad is fine while text_src is linked.
  if (ret == GST_FLOW_NOT_LINKED && gst_pad_is_linked(self->textsrcpad)) return GST_FLOW_OK;
  return ret;
}

static GValue int_array(const std::vector<int64_t>& ids) {
  GValue array = G_VALUE_INIT;
  gst_value_array_init(&array, static_cast<guint>(ids.size()));
  for (int64_t id : ids) {
    GValue v = G_VALUE_INIT;
    g_value_init(&v, G_TYPE_INT);
    g_value_set_int(&v, static_cast<gint>(id));
    gst_value_array_append_and_take_value(&array, &v);
  }
  return array;
}

static void post_turn_message(GstGlmVoiceLlm* self, const glmvoice::llm::ChatEvent& end) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  const auto& chat = *impl->chat;
  const double total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - impl->turn_t0).count();
  const int64_t generated = static_cast<int64_t>(chat.completion_ids().size());
  const double decode_ms = generated > 1 ? (total_ms - impl->prefill_ms) / static_cast<double>(generated - 1) : 0.0;
  const std::string text = chat.completion_text();
  GstStructure* s = gst_structure_new(
      TURN_MESSAGE_NAME, "turn", G_TYPE_INT, static_cast<gint>(impl->turn_count), "text", G_TYPE_STRING, text.c_str(),
      "reason", G_TYPE_STRING, glmvoice::llm::stop_reason_name(end.reason), "prompt-tokens", G_TYPE_INT,
      static_cast<gint>(chat.prompt_ids().size()), "generated-tokens", G_TYPE_INT, static_cast<gint>(generated),
      "speech-tokens", G_TYPE_INT, static_cast<gint>(impl->speech_index), "prefill-ms", G_TYPE_DOUBLE,
      impl->prefill_ms, "decode-ms-per-token", G_TYPE_DOUBLE, decode_ms, NULL);
  GValue input = int_array(chat.prompt_ids()), completion = int_array(chat.completion_ids());
  gst_structure_take_value(s, "input-ids", &input);
  gst_structure_take_value(s, "completion-ids", &completion);
  GST_INFO_OBJECT(self, "turn %" G_GINT64_FORMAT ": %zu prompt tokens, %" G_GINT64_FORMAT
                  " generated (%s), prefill %.1f ms, %.1f ms/token: \"%s\"",
                  impl->turn_count, chat.prompt_ids().size(), generated, glmvoice::llm::stop_reason_name(end.reason),
                  impl->prefill_ms, decode_ms, text.c_str());
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), s));
}

// Handles the end of an answer: remaining text, end-of-response on both pads, bus message.
static GstFlowReturn finish_answer(GstGlmVoiceLlm* self, const glmvoice::llm::ChatEvent& end) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  GstFlowReturn ret = push_text(self, impl->text_accum + end.text);
  impl->text_accum.clear();
  const char* reason = glmvoice::llm::stop_reason_name(end.reason);
  gst_pad_push_event(self->srcpad, gst_glm_voice_event_new_end_of_response(reason));
  text_enqueue(impl, GST_MINI_OBJECT_CAST(gst_glm_voice_event_new_end_of_response(reason)));
  post_turn_message(self, end);
  impl->next_out = impl->response_start + impl->speech_index * GST_GLM_VOICE_TOKEN_DURATION;
  return ret;
}

static void pause_on_flow(GstGlmVoiceLlm* self, GstFlowReturn ret) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  {
    std::lock_guard<std::mutex> lock(impl->mutex);
    if (impl->srcresult == GST_FLOW_OK || ret != GST_FLOW_FLUSHING) impl->srcresult = ret;
  }
  GST_DEBUG_OBJECT(self, "pausing task: %s", gst_flow_get_name(ret));
  gst_pad_pause_task(self->srcpad);
  if (ret == GST_FLOW_EOS || ret == GST_FLOW_FLUSHING) return;
  if (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS) {
    GST_ELEMENT_FLOW_ERROR(self, ret);
    gst_pad_push_event(self->srcpad, gst_event_new_eos());
    text_enqueue(impl, GST_MINI_OBJECT_CAST(gst_event_new_eos()));
  }
}

static void gst_glm_voice_llm_loop(gpointer user_data) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(user_data);
  GstGlmVoiceLlmImpl* impl = self->impl;
  auto& chat = *impl->chat;

  // 1. Wait for work (a turn in progress needs none).
  QueuedTurn next;
  bool have_next = false, cancel = false, reset = false, eos = false;
  {
    std::unique_lock<std::mutex> lock(impl->mutex);
    if (!chat.in_turn()) {
      impl->cond.wait(lock, [&] { return impl->flushing || !impl->turns.empty() || impl->eos_pending; });
    }
    if (impl->flushing) {
      lock.unlock();
      gst_pad_pause_task(self->srcpad);
      return;
    }
    reset = impl->reset_requested && !chat.in_turn();
    if (reset) impl->reset_requested = false;
    cancel = impl->cancel_requested && chat.in_turn();
    impl->cancel_requested = false;
    if (!chat.in_turn() && !impl->turns.empty()) {
      next = std::move(impl->turns.front());
      impl->turns.pop_front();
      have_next = true;
    } else if (!chat.in_turn() && impl->eos_pending) {
      eos = true;
      impl->eos_pending = false;
    }
  }

  push_sticky_events(self);
  if (reset) {
    chat.reset();
    GST_INFO_OBJECT(self, "conversation history reset");
  }
  if (eos) {
    GST_DEBUG_OBJECT(self, "all input done: EOS");
    gst_pad_push_event(self->srcpad, gst_event_new_eos());
    text_enqueue(impl, GST_MINI_OBJECT_CAST(gst_event_new_eos()));
    pause_on_flow(self, GST_FLOW_EOS);
    return;
  }

  GstFlowReturn ret = GST_FLOW_OK;
  try {
    if (have_next) {
      // 2. Start an answer: settings are read once per turn.
      GST_OBJECT_LOCK(self);
      auto& o = chat.options();
      o.sampling.temperature = impl->temperature;
      o.sampling.top_p = impl->top_p;
      o.sampling.top_k = impl->top_k;
      o.max_new_tokens = impl->max_new_tokens;
      o.system_prompt = impl->system_prompt;
      o.keep_history = impl->keep_history;
      impl->segment_mode = impl->text_segments;
      GST_OBJECT_UNLOCK(self);
      try {
        chat.begin_turn(next.turn);
      } catch (const glmvoice::Error& e) {
        if (e.code() != glmvoice::ErrorCode::kBadInput) throw;
        GST_ELEMENT_WARNING(self, STREAM, DECODE, ("User turn skipped"), ("%s", e.what()));
        return;
      }
      impl->response_start = impl->next_out;
      if (GST_CLOCK_TIME_IS_VALID(next.input_end) && next.input_end > impl->response_start) {
        impl->response_start = next.input_end;
      }
      impl->speech_index = 0;
      ++impl->turn_count;
      impl->turn_t0 = std::chrono::steady_clock::now();
      impl->prefill_ms = -1;
      GST_DEBUG_OBJECT(self, "answering turn %" G_GINT64_FORMAT " (%zu prompt tokens)", impl->turn_count,
                       chat.prompt_ids().size());
      return;  // generation starts in the next iteration (FLUSH can intervene)
    }
    // 3. One token per iteration.
    const glmvoice::llm::ChatEvent ev = cancel ? chat.cancel() : chat.step();
    if (impl->prefill_ms < 0) {
      impl->prefill_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - impl->turn_t0).count();
    }
    switch (ev.kind) {
      case glmvoice::llm::ChatEvent::kAudio:
        ret = push_text(self, impl->text_accum);  // text-segments mode: the segment before this token
        impl->text_accum.clear();
        if (ret == GST_FLOW_OK) ret = push_speech_token(self, ev.speech_token);
        break;
      case glmvoice::llm::ChatEvent::kText:
        if (impl->segment_mode) {
          impl->text_accum += ev.text;
        } else {
          ret = push_text(self, ev.text);
        }
        break;
      case glmvoice::llm::ChatEvent::kOther: break;
      case glmvoice::llm::ChatEvent::kEnd: ret = finish_answer(self, ev); break;
    }
  } catch (...) {
    glmvoice::gst::post_error(GST_ELEMENT(self), "Language model failed", std::current_exception());
    if (chat.in_turn()) chat.cancel();
    ret = GST_FLOW_ERROR;
    {
      std::lock_guard<std::mutex> lock(impl->mutex);
      impl->srcresult = GST_FLOW_ERROR;
    }
    gst_pad_push_event(self->srcpad, gst_event_new_eos());
    text_enqueue(impl, GST_MINI_OBJECT_CAST(gst_event_new_eos()));
    gst_pad_pause_task(self->srcpad);
    return;
  }
  if (ret != GST_FLOW_OK) {
    if (chat.in_turn() && ret != GST_FLOW_FLUSHING) chat.cancel();
    pause_on_flow(self, ret);
  }
}
