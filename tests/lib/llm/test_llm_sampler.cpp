// lib/llm sampler: temperature -> top-k -> top-p on hand-made distributions (llm spec §4.4).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include "llm/mt19937_fill.h"
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

// ---------------------------------------------------------------- against the full-sort sampler
//
// The sampler works on the top candidates only. These tests keep the earlier implementation
// (a full-vocabulary sort, then at::multinomial over the whole vocabulary) as the reference
// and require the same filtered logits, bit for bit, and the same ids for the same seeds.

namespace {

at::Tensor full_sort_filter(const at::Tensor& logits_in, const SamplingOptions& o) {
  const double neg_inf = -std::numeric_limits<double>::infinity();
  at::Tensor z = logits_in.to(at::kFloat).flatten().clone();
  const int64_t vocab = z.numel();
  const int64_t keep_min = std::max<int64_t>(o.min_tokens_to_keep, 1);
  if (o.temperature > 0 && o.temperature != 1.0) z = z / o.temperature;
  if (o.top_k > 0) {
    const int64_t k = std::min(std::max(o.top_k, keep_min), vocab);
    at::Tensor kth = std::get<0>(at::topk(z, k)).select(0, k - 1);
    z = z.masked_fill(z < kth, neg_inf);
  }
  if (o.top_p < 1.0) {
    auto sorted = at::sort(z, /*dim=*/0, /*descending=*/false);
    at::Tensor sorted_logits = std::get<0>(sorted), order = std::get<1>(sorted);
    at::Tensor cum = at::softmax(sorted_logits, 0).cumsum(0);
    at::Tensor remove = cum <= (1.0 - o.top_p);
    remove.narrow(0, vocab - keep_min, keep_min).fill_(false);
    at::Tensor remove_orig = at::zeros_like(remove).scatter(0, order, remove);
    z = z.masked_fill(remove_orig, neg_inf);
  }
  return z;
}

int64_t full_sort_sample(const at::Tensor& logits, const SamplingOptions& o, int64_t mask_from, at::Generator& gen) {
  at::Tensor z = logits.to(at::kFloat).flatten().clone();
  if (mask_from >= 0 && mask_from < z.numel()) {
    z.narrow(0, mask_from, z.numel() - mask_from).fill_(-std::numeric_limits<double>::infinity());
  }
  at::Tensor probs = at::softmax(full_sort_filter(z, o), 0);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

// Logit sets like the model's: f32, and bf16-rounded (many exact ties), flat and peaked.
std::vector<at::Tensor> logit_sets(int64_t vocab) {
  std::vector<at::Tensor> sets;
  at::Generator g = at::detail::createCPUGenerator(1234);
  for (double scale : {1.0, 4.0, 12.0}) {
    at::Tensor z = at::randn({vocab}, g) * scale;
    sets.push_back(z);
    sets.push_back(z.to(at::kBFloat16).to(at::kFloat));
  }
  return sets;
}

}  // namespace

// The block generator against the engine's own calls: the same words, the same state after,
// from a fresh seed (the first call renews the state) and from the middle of a state, in runs
// that end before, on and past a renewal (624 words each).
TEST(Sampler, mt19937_fill_gives_the_engines_words_and_state) {
  for (int64_t skip : {0, 1, 5, 623, 624, 700}) {
    for (int64_t n : {1, 7, 8, 622, 623, 624, 625, 1300, 4096}) {
      at::mt19937 a(1234 + skip), b(1234 + skip);
      for (int64_t i = 0; i < skip; ++i) a(), b();
      std::vector<uint32_t> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
      for (auto& w : want) w = a();
      glmvoice::llm::mt19937_fill(b, got.data(), n);
      EXPECT_EQ(want, got) << "skip " << skip << ", n " << n;
      const at::mt19937_data_pod da = a.data(), db = b.data();
      EXPECT_TRUE(da.left_ == db.left_ && da.next_ == db.next_ && da.state_ == db.state_) << "skip " << skip << ", n " << n;
      EXPECT_EQ(a(), b()) << "the next word, skip " << skip << ", n " << n;
    }
  }
}

TEST(Sampler, candidate_filter_equals_the_full_sort_bit_for_bit) {
  int64_t cases = 0, differing = 0, ties = 0;
  for (int64_t vocab : {1000, 4099, 168960}) {
    const bool big = vocab > 10000;  // the real vocabulary: fewer combinations (a full sort each)
    const auto sets = logit_sets(vocab);
    for (size_t set = 0; set < sets.size(); ++set) {
      const at::Tensor& z = sets[set];
      for (double t : big ? std::vector<double>{1.0} : std::vector<double>{0.2, 0.8, 1.0, 1.7}) {
        for (int64_t k : big ? std::vector<int64_t>{50} : std::vector<int64_t>{0, 1, 5, 50, 2000}) {
          for (double p : big ? std::vector<double>{0.8, 1.0} : std::vector<double>{0.3, 0.8, 0.95, 1.0}) {
            for (int64_t keep : {1, 3}) {
              SamplingOptions o = opts(t, k, p);
              o.min_tokens_to_keep = keep;
              at::Tensor want = full_sort_filter(z, o), got = sampling_filter(z, o);
              ++cases;
              // Logits without ties: bit for bit. With exact ties (bf16-rounded sets) at the
              // top-p cut, the full sort's unstable order chose which tied token goes; ours
              // cuts in id order. Same count, same values; the swapped ones all tie the cut.
              bool same = at::equal(want, got);
              if (!same && set % 2 == 1) {
                at::Tensor kw = want.isfinite(), kg = got.isfinite(), both = kw & kg, swapped = kw != kg;
                const at::Tensor cut = got.masked_select(kg).min();
                same = kw.sum().item<int64_t>() == kg.sum().item<int64_t>() &&
                       at::equal(want.masked_select(both), got.masked_select(both)) &&
                       (z.masked_select(swapped) / t).eq(cut).all().item<bool>();
                ties += same ? 1 : 0;
              }
              if (!same) {
                ++differing;
                ADD_FAILURE() << "vocab " << vocab << " set " << set << " t " << t << " k " << k << " p " << p
                              << " keep " << keep << ": kept " << want.isfinite().sum().item<int64_t>() << " vs "
                              << got.isfinite().sum().item<int64_t>() << ", "
                              << (want.isfinite() != got.isfinite()).sum().item<int64_t>() << " differ";
              }
            }
          }
        }
      }
    }
  }
  std::printf("sampling_filter vs full sort: %lld cases, %lld bit-identical, %lld differ only in which exactly tied "
              "token the top-p cut keeps, %lld differ otherwise\n",
              (long long)cases, (long long)(cases - ties - differing), (long long)ties, (long long)differing);
}

TEST(Sampler, same_ids_as_the_full_sort_sampler_for_the_same_seed) {
  int64_t draws = 0, differing = 0;
  for (int64_t vocab : {1000, 168960}) {
    const bool big = vocab > 10000;
    const int64_t mask_from = vocab - 223;  // padded rows, as in the real vocabulary
    for (const at::Tensor& z : logit_sets(vocab)) {
      for (const SamplingOptions& o : {opts(0.2, 50, 0.8), opts(0.8, 50, 0.95), opts(1.0, 0, 0.8),
                                       opts(1.5, 20, 1.0), opts(1.0, 0, 1.0)}) {
        for (uint64_t seed : big ? std::vector<uint64_t>{42} : std::vector<uint64_t>{0, 1, 7, 42, 1234567}) {
          Sampler s(seed);
          at::Generator ref = at::detail::createCPUGenerator(seed);
          for (int step = 0; step < (big ? 2 : 12); ++step) {
            // each step sees shifted logits, like a generation does
            at::Tensor step_z = at::roll(z, step * 37);
            const int64_t want = full_sort_sample(step_z, o, mask_from, ref);
            const int64_t got = s.sample(step_z, o, mask_from);
            ++draws;
            if (want != got) ++differing;
          }
        }
      }
    }
  }
  std::printf("sampler vs full-sort sampler: %lld draws, %lld differ\n", (long long)draws, (long long)differing);
  EXPECT_EQ(differing, 0);
}
