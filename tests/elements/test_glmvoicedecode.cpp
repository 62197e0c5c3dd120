// GstHarness tests of glmvoicedecode on the tiny decoder from glmvoice-mkmodel (vocab 64).
// Most tests run one Euler step without CFG (n-timesteps=1 cfg-rate=0): the element logic does
// not depend on the solver, and the lib tests cover it.
#include <gst/check/gstharness.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <thread>
#include <string>
#include <vector>

#include "element_test_util.h"
#include "glmvoice_caps.h"
#include "glmvoice_events.h"
#include "test_support.h"
#include "voice/decoder_model.h"

namespace {

const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

constexpr const char* kTokenCaps = "audio/x-glm-speech-tokens, framerate=(fraction)25/2, codebook-size=(int)64";
constexpr GstClockTime kToken = GST_SECOND * 2 / 25;
constexpr const char* kFast = " n-timesteps=1 cfg-rate=0";

std::string model_dir() { return glmvoice::test::tiny_model_dir("decoder"); }

std::shared_ptr<const glmvoice::voice::DecoderModel> model() {
  static auto m = glmvoice::voice::DecoderModel::load({model_dir(), c10::Device(c10::kCPU), c10::kFloat});
  return m;
}

glmvoice::voice::StreamOptions fast_options() {
  glmvoice::voice::StreamOptions so;
  so.n_timesteps = 1;
  so.cfg_rate = 0;
  return so;
}

std::vector<int32_t> random_ids(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % 64);
  return ids;
}

// The lib's streaming result for one response (tokens pushed one by one, then finish).
std::vector<float> lib_stream(const std::vector<int32_t>& ids) {
  glmvoice::voice::DecoderState state(model(), fast_options());
  std::vector<float> out;
  auto append = [&](const at::Tensor& a) {
    out.insert(out.end(), a.data_ptr<float>(), a.data_ptr<float>() + a.numel());
  };
  for (int32_t id : ids) append(state.push(&id, 1));
  append(state.finish());
  return out;
}

struct Harness {
  GstHarness* h = nullptr;
  GstElement* dec = nullptr;  // the glmvoicedecode inside the harness bin
  GstBus* bus = nullptr;
  glmvoice::test::Recorder recorder;
  GstClockTime next_pts = 0;

  explicit Harness(const std::string& props = kFast, const char* caps = kTokenCaps) {
    const std::string launch = "glmvoicedecode name=dec model-path=\"" + model_dir() + "\" device=cpu " + props;
    h = gst_harness_new_parse(launch.c_str());
    dec = gst_bin_get_by_name(GST_BIN(h->element), "dec");
    bus = gst_bus_new();
    gst_element_set_bus(h->element, bus);
    GstPad* src = gst_element_get_static_pad(h->element, "src");
    gst_pad_add_probe(src, GstPadProbeType(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM),
                      glmvoice::test::Recorder::probe, &recorder, nullptr);
    gst_object_unref(src);
    gst_harness_set_src_caps_str(h, caps);
  }
  ~Harness() {
    // messages left on the bus hold their sources: drop them, or bin -> bus -> message -> bin
    gst_bus_set_flushing(bus, TRUE);
    gst_object_unref(dec);
    gst_harness_teardown(h);
    gst_object_unref(bus);
  }

  GstFlowReturn push(const std::vector<int32_t>& ids) {
    GstBuffer* b = gst_glm_voice_tokens_buffer_new(ids.data(), ids.size());
    GST_BUFFER_PTS(b) = next_pts;
    GST_BUFFER_DURATION(b) = ids.size() * kToken;
    next_pts += ids.size() * kToken;
    return gst_harness_push(h, b);
  }
  GstFlowReturn push_one_by_one(const std::vector<int32_t>& ids) {
    for (int32_t id : ids) {
      const GstFlowReturn r = push({id});
      if (r != GST_FLOW_OK) return r;
    }
    return GST_FLOW_OK;
  }
  // The element decodes on its own task: these wait (up to the harness's 60 s) until the
  // event has come out of it, so all audio before it is in the harness queue.
  void end_of_response(const char* reason = "stop-token") {
    gst_harness_push_event(h, gst_glm_voice_event_new_end_of_response(reason));
    EXPECT_TRUE(wait_for("end-of-response"));
  }
  void eos() {
    gst_harness_push_event(h, gst_event_new_eos());
    EXPECT_TRUE(wait_for("eos"));
  }
  // Pulls events out of the harness until one named `what` (as the Recorder names them).
  bool wait_for(const std::string& what) {
    while (GstEvent* e = gst_harness_pull_event(h)) {
      const bool hit = event_name(e) == what;
      gst_event_unref(e);
      if (hit) return true;
    }
    return false;
  }
  static std::string event_name(GstEvent* e) {
    if (gst_glm_voice_event_is_end_of_response(e)) return "end-of-response";
    if (gst_glm_voice_event_is_start_of_speech(e)) return "start-of-speech";
    return GST_EVENT_TYPE_NAME(e);
  }

  // All audio received so far (buffers pulled); `buffers` gets each one.
  std::vector<float> pull_all(std::vector<GstBuffer*>* buffers = nullptr) {
    std::vector<float> out;
    while (GstBuffer* b = gst_harness_try_pull(h)) {
      GstMapInfo map;
      gst_buffer_map(b, &map, GST_MAP_READ);
      const float* f = reinterpret_cast<const float*>(map.data);
      out.insert(out.end(), f, f + map.size / sizeof(float));
      gst_buffer_unmap(b, &map);
      if (buffers) buffers->push_back(b);
      else gst_buffer_unref(b);
    }
    return out;
  }
  GstMessage* error() { return gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR); }
};

