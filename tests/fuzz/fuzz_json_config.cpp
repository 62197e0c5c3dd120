// libFuzzer target: JSON config reading. The input is parsed by JsonConfig (typed reads of
// the keys the models use), then loaded as tokenizer_config.json by text::Tokenizer::load
// next to a fixed 256-rank tokenizer.model. Every input must end in a value or a
// glmvoice::Error.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "io/error.h"
#include "io/json_config.h"
#include "text/tokenizer.h"

namespace {

std::string base64(const std::string& in) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  if (i + 1 == in.size()) {
    const uint32_t v = uint8_t(in[i]) << 16;
    out += std::string{kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += std::string{kAlphabet[v >> 18], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
  }
  return out;
}

char g_dir[64];

// A scratch directory holding tokenizer.model with the 256 single-byte ranks.
const std::string& tokenizer_dir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/glmvoice-fuzz-XXXXXX";
    const char* made = mkdtemp(tmpl);
    if (!made) std::abort();
    std::string d = made;
    std::FILE* f = std::fopen((d + "/tokenizer.model").c_str(), "wb");
    for (int b = 0; b < 256; ++b) std::fprintf(f, "%s %d\n", base64(std::string(1, char(b))).c_str(), b);
    std::fclose(f);
    std::snprintf(g_dir, sizeof(g_dir), "%s", made);
    std::atexit([] {  // g_dir, not the std::string: that one is destroyed first
      char path[128];
      std::snprintf(path, sizeof(path), "%s/tokenizer.model", g_dir);
      std::remove(path);
      std::snprintf(path, sizeof(path), "%s/tokenizer_config.json", g_dir);
      std::remove(path);
      ::rmdir(g_dir);
    });
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto config = glmvoice::io::JsonConfig::from_string(text, "fuzz.json");
    for (const char* key : {"hidden_size", "num_layers", "eos_token_id", "model_max_length", "a.b"}) {
      try {
        config.get_int(key, 0);
        config.get_double(key, 0.0);
        config.get_int_list(key);
      } catch (const glmvoice::Error&) {
      }
      try {
        config.get_string(key, "");
        config.get_bool(key, false);
      } catch (const glmvoice::Error&) {
      }
    }
  } catch (const glmvoice::Error&) {
  }
  const std::string& dir = tokenizer_dir();
  const std::string path = dir + "/tokenizer_config.json";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    glmvoice::text::Tokenizer::load(dir);
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
