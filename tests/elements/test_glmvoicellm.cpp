// GstHarness tests of glmvoicellm on the tiny scripted models of glmvoice-mkmodel:
// tiny-script answers every turn with "H" "i" <E7 9A> <|audio_3|> <|audio_4|> <84> " world"
// <|user|> (text "Hi的 world", speech tokens [3, 4]); tiny-loop never stops ("HiHiHi...").
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "element_test_util.h"
#include "glmvoice_caps.h"
#include "glmvoice_events.h"
#include "test_support.h"

namespace {

const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

const std::string kAnswer = "Hi\xE7\x9A\x84 world";

struct Llm {
  GstElement* element = nullptr;
  GstBus* bus = nullptr;
  GstHarness* speech = nullptr;  // sink -> src
  GstHarness* text = nullptr;    // text_sink -> text_src (or only text_src)

  explicit Llm(const std::string& config, bool text_in = false, bool text_out = true) {
    element = gst_element_factory_make("glmvoicellm", nullptr);
    EXPECT_NE(element, nullptr) << "glmvoicellm not found (GST_PLUGIN_PATH?)";
    g_object_set(element, "model-path", glmvoice::test::tiny_model_dir("llm", config).c_str(), NULL);
    bus = gst_bus_new();
    gst_element_set_bus(element, bus);
    speech = gst_harness_new_with_element(element, "sink", "src");
    GstCaps* caps = gst_glm_voice_tokens_caps_new(64);
    gst_harness_set_src_caps(speech, caps);
    if (text_in) {
      text = gst_harness_new_with_element(element, "text_sink", "text_src");
      gst_harness_set_src_caps_str(text, GST_GLM_VOICE_TEXT_CAPS);
    } else if (text_out) {
      text = gst_harness_new_with_element(element, nullptr, "text_src");
    }
  }
  ~Llm() {
    if (text) gst_harness_teardown(text);
    gst_harness_teardown(speech);
    gst_element_set_bus(element, nullptr);
    gst_object_unref(bus);
    gst_object_unref(element);
  }

