// Parity of lib/llm with the upstream reference outputs in ../shared/fixtures/tiny-a/llm:
// prompt string and ids, fp32 (and bf16) prompt logits, 40 greedy ids through the KV cache.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <regex>

#include "io/npy.h"
#include "llm/chat.h"
#include "llm/chatglm_model.h"
#include "test_support.h"

using namespace glmvoice;

namespace {

struct Fixture {
  std::string model_dir, ref_dir;
  nlohmann::json info, manifest;
};

Fixture load_fixture() {
  Fixture f;
  const std::string fx = test::fixtures_dir();
  f.model_dir = fx + "/models/tiny-a/llm";
  f.ref_dir = fx + "/tiny-a/llm";
  std::ifstream a(f.ref_dir + "/info.json"), b(f.ref_dir + "/manifest.json");
  f.info = nlohmann::json::parse(a);
  f.manifest = nlohmann::json::parse(b);
  return f;
}

std::vector<int64_t> to_ids(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).flatten().contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::vector<int64_t> speech_tokens_of(const std::string& prompt) {
  std::vector<int64_t> out;
  std::regex re("<\\|audio_([0-9]+)\\|>");
  for (auto it = std::sregex_iterator(prompt.begin(), prompt.end(), re); it != std::sregex_iterator(); ++it) {
    out.push_back(std::stoll((*it)[1].str()));
  }
  return out;
}

// max |a-b| and whether allclose(a, b, atol, rtol) holds.
double check_close(const at::Tensor& a, const at::Tensor& b, double atol, double rtol, bool* ok) {
  at::Tensor diff = (a - b).abs();
  *ok = (diff <= atol + rtol * b.abs()).all().item<bool>();
  return diff.max().item<double>();
}

}  // namespace

TEST(LlmParity, prompt_string_and_ids) {
  GLMVOICE_REQUIRE_FIXTURES();
  const auto f = load_fixture();
  auto model = llm::LlmModel::load({f.model_dir, c10::Device(c10::kCPU), c10::kFloat});
  llm::ChatState chat(model, llm::ChatOptions{});
  const std::string prompt = f.info.at("prompt").get<std::string>();
  const auto turn = llm::UserTurn::speech(speech_tokens_of(prompt));
  EXPECT_EQ(chat.prompt_string(turn), prompt);
  const auto ref_ids = to_ids(io::read_npy(f.ref_dir + "/prompt.input_ids.npy"));
  EXPECT_EQ(chat.build_prompt_ids(turn), ref_ids);
  EXPECT_EQ(model->tokenizer().encode(prompt, true), ref_ids);
  EXPECT_EQ(to_ids(io::read_npy(f.ref_dir + "/prompt.position_ids.npy")),
            to_ids(at::arange(static_cast<int64_t>(ref_ids.size()))));
}

TEST(LlmParity, fp32_prompt_logits_and_greedy) {
  GLMVOICE_REQUIRE_FIXTURES();
  const auto f = load_fixture();
  auto model = llm::LlmModel::load({f.model_dir, c10::Device(c10::kCPU), c10::kFloat});
  const auto ids = to_ids(io::read_npy(f.ref_dir + "/prompt.input_ids.npy"));
  auto cache = model->new_cache();
  at::Tensor logits = model->forward(ids, cache, /*all_positions=*/true);
  at::Tensor ref = io::read_npy(f.ref_dir + "/fp32.prompt_logits.npy").squeeze(0);
  const auto tol = f.manifest.at("fp32.prompt_logits").at("tolerance");
  bool ok = false;
  const double err = check_close(logits, ref, tol.at("atol"), tol.at("rtol"), &ok);
  std::printf("fp32 prompt logits: max abs err %.3g (atol %g rtol %g)\n", err, tol.at("atol").get<double>(),
              tol.at("rtol").get<double>());
  EXPECT_TRUE(ok) << "max abs err " << err;

  // Greedy through the KV cache, no stop at EOS, no padded-row mask (reference has none).
  const auto ref_greedy = to_ids(io::read_npy(f.ref_dir + "/fp32.greedy_ids.npy"));
  at::Tensor ref_steps = io::read_npy(f.ref_dir + "/fp32.greedy_step_logits.npy").squeeze(0);
  auto cache2 = model->new_cache();
  llm::Sampler sampler(0);
  llm::SamplingOptions greedy;
  greedy.greedy = true;
  std::vector<int64_t> got;
  at::Tensor step = model->forward(ids, cache2);
  double step_err = 0;
  bool steps_ok = true;
  for (size_t i = 0; i < ref_greedy.size(); ++i) {
    bool ok_i = false;
    step_err = std::max(step_err, check_close(step, ref_steps[static_cast<int64_t>(i)], 1e-4, 1e-4, &ok_i));
    steps_ok = steps_ok && ok_i;
    const int64_t next = sampler.sample(step, greedy, -1);
    got.push_back(next);
    step = model->forward({next}, cache2);
  }
  std::printf("fp32 greedy step logits: max abs err %.3g\n", step_err);
  EXPECT_TRUE(steps_ok);
  EXPECT_EQ(got, ref_greedy);
}

