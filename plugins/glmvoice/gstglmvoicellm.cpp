/* glmvoicellm: GLM-4-Voice language model element.
 * SPDX-License-Identifier: LGPL-2.1-or-later */

/**
 * SECTION:element-glmvoicellm
 * @title: glmvoicellm
 *
 * Answers a spoken (or written) user turn with GLM-4-Voice-9B: the answer streams out as
 * speech tokens on `src` (for glmvoicedecode) and as text on `text_src`, interleaved the way
 * the model emits them (about 13 text tokens, then 26 speech tokens, ...). Prompt building,
 * history, sampling and stop handling live in lib/llm/chat.h (spec llm.md §4, §6); the turn
 * logic (queue, barge-in, history policy, per-turn report) in glmvoicellm_turns.h.
 *
 * Pads:
 * - `sink` (always): `audio/x-glm-speech-tokens, codebook-size=N`: the user's speech tokens.
 *   The CAPS query answers the loaded model's N, so a mismatch is a not-negotiated error when
 *   the pipeline negotiates; a token >= N is a STREAM/DECODE error.
 * - `text_sink` (request): `text/x-raw, format=utf8`: text input (as the reference demo's text
 *   box). Every buffer is one complete user message and starts a turn; with `text-lines` the
 *   input is a byte stream and every line is a turn.
 * - `src` (always): `audio/x-glm-speech-tokens`: the answer's speech tokens, one buffer per
 *   token as it is sampled, duration 80 ms.
 * - `text_src` (always): `text/x-raw, format=utf8`: the answer's text as complete UTF-8 runs
 *   (a character split over two tokens is held back until complete). May stay unlinked.
 *
 * ## Timeline
 * Input timestamps are converted to running time through each sink pad's segment. An answer
 * starts at the running time where the user's input ended (or where the previous answer
 * ended, if later); speech tokens follow every 80 ms. Both src pads carry one TIME segment
 * from 0 (a new one after a flush), so output PTS are running times. A text buffer carries
 * the PTS of the speech it belongs to (the speech that follows it): without `text-segments`
 * it goes out as soon as it is sampled, without a duration; with `text-segments` a segment's
 * text goes out when its speech run is complete, with that run's duration (subtitles).
 *
 * ## GAP and sparse outputs
 * Neither src pad ever waits for the other: text goes out from its own task, and GAP events
 * keep both timelines level, so sinks on both branches preroll whatever the answer holds (a
 * speech-only answer, a text-only answer, no answer at all): before each speech token the
 * text timeline is covered up to its end; the time between answers is covered by a GAP on
 * both pads; an answer without speech sends a GAP on `src`. A GAP on a sink pad advances the
 * input time (an answer then starts after it) and is forwarded as GAP when no answer runs.
 *
 * ## Events
 * The custom end-of-turn event (gst/glmvoice_events.h) on `sink` (or EOS) completes the
 * user's speech turn and queues its answer. After every answer, whatever the stop reason
 * (`stop-token`, `max-new-tokens`, `context`, `interrupted`), an end-of-response event with
 * that reason goes out on both src pads; EOS follows once every linked sink pad got EOS and
 * the queued turns are answered. FLUSH_START stops generation within one token; FLUSH_STOP
 * drops the interrupted answer and any pending input (the history keeps what was generated;
 * the `reset-history` action signal forgets it).
 *
 * Barge-in: with `barge-in=true`, the start-of-speech event of glmvoicetokenize (the user
 * starts talking) stops the answer in progress within one token, with end-of-response
 * `reason=interrupted` (glmvoicedecode then drops that answer's pending tokens); a new
 * complete turn (speech or text) interrupts too. When the answer was already generated but may
 * still be playing (generation is faster than playback), start-of-speech sends one
 * end-of-response `reason=interrupted` on `src` alone, so the decoder stops its audio too.
 * Without barge-in, turns queue up.
 *
 * ## History and the context
 * With `keep-history` every prompt holds the previous turns. When the prompt would leave less
 * than min(max-new-tokens, context / 2) tokens for the answer, the oldest turns are dropped
 * (whole turns, the system prompt stays) and an element message `glmvoicellm-context` says
 * so (`dropped-turns`, `total-dropped-turns`, `prompt-tokens`, `context-tokens`). Only a
 * single turn longer than the whole context is not answered: a STREAM/DECODE warning and an
 * end-of-response `reason=context`.
 *
 * ## Messages
 * After each answer an element message `glmvoicellm-turn` with `input-ids` and
 * `completion-ids` (arrays of int), `text` (string: the full transcript of the answer),
 * `reason` (string), `turn`, `prompt-tokens`, `generated-tokens`, `speech-tokens` (int),
 * `prefill-ms`, `decode-ms-per-token` (double, the model alone): the reference web demo's
 * debug view; with a shared scheduler (max-batch > 0) also `batch-size` (double: the mean
 * number of conversations in the batched steps of this answer) and `batch-size-max` (int).
 *
 * ## Latency
 * Nothing comes out before the user's turn is complete. While the user speaks, the prompt
 * (history, system prompt, the speech tokens so far) is prefilled every 8 speech tokens, so
 * at the end of the turn only the last few tokens and the assistant header run before the
 * first token (a flushed turn is rolled back); each further token is one decode step. The
 * `latency` property (ns) is this element's budget for that (prefill + first tokens; 0 =
 * the largest first-token time measured so far); with a live upstream the LATENCY query
 * adds it to upstream's (otherwise upstream's not-live answer), a LATENCY message is posted
 * when it changes, and a warning is posted once when a first token comes later than a set
 * budget after its turn ended (gst/glmvoice_latency.h). The answer must be generated
 * faster than it is played (>= 18.75 tokens/s for 12.5 speech tokens/s with the 13/26
 * interleave): the real 9B model needs a GPU for that.
 *
 * Threads: generation runs on the task of `src` (one token per iteration, so FLUSH and
 * barge-in act within a token); with max-batch > 0 each forward pass waits in the model's
 * scheduler thread (lib/llm/scheduler.h), batched with the other elements on that model;
 * `text_src` is pushed from its own task through an internal queue: no `queue` is needed
 * after either src pad.
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
#include <memory>
#include <string>
#include <vector>

#include "glmvoice_caps.h"
#include "glmvoice_element_util.h"
#include "glmvoice_events.h"
#include "glmvoice_latency.h"
#include "glmvoice_model_props.h"
#include "glmvoicellm_output.h"
#include "glmvoicellm_turns.h"
#include "io/error.h"
#include "llm/chatglm_model.h"
#include "llm/scheduler.h"

GST_DEBUG_CATEGORY_STATIC(gst_glm_voice_llm_debug);
#define GST_CAT_DEFAULT gst_glm_voice_llm_debug

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
#define DEFAULT_TEXT_LINES FALSE
/* Conversations per batched step of a shared model (issue 11); 0 = this element runs its own
 * batch-1 forward. */
