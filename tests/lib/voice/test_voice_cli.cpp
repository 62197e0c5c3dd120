// glmvoice-cli flow / vocode / decode [--stream] against the reference fixtures (tiny-a) and on
// the project's tiny decoder: output shapes, values within the manifest tolerance, WAV output,
// one-line errors with a non-zero exit status.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "io/npy.h"
#include "test_support.h"

namespace {

struct Result {
  int status;
  std::string output;
};

Result run(const std::string& args) {
  const std::string cmd = "OMP_NUM_THREADS=2 " + glmvoice::test::tool_path("glmvoice-cli") + " " + args + " 2>&1";
  Result r{-1, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) r.output.append(buf, n);
  const int status = pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string fixtures() { return glmvoice::test::fixtures_dir(); }
std::string ref_model() { return fixtures() + "/models/tiny-a/decoder"; }
std::string ref(const std::string& name) { return fixtures() + "/tiny-a/decoder/" + name; }

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble).reshape({-1}) - b.to(at::kDouble).reshape({-1})).abs().max().item<double>();
}

TEST(VoiceCli, test_flow_matches_reference) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string out = glmvoice::test::scratch_dir("cli-flow") + "/mel.npy";
  Result r = run("flow --model " + ref_model() + " " + ref("tokens.npy") + " --seed 42 -o " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  at::Tensor mel = glmvoice::io::read_npy(out);
  at::Tensor want = glmvoice::io::read_npy(ref("offline.mel.npy"));
  ASSERT_EQ(mel.sizes(), (std::vector<int64_t>{80, 689}));
  const double err = max_abs_diff(mel, want);
  std::printf("[cli] flow mel max abs err %.3g\n", err);
  EXPECT_LT(err, 2e-3);  // manifest atol
}

TEST(VoiceCli, test_vocode_reference_mel) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string out = glmvoice::test::scratch_dir("cli-vocode") + "/wave.npy";
  Result r = run("vocode --model " + ref_model() + " " + ref("offline.mel.npy") + " -o " + out);
  ASSERT_EQ(r.status, 0) << r.output;
  at::Tensor wave = glmvoice::io::read_npy(out);
  ASSERT_EQ(wave.dim(), 1);
  EXPECT_EQ(wave.size(0), 689 * 256);
  EXPECT_LE(wave.abs().max().item<float>(), 0.99f);
}

TEST(VoiceCli, test_decode_stream) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string dir = glmvoice::test::scratch_dir("cli-decode");
  Result r = run("decode --model " + ref_model() + " " + ref("tokens.npy") + " --stream -o " + dir + "/stream.npy");
  ASSERT_EQ(r.status, 0) << r.output;
  at::Tensor s = glmvoice::io::read_npy(dir + "/stream.npy");
  at::Tensor want = glmvoice::io::read_npy(ref("stream.speech.npy"));
  ASSERT_EQ(s.numel(), 176128) << "spec §5.2: 100 tokens stream to 176128 samples";
  // first block (no cached source) sample-wise; later samples drift in phase (spec P16)
  const double err = max_abs_diff(s.slice(0, 0, 1024), want.slice(0, 0, 1024));
  std::printf("[cli] decode --stream first 1024 samples max abs err %.3g\n", err);
  EXPECT_LT(err, 2e-3);
}

TEST(VoiceCli, test_decode_stream_modes) {
  // 40 tokens in blocks of 10: --mode fast gives as many samples as offline (mel_len 275 x
  // 256); the reference schedule drops a frame per call from the third; a bad mode is an
  // error naming the option.
  const std::string dir = glmvoice::test::scratch_dir("cli-modes");
  glmvoice::io::write_npy(dir + "/ids.npy", at::arange(40, at::kInt));
  const std::string common = "decode --model " + glmvoice::test::tiny_model_dir("decoder") + " " + dir +
                             "/ids.npy --n-timesteps 1 --cfg-rate 0 --stream --block-sizes 10 ";
  Result r = run(common + "--mode fast --context-tokens 20 -o " + dir + "/fast.npy");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(glmvoice::io::read_npy(dir + "/fast.npy").numel(), 275 * 256);
  r = run(common + "--mode reference -o " + dir + "/ref.npy");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(glmvoice::io::read_npy(dir + "/ref.npy").numel(), (275 - 2) * 256);
  r = run(common + "--mode quick -o " + dir + "/x.npy");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("--mode"), std::string::npos) << r.output;
}

TEST(VoiceCli, test_decode_writes_wav) {
  const std::string dir = glmvoice::test::scratch_dir("cli-wav");
  at::Tensor ids = at::arange(25, at::kInt);
  glmvoice::io::write_npy(dir + "/ids.npy", ids);
  Result r = run("decode --model " + glmvoice::test::tiny_model_dir("decoder") + " " + dir +
                 "/ids.npy --n-timesteps 1 -o " + dir + "/out.wav");
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream f(dir + "/out.wav", std::ios::binary | std::ios::ate);
  EXPECT_EQ(static_cast<int64_t>(f.tellg()), 44 + 2 * 44032);
}

TEST(VoiceCli, test_bad_input_one_line_error) {
  const std::string dir = glmvoice::test::scratch_dir("cli-bad");
  glmvoice::io::write_npy(dir + "/ids.npy", at::tensor({1, 2, 64}, at::kInt));
  Result r = run("decode --model " + glmvoice::test::tiny_model_dir("decoder") + " " + dir + "/ids.npy -o " + dir +
                 "/x.npy");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("64"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  r = run("flow --model " + dir + "/nowhere " + dir + "/ids.npy -o " + dir + "/x.npy");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("nowhere"), std::string::npos) << r.output;
  r = run("decode --model " + glmvoice::test::tiny_model_dir("decoder") + " --bogus 1 " + dir + "/ids.npy -o x.npy");
  EXPECT_NE(r.status, 0);
}

}  // namespace
