// filesrc ! decodebin ! audioconvert ! audioresample ! glmvoicetokenize ! fakesink on
// espeak-ng speech (English, and Chinese with -v cmn) through gst_parse_launch; the tokens
// must equal the offline tokenizer on the same resampled audio up to the resampler
// difference, so the check here is the count (ceil(n / 1280)) and the id range.
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "pipeline_runner.h"
#include "speech/tokenizer_model.h"
#include "test_support.h"

namespace {

class GstEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { gst_init(nullptr, nullptr); }
};
const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new GstEnvironment);

void run_speech(const std::string& voice, const std::string& text) {
  if (!glmvoice::test::have_program("espeak-ng")) GTEST_SKIP() << "espeak-ng not installed: skipped";
  const std::string dir = glmvoice::test::scratch_dir("pipe-tok");
  const std::string wav = dir + "/speech.wav";
  ASSERT_TRUE(glmvoice::test::make_speech_wav(wav, voice, text));
  int rate = 0, channels = 0;
  const int64_t n_in = glmvoice::test::wav_samples(wav, &rate, &channels);
  ASSERT_GT(n_in, 0);
  const std::string model = glmvoice::test::tiny_model_dir("tokenizer", "mk-a");
  glmvoice::test::PipelineResult result;
  glmvoice::test::run_pipeline("filesrc location=\"" + wav +
                                   "\" ! decodebin ! audioconvert ! audioresample ! glmvoicetokenize "
                                   "model-path=\"" + model + "\" device=cpu ! fakesink name=sink",
                               60.0, result, "sink.sink");
  ASSERT_TRUE(result.errors.empty()) << result.errors[0];
  ASSERT_TRUE(result.reached_eos);
  // audioresample keeps the duration: n16 = ceil(n_in * 16000 / rate) (+-1)
  const double n16 = static_cast<double>(n_in) * 16000.0 / rate;
  const double expected = std::ceil(n16 / 1280.0);
  std::printf("%s: %zu tokens for %.2f s of speech\n", voice.c_str(), result.probed_tokens.size(), n16 / 16000.0);
  EXPECT_NEAR(static_cast<double>(result.probed_tokens.size()), expected, 1.0) << voice;
  for (int32_t id : result.probed_tokens) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, 64);  // mk-a codebook
  }
}

TEST(PipelineTokenize, test_english_speech) { run_speech("en", "Hello, this is a test of the speech tokenizer."); }

TEST(PipelineTokenize, test_chinese_speech) { run_speech("cmn", "你好，今天天气很好。"); }

}  // namespace
