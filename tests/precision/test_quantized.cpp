// Weight-only int8 / int4 linear layers (lib/llm/quantized_linear.h) and the LLM loaded with
// dtype int8 / int4: quantization error of one layer against its definition, clear errors for
// shapes the kernels cannot take, and the model's logits / greedy ids against bfloat16.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "io/error.h"
#include "llm/chatglm_model.h"
#include "llm/quantized_linear.h"
#include "runtime/dtype.h"
#include "runtime/options.h"
#include "test_support.h"

using namespace glmvoice;
using llm::LinearWeight;

namespace {

at::Tensor random_weight(int64_t n, int64_t k, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  // rows of different scales, as in a real checkpoint
  return at::randn({n, k}, g) * (0.02 * (1 + at::arange(n, at::kFloat).remainder(7))).unsqueeze(1);
}

}  // namespace

TEST(Quantized, int8_is_per_row_symmetric_within_half_a_step) {
  c10::InferenceMode guard;
  const at::Tensor w = random_weight(96, 256, 1);
  const LinearWeight q = LinearWeight::make(w, runtime::kInt8, "w");
  EXPECT_EQ(q.group_size(), 256);
  EXPECT_EQ(q.storage_bytes(), 96 * 256 + 96 * 2);
  const at::Tensor step = w.abs().amax(1, true) / 127.0;
  // half a quantization step, plus the bf16 rounding of the scale and of the read-back
  const at::Tensor err = (q.dequantized() - w).abs();
  EXPECT_TRUE((err <= 0.5 * step + 0.01 * w.abs() + 1e-6).all().item<bool>()) << err.max().item<double>();
  const at::Tensor x = at::randn({5, 256}).to(at::kBFloat16);
  const at::Tensor y = q.forward(x), want = at::matmul(x.to(at::kFloat), q.dequantized().t());
  EXPECT_EQ(y.sizes(), (at::IntArrayRef{5, 96}));
  EXPECT_LT((y.to(at::kFloat) - want).abs().max().item<double>(), 0.02 * want.abs().max().item<double>());
}

TEST(Quantized, int4_is_groupwise_within_half_a_step) {
  c10::InferenceMode guard;
  for (int64_t k : {256, 160}) {  // group 128, and 32 where K is not a multiple of 128 or 64
    const at::Tensor w = random_weight(64, k, 2);
    const LinearWeight q = LinearWeight::make(w, runtime::kInt4, "w");
    EXPECT_EQ(q.group_size(), k == 256 ? llm::kInt4GroupSize : 32);
    const int64_t g = q.group_size();
    at::Tensor wg = w.view({64, k / g, g});
    at::Tensor step = ((std::get<0>(wg.max(2)) - std::get<0>(wg.min(2))) / 15.0).repeat_interleave(g, 1);
    const at::Tensor err = (q.dequantized() - w).abs();
    EXPECT_TRUE((err <= 0.5 * step + 0.01 * w.abs() + 1e-6).all().item<bool>()) << "K " << k << ": " << err.max().item<double>();
    const at::Tensor x = at::randn({3, k}).to(at::kBFloat16);
    const at::Tensor want = at::matmul(x.to(at::kFloat), q.dequantized().t());
    EXPECT_LT((q.forward(x).to(at::kFloat) - want).abs().max().item<double>(), 0.02 * want.abs().max().item<double>());
  }
}

TEST(Quantized, shapes_the_kernels_cannot_take_fail_naming_the_tensor) {
  c10::InferenceMode guard;
  try {
    LinearWeight::make(random_weight(16, 48, 3), runtime::kInt4, "layers.0.mlp.dense_4h_to_h.weight");
    ADD_FAILURE() << "int4 accepted K = 48";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("layers.0.mlp.dense_4h_to_h.weight"), std::string::npos) << e.what();
  }
}

TEST(Quantized, dtype_names_and_stage_rules) {
  EXPECT_EQ(runtime::parse_dtype("int8"), runtime::kInt8);
  EXPECT_EQ(runtime::parse_dtype("int4"), runtime::kInt4);
  EXPECT_EQ(runtime::dtype_name(runtime::kInt4), "int4");
  EXPECT_EQ(runtime::compute_dtype(runtime::kInt8), c10::kBFloat16);
  EXPECT_THROW(runtime::resolve_options({"d", c10::Device(c10::kCPU), runtime::kInt8}, runtime::Stage::kDecoder),
               Error);
  EXPECT_THROW(runtime::resolve_options({"d", c10::Device(c10::kCPU), runtime::kInt4}, runtime::Stage::kTokenizer),
               Error);
  EXPECT_NO_THROW(runtime::resolve_options({"d", c10::Device(c10::kCPU), runtime::kInt4}, runtime::Stage::kLlm));
}