// bf16 compute must reproduce the bf16 reference, not merely resemble the fp32 one: the bounds
// lie between our error and the fp32 reference's distance from the bf16 reference, and the
// test checks that the fp32 reference does NOT pass them (so an fp32 path, or a bf16 path that
// rounds differently from torch 2.3, fails). The manifest's bound (atol 0.25, rtol 0.05) is far
// too loose for that. Measured (prompt logits, |logit| < 8, one bf16 ulp there = 0.03125):
//   ours:           max 0.03125, mean 5.0e-4, 94 % bit-equal
//   fp32 reference: max 0.0713,  mean 9.5e-3 (and plain bf16 matmul + softmax attention, before
//                   lib/llm rounded attention like torch's CPU SDPA kernel: max 0.078, mean 9.8e-3)
constexpr double kBf16LogitsAtol = 0.04;
constexpr double kBf16LogitsMeanAtol = 2e-3;

TEST(LlmParity, bf16_prompt_logits) {
  GLMVOICE_REQUIRE_FIXTURES();
  const auto f = load_fixture();
  auto model = llm::LlmModel::load({f.model_dir, c10::Device(c10::kCPU), c10::kBFloat16});
  const auto ids = to_ids(io::read_npy(f.ref_dir + "/prompt.input_ids.npy"));
  auto cache = model->new_cache();
  at::Tensor logits = model->forward(ids, cache, true).to(at::kFloat);
  at::Tensor ref = io::read_npy(f.ref_dir + "/bf16.prompt_logits.npy").squeeze(0);
  at::Tensor fp32_ref = io::read_npy(f.ref_dir + "/fp32.prompt_logits.npy").squeeze(0);
  bool ok = false, fp32_ok = false;
  const double err = check_close(logits, ref, kBf16LogitsAtol, 0, &ok);
  const double fp32_err = check_close(fp32_ref, ref, kBf16LogitsAtol, 0, &fp32_ok);
  std::printf("bf16 prompt logits vs bf16 reference: ours max abs err %.4g, fp32 reference %.4g (bound %g)\n", err,
              fp32_err, kBf16LogitsAtol);
  const double mean = (logits - ref).abs().mean().item<double>();
  const double fp32_mean = (fp32_ref - ref).abs().mean().item<double>();
  const double same = (logits == ref).to(at::kFloat).mean().item<double>();
  std::printf("bf16 prompt logits vs bf16 reference: mean abs err ours %.3g, fp32 reference %.3g (bound %g); "
              "%.1f %% of ours bit-equal\n", mean, fp32_mean, kBf16LogitsMeanAtol, 100 * same);
  EXPECT_LE(mean, kBf16LogitsMeanAtol);
  EXPECT_GT(fp32_mean, kBf16LogitsMeanAtol) << "the bound no longer tells bf16 from fp32";
  EXPECT_TRUE(ok) << "max abs err " << err;
  EXPECT_FALSE(fp32_ok) << "the bound no longer tells bf16 from fp32: fp32 reference err " << fp32_err;
}

TEST(LlmParity, bf16_greedy_ids_and_step_logits) {
  GLMVOICE_REQUIRE_FIXTURES();
  const auto f = load_fixture();
  auto model = llm::LlmModel::load({f.model_dir, c10::Device(c10::kCPU), c10::kBFloat16});
  const auto ids = to_ids(io::read_npy(f.ref_dir + "/prompt.input_ids.npy"));
  const auto ref_greedy = to_ids(io::read_npy(f.ref_dir + "/bf16.greedy_ids.npy"));
  at::Tensor ref_steps = io::read_npy(f.ref_dir + "/bf16.greedy_step_logits.npy").squeeze(0);
  auto cache = model->new_cache();
  llm::Sampler sampler(0);
  llm::SamplingOptions greedy;
  greedy.greedy = true;
  std::vector<int64_t> got;
  at::Tensor step = model->forward(ids, cache);
  double step_err = 0;
  for (size_t i = 0; i < ref_greedy.size(); ++i) {
    bool ok_i = false;
    step_err = std::max(step_err, check_close(step.to(at::kFloat).reshape({-1}),
                                              ref_steps[static_cast<int64_t>(i)], kBf16LogitsAtol, 0, &ok_i));
    const int64_t next = sampler.sample(step, greedy, -1);
    got.push_back(next);
    // Feed the reference's token so one early flip does not derail every later step.
    step = model->forward({ref_greedy[i]}, cache);
  }
  size_t first_diff = got.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != ref_greedy[i]) {
      first_diff = i;
      break;
    }
  }
  std::printf("bf16 greedy: step logits max abs err %.4g; ids %s (first difference at step %zu)\n", step_err,
              first_diff == got.size() ? "equal" : "differ", first_diff);
  EXPECT_LE(step_err, kBf16LogitsAtol);
  EXPECT_EQ(got, ref_greedy);
}
