// Shared helpers for the gtest-based tests: where the fixtures are, scratch directories,
// and tiny models written on demand by the lib's tiny-model writers.
#pragma once

#include <string>

namespace glmvoice::test {

// ../shared/fixtures next to the source tree (GLMVOICE_FIXTURES overrides), or "" if absent.
std::string fixtures_dir();
// A fresh empty directory under the build tree, unique per call.
std::string scratch_dir(const std::string& name);
// Tiny models written once per test process into the build tree (kind: tokenizer|llm|decoder).
std::string tiny_model_dir(const std::string& kind, const std::string& config = "", uint64_t seed = 0);
// Path of a built tool (glmvoice-cli, glmvoice-mkmodel) in the build tree.
std::string tool_path(const std::string& name);

}  // namespace glmvoice::test

// Skips the current gtest when the shared fixtures are absent, saying so.
#define GLMVOICE_REQUIRE_FIXTURES()                                                   \
  do {                                                                                \
    if (::glmvoice::test::fixtures_dir().empty())                                     \
      GTEST_SKIP() << "../shared/fixtures not found (set GLMVOICE_FIXTURES): skipped"; \
  } while (0)