// Logits error and greedy agreement of int8 / int4 against bf16 on a tiny model: printed
// (the README's figures come from the bench on the mid model), bounded loosely.
TEST(Quantized, llm_int8_and_int4_against_bf16) {
  c10::InferenceMode guard;
  const std::string dir = test::tiny_model_dir("llm");
  auto ref = llm::LlmModel::load({dir, c10::Device(c10::kCPU), c10::kBFloat16});
  at::Generator g = at::detail::createCPUGenerator(9);
  at::Tensor r = at::randint(ref->tokenizer().max_id(), {32}, g, at::TensorOptions().dtype(at::kLong));
  const std::vector<int64_t> prompt(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
  auto greedy = [&](const llm::LlmModel& m, at::Tensor* prompt_logits) {
    auto cache = m.new_cache();
    *prompt_logits = m.forward(prompt, cache, true);
    std::vector<int64_t> out;
    at::Tensor step = (*prompt_logits)[-1];
    for (int i = 0; i < 24; ++i) {
      out.push_back(step.argmax().item<int64_t>());
      step = m.forward({out.back()}, cache);
    }
    return out;
  };
  at::Tensor ref_logits;
  const auto ref_ids = greedy(*ref, &ref_logits);
  for (auto dtype : {runtime::kInt8, runtime::kInt4}) {
    auto m = llm::LlmModel::load({dir, c10::Device(c10::kCPU), dtype});
    EXPECT_EQ(m->options().dtype, dtype);
    at::Tensor logits;
    const auto ids = greedy(*m, &logits);
    const double err = (logits - ref_logits).abs().max().item<double>() / ref_logits.abs().max().item<double>();
    int64_t same = 0;
    while (same < static_cast<int64_t>(ids.size()) && ids[same] == ref_ids[same]) ++same;
    const double argmax_agree = logits.argmax(1).eq(ref_logits.argmax(1)).to(at::kDouble).mean().item<double>();
    std::printf("llm %s vs bfloat16: prompt logits max rel err %.3g, prompt argmax agree %.0f%%, greedy ids "
                "identical for the first %lld of %zu\n",
                runtime::dtype_name(dtype).c_str(), err, 100 * argmax_agree, (long long)same, ids.size());
    EXPECT_TRUE(logits.isfinite().all().item<bool>());
    EXPECT_LT(err, dtype == runtime::kInt8 ? 0.05 : 0.25);
    EXPECT_GE(argmax_agree, dtype == runtime::kInt8 ? 0.9 : 0.6);
  }
}

TEST(RuntimeOptions, cuda_and_cuda0_are_one_device_and_one_cache_key) {
  EXPECT_EQ(runtime::parse_device("cuda"), runtime::parse_device("cuda:0"));
  EXPECT_EQ(runtime::parse_device("cuda").str(), "cuda:0");
  EXPECT_EQ(runtime::parse_device("cuda:1").str(), "cuda:1");
  EXPECT_EQ(runtime::options_key({"m", c10::Device("cuda"), c10::kFloat}),
            runtime::options_key({"m", c10::Device("cuda:0"), c10::kFloat}));
  EXPECT_NE(runtime::options_key({"m", c10::Device("cuda:1"), c10::kFloat}),
            runtime::options_key({"m", c10::Device("cuda:0"), c10::kFloat}));
}

TEST(RuntimeOptions, llm_defaults_bf16_on_cuda_f32_on_cpu) {
  EXPECT_EQ(runtime::parse_dtype("auto"), c10::ScalarType::Undefined);
  EXPECT_EQ(runtime::default_dtype(runtime::Stage::kLlm, c10::Device("cuda:0")), c10::kBFloat16);
  EXPECT_EQ(runtime::default_dtype(runtime::Stage::kLlm, c10::Device(c10::kCPU)), c10::kFloat);
  EXPECT_EQ(runtime::default_dtype(runtime::Stage::kDecoder, c10::Device("cuda:0")), c10::kFloat);
  const auto o = runtime::resolve_options({"m", c10::Device(c10::kCPU), c10::ScalarType::Undefined}, runtime::Stage::kLlm);
  EXPECT_EQ(o.dtype, c10::kFloat);
  if (!runtime::cuda_available()) {
    try {
      runtime::resolve_options({"m", c10::Device("cuda"), c10::kFloat}, runtime::Stage::kLlm);
      ADD_FAILURE() << "cuda accepted without CUDA";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
      EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
    }
  }
}
