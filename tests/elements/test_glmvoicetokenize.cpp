// GstHarness tests of glmvoicetokenize on the tiny mk-a tokenizer (block 40 conv frames =
// 0.8 s = 10 tokens).
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
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
  GstElement* element = nullptr;  // the glmvoicetokenize inside the harness bin
  glmvoice::test::Recorder recorder;

  explicit Harness(const std::string& props = "") {
    const std::string launch = "glmvoicetokenize name=tok model-path=\"" + model_dir() + "\" device=cpu " + props;
    h = gst_harness_new_parse(launch.c_str());
    element = gst_bin_get_by_name(GST_BIN(h->element), "tok");
    GstPad* src = gst_element_get_static_pad(h->element, "src");
    gst_pad_add_probe(src, GstPadProbeType(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM),
                      glmvoice::test::Recorder::probe, &recorder, nullptr);
    gst_object_unref(src);
    gst_harness_set_src_caps_str(h, kAudioCaps);
  }
  ~Harness() {
    gst_object_unref(element);
    gst_harness_teardown(h);
  }

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

namespace {

// What left the element, in order: buffers with their PTS, events with a timestamp where
// they have one (GAP start, start-of-speech time).
struct Timeline {
  struct Item {
    std::string what;
    GstClockTime time;
  };
  std::vector<Item> items;
  static GstPadProbeReturn probe(GstPad*, GstPadProbeInfo* info, gpointer data) {
    auto* self = static_cast<Timeline*>(data);
    if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) {
      self->items.push_back({"buffer", GST_BUFFER_PTS(GST_PAD_PROBE_INFO_BUFFER(info))});
      return GST_PAD_PROBE_OK;
    }
    GstEvent* event = GST_PAD_PROBE_INFO_EVENT(info);
    GstClockTime t = GST_CLOCK_TIME_NONE, duration;
    if (GST_EVENT_TYPE(event) == GST_EVENT_GAP) {
      gst_event_parse_gap(event, &t, &duration);
      self->items.push_back({"gap", t});
    } else if (gst_glm_voice_event_parse_start_of_speech(event, &t)) {
      self->items.push_back({"start-of-speech", t});
    } else if (gst_glm_voice_event_is_end_of_turn(event)) {
      self->items.push_back({"end-of-turn", t});
    } else {
      self->items.push_back({GST_EVENT_TYPE_NAME(event), t});
    }
    return GST_PAD_PROBE_OK;
  }
  void attach(GstElement* element) {
    GstPad* src = gst_element_get_static_pad(element, "src");
    gst_pad_add_probe(src, GstPadProbeType(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM), probe,
                      this, nullptr);
    gst_object_unref(src);
  }
  int count(const std::string& what) const {
    return static_cast<int>(std::count_if(items.begin(), items.end(), [&](const Item& i) { return i.what == what; }));
  }
  // Timestamps of buffers and GAPs never go backwards.
  void expect_monotonic() const {
    GstClockTime last = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (items[i].what != "buffer" && items[i].what != "gap") continue;
      EXPECT_GE(items[i].time, last) << items[i].what << " #" << i << " goes backwards";
      last = items[i].time;
    }
  }
};

GstClockTime samples_time(int64_t n) { return gst_util_uint64_scale_int(n, GST_SECOND, 16000); }

TEST(GlmVoiceTokenize, test_gap_outside_an_utterance_goes_on_at_once) {
  Harness t;
  Timeline timeline;
  timeline.attach(t.h->element);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_gap(0, GST_SECOND)));
  ASSERT_EQ(timeline.count("gap"), 1);
  EXPECT_EQ(timeline.items.back().time, 0u);
  const std::vector<float> x = glmvoice::test::make_clip(16000, 40);
  t.push_all(x, 1600, 16000);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  const auto tokens = t.pull_tokens();
  ASSERT_FALSE(tokens.empty());
  EXPECT_EQ(tokens[0].pts, GST_SECOND) << "the speech after the gap keeps its own time";
  timeline.expect_monotonic();
}