#define DEFAULT_MAX_BATCH 8
/* Model subdirectory under $GLMVOICE_MODEL_DIR (the Hugging Face repo name). */
#define MODEL_SUBDIR "glm-4-voice-9b"

enum {
  PROP_0,
  PROP_MODEL_PATH,  // model-path, device, dtype: consecutive (ModelProperties)
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
  PROP_TEXT_LINES,
  PROP_LATENCY,
  PROP_MAX_BATCH,
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

using glmvoice::gst::LlmConversation;
using glmvoice::gst::LlmTurnSettings;
using glmvoice::gst::LlmWork;
using glmvoice::gst::QueuedTurn;

struct GstGlmVoiceLlmImpl {
  // Settings: protected by the object lock; copied out at every turn start.
  // model-path, device, dtype (default auto: bfloat16 on CUDA, float32 on CPU; llm.md §3.7)
  glmvoice::gst::ModelProperties model_props{PROP_MODEL_PATH, MODEL_SUBDIR, GST_GLM_VOICE_DTYPE_AUTO};
  glmvoice::gst::LatencyBudget latency{PROP_LATENCY};
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
  gboolean text_lines = DEFAULT_TEXT_LINES;
  gint max_batch = DEFAULT_MAX_BATCH;

  // Set at NULL->READY, dropped at READY->NULL (object lock).
  std::shared_ptr<const glmvoice::llm::LlmModel> model;
  // The model's scheduler, shared by every element on that model (null: max-batch 0).
  std::shared_ptr<const glmvoice::llm::Scheduler> scheduler;
  gint codebook = 0;  // the model's number of speech tokens; 0 without a model

  // Completed turns, barge-in, input EOS (thread-safe on its own).
  glmvoice::gst::LlmTurnQueue turns;
  // What chain functions return when the src task stopped (FLUSHING, EOS, an error).
  std::atomic<GstFlowReturn> srcresult{GST_FLOW_FLUSHING};

  // Input segments: each protected by its sink pad's stream lock.
  GstSegment speech_segment;
  GstSegment text_segment;
  std::string partial_line;  // text-lines: bytes after the last newline (text_sink stream lock)

  // The conversation: owned by the src task (and by FLUSH_STOP / state changes while it is
  // paused or stopped, under the src pad's stream lock).
  std::unique_ptr<LlmConversation> conversation;
  // Both outputs and their timeline (src task; its text queue has its own lock).
  std::unique_ptr<glmvoice::gst::LlmAnswerOutput> output;
  // An answer with speech ended and no barge-in has interrupted it since (src task): a
  // start-of-speech then still has audio to stop downstream.
  bool answer_may_be_playing = false;
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
static gboolean gst_glm_voice_llm_sink_query(GstPad* pad, GstObject* parent, GstQuery* query);
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

