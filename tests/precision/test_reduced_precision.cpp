// Reduced precision on the CPU, stage by stage: each stage run in bfloat16 and float16 (the LLM
// in bfloat16 only: float16 is refused, llm spec §3.7) against the same stage in float32, on
// the project's tiny models. Outputs must be finite and within a measured tolerance; each
// test prints the errors it saw. The HiFT vocoder always runs in float32 (decoder spec P16):
// its case feeds it the reduced-precision mel and compares audio as P16 says (STFT magnitudes).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "io/error.h"
#include "llm/chatglm_model.h"
#include "runtime/options.h"
#include "speech/tokenizer_model.h"
#include "test_support.h"
#include "voice/decoder_model.h"

using namespace glmvoice;

namespace {

ModelOptions cpu(const std::string& dir, c10::ScalarType dtype) { return {dir, c10::Device(c10::kCPU), dtype}; }

// max |a - b| / max |b|
double rel_err(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  return ((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item<double>();
}

bool finite(const at::Tensor& t) { return t.isfinite().all().item<bool>(); }

// Relative L2 error of STFT magnitudes (n_fft 1024, hop 256, Hann), decoder spec P16.
double stft_rel_err(const at::Tensor& a, const at::Tensor& b) {
  auto mag = [](const at::Tensor& x) {
    at::Tensor w = at::hann_window(1024, at::TensorOptions().dtype(at::kFloat));
    return at::stft(x.flatten().to(at::kFloat), 1024, 256, 1024, w, /*normalized=*/false, /*onesided=*/true,
                    /*return_complex=*/true)
        .abs();
  };
  at::Tensor ma = mag(a), mb = mag(b);
  return ((ma - mb).norm() / mb.norm()).item<double>();
}

// A 3 s test signal: a chirp with harmonics and a little noise, f32 [n] at 16 kHz.
at::Tensor test_signal() {
  at::Generator g = at::detail::createCPUGenerator(5);
  at::Tensor t = at::arange(48000, at::TensorOptions().dtype(at::kDouble)) / 16000.0;
  at::Tensor f = 150.0 + 100.0 * t;
  at::Tensor phase = 2 * M_PI * (150.0 * t + 50.0 * t * t);
  at::Tensor x = 0.3 * at::sin(phase) + 0.1 * at::sin(2 * phase) + 0.05 * at::sin(3 * phase);
  return (x + 0.01 * at::randn({48000}, g, at::TensorOptions().dtype(at::kDouble))).to(at::kFloat);
}

}  // namespace

TEST(ReducedPrecision, tokenizer_bf16_and_fp16_against_fp32) {
  c10::InferenceMode guard;
  const std::string dir = test::tiny_model_dir("tokenizer", "mk-a");
  const at::Tensor x = test_signal();
  auto ref_model = speech::TokenizerModel::load(cpu(dir, c10::kFloat));
  const at::Tensor feats = ref_model->features(x);
  const int64_t T = feats.size(1) / 8 * 8;
  const auto ref = ref_model->forward_segment(feats.narrow(1, 0, T), x.numel());
  for (auto dtype : {c10::kBFloat16, c10::kHalf}) {
    auto m = speech::TokenizerModel::load(cpu(dir, dtype));
    const auto out = m->forward_segment(m->features(x).narrow(1, 0, T), x.numel());
    const double err = rel_err(out.pooled, ref.pooled);
    const double agree = out.ids.eq(ref.ids).to(at::kDouble).mean().item<double>();
    std::printf("tokenizer %s: pooled max rel err %.3g, ids agree %.1f%% (%lld ids)\n",
                runtime::dtype_name(dtype).c_str(), err, 100 * agree, (long long)ref.ids.numel());
    EXPECT_TRUE(finite(out.pooled));
    EXPECT_LT(err, dtype == c10::kHalf ? 0.003 : 0.015);  // measured 7.1e-4 / 4.4e-3
    EXPECT_GE(agree, 0.9);
  }
}

TEST(ReducedPrecision, llm_bf16_against_fp32_and_fp16_refused) {
  c10::InferenceMode guard;
  const std::string dir = test::tiny_model_dir("llm");
  auto ref_model = llm::LlmModel::load(cpu(dir, c10::kFloat));
  at::Generator g = at::detail::createCPUGenerator(3);
  at::Tensor r = at::randint(ref_model->tokenizer().max_id(), {48}, g, at::TensorOptions().dtype(at::kLong));
  const std::vector<int64_t> ids(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
  auto c32 = ref_model->new_cache();
  const at::Tensor ref = ref_model->forward(ids, c32, true);
  auto m = llm::LlmModel::load(cpu(dir, c10::kBFloat16));
  auto c16 = m->new_cache();
  const at::Tensor got = m->forward(ids, c16, true);
  const double err = rel_err(got, ref);
  const double agree = got.argmax(1).eq(ref.argmax(1)).to(at::kDouble).mean().item<double>();
  std::printf("llm bfloat16: logits max rel err %.3g, argmax agree %.1f%%\n", err, 100 * agree);
  EXPECT_TRUE(finite(got));
  EXPECT_LT(err, 0.02);  // measured 5.2e-3, argmax 98 %
  EXPECT_GE(agree, 0.9);
  try {
    llm::LlmModel::load(cpu(dir, c10::kHalf));
    ADD_FAILURE() << "float16 LLM was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("float16"), std::string::npos) << e.what();
  }
}

TEST(ReducedPrecision, flow_and_hift_bf16_and_fp16_against_fp32) {
  c10::InferenceMode guard;
  const std::string dir = test::tiny_model_dir("decoder");
  auto ref_model = voice::DecoderModel::load(cpu(dir, c10::kFloat));
  at::Generator g = at::detail::createCPUGenerator(11);
  const at::Tensor tokens = at::randint(ref_model->vocab_size(), {1, 60}, g, at::TensorOptions().dtype(at::kLong));
  auto run = [&](const voice::DecoderModel& m, at::Tensor* mel) {
    at::Generator gen = at::detail::createCPUGenerator(42);
    *mel = m.flow(tokens, at::Tensor(), at::Tensor(), gen, 10);
    at::Generator hgen = at::detail::createCPUGenerator(42);
    return m.hift(*mel, at::Tensor(), hgen).audio;
  };
  at::Tensor ref_mel;
  const at::Tensor ref_audio = run(*ref_model, &ref_mel);
  for (auto dtype : {c10::kBFloat16, c10::kHalf}) {
    auto m = voice::DecoderModel::load(cpu(dir, dtype));
    at::Tensor mel;
    const at::Tensor audio = run(*m, &mel);
    const double mel_err = rel_err(mel, ref_mel), stft_err = stft_rel_err(audio, ref_audio);
    std::printf("decoder %s: mel max rel err %.3g, audio STFT rel err %.3g\n", runtime::dtype_name(dtype).c_str(),
                mel_err, stft_err);
    EXPECT_TRUE(finite(mel)) << runtime::dtype_name(dtype) << " mel has NaN/inf";
    EXPECT_TRUE(finite(audio));
    // measured: mel 1.4e-3 / 1.2e-2, STFT 1.1e-3 / 7.4e-3 (float16 / bfloat16)
    EXPECT_LT(mel_err, dtype == c10::kHalf ? 0.005 : 0.04);
    EXPECT_LT(stft_err, dtype == c10::kHalf ? 0.004 : 0.025);
  }
}