TEST(GlmVoiceTokenize, test_gap_inside_an_utterance_stays_in_order) {
  // 0.5 s of speech (no block complete: its tokens are pending), a 0.5 s GAP, 0.5 s more.
  // The GAP is silence the user heard: tokenized as zeros, so the tokens are those of
  // speech + zeros + speech, contiguous, and nothing goes backwards downstream.
  Harness t;
  Timeline timeline;
  timeline.attach(t.h->element);
  const std::vector<float> a = glmvoice::test::make_clip(8000, 41), b = glmvoice::test::make_clip(8000, 42);
  t.push_all(a, 1600);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_gap(samples_time(8000), samples_time(8000))));
  t.push_all(b, 1600, 16000);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  timeline.expect_monotonic();
  EXPECT_EQ(timeline.count("gap"), 0) << "the tokens cover the gap";
  std::vector<float> heard = a;
  heard.resize(16000, 0.0f);
  heard.insert(heard.end(), b.begin(), b.end());
  const auto tokens = t.pull_tokens();
  EXPECT_EQ(ids_of(tokens), offline_ids(heard));
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(tokens[i].pts, i * kToken) << "token " << i;
}

TEST(GlmVoiceTokenize, test_gap_counts_as_silence_for_endpointing) {
  // Speech, then a 2 s GAP (e.g. a muted microphone or DTX): the endpoint fires 300 ms into
  // the gap; the rest of it goes on as a GAP after the turn's tokens and end-of-turn.
  Harness t("endpoint-silence-ms=300");
  Timeline timeline;
  timeline.attach(t.h->element);
  const std::vector<float> x = glmvoice::test::make_clip(24000, 43);
  t.push_all(x, 1600);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_gap(samples_time(24000), 2 * GST_SECOND)));
  ASSERT_EQ(timeline.count("end-of-turn"), 1) << "a GAP of silence did not end the turn";
  timeline.expect_monotonic();
  ASSERT_EQ(timeline.items.back().what, "gap");
  const auto& eot = std::find_if(timeline.items.begin(), timeline.items.end(),
                                 [](const Timeline::Item& i) { return i.what == "end-of-turn"; });
  EXPECT_EQ(std::count_if(eot, timeline.items.end(), [](const Timeline::Item& i) { return i.what == "buffer"; }), 0)
      << "tokens after end-of-turn";
  std::vector<float> turn = x;
  turn.resize(24000 + 4800, 0.0f);  // the endpoint fires after 300 ms of the gap
  EXPECT_EQ(ids_of(t.pull_tokens()), offline_ids(turn));
  EXPECT_GE(timeline.items.back().time, samples_time(24000 + 4800)) << "the rest of the gap";
}

TEST(GlmVoiceTokenize, test_start_of_speech_when_speech_begins) {
  // Endpointing off: still one start-of-speech, at the first loud 10 ms frame, sent at once
  // (ahead of the block that will carry those tokens).
  Harness t;
  Timeline timeline;
  timeline.attach(t.h->element);
  std::vector<float> x(8000, 0.0f);  // 0.5 s of silence, then speech
  const std::vector<float> speech = glmvoice::test::make_clip(8000, 44);
  x.insert(x.end(), speech.begin(), speech.end());
  t.push_all(x, 1600, 16000);  // starts at 1 s
  ASSERT_EQ(timeline.count("start-of-speech"), 1);
  const auto start = std::find_if(timeline.items.begin(), timeline.items.end(),
                                  [](const Timeline::Item& i) { return i.what == "start-of-speech"; });
  EXPECT_EQ(start->time, GST_SECOND + GST_MSECOND * 500);
  EXPECT_EQ(std::count_if(timeline.items.begin(), start, [](const Timeline::Item& i) { return i.what == "buffer"; }),
            0)
      << "held back behind the block of its tokens";
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  EXPECT_EQ(timeline.count("start-of-speech"), 1);
}

