// JSON configs (config.json, preprocessor_config.json, tokenizer_config.json,
// generation_config.json, manifests) through nlohmann::json, with errors that name the
// file and key.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace glmvoice::io {

class JsonConfig {
 public:
  // Throws kNotFound / kBadFile ("malformed JSON at byte N: ...").
  static JsonConfig load(const std::string& path);
  static JsonConfig from_string(const std::string& text, const std::string& name);

  const std::string& path() const { return path_; }
  const nlohmann::json& json() const { return json_; }
  bool has(const std::string& key) const;

  // Typed reads; a missing key or wrong type throws kBadConfig naming file + key.
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

 private:
  std::string path_;
  nlohmann::json json_;
};

}  // namespace glmvoice::io