TEST(GlmVoiceDecode, test_one_by_one_equals_all_at_once) {
  const std::vector<int32_t> ids = random_ids(60, 1);
  Harness a, b;
  ASSERT_EQ(a.push_one_by_one(ids), GST_FLOW_OK);
  a.eos();
  ASSERT_EQ(b.push(ids), GST_FLOW_OK);
  b.eos();
  const std::vector<float> xa = a.pull_all(), xb = b.pull_all();
  EXPECT_EQ(xa.size(), 35072u + (413u - 138u + 1u) * 256u);  // 25, then the final 35: mel_len(60) = 413
  EXPECT_EQ(xa, xb);
  EXPECT_EQ(xa, lib_stream(ids));
}

TEST(GlmVoiceDecode, test_end_of_response_then_second_response) {
  const std::vector<int32_t> first = random_ids(30, 2), second = random_ids(26, 3);
  Harness t;
  ASSERT_EQ(t.push_one_by_one(first), GST_FLOW_OK);
  t.end_of_response();
  const std::vector<float> x1 = t.pull_all();
  EXPECT_EQ(x1, lib_stream(first));
  ASSERT_FALSE(t.recorder.items.empty());
  EXPECT_EQ(t.recorder.items.back(), "end-of-response");
  EXPECT_EQ(t.recorder.items[t.recorder.items.size() - 2], "buffer") << "final audio before the event";
  ASSERT_EQ(t.push_one_by_one(second), GST_FLOW_OK);
  t.eos();
  EXPECT_EQ(t.pull_all(), lib_stream(second)) << "the second response starts from a fresh state";
}

TEST(GlmVoiceDecode, test_flush_drops_pending) {
  const std::vector<int32_t> dropped = random_ids(20, 4), kept = random_ids(25, 5);
  Harness t;
  ASSERT_EQ(t.push(dropped), GST_FLOW_OK);
  EXPECT_TRUE(t.pull_all().empty());
  gst_harness_push_event(t.h, gst_event_new_flush_start());
  gst_harness_push_event(t.h, gst_event_new_flush_stop(TRUE));
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  gst_harness_push_event(t.h, gst_event_new_segment(&segment));
  t.next_pts = 0;
  ASSERT_EQ(t.push(kept), GST_FLOW_OK);
  t.eos();
  const std::vector<float> x = t.pull_all();
  EXPECT_EQ(x.size(), 44032u);
  EXPECT_EQ(x, lib_stream(kept));
}

TEST(GlmVoiceDecode, test_eos_with_partial_block_emits_tail) {
  Harness t;
  ASSERT_EQ(t.push(random_ids(10, 6)), GST_FLOW_OK);
  EXPECT_TRUE(t.pull_all().empty()) << "10 tokens < first block: nothing yet";
  t.eos();
  EXPECT_EQ(t.pull_all().size(), 68u * 256u);  // mel_len(10) = 68 frames
}

TEST(GlmVoiceDecode, test_bad_token_id_refused) {
  Harness t;
  EXPECT_EQ(t.push({1, 2, 64}), GST_FLOW_ERROR);
  GstMessage* m = t.error();
  ASSERT_NE(m, nullptr);
  GError* err = nullptr;
  gchar* debug = nullptr;
  gst_message_parse_error(m, &err, &debug);
  EXPECT_TRUE(g_error_matches(err, GST_STREAM_ERROR, GST_STREAM_ERROR_DECODE)) << err->message;
  const std::string text = std::string(err->message) + " " + (debug ? debug : "");
  EXPECT_NE(text.find("64"), std::string::npos) << text;
  g_error_free(err);
  g_free(debug);
  gst_message_unref(m);
}

TEST(GlmVoiceDecode, test_caps_mismatch_refused) {
  // A codebook larger than the decoder vocabulary (64) could carry ids it cannot decode.
  const char* big = "audio/x-glm-speech-tokens, framerate=(fraction)25/2, codebook-size=(int)16384";
  Harness t(kFast, big);
  EXPECT_EQ(t.push({1, 2, 3}), GST_FLOW_NOT_NEGOTIATED);
  GstPad* sink = gst_element_get_static_pad(t.h->element, "sink");
  GstCaps* caps = gst_caps_from_string(big);
  EXPECT_FALSE(gst_pad_query_accept_caps(sink, caps));
  gst_caps_unref(caps);
  caps = gst_caps_from_string("audio/x-raw, format=(string)F32LE, rate=(int)22050, channels=(int)1");
  EXPECT_FALSE(gst_pad_query_accept_caps(sink, caps)) << "raw audio is not speech tokens";
  gst_caps_unref(caps);
  caps = gst_caps_from_string(kTokenCaps);
  EXPECT_TRUE(gst_pad_query_accept_caps(sink, caps));
  gst_caps_unref(caps);
  gst_object_unref(sink);
}

