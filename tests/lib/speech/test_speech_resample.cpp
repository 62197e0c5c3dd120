// speech/resample: torchaudio's default sinc resampling (sinc_interp_hann, lowpass_filter_width
// 6, rolloff 0.99), which upstream applies to every input that is not 16 kHz. Expected values
// come from the definition (hand-computed constants and an independent evaluation of the
// formula), from signal properties (DC gain, a pure tone), and, with the fixtures, from
// upstream's token ids for en.wav after a 16 kHz -> 44.1 kHz stereo round trip.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "io/error.h"
#include "io/npy.h"
#include "speech/resample.h"
#include "speech/tokenizer_model.h"
#include "speech/wav_file.h"
#include "test_support.h"

namespace glmvoice::speech {
namespace {

// kernel[j][0][i] straight from the definition in resample.h, in double.
double kernel_by_definition(int64_t orig_step, int64_t new_step, int64_t j, int64_t i) {
  const double base = std::min(orig_step, new_step) * 0.99;
  const int64_t width = static_cast<int64_t>(std::ceil(6.0 * orig_step / base));
  const double out_pos = static_cast<float>(-j) / static_cast<float>(new_step);
  double t = (out_pos + static_cast<double>(i - width) / orig_step) * base;
  t = std::max(-6.0, std::min(6.0, t));
  const double window = std::pow(std::cos(M_PI * t / 12.0), 2);
  const double sinc = t == 0 ? 1.0 : std::sin(M_PI * t) / (M_PI * t);
  return sinc * window * base / orig_step;
}

TEST(SpeechResample, test_kernel_hand_computed_values) {
  // 32 kHz -> 16 kHz reduces to 2 -> 1: base = 0.99, width = ceil(12 / 0.99) = 13, 28 taps.
  // Centre tap: t = 0 -> scale = 0.99 / 2 = 0.495. Next tap: t = 0.495,
  // sin(0.495 pi) / (0.495 pi) * cos(0.495 pi / 12)^2 * 0.495 = 0.3129555140 (by hand).
  const SincResampleKernel k = sinc_resample_kernel(32000, 16000);
  EXPECT_EQ(k.orig_step, 2);
  EXPECT_EQ(k.new_step, 1);
  EXPECT_EQ(k.width, 13);
  ASSERT_EQ(k.kernel.sizes(), (std::vector<int64_t>{1, 1, 28}));
  const float* w = k.kernel.data_ptr<float>();
  EXPECT_EQ(w[13], 0.495f);
  EXPECT_NEAR(w[14], 0.3129555140, 1e-7);
  EXPECT_EQ(w[12], w[14]);           // symmetric around the centre
  EXPECT_NEAR(w[0], 0.0, 1e-7);      // t clamped to -6: window cos(pi/2)^2 = 0
  // 44.1 kHz -> 16 kHz: 441 -> 160, base 158.4, width ceil(6 * 441 / 158.4) = 17, 475 taps;
  // row 0's centre = 158.4 / 441.
  const SincResampleKernel r = sinc_resample_kernel(44100, 16000);
  EXPECT_EQ(r.orig_step, 441);
  EXPECT_EQ(r.new_step, 160);
  EXPECT_EQ(r.width, 17);
  ASSERT_EQ(r.kernel.sizes(), (std::vector<int64_t>{160, 1, 475}));
  EXPECT_EQ(r.kernel[0][0][17].item<float>(), static_cast<float>(158.4 / 441.0));
  for (int64_t j : {0, 1, 79, 80, 159}) {
    for (int64_t i : {0, 16, 17, 20, 100, 240, 474}) {
      EXPECT_NEAR(r.kernel[j][0][i].item<float>(), kernel_by_definition(441, 160, j, i), 1e-7) << j << "," << i;
    }
  }
}

TEST(SpeechResample, test_lengths_and_identity) {
  const at::Tensor x = at::randn({44100});
  EXPECT_EQ(resample(x, 44100, 16000).size(0), 16000);
  EXPECT_EQ(resample(x.slice(0, 0, 1000), 44100, 16000).size(0), 363);  // ceil(1000 * 160 / 441)
  EXPECT_EQ(resample(x.slice(0, 0, 1), 44100, 16000).size(0), 1);
  EXPECT_EQ(resample(x.slice(0, 0, 999), 8000, 16000).size(0), 1998);
  EXPECT_TRUE(resample(x, 16000, 16000).equal(x));
  EXPECT_THROW(resample(x, 0, 16000), std::exception);
  // 44101 Hz shares no divisor with 16000: a 16000 x 44135 kernel would take 2.8 GB.
  EXPECT_THROW(resample(x, 44101, 16000), Error);
  for (int64_t rate : {8000, 11025, 12000, 22050, 24000, 32000, 37800, 44100, 48000, 88200, 96000, 192000}) {
    EXPECT_NO_THROW(sinc_resample_kernel(rate, 16000)) << rate;
  }
}

TEST(SpeechResample, test_dc_and_tone_survive) {
  // A low-pass with unit gain below the cut-off: a constant and a 440 Hz tone come out as the
  // same signal sampled at 16 kHz, away from the zero-padded edges (width 17 input samples).
  for (int64_t rate : {44100, 48000, 22050, 8000}) {
    const int64_t n = rate;  // 1 s
    const at::Tensor t = at::arange(n, at::kDouble) / static_cast<double>(rate);
    const at::Tensor dc = resample(at::full({n}, 0.5f), rate, 16000);
    const at::Tensor tone = resample(at::sin(2 * M_PI * 440.0 * t).to(at::kFloat), rate, 16000);
    ASSERT_EQ(tone.size(0), 16000);
    const at::Tensor want = at::sin(2 * M_PI * 440.0 * at::arange(16000, at::kDouble) / 16000.0);
    const auto mid = [](const at::Tensor& v) { return v.slice(0, 800, 15200); };  // 50 ms in from each edge
    const double dc_err = (mid(dc).to(at::kDouble) - 0.5).abs().max().item<double>();
    const double tone_err = (mid(tone).to(at::kDouble) - mid(want)).abs().max().item<double>();
    std::printf("%lld Hz -> 16 kHz: DC err %.3g, 440 Hz tone err %.3g\n", static_cast<long long>(rate), dc_err,
                tone_err);
    EXPECT_LT(dc_err, 1e-3) << rate;  // measured 2.3e-4 .. 4.4e-4 (passband ripple of the window)
    EXPECT_LT(tone_err, 1e-3) << rate;
  }
}

// A RIFF/WAVE file of 32-bit float frames [frames][channels].
void write_float_wav(const std::string& path, const at::Tensor& frames, int64_t rate) {
  const at::Tensor f = frames.to(at::kFloat).contiguous();
  const uint32_t channels = static_cast<uint32_t>(f.size(1));
  const uint32_t bytes = static_cast<uint32_t>(f.numel() * 4);
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  out.write("RIFF", 4);
  u32(36 + bytes);
  out.write("WAVEfmt ", 8);
  u32(16);
  u16(3);  // IEEE float
  u16(static_cast<uint16_t>(channels));
  u32(static_cast<uint32_t>(rate));
  u32(static_cast<uint32_t>(rate) * channels * 4);
  u16(static_cast<uint16_t>(channels * 4));
  u16(32);
  out.write("data", 4);
  u32(bytes);
  out.write(reinterpret_cast<const char*>(f.data_ptr<float>()), bytes);
}

TEST(SpeechResample, test_wav_reader_takes_channel0_and_resamples) {
  const std::string dir = test::scratch_dir("resample-wav");
  const int64_t rate = 44100;
  const at::Tensor left = at::sin(2 * M_PI * 300.0 * at::arange(rate, at::kDouble) / rate).to(at::kFloat) * 0.5;
  const at::Tensor right = at::randn({rate}) * 0.3;  // must not leak into the result
  write_float_wav(dir + "/stereo.wav", at::stack({left, right}, 1), rate);
  const at::Tensor got = read_wav_mono16k(dir + "/stereo.wav");
  EXPECT_TRUE(got.equal(resample(left, rate, 16000)));
}

// sox must be on PATH (scripts/setup.sh installs it).
bool have_sox() { return std::system("sox --version >/dev/null 2>&1") == 0; }

TEST(SpeechResample, test_44k_stereo_ids_match_upstream_16k_ids) {
  // en.wav (16 kHz mono) taken to 44.1 kHz stereo by sox (very high quality, channel 1 = noise),
  // then back to 16 kHz by our resampler: the ids must equal upstream's en.tokens.npy, apart
  // from a few flips that the two resampling passes (sox up, ours down; <= ~1e-3 per sample)
  // are allowed to cause: at least 95 % equal.
  GLMVOICE_REQUIRE_FIXTURES();
  if (!have_sox()) GTEST_SKIP() << "sox not installed";
  const std::string fx = test::fixtures_dir();
  const std::string dir = test::scratch_dir("resample-44k");
  const std::string cmd = "sox -q '" + fx + "/common/inputs/en.wav' -r 44100 -c 1 '" + dir + "/up.wav' rate -v && " +
                          "sox -q -n -r 44100 -c 1 '" + dir + "/noise.wav' synth 10 whitenoise vol 0.3 && " +
                          "sox -q -M '" + dir + "/up.wav' '" + dir + "/noise.wav' -b 16 '" + dir + "/stereo.wav' trim 0 `soxi -D '" +
                          dir + "/up.wav'`";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ModelOptions options;
  options.path = fx + "/models/tiny-a/tokenizer";
  const auto model = TokenizerModel::load(options);
  const at::Tensor samples = read_wav_mono16k(dir + "/stereo.wav");
  const at::Tensor original = read_wav_mono16k(fx + "/common/inputs/en.wav");
  EXPECT_NEAR(samples.size(0), original.size(0), 1);
  const at::Tensor ids = model->tokenize(samples).to(at::kLong);
  const at::Tensor ref = io::read_npy(fx + "/tiny-a/tokenizer/en.tokens.npy").to(at::kLong).reshape({-1});
  ASSERT_EQ(ids.numel(), ref.numel());
  const int64_t same = (ids == ref).sum().item<int64_t>();
  const int64_t n = std::min(samples.size(0), original.size(0));
  const double wave_err = (samples.slice(0, 0, n) - original.slice(0, 0, n)).abs().max().item<double>();
  std::printf("en.wav via 44.1 kHz stereo: %lld of %lld ids equal upstream's; samples max abs err %.3g\n",
              static_cast<long long>(same), static_cast<long long>(ref.numel()), wave_err);
  EXPECT_GE(same * 100, ref.numel() * 95);
}

}  // namespace
}  // namespace glmvoice::speech