  GstFlowReturn push_tokens(const std::vector<gint32>& tokens, GstClockTime pts = 0) {
    GstBuffer* buf = gst_glm_voice_tokens_buffer_new(tokens.data(), tokens.size());
    GST_BUFFER_PTS(buf) = pts;
    GST_BUFFER_DURATION(buf) = tokens.size() * GST_GLM_VOICE_TOKEN_DURATION;
    return gst_harness_push(speech, buf);
  }
  void end_turn() { ASSERT_TRUE(gst_harness_push_event(speech, gst_glm_voice_event_new_end_of_turn())); }
  GstFlowReturn push_text(const std::string& s) {
    GstBuffer* buf = gst_buffer_new_memdup(s.data(), s.size());
    GST_BUFFER_PTS(buf) = 0;
    return gst_harness_push(text, buf);
  }
};

// Pulls events from `h` until an end-of-response (returns its reason) or EOS ("EOS").
std::string wait_end_of_response(GstHarness* h) {
  for (int i = 0; i < 10000; ++i) {
    GstEvent* ev = gst_harness_pull_event(h);  // waits up to 60 s
    if (!ev) return "(timeout)";
    const gchar* reason = nullptr;
    std::string out;
    if (gst_glm_voice_event_parse_end_of_response(ev, &reason)) out = reason ? reason : "";
    if (GST_EVENT_TYPE(ev) == GST_EVENT_EOS) out = "EOS";
    gst_event_unref(ev);
    if (!out.empty()) return out;
  }
  return "(none)";
}

std::vector<gint32> take_tokens(GstHarness* h, std::vector<GstClockTime>* pts = nullptr) {
  std::vector<gint32> out;
  while (GstBuffer* b = gst_harness_try_pull(h)) {
    GstMapInfo map;
    gst_buffer_map(b, &map, GST_MAP_READ);
    for (gsize i = 0; i + 4 <= map.size; i += 4) {
      guint32 le;
      memcpy(&le, map.data + i, 4);
      out.push_back(static_cast<gint32>(GUINT32_FROM_LE(le)));
    }
    gst_buffer_unmap(b, &map);
    if (pts) pts->push_back(GST_BUFFER_PTS(b));
    gst_buffer_unref(b);
  }
  return out;
}

std::vector<std::string> take_texts(GstHarness* h) {
  std::vector<std::string> out;
  while (GstBuffer* b = gst_harness_try_pull(h)) {
    GstMapInfo map;
    gst_buffer_map(b, &map, GST_MAP_READ);
    out.emplace_back(reinterpret_cast<const char*>(map.data), map.size);
    gst_buffer_unmap(b, &map);
    gst_buffer_unref(b);
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
}

bool valid_utf8(const std::string& s) { return g_utf8_validate(s.data(), static_cast<gssize>(s.size()), nullptr); }

// Next element message `glmvoicellm-turn` (caller unrefs), or NULL.
GstMessage* wait_turn_message(GstBus* bus) {
  for (;;) {
    GstMessage* m = gst_bus_timed_pop_filtered(bus, 10 * GST_SECOND, GST_MESSAGE_ELEMENT);
    if (!m) return nullptr;
    if (gst_structure_has_name(gst_message_get_structure(m), "glmvoicellm-turn")) return m;
    gst_message_unref(m);
  }
}

std::vector<int> ids_field(GstMessage* m, const char* field) {
  const GValue* v = gst_structure_get_value(gst_message_get_structure(m), field);
  std::vector<int> out;
  for (guint i = 0; i < gst_value_array_get_size(v); ++i) out.push_back(g_value_get_int(gst_value_array_get_value(v, i)));
  return out;
}

// Error message on the bus (domain/code), skipping others.
bool wait_error(GstBus* bus, GQuark domain, gint code, std::string* debug_out = nullptr) {
  GstMessage* m = gst_bus_timed_pop_filtered(bus, 10 * GST_SECOND, GST_MESSAGE_ERROR);
  if (!m) return false;
  GError* err = nullptr;
  gchar* debug = nullptr;
  gst_message_parse_error(m, &err, &debug);
  if (debug_out) *debug_out = debug ? debug : "";
  g_free(debug);
  const bool ok = err->domain == domain && err->code == code;
  if (!ok) ADD_FAILURE() << "error: " << err->message;
  g_error_free(err);
  gst_message_unref(m);
  return ok;
}

}  // namespace

TEST(GlmVoiceLlm, test_audio_input_turn) {
  Llm llm("tiny-script");
  ASSERT_EQ(llm.push_tokens({1, 2, 3}, 0), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  std::vector<GstClockTime> pts;
  EXPECT_EQ(take_tokens(llm.speech, &pts), (std::vector<gint32>{3, 4}));
  // the answer starts after the user's input (3 tokens = 240 ms), 80 ms per token
  ASSERT_EQ(pts.size(), 2u);
  EXPECT_EQ(pts[0], 3 * GST_GLM_VOICE_TOKEN_DURATION);
  EXPECT_EQ(pts[1], 4 * GST_GLM_VOICE_TOKEN_DURATION);
  EXPECT_EQ(join(take_texts(llm.text)), kAnswer);
  GstMessage* m = wait_turn_message(llm.bus);
  ASSERT_NE(m, nullptr);
  const GstStructure* s = gst_message_get_structure(m);
  EXPECT_STREQ(gst_structure_get_string(s, "text"), kAnswer.c_str());
  EXPECT_STREQ(gst_structure_get_string(s, "reason"), "stop-token");
  EXPECT_EQ(ids_field(m, "completion-ids").size(), 8u);
  EXPECT_GT(ids_field(m, "input-ids").size(), 10u);
  gst_message_unref(m);
  // caps on src carry the model's codebook
  GstCaps* caps = gst_pad_get_current_caps(GST_PAD_PEER(llm.speech->sinkpad));
  gint size = 0;
  EXPECT_TRUE(gst_glm_voice_tokens_caps_parse(caps, &size));
  EXPECT_EQ(size, 64);
  gst_caps_unref(caps);
}

TEST(GlmVoiceLlm, test_utf8_split_across_audio_tokens) {
  Llm llm("tiny-script");
  ASSERT_EQ(llm.push_tokens({5}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  const auto texts = take_texts(llm.text);
  for (const auto& t : texts) EXPECT_TRUE(valid_utf8(t)) << "partial UTF-8 pushed";
  EXPECT_NE(std::find(texts.begin(), texts.end(), std::string("\xE7\x9A\x84")), texts.end());
  EXPECT_EQ(join(texts), kAnswer);
}

TEST(GlmVoiceLlm, test_text_input_turn) {
  Llm llm("tiny-script", /*text_in=*/true);
  ASSERT_EQ(llm.push_text("hello there"), GST_FLOW_OK);
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  EXPECT_EQ(join(take_texts(llm.text)), kAnswer);
  EXPECT_EQ(take_tokens(llm.speech), (std::vector<gint32>{3, 4}));
  GstMessage* m = wait_turn_message(llm.bus);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(ids_field(m, "input-ids").size() > 0, true);
  gst_message_unref(m);
}

TEST(GlmVoiceLlm, test_two_turns_with_history) {
  Llm llm("tiny-script");
  ASSERT_EQ(llm.push_tokens({1, 2}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  ASSERT_EQ(llm.push_tokens({7}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  GstMessage* m1 = wait_turn_message(llm.bus);
  GstMessage* m2 = wait_turn_message(llm.bus);
  ASSERT_TRUE(m1 && m2);
  auto history = ids_field(m1, "input-ids");
  const auto c1 = ids_field(m1, "completion-ids");
  history.insert(history.end(), c1.begin(), c1.end() - 1);  // without the stop token
  const auto in2 = ids_field(m2, "input-ids");
  ASSERT_GT(in2.size(), history.size());
  EXPECT_TRUE(std::equal(history.begin(), history.end(), in2.begin()));
  gst_message_unref(m1);
  gst_message_unref(m2);
  // the second answer continues the output timeline
  std::vector<GstClockTime> pts;
  take_tokens(llm.speech, &pts);
  ASSERT_EQ(pts.size(), 4u);
  EXPECT_GT(pts[2], pts[1]);

  // reset-history: the next prompt is a first turn again
  g_signal_emit_by_name(llm.element, "reset-history");
  ASSERT_EQ(llm.push_tokens({7}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  GstMessage* m3 = wait_turn_message(llm.bus);
  ASSERT_NE(m3, nullptr);
  EXPECT_LT(ids_field(m3, "input-ids").size(), history.size());
  gst_message_unref(m3);
}

TEST(GlmVoiceLlm, test_max_new_tokens_stop) {
  Llm llm("tiny-loop");
  g_object_set(llm.element, "max-new-tokens", 3, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.text), "max-new-tokens");
  EXPECT_EQ(join(take_texts(llm.text)), "HiH");
}

TEST(GlmVoiceLlm, test_stops_on_user_token_and_eos_follows) {
  Llm llm("tiny-script");
  ASSERT_EQ(llm.push_tokens({1, 2, 3}), GST_FLOW_OK);
  gst_harness_push_event(llm.speech, gst_event_new_eos());  // EOS also completes the turn
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.speech), "EOS");
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.text), "EOS");
}

TEST(GlmVoiceLlm, test_flush_mid_generation) {
  Llm llm("tiny-loop");
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  GstBuffer* first = gst_harness_pull(llm.text);  // generation is running
  ASSERT_NE(first, nullptr);
  gst_buffer_unref(first);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_flush_start()));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 1000.0) << "FLUSH_START must stop generation within a token";
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_flush_stop(TRUE)));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  take_texts(llm.text);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(gst_harness_buffers_in_queue(llm.text), 0u) << "generation continued after the flush";
  // the element answers again after the flush
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  gst_harness_push_event(llm.speech, gst_event_new_segment(&segment));
  g_object_set(llm.element, "max-new-tokens", 2, NULL);
  ASSERT_EQ(llm.push_tokens({2}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.text), "max-new-tokens");
}