TEST(GlmVoiceTokenize, test_start_of_speech_once_per_turn) {
  Harness t("endpoint-silence-ms=300");
  Timeline timeline;
  timeline.attach(t.h->element);
  std::vector<float> x = glmvoice::test::make_clip(16000, 45);
  x.resize(16000 + 16000, 0.0f);
  const std::vector<float> b = glmvoice::test::make_clip(16000, 46);
  x.insert(x.end(), b.begin(), b.end());
  t.push_all(x, 1600);
  ASSERT_EQ(timeline.count("start-of-speech"), 2);
  std::vector<GstClockTime> starts;
  for (const auto& i : timeline.items) {
    if (i.what == "start-of-speech") starts.push_back(i.time);
  }
  EXPECT_EQ(starts[0], 0u);
  EXPECT_EQ(starts[1], 2 * GST_SECOND);
}

TEST(GlmVoiceTokenize, test_endpointing_mutable_while_playing) {
  GParamSpec* spec = g_object_class_find_property(
      G_OBJECT_CLASS(g_type_class_peek(g_type_from_name("GstGlmVoiceTokenize"))), "endpoint-silence-ms");
  ASSERT_NE(spec, nullptr);
  EXPECT_TRUE(spec->flags & GST_PARAM_MUTABLE_PLAYING);
  Harness t;  // endpointing off
  Timeline timeline;
  timeline.attach(t.h->element);
  std::vector<float> x = glmvoice::test::make_clip(16000, 47);
  x.resize(32000, 0.0f);
  t.push_all(x, 1600);
  EXPECT_EQ(timeline.count("end-of-turn"), 0);
  g_object_set(t.element, "endpoint-silence-ms", 300u, nullptr);  // while PLAYING
  t.push_all(x, 1600, 32000);
  EXPECT_EQ(timeline.count("end-of-turn"), 1) << "the new endpoint-silence-ms did not apply";
}

TEST(GlmVoiceTokenize, test_latency_includes_measured_compute) {
  Harness t;
  const std::vector<float> x = glmvoice::test::make_clip(12801, 48);
  t.push_all(x, 12801);  // block 0 computed
  EXPECT_GT(gst_harness_query_latency(t.h), GST_MSECOND * 800);
}

TEST(GlmVoiceTokenize, test_latency_budget_property) {
  Harness t;
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(t.element, bus);
  GParamSpec* spec = g_object_class_find_property(G_OBJECT_GET_CLASS(t.element), "latency");
  ASSERT_NE(spec, nullptr);
  EXPECT_TRUE(spec->flags & GST_PARAM_MUTABLE_PLAYING);
  g_object_set(t.element, "latency", 5 * GST_SECOND, nullptr);
  GstMessage* m = gst_bus_pop_filtered(bus, GST_MESSAGE_LATENCY);
  EXPECT_NE(m, nullptr) << "a budget change posts a LATENCY message";
  if (m) gst_message_unref(m);
  EXPECT_EQ(gst_harness_query_latency(t.h), 5 * GST_SECOND);
  // a budget smaller than one block: one warning, not one per block
  g_object_set(t.element, "latency", GST_MSECOND, nullptr);
  const std::vector<float> x = glmvoice::test::make_clip(16000 * 3, 49);
  t.push_all(x, 1600);
  int warnings = 0;
  while (GstMessage* w = gst_bus_pop_filtered(bus, GST_MESSAGE_WARNING)) {
    ++warnings;
    gst_message_unref(w);
  }
  EXPECT_EQ(warnings, 1);
  gst_element_set_bus(t.element, nullptr);
  gst_object_unref(bus);
}

