// glmvoice-cli inspect on every fixture model directory and on the tiny models, and its
// failure contract: a bad directory gives a non-zero status and exactly one line on stderr.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

struct CliRun {
  int status = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

CliRun run_cli(const std::string& args) {
  const std::string dir = glmvoice::test::scratch_dir("cli-inspect");
  const std::string cmd = quote(glmvoice::test::tool_path("glmvoice-cli")) + " " + args + " >" +
                          quote(dir + "/out") + " 2>" + quote(dir + "/err");
  const int raw = std::system(cmd.c_str());
  CliRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = slurp(dir + "/out");
  r.err = slurp(dir + "/err");
  return r;
}

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

}  // namespace

TEST(CliInspect, FixtureTokenizer) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string dir = glmvoice::test::fixtures_dir() + "/models/tiny-a/tokenizer";
  CliRun r = run_cli("inspect --model " + quote(dir));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "kind: tokenizer")) << r.out;
  EXPECT_TRUE(has(r.out, "d_model 64")) << r.out;
  const auto st = glmvoice::io::SafeTensors::open(dir);
  EXPECT_TRUE(has(r.out, "tensors: " + std::to_string(st.size()))) << r.out;
  EXPECT_TRUE(has(r.out, "dtypes: F32 x" + std::to_string(st.size()))) << r.out;
  EXPECT_TRUE(has(r.out, "file model.safetensors")) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST(CliInspect, FixtureLlm) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string dir = glmvoice::test::fixtures_dir() + "/models/tiny-a/llm";
  CliRun r = run_cli("inspect --model " + quote(dir));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "kind: llm")) << r.out;
  EXPECT_TRUE(has(r.out, "torch_dtype bfloat16")) << r.out;
  EXPECT_TRUE(has(r.out, "(2 files)")) << r.out;
  EXPECT_TRUE(has(r.out, "file model-00001-of-00002.safetensors")) << r.out;
  EXPECT_TRUE(has(r.out, "file model-00002-of-00002.safetensors")) << r.out;
  const auto st = glmvoice::io::SafeTensors::open(dir);
  EXPECT_TRUE(has(r.out, "tensors: " + std::to_string(st.size()))) << r.out;
  EXPECT_TRUE(has(r.out, "BF16 x" + std::to_string(st.size()))) << r.out;
  EXPECT_TRUE(has(r.out, "tensor bytes: " + std::to_string(st.total_bytes()) + " bytes")) << r.out;
}

TEST(CliInspect, FixtureDecoder) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string dir = glmvoice::test::fixtures_dir() + "/models/tiny-a/decoder";
  CliRun r = run_cli("inspect --model " + quote(dir));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(has(r.out, "kind: decoder")) << r.out;
  EXPECT_TRUE(has(r.out, "sampling_rate 22050")) << r.out;  // through !ref <sample_rate>
  for (const char* f : {"flow.pt", "hift.pt"}) {
    const auto sd = glmvoice::io::load_torch_state_dict(dir + "/" + f);
    EXPECT_TRUE(has(r.out, std::string(f) + ": " + std::to_string(sd.entries.size()) + " tensors")) << r.out;
  }
  EXPECT_TRUE(has(r.out, "weight-norm pairs")) << r.out;
}

TEST(CliInspect, TinyModels) {
  for (const std::string kind : {"tokenizer", "llm", "decoder"}) {
    std::string dir;
    try {
      dir = glmvoice::test::tiny_model_dir(kind);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "tiny " << kind << " writer failed: " << e.what();
      continue;
    }
    CliRun r = run_cli("inspect --model " + quote(dir));
    EXPECT_EQ(r.status, 0) << kind << ": " << r.err;
    EXPECT_TRUE(has(r.out, "kind: " + kind)) << r.out;
  }
}

TEST(CliInspect, BadPathOneLine) {
  for (const std::string& args : {std::string("inspect --model /nonexistent/model/dir"),
                                 "inspect --model " + quote(glmvoice::test::scratch_dir("not-a-model")),
                                 std::string("inspect"), std::string("inspect --model")}) {
    CliRun r = run_cli(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_EQ(count_lines(r.err), 1u) << args << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << args << ": " << r.out;
  }
}

TEST(CliInspect, BrokenCheckpointOneLine) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string src = glmvoice::test::fixtures_dir() + "/models/tiny-a";
  // Decoder without hift.pt; decoder with a truncated flow.pt; llm with a shard missing.
  const std::string dec = glmvoice::test::scratch_dir("cli-dec");
  fs::copy_file(src + "/decoder/config.yaml", dec + "/config.yaml");
  fs::copy_file(src + "/decoder/flow.pt", dec + "/flow.pt");
  CliRun r = run_cli("inspect --model " + quote(dec));
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_TRUE(has(r.err, "hift.pt")) << r.err;

  const std::string bytes = slurp(src + "/decoder/hift.pt");
  std::ofstream(dec + "/hift.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  r = run_cli("inspect --model " + quote(dec));
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;

  const std::string llm = glmvoice::test::scratch_dir("cli-llm");
  for (const auto& e : fs::directory_iterator(src + "/llm")) {
    if (e.path().filename() != "model-00002-of-00002.safetensors") fs::copy_file(e.path(), llm / e.path().filename());
  }
  r = run_cli("inspect --model " + quote(llm));
  EXPECT_NE(r.status, 0);
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_TRUE(has(r.err, "model-00002-of-00002.safetensors")) << r.err;
}