TEST(GlmVoiceDecode, test_timestamps_contiguous) {
  Harness t;
  ASSERT_EQ(t.push_one_by_one(random_ids(90, 7)), GST_FLOW_OK);
  t.eos();
  std::vector<GstBuffer*> buffers;
  const std::vector<float> x = t.pull_all(&buffers);
  ASSERT_GE(buffers.size(), 3u);
  guint64 samples = 0;
  for (size_t i = 0; i < buffers.size(); ++i) {
    GstBuffer* b = buffers[i];
    const guint64 n = gst_buffer_get_size(b) / sizeof(float);
    EXPECT_EQ(GST_BUFFER_PTS(b), gst_util_uint64_scale_int(samples, GST_SECOND, 22050)) << "buffer " << i;
    EXPECT_EQ(GST_BUFFER_PTS(b) + GST_BUFFER_DURATION(b), gst_util_uint64_scale_int(samples + n, GST_SECOND, 22050));
    EXPECT_EQ(GST_BUFFER_OFFSET(b), samples);
    EXPECT_EQ(GST_BUFFER_OFFSET_END(b), samples + n);
    EXPECT_EQ(GST_BUFFER_FLAG_IS_SET(b, GST_BUFFER_FLAG_DISCONT), i == 0);
    samples += n;
    gst_buffer_unref(b);
  }
  EXPECT_EQ(samples, x.size());
  GstCaps* caps = gst_pad_get_current_caps(t.h->sinkpad);
  ASSERT_NE(caps, nullptr);
  GstStructure* s = gst_caps_get_structure(caps, 0);
  gint rate = 0, channels = 0;
  gst_structure_get_int(s, "rate", &rate);
  gst_structure_get_int(s, "channels", &channels);
  EXPECT_EQ(rate, 22050);
  EXPECT_EQ(channels, 1);
  EXPECT_STREQ(gst_structure_get_string(s, "format"), "F32LE");
  gst_caps_unref(caps);
}

TEST(GlmVoiceDecode, test_live_response_restamped_only_when_late) {
  // The harness source answers the latency query as live and the element runs on the
  // harness test clock. A response whose tokens say 0 s and whose first audio is ready at
  // running time 5 s would be late (the sink renders at PTS + latency): it moves forward to
  // the earliest time it can still be rendered, 5 s - latency (+ 20 ms margin), not to 5 s,
  // which would make the sink wait the latency a second time. Samples then follow on.
  Harness t;
  GstQuery* q = gst_query_new_latency();
  ASSERT_TRUE(gst_pad_peer_query(t.h->srcpad, q) || gst_pad_query(t.h->srcpad, q));
  gboolean live = FALSE;
  gst_query_parse_latency(q, &live, nullptr, nullptr);
  gst_query_unref(q);
  if (!live) GTEST_SKIP() << "this GstHarness does not report a live source";
  // the latency a pipeline would configure (the harness itself sends a LATENCY event of 0)
  const GstClockTime latency = gst_harness_query_latency(t.h);
  gst_harness_push_upstream_event(t.h, gst_event_new_latency(latency));
  gst_harness_set_time(t.h, 5 * GST_SECOND);
  ASSERT_EQ(t.push_one_by_one(random_ids(30, 10)), GST_FLOW_OK);
  t.end_of_response();
  std::vector<GstBuffer*> buffers;
  t.pull_all(&buffers);
  ASSERT_EQ(buffers.size(), 2u);
  const GstClockTime pts = GST_BUFFER_PTS(buffers[0]);
  EXPECT_GE(pts + latency, 5 * GST_SECOND) << "rendered late";
  EXPECT_LE(pts + latency, 5 * GST_SECOND + 20 * GST_MSECOND + 5 * GST_MSECOND)
      << "moved further than needed: the sink waits the latency twice";
  EXPECT_EQ(GST_BUFFER_PTS(buffers[1]), GST_BUFFER_PTS(buffers[0]) + GST_BUFFER_DURATION(buffers[0]));
  for (GstBuffer* b : buffers) gst_buffer_unref(b);
}

TEST(GlmVoiceDecode, test_live_response_on_time_keeps_its_timestamps) {
  // Tokens at 3 s, first audio ready at running time 4 s: 3 s + latency (>= 2.08 s) is still
  // ahead, so the audio keeps the tokens' timeline.
  Harness t;
  gst_harness_push_upstream_event(t.h, gst_event_new_latency(gst_harness_query_latency(t.h)));
  gst_harness_set_time(t.h, 4 * GST_SECOND);
  t.next_pts = 3 * GST_SECOND;
  ASSERT_EQ(t.push_one_by_one(random_ids(30, 10)), GST_FLOW_OK);
  t.end_of_response();
  std::vector<GstBuffer*> buffers;
  t.pull_all(&buffers);
  ASSERT_FALSE(buffers.empty());
  EXPECT_EQ(GST_BUFFER_PTS(buffers[0]), 3 * GST_SECOND);
  for (GstBuffer* b : buffers) gst_buffer_unref(b);
}

TEST(GlmVoiceDecode, test_latency_query) {
  Harness t;
  // Before any block was decoded: the first block plus the one-token lag, 26 x 80 ms.
  EXPECT_EQ(gst_harness_query_latency(t.h), 26 * kToken);
  ASSERT_EQ(t.push_one_by_one(random_ids(26, 8)), GST_FLOW_OK);
  GstBuffer* first = gst_harness_pull(t.h);  // the first block is out: its compute was measured
  ASSERT_NE(first, nullptr);
  gst_buffer_unref(first);
  EXPECT_GT(gst_harness_query_latency(t.h), 26 * kToken) << "measured compute added";
  Harness small("block-sizes=10,20" + std::string(kFast));
  EXPECT_EQ(gst_harness_query_latency(small.h), 11 * kToken);
}

