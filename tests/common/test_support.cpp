#include "test_support.h"

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>

#include <unistd.h>

#include "llm/tiny_model.h"
#include "speech/tiny_model.h"
#include "voice/tiny_model.h"

namespace fs = std::filesystem;

namespace glmvoice::test {

std::string fixtures_dir() {
  if (const char* env = std::getenv("GLMVOICE_FIXTURES")) {
    return fs::is_directory(env) ? std::string(env) : std::string();
  }
  fs::path dir = fs::path(GLMVOICE_SOURCE_ROOT) / ".." / "shared" / "fixtures";
  return fs::is_directory(dir / "tiny-a") ? fs::weakly_canonical(dir).string() : std::string();
}

std::string scratch_dir(const std::string& name) {
  static std::atomic<int> counter{0};
  fs::path dir = fs::path(GLMVOICE_BUILD_ROOT) / "test-scratch" /
                 (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string tiny_model_dir(const std::string& kind, const std::string& config, uint64_t seed) {
  static std::mutex mutex;
  static std::map<std::string, std::string> made;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = kind + "|" + config + "|" + std::to_string(seed);
  auto it = made.find(key);
  if (it != made.end()) return it->second;
  std::string dir = scratch_dir("tiny-" + kind);
  if (kind == "tokenizer") {
    speech::write_tiny_tokenizer(dir, config.empty() ? speech::tiny_config_names().at(0) : config, seed);
  } else if (kind == "llm") {
    llm::write_tiny_llm(dir, config.empty() ? llm::tiny_config_names().at(0) : config, seed);
  } else {
    voice::write_tiny_decoder(dir, config.empty() ? voice::tiny_config_names().at(0) : config, seed);
  }
  made[key] = dir;
  return dir;
}

std::string tool_path(const std::string& name) {
  return (fs::path(GLMVOICE_BUILD_ROOT) / "tools" / name).string();
}

}  // namespace glmvoice::test