  /* model-path (empty: $GLMVOICE_MODEL_DIR/glm-4-voice-9b), device, dtype (an enum). */
  glmvoice::gst::ModelProperties::install(gobject_class, PROP_MODEL_PATH, MODEL_SUBDIR,
                                          "config.json, model*.safetensors, tokenizer_config.json",
                                          GST_GLM_VOICE_DTYPE_AUTO);
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
   * TRUE: the user starting to speak (the tokenizer's start-of-speech event) or a new
   * complete turn stops the answer in progress within one token (end-of-response
   * "interrupted"); the new turn is answered next. FALSE: turns queue up.
   */
  g_object_class_install_property(gobject_class, PROP_BARGE_IN,
                                  g_param_spec_boolean("barge-in", "Barge in", "The user speaking (or a new turn) interrupts the answer",
                                                       DEFAULT_BARGE_IN, playing));

  /**
   * GstGlmVoiceLlm:text-segments:
   * FALSE: push every completed character run as soon as its token is sampled (PTS: where
   * its speech starts, no duration). TRUE: push the text of a whole segment (the ~13 tokens
   * between two runs of speech tokens, spec llm.md §6.6) once the speech run after it is
   * complete, with that run's PTS and duration (subtitles).
   */
  g_object_class_install_property(gobject_class, PROP_TEXT_SEGMENTS,
                                  g_param_spec_boolean("text-segments", "Text segments",
                                                       "Push text per segment, with the PTS and duration of "
                                                       "the speech that follows it, instead of per token",
                                                       DEFAULT_TEXT_SEGMENTS, playing));

  /**
   * GstGlmVoiceLlm:text-lines:
   * TRUE: `text_sink` is a byte stream (e.g. `fdsrc` on a terminal) and every line is one
   * user turn; every answer on `text_src` is one line: its newlines, control characters and
   * backslashes are escaped (`\n`, `\t`, `\xNN`, `\\`) and a newline ends it.
   */
  g_object_class_install_property(
      gobject_class, PROP_TEXT_LINES,
      g_param_spec_boolean("text-lines", "Text lines",
                           "text_sink: one turn per line; text_src: one escaped line per answer",
                           DEFAULT_TEXT_LINES, ready));
  /**
   * GstGlmVoiceLlm:latency:
   * Budget in ns from the end of a user turn to the answer's first token (prefill + first
   * tokens); 0 = the largest first-token time measured so far. Added to the LATENCY query
   * when upstream is live; a warning is posted once when a first token comes later than a
   * set budget. Changing it posts a LATENCY message.
   */
  glmvoice::gst::LatencyBudget::install(gobject_class, PROP_LATENCY,
                                        "Latency budget in ns: end of a turn to its first token (0 = measured)");

  /**
   * GstGlmVoiceLlm:max-batch:
   * Many calls on one model (issue 11): elements whose model-path, device and dtype are equal
   * share one loaded model and one scheduler that runs the conversations' forward passes
   * together, as batched steps of up to max-batch conversations (first come, first served;
   * a long prompt is prefilled in chunks so it never stalls the others for long). The first
   * element to load the model sets it for all; later elements' values are ignored while that
   * model stays loaded. 0: this element runs its own batch-1 forward. Results do not depend
   * on the batch (fp32 rounding); the glmvoicellm-turn message reports `batch-size`.
   */
  g_object_class_install_property(
      gobject_class, PROP_MAX_BATCH,
      g_param_spec_int("max-batch", "Max batch",
                       "Conversations per batched step of a shared model (set by the first element to load "
                       "the model; 0 = own batch-1 forward)",
                       0, 256, DEFAULT_MAX_BATCH, ready));

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
  gst_segment_init(&self->impl->speech_segment, GST_FORMAT_TIME);
  gst_segment_init(&self->impl->text_segment, GST_FORMAT_TIME);

  self->sinkpad = gst_pad_new_from_static_template(&sink_template, "sink");
  gst_pad_set_chain_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_chain));
  gst_pad_set_event_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_sink_event));
  gst_pad_set_query_function(self->sinkpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_sink_query));
  gst_element_add_pad(GST_ELEMENT(self), self->sinkpad);

  self->srcpad = gst_pad_new_from_static_template(&src_template, "src");
  gst_pad_set_activatemode_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_src_activate_mode));
  gst_pad_set_query_function(self->srcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_src_query));
  gst_pad_use_fixed_caps(self->srcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->srcpad);

  self->textsrcpad = gst_pad_new_from_static_template(&text_src_template, "text_src");
  gst_pad_set_activatemode_function(self->textsrcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_text_src_activate_mode));
  gst_pad_set_query_function(self->textsrcpad, GST_DEBUG_FUNCPTR(gst_glm_voice_llm_src_query));
  gst_pad_use_fixed_caps(self->textsrcpad);
  gst_element_add_pad(GST_ELEMENT(self), self->textsrcpad);

  self->textsinkpad = nullptr;
  self->impl->output = std::make_unique<glmvoice::gst::LlmAnswerOutput>(self->srcpad, self->textsrcpad);
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
  if (impl->model_props.set_property(object, prop_id, value)) return;
  if (impl->latency.set_property(GST_ELEMENT(self), prop_id, value)) return;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
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
    case PROP_TEXT_LINES: impl->text_lines = g_value_get_boolean(value); break;
    case PROP_MAX_BATCH: impl->max_batch = g_value_get_int(value); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

