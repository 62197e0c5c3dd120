// Next-token selection exactly as transformers 4.44.1 generate() does it for glm-4-voice-9b
// (llm spec §4.4): temperature -> top-k -> top-p on the last-position logits, then a
// multinomial draw; greedy argmax when sampling is off or temperature <= 0.
//
// Deviations (documented in the spec): logits are cast to f32 first; ids above the largest
// defined token (padded rows) are masked to -inf unless `mask_from` < 0; temperature <= 0
// means greedy instead of an error. A fixed seed gives a fixed sequence.
//
// Work stays on the logits' device and touches only the top candidates: top-k is one
// at::topk (on CPU one pass with a heap), top-p sorts the (few) survivors, never the whole
// vocabulary, and only the chosen id crosses to the host. On CUDA the draw is the Gumbel-max
// trick over the candidates with a CUDA generator. On CPU it consumes the generator exactly as
// at::multinomial over the whole vocabulary did (one Exp(1) per row, argmax of p / q; the
// engine's words come in blocks from mt19937_fill and only the candidates' draws are turned
// into Exp(1) values), so a seed gives the same ids as the
// earlier full-sort sampler (test_llm_sampler checks it), with two notes: where logits tie
// exactly at the top-p cut, the tied tokens are cut in id order (the full sort's unstable
// order chose arbitrarily); and top-p without top-k (top_k <= 0) still sorts the vocabulary
// on CPU, because a candidates-only nucleus sum would round differently.
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

// The tokens that survive temperature, top-k and top-p: ids [n] i64 in ascending id order and
// their temperature-scaled f32 logits [n], on the logits' device. `logits` [V] any float dtype.
struct Candidates {
  at::Tensor ids, logits;
};
Candidates sampling_candidates(const at::Tensor& logits, const SamplingOptions& options);

// Applies temperature, top-k and top-p to `logits` [V] and returns f32 filtered logits [V]
// (removed entries -inf). Exposed for tests; built from sampling_candidates().
at::Tensor sampling_filter(const at::Tensor& logits, const SamplingOptions& options);

class Sampler {
 public:
  explicit Sampler(uint64_t seed = 0);
  void reseed(uint64_t seed);
  // `logits` [V] any float dtype, on any device. `mask_from`: ids >= mask_from are never
  // chosen (< 0: off).
  int64_t sample(const at::Tensor& logits, const SamplingOptions& options, int64_t mask_from = -1);

 private:
  at::Generator& generator_for(const c10::Device& device);

  uint64_t seed_;
  at::Generator cpu_generator_;
  at::Generator device_generator_;  // made on first use for a CUDA device, seeded with seed_
};

}  // namespace glmvoice::llm
