// GstHarness tests of glmvoicellm on the tiny scripted models of glmvoice-mkmodel:
// tiny-script answers every turn with "H" "i" <E7 9A> <|audio_3|> <|audio_4|> <84> " world"
// <|user|> (text "Hi的 world", speech tokens [3, 4]); tiny-loop never stops ("HiHiHi...").
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

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
  for (int i = 0; i < 50; ++i) {
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
bool wait_error(GstBus* bus, GQuark domain, gint code) {
  GstMessage* m = gst_bus_timed_pop_filtered(bus, 10 * GST_SECOND, GST_MESSAGE_ERROR);
  if (!m) return false;
  GError* err = nullptr;
  gst_message_parse_error(m, &err, nullptr);
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
  EXPECT_TRUE(wait_error(llm.bus, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE));
  EXPECT_EQ(llm.push_tokens({-1}), GST_FLOW_ERROR);
}

TEST(GlmVoiceLlm, test_caps_mismatch) {
  Llm llm("tiny-script");
  GstCaps* caps = gst_glm_voice_tokens_caps_new(100);
  gst_harness_set_src_caps(llm.speech, caps);
  EXPECT_TRUE(wait_error(llm.bus, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE));
}

TEST(GlmVoiceLlm, test_missing_model_posts_error) {
  GstElement* e = gst_element_factory_make("glmvoicellm", nullptr);
  ASSERT_NE(e, nullptr);
  g_object_set(e, "model-path", "/nonexistent/glm-4-voice-9b", NULL);
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_READY), GST_STATE_CHANGE_FAILURE);
  EXPECT_TRUE(wait_error(bus, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND));
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

TEST(GlmVoiceLlm, test_text_segments_mode) {
  Llm llm("tiny-script");
  g_object_set(llm.element, "text-segments", TRUE, NULL);
  ASSERT_EQ(llm.push_tokens({1}), GST_FLOW_OK);
  llm.end_turn();
  EXPECT_EQ(wait_end_of_response(llm.text), "stop-token");
  // "Hi" + the held E7 9A before the first speech token; the rest at the end
  EXPECT_EQ(take_texts(llm.text), (std::vector<std::string>{"Hi", "\xE7\x9A\x84 world"}));
}
