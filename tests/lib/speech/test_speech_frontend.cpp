// Whisper log-mel front end (spec tokenizer.md §4.4, §4.5 golden values) and the WAV reader.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "io/npy.h"
#include "speech/endpointer.h"
#include "speech/log_mel.h"
#include "speech/tokenizer_model.h"
#include "io/error.h"
#include "speech/wav_file.h"
#include "test_support.h"

namespace glmvoice::speech {
namespace {

at::Tensor filters_f32() { return mel_filterbank(128, 400, 16000).to(at::kFloat); }

TEST(SpeechFrontend, test_filterbank_golden_values) {
  const at::Tensor w = filters_f32();
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{128, 201}));
  auto a = w.accessor<float, 2>();
  EXPECT_NEAR(w.to(at::kDouble).sum().item<double>(), 3.19098551981, 1e-9);
  EXPECT_NEAR(w.max().item<double>(), 0.04168175, 1e-8);
  EXPECT_EQ(a[11][7], w.max().item<float>());
  EXPECT_EQ(w.ne(0).sum().item<int64_t>(), 394);
  EXPECT_EQ(w.select(1, 0).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(w.select(1, 200).abs().sum().item<double>(), 0.0);
  EXPECT_NEAR(a[0][1], 0.012373987, 1e-9);
  EXPECT_EQ(w[0].ne(0).sum().item<int64_t>(), 1);
  EXPECT_NEAR(a[1][1], 0.030392565, 1e-9);
  EXPECT_NEAR(a[2][2], 0.024747973, 1e-9);
  EXPECT_NEAR(a[10][6], 0.011289184, 1e-9);
  EXPECT_NEAR(a[10][7], 0.001084802, 1e-9);
  EXPECT_NEAR(a[40][24], 0.040376365, 1e-9);
  const double row127[] = {0.00047569509, 0.0016171717, 0.0027586485, 0.0039001252, 0.0050416016,
                           0.0044571208,  0.0033428406, 0.0022285604, 0.0011142802};
  for (int k = 0; k < 9; ++k) EXPECT_NEAR(a[127][191 + k], row127[k], 1e-9) << "k=" << 191 + k;
}

TEST(SpeechFrontend, test_filterbank_matches_fixture) {
  GLMVOICE_REQUIRE_FIXTURES();
  const at::Tensor ref = io::read_npy(test::fixtures_dir() + "/common/mel_filters.npy");  // [201, 128]
  const double err = (filters_f32().t() - ref).abs().max().item<double>();
  std::printf("mel filterbank vs fixture: max abs err %.3g\n", err);
  EXPECT_LT(err, 1e-8);
}

at::Tensor features_of(const at::Tensor& x) {
  const int64_t n = x.size(0);
  const int64_t L = (n + 1279) / 1280 * 1280;
  const at::Tensor padded = at::cat({x, at::zeros({L - n})});
  const at::Tensor lg = log_mel_raw(padded, filters_f32(), 400, 160);
  return log_mel_normalize(lg, lg.max().item<double>());
}

TEST(SpeechFrontend, test_fe1_silence) {
  const at::Tensor f = features_of(at::zeros({1280}));
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{128, 8}));
  EXPECT_EQ(f.min().item<float>(), -1.5f);
  EXPECT_EQ(f.max().item<float>(), -1.5f);
}

