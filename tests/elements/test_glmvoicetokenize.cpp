// GstHarness tests of glmvoicetokenize on the tiny mk-a tokenizer (block 40 conv frames =
// 0.8 s = 10 tokens).
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "element_test_util.h"
#include "../lib/speech/speech_test_util.h"
#include "glmvoice_caps.h"
#include "glmvoice_events.h"
#include "speech/tokenizer_model.h"
#include "test_support.h"

namespace {

const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

constexpr const char* kAudioCaps =
    "audio/x-raw, format=(string)F32LE, rate=(int)16000, channels=(int)1, layout=(string)interleaved";
constexpr GstClockTime kToken = GST_SECOND * 2 / 25;

std::string model_dir() { return glmvoice::test::tiny_model_dir("tokenizer", "mk-a"); }

std::shared_ptr<const glmvoice::speech::TokenizerModel> model() {
  static auto m = [] {
    glmvoice::ModelOptions options;
    options.path = model_dir();
    return glmvoice::speech::TokenizerModel::load(options);
  }();
  return m;
}

std::vector<int64_t> offline_ids(const std::vector<float>& x) {
  const at::Tensor ids = model()->tokenize(glmvoice::test::to_tensor(x));
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

struct Harness {
  GstHarness* h = nullptr;
  glmvoice::test::Recorder recorder;

  explicit Harness(const std::string& props = "") {
    const std::string launch = "glmvoicetokenize model-path=\"" + model_dir() + "\" device=cpu " + props;
    h = gst_harness_new_parse(launch.c_str());
    GstPad* src = gst_element_get_static_pad(h->element, "src");
    gst_pad_add_probe(src, GstPadProbeType(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM),
                      glmvoice::test::Recorder::probe, &recorder, nullptr);
    gst_object_unref(src);
    gst_harness_set_src_caps_str(h, kAudioCaps);
  }
  ~Harness() { gst_harness_teardown(h); }

  GstFlowReturn push(const float* x, int64_t n, GstClockTime pts, bool discont = false) {
    GstBuffer* buffer = gst_buffer_new_memdup(x, n * sizeof(float));
    GST_BUFFER_PTS(buffer) = pts;
    GST_BUFFER_DURATION(buffer) = gst_util_uint64_scale_int(n, GST_SECOND, 16000);
    if (discont) GST_BUFFER_FLAG_SET(buffer, GST_BUFFER_FLAG_DISCONT);
    return gst_harness_push(h, buffer);
  }
  // Pushes x in pieces of `size` samples starting at `start_sample` (timestamps from it).
  void push_all(const std::vector<float>& x, int64_t size, int64_t start_sample = 0) {
    for (int64_t i = 0; i < static_cast<int64_t>(x.size()); i += size) {
      const int64_t n = std::min<int64_t>(size, x.size() - i);
      ASSERT_EQ(push(x.data() + i, n, gst_util_uint64_scale_int(start_sample + i, GST_SECOND, 16000)),
                GST_FLOW_OK);
    }
  }

  struct Token {
    int32_t id;
    GstClockTime pts;
  };
  // Pulls every buffer received so far; checks durations and the int32 payload layout.
  std::vector<Token> pull_tokens(std::vector<GstBuffer*>* keep = nullptr) {
    std::vector<Token> tokens;
    while (GstBuffer* b = gst_harness_try_pull(h)) {
      GstMapInfo map;
      gst_buffer_map(b, &map, GST_MAP_READ);
      const gsize n = map.size / 4;
      EXPECT_EQ(map.size % 4, 0u);
      EXPECT_EQ(GST_BUFFER_DURATION(b), n * kToken);
      for (gsize i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, map.data + 4 * i, 4);
        tokens.push_back({GINT32_FROM_LE(v), GST_BUFFER_PTS(b) + i * kToken});
      }
      gst_buffer_unmap(b, &map);
      if (keep) {
        keep->push_back(b);
      } else {
        gst_buffer_unref(b);
      }
    }
    return tokens;
  }
  int count_items(const std::string& name) const {
    return static_cast<int>(std::count(recorder.items.begin(), recorder.items.end(), name));
  }
};

std::vector<int64_t> ids_of(const std::vector<Harness::Token>& tokens) {
  std::vector<int64_t> ids;
  for (const auto& t : tokens) ids.push_back(t.id);
  return ids;
}

TEST(GlmVoiceTokenize, test_push_sizes_give_offline_tokens_and_exact_timestamps) {
  const std::vector<float> x = glmvoice::test::make_clip(32000, 21);
  const auto expected = offline_ids(x);
  for (int64_t size : {1, 160, 1000, 4097, 12800, 48000}) {
    const std::vector<float> clip = size == 1 ? std::vector<float>(x.begin(), x.begin() + 16000) : x;
    Harness t;
    t.push_all(clip, size);
    ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
    const auto tokens = t.pull_tokens();
    EXPECT_EQ(ids_of(tokens), size == 1 ? offline_ids(clip) : expected) << "push size " << size;
    for (size_t i = 0; i < tokens.size(); ++i) {
      EXPECT_EQ(tokens[i].pts, i * kToken) << "token " << i << " push size " << size;
    }
  }
}

TEST(GlmVoiceTokenize, test_caps_and_block_emission) {
  Harness t;
  const std::vector<float> x = glmvoice::test::make_clip(12801, 22);
  t.push_all(x, 12800);  // one sample past block 0: its 10 tokens are final
  EXPECT_EQ(t.pull_tokens().size(), 10u);
  GstCaps* caps = gst_pad_get_current_caps(t.h->sinkpad);
  ASSERT_NE(caps, nullptr);
  gint size = 0;
  EXPECT_TRUE(gst_glm_voice_tokens_caps_parse(caps, &size));
  EXPECT_EQ(size, model()->config().vocab_size);
  gst_caps_unref(caps);
}

TEST(GlmVoiceTokenize, test_eos_sends_end_of_turn) {
  Harness t;
  const std::vector<float> x = glmvoice::test::make_clip(20000, 23);
  t.push_all(x, 20000);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  EXPECT_EQ(ids_of(t.pull_tokens()), offline_ids(x));
  // ... tokens of block 0, then the final partial block, then end-of-turn, then EOS
  const auto& items = t.recorder.items;
  ASSERT_GE(items.size(), 3u);
  EXPECT_EQ(items[items.size() - 1], "eos");
  EXPECT_EQ(items[items.size() - 2], "end-of-turn");
  EXPECT_EQ(items[items.size() - 3], "buffer");
  EXPECT_EQ(t.count_items("end-of-turn"), 1);
}

TEST(GlmVoiceTokenize, test_flush_resets_state) {
  Harness t;
  const std::vector<float> junk = glmvoice::test::make_clip(9000, 24, 100);
  t.push_all(junk, 3000);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_flush_start()));
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_flush_stop(TRUE)));
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_segment(&segment)));
  t.pull_tokens();
  const std::vector<float> x = glmvoice::test::make_clip(30000, 25);
  t.push_all(x, 2048);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  const auto tokens = t.pull_tokens();
  EXPECT_EQ(ids_of(tokens), offline_ids(x));
  ASSERT_FALSE(tokens.empty());
  EXPECT_EQ(tokens[0].pts, 0u);
}

