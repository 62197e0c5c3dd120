// Tiny speech tokenizer checkpoints (spec tokenizer.md §6.1, §6.2); see tiny_model.h.
#include "speech/tiny_model.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/error.h"
#include "io/safetensors.h"

namespace glmvoice::speech {

namespace fs = std::filesystem;

namespace {

struct TinySpec {
  std::string name;
  int64_t d_model, heads, ffn, layers_used, layers_declared, vocab, block, pooling_position;
  bool layout_b;
  double codebook_scale;  // codebook rows U(-1, 1) * scale (~ RMS of pooled hidden states)
};

const std::vector<TinySpec>& specs() {
  static const std::vector<TinySpec> kSpecs = {
      {"mk-a", 64, 4, 256, 2, 4, 64, 40, 2, false, 1.0},
      {"mk-b", 64, 4, 256, 2, 4, 64, 40, 2, true, 1.0},
      {"mk-c", 64, 4, 256, 2, 4, 64, 40, 1, false, 1.0},
      {"real-l2", 1280, 20, 5120, 2, 32, 16384, 200, 2, false, 1.0},
      {"real-l16", 1280, 20, 5120, 16, 32, 16384, 200, 16, false, 1.0},
  };
  return kSpecs;
}

// splitmix64 (Steele, Lea, Flood 2014): our own deterministic PRNG, independent of libtorch.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t state_;
};

at::Tensor uniform(SplitMix64& rng, std::vector<int64_t> shape, double lo, double hi) {
  at::Tensor t = at::empty(shape, at::kFloat);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(lo + (hi - lo) * rng.uniform());
  return t;
}

// Whisper sinusoids(L, D) (spec §6.1).
at::Tensor sinusoids(int64_t length, int64_t channels) {
  at::Tensor t = at::empty({length, channels}, at::kFloat);
  auto a = t.accessor<float, 2>();
  const int64_t half = channels / 2;
  const double inc = std::log(10000.0) / static_cast<double>(half - 1);
  for (int64_t p = 0; p < length; ++p) {
    for (int64_t k = 0; k < half; ++k) {
      const double angle = static_cast<double>(p) * std::exp(-inc * static_cast<double>(k));
      a[p][k] = static_cast<float>(std::sin(angle));
      a[p][half + k] = static_cast<float>(std::cos(angle));
    }
  }
  return t;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw Error(ErrorCode::kNotFound, path.string(), "", "cannot write file");
}

nlohmann::ordered_json config_json(const TinySpec& s) {
  nlohmann::ordered_json j;
  j["architectures"] = {"WhisperVQEncoder"};
  j["model_type"] = "whisper";
  j["activation_function"] = "gelu";
  j["d_model"] = s.d_model;
  j["encoder_attention_heads"] = s.heads;
  j["encoder_ffn_dim"] = s.ffn;
  j["encoder_layers"] = s.layers_declared;
  j["num_mel_bins"] = 128;
  j["max_source_positions"] = 1500;
  j["quantize_position"] = s.layers_used;
  j["pooling_position"] = s.pooling_position;
  j["pooling_kernel_size"] = 4;
  j["pooling_type"] = "avg";
  j["quantize_vocab_size"] = s.vocab;
  j["quantize_causal_block_size"] = s.block;
  j["quantize_encoder_only"] = true;
  j["quantize_ema_decay"] = 0.99;
  j["encoder_causal_convolution"] = true;
  j["encoder_causal_attention"] = false;
  j["quantize_causal_encoder"] = false;
  j["scale_embedding"] = false;
  j["torch_dtype"] = "float32";
  return j;
}

// The real preprocessor_config.json (spec §1.3), unchanged.
nlohmann::ordered_json preprocessor_json() {
  nlohmann::ordered_json j;
  j["chunk_length"] = 30;
  j["feature_extractor_type"] = "WhisperFeatureExtractor";
  j["feature_size"] = 128;
  j["hop_length"] = 160;
  j["n_fft"] = 400;
  j["n_samples"] = 480000;
  j["nb_max_frames"] = 3000;
  j["padding_side"] = "right";
  j["padding_value"] = 0.0;
  j["processor_class"] = "WhisperProcessor";
  j["return_attention_mask"] = false;
  j["sampling_rate"] = 16000;
  return j;
}

using Named = std::vector<std::pair<std::string, at::Tensor>>;

void add_layer(Named& out, SplitMix64& rng, const TinySpec& s, const std::string& p) {
  const int64_t D = s.d_model;
  const double a = 1.0 / std::sqrt(static_cast<double>(D));
  const double f = 1.0 / std::sqrt(static_cast<double>(s.ffn));
  out.emplace_back(p + "self_attn.k_proj.weight", uniform(rng, {D, D}, -a, a));
  out.emplace_back(p + "self_attn.v_proj.weight", uniform(rng, {D, D}, -a, a));
  out.emplace_back(p + "self_attn.v_proj.bias", uniform(rng, {D}, -0.1, 0.1));
  out.emplace_back(p + "self_attn.q_proj.weight", uniform(rng, {D, D}, -a, a));
  out.emplace_back(p + "self_attn.q_proj.bias", uniform(rng, {D}, -0.1, 0.1));
  out.emplace_back(p + "self_attn.out_proj.weight", uniform(rng, {D, D}, -a, a));
  out.emplace_back(p + "self_attn.out_proj.bias", uniform(rng, {D}, -0.1, 0.1));
  out.emplace_back(p + "self_attn_layer_norm.weight", uniform(rng, {D}, 0.9, 1.1));
  out.emplace_back(p + "self_attn_layer_norm.bias", uniform(rng, {D}, -0.1, 0.1));
  out.emplace_back(p + "fc1.weight", uniform(rng, {s.ffn, D}, -a, a));
  out.emplace_back(p + "fc1.bias", uniform(rng, {s.ffn}, -0.1, 0.1));
  out.emplace_back(p + "fc2.weight", uniform(rng, {D, s.ffn}, -f, f));
  out.emplace_back(p + "fc2.bias", uniform(rng, {D}, -0.1, 0.1));
  out.emplace_back(p + "final_layer_norm.weight", uniform(rng, {D}, 0.9, 1.1));
  out.emplace_back(p + "final_layer_norm.bias", uniform(rng, {D}, -0.1, 0.1));
}

}  // namespace

