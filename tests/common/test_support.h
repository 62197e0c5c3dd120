// Shared helpers for the gtest-based tests: where the fixtures are, scratch directories,
// and tiny models written on demand by the lib's tiny-model writers.
#pragma once

#include <cstdint>
#include <string>

namespace glmvoice::test {

// The reference fixtures, found at run time: $GLMVOICE_FIXTURES, else
// $GLMVOICE_SOURCE_ROOT/../shared/fixtures, else shared/fixtures beside an ancestor of the
// test binary's folder; "" if none holds tiny-a/.
std::string fixtures_dir();
// True under CI (CI=true): a missing fixtures folder is then a failure, not a skip.
bool fixtures_required();
// A fresh empty directory under the build tree, unique per call.
std::string scratch_dir(const std::string& name);
// Tiny models written once per test process into the build tree (kind: tokenizer|llm|decoder).
std::string tiny_model_dir(const std::string& kind, const std::string& config = "", uint64_t seed = 0);
// Path of a built tool (glmvoice-cli, glmvoice-mkmodel) in the build tree.
std::string tool_path(const std::string& name);

}  // namespace glmvoice::test

// Skips the current gtest when the shared fixtures are absent, saying so; under CI=true the
// test fails instead, so a CI run without fixtures cannot pass by checking nothing.
#define GLMVOICE_REQUIRE_FIXTURES()                                                          \
  do {                                                                                       \
    if (::glmvoice::test::fixtures_dir().empty()) {                                          \
      if (::glmvoice::test::fixtures_required())                                             \
        GTEST_FAIL() << "CI=true and ../shared/fixtures not found (set GLMVOICE_FIXTURES)";   \
      GTEST_SKIP() << "../shared/fixtures not found (set GLMVOICE_FIXTURES): skipped";        \
    }                                                                                        \
  } while (0)
