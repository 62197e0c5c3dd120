// Next-token selection exactly as transformers 4.44.1 generate() does it for glm-4-voice-9b
// (llm spec §4.4): temperature -> top-k -> top-p on the last-position logits, then a
// multinomial draw; greedy argmax when sampling is off or temperature <= 0.
//
// Deviations (documented in the spec): logits are cast to f32 first; ids above the largest
// defined token (padded rows) are masked to -inf unless `mask_from` < 0; temperature <= 0
// means greedy instead of an error. Bit-identical draws with PyTorch's multinomial are not
// a goal; a fixed seed gives a fixed sequence.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace glmvoice::llm {

struct SamplingOptions {
  double temperature = 0.2;  // <= 0: greedy
  double top_p = 0.8;        // >= 1: off
  int64_t top_k = 50;        // <= 0: off (HF library default 50)
  bool greedy = false;       // argmax regardless of temperature
  int64_t min_tokens_to_keep = 1;
};

// Applies temperature, top-k and top-p to f32 `logits` [V] and returns the filtered logits
// (removed entries -inf). Exposed for tests.
at::Tensor sampling_filter(const at::Tensor& logits, const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(uint64_t seed = 0);
  void reseed(uint64_t seed);
  // `logits` [V] any float dtype. `mask_from`: ids >= mask_from are never chosen (< 0: off).
  int64_t sample(const at::Tensor& logits, const SamplingOptions& options, int64_t mask_from = -1);

 private:
  at::Generator generator_;
};

}  // namespace glmvoice::llm