TEST(GlmVoiceLlm, test_barge_in_interrupts) {
  Llm llm("tiny-loop");
  g_object_set(llm.element, "barge-in", TRUE, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  GstBuffer* first = gst_harness_pull(llm.text);
  ASSERT_NE(first, nullptr);
  gst_buffer_unref(first);
  g_object_set(llm.element, "max-new-tokens", 2, NULL);
  ASSERT_EQ(llm.push_tokens({2}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.text), "interrupted");
  EXPECT_EQ(wait_end_of_response(llm.text), "max-new-tokens");
}

TEST(GlmVoiceLlm, test_unlinked_text_pad) {
  Llm llm("tiny-script", /*text_in=*/false, /*text_out=*/false);
  ASSERT_EQ(llm.push_tokens({1, 2, 3}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  EXPECT_EQ(take_tokens(llm.speech), (std::vector<gint32>{3, 4}));
  EXPECT_EQ(gst_bus_pop_filtered(llm.bus, GST_MESSAGE_ERROR), nullptr);
  // and a second turn still works
  ASSERT_EQ(llm.push_tokens({4}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
}

TEST(GlmVoiceLlm, test_bad_token_ids) {
  Llm llm("tiny-script");
  EXPECT_EQ(llm.push_tokens({1, 64}), GST_FLOW_ERROR);
  std::string debug;
  EXPECT_TRUE(wait_error(llm.bus, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE, &debug));
  // the debug location names the element's call site, not the shared error helper
  EXPECT_NE(debug.find("gstglmvoicellm.cpp"), std::string::npos) << debug;
  EXPECT_EQ(llm.push_tokens({-1}), GST_FLOW_ERROR);
}

TEST(GlmVoiceLlm, test_caps_query_answers_the_model_codebook) {
  Llm llm("tiny-script");
  GstPad* sink = gst_element_get_static_pad(llm.element, "sink");
  GstCaps* caps = gst_pad_query_caps(sink, nullptr);
  gint size = 0;
  EXPECT_TRUE(gst_glm_voice_tokens_caps_parse(caps, &size)) << caps;
  EXPECT_EQ(size, 64);
  gst_caps_unref(caps);
  gst_object_unref(sink);
}

TEST(GlmVoiceLlm, test_caps_mismatch_is_not_negotiated) {
  Llm llm("tiny-script");
  GstCaps* caps = gst_glm_voice_tokens_caps_new(100);
  gst_harness_set_src_caps(llm.speech, caps);  // refused by the accept-caps check
  EXPECT_EQ(llm.push_tokens({1}), GST_FLOW_NOT_NEGOTIATED);
  EXPECT_EQ(gst_bus_pop_filtered(llm.bus, GST_MESSAGE_ERROR), nullptr) << "no decode error per buffer";
}

TEST(GlmVoiceLlm, test_missing_model_posts_error) {
  GstElement* e = gst_element_factory_make("glmvoicellm", nullptr);
  ASSERT_NE(e, nullptr);
  g_object_set(e, "model-path", "/nonexistent/glm-4-voice-9b", NULL);
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_READY), GST_STATE_CHANGE_FAILURE);
  std::string debug;
  EXPECT_TRUE(wait_error(bus, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND, &debug));
  EXPECT_NE(debug.find("gstglmvoicellm.cpp"), std::string::npos) << "names the element's call site: " << debug;
  gst_element_set_state(e, GST_STATE_NULL);
  gst_element_set_bus(e, nullptr);
  gst_object_unref(bus);
  gst_object_unref(e);
}

TEST(GlmVoiceLlm, test_properties) {
  GstElement* e = gst_element_factory_make("glmvoicellm", nullptr);
  ASSERT_NE(e, nullptr);
  gdouble temperature = 0, top_p = 0;
  gint top_k = 0, max_new = 0;
  gboolean keep = FALSE;
  g_object_get(e, "temperature", &temperature, "top-p", &top_p, "top-k", &top_k, "max-new-tokens", &max_new,
               "keep-history", &keep, NULL);
  EXPECT_DOUBLE_EQ(temperature, 0.2);
  EXPECT_DOUBLE_EQ(top_p, 0.8);
  EXPECT_EQ(top_k, 50);
  EXPECT_EQ(max_new, 2000);
  EXPECT_TRUE(keep);
  g_object_set(e, "system-prompt", "Be brief.", "instruction", "Speak slowly.", NULL);
  gchar* sys = nullptr;
  g_object_get(e, "system-prompt", &sys, NULL);
  EXPECT_STREQ(sys, "Be brief.");
  g_free(sys);
  gst_object_unref(e);
}

TEST(GlmVoiceLlm, test_dtype_defaults_to_auto_and_accepts_weight_only_formats) {
  // auto = bfloat16 on CUDA, float32 on CPU (llm.md §3.7); int8 / int4 = weight-only LLM.
  GstElement* e = gst_element_factory_make("glmvoicellm", nullptr);
  ASSERT_NE(e, nullptr);
  GParamSpec* spec = g_object_class_find_property(G_OBJECT_GET_CLASS(e), "dtype");
  ASSERT_NE(spec, nullptr);
  GEnumValue* def = g_enum_get_value(G_PARAM_SPEC_ENUM(spec)->enum_class, G_PARAM_SPEC_ENUM(spec)->default_value);
  ASSERT_NE(def, nullptr);
  EXPECT_STREQ(def->value_nick, "auto");
  for (const char* nick : {"int8", "int4"}) {
    EXPECT_NE(g_enum_get_value_by_nick(G_PARAM_SPEC_ENUM(spec)->enum_class, nick), nullptr) << nick;
  }
  gst_object_unref(e);
  Llm llm("tiny-script");
  gst_util_set_object_arg(G_OBJECT(llm.element), "dtype", "int8");
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);  // loads (int8 weights) and answers
  llm.end_turn();
  EXPECT_NE(wait_end_of_response(llm.speech), "(timeout)");
  GstMessage* m = gst_bus_pop_filtered(llm.bus, GST_MESSAGE_ERROR);
  EXPECT_EQ(m, nullptr) << "int8 LLM posted an error";
  if (m) gst_message_unref(m);
}

TEST(GlmVoiceLlm, test_text_segments_mode) {
  Llm llm("tiny-script");
  g_object_set(llm.element, "text-segments", TRUE, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  // "Hi" + the held E7 9A before the first speech token; the rest at the end
  EXPECT_EQ(take_texts(llm.text), (std::vector<std::string>{"Hi", "\xE7\x9A\x84 world"}));
}

/* ---- issue 9: timeline, GAP, segments, flush, latency, barge-in, context --------------- */

namespace {

using glmvoice::test::Timeline;
constexpr GstClockTime kToken = GST_GLM_VOICE_TOKEN_DURATION;

GstEvent* start_of_speech_event() { return gst_glm_voice_event_new_start_of_speech(GST_CLOCK_TIME_NONE); }

void push_segment(GstHarness* h, GstClockTime start, GstClockTime base, GstClockTime time) {
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  segment.start = start;
  segment.base = base;
  segment.time = time;
  ASSERT_TRUE(gst_harness_push_event(h, gst_event_new_segment(&segment)));
}

int count_messages(GstBus* bus, GstMessageType type, const char* structure_name = nullptr) {
  int n = 0;
  while (GstMessage* m = gst_bus_pop_filtered(bus, type)) {
    const GstStructure* s = gst_message_get_structure(m);
    if (!structure_name || (s && gst_structure_has_name(s, structure_name))) ++n;
    gst_message_unref(m);
  }
  return n;
}

}  // namespace

TEST(GlmVoiceLlm, test_gap_forwarded_in_order_and_timelines_level) {
  Llm llm("tiny-script");
  Timeline speech, text;
  speech.attach(llm.element, "src");
  text.attach(llm.element, "text_src");
  // No input for a second: forwarded as GAP on both outputs (no answer is running).
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_gap(0, GST_SECOND)));
  ASSERT_TRUE(speech.wait_for("gap", 1));
  ASSERT_TRUE(text.wait_for("gap", 1));
  EXPECT_EQ(speech.covered(), GST_SECOND);
  // Then a turn: its answer starts after the input (1 s + 3 tokens).
  ASSERT_EQ(llm.push_tokens({1, 2, 3}, GST_SECOND), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  ASSERT_TRUE(text.wait_for("end-of-response", 1));
  std::vector<GstClockTime> pts;
  take_tokens(llm.speech, &pts);
  ASSERT_EQ(pts.size(), 2u);
  EXPECT_EQ(pts[0], GST_SECOND + 3 * kToken);
  EXPECT_EQ(speech.backwards(), "");
  EXPECT_EQ(text.backwards(), "");
  // The text timeline reaches the end of the speech it goes with.
  EXPECT_EQ(text.covered(), GST_SECOND + 5 * kToken);
  EXPECT_EQ(speech.covered(), GST_SECOND + 5 * kToken);
}

TEST(GlmVoiceLlm, test_gap_during_an_answer_waits_for_its_end) {
  Llm llm("tiny-loop");
  g_object_set(llm.element, "max-new-tokens", 20, NULL);
  Timeline speech;
  speech.attach(llm.element, "src");
  ASSERT_EQ(llm.push_tokens({1}, 0), GST_FLOW_OK);
  llm.end_turn();
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_gap(kToken, 10 * GST_SECOND)));
  EXPECT_EQ(wait_end_of_response(llm.speech), "max-new-tokens");
  ASSERT_TRUE(speech.wait_for("gap", 3));  // answer start, text-only answer, then the input GAP
  EXPECT_EQ(speech.backwards(), "");
  EXPECT_EQ(speech.covered(), kToken + 10 * GST_SECOND);
}