static void gst_glm_voice_llm_get_property(GObject* object, guint prop_id, GValue* value, GParamSpec* pspec) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(object);
  GstGlmVoiceLlmImpl* impl = self->impl;
  if (impl->model_props.get_property(object, prop_id, value)) return;
  if (impl->latency.get_property(GST_ELEMENT(self), prop_id, value)) return;
  GST_OBJECT_LOCK(self);
  switch (prop_id) {
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
    case PROP_TEXT_LINES: g_value_set_boolean(value, impl->text_lines); break;
    case PROP_MAX_BATCH: g_value_set_int(value, impl->max_batch); break;
    default: G_OBJECT_WARN_INVALID_PROPERTY_ID(object, prop_id, pspec); break;
  }
  GST_OBJECT_UNLOCK(self);
}

/* ---- state ------------------------------------------------------------------------- */

static gboolean load_model(GstGlmVoiceLlm* self) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  auto model =
      impl->model_props.load<glmvoice::llm::LlmModel>(GST_ELEMENT(self), "llm", "language model", GLMVOICE_HERE);
  if (!model) return FALSE;
  if (model->tokenizer().n_audio() <= 0) {
    GLMVOICE_ELEMENT_ERROR(self, "Could not load the language model",
                           glmvoice::Error(glmvoice::ErrorCode::kMismatch, model->options().path,
                                           "tokenizer_config.json", "the tokenizer defines no <|audio_N|> tokens"));
    return FALSE;
  }
  GST_OBJECT_LOCK(self);
  const gint max_batch = impl->max_batch;
  GST_OBJECT_UNLOCK(self);
  std::shared_ptr<const glmvoice::llm::Scheduler> scheduler;
  if (max_batch > 0) {
    // One scheduler per loaded model, in the same process-wide cache (the first element's
    // max-batch wins).
    glmvoice::llm::SchedulerOptions so;
    so.max_batch = max_batch;
    scheduler = glmvoice::gst::model_cache_get<glmvoice::llm::Scheduler>(
        "llm-scheduler", model->options(), [&] { return glmvoice::llm::Scheduler::create(model, so); });
    if (scheduler->options().max_batch != max_batch) {
      GST_INFO_OBJECT(self, "model already batched by another element: max-batch %" G_GINT64_FORMAT,
                      scheduler->options().max_batch);
    }
  }
  GST_OBJECT_LOCK(self);
  impl->model = model;
  impl->scheduler = scheduler;
  impl->codebook = static_cast<gint>(model->tokenizer().n_audio());
  GST_OBJECT_UNLOCK(self);
  const auto& c = model->config();
  GST_INFO_OBJECT(self,
                  "llm %s on %s: %" G_GINT64_FORMAT " layers, hidden %" G_GINT64_FORMAT ", vocab %" G_GINT64_FORMAT
                  ", %" G_GINT64_FORMAT " speech tokens from id %" G_GINT64_FORMAT ", context %" G_GINT64_FORMAT,
                  model->options().path.c_str(), model->options().device.str().c_str(), c.num_layers,
                  c.hidden_size, c.padded_vocab_size, model->tokenizer().n_audio(),
                  model->tokenizer().audio_offset(), c.seq_length);
  return TRUE;
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
      const guint64 seed = impl->seed;
      auto model = impl->model;
      auto scheduler = impl->scheduler;
      GST_OBJECT_UNLOCK(self);
      impl->conversation = std::make_unique<LlmConversation>(model, seed, scheduler);
      impl->turns.set_flushing(true, /*drop_input=*/true);
      gst_segment_init(&impl->speech_segment, GST_FORMAT_TIME);
      gst_segment_init(&impl->text_segment, GST_FORMAT_TIME);
      impl->partial_line.clear();
      impl->output->reset(/*new_stream=*/true);
      break;
    }
    default:
      break;
  }

  const GstStateChangeReturn ret = GST_ELEMENT_CLASS(parent_class)->change_state(element, transition);
  if (ret == GST_STATE_CHANGE_FAILURE) return ret;

  switch (transition) {
    case GST_STATE_CHANGE_PAUSED_TO_READY:
      impl->conversation.reset();  // the task is stopped (pads deactivated)
      break;
    case GST_STATE_CHANGE_READY_TO_NULL:
      GST_OBJECT_LOCK(self);
      impl->scheduler.reset();
      impl->model.reset();
      impl->codebook = 0;
      GST_OBJECT_UNLOCK(self);
      impl->model_props.unload(element);
      impl->latency.reset_measured(element);
      break;
    default:
      break;
  }
  return ret;
}

static void gst_glm_voice_llm_reset_history(GstGlmVoiceLlm* self) {
  self->impl->turns.request_reset();
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

/* ---- text output ------------------------------------------------------------------ */

static void gst_glm_voice_llm_text_loop(gpointer user_data) {
  GST_GLM_VOICE_LLM(user_data)->impl->output->text_task_iteration();
}

static gboolean gst_glm_voice_llm_text_src_activate_mode(GstPad* pad, GstObject* parent, GstPadMode mode,
                                                         gboolean active) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  if (mode != GST_PAD_MODE_PUSH) return FALSE;
  if (active) {
    self->impl->output->set_text_flushing(false);
    return gst_pad_start_task(pad, gst_glm_voice_llm_text_loop, self, nullptr);
  }
  self->impl->output->set_text_flushing(true);
  return gst_pad_stop_task(pad);
}