TEST(GlmVoiceDecode, test_properties) {
  GstElement* e = gst_element_factory_make("glmvoicedecode", nullptr);
  ASSERT_NE(e, nullptr);
  gchar* blocks = nullptr;
  guint64 seed = 0;
  gint steps = 0;
  g_object_get(e, "block-sizes", &blocks, "seed", &seed, "n-timesteps", &steps, nullptr);
  EXPECT_STREQ(blocks, "25,50,100,150,200");
  EXPECT_EQ(seed, 42u);
  EXPECT_EQ(steps, 10);
  g_free(blocks);
  g_object_set(e, "block-sizes", "10, 20", "model-path", model_dir().c_str(), "device", "cpu", nullptr);
  g_object_get(e, "block-sizes", &blocks, nullptr);
  EXPECT_STREQ(blocks, "10,20");
  g_free(blocks);
  ASSERT_EQ(gst_element_set_state(e, GST_STATE_READY), GST_STATE_CHANGE_SUCCESS);
  gdouble cfg = 0;
  g_object_get(e, "cfg-rate", &cfg, nullptr);
  EXPECT_DOUBLE_EQ(cfg, 0.7) << "reads back the config value once loaded";
  gst_element_set_state(e, GST_STATE_NULL);
  gst_object_unref(e);
}

TEST(GlmVoiceDecode, test_mode_property_switches_decoder) {
  // 40 tokens in blocks of 10: mode=reference drops a frame per call from the third (spec
  // §5.2), mode=fast gives the offline length (mel_len(40) = 275 frames x 256).
  const std::vector<int32_t> ids = random_ids(40, 9);
  const std::string blocks = std::string(kFast) + " block-sizes=10";
  Harness ref(blocks), fast(blocks + " mode=fast context-tokens=20");
  ASSERT_EQ(ref.push_one_by_one(ids), GST_FLOW_OK);
  ref.end_of_response();
  ASSERT_EQ(fast.push_one_by_one(ids), GST_FLOW_OK);
  fast.end_of_response();
  EXPECT_EQ(ref.pull_all().size(), (275u - 2u) * 256u);
  EXPECT_EQ(fast.pull_all().size(), 275u * 256u);
  // Without block-sizes, the mode picks its default schedule.
  GstElement* e = gst_element_factory_make("glmvoicedecode", nullptr);
  gchar* sizes = nullptr;
  g_object_set(e, "mode", 1, nullptr);
  gint context = 0;
  g_object_get(e, "block-sizes", &sizes, "context-tokens", &context, nullptr);
  EXPECT_STREQ(sizes, "10,25,50");
  EXPECT_EQ(context, 50);
  g_free(sizes);
  gst_object_unref(e);
}

TEST(GlmVoiceDecode, test_missing_model_posts_error) {
  GstElement* e = gst_element_factory_make("glmvoicedecode", nullptr);
  ASSERT_NE(e, nullptr);
  const std::string dir = glmvoice::test::scratch_dir("decode-missing");
  std::filesystem::copy(model_dir(), dir, std::filesystem::copy_options::recursive);
  std::filesystem::remove(dir + "/flow.pt");
  GstBus* bus = gst_bus_new();
  gst_element_set_bus(e, bus);
  g_object_set(e, "model-path", dir.c_str(), "device", "cpu", nullptr);
  EXPECT_EQ(gst_element_set_state(e, GST_STATE_READY), GST_STATE_CHANGE_FAILURE);
  GstMessage* m = gst_bus_pop_filtered(bus, GST_MESSAGE_ERROR);
  ASSERT_NE(m, nullptr);
  GError* err = nullptr;
  gchar* debug = nullptr;
  gst_message_parse_error(m, &err, &debug);
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_NOT_FOUND)) << err->message;
  const std::string text = std::string(err->message) + " " + (debug ? debug : "");
  EXPECT_NE(text.find("flow.pt"), std::string::npos) << text;
  g_error_free(err);
  g_free(debug);
  gst_message_unref(m);
  gst_element_set_state(e, GST_STATE_NULL);
  gst_element_set_bus(e, nullptr);
  gst_object_unref(bus);
  gst_object_unref(e);
}

