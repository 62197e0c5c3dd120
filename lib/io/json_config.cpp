// JSON configs through nlohmann::json; every error names the file and the key.
#include "io/json_config.h"

#include <cstdint>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/error.h"

namespace glmvoice::io {

namespace {

std::string type_name(const nlohmann::json& j) { return j.type_name(); }

}  // namespace

JsonConfig JsonConfig::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error(ErrorCode::kNotFound, path, "", "no such file");
  if (std::filesystem::is_directory(path, ec)) throw Error(ErrorCode::kBadFile, path, "", "is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kNotFound, path, "", "cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_string(ss.str(), path);
}

JsonConfig JsonConfig::from_string(const std::string& text, const std::string& name) {
  JsonConfig config;
  config.path_ = name;
  try {
    config.json_ = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(ErrorCode::kBadFile, name, "",
                "malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::kBadFile, name, "", std::string("malformed JSON: ") + e.what());
  }
  return config;
}

// A key is looked up as-is first, then as a dotted path ("metadata.total_size").
static const nlohmann::json* find_key(const nlohmann::json& root, const std::string& key) {
  if (!root.is_object()) return nullptr;
  auto it = root.find(key);
  if (it != root.end()) return &*it;
  const nlohmann::json* node = &root;
  size_t pos = 0;
  while (true) {
    const size_t dot = key.find('.', pos);
    const std::string part = key.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    if (!node->is_object()) return nullptr;
    auto child = node->find(part);
    if (child == node->end()) return nullptr;
    node = &*child;
    if (dot == std::string::npos) return node;
    pos = dot + 1;
  }
}

bool JsonConfig::has(const std::string& key) const {
  const nlohmann::json* j = find_key(json_, key);
  return j && !j->is_null();
}

static const nlohmann::json& require(const JsonConfig& c, const std::string& key) {
  const nlohmann::json* j = find_key(c.json(), key);
  if (!j || j->is_null()) throw Error(ErrorCode::kBadConfig, c.path(), key, "missing key");
  return *j;
}

static int64_t as_int(const JsonConfig& c, const std::string& key, const nlohmann::json& j) {
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_number_float()) {
    const double d = j.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18) return static_cast<int64_t>(d);
  }
  throw Error(ErrorCode::kBadConfig, c.path(), key, "expected an integer, got " + type_name(j) + " " + j.dump());
}

int64_t JsonConfig::get_int(const std::string& key) const { return as_int(*this, key, require(*this, key)); }

double JsonConfig::get_double(const std::string& key) const {
  const nlohmann::json& j = require(*this, key);
  if (!j.is_number()) throw Error(ErrorCode::kBadConfig, path_, key, "expected a number, got " + type_name(j));
  return j.get<double>();
}

bool JsonConfig::get_bool(const std::string& key) const {
  const nlohmann::json& j = require(*this, key);
  if (!j.is_boolean()) throw Error(ErrorCode::kBadConfig, path_, key, "expected a boolean, got " + type_name(j));
  return j.get<bool>();
}

std::string JsonConfig::get_string(const std::string& key) const {
  const nlohmann::json& j = require(*this, key);
  if (!j.is_string()) throw Error(ErrorCode::kBadConfig, path_, key, "expected a string, got " + type_name(j));
  return j.get<std::string>();
}

std::vector<int64_t> JsonConfig::get_int_list(const std::string& key) const {
  const nlohmann::json& j = require(*this, key);
  if (!j.is_array()) throw Error(ErrorCode::kBadConfig, path_, key, "expected a list, got " + type_name(j));
  std::vector<int64_t> out;
  for (size_t i = 0; i < j.size(); ++i) out.push_back(as_int(*this, key + "[" + std::to_string(i) + "]", j[i]));
  return out;
}

int64_t JsonConfig::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}
double JsonConfig::get_double(const std::string& key, double fallback) const {
  return has(key) ? get_double(key) : fallback;
}
bool JsonConfig::get_bool(const std::string& key, bool fallback) const {
  return has(key) ? get_bool(key) : fallback;
}
std::string JsonConfig::get_string(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}

}  // namespace glmvoice::io