// The element's latency answer in a real pipeline: live source -> ours added; not live ->
// upstream's answer as is (not live).
void query_pipeline_latency(bool live, gboolean* is_live, GstClockTime* min) {
  const std::string launch = std::string("audiotestsrc is-live=") + (live ? "true" : "false") +
                             " num-buffers=40 ! audio/x-raw,format=F32LE,rate=16000,channels=1 ! glmvoicetokenize name=tok model-path=\"" +
                             model_dir() + "\" device=cpu ! fakesink sync=true";
  GstElement* pipeline = gst_parse_launch(launch.c_str(), nullptr);
  ASSERT_NE(pipeline, nullptr);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  ASSERT_NE(gst_element_get_state(pipeline, nullptr, nullptr, 60 * GST_SECOND), GST_STATE_CHANGE_FAILURE);
  // the element's own answer (a sink would say live whenever it syncs)
  GstElement* tok = gst_bin_get_by_name(GST_BIN(pipeline), "tok");
  GstPad* src = gst_element_get_static_pad(tok, "src");
  GstQuery* q = gst_query_new_latency();
  EXPECT_TRUE(gst_pad_query(src, q));
  gst_object_unref(src);
  gst_object_unref(tok);
  gst_query_parse_latency(q, is_live, min, nullptr);
  gst_query_unref(q);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

TEST(GlmVoiceTokenize, test_latency_query_live_and_not_live) {
  gboolean live = TRUE;
  GstClockTime min = 1;
  query_pipeline_latency(false, &live, &min);
  EXPECT_FALSE(live);
  EXPECT_LT(min, GST_MSECOND * 800) << "not live: upstream's answer, nothing of ours added";
  query_pipeline_latency(true, &live, &min);
  EXPECT_TRUE(live);
  EXPECT_GE(min, GST_MSECOND * 800);
}

TEST(GlmVoiceTokenize, test_model_properties_checked_when_set) {
  GstElement* e = gst_element_factory_make("glmvoicetokenize", nullptr);
  ASSERT_NE(e, nullptr);
  // dtype is an enum: a nick sets it, a bad one is refused by GObject
  gst_util_set_object_arg(G_OBJECT(e), "dtype", "bfloat16");
  gint dtype = 0;
  g_object_get(e, "dtype", &dtype, nullptr);
  EXPECT_EQ(dtype, 1);
  // device: a GLib warning when set, then the load fails naming it (no silent fallback)
  static int warned = 0;
  warned = 0;
  const guint handler = g_log_set_handler(
      nullptr, G_LOG_LEVEL_WARNING, [](const gchar*, GLogLevelFlags, const gchar* message, gpointer) {
        if (std::string(message).find("gpu0") != std::string::npos) ++warned;
      },
      nullptr);
  g_object_set(e, "device", "gpu0", "dtype", 0, "model-path", model_dir().c_str(), nullptr);
  g_log_remove_handler(nullptr, handler);
  EXPECT_EQ(warned, 1);
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_READY), GST_STATE_CHANGE_FAILURE);
  GstMessage* m = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(m, nullptr);
  GError* err = nullptr;
  gst_message_parse_error(m, &err, nullptr);
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS)) << err->message;
  EXPECT_NE(std::string(err->message).find("gpu0"), std::string::npos) << err->message;
  g_error_free(err);
  gst_message_unref(m);
  gst_element_set_state(e, GST_STATE_NULL);
  gst_element_set_bus(e, nullptr);
  gst_object_unref(bus);
  gst_object_unref(e);
}

TEST(GlmVoiceTokenize, test_nonzero_segment_and_flushing_seek) {
  // A segment starting at 10 s (base 2 s): tokens carry the input's timestamps. A flushing
  // seek to 20 s then restarts the stream there.
  Harness t;
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  segment.start = 10 * GST_SECOND;
  segment.time = 10 * GST_SECOND;
  segment.base = 2 * GST_SECOND;
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_segment(&segment)));
  const std::vector<float> x = glmvoice::test::make_clip(16000, 50);
  t.push_all(x, 1600, 160000);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_flush_start()));
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_flush_stop(TRUE)));
  t.pull_tokens();
  segment.start = segment.time = 20 * GST_SECOND;
  segment.base = 0;
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_segment(&segment)));
  t.push_all(x, 1600, 320000);
  ASSERT_TRUE(gst_harness_push_event(t.h, gst_event_new_eos()));
  const auto tokens = t.pull_tokens();
  EXPECT_EQ(ids_of(tokens), offline_ids(x)) << "nothing of before the seek";
  ASSERT_FALSE(tokens.empty());
  EXPECT_EQ(tokens[0].pts, 20 * GST_SECOND);
}

}  // namespace
