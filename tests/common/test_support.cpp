#include "test_support.h"

#include <cstdint>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <system_error>
#include <vector>

#include <unistd.h>

#include "llm/tiny_model.h"
#include "speech/tiny_model.h"
#include "voice/tiny_model.h"

namespace fs = std::filesystem;

namespace glmvoice::test {

namespace {

bool has_fixtures(const fs::path& dir) { return fs::is_directory(dir / "tiny-a"); }

// The directory holding the running test binary (/proc/self/exe), or "" if unknown.
fs::path executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path() : exe.parent_path();
}

}  // namespace

// Found at run time, never baked in: a build tree moved or cloned elsewhere still finds the
// fixtures beside its own source tree, and CI sees a missing folder as a failure.
std::string fixtures_dir() {
  if (const char* env = std::getenv("GLMVOICE_FIXTURES")) {
    return has_fixtures(env) ? fs::weakly_canonical(env).string() : std::string();
  }
  std::vector<fs::path> candidates;
  if (const char* src = std::getenv("GLMVOICE_SOURCE_ROOT")) {  // set by meson (tests/meson.build)
    candidates.push_back(fs::path(src) / ".." / "shared" / "fixtures");
  }
  // Otherwise the first ancestor of the binary's folder with shared/fixtures beside it
  // (build/ is usually inside the source tree, and ../shared next to that).
  for (fs::path dir = executable_dir(); !dir.empty(); dir = dir.parent_path()) {
    candidates.push_back(dir / "shared" / "fixtures");
    if (dir == dir.root_path()) break;
  }
  for (const auto& dir : candidates) {
    if (has_fixtures(dir)) return fs::weakly_canonical(dir).string();
  }
  return std::string();
}

bool fixtures_required() {
  const char* ci = std::getenv("CI");
  return ci && (std::string(ci) == "true" || std::string(ci) == "1");
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
