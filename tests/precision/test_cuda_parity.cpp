// The parity checks on CUDA (when this build has CUDA and a GPU is present; otherwise every
// case skips, saying why): the tiny-a fixtures in float32 within the manifest tolerances
// (TF32 off, decoder spec P16), the LLM's bfloat16 greedy ids against the bf16 references,
// sampling on the device, and the int8 / int4 weight-only kernels.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>

#include "io/error.h"
#include "io/npy.h"
#include "llm/chatglm_model.h"
#include "llm/quantized_linear.h"
#include "llm/sampler.h"
#include "runtime/dtype.h"
#include "runtime/options.h"
#include "speech/tokenizer_model.h"
#include "speech/wav_file.h"
#include "test_support.h"
#include "voice/decoder_model.h"

using namespace glmvoice;

#define GLMVOICE_REQUIRE_CUDA()                                                                  \
  do {                                                                                           \
    if (!runtime::cuda_available())                                                              \
      GTEST_SKIP() << (GLMVOICE_HAVE_CUDA ? "no CUDA device on this machine: skipped"            \
                                          : "CPU-only build (no usable libtorch_cuda): skipped"); \
  } while (0)

namespace {

const c10::Device kCuda(c10::kCUDA, 0);

std::string fx(const std::string& rel) { return test::fixtures_dir() + "/" + rel; }
at::Tensor fixture(const std::string& rel) { return io::read_npy(fx(rel)); }
nlohmann::json tolerance(const std::string& manifest, const std::string& key) {
  std::ifstream in(fx(manifest));
  return nlohmann::json::parse(in).at(key).at("tolerance");
}
std::vector<int64_t> to_ids(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).flatten().contiguous().cpu();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}
// allclose with the manifest's atol/rtol; prints the max abs error
void expect_close(const char* what, const at::Tensor& got, const at::Tensor& ref, const nlohmann::json& tol) {
  const double atol = tol.at("atol"), rtol = tol.at("rtol");
  at::Tensor a = got.to(at::kCPU, at::kDouble).reshape(ref.sizes()), b = ref.to(at::kDouble);
  at::Tensor diff = (a - b).abs();
  std::printf("cuda %s: max abs err %.3g (atol %g rtol %g)\n", what, diff.max().item<double>(), atol, rtol);
  EXPECT_TRUE((diff <= atol + rtol * b.abs()).all().item<bool>()) << what;
}

}  // namespace

// A CUDA build must load libtorch_cuda, whose static initialisers register the CUDA kernels:
// linked with --as-needed it was dropped (nothing references it) and every CUDA op failed
// with "Could not run ... from the 'CUDA' backend". Needs no GPU, so it runs on any CUDA build.
TEST(CudaBuild, test_cuda_kernels_are_registered) {
  if (!GLMVOICE_HAVE_CUDA) GTEST_SKIP() << "CPU-only build (no usable libtorch_cuda): skipped";
  auto op = c10::Dispatcher::singleton().findSchema({"aten::empty", "memory_format"});
  ASSERT_TRUE(op.has_value());
  EXPECT_TRUE(op->hasKernelForDispatchKey(c10::DispatchKey::CUDA))
      << "libtorch_cuda is not loaded: it was dropped at link time (see meson.build)";
}

TEST(CudaParity, llm_fp32_prompt_logits_and_greedy_ids) {
  GLMVOICE_REQUIRE_CUDA();
  GLMVOICE_REQUIRE_FIXTURES();
  c10::InferenceMode guard;
  auto m = llm::LlmModel::load({fx("models/tiny-a/llm"), kCuda, c10::kFloat});
  const auto ids = to_ids(fixture("tiny-a/llm/prompt.input_ids.npy"));
  auto cache = m->new_cache();
  expect_close("llm fp32 prompt logits", m->forward(ids, cache, true), fixture("tiny-a/llm/fp32.prompt_logits.npy").squeeze(0),
               tolerance("tiny-a/llm/manifest.json", "fp32.prompt_logits"));
  auto c2 = m->new_cache();
  llm::Sampler sampler(0);
  llm::SamplingOptions greedy;
  greedy.greedy = true;
  std::vector<int64_t> got;
  at::Tensor step = m->forward(ids, c2);
  for (int i = 0; i < 40; ++i) {
    got.push_back(sampler.sample(step, greedy));
    step = m->forward({got.back()}, c2);
  }
  EXPECT_EQ(got, to_ids(fixture("tiny-a/llm/fp32.greedy_ids.npy")));
}

TEST(CudaParity, llm_bf16_logits_and_greedy_ids_against_the_bf16_references) {
  GLMVOICE_REQUIRE_CUDA();
  GLMVOICE_REQUIRE_FIXTURES();
  c10::InferenceMode guard;
  auto m = llm::LlmModel::load({fx("models/tiny-a/llm"), kCuda, c10::ScalarType::Undefined});
  EXPECT_EQ(m->options().dtype, c10::kBFloat16) << "the LLM defaults to bfloat16 on CUDA";
  const auto ids = to_ids(fixture("tiny-a/llm/prompt.input_ids.npy"));
  auto cache = m->new_cache();
  expect_close("llm bf16 prompt logits", m->forward(ids, cache, true), fixture("tiny-a/llm/bf16.prompt_logits.npy").squeeze(0),
               tolerance("tiny-a/llm/manifest.json", "bf16.prompt_logits"));
  const auto ref = to_ids(fixture("tiny-a/llm/bf16.greedy_ids.npy"));
  auto c2 = m->new_cache();
  at::Tensor step = m->forward(ids, c2);
  size_t same = 0;
  bool diverged = false;
  for (size_t i = 0; i < ref.size(); ++i) {
    const int64_t next = step.argmax().item<int64_t>();
    if (!diverged && next == ref[i]) ++same; else diverged = true;
    step = m->forward({diverged ? ref[i] : next}, c2);
  }
  // bf16 rounding differs between kernels (spec §3.7): near-ties flip late, not early.
  std::printf("cuda llm bf16 greedy ids: first %zu of %zu identical to the bf16 reference\n", same, ref.size());
  EXPECT_GE(same, 8u);
}

