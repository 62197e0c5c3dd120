// filesrc ! decodebin ! audioconvert ! audioresample ! glmvoicetokenize ! fakesink on
// espeak-ng speech (English, and Chinese with -v cmn) through gst_parse_launch. The resampler
// differs from upstream's (spec 7.6), so the check is the token count (ceil(n / 1280) of the
// resampled length), the id range, and end-of-turn before EOS.
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "glmvoice_events.h"
#include "speech/wav_file.h"
#include "test_support.h"
#include "../elements/element_test_util.h"

namespace {

// gst_init, and the leak check at gst_deinit (GST_TRACERS=leaks).
const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

struct Seen {
  std::vector<int32_t> tokens;
  std::vector<std::string> order;  // "tokens", "end-of-turn", "eos"
};

GstPadProbeReturn on_probe(GstPad*, GstPadProbeInfo* info, gpointer data) {
  auto* seen = static_cast<Seen*>(data);
  if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_BUFFER) {
    GstBuffer* buffer = GST_PAD_PROBE_INFO_BUFFER(info);
    GstMapInfo map;
    gst_buffer_map(buffer, &map, GST_MAP_READ);
    for (gsize i = 0; i + 4 <= map.size; i += 4) {
      guint32 v;
      memcpy(&v, map.data + i, 4);
      seen->tokens.push_back(static_cast<int32_t>(GUINT32_FROM_LE(v)));
    }
    gst_buffer_unmap(buffer, &map);
    seen->order.push_back("tokens");
  } else if (GST_PAD_PROBE_INFO_TYPE(info) & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
    GstEvent* event = GST_PAD_PROBE_INFO_EVENT(info);
    if (gst_glm_voice_event_is_end_of_turn(event)) seen->order.push_back("end-of-turn");
    if (GST_EVENT_TYPE(event) == GST_EVENT_EOS) seen->order.push_back("eos");
  }
  return GST_PAD_PROBE_OK;
}

void run_speech(const std::string& voice, const std::string& text) {
  if (std::system("espeak-ng --version >/dev/null 2>&1") != 0) GTEST_SKIP() << "espeak-ng not installed: skipped";
  const std::string dir = glmvoice::test::scratch_dir("pipe-tok");
  const std::string wav = dir + "/speech.wav";
  const std::string cmd = "espeak-ng -v " + voice + " -w '" + wav + "' '" + text + "' >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const glmvoice::speech::WavData input = glmvoice::speech::read_wav(wav);
  const double n16 = static_cast<double>(input.samples.size(1)) * 16000.0 / input.sample_rate;

  const std::string model = glmvoice::test::tiny_model_dir("tokenizer", "mk-a");
  const std::string launch = "filesrc location=\"" + wav +
                             "\" ! decodebin ! audioconvert ! audioresample ! glmvoicetokenize "
                             "model-path=\"" + model + "\" device=cpu ! fakesink name=sink";
  GError* error = nullptr;
  GstElement* pipeline = gst_parse_launch(launch.c_str(), &error);
  ASSERT_EQ(error, nullptr) << error->message;
  Seen seen;
  GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "sink");
  GstPad* pad = gst_element_get_static_pad(sink, "sink");
  gst_pad_add_probe(pad, GstPadProbeType(GST_PAD_PROBE_TYPE_BUFFER | GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM),
                    on_probe, &seen, nullptr);
  gst_object_unref(pad);
  gst_object_unref(sink);
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* msg = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND,
                                               GstMessageType(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  ASSERT_NE(msg, nullptr) << "timed out";
  if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
    GError* err = nullptr;
    gst_message_parse_error(msg, &err, nullptr);
    ADD_FAILURE() << "pipeline error: " << err->message;
    g_error_free(err);
  }
  gst_message_unref(msg);
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);

  std::printf("%s: %zu tokens for %.2f s of speech\n", voice.c_str(), seen.tokens.size(), n16 / 16000.0);
  EXPECT_NEAR(static_cast<double>(seen.tokens.size()), std::ceil(n16 / 1280.0), 1.0) << voice;
  for (int32_t id : seen.tokens) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 64);  // mk-a codebook
  }
  ASSERT_GE(seen.order.size(), 3u);
  EXPECT_EQ(seen.order[seen.order.size() - 1], "eos");
  EXPECT_EQ(seen.order[seen.order.size() - 2], "end-of-turn");
  EXPECT_EQ(seen.order[seen.order.size() - 3], "tokens");
}

TEST(PipelineTokenize, test_english_speech) { run_speech("en", "Hello, this is a test of the speech tokenizer."); }

TEST(PipelineTokenize, test_chinese_speech) { run_speech("cmn", "你好，今天天气很好。"); }

}  // namespace