TEST(GlmVoiceDecode, test_pipeline_writes_wav) {
  // tokens ! glmvoicedecode ! audioconvert ! wavenc ! filesink, driven through a harness on
  // the bin's ghost sink pad.
  const std::string wav = glmvoice::test::scratch_dir("decode-wav") + "/out.wav";
  const std::string launch = "glmvoicedecode model-path=\"" + model_dir() + "\" device=cpu" + std::string(kFast) +
                             " ! audioconvert ! audio/x-raw,format=S16LE ! wavenc ! filesink name=out location=\"" + wav + "\"";
  const std::vector<int32_t> ids = random_ids(40, 9);
  {
    GstHarness* h = gst_harness_new_parse(launch.c_str());
    // the decoder works on its own task: wait for EOS at the filesink before tearing down
    std::promise<void> eos_seen;
    GstElement* sink = gst_bin_get_by_name(GST_BIN(h->element), "out");
    ASSERT_NE(sink, nullptr);
    GstPad* sinkpad = gst_element_get_static_pad(sink, "sink");
    gst_pad_add_probe(sinkpad, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM,
                      [](GstPad*, GstPadProbeInfo* info, gpointer data) {
                        if (GST_EVENT_TYPE(GST_PAD_PROBE_INFO_EVENT(info)) == GST_EVENT_EOS) {
                          static_cast<std::promise<void>*>(data)->set_value();
                        }
                        return GST_PAD_PROBE_OK;
                      },
                      &eos_seen, nullptr);
    gst_object_unref(sinkpad);
    gst_object_unref(sink);
    gst_harness_set_src_caps_str(h, kTokenCaps);
    GstBuffer* b = gst_glm_voice_tokens_buffer_new(ids.data(), ids.size());
    GST_BUFFER_PTS(b) = 0;
    GST_BUFFER_DURATION(b) = ids.size() * kToken;
    EXPECT_EQ(gst_harness_push(h, b), GST_FLOW_OK);
    EXPECT_TRUE(gst_harness_push_event(h, gst_event_new_eos()));
    EXPECT_EQ(eos_seen.get_future().wait_for(std::chrono::seconds(120)), std::future_status::ready);
    gst_harness_teardown(h);
  }

  // 40 tokens: a 25-token block (one-token lag) then the final 15.
  const size_t want = lib_stream(ids).size();
  std::ifstream f(wav, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_GE(bytes.size(), 44u);
  EXPECT_EQ(std::memcmp(bytes.data(), "RIFF", 4), 0);
  EXPECT_EQ(std::memcmp(bytes.data() + 8, "WAVE", 4), 0);
  // find the data chunk
  size_t pos = 12;
  uint32_t data_size = 0;
  while (pos + 8 <= bytes.size()) {
    uint32_t size;
    std::memcpy(&size, bytes.data() + pos + 4, 4);
    if (std::memcmp(bytes.data() + pos, "data", 4) == 0) {
      data_size = size;
      break;
    }
    pos += 8 + size;
  }
  EXPECT_EQ(data_size, 2 * want) << "16-bit mono samples";
}


/* ---- GAP, barge-in, threads, segments, properties ------------------------------------------ */

// Pulls events out of the harness until one named `what`; returns their names and timestamps
// (GAP start) in order, `what` included.
std::vector<std::pair<std::string, GstClockTime>> events_until(Harness& t, const std::string& what) {
  std::vector<std::pair<std::string, GstClockTime>> out;
  while (GstEvent* e = gst_harness_pull_event(t.h)) {
    GstClockTime ts = GST_CLOCK_TIME_NONE, duration;
    if (GST_EVENT_TYPE(e) == GST_EVENT_GAP) gst_event_parse_gap(e, &ts, &duration);
    out.emplace_back(Harness::event_name(e), ts);
    gst_event_unref(e);
    if (out.back().first == what) break;
  }
  return out;
}

size_t count_named(const std::vector<std::pair<std::string, GstClockTime>>& events, const std::string& name) {
  return static_cast<size_t>(
      std::count_if(events.begin(), events.end(), [&](const auto& e) { return e.first == name; }));
}

TEST(GlmVoiceDecode, test_gap_between_responses_goes_on_in_order) {
  Harness t;
  // before any response: goes on as is
  gst_harness_push_event(t.h, gst_event_new_gap(0, GST_SECOND));
  auto events = events_until(t, "gap");
  ASSERT_EQ(events.back().first, "gap");
  EXPECT_EQ(events.back().second, 0u);
  // inside a response: dropped (the response's audio covers it)
  t.next_pts = GST_SECOND;
  ASSERT_EQ(t.push(random_ids(10, 20)), GST_FLOW_OK);
  gst_harness_push_event(t.h, gst_event_new_gap(GST_SECOND + 10 * kToken, GST_SECOND));
  ASSERT_EQ(t.push(random_ids(20, 21)), GST_FLOW_OK);
  gst_harness_push_event(t.h, gst_glm_voice_event_new_end_of_response("stop-token"));
  events = events_until(t, "end-of-response");
  EXPECT_EQ(count_named(events, "gap"), 0u) << "a GAP inside a response went on";
  std::vector<GstBuffer*> buffers;
  t.pull_all(&buffers);
  ASSERT_FALSE(buffers.empty());
  const GstClockTime audio_end = GST_BUFFER_PTS(buffers.back()) + GST_BUFFER_DURATION(buffers.back());
  for (GstBuffer* b : buffers) gst_buffer_unref(b);
  // after it: clipped so that it never starts before the audio already pushed
  gst_harness_push_event(t.h, gst_event_new_gap(GST_SECOND, 10 * GST_SECOND));
  events = events_until(t, "gap");
  ASSERT_EQ(events.back().first, "gap");
  EXPECT_EQ(events.back().second, audio_end);
  // entirely covered by audio already pushed: nothing
  gst_harness_push_event(t.h, gst_event_new_gap(GST_SECOND, GST_SECOND));
  t.eos();
}

TEST(GlmVoiceDecode, test_interrupted_response_drops_pending_tokens) {
  // 60 tokens: the first block (25, one-token lag) is decoded, 34 wait for the next block.
  // end-of-response "interrupted" (barge-in) must not decode them; the next response is fresh.
  Harness t("flush-on-interrupt=false" + std::string(kFast));
  const std::vector<int32_t> ids = random_ids(60, 22);
  ASSERT_EQ(t.push_one_by_one(ids), GST_FLOW_OK);
  GstBuffer* first = gst_harness_pull(t.h);  // the first block (the user heard it)
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(gst_buffer_get_size(first), 35072u * sizeof(float));
  gst_buffer_unref(first);
  t.end_of_response(GST_GLM_VOICE_REASON_INTERRUPTED);
  EXPECT_TRUE(t.pull_all().empty()) << "the pending tokens were decoded anyway";
  const std::vector<int32_t> next = random_ids(30, 23);
  ASSERT_EQ(t.push_one_by_one(next), GST_FLOW_OK);
  t.end_of_response();
  EXPECT_EQ(t.pull_all(), lib_stream(next)) << "the next response starts from a fresh state";
}

TEST(GlmVoiceDecode, test_interrupt_after_a_finished_response_drops_its_unplayed_tokens) {
  // A fast LLM has generated a whole answer (tokens + end-of-response) while the decoder is
  // still on its first block; then the user barges in (end-of-response "interrupted" with no
  // answer in progress). Nothing after the block being decoded may come out.
  Harness t("flush-on-interrupt=false" + std::string(kFast));
  GstPad* src = gst_element_get_static_pad(t.dec, "src");
  std::atomic<bool> blocked{false};
  const gulong probe = gst_pad_add_probe(
      src, GstPadProbeType(GST_PAD_PROBE_TYPE_BLOCK | GST_PAD_PROBE_TYPE_BUFFER),
      [](GstPad*, GstPadProbeInfo*, gpointer flag) {
        static_cast<std::atomic<bool>*>(flag)->store(true);
        return GST_PAD_PROBE_OK;  // stays blocked until removed
      },
      &blocked, nullptr);
  ASSERT_EQ(t.push_one_by_one(random_ids(60, 25)), GST_FLOW_OK);
  for (int i = 0; i < 6000 && !blocked; ++i) g_usleep(10000);
  ASSERT_TRUE(blocked) << "the first block never reached the src pad";
  // The task now holds the first block; 34 tokens and both events wait in its queue.
  gst_harness_push_event(t.h, gst_glm_voice_event_new_end_of_response("stop-token"));
  gst_harness_push_event(t.h, gst_glm_voice_event_new_end_of_response(GST_GLM_VOICE_REASON_INTERRUPTED));
  gst_pad_remove_probe(src, probe);
  gst_object_unref(src);
  EXPECT_TRUE(t.wait_for("end-of-response"));  // the finished response's
  EXPECT_TRUE(t.wait_for("end-of-response"));  // the interrupt's
  const std::vector<float> audio = t.pull_all();
  EXPECT_EQ(audio.size(), 35072u) << "only the first block (already decoded) may be heard";
}

TEST(GlmVoiceDecode, test_interrupt_flushes_audio_downstream) {
  Harness t;  // flush-on-interrupt=true by default
  ASSERT_EQ(t.push_one_by_one(random_ids(40, 24)), GST_FLOW_OK);
  GstBuffer* first = gst_harness_pull(t.h);
  ASSERT_NE(first, nullptr);
  gst_buffer_unref(first);
  gst_harness_push_event(t.h, gst_glm_voice_event_new_end_of_response(GST_GLM_VOICE_REASON_INTERRUPTED));
  const auto events = events_until(t, "end-of-response");
  std::vector<std::string> names;
  for (const auto& e : events) names.push_back(e.first);
  const auto at = [&](const char* n) { return std::find(names.begin(), names.end(), n) - names.begin(); };
  ASSERT_LT(at("flush-start"), static_cast<long>(names.size())) << "no flush downstream";
  EXPECT_LT(at("flush-start"), at("flush-stop"));
  EXPECT_LT(at("flush-stop"), at("end-of-response"));
  EXPECT_TRUE(t.pull_all().empty()) << "audio of the interrupted response after the interrupt";
  // the stream goes on: segment again, then the next response
  ASSERT_EQ(t.push_one_by_one(random_ids(26, 25)), GST_FLOW_OK);
  t.end_of_response();
  EXPECT_FALSE(t.pull_all().empty());
}

TEST(GlmVoiceDecode, test_upstream_never_waits_for_a_block) {
  // Downstream blocks (a sink waiting for its clock): the decoding task is stuck pushing the
  // first block, yet upstream (the LLM) can still push all its tokens at once.
  Harness t;
  GstPad* src = gst_element_get_static_pad(t.dec, "src");
  const gulong probe = gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BLOCK_DOWNSTREAM,
                                         [](GstPad*, GstPadProbeInfo*, gpointer) { return GST_PAD_PROBE_OK; },
                                         nullptr, nullptr);
  std::promise<GstFlowReturn> pushed;
  const std::vector<int32_t> ids = random_ids(200, 26);
  std::thread upstream([&] { pushed.set_value(t.push_one_by_one(ids)); });
  auto result = pushed.get_future();
  const bool done = result.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  EXPECT_TRUE(done) << "upstream waited for the decoder";
  gst_pad_remove_probe(src, probe);
  upstream.join();
  if (done) {
    EXPECT_EQ(result.get(), GST_FLOW_OK);
  }
  gst_object_unref(src);
  t.eos();
  EXPECT_EQ(t.pull_all(), lib_stream(ids));
}

