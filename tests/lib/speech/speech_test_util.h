// Helpers shared by the speech tests: deterministic test audio and model-directory edits.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace glmvoice::test {

// Speech-like test audio: a gliding two-tone mixture with amplitude modulation and a little
// noise; optionally a loud 1 kHz + noise burst of 50 ms starting at `loud_at` (samples;
// negative = none). Deterministic in `seed`.
inline std::vector<float> make_clip(int64_t n, uint64_t seed, int64_t loud_at = 0,
                                    float level = 0.1f) {
  std::vector<float> x(n);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto noise = [&s]() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) / 9007199254740992.0 * 2.0 - 1.0;
  };
  double ph1 = 0, ph2 = 0;
  const double off = static_cast<double>(seed % 7);
  for (int64_t i = 0; i < n; ++i) {
    const double t = i / 16000.0 + off;
    const double f1 = 250 + 150 * std::sin(2 * M_PI * 0.9 * t);
    const double f2 = 1200 + 700 * std::sin(2 * M_PI * 0.37 * t + 1.0);
    ph1 += 2 * M_PI * f1 / 16000.0;
    ph2 += 2 * M_PI * f2 / 16000.0;
    const double env = 0.55 + 0.45 * std::sin(2 * M_PI * 3.1 * t);
    double v = level * env * (std::sin(ph1) + 0.5 * std::sin(ph2)) + 0.01 * level * noise();
    if (loud_at >= 0 && i >= loud_at && i < loud_at + 800) {
      v += 0.8 * std::sin(2 * M_PI * 1000.0 * i / 16000.0) + 0.1 * noise();
    }
    x[i] = static_cast<float>(v);
  }
  return x;
}

inline at::Tensor to_tensor(const std::vector<float>& x) {
  return at::from_blob(const_cast<float*>(x.data()), {static_cast<int64_t>(x.size())}, at::kFloat).clone();
}

// Copies a tokenizer model directory, letting `edit_tensors` change the tensor list and
// `edit_config` change config.json.
inline std::string edit_model(
    const std::string& src, const std::string& dst,
    const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit_tensors,
    const std::function<void(nlohmann::json&)>& edit_config = {}) {
  namespace fs = std::filesystem;
  fs::create_directories(dst);
  const io::SafeTensors st = io::SafeTensors::open(src);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : st.names()) tensors.emplace_back(name, st.load(name));
  if (edit_tensors) edit_tensors(tensors);
  io::write_safetensors((fs::path(dst) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  fs::copy_file(fs::path(src) / "preprocessor_config.json", fs::path(dst) / "preprocessor_config.json",
                fs::copy_options::overwrite_existing);
  std::ifstream in(fs::path(src) / "config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  if (edit_config) edit_config(config);
  std::ofstream(fs::path(dst) / "config.json") << config.dump(2);
  return dst;
}

}  // namespace glmvoice::test