TEST(SpeechFrontend, test_fe2_sine_golden_values) {
  const at::Tensor m = at::arange(16000, at::kDouble);
  const at::Tensor x = (0.5 * at::sin(2 * M_PI * 440 * m / 16000)).to(at::kFloat);
  const at::Tensor f = features_of(x);
  ASSERT_EQ(f.sizes(), (std::vector<int64_t>{128, 104}));
  auto a = f.accessor<float, 2>();
  const double tol = 1e-4;
  EXPECT_NEAR(a[18][50], 1.485354, tol);
  EXPECT_NEAR(a[17][50], 1.337491, tol);
  EXPECT_NEAR(a[19][50], 1.275244, tol);
  EXPECT_NEAR(a[0][0], 0.907520, tol);
  EXPECT_NEAR(a[18][0], 0.714360, tol);
  EXPECT_NEAR(a[18][1], 1.482614, tol);
  EXPECT_NEAR(a[18][99], 1.483988, tol);
  EXPECT_NEAR(a[18][100], 1.334929, tol);
  EXPECT_NEAR(a[18][101], 0.389036, tol);
  EXPECT_NEAR(a[18][102], -0.514646, tol);
  EXPECT_NEAR(a[40][50], -0.514646, tol);
  EXPECT_NEAR(a[20][0], 1.330299, tol);
  EXPECT_NEAR(a[20][50], 1.287393, tol);
  EXPECT_NEAR(f.min().item<double>(), -0.5146459, tol);
  EXPECT_NEAR(f.max().item<double>(), 1.4853541, tol);
  EXPECT_NEAR(f.to(at::kDouble).mean().item<double>(), -0.4172226, tol);
}

TEST(SpeechFrontend, test_reflect_slice) {
  const at::Tensor x = at::arange(10, at::kFloat);
  // xp[-3..-1] = x[3], x[2], x[1]; xp[10..12] = x[8], x[7], x[6]
  const at::Tensor left = reflect_slice(x, 10, -3, 2);
  EXPECT_TRUE(at::equal(left, at::tensor({3.f, 2.f, 1.f, 0.f, 1.f})));
  const at::Tensor right = reflect_slice(x, 10, 8, 13);
  EXPECT_TRUE(at::equal(right, at::tensor({8.f, 9.f, 8.f, 7.f, 6.f})));
  const at::Tensor inner = reflect_slice(x, 10, -2, -1);
  EXPECT_TRUE(at::equal(inner, at::tensor({2.f})));
  const at::Tensor outer = reflect_slice(x, 10, 11, 12);
  EXPECT_TRUE(at::equal(outer, at::tensor({7.f})));
}

void write_wav16(const std::string& path, const std::vector<int16_t>& samples, int rate, int channels) {
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  const uint32_t bytes = samples.size() * 2;
  out.write("RIFF", 4);
  u32(36 + bytes);
  out.write("WAVEfmt ", 8);
  u32(16);
  u16(1);
  u16(channels);
  u32(rate);
  u32(rate * channels * 2);
  u16(channels * 2);
  u16(16);
  out.write("data", 4);
  u32(bytes);
  out.write(reinterpret_cast<const char*>(samples.data()), bytes);
}