/* ---- input side -------------------------------------------------------------------- */

// Running time of the end of [pts, pts + duration) in `segment`; NONE when unknown.
static GstClockTime running_end(const GstSegment& segment, GstClockTime pts, GstClockTime duration) {
  if (segment.format != GST_FORMAT_TIME || !GST_CLOCK_TIME_IS_VALID(pts)) return GST_CLOCK_TIME_NONE;
  GstClockTime end = pts + (GST_CLOCK_TIME_IS_VALID(duration) ? duration : 0);
  if (GST_CLOCK_TIME_IS_VALID(segment.stop) && end > segment.stop) end = segment.stop;
  return gst_segment_to_running_time(&segment, GST_FORMAT_TIME, end);
}

struct TurnInputSettings {
  std::string instruction;
  bool barge_in;
  bool text_lines;
};

static TurnInputSettings input_settings(GstGlmVoiceLlm* self) {
  GST_OBJECT_LOCK(self);
  TurnInputSettings s{self->impl->instruction, self->impl->barge_in != FALSE, self->impl->text_lines != FALSE};
  GST_OBJECT_UNLOCK(self);
  return s;
}

static GstFlowReturn gst_glm_voice_llm_chain(GstPad*, GstObject* parent, GstBuffer* buffer) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  GstGlmVoiceLlmImpl* impl = self->impl;
  std::vector<int32_t> tokens;
  const glmvoice::gst::TokenRead read = glmvoice::gst::read_tokens(buffer, tokens);
  const GstClockTime end = running_end(impl->speech_segment, GST_BUFFER_PTS(buffer),
                                       GST_BUFFER_DURATION_IS_VALID(buffer)
                                           ? GST_BUFFER_DURATION(buffer)
                                           : tokens.size() * GST_GLM_VOICE_TOKEN_DURATION);
  gst_buffer_unref(buffer);
  if (read == glmvoice::gst::TokenRead::kMapFailed) {
    GST_ELEMENT_ERROR(self, STREAM, FAILED, ("could not map an input buffer"), (nullptr));
    return GST_FLOW_ERROR;
  }
  const GstFlowReturn result = impl->srcresult.load();
  if (result != GST_FLOW_OK) return result;
  GST_OBJECT_LOCK(self);
  const int64_t codebook = impl->codebook;
  GST_OBJECT_UNLOCK(self);
  std::string bad = read == glmvoice::gst::TokenRead::kRagged ? "buffer size is not a multiple of 4 bytes" : "";
  for (size_t i = 0; i < tokens.size() && bad.empty(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= codebook) {
      bad = std::to_string(tokens[i]) + " is outside the model's " + std::to_string(codebook) + " speech tokens";
    }
  }
  if (!bad.empty()) {
    GLMVOICE_ELEMENT_ERROR(self, "Invalid speech token",
                           glmvoice::Error(glmvoice::ErrorCode::kBadInput, "", "speech token", bad));
    return GST_FLOW_ERROR;
  }
  impl->turns.add_speech(tokens, end);
  return GST_FLOW_OK;
}

// text-lines: queues every complete line of `impl->partial_line` (all of it at EOS).
static void queue_text_lines(GstGlmVoiceLlm* self, const TurnInputSettings& s, GstClockTime end, bool at_eos) {
  std::string& rest = self->impl->partial_line;
  size_t start = 0;
  for (;;) {
    const size_t nl = rest.find('\n', start);
    if (nl == std::string::npos && !at_eos) break;
    std::string line = rest.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) {
      GST_INFO_OBJECT(self, "user text line of %zu bytes", line.size());
      self->impl->turns.add_text_turn(std::move(line), s.instruction, end, s.barge_in);
    }
    if (nl == std::string::npos) {
      start = rest.size();
      break;
    }
    start = nl + 1;
  }
  rest.erase(0, start);
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
  const GstClockTime end = running_end(impl->text_segment, GST_BUFFER_PTS(buffer), GST_BUFFER_DURATION(buffer));
  gst_buffer_unref(buffer);
  const GstFlowReturn result = impl->srcresult.load();
  if (result != GST_FLOW_OK) return result;
  const TurnInputSettings s = input_settings(self);
  if (s.text_lines) {
    impl->partial_line += text;
    queue_text_lines(self, s, end, false);
    return GST_FLOW_OK;
  }
  while (!text.empty() && text.back() == '\0') text.pop_back();
  if (text.empty()) {
    impl->turns.add_time(end);
    return GST_FLOW_OK;
  }
  GST_INFO_OBJECT(self, "user text turn of %zu bytes", text.size());
  impl->turns.add_text_turn(std::move(text), s.instruction, end, s.barge_in);
  return GST_FLOW_OK;
}