TEST(GlmVoiceLlm, test_timestamps_through_a_segment_with_start_and_base) {
  Llm llm("tiny-script");
  push_segment(llm.speech, 10 * GST_SECOND, 5 * GST_SECOND, 10 * GST_SECOND);
  ASSERT_EQ(llm.push_tokens({1, 2, 3}, 10 * GST_SECOND), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  std::vector<GstClockTime> pts;
  take_tokens(llm.speech, &pts);
  ASSERT_EQ(pts.size(), 2u);
  // running time of the input's end: base 5 s + (10.24 s - start 10 s)
  EXPECT_EQ(pts[0], 5 * GST_SECOND + 3 * kToken);
}

TEST(GlmVoiceLlm, test_flushing_seek_restarts_the_timeline) {
  Llm llm("tiny-script");
  Timeline speech;
  speech.attach(llm.element, "src");
  ASSERT_EQ(llm.push_tokens({1, 2, 3}, 0), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  take_tokens(llm.speech);
  // A flushing seek to 30 s: FLUSH, then a segment starting there (running time from 0).
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_flush_start()));
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_flush_stop(TRUE)));
  push_segment(llm.speech, 30 * GST_SECOND, 0, 30 * GST_SECOND);
  ASSERT_EQ(llm.push_tokens({4, 5}, 30 * GST_SECOND), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  std::vector<GstClockTime> pts;
  take_tokens(llm.speech, &pts);
  ASSERT_EQ(pts.size(), 2u);
  EXPECT_EQ(pts[0], 2 * kToken);
  // a new segment went out after the flush
  const auto items = speech.snapshot();
  size_t flush_stop = 0, segment_after = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].kind == "flush-stop") flush_stop = i;
    if (items[i].kind == "segment") segment_after = i;
  }
  EXPECT_GT(flush_stop, 0u);
  EXPECT_GT(segment_after, flush_stop);
}