TEST(SpeechFrontend, test_wav_reader) {
  const std::string dir = test::scratch_dir("wav");
  write_wav16(dir + "/a.wav", {0, 16384, -32768, 100, 32767, -1}, 16000, 2);
  const WavData wav = read_wav(dir + "/a.wav");
  EXPECT_EQ(wav.sample_rate, 16000);
  ASSERT_EQ(wav.samples.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(wav.samples[0][1].item<float>(), -1.0f);
  EXPECT_EQ(wav.samples[1][0].item<float>(), 0.5f);
  const at::Tensor mono = read_wav_mono16k(dir + "/a.wav");  // channel 0, like upstream
  EXPECT_TRUE(at::equal(mono, at::tensor({0.0f, -1.0f, 32767.0f / 32768.0f})));
  // Other rates are resampled to 16 kHz like upstream (test_speech_resample.cpp checks values).
  write_wav16(dir + "/b.wav", std::vector<int16_t>(2205, 1000), 22050, 1);
  EXPECT_EQ(read_wav_mono16k(dir + "/b.wav").size(0), 1600);  // ceil(2205 * 320 / 441)
  write_wav16(dir + "/c.wav", {}, 0, 1);
  EXPECT_THROW(read_wav_mono16k(dir + "/c.wav"), std::exception);
  EXPECT_THROW(read_wav(dir + "/missing.wav"), std::exception);
}

// Found by fuzz_wav (tests/fuzz/corpus/wav/regression_chunk_size_wraps.wav): a chunk of size
// 0xFFFFFFF8 made the chunk walk's 32-bit step 8 + size wrap to 0, an endless loop.
TEST(SpeechFrontend, test_wav_chunk_size_near_4g_ends) {
  std::string f = std::string("RIFF") + std::string("\x40\0\0\0", 4) + "WAVE";
  f += std::string("fmt ") + std::string("\x10\0\0\0", 4);
  f += std::string("\x01\0\x01\0\x80\x3e\0\0\0\x7d\0\0\x02\0\x10\0", 16);  // PCM mono 16 kHz 16 bit
  f += std::string("LIST") + std::string("\xf8\xff\xff\xff", 4) + std::string(8, '\0');
  const auto* data = reinterpret_cast<const uint8_t*>(f.data());
  try {
    parse_wav(data, f.size(), "wrap.wav");
    ADD_FAILURE() << "a file without a data chunk was accepted";
  } catch (const glmvoice::Error& e) {
    EXPECT_NE(std::string(e.what()).find("data"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace glmvoice::speech

namespace glmvoice::speech {
namespace {

TEST(SpeechEndpointer, test_fires_after_trailing_silence_once) {
  SilenceEndpointer ep(-50.0, 300, 16000);  // 30 silent 10 ms frames
  std::vector<float> loud(1600, 0.1f), silence(16000, 0.0f);
  EXPECT_EQ(ep.push(silence.data(), 8000), -1) << "silence before speech never ends a turn";
  EXPECT_EQ(ep.push(loud.data(), 1600), -1);
  EXPECT_TRUE(ep.in_speech());
  // fires exactly when the 30th silent frame completes: 4800 samples into the silence
  EXPECT_EQ(ep.push(silence.data(), 16000), 4800);
  EXPECT_FALSE(ep.in_speech());
  EXPECT_EQ(ep.push(silence.data(), 16000), -1) << "re-arms only after speech";
  EXPECT_EQ(ep.push(loud.data(), 1600), -1);
  EXPECT_EQ(ep.push(silence.data(), 4000), -1);
  EXPECT_EQ(ep.push(silence.data(), 4000), 800);  // 4000 + 800 = 4800
}

TEST(SpeechEndpointer, test_threshold_and_reset) {
  SilenceEndpointer ep(-30.0, 100, 16000);
  std::vector<float> quiet(3200, 0.01f);  // -40 dBFS: silent at -30 dB
  std::vector<float> loud(160, 0.5f);
  EXPECT_EQ(ep.push(loud.data(), 160), -1);
  EXPECT_EQ(ep.push(quiet.data(), 3200), 1600);
  ep.reset();
  EXPECT_FALSE(ep.in_speech());
  EXPECT_EQ(ep.push(quiet.data(), 3200), -1);
}

TEST(SpeechEndpointer, test_speech_start_and_detection_only) {
  SilenceEndpointer ep(-50.0, 0, 16000);  // 0 ms: never ends a turn, only detects speech
  std::vector<float> x(3200, 0.0f);
  std::fill(x.begin() + 1000, x.end(), 0.1f);
  EXPECT_EQ(ep.push(x.data(), 3200), -1);
  EXPECT_EQ(ep.speech_start(), 1120) << "end of the first loud 10 ms frame (1120 = 7 x 160)";
  std::vector<float> silence(32000, 0.0f);
  EXPECT_EQ(ep.push(silence.data(), 32000), -1) << "silence_ms 0 never fires";
  EXPECT_EQ(ep.speech_start(), -1);
  EXPECT_TRUE(ep.in_speech());
  ep.configure(-50.0, 100);
  EXPECT_EQ(ep.push(silence.data(), 3200), 1600) << "configure() applies while streaming";
  EXPECT_EQ(ep.push(x.data(), 3200), -1);
  EXPECT_EQ(ep.speech_start(), 1120) << "speech begins again after the endpoint";
}

}  // namespace
}  // namespace glmvoice::speech