std::vector<std::string> tiny_config_names() {
  std::vector<std::string> names;
  for (const auto& s : specs()) names.push_back(s.name);
  return names;
}

void write_tiny_tokenizer(const std::string& dir, const std::string& config, uint64_t seed) {
  c10::InferenceMode guard;
  const TinySpec* spec = nullptr;
  for (const auto& s : specs()) {
    if (s.name == config) spec = &s;
  }
  if (!spec) {
    std::string known;
    for (const auto& n : tiny_config_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error(ErrorCode::kBadConfig, dir, "config",
                "unknown tokenizer config '" + config + "' (known: " + known + ")");
  }
  const TinySpec& s = *spec;
  fs::create_directories(dir);
  // Same seed -> same values for the shared tensors of every variant (mk-b == mk-a).
  SplitMix64 rng(seed * 0x2545F4914F6CDD1Dull + 0x5EEDull);
  const int64_t D = s.d_model;
  const double c1 = 1.0 / std::sqrt(128.0 * 3.0);
  const double c2 = 1.0 / std::sqrt(static_cast<double>(D) * 3.0);
  Named used;
  used.emplace_back("conv1.weight", uniform(rng, {D, 128, 3}, -c1, c1));
  used.emplace_back("conv1.bias", uniform(rng, {D}, -0.1, 0.1));
  used.emplace_back("conv2.weight", uniform(rng, {D, D, 3}, -c2, c2));
  used.emplace_back("conv2.bias", uniform(rng, {D}, -0.1, 0.1));
  used.emplace_back("embed_positions.weight", sinusoids(1500, D));
  for (int64_t i = 0; i < s.layers_used; ++i) {
    add_layer(used, rng, s, "layers." + std::to_string(i) + ".");
  }
  used.emplace_back("codebook.weight",
                    uniform(rng, {s.vocab, D}, -s.codebook_scale, s.codebook_scale));
  // Ignored by the tokenizer but present in the real file (§7.2).
  used.emplace_back("embed_positions2.weight", sinusoids(1500, D).slice(0, 0, 375).contiguous());
  used.emplace_back("ema_count", at::ones({s.vocab}, at::kFloat));
  used.emplace_back("ema_weight", uniform(rng, {s.vocab, D}, -1.0, 1.0));

  Named tensors;
  if (s.layout_b) {
    for (auto& [name, t] : used) tensors.emplace_back("model.encoder." + name, t);
    for (int64_t i = s.layers_used; i < s.layers_declared; ++i) {
      Named extra;
      add_layer(extra, rng, s, "model.encoder.layers." + std::to_string(i) + ".");
      for (auto& e : extra) tensors.push_back(e);
    }
    tensors.emplace_back("model.encoder.layer_norm.weight", uniform(rng, {D}, 0.9, 1.1));
    tensors.emplace_back("model.encoder.layer_norm.bias", uniform(rng, {D}, -0.1, 0.1));
    tensors.emplace_back("model.decoder.embed_tokens.weight", uniform(rng, {16, D}, -1, 1));
    tensors.emplace_back("model.decoder.layer_norm.weight", uniform(rng, {D}, 0.9, 1.1));
    tensors.emplace_back("proj_out.weight", uniform(rng, {16, D}, -1, 1));
  } else {
    tensors = std::move(used);
  }
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_text(fs::path(dir) / "config.json", config_json(s).dump(2) + "\n");
  write_text(fs::path(dir) / "preprocessor_config.json", preprocessor_json().dump(2) + "\n");
}

}  // namespace glmvoice::speech