// EOS once every linked sink pad got EOS.
static void check_all_eos(GstGlmVoiceLlm* self) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  GST_OBJECT_LOCK(self);
  GstPad* text_sink = self->textsinkpad ? GST_PAD(gst_object_ref(self->textsinkpad)) : nullptr;
  GST_OBJECT_UNLOCK(self);
  const bool speech_eos = impl->turns.input_eos(false), text_eos = impl->turns.input_eos(true);
  const bool speech_done = speech_eos || !gst_pad_is_linked(self->sinkpad);
  const bool text_done = !text_sink || text_eos || !gst_pad_is_linked(text_sink);
  if (text_sink) gst_object_unref(text_sink);
  if (speech_done && text_done && (speech_eos || text_eos)) impl->turns.finish();
}

static void flush_start(GstGlmVoiceLlm* self, GstEvent* event) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  impl->srcresult = GST_FLOW_FLUSHING;
  impl->turns.set_flushing(true, /*drop_input=*/false);
  if (impl->conversation) impl->conversation->cancel_forward();  // a step of the shared model
  impl->output->set_text_flushing(true);
  gst_pad_push_event(self->textsrcpad, gst_event_ref(event));
  gst_pad_push_event(self->srcpad, event);
  gst_pad_pause_task(self->textsrcpad);
  gst_pad_pause_task(self->srcpad);  // waits for the current token to finish
  GST_DEBUG_OBJECT(self, "flush start: generation paused");
}

static void flush_stop(GstGlmVoiceLlm* self, GstEvent* event) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  gst_pad_push_event(self->textsrcpad, gst_event_ref(event));
  gst_pad_push_event(self->srcpad, event);
  GST_PAD_STREAM_LOCK(self->srcpad);
  if (impl->conversation) impl->conversation->abandon();  // the history keeps the generated part
  impl->output->reset(/*new_stream=*/false);
  GST_PAD_STREAM_UNLOCK(self->srcpad);
  impl->partial_line.clear();
  // Restart the tasks only on pads that are still active: a FLUSH_STOP racing with
  // PAUSED->READY must not leave a task running on a deactivated pad (as gstqueue).
  if (gst_pad_is_active(self->textsrcpad)) {
    impl->output->set_text_flushing(false);
    gst_pad_start_task(self->textsrcpad, gst_glm_voice_llm_text_loop, self, nullptr);
  }
  if (gst_pad_is_active(self->srcpad)) {
    impl->turns.set_flushing(false, /*drop_input=*/true);
    impl->srcresult = GST_FLOW_OK;
    gst_pad_start_task(self->srcpad, gst_glm_voice_llm_loop, self, nullptr);
  }
}

static gboolean gst_glm_voice_llm_sink_event(GstPad* pad, GstObject* parent, GstEvent* event) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  GstGlmVoiceLlmImpl* impl = self->impl;
  const bool is_text = pad != self->sinkpad;
  GstSegment& segment = is_text ? impl->text_segment : impl->speech_segment;
  switch (GST_EVENT_TYPE(event)) {
    case GST_EVENT_CAPS: {
      gboolean ok = TRUE;
      if (!is_text) {
        // Normally refused before this by the accept-caps check (the CAPS query answers the
        // model's codebook); an element that skips it gets not-negotiated.
        GstCaps* caps = nullptr;
        gst_event_parse_caps(event, &caps);
        gint size = 0;
        GST_OBJECT_LOCK(self);
        const gint codebook = impl->codebook;
        GST_OBJECT_UNLOCK(self);
        ok = gst_glm_voice_tokens_caps_parse(caps, &size) && size == codebook;
        if (!ok) GST_WARNING_OBJECT(self, "caps %" GST_PTR_FORMAT " do not match the model's %d speech tokens", caps, codebook);
      }
      gst_event_unref(event);
      return ok;
    }
    case GST_EVENT_SEGMENT:
      gst_event_copy_segment(event, &segment);
      GST_DEBUG_OBJECT(pad, "segment %" GST_SEGMENT_FORMAT, &segment);
      gst_event_unref(event);  // the answer is a new stream with its own segment
      return TRUE;
    case GST_EVENT_STREAM_START:
    case GST_EVENT_TAG:
      gst_event_unref(event);  // the answer is a new stream
      return TRUE;
    case GST_EVENT_GAP: {
      // No input for a while: time moves on (an answer starts after it), forwarded as GAP
      // on both src pads when no answer is in progress.
      GstClockTime ts = GST_CLOCK_TIME_NONE, duration = GST_CLOCK_TIME_NONE;
      gst_event_parse_gap(event, &ts, &duration);
      impl->turns.add_time(running_end(segment, ts, duration));
      gst_event_unref(event);
      return TRUE;
    }
    case GST_EVENT_EOS: {
      const TurnInputSettings s = input_settings(self);
      if (is_text) {
        if (s.text_lines) queue_text_lines(self, s, GST_CLOCK_TIME_NONE, /*at_eos=*/true);
      } else {
        impl->turns.end_speech_turn(s.instruction, s.barge_in);
      }
      impl->turns.set_input_eos(is_text);
      check_all_eos(self);
      gst_event_unref(event);
      return TRUE;
    }
    case GST_EVENT_FLUSH_START:
      flush_start(self, event);
      return TRUE;
    case GST_EVENT_FLUSH_STOP:
      gst_segment_init(&segment, GST_FORMAT_TIME);
      flush_stop(self, event);
      return TRUE;
    default:
      break;
  }
  if (gst_glm_voice_event_is_end_of_turn(event)) {
    const TurnInputSettings s = input_settings(self);
    if (!is_text && !impl->turns.end_speech_turn(s.instruction, s.barge_in)) {
      GST_DEBUG_OBJECT(self, "end of turn without speech tokens: nothing to answer");
    }
    gst_event_unref(event);
    return TRUE;
  }
  if (gst_glm_voice_event_is_start_of_speech(event)) {
    if (input_settings(self).barge_in) {
      GST_INFO_OBJECT(self, "the user started speaking: barge-in");
      impl->turns.interrupt();
    }
    gst_event_unref(event);
    return TRUE;
  }
  if (GST_EVENT_IS_SERIALIZED(event)) {
    gst_event_unref(event);  // other serialized events do not apply to the answer stream
    return TRUE;
  }
  return gst_pad_event_default(pad, parent, event);
}