TEST(GlmVoiceTokenize, test_endpointing_splits_two_utterances) {
  Harness t("endpoint-silence-ms=500 silence-threshold-db=-50");
  const std::vector<float> a = glmvoice::test::make_clip(24000, 26, 0);
  const std::vector<float> b = glmvoice::test::make_clip(19200, 27, 0);
  std::vector<float> x = a;
  x.resize(a.size() + 16000, 0.0f);  // 1 s of digital silence
  x.insert(x.end(), b.begin(), b.end());
  t.push_all(x, 1600);
  // the endpoint fires 500 ms into the silence (a's length is a multiple of 10 ms); the rest
  // of the pause belongs to no turn: turn 2 starts where b's (loud from its first sample) does
  const int64_t e = static_cast<int64_t>(a.size()) + 8000;
  const int64_t resume = static_cast<int64_t>(a.size()) + 16000;
  std::vector<float> turn1(x.begin(), x.begin() + e), turn2(x.begin() + resume, x.end());
  EXPECT_EQ(t.count_items("end-of-turn"), 1);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  EXPECT_EQ(t.count_items("end-of-turn"), 2);
  const auto tokens = t.pull_tokens();
  const auto ids1 = offline_ids(turn1), ids2 = offline_ids(turn2);
  ASSERT_EQ(tokens.size(), ids1.size() + ids2.size());
  std::vector<int64_t> expected = ids1;
  expected.insert(expected.end(), ids2.begin(), ids2.end());
  EXPECT_EQ(ids_of(tokens), expected);
  // turn 2 restarts its token grid at its own first sample
  const GstClockTime start2 = gst_util_uint64_scale_int(resume, GST_SECOND, 16000);
  EXPECT_EQ(tokens[ids1.size()].pts, start2);
  EXPECT_EQ(tokens.back().pts, start2 + (ids2.size() - 1) * kToken);
}

