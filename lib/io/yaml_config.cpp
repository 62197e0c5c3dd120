// HyperPyYAML config.yaml through yaml-cpp (decoder spec §1.2). Values are read as YAML 1.2
// plain scalars with our own conversions (std::stoll / std::stod, True/False), since
// yaml-cpp's YAML 1.1 resolution and HyperPyYAML's differ on floats such as `1e-06`.
#include "io/yaml_config.h"

#include <cstdint>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "io/error.h"

namespace glmvoice::io {

namespace {

constexpr int kMaxRefDepth = 32;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_ref_name(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

}  // namespace

YamlConfig YamlConfig::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(ErrorCode::kNotFound, path, "", "no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kNotFound, path, "", "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_string(ss.str(), path);
}

YamlConfig YamlConfig::from_string(const std::string& text, const std::string& name) {
  YamlConfig config;
  config.path_ = name;
  try {
    config.root_ = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(ErrorCode::kBadFile, name, "",
                "malformed YAML at line " + std::to_string(e.mark.line + 1) + ", column " +
                    std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (!config.root_.IsMap() && !config.root_.IsNull()) {
    throw Error(ErrorCode::kBadFile, name, "", "YAML root is not a mapping");
  }
  return config;
}

// One `!ref <name>` step: the top-level key `name`. `key` names the node in errors.
static YAML::Node deref(const YamlConfig& c, const YAML::Node& node, const std::string& key) {
  if (!node.IsScalar()) throw Error(ErrorCode::kBadConfig, c.path(), key, "!ref is not a scalar");
  const std::string text = node.Scalar();
  if (text.size() < 3 || text.front() != '<' || text.back() != '>' ||
      !is_ref_name(text.substr(1, text.size() - 2))) {
    throw Error(ErrorCode::kUnsupported, c.path(), key,
                "only plain '!ref <name>' references are supported, got '" + text + "'");
  }
  const std::string target = text.substr(1, text.size() - 2);
  const YAML::Node& root = c.root();
  YAML::Node next = root.IsMap() ? root[target] : YAML::Node(YAML::NodeType::Undefined);
  if (!next.IsDefined()) {
    throw Error(ErrorCode::kBadConfig, c.path(), key, "!ref <" + target + ">: no top-level key '" + target + "'");
  }
  return next;
}

// yaml-cpp: Node::operator= writes into the referenced node and reset() refuses invalid
// (zombie) nodes, so every step to another node is a fresh copy-constructed Node.

// parent[part] (a key, or an index into a list), or an undefined node.
static YAML::Node child(const YAML::Node& parent, const std::string& part) {
  if (parent.IsMap()) {
    YAML::Node n = parent[part];
    if (n.IsDefined()) return n;
  } else if (parent.IsSequence() && !part.empty() && part.size() < 9 &&
             part.find_first_not_of("0123456789") == std::string::npos) {
    const size_t index = std::stoul(part);
    if (index < parent.size()) return parent[index];
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

static YAML::Node follow_refs(const YamlConfig& c, const YAML::Node& node, const std::string& key, int depth = 0) {
  if (!node.IsDefined() || node.Tag() != "!ref") return node;
  if (depth >= kMaxRefDepth) throw Error(ErrorCode::kBadConfig, c.path(), key, "!ref chain too deep (cycle?)");
  return follow_refs(c, deref(c, node, key), key, depth + 1);
}

// Follows `!ref <name>` (recursively) and enters the `content` mapping of a
// `!new:omegaconf.DictConfig` node.
static YAML::Node resolve(const YamlConfig& c, const YAML::Node& node, const std::string& key) {
  YAML::Node n = follow_refs(c, node, key);
  if (n.IsDefined() && n.Tag() == "!new:omegaconf.DictConfig" && n.IsMap()) {
    YAML::Node content = child(n, "content");
    if (content.IsDefined()) return follow_refs(c, content, key + ".content");
  }
  return n;
}

// The node at `dotted` below `node` (each step resolved), or an undefined node.
static YAML::Node lookup_from(const YamlConfig& c, const YAML::Node& node, const std::string& dotted,
                              size_t pos, const std::string& walked, bool resolve_last) {
  const size_t dot = dotted.find('.', pos);
  const std::string part = dotted.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
  YAML::Node here = resolve(c, node, walked.empty() ? "(root)" : walked);
  const std::string path = walked.empty() ? part : walked + "." + part;
  YAML::Node direct = child(here, part);
  // Also accept the explicit spelling "cfm_params.content.x".
  YAML::Node next = direct.IsDefined() ? direct : child(follow_refs(c, node, path), part);
  if (!next.IsDefined()) return next;
  if (dot == std::string::npos) return resolve_last ? resolve(c, next, path) : next;
  return lookup_from(c, next, dotted, dot + 1, path, resolve_last);
}

static YAML::Node lookup(const YamlConfig& c, const std::string& dotted, bool resolve_last) {
  return lookup_from(c, c.root(), dotted, 0, "", resolve_last);
}

bool YamlConfig::has(const std::string& dotted) const {
  YAML::Node n = lookup(*this, dotted, true);
  return n.IsDefined() && !n.IsNull();
}

YAML::Node YamlConfig::node(const std::string& dotted) const {
  YAML::Node n = lookup(*this, dotted, true);
  if (!n.IsDefined()) throw Error(ErrorCode::kBadConfig, path_, dotted, "missing key");
  return n;
}

std::string YamlConfig::tag(const std::string& dotted) const {
  // The tag of the referenced node; a DictConfig keeps its own tag.
  YAML::Node n = follow_refs(*this, lookup(*this, dotted, false), dotted);
  if (!n.IsDefined()) throw Error(ErrorCode::kBadConfig, path_, dotted, "missing key");
  const std::string t = n.Tag();
  return (t == "?" || t == "!") ? std::string() : t;
}

static std::string scalar_text(const YamlConfig& c, const YAML::Node& n, const std::string& key, const char* what) {
  if (!n.IsScalar()) {
    throw Error(ErrorCode::kBadConfig, c.path(), key, std::string("expected ") + what + ", got a " +
                                                          (n.IsMap() ? "mapping" : n.IsSequence() ? "list" : "null"));
  }
  return n.Scalar();
}

static int64_t to_int(const YamlConfig& c, const YAML::Node& n, const std::string& key) {
  const std::string text = scalar_text(c, n, key, "an integer");
  if (n.Tag() == "!") throw Error(ErrorCode::kBadConfig, c.path(), key, "expected an integer, got the string '" + text + "'");
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || errno == ERANGE || *end != '\0') {
    throw Error(ErrorCode::kBadConfig, c.path(), key, "expected an integer, got '" + text + "'");
  }
  return v;
}

static double to_double(const YamlConfig& c, const YAML::Node& n, const std::string& key) {
  const std::string text = scalar_text(c, n, key, "a number");
  if (n.Tag() == "!") throw Error(ErrorCode::kBadConfig, c.path(), key, "expected a number, got the string '" + text + "'");
  if (text == ".inf" || text == ".Inf" || text == ".INF" || text == "+.inf") return std::numeric_limits<double>::infinity();
  if (text == "-.inf" || text == "-.Inf" || text == "-.INF") return -std::numeric_limits<double>::infinity();
  if (text == ".nan" || text == ".NaN" || text == ".NAN") return std::numeric_limits<double>::quiet_NaN();
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || text.find_first_of("xXpP") != std::string::npos ||
      text.find("inf") != std::string::npos || text.find("nan") != std::string::npos) {
    throw Error(ErrorCode::kBadConfig, c.path(), key, "expected a number, got '" + text + "'");
  }
  return v;
}

static bool to_bool(const YamlConfig& c, const YAML::Node& n, const std::string& key) {
  const std::string text = scalar_text(c, n, key, "a boolean");
  if (n.Tag() != "!") {
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
  }
  throw Error(ErrorCode::kBadConfig, c.path(), key, "expected true/false, got '" + text + "'");
}

int64_t YamlConfig::get_int(const std::string& dotted) const { return to_int(*this, node(dotted), dotted); }
double YamlConfig::get_double(const std::string& dotted) const { return to_double(*this, node(dotted), dotted); }
bool YamlConfig::get_bool(const std::string& dotted) const { return to_bool(*this, node(dotted), dotted); }
std::string YamlConfig::get_string(const std::string& dotted) const {
  return scalar_text(*this, node(dotted), dotted, "a string");
}

std::vector<int64_t> YamlConfig::get_int_list(const std::string& dotted) const {
  const YAML::Node n = node(dotted);
  if (!n.IsSequence()) throw Error(ErrorCode::kBadConfig, path_, dotted, "expected a list");
  std::vector<int64_t> out;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string key = dotted + "." + std::to_string(i);
    out.push_back(to_int(*this, resolve(*this, n[i], key), key));
  }
  return out;
}

std::vector<double> YamlConfig::get_double_list(const std::string& dotted) const {
  const YAML::Node n = node(dotted);
  if (!n.IsSequence()) throw Error(ErrorCode::kBadConfig, path_, dotted, "expected a list");
  std::vector<double> out;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string key = dotted + "." + std::to_string(i);
    out.push_back(to_double(*this, resolve(*this, n[i], key), key));
  }
  return out;
}

int64_t YamlConfig::get_int(const std::string& dotted, int64_t fallback) const {
  return has(dotted) ? get_int(dotted) : fallback;
}
double YamlConfig::get_double(const std::string& dotted, double fallback) const {
  return has(dotted) ? get_double(dotted) : fallback;
}
bool YamlConfig::get_bool(const std::string& dotted, bool fallback) const {
  return has(dotted) ? get_bool(dotted) : fallback;
}
std::string YamlConfig::get_string(const std::string& dotted, const std::string& fallback) const {
  return has(dotted) ? get_string(dotted) : fallback;
}

void YamlConfig::expect_class(const std::string& dotted, const std::string& class_suffix) const {
  const std::string t = tag(dotted);
  if (t.rfind("!new:", 0) != 0 || !ends_with(t, class_suffix)) {
    throw Error(ErrorCode::kBadConfig, path_, dotted,
                "expected a '!new:..." + class_suffix + "' node, got " + (t.empty() ? "no tag" : "'" + t + "'"));
  }
}

}  // namespace glmvoice::io