static gboolean gst_glm_voice_llm_sink_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  if (GST_QUERY_TYPE(query) == GST_QUERY_CAPS) {
    // The loaded model's codebook, so that upstream negotiates it or fails to link.
    GST_OBJECT_LOCK(self);
    const gint codebook = self->impl->codebook;
    GST_OBJECT_UNLOCK(self);
    GstCaps* caps = codebook > 0 ? gst_glm_voice_tokens_caps_new(codebook) : gst_pad_get_pad_template_caps(pad);
    GstCaps* filter = nullptr;
    gst_query_parse_caps(query, &filter);
    if (filter) {
      GstCaps* both = gst_caps_intersect_full(filter, caps, GST_CAPS_INTERSECT_FIRST);
      gst_caps_unref(caps);
      caps = both;
    }
    gst_query_set_caps_result(query, caps);
    gst_caps_unref(caps);
    return TRUE;
  }
  return gst_pad_query_default(pad, parent, query);
}

/* ---- output side ------------------------------------------------------------------- */

static gboolean gst_glm_voice_llm_src_query(GstPad* pad, GstObject* parent, GstQuery* query) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(parent);
  GstGlmVoiceLlmImpl* impl = self->impl;
  if (GST_QUERY_TYPE(query) == GST_QUERY_LATENCY) {
    // Upstream of the answers: the speech input, or the text input when only that is linked.
    GST_OBJECT_LOCK(self);
    GstPad* input = GST_PAD(gst_object_ref(self->sinkpad));
    if (!gst_pad_is_linked(input) && self->textsinkpad) {
      gst_object_unref(input);
      input = GST_PAD(gst_object_ref(self->textsinkpad));
    }
    GST_OBJECT_UNLOCK(self);
    const gboolean answered = impl->latency.answer_query(GST_ELEMENT(self), input, query);
    gst_object_unref(input);
    if (!answered) gst_query_set_latency(query, FALSE, 0, GST_CLOCK_TIME_NONE);  // no upstream
    GST_DEBUG_OBJECT(pad, "latency query: %" GST_PTR_FORMAT, query);
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
    impl->turns.set_flushing(false, /*drop_input=*/false);
    impl->srcresult = GST_FLOW_OK;
    return gst_pad_start_task(pad, gst_glm_voice_llm_loop, self, nullptr);
  }
  impl->srcresult = GST_FLOW_FLUSHING;
  impl->turns.set_flushing(true, /*drop_input=*/false);
  return gst_pad_stop_task(pad);
}

// The answer ended (any reason): the per-turn message, remaining text, end-of-response.
static GstFlowReturn finish_answer(GstGlmVoiceLlm* self, const glmvoice::llm::ChatEvent& end) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  // The report goes out first, so that whoever sees end-of-response finds it on the bus.
  GstStructure* report = impl->conversation->turn_report(end, impl->output->speech_tokens());
  GST_INFO_OBJECT(self, "answer: %" GST_PTR_FORMAT, report);
  gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), report));
  impl->answer_may_be_playing = impl->output->speech_tokens() > 0;
  return impl->output->end_answer(end.text, glmvoice::llm::stop_reason_name(end.reason));
}

static LlmTurnSettings turn_settings(GstGlmVoiceLlm* self) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  LlmTurnSettings s;
  GST_OBJECT_LOCK(self);
  s.sampling.temperature = impl->temperature;
  s.sampling.top_p = impl->top_p;
  s.sampling.top_k = impl->top_k;
  s.max_new_tokens = impl->max_new_tokens;
  s.system_prompt = impl->system_prompt;
  s.keep_history = impl->keep_history;
  GST_OBJECT_UNLOCK(self);
  return s;
}