TEST(GlmVoiceDecode, test_flush_stop_restarts_task_only_on_active_pad) {
  Harness t;
  GstPad* src = gst_element_get_static_pad(t.dec, "src");
  ASSERT_NE(GST_PAD_TASK(src), nullptr);
  // a PAUSED->READY deactivated the src pad while a flush was going on upstream
  ASSERT_TRUE(gst_pad_set_active(src, FALSE));
  ASSERT_EQ(GST_PAD_TASK(src), nullptr);
  gst_harness_push_event(t.h, gst_event_new_flush_start());
  gst_harness_push_event(t.h, gst_event_new_flush_stop(TRUE));
  EXPECT_EQ(GST_PAD_TASK(src), nullptr) << "FLUSH_STOP started a task on an inactive pad";
  gst_pad_set_active(src, TRUE);
  gst_object_unref(src);
}

TEST(GlmVoiceDecode, test_block_sizes_change_while_playing) {
  GParamSpec* spec = g_object_class_find_property(
      G_OBJECT_CLASS(g_type_class_peek(g_type_from_name("GstGlmVoiceDecode"))), "block-sizes");
  ASSERT_NE(spec, nullptr);
  EXPECT_TRUE(spec->flags & GST_PARAM_MUTABLE_PLAYING);
  Harness t;
  ASSERT_EQ(t.push_one_by_one(random_ids(12, 27)), GST_FLOW_OK);
  g_object_set(t.dec, "block-sizes", "10", nullptr);  // applies from the next response
  EXPECT_EQ(gst_harness_query_latency(t.h), 11 * kToken) << "the latency follows the first block";
  ASSERT_EQ(t.push_one_by_one(random_ids(14, 28)), GST_FLOW_OK);
  t.end_of_response();
  t.pull_all();
  ASSERT_EQ(t.push_one_by_one(random_ids(11, 29)), GST_FLOW_OK);
  GstBuffer* b = gst_harness_pull(t.h);  // 10 tokens + the lag: a block
  ASSERT_NE(b, nullptr);
  gst_buffer_unref(b);
  t.eos();
}

