// libFuzzer target: tokenizer.model ("base64 rank" lines) through text::Tokenizer::load next
// to a fixed tokenizer_config.json (the 7 ids the chat protocol needs, far above any rank),
// then, when it loads, a round trip of a mixed English/Chinese/special-token string through
// encode and decode (BPE over the fuzzed ranks). Every input must end in a tokenizer or a
// glmvoice::Error.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "io/error.h"
#include "text/tokenizer.h"

namespace {

char g_dir[64];

const std::string& scratch() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/glmvoice-fuzz-tok-XXXXXX";
    const char* made = mkdtemp(tmpl);
    if (!made) std::abort();
    std::snprintf(g_dir, sizeof(g_dir), "%s", made);
    std::FILE* f = std::fopen((std::string(made) + "/tokenizer_config.json").c_str(), "wb");
    if (!f) std::abort();
    std::fprintf(f, "{\"added_tokens_decoder\": {");
    const char* names[] = {"[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|begin_of_audio|>",
                           "<|end_of_audio|>", "<|audio_0|>", "<|audio_1|>"};
    for (int i = 0; i < 9; ++i) std::fprintf(f, "%s\"%d\": {\"content\": \"%s\"}", i ? ", " : "", 20000000 + i, names[i]);
    std::fprintf(f, "}}\n");
    std::fclose(f);
    std::atexit([] {  // g_dir, not the std::string: that one is destroyed first
      char path[128];
      for (const char* name : {"tokenizer.model", "tokenizer_config.json"}) {
        std::snprintf(path, sizeof(path), "%s/%s", g_dir, name);
        std::remove(path);
      }
      ::rmdir(g_dir);
    });
    return std::string(made);
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = scratch();
  std::FILE* f = std::fopen((dir + "/tokenizer.model").c_str(), "wb");
  if (!f) std::abort();
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    const auto tok = glmvoice::text::Tokenizer::load(dir);
    const auto ids = tok.encode("[gMASK]<sop>Hello, world! 你好 <|audio_1|> 123", true);
    tok.decode(ids);
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