TEST(GlmVoiceLlm, test_flush_stop_starts_no_task_on_an_inactive_pad) {
  Llm llm("tiny-script");
  GstPad* src = gst_element_get_static_pad(llm.element, "src");
  GstPad* text_src = gst_element_get_static_pad(llm.element, "text_src");
  // As during PAUSED->READY: the src pads are deactivated, then a FLUSH_STOP arrives.
  ASSERT_TRUE(gst_pad_set_active(src, FALSE));
  ASSERT_TRUE(gst_pad_set_active(text_src, FALSE));
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_flush_start()));
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_flush_stop(TRUE)));
  EXPECT_NE(gst_pad_get_task_state(src), GST_TASK_STARTED);
  EXPECT_NE(gst_pad_get_task_state(text_src), GST_TASK_STARTED);
  gst_object_unref(src);
  gst_object_unref(text_src);
}

TEST(GlmVoiceLlm, test_latency_query_live_adds_the_budget) {
  Llm llm("tiny-script");
  gst_harness_set_upstream_latency(llm.speech, 100 * GST_MSECOND);
  g_object_set(llm.element, "latency", static_cast<guint64>(300 * GST_MSECOND), NULL);
  EXPECT_EQ(gst_harness_query_latency(llm.speech), 400 * GST_MSECOND);
  EXPECT_EQ(count_messages(llm.bus, GST_MESSAGE_LATENCY), 1) << "a budget change posts a LATENCY message";
  g_object_set(llm.element, "latency", static_cast<guint64>(300 * GST_MSECOND), NULL);
  EXPECT_EQ(count_messages(llm.bus, GST_MESSAGE_LATENCY), 0) << "no message when nothing changed";
}