TEST(GlmVoiceTokenize, test_eos_after_endpointed_pause_sends_no_silent_turn) {
  Harness t("endpoint-silence-ms=500 silence-threshold-db=-50");
  std::vector<float> x = glmvoice::test::make_clip(24000, 29, 0);
  const size_t speech = x.size();
  x.resize(speech + 32000, 0.0f);  // 2 s of silence, then EOS
  t.push_all(x, 1600);
  EXPECT_EQ(t.count_items("end-of-turn"), 1);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  EXPECT_EQ(t.count_items("end-of-turn"), 1) << "the pause after the endpoint became a turn";
  const std::vector<float> turn1(x.begin(), x.begin() + speech + 8000);
  EXPECT_EQ(ids_of(t.pull_tokens()), offline_ids(turn1));
}

TEST(GlmVoiceTokenize, test_timestamp_gap_reanchors) {
  Harness t;
  const std::vector<float> x = glmvoice::test::make_clip(25600, 28);
  // first half at t=1 s, second half after a 2 s gap, marked DISCONT
  ASSERT_EQ(t.push(x.data(), 12800, GST_SECOND), GST_FLOW_OK);
  ASSERT_EQ(t.push(x.data() + 12800, 12800, GST_SECOND * 3 + GST_MSECOND * 800, true), GST_FLOW_OK);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  std::vector<GstBuffer*> buffers;
  const auto tokens = t.pull_tokens(&buffers);
  ASSERT_EQ(tokens.size(), 20u);
  EXPECT_EQ(tokens[0].pts, GST_SECOND);
  EXPECT_EQ(tokens[9].pts, GST_SECOND + 9 * kToken);
  EXPECT_EQ(tokens[10].pts, GST_SECOND * 3 + GST_MSECOND * 800);
  ASSERT_GE(buffers.size(), 2u);
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(buffers[0], GST_BUFFER_FLAG_DISCONT));
  EXPECT_TRUE(GST_BUFFER_FLAG_IS_SET(buffers.back(), GST_BUFFER_FLAG_DISCONT));
  for (GstBuffer* b : buffers) gst_buffer_unref(b);
}

TEST(GlmVoiceTokenize, test_latency_query) {
  Harness t;
  // mk-a: block 40 conv frames x 320 samples = 12800 samples = 0.8 s
  EXPECT_EQ(gst_harness_query_latency(t.h), GST_MSECOND * 800);
}