static void start_answer(GstGlmVoiceLlm* self, const QueuedTurn& turn) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  const LlmTurnSettings settings = turn_settings(self);
  GST_OBJECT_LOCK(self);
  const bool segment_mode = impl->text_segments, lines_mode = impl->text_lines;
  GST_OBJECT_UNLOCK(self);
  const LlmConversation::Start start = impl->conversation->start(turn, settings);
  impl->output->begin_answer(turn.input_end, segment_mode, lines_mode);
  if (!start.ok) {
    GST_ELEMENT_WARNING(self, STREAM, DECODE, ("User turn not answered: it does not fit in the context"),
                        ("%s", start.error.c_str()));
    impl->output->end_answer("", glmvoice::llm::stop_reason_name(glmvoice::llm::StopReason::kContext));
    return;
  }
  if (start.dropped_turns > 0) {
    GstStructure* report = impl->conversation->context_report(start.dropped_turns);
    GST_INFO_OBJECT(self, "history outgrew the context: %" GST_PTR_FORMAT, report);
    gst_element_post_message(GST_ELEMENT(self), gst_message_new_element(GST_OBJECT(self), report));
  }
  GST_DEBUG_OBJECT(self, "answering turn %" G_GINT64_FORMAT " at %" GST_TIME_FORMAT,
                   impl->conversation->turn_count(), GST_TIME_ARGS(impl->output->response_start()));
}

// The time from the end of a turn to its first token is this element's processing time
// (the latency budget warns once when a set budget is exceeded).
static void record_first_token(GstGlmVoiceLlm* self) {
  const double ms = self->impl->conversation->first_token_ms();
  self->impl->latency.record_compute(GST_ELEMENT(self), static_cast<GstClockTime>(ms * GST_MSECOND));
}

static GstFlowReturn generate_one(GstGlmVoiceLlm* self) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  const bool first = impl->conversation->first_token_ms() < 0;
  const glmvoice::llm::ChatEvent ev = impl->conversation->step();
  if (first) record_first_token(self);
  switch (ev.kind) {
    case glmvoice::llm::ChatEvent::kAudio: return impl->output->push_speech_token(ev.speech_token);
    case glmvoice::llm::ChatEvent::kText: return impl->output->add_text(ev.text);
    case glmvoice::llm::ChatEvent::kOther: return GST_FLOW_OK;
    case glmvoice::llm::ChatEvent::kEnd: return finish_answer(self, ev);
  }
  return GST_FLOW_OK;
}

// Pauses the task on a flow that is not OK (as gstqueue's loop).
static void stop_on_flow(GstGlmVoiceLlm* self, GstFlowReturn ret) {
  GstGlmVoiceLlmImpl* impl = self->impl;
  if (ret != GST_FLOW_FLUSHING) impl->conversation->abandon();
  GstFlowReturn expected = GST_FLOW_OK;
  impl->srcresult.compare_exchange_strong(expected, ret);
  GST_DEBUG_OBJECT(self, "pausing task: %s", gst_flow_get_name(ret));
  gst_pad_pause_task(self->srcpad);
  if (ret == GST_FLOW_NOT_LINKED || ret < GST_FLOW_EOS) {
    if (ret != GST_FLOW_ERROR) GST_ELEMENT_FLOW_ERROR(self, ret);
    impl->output->push_eos();
  }
}

static void gst_glm_voice_llm_loop(gpointer user_data) {
  GstGlmVoiceLlm* self = GST_GLM_VOICE_LLM(user_data);
  GstGlmVoiceLlmImpl* impl = self->impl;
  LlmConversation& conversation = *impl->conversation;
  const LlmWork work = impl->turns.wait(conversation.in_answer());
  if (work.kind == LlmWork::kFlushing) {
    gst_pad_pause_task(self->srcpad);
    return;
  }
  if (work.reset) {
    conversation.reset();
    GST_INFO_OBJECT(self, "conversation history reset");
  }
  GstFlowReturn ret = GST_FLOW_OK;
  try {
    impl->output->push_sticky_events(static_cast<gint>(conversation.model().tokenizer().n_audio()));
    switch (work.kind) {
      case LlmWork::kFlushing:
      case LlmWork::kIdle: break;
      case LlmWork::kStart: start_answer(self, work.turn); break;
      case LlmWork::kStep: ret = generate_one(self); break;
      case LlmWork::kPrefill: conversation.prefill(work.turn, turn_settings(self)); break;
      case LlmWork::kInterrupt:
        ret = finish_answer(self, conversation.interrupt());
        impl->answer_may_be_playing = false;
        break;
      case LlmWork::kInterruptPlayback:
        if (impl->answer_may_be_playing) {
          GST_INFO_OBJECT(self, "barge-in after the answer was generated: its playback is interrupted");
          impl->output->interrupt_playback();
          impl->answer_may_be_playing = false;
        }
        break;
      case LlmWork::kGap: impl->output->advance(work.gap_end, false); break;
      case LlmWork::kEos:
        GST_DEBUG_OBJECT(self, "all input done: EOS");
        impl->output->push_eos();
        ret = GST_FLOW_EOS;
        break;
    }
  } catch (const glmvoice::llm::Cancelled&) {
    ret = GST_FLOW_FLUSHING;  // FLUSH_START stopped a forward waiting in the shared scheduler
  } catch (...) {
    GLMVOICE_ELEMENT_ERROR(self, "Language model failed", std::current_exception());
    ret = GST_FLOW_ERROR;
  }
  if (ret != GST_FLOW_OK) stop_on_flow(self, ret);
}