TEST(GlmVoiceLlm, test_latency_measured_without_a_budget) {
  Llm llm("tiny-script");
  gst_harness_set_upstream_latency(llm.speech, 100 * GST_MSECOND);
  ASSERT_EQ(llm.push_tokens({1, 2}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  // latency=0: the element reports the first-token time it measured on top of upstream's
  EXPECT_GT(gst_harness_query_latency(llm.speech), 100 * GST_MSECOND);
}

TEST(GlmVoiceLlm, test_latency_exceeded_warns_once) {
  Llm llm("tiny-script");
  g_object_set(llm.element, "latency", static_cast<guint64>(1), NULL);  // 1 ns: every answer is later
  for (int turn = 0; turn < 2; ++turn) {
    ASSERT_EQ(llm.push_tokens({1, 2}), GST_FLOW_OK);
    llm.end_turn();
    EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  }
  EXPECT_EQ(count_messages(llm.bus, GST_MESSAGE_WARNING), 1);
}

TEST(GlmVoiceLlm, test_barge_in_on_start_of_speech) {
  Llm llm("tiny-loop");
  g_object_set(llm.element, "barge-in", TRUE, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  GstBuffer* first = gst_harness_pull(llm.text);  // the answer is running (it never ends)
  ASSERT_NE(first, nullptr);
  gst_buffer_unref(first);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(gst_harness_push_event(llm.speech, start_of_speech_event()));
  EXPECT_EQ(wait_end_of_response(llm.speech), "interrupted");
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 5000.0) << "the answer must stop within a token";
  GstMessage* m = wait_turn_message(llm.bus);
  ASSERT_NE(m, nullptr);
  EXPECT_STREQ(gst_structure_get_string(gst_message_get_structure(m), "reason"), "interrupted");
  gst_message_unref(m);
}

TEST(GlmVoiceLlm, test_barge_in_after_the_answer_was_generated_interrupts_its_playback) {
  // The answer is generated faster than it plays: when the user starts speaking it is done
  // here but still playing downstream. One end-of-response "interrupted" on src (the decoder
  // drops the rest), none on text_src, and no second one without a new answer in between.
  Llm llm("tiny-script");
  g_object_set(llm.element, "barge-in", TRUE, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  ASSERT_TRUE(gst_harness_push_event(llm.speech, start_of_speech_event()));
  EXPECT_EQ(wait_end_of_response(llm.speech), "interrupted");
  ASSERT_TRUE(gst_harness_push_event(llm.speech, start_of_speech_event()));  // nothing left to stop
  ASSERT_EQ(llm.push_tokens({2}, 10 * GST_SECOND), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token") << "text_src got the playback interrupt";
}

TEST(GlmVoiceLlm, test_start_of_speech_without_barge_in_changes_nothing) {
  Llm llm("tiny-loop");
  g_object_set(llm.element, "max-new-tokens", 30, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  ASSERT_TRUE(gst_harness_push_event(llm.speech, start_of_speech_event()));
  EXPECT_EQ(wait_end_of_response(llm.speech), "max-new-tokens");
}

TEST(GlmVoiceLlm, test_history_outgrowing_the_context_drops_oldest_turns) {
  // tiny-script: context 512; a prompt must leave min(max-new-tokens, 256) for the answer.
  Llm llm("tiny-script", /*text_in=*/false, /*text_out=*/false);
  const int turns = 40;
  std::vector<gint32> question(20);
  for (int t = 0; t < turns; ++t) {
    for (size_t i = 0; i < question.size(); ++i) question[i] = static_cast<gint32>((t + i) % 64);
    ASSERT_EQ(llm.push_tokens(question), GST_FLOW_OK);
    llm.end_turn();
    ASSERT_EQ(wait_end_of_response(llm.speech), "stop-token") << "turn " << t;
  }
  int answered = 0, context_messages = 0, max_prompt = 0;
  while (GstMessage* m = gst_bus_pop_filtered(llm.bus, GST_MESSAGE_ELEMENT)) {
    const GstStructure* s = gst_message_get_structure(m);
    if (gst_structure_has_name(s, "glmvoicellm-turn")) {
      ++answered;
      gint prompt = 0;
      gst_structure_get_int(s, "prompt-tokens", &prompt);
      max_prompt = std::max(max_prompt, prompt);
    } else if (gst_structure_has_name(s, "glmvoicellm-context")) {
      ++context_messages;
      gint dropped = 0, context = 0;
      EXPECT_TRUE(gst_structure_get_int(s, "dropped-turns", &dropped));
      EXPECT_GE(dropped, 1);
      EXPECT_TRUE(gst_structure_get_int(s, "context-tokens", &context));
      EXPECT_EQ(context, 512);
    }
    gst_message_unref(m);
  }
  EXPECT_EQ(answered, turns) << "no turn is skipped";
  EXPECT_GT(context_messages, 0);
  EXPECT_LT(max_prompt, 512);
  EXPECT_EQ(count_messages(llm.bus, GST_MESSAGE_WARNING), 0);
}

TEST(GlmVoiceLlm, test_text_segments_carry_the_duration_of_their_speech) {
  Llm llm("tiny-script");
  g_object_set(llm.element, "text-segments", TRUE, NULL);
  ASSERT_EQ(llm.push_tokens({1}, 0), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  GstBuffer* hi = gst_harness_pull(llm.text);
  ASSERT_NE(hi, nullptr);
  EXPECT_EQ(GST_BUFFER_PTS(hi), kToken);            // the speech run after "Hi" starts at 80 ms
  EXPECT_EQ(GST_BUFFER_DURATION(hi), 2 * kToken);   // and lasts two tokens
  gst_buffer_unref(hi);
  GstBuffer* tail = gst_harness_pull(llm.text);
  ASSERT_NE(tail, nullptr);
  EXPECT_EQ(GST_BUFFER_PTS(tail), 3 * kToken);  // no speech follows: at the answer's end
  gst_buffer_unref(tail);
}

TEST(GlmVoiceLlm, test_text_lines_one_turn_per_line_one_line_per_answer) {
  Llm llm("tiny-script", /*text_in=*/true);
  g_object_set(llm.element, "text-lines", TRUE, NULL);
  ASSERT_EQ(llm.push_text("first question\nsecond "), GST_FLOW_OK);
  ASSERT_EQ(llm.push_text("question\n"), GST_FLOW_OK);
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  EXPECT_EQ(join(take_texts(llm.text)), kAnswer + "\n" + kAnswer + "\n");
  GstMessage* m = wait_turn_message(llm.bus);
  ASSERT_NE(m, nullptr);
  gst_message_unref(m);
  m = wait_turn_message(llm.bus);
  ASSERT_NE(m, nullptr) << "two lines, two turns";
  gst_message_unref(m);
}

TEST(GlmVoiceLlm, test_property_flags) {
  GstElement* e = gst_element_factory_make("glmvoicellm", nullptr);
  ASSERT_NE(e, nullptr);
  GObjectClass* klass = G_OBJECT_GET_CLASS(e);
  for (const char* name : {"temperature", "top-p", "top-k", "max-new-tokens", "system-prompt", "instruction",
                           "keep-history", "barge-in", "text-segments", "latency"}) {
    GParamSpec* p = g_object_class_find_property(klass, name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_TRUE(p->flags & GST_PARAM_MUTABLE_PLAYING) << name << " changes while PLAYING";
  }
  for (const char* name : {"model-path", "device", "dtype", "seed", "text-lines"}) {
    GParamSpec* p = g_object_class_find_property(klass, name);
    ASSERT_NE(p, nullptr) << name;
    EXPECT_FALSE(p->flags & GST_PARAM_MUTABLE_PLAYING) << name;
    EXPECT_TRUE(p->flags & GST_PARAM_MUTABLE_READY) << name;
  }
  gst_object_unref(e);
}

TEST(GlmVoiceLlm, test_properties_change_while_playing) {
  Llm llm("tiny-script");
  auto answer = [&llm](const std::vector<gint32>& q) {
    EXPECT_EQ(llm.push_tokens(q), GST_FLOW_OK);
    llm.end_turn();
    EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
    GstMessage* m = wait_turn_message(llm.bus);
    EXPECT_NE(m, nullptr);
    const size_t n = m ? ids_field(m, "input-ids").size() : 0;
    if (m) gst_message_unref(m);
    return n;
  };
  const size_t first = answer({1, 2, 3});
  const size_t second = answer({1, 2, 3});
  EXPECT_GT(second, first) << "history kept";
  // A new system prompt (set while PLAYING) starts a new history at the next turn.
  g_object_set(llm.element, "system-prompt", "Be brief.", NULL);
  const size_t third = answer({1, 2, 3});
  EXPECT_LT(third, first) << "the short system prompt, no history";
  // An instruction (set while PLAYING) is appended to the next user turn; keep-history off.
  g_object_set(llm.element, "instruction", "Speak slowly.", "keep-history", FALSE, NULL);
  const size_t fourth = answer({1, 2, 3});
  EXPECT_GT(fourth, third);
  // max-new-tokens (set while PLAYING) applies to the next answer.
  g_object_set(llm.element, "max-new-tokens", 2, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.speech), "max-new-tokens");
}

TEST(GlmVoiceLlm, test_text_sink_released_and_requested_while_playing) {
  Llm llm("tiny-script");  // speech in, text out; text_sink requested by hand below
  for (int round = 0; round < 2; ++round) {
    GstPad* text_sink = gst_element_request_pad_simple(llm.element, "text_sink");
    ASSERT_NE(text_sink, nullptr) << "round " << round;
    GstPad* feeder = gst_pad_new("feeder", GST_PAD_SRC);
    ASSERT_EQ(gst_pad_link(feeder, text_sink), GST_PAD_LINK_OK);
    gst_pad_set_active(feeder, TRUE);
    gst_pad_push_event(feeder, gst_event_new_stream_start("text-in"));
    GstCaps* caps = gst_caps_from_string(GST_GLM_VOICE_TEXT_CAPS);
    gst_pad_push_event(feeder, gst_event_new_caps(caps));
    gst_caps_unref(caps);
    GstSegment segment;
    gst_segment_init(&segment, GST_FORMAT_TIME);
    gst_pad_push_event(feeder, gst_event_new_segment(&segment));
    const std::string question = "hello";
    EXPECT_EQ(gst_pad_push(feeder, gst_buffer_new_memdup(question.data(), question.size())), GST_FLOW_OK);
    EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
    // Released while PLAYING (the application drops its text input).
    gst_pad_set_active(feeder, FALSE);
    gst_pad_unlink(feeder, text_sink);
    gst_element_release_request_pad(llm.element, text_sink);
    gst_object_unref(text_sink);
    gst_object_unref(feeder);
    // Speech turns still work.
    ASSERT_EQ(llm.push_tokens({1, 2}), GST_FLOW_OK);
    llm.end_turn();
    EXPECT_EQ(wait_end_of_response(llm.speech), "stop-token");
    EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  }
  // EOS on the speech input ends the stream (no text input left to wait for).
  ASSERT_TRUE(gst_harness_push_event(llm.speech, gst_event_new_eos()));
  EXPECT_EQ(wait_end_of_response(llm.text), "EOS");
}