TEST(CudaParity, tokenizer_fp32_ids) {
  GLMVOICE_REQUIRE_CUDA();
  GLMVOICE_REQUIRE_FIXTURES();
  c10::InferenceMode guard;
  auto m = speech::TokenizerModel::load({fx("models/tiny-a/tokenizer"), kCuda, c10::kFloat});
  for (const char* name : {"en", "zh", "long"}) {
    const at::Tensor samples = speech::read_wav_mono16k(fx(std::string("common/inputs/") + name + ".wav"));
    EXPECT_EQ(to_ids(m->tokenize(samples)), to_ids(fixture(std::string("tiny-a/tokenizer/") + name + ".tokens.npy")))
        << name;
  }
}

TEST(CudaParity, decoder_fp32_mel_and_audio) {
  GLMVOICE_REQUIRE_CUDA();
  GLMVOICE_REQUIRE_FIXTURES();
  c10::InferenceMode guard;
  auto m = voice::DecoderModel::load({fx("models/tiny-a/decoder"), kCuda, c10::kFloat});
  const at::Tensor tokens = fixture("tiny-a/decoder/tokens.npy").to(at::kLong);
  at::Generator gen = at::detail::createCPUGenerator(42);
  const at::Tensor mel = m->flow(tokens, at::Tensor(), at::Tensor(), gen, 10);
  expect_close("decoder offline mel", mel, fixture("tiny-a/decoder/offline.mel.npy"),
               tolerance("tiny-a/decoder/manifest.json", "offline.mel"));
  const at::Tensor audio = m->hift(mel, at::Tensor(), gen).audio;
  const at::Tensor ref = fixture("tiny-a/decoder/offline.speech.npy");
  ASSERT_EQ(audio.numel(), ref.numel());
  // P16: sample-wise only at the start of the call, then STFT magnitudes within 1e-2.
  expect_close("decoder audio, first 1024 samples", audio.flatten().narrow(0, 0, 1024), ref.flatten().narrow(0, 0, 1024),
               tolerance("tiny-a/decoder/manifest.json", "offline.speech"));
  auto mag = [](const at::Tensor& x) {
    return at::stft(x.flatten().cpu().to(at::kFloat), 1024, 256, 1024, at::hann_window(1024), false, true, true).abs();
  };
  const double stft = ((mag(audio) - mag(ref)).norm() / mag(ref).norm()).item<double>();
  std::printf("cuda decoder audio: STFT magnitude rel err %.3g\n", stft);
  EXPECT_LE(stft, 1e-2);
}

TEST(CudaParity, sampling_on_the_device) {
  GLMVOICE_REQUIRE_CUDA();
  c10::InferenceMode guard;
  at::Generator g = at::detail::createCPUGenerator(1);
  const at::Tensor z = at::randn({168960}, g) * 4;
  const at::Tensor zc = z.to(kCuda).to(at::kBFloat16);
  llm::SamplingOptions o;  // temperature 0.2, top-k 50, top-p 0.8
  const at::Tensor allowed = llm::sampling_filter(zc.cpu(), o).isfinite();
  llm::Sampler a(7), b(7);
  for (int i = 0; i < 50; ++i) {
    const int64_t id = a.sample(zc, o, 168737);
    EXPECT_TRUE(allowed[id].item<bool>()) << id;
    EXPECT_EQ(id, b.sample(zc, o, 168737)) << "same seed, same ids";
  }
  llm::SamplingOptions greedy;
  greedy.greedy = true;
  EXPECT_EQ(a.sample(zc, greedy), zc.cpu().to(at::kFloat).argmax().item<int64_t>());
}

TEST(CudaParity, int8_and_int4_weight_only_kernels) {
  GLMVOICE_REQUIRE_CUDA();
  c10::InferenceMode guard;
  at::Generator g = at::detail::createCPUGenerator(2);
  const at::Tensor w = (at::randn({512, 1024}, g) * 0.02).to(kCuda);
  const at::Tensor x = at::randn({4, 1024}, g).to(kCuda, at::kBFloat16);
  const at::Tensor want = at::matmul(x.to(at::kFloat), w.t());
  for (auto format : {runtime::kInt8, runtime::kInt4}) {
    const auto q = llm::LinearWeight::make(w, format, "w");
    const double err = ((q.forward(x).to(at::kFloat) - want).abs().max() / want.abs().max()).item<double>();
    std::printf("cuda %s linear: max rel err %.3g vs f32\n", runtime::dtype_name(format).c_str(), err);
    EXPECT_LT(err, format == runtime::kInt8 ? 0.03 : 0.15);
  }
  // the tiny LLM loads in int8 on CUDA; int4 needs K divisible by 128 there: a clear error
  if (test::fixtures_dir().empty()) return;
  EXPECT_NO_THROW(llm::LlmModel::load({fx("models/tiny-a/llm"), kCuda, runtime::kInt8}));
  try {
    llm::LlmModel::load({fx("models/tiny-a/llm"), kCuda, runtime::kInt4});
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported) << e.what();
  }
}
