// glmvoice-cli encode-text / decode-text / logits / generate against the reference fixtures.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <array>
#include <cstdio>
#include <memory>

#include "io/npy.h"
#include "test_support.h"

using namespace glmvoice;

namespace {

std::string run(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf{};
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  *rc = pclose(p);
  return out;
}

}  // namespace

TEST(LlmCli, commands_reproduce_the_fixtures) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string fx = test::fixtures_dir(), model = fx + "/models/tiny-a/llm", ref = fx + "/tiny-a/llm";
  const std::string cli = test::tool_path("glmvoice-cli"), dir = test::scratch_dir("llm-cli");
  int rc = 0;
  std::string out = run(cli + " encode-text --model " + model + " --text 'Hello world' -o " + dir + "/ids.npy", &rc);
  ASSERT_EQ(rc, 0) << out;
  at::Tensor ids = io::read_npy(dir + "/ids.npy");
  EXPECT_EQ(ids.scalar_type(), at::kInt);
  EXPECT_TRUE(at::equal(ids.to(at::kLong), at::tensor(std::vector<int64_t>{558, 560, 525, 262, 78, 81, 75, 67})));
  out = run(cli + " decode-text --model " + model + " " + dir + "/ids.npy", &rc);
  EXPECT_EQ(rc, 0);
  EXPECT_EQ(out, "[gMASK]<sop>Hello world\n");

  out = run(cli + " logits --model " + model + " " + ref + "/prompt.input_ids.npy -o " + dir + "/logits.npy", &rc);
  ASSERT_EQ(rc, 0) << out;
  at::Tensor logits = io::read_npy(dir + "/logits.npy");
  at::Tensor expect = io::read_npy(ref + "/fp32.prompt_logits.npy").squeeze(0);
  ASSERT_EQ(logits.sizes(), expect.sizes());
  EXPECT_LT((logits - expect).abs().max().item<double>(), 1e-4);

  out = run(cli + " generate --model " + model + " " + ref + "/prompt.input_ids.npy --max-new-tokens 40 --greedy " +
                "--no-stop --no-mask -o " + dir + "/gen.npy",
            &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(at::equal(io::read_npy(dir + "/gen.npy").to(at::kLong), io::read_npy(ref + "/fp32.greedy_ids.npy")));

  out = run(cli + " generate --model " + model + " " + ref + "/prompt.input_ids.npy -o " + dir + "/x.npy", &rc);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("max-new-tokens"), std::string::npos) << out;
}

TEST(LlmCli, sampling_is_reproducible_with_a_seed) {
  const std::string model = test::tiny_model_dir("llm");
  const std::string cli = test::tool_path("glmvoice-cli"), dir = test::scratch_dir("llm-cli-seed");
  int rc = 0;
  run(cli + " encode-text --model " + model + " --text 'hello' -o " + dir + "/p.npy", &rc);
  ASSERT_EQ(rc, 0);
  for (const char* name : {"a", "b"}) {
    const auto out = run(cli + " generate --model " + model + " " + dir + "/p.npy --max-new-tokens 8 --temperature 1 " +
                             "--top-p 0.9 --seed 5 -o " + dir + "/" + name + ".npy",
                         &rc);
    ASSERT_EQ(rc, 0) << out;
  }
  EXPECT_TRUE(at::equal(io::read_npy(dir + "/a.npy"), io::read_npy(dir + "/b.npy")));
}