TEST(GlmVoiceDecode, test_bad_block_sizes_is_an_error) {
  Harness t;
  ASSERT_EQ(t.push_one_by_one(random_ids(5, 30)), GST_FLOW_OK);
  g_object_set(t.dec, "block-sizes", "10,zero", nullptr);
  gchar* blocks = nullptr;
  g_object_get(t.dec, "block-sizes", &blocks, nullptr);
  EXPECT_STREQ(blocks, "25,50,100,150,200") << "the bad value replaced the schedule";
  g_free(blocks);
  gst_harness_push_event(t.h, gst_glm_voice_event_new_end_of_response("stop-token"));
  GstMessage* m = nullptr;
  for (int i = 0; i < 600 && !m; ++i) {
    m = t.error();
    if (!m) g_usleep(100000);
  }
  ASSERT_NE(m, nullptr) << "no error for a bad block-sizes";
  GError* err = nullptr;
  gst_message_parse_error(m, &err, nullptr);
  EXPECT_TRUE(g_error_matches(err, GST_RESOURCE_ERROR, GST_RESOURCE_ERROR_SETTINGS)) << err->message;
  EXPECT_NE(std::string(err->message).find("block-sizes"), std::string::npos) << err->message;
  EXPECT_NE(std::string(err->message).find("zero"), std::string::npos) << err->message;
  g_error_free(err);
  gst_message_unref(m);
}

TEST(GlmVoiceDecode, test_nonzero_segment_and_flushing_seek) {
  Harness t;
  GstSegment segment;
  gst_segment_init(&segment, GST_FORMAT_TIME);
  segment.start = segment.time = 10 * GST_SECOND;
  segment.base = 3 * GST_SECOND;
  gst_harness_push_event(t.h, gst_event_new_segment(&segment));
  t.next_pts = 10 * GST_SECOND;
  ASSERT_EQ(t.push(random_ids(30, 31)), GST_FLOW_OK);
  gst_harness_push_event(t.h, gst_event_new_flush_start());
  gst_harness_push_event(t.h, gst_event_new_flush_stop(TRUE));
  t.pull_all();
  segment.start = segment.time = 20 * GST_SECOND;
  segment.base = 0;
  gst_harness_push_event(t.h, gst_event_new_segment(&segment));
  t.next_pts = 20 * GST_SECOND;
  const std::vector<int32_t> ids = random_ids(30, 32);
  ASSERT_EQ(t.push(ids), GST_FLOW_OK);
  t.eos();
  std::vector<GstBuffer*> buffers;
  EXPECT_EQ(t.pull_all(&buffers), lib_stream(ids)) << "nothing of before the seek";
  ASSERT_FALSE(buffers.empty());
  EXPECT_EQ(GST_BUFFER_PTS(buffers[0]), 20 * GST_SECOND);
  for (GstBuffer* b : buffers) gst_buffer_unref(b);
}

/* ---- live pipelines on the real clock ------------------------------------------------------ */

// appsrc (live token source) ! glmvoicedecode ! fakesink sync=true: records when each audio
// buffer is rendered (running time of the handoff).
struct LivePipeline {
  GstElement* pipeline = nullptr;
  GstElement* src = nullptr;
  GstElement* dec = nullptr;
  std::mutex mutex;
  std::vector<GstClockTime> rendered;  // running times

