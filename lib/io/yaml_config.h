// HyperPyYAML config.yaml (decoder spec §1.2) through yaml-cpp: plain values are read,
// `!new:`/`!name:` class tags are kept for validation only, `!ref <name>` is resolved to the
// top-level key `name` (recursively), `!apply:` nodes are ignored.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <vector>

namespace glmvoice::io {

class YamlConfig {
 public:
  static YamlConfig load(const std::string& path);  // kNotFound / kBadFile
  static YamlConfig from_string(const std::string& text, const std::string& name);

  const std::string& path() const { return path_; }
  const YAML::Node& root() const { return root_; }

  // Dotted paths from the root ("flow.encoder.output_size"); `!ref` followed, and a
  // `!new:omegaconf.DictConfig` node is entered through its `content` mapping.
  bool has(const std::string& dotted) const;
  YAML::Node node(const std::string& dotted) const;   // kBadConfig if absent
  std::string tag(const std::string& dotted) const;   // e.g. "!new:cosyvoice.flow.flow.MaskedDiffWithXvec"
  int64_t get_int(const std::string& dotted) const;
  double get_double(const std::string& dotted) const;   // std::stod, YAML 1.2 floats
  bool get_bool(const std::string& dotted) const;       // true/True/false/False
  std::string get_string(const std::string& dotted) const;
  std::vector<int64_t> get_int_list(const std::string& dotted) const;
  std::vector<double> get_double_list(const std::string& dotted) const;
  int64_t get_int(const std::string& dotted, int64_t fallback) const;
  double get_double(const std::string& dotted, double fallback) const;
  bool get_bool(const std::string& dotted, bool fallback) const;
  std::string get_string(const std::string& dotted, const std::string& fallback) const;
  // Throws kBadConfig unless tag(dotted) ends with `class_suffix`.
  void expect_class(const std::string& dotted, const std::string& class_suffix) const;

 private:
  std::string path_;
  YAML::Node root_;
};

}  // namespace glmvoice::io
