// Reference: transformers 4.44.1 generation/logits_process.py (TemperatureLogitsWarper,
// TopKLogitsWarper, TopPLogitsWarper) and GenerationMixin._sample. Spec: llm.md §4.4.
#include "llm/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <limits>

namespace glmvoice::llm {

namespace {
constexpr double kNegInf = -std::numeric_limits<double>::infinity();
}

at::Tensor sampling_filter(const at::Tensor& logits_in, const SamplingOptions& o) {
  c10::InferenceMode guard;
  at::Tensor z = logits_in.to(at::kFloat).flatten().clone();
  const int64_t vocab = z.numel();
  const int64_t keep_min = std::max<int64_t>(o.min_tokens_to_keep, 1);
  // 1. temperature (only when != 1)
  if (o.temperature > 0 && o.temperature != 1.0) z = z / o.temperature;
  // 2. top-k: remove z < k-th largest (ties with the k-th value are kept)
  if (o.top_k > 0) {
    const int64_t k = std::min(std::max(o.top_k, keep_min), vocab);
    at::Tensor kth = std::get<0>(at::topk(z, k)).select(0, k - 1);
    z = z.masked_fill(z < kth, kNegInf);
  }
  // 3. top-p: ascending sort, remove cumulative probability <= 1 - p, keep the largest keep_min
  if (o.top_p < 1.0) {
    auto sorted = at::sort(z, /*dim=*/0, /*descending=*/false);
    at::Tensor sorted_logits = std::get<0>(sorted), order = std::get<1>(sorted);
    at::Tensor cum = at::softmax(sorted_logits, 0).cumsum(0);
    at::Tensor remove = cum <= (1.0 - o.top_p);
    remove.narrow(0, vocab - keep_min, keep_min).fill_(false);
    at::Tensor remove_orig = at::zeros_like(remove).scatter(0, order, remove);
    z = z.masked_fill(remove_orig, kNegInf);
  }
  return z;
}

Sampler::Sampler(uint64_t seed) : generator_(at::detail::createCPUGenerator(seed)) {}

void Sampler::reseed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(generator_.mutex());
  generator_.set_current_seed(seed);
}

int64_t Sampler::sample(const at::Tensor& logits_in, const SamplingOptions& o, int64_t mask_from) {
  c10::InferenceMode guard;
  at::Tensor z = logits_in.to(at::kFloat).cpu().flatten();
  if (mask_from >= 0 && mask_from < z.numel()) {
    z = z.clone();
    z.narrow(0, mask_from, z.numel() - mask_from).fill_(kNegInf);
  }
  if (o.greedy || o.temperature <= 0) return z.argmax().item<int64_t>();
  at::Tensor filtered = sampling_filter(z, o);
  at::Tensor probs = at::softmax(filtered, 0);
  return at::multinomial(probs, 1, /*replacement=*/false, generator_).item<int64_t>();
}

}  // namespace glmvoice::llm
