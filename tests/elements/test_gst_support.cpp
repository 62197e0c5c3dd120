// Tests of gst/: token caps, the custom event trios and the shared model cache.
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "element_test_util.h"
#include "glmvoice_caps.h"
#include "glmvoice_events.h"
#include "glmvoice_model_cache.h"
#include "io/error.h"

namespace {

const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

TEST(Caps, test_tokens_caps_round_trip) {
  GstCaps* caps = gst_glm_voice_tokens_caps_new(16384);
  gint size = 0;
  EXPECT_TRUE(gst_glm_voice_tokens_caps_parse(caps, &size));
  EXPECT_EQ(size, 16384);
  GstCaps* templ = gst_caps_from_string(GST_GLM_VOICE_TOKENS_CAPS_TEMPLATE);
  EXPECT_TRUE(gst_caps_can_intersect(caps, templ));
  gst_caps_unref(templ);
  gst_caps_unref(caps);
}

TEST(Caps, test_tokens_caps_parse_rejects_other_caps) {
  GstCaps* caps = gst_caps_from_string("audio/x-raw, rate=16000");
  EXPECT_FALSE(gst_glm_voice_tokens_caps_parse(caps, nullptr));
  gst_caps_unref(caps);
  caps = gst_caps_from_string(GST_GLM_VOICE_TOKENS_MEDIA_TYPE ", codebook-size=(int)[1, 5]");
  EXPECT_FALSE(gst_glm_voice_tokens_caps_parse(caps, nullptr));  // not fixed
  gst_caps_unref(caps);
}

TEST(Caps, test_tokens_buffer_is_little_endian_int32) {
  const gint32 tokens[] = {0, 1, 16383, -1};
  GstBuffer* buffer = gst_glm_voice_tokens_buffer_new(tokens, 4);
  ASSERT_EQ(gst_buffer_get_size(buffer), 16u);
  guint8 bytes[16];
  gst_buffer_extract(buffer, 0, bytes, 16);
  EXPECT_EQ(bytes[8], 0xff);
  EXPECT_EQ(bytes[9], 0x3f);
  EXPECT_EQ(bytes[4], 1);
  gst_buffer_unref(buffer);
}

TEST(Caps, test_read_tokens_round_trip_and_ragged) {
  const gint32 tokens[] = {5, 16383, 0};
  GstBuffer* buffer = gst_glm_voice_tokens_buffer_new(tokens, 3);
  std::vector<int32_t> read;
  EXPECT_EQ(glmvoice::gst::read_tokens(buffer, read), glmvoice::gst::TokenRead::kOk);
  EXPECT_EQ(read, (std::vector<int32_t>{5, 16383, 0}));
  gst_buffer_unref(buffer);
  GstBuffer* ragged = gst_buffer_new_allocate(nullptr, 7, nullptr);
  EXPECT_EQ(glmvoice::gst::read_tokens(ragged, read), glmvoice::gst::TokenRead::kRagged);
  EXPECT_TRUE(read.empty());
  gst_buffer_unref(ragged);
}

TEST(Events, test_end_of_turn_trio) {
  GstEvent* event = gst_glm_voice_event_new_end_of_turn();
  EXPECT_TRUE(GST_EVENT_IS_SERIALIZED(event));
  EXPECT_TRUE(gst_glm_voice_event_is_end_of_turn(event));
  EXPECT_FALSE(gst_glm_voice_event_is_end_of_response(event));
  gst_event_unref(event);
  GstEvent* eos = gst_event_new_eos();
  EXPECT_FALSE(gst_glm_voice_event_is_end_of_turn(eos));
  gst_event_unref(eos);
}

TEST(Events, test_end_of_response_carries_reason) {
  GstEvent* event = gst_glm_voice_event_new_end_of_response("max-new-tokens");
  const gchar* reason = nullptr;
  EXPECT_TRUE(gst_glm_voice_event_parse_end_of_response(event, &reason));
  EXPECT_STREQ(reason, "max-new-tokens");
  EXPECT_FALSE(gst_glm_voice_event_is_end_of_turn(event));
  gst_event_unref(event);
}

TEST(Events, test_start_of_speech_trio) {
  GstEvent* event = gst_glm_voice_event_new_start_of_speech(3 * GST_SECOND);
  EXPECT_TRUE(GST_EVENT_IS_SERIALIZED(event));
  EXPECT_TRUE(GST_EVENT_IS_DOWNSTREAM(event));
  EXPECT_TRUE(gst_glm_voice_event_is_start_of_speech(event));
  EXPECT_FALSE(gst_glm_voice_event_is_end_of_turn(event));
  EXPECT_FALSE(gst_glm_voice_event_is_end_of_response(event));
  GstClockTime t = 0;
  EXPECT_TRUE(gst_glm_voice_event_parse_start_of_speech(event, &t));
  EXPECT_EQ(t, 3 * GST_SECOND);
  gst_event_unref(event);
  event = gst_glm_voice_event_new_start_of_speech(GST_CLOCK_TIME_NONE);
  EXPECT_TRUE(gst_glm_voice_event_parse_start_of_speech(event, &t));
  EXPECT_EQ(t, GST_CLOCK_TIME_NONE);
  gst_event_unref(event);
  GstEvent* eot = gst_glm_voice_event_new_end_of_turn();
  EXPECT_FALSE(gst_glm_voice_event_parse_start_of_speech(eot, &t));
  gst_event_unref(eot);
}

glmvoice::ModelOptions options_for(const std::string& path) {
  glmvoice::ModelOptions options;
  options.path = path;
  return options;
}

TEST(ModelCache, test_same_key_loads_once_and_releases_with_last_user) {
  auto options = options_for("/cache-test/a");
  int loads = 0;
  auto loader = [&]() -> std::shared_ptr<const int> { ++loads; return std::make_shared<const int>(7); };
  auto first = glmvoice::gst::model_cache_get<int>("test", options, loader);
  auto second = glmvoice::gst::model_cache_get<int>("test", options, loader);
  EXPECT_EQ(first.get(), second.get());
  EXPECT_EQ(loads, 1);
  EXPECT_EQ(glmvoice::gst::model_cache_load_count("test", options), 1);
  first.reset();
  second.reset();
  auto third = glmvoice::gst::model_cache_get<int>("test", options, loader);
  EXPECT_EQ(loads, 2);  // the last user went away, so the model was released
}

TEST(ModelCache, test_other_dtype_is_another_model) {
  auto a = options_for("/cache-test/b");
  auto b = a;
  b.dtype = c10::kBFloat16;
  auto loader = [] { return std::make_shared<const int>(1); };
  auto ma = glmvoice::gst::model_cache_get<int>("test", a, std::function<std::shared_ptr<const int>()>(loader));
  auto mb = glmvoice::gst::model_cache_get<int>("test", b, std::function<std::shared_ptr<const int>()>(loader));
  EXPECT_NE(ma.get(), mb.get());
}

TEST(ModelCache, test_failed_load_propagates_and_caches_nothing) {
  auto options = options_for("/cache-test/c");
  std::function<std::shared_ptr<const int>()> failing = []() -> std::shared_ptr<const int> {
    throw glmvoice::Error(glmvoice::ErrorCode::kNotFound, "/cache-test/c", "config.json", "missing");
  };
  EXPECT_THROW(glmvoice::gst::model_cache_get<int>("test", options, failing), glmvoice::Error);
  EXPECT_EQ(glmvoice::gst::model_cache_load_count("test", options), 0);
}

TEST(ModelCache, test_concurrent_users_share_one_load) {
  auto options = options_for("/cache-test/d");
  std::atomic<int> loads{0};
  std::function<std::shared_ptr<const int>()> slow = [&] {
    ++loads;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return std::make_shared<const int>(3);
  };
  std::vector<std::shared_ptr<const int>> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { got[i] = glmvoice::gst::model_cache_get<int>("test", options, slow); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(loads.load(), 1);
  for (auto& m : got) EXPECT_EQ(m.get(), got[0].get());
}

}  // namespace
