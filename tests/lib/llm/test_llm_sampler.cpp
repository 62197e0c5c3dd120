// lib/llm sampler: temperature -> top-k -> top-p on hand-made distributions (llm spec §4.4).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <map>

#include "llm/sampler.h"

using glmvoice::llm::Sampler;
using glmvoice::llm::SamplingOptions;
using glmvoice::llm::sampling_filter;

namespace {

SamplingOptions opts(double temperature, int64_t top_k, double top_p) {
  SamplingOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  return o;
}

std::vector<bool> kept(const at::Tensor& z) {
  std::vector<bool> out;
  for (int64_t i = 0; i < z.numel(); ++i) out.push_back(std::isfinite(z[i].item<float>()));
  return out;
}

at::Tensor log_probs(std::vector<float> p) { return at::log(at::tensor(p)); }

}  // namespace

TEST(Sampler, top_k_keeps_ties_with_the_kth_value) {
  at::Tensor z = at::tensor(std::vector<float>{1, 2, 3, 3, 0});
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 2, 1.0))), (std::vector<bool>{false, false, true, true, false}));
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 3, 1.0))), (std::vector<bool>{false, true, true, true, false}));
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 1, 1.0))), (std::vector<bool>{false, false, true, true, false}));
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 0, 1.0))), (std::vector<bool>(5, true)));   // off
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 50, 1.0))), (std::vector<bool>(5, true)));  // k > vocab
}

TEST(Sampler, top_p_cut_sets) {
  at::Tensor z = log_probs({0.5f, 0.3f, 0.15f, 0.05f});
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 0, 0.7))), (std::vector<bool>{true, true, false, false}));
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 0, 0.9))), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 0, 0.4))), (std::vector<bool>{true, false, false, false}));
  // min_tokens_to_keep = 1: p = 0 still keeps the most likely token
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 0, 0.0))), (std::vector<bool>{true, false, false, false}));
  SamplingOptions two = opts(1.0, 0, 0.0);
  two.min_tokens_to_keep = 2;
  EXPECT_EQ(kept(sampling_filter(z, two)), (std::vector<bool>{true, true, false, false}));
}

TEST(Sampler, order_is_temperature_then_top_k_then_top_p) {
  at::Tensor z = log_probs({0.5f, 0.3f, 0.15f, 0.05f});
  // temperature 2 flattens: p ∝ sqrt(p) = .707 .548 .387 .224 -> normalised .38 .30 .21 .12
  at::Tensor t = sampling_filter(z, opts(2.0, 0, 1.0));
  EXPECT_NEAR((t - z / 2).abs().max().item<float>(), 0, 1e-6);
  EXPECT_EQ(kept(sampling_filter(z, opts(2.0, 0, 0.7))), (std::vector<bool>{true, true, true, false}));
  // top-k first: after keeping 2, top-p renormalises over them (.625/.375): p=.6 keeps only 1
  EXPECT_EQ(kept(sampling_filter(z, opts(1.0, 2, 0.6))), (std::vector<bool>{true, false, false, false}));
}

TEST(Sampler, greedy_and_padded_row_mask) {
  Sampler s(1);
  at::Tensor z = at::tensor(std::vector<float>{0.1f, 2.0f, 0.3f, 9.0f});
  EXPECT_EQ(s.sample(z, opts(0.0, 50, 0.8)), 3);          // temperature 0 -> greedy
  EXPECT_EQ(s.sample(z, opts(0.0, 50, 0.8), 3), 1);       // id 3 is a padded row
  SamplingOptions g = opts(0.8, 50, 0.8);
  g.greedy = true;
  EXPECT_EQ(s.sample(z, g), 3);
  for (int i = 0; i < 50; ++i) EXPECT_LT(s.sample(z, opts(5.0, 0, 1.0), 3), 3);
}

TEST(Sampler, seed_gives_a_fixed_sequence_and_the_cut_set_is_respected) {
  at::Tensor z = log_probs({0.5f, 0.3f, 0.15f, 0.05f});
  auto draw = [&](uint64_t seed) {
    Sampler s(seed);
    std::vector<int64_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(z, opts(1.0, 0, 1.0)));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
  Sampler s(3);
  std::map<int64_t, int> counts;
  for (int i = 0; i < 2000; ++i) counts[s.sample(z, opts(1.0, 0, 0.7))]++;
  EXPECT_EQ(counts.size(), 2u);  // only ids 0 and 1 survive top-p 0.7
  EXPECT_NEAR(counts[0] / 2000.0, 0.625, 0.05);
  Sampler r(3);
  r.reseed(7);
  Sampler fresh(7);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(r.sample(z, opts(1.0, 0, 1.0)), fresh.sample(z, opts(1.0, 0, 1.0)));
}