  explicit LivePipeline(const std::string& props) {
    const std::string launch = std::string("appsrc name=src is-live=true format=time caps=\"") + kTokenCaps +
                               "\" ! glmvoicedecode name=dec model-path=\"" + model_dir() + "\" device=cpu " + props +
                               " ! fakesink name=sink sync=true signal-handoffs=true";
    pipeline = gst_parse_launch(launch.c_str(), nullptr);
    src = gst_bin_get_by_name(GST_BIN(pipeline), "src");
    dec = gst_bin_get_by_name(GST_BIN(pipeline), "dec");
    GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
    g_signal_connect(sink, "handoff", G_CALLBACK(+[](GstElement*, GstBuffer*, GstPad*, gpointer data) {
                       auto* self = static_cast<LivePipeline*>(data);
                       const GstClockTime now = self->running_time();
                       std::lock_guard<std::mutex> lock(self->mutex);
                       self->rendered.push_back(now);
                     }),
                     this);
    gst_object_unref(sink);
    // Live: the sink completes its state change only with the first audio; the clock runs
    // as soon as the pipeline has one.
    gst_element_set_state(pipeline, GST_STATE_PLAYING);
    for (int i = 0; i < 1000 && !has_clock(); ++i) g_usleep(10000);
  }
  bool has_clock() {
    GstClock* clock = gst_element_get_clock(pipeline);
    if (clock) gst_object_unref(clock);
    return clock != nullptr;
  }
  ~LivePipeline() {
    gst_element_set_state(pipeline, GST_STATE_NULL);
    gst_object_unref(src);
    gst_object_unref(dec);
    gst_object_unref(pipeline);
  }
  GstClockTime running_time() {
    GstClock* clock = gst_element_get_clock(pipeline);
    if (!clock) return 0;
    const GstClockTime now = gst_clock_get_time(clock);
    gst_object_unref(clock);
    return now - gst_element_get_base_time(pipeline);
  }
  void push(const std::vector<int32_t>& ids, GstClockTime pts) {
    GstBuffer* b = gst_glm_voice_tokens_buffer_new(ids.data(), ids.size());
    GST_BUFFER_PTS(b) = pts;
    GST_BUFFER_DURATION(b) = ids.size() * kToken;
    GstFlowReturn ret;
    g_signal_emit_by_name(src, "push-buffer", b, &ret);
    gst_buffer_unref(b);
  }
  std::vector<GstClockTime> renders() {
    std::lock_guard<std::mutex> lock(mutex);
    return rendered;
  }
  GstClockTime latency() {
    GstQuery* q = gst_query_new_latency();
    GstClockTime min = 0;
    if (gst_element_query(pipeline, q)) gst_query_parse_latency(q, nullptr, &min, nullptr);
    gst_query_unref(q);
    return min;
  }
};

TEST(GlmVoiceDecode, test_live_first_audio_not_delayed_twice) {
  // Tokens captured in real time (one per 80 ms, stamped with the running time, like a live
  // tokenizer's). The first audio must be rendered by capture time + reported latency + one
  // block, not re-stamped to "now" and then delayed by the latency again.
  constexpr int kBlock = 10;
  LivePipeline p("block-sizes=" + std::to_string(kBlock) + kFast);
  const std::vector<int32_t> ids = random_ids(40, 33);
  const GstClockTime capture = p.running_time();
  for (size_t i = 0; i < ids.size(); ++i) {
    const GstClockTime due = capture + i * kToken;
    while (p.running_time() < due) g_usleep(2000);
    p.push({ids[i]}, due);
  }
  for (int i = 0; i < 300 && p.renders().empty(); ++i) g_usleep(10000);
  const auto renders = p.renders();
  ASSERT_FALSE(renders.empty()) << "nothing rendered";
  const GstClockTime latency = p.latency();
  std::printf("first audio rendered %" G_GUINT64_FORMAT " ms after capture; latency %" G_GUINT64_FORMAT
              " ms; bound %" G_GUINT64_FORMAT " ms\n",
              GST_TIME_AS_MSECONDS(renders[0] - capture), GST_TIME_AS_MSECONDS(latency),
              GST_TIME_AS_MSECONDS(latency + kBlock * kToken));
  EXPECT_LE(renders[0], capture + latency + kBlock * kToken)
      << "first audio rendered " << GST_TIME_AS_MSECONDS(renders[0] - capture) << " ms after capture; latency "
      << GST_TIME_AS_MSECONDS(latency) << " ms";
}

TEST(GlmVoiceDecode, test_barge_in_stops_the_speaker_within_one_block) {
  // An answer much longer than a block is playing; the user starts speaking and the LLM
  // (barge-in=true) sends end-of-response "interrupted". Nothing more may be rendered after
  // one decoder block from then.
  constexpr int kBlock = 10;
  LivePipeline p("block-sizes=" + std::to_string(kBlock) + kFast);
  const GstClockTime start = p.running_time();
  p.push(random_ids(150, 34), start);  // 12 s of answer at once, as a fast LLM makes it
  for (int i = 0; i < 600 && p.renders().size() < 2; ++i) g_usleep(10000);
  ASSERT_GE(p.renders().size(), 2u) << "the answer never played";
  const GstClockTime interrupted = p.running_time();
  GstPad* sink = gst_element_get_static_pad(p.dec, "sink");
  EXPECT_TRUE(gst_pad_send_event(sink, gst_glm_voice_event_new_end_of_response(GST_GLM_VOICE_REASON_INTERRUPTED)));
  gst_object_unref(sink);
  g_usleep(2 * G_USEC_PER_SEC);
  const auto renders = p.renders();
  const GstClockTime last = renders.back();
  std::printf("last audio rendered %" G_GINT64_FORMAT " ms after the interrupt (%zu buffers)\n",
              GST_TIME_AS_MSECONDS(GST_CLOCK_DIFF(interrupted, last)), renders.size());
  EXPECT_LE(last, interrupted + kBlock * kToken)
      << "audio rendered " << GST_TIME_AS_MSECONDS(last - interrupted) << " ms after the interrupt";
}
}  // namespace