TEST(GlmVoiceTokenize, test_refuses_other_audio_formats) {
  for (const char* caps_str :
       {"audio/x-raw, format=(string)S16LE, rate=(int)16000, channels=(int)1, layout=(string)interleaved",
        "audio/x-raw, format=(string)F32LE, rate=(int)44100, channels=(int)1, layout=(string)interleaved",
        "audio/x-raw, format=(string)F32LE, rate=(int)16000, channels=(int)2, layout=(string)interleaved"}) {
    GstHarness* h = gst_harness_new_parse(("glmvoicetokenize model-path=\"" + model_dir() + "\" device=cpu").c_str());
    GstCaps* caps = gst_caps_from_string(caps_str);
    // sticky: the push stores the event; the refusal shows when data flows
    gst_harness_push_event(h, gst_event_new_caps(caps));
    gst_caps_unref(caps);
    GstSegment segment;
    gst_segment_init(&segment, GST_FORMAT_TIME);
    gst_harness_push_event(h, gst_event_new_segment(&segment));
    GstBuffer* buffer = gst_buffer_new_allocate(nullptr, 3200, nullptr);
    gst_buffer_memset(buffer, 0, 0, 3200);
    EXPECT_EQ(gst_harness_push(h, buffer), GST_FLOW_NOT_NEGOTIATED) << caps_str;
    gst_harness_teardown(h);
  }
}

// Runs NULL -> READY on an element with `path` and returns the error message it posted.
std::string load_error(const std::string& path, GQuark* domain, gint* code) {
  GstElement* element = gst_element_factory_make("glmvoicetokenize", nullptr);
  EXPECT_NE(element, nullptr);
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(element, bus);
  g_object_set(element, "model-path", path.c_str(), "device", "cpu", nullptr);
  EXPECT_EQ(gst_element_set_state(element, GST_STATE_READY), GST_STATE_CHANGE_FAILURE);
  std::string text;
  while (GstMessage* m = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR)) {
    GError* err = nullptr;
    gchar* debug = nullptr;
    gst_message_parse_error(m, &err, &debug);
    text = err->message;
    *domain = err->domain;
    *code = err->code;
    g_error_free(err);
    g_free(debug);
    gst_message_unref(m);
  }
  gst_element_set_state(element, GST_STATE_NULL);
  gst_element_set_bus(element, nullptr);
  gst_object_unref(bus);
  gst_object_unref(element);
  return text;
}

TEST(GlmVoiceTokenize, test_missing_model_posts_error) {
  const std::string path = glmvoice::test::scratch_dir("tok-missing") + "/nothing-here";
  GQuark domain = 0;
  gint code = 0;
  const std::string text = load_error(path, &domain, &code);
  EXPECT_EQ(domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(code, GST_RESOURCE_ERROR_NOT_FOUND);
  EXPECT_NE(text.find("nothing-here"), std::string::npos) << text;
}

TEST(GlmVoiceTokenize, test_corrupt_model_posts_error) {
  namespace fs = std::filesystem;
  const std::string dir = glmvoice::test::scratch_dir("tok-corrupt");
  fs::copy_file(fs::path(model_dir()) / "config.json", fs::path(dir) / "config.json");
  fs::copy_file(fs::path(model_dir()) / "preprocessor_config.json", fs::path(dir) / "preprocessor_config.json");
  std::ofstream(fs::path(dir) / "model.safetensors") << "this is not a safetensors file";
  GQuark domain = 0;
  gint code = 0;
  const std::string text = load_error(dir, &domain, &code);
  EXPECT_EQ(domain, GST_RESOURCE_ERROR);
  EXPECT_EQ(code, GST_RESOURCE_ERROR_SETTINGS);
  EXPECT_NE(text.find("model.safetensors"), std::string::npos) << text;
}

}  // namespace

namespace {

TEST(GlmVoiceTokenize, test_offline_exact_property) {
  // a loud event late in the utterance: streaming floors differ, offline-exact does not
  const std::vector<float> x = glmvoice::test::make_clip(40000, 29, 30000);
  Harness t("offline-exact=true");
  t.push_all(x, 3000);
  EXPECT_TRUE(t.pull_tokens().empty()) << "nothing before the segment ends";
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  const auto tokens = t.pull_tokens();
  EXPECT_EQ(ids_of(tokens), offline_ids(x));
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(tokens[i].pts, i * kToken);
  EXPECT_EQ(gst_harness_query_latency(t.h), 30 * GST_SECOND);
}

}  // namespace
