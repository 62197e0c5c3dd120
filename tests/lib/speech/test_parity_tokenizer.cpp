// Parity of the speech tokenizer with the upstream Python reference
// (../shared/fixtures/tiny-a/tokenizer/manifest.json and common/manifest.json).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "io/safetensors.h"
#include "speech/tokenizer_model.h"
#include "speech/tokenizer_state.h"
#include "speech/wav_file.h"
#include "test_support.h"

namespace glmvoice::speech {
namespace {

std::string fx(const std::string& rel) { return test::fixtures_dir() + "/" + rel; }

std::shared_ptr<const TokenizerModel> fixture_model() {
  static std::shared_ptr<const TokenizerModel> model = [] {
    ModelOptions options;
    options.path = fx("models/tiny-a/tokenizer");
    return TokenizerModel::load(options);
  }();
  return model;
}

nlohmann::json manifest(const std::string& rel) {
  std::ifstream in(fx(rel));
  return nlohmann::json::parse(in);
}

std::vector<int64_t> to_vec(const at::Tensor& ids) {
  const at::Tensor t = ids.to(at::kLong).contiguous();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

const char* const kInputs[] = {"en", "zh", "long"};

TEST(ParityTokenizer, test_features_match_reference) {
  GLMVOICE_REQUIRE_FIXTURES();
  const nlohmann::json m = manifest("common/manifest.json");
  auto model = fixture_model();
  for (const char* name : kInputs) {
    const std::string key = std::string(name) + ".batch0.input_features";
    const double atol = m["files"][key]["tolerance"]["atol"];
    const double rtol = m["files"][key]["tolerance"]["rtol"];
    const at::Tensor ref = io::read_npy(fx("common/tokenizer/" + m["files"][key]["file"].get<std::string>()));
    const at::Tensor samples = read_wav_mono16k(fx("common/inputs/" + std::string(name) + ".wav"));
    // ours: [128, sum T] with the segments side by side; reference: [B, 128, T]
    const at::Tensor got = model->features(samples).view({128, ref.size(0), ref.size(2)}).permute({1, 0, 2});
    ASSERT_EQ(got.sizes(), ref.sizes()) << name;
    const at::Tensor err = (got - ref).abs();
    const double max_err = err.max().item<double>();
    std::printf("%s features: max abs err %.3g (atol %g rtol %g)\n", name, max_err, atol, rtol);
    EXPECT_TRUE((err <= atol + rtol * ref.abs()).all().item<bool>()) << name << " max err " << max_err;
    // frame mask: 1 for ceil(n/160) frames of each segment
    const at::Tensor mask = io::read_npy(fx("common/tokenizer/" + std::string(name) + ".batch0.attention_mask.npy"));
    const int64_t n = samples.size(0);
    int64_t expected_valid = 0;
    for (int64_t b = 0; b < mask.size(0); ++b) {
      const int64_t seg = std::min<int64_t>(480000, n - 480000 * b);
      expected_valid += (seg + 159) / 160;
    }
    EXPECT_EQ(mask.sum().item<int64_t>(), expected_valid) << name;
  }
}

TEST(ParityTokenizer, test_offline_ids_match_reference) {
  GLMVOICE_REQUIRE_FIXTURES();
  auto model = fixture_model();
  for (const char* name : kInputs) {
    const at::Tensor samples = read_wav_mono16k(fx("common/inputs/" + std::string(name) + ".wav"));
    const auto ref = to_vec(io::read_npy(fx("tiny-a/tokenizer/" + std::string(name) + ".tokens.npy")));
    EXPECT_EQ(to_vec(model->tokenize(samples)), ref) << name;
    // raw encoder ids incl. padded positions, per segment of batch 0
    const at::Tensor raw = io::read_npy(
        fx("tiny-a/tokenizer/" + std::string(name) + ".batch0.quantized_token_ids.npy"));
    const at::Tensor feats = model->features(samples);
    const int64_t T = feats.size(1) / raw.size(0);
    for (int64_t b = 0; b < raw.size(0); ++b) {
      const int64_t n = std::min<int64_t>(480000, samples.size(0) - 480000 * b);
      const auto out = model->forward_segment(feats.slice(1, b * T, (b + 1) * T), n);
      EXPECT_EQ(to_vec(out.ids), to_vec(raw[b])) << name << " segment " << b;
    }
  }
}

TEST(ParityTokenizer, test_last_hidden_state_matches_reference) {
  GLMVOICE_REQUIRE_FIXTURES();
  // last_hidden_state = codebook[ids] + embed_positions2 (no layer_norm): checks the ids
  // index the same codebook rows the reference used.
  auto model = fixture_model();
  const at::Tensor samples = read_wav_mono16k(fx("common/inputs/en.wav"));
  const at::Tensor ids = model->tokenize(samples);
  const io::SafeTensors st = io::SafeTensors::open(fx("models/tiny-a/tokenizer"));
  const at::Tensor codebook = st.load("model.encoder.codebook.weight");
  const at::Tensor pos2 = st.load("model.encoder.embed_positions2.weight");
  const at::Tensor got = codebook.index_select(0, ids) + pos2.slice(0, 0, ids.size(0));
  const at::Tensor ref = io::read_npy(fx("tiny-a/tokenizer/en.batch0.last_hidden_state.npy"))[0];
  const double err = (got - ref).abs().max().item<double>();
  std::printf("en last_hidden_state: max abs err %.3g\n", err);
  EXPECT_TRUE(at::allclose(got, ref, 1e-4, 1e-4));
}

std::vector<int64_t> stream(const std::shared_ptr<const TokenizerModel>& model, const at::Tensor& samples,
                            const std::vector<int64_t>& sizes, TokenizerStreamOptions options = {}) {
  TokenizerState state(model, options);
  std::vector<int64_t> ids;
  const float* p = samples.data_ptr<float>();
  const int64_t n = samples.size(0);
  size_t k = 0;
  for (int64_t i = 0; i < n;) {
    const int64_t take = std::min<int64_t>(sizes[k++ % sizes.size()], n - i);
    for (int32_t id : state.push(p + i, take)) ids.push_back(id);
    i += take;
  }
  for (int32_t id : state.finish()) ids.push_back(id);
  return ids;
}

std::vector<int64_t> random_sizes(uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int64_t> dist(1, 20000);
  std::vector<int64_t> sizes(64);
  for (auto& s : sizes) s = dist(gen);
  return sizes;
}

TEST(ParityTokenizer, test_streaming_ids_match_reference) {
  GLMVOICE_REQUIRE_FIXTURES();
  // en and zh: the loudest log-mel frame lies in the first attention block, so streaming is
  // exact (spec §5.3) for every push size.
  auto model = fixture_model();
  for (const char* name : {"en", "zh"}) {
    const at::Tensor samples = read_wav_mono16k(fx("common/inputs/" + std::string(name) + ".wav"));
    const auto ref = to_vec(io::read_npy(fx("tiny-a/tokenizer/" + std::string(name) + ".tokens.npy")));
    for (const auto& sizes : std::vector<std::vector<int64_t>>{
             {1}, {160}, {1000}, {4999}, {64001}, random_sizes(1), random_sizes(2)}) {
      EXPECT_EQ(stream(model, samples, sizes), ref) << name << " first push " << sizes[0];
    }
  }
}

TEST(ParityTokenizer, test_streaming_long_segments) {
  GLMVOICE_REQUIRE_FIXTURES();
  // long.wav = 30 s + 8.7 s. Its loudest frame of segment 0 lies in block 4 (of 8), so
  // blocks 0-3 are floored lower while streaming and segment-0 ids may differ (spec §5.2,
  // documented); segment 1 (incl. upstream's 30 s batch padding) must match exactly, and the
  // offline-exact streaming mode must match everything.
  auto model = fixture_model();
  const at::Tensor samples = read_wav_mono16k(fx("common/inputs/long.wav"));
  const auto ref = to_vec(io::read_npy(fx("tiny-a/tokenizer/long.tokens.npy")));
  ASSERT_EQ(ref.size(), 485u);
  std::vector<int64_t> first;
  for (const auto& sizes : std::vector<std::vector<int64_t>>{{16000}, {4096}, random_sizes(3)}) {
    const auto got = stream(model, samples, sizes);
    ASSERT_EQ(got.size(), ref.size());
    if (first.empty()) first = got;
    EXPECT_EQ(got, first) << "streaming must not depend on push sizes";
    EXPECT_EQ(std::vector<int64_t>(got.begin() + 375, got.end()),
              std::vector<int64_t>(ref.begin() + 375, ref.end()));
  }
  int64_t differ = 0;
  for (size_t i = 0; i < 375; ++i) differ += first[i] != ref[i];
  std::printf("long.wav streaming: %lld of 375 segment-0 ids differ (late maximum, spec 5.2)\n",
              static_cast<long long>(differ));
  TokenizerStreamOptions exact;
  exact.offline_exact = true;
  EXPECT_EQ(stream(model, samples, {12345}, exact), ref);
}

}  // namespace
}  // namespace glmvoice::speech
