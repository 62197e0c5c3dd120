// glmvoice-cli mel / tokenize (ARCHITECTURE.md contract): outputs against the reference
// fixtures, streaming (--chunk) against offline, and the failure contract (non-zero status,
// one line on stderr).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "../lib/speech/speech_test_util.h"
#include "io/npy.h"
#include "test_support.h"

namespace {

struct CliRun {
  int status = -1;
  std::string err;
};

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

CliRun run_cli(const std::string& args) {
  const std::string dir = glmvoice::test::scratch_dir("cli-speech");
  const std::string cmd = quote(glmvoice::test::tool_path("glmvoice-cli")) + " " + args +
                          " >/dev/null 2>" + quote(dir + "/err");
  const int raw = std::system(cmd.c_str());
  CliRun r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream in(dir + "/err");
  std::stringstream ss;
  ss << in.rdbuf();
  r.err = ss.str();
  return r;
}

void write_wav(const std::string& path, const std::vector<float>& x, int rate) {
  std::ofstream out(path, std::ios::binary);
  auto u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](uint16_t v) { out.write(reinterpret_cast<const char*>(&v), 2); };
  const uint32_t bytes = x.size() * 2;
  out.write("RIFF", 4);
  u32(36 + bytes);
  out.write("WAVEfmt ", 8);
  u32(16);
  u16(1);
  u16(1);
  u32(rate);
  u32(rate * 2);
  u16(2);
  u16(16);
  out.write("data", 4);
  u32(bytes);
  for (float v : x) {
    const int16_t s = static_cast<int16_t>(std::max(-32768.0f, std::min(32767.0f, v * 32768.0f)));
    out.write(reinterpret_cast<const char*>(&s), 2);
  }
}

TEST(CliSpeech, test_fixture_mel_and_tokens) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string fx = glmvoice::test::fixtures_dir();
  const std::string dir = glmvoice::test::scratch_dir("cli-speech-fx");
  const std::string model = quote(fx + "/models/tiny-a/tokenizer");
  const std::string wav = quote(fx + "/common/inputs/en.wav");
  ASSERT_EQ(run_cli("mel --model " + model + " " + wav + " -o " + quote(dir + "/mel.npy")).status, 0);
  const at::Tensor mel = glmvoice::io::read_npy(dir + "/mel.npy");
  const at::Tensor ref = glmvoice::io::read_npy(fx + "/common/tokenizer/en.batch0.input_features.npy")[0];
  ASSERT_EQ(mel.sizes(), ref.sizes());
  EXPECT_TRUE(at::allclose(mel, ref, 1e-4, 1e-4));
  const at::Tensor tokens = glmvoice::io::read_npy(fx + "/tiny-a/tokenizer/en.tokens.npy");
  for (const std::string chunk : {"", " --chunk 1", " --chunk 3200"}) {
    ASSERT_EQ(run_cli("tokenize --model " + model + " " + wav + chunk + " -o " + quote(dir + "/ids.npy")).status, 0);
    const at::Tensor ids = glmvoice::io::read_npy(dir + "/ids.npy");
    EXPECT_EQ(ids.scalar_type(), at::kInt);
    EXPECT_TRUE(at::equal(ids.to(at::kLong), tokens)) << "chunk:" << chunk;
  }
}

TEST(CliSpeech, test_streaming_matches_offline_on_tiny_model) {
  const std::string dir = glmvoice::test::scratch_dir("cli-speech-tiny");
  const std::string model = quote(glmvoice::test::tiny_model_dir("tokenizer", "mk-a"));
  write_wav(dir + "/in.wav", glmvoice::test::make_clip(36000, 31), 16000);
  ASSERT_EQ(run_cli("tokenize --model " + model + " " + quote(dir + "/in.wav") + " -o " + quote(dir + "/a.npy")).status, 0);
  ASSERT_EQ(run_cli("tokenize --model " + model + " " + quote(dir + "/in.wav") + " --chunk 777 -o " +
                    quote(dir + "/b.npy")).status, 0);
  const at::Tensor a = glmvoice::io::read_npy(dir + "/a.npy");
  EXPECT_EQ(a.size(0), 29);
  EXPECT_TRUE(at::equal(a, glmvoice::io::read_npy(dir + "/b.npy")));
  ASSERT_EQ(run_cli("mel --model " + model + " " + quote(dir + "/in.wav") + " -o " + quote(dir + "/m.npy")).status, 0);
  EXPECT_EQ(glmvoice::io::read_npy(dir + "/m.npy").sizes(), (std::vector<int64_t>{128, 232}));
}

TEST(CliSpeech, test_bad_input_fails_with_one_line) {
  const std::string dir = glmvoice::test::scratch_dir("cli-speech-bad");
  const std::string model = quote(glmvoice::test::tiny_model_dir("tokenizer", "mk-a"));
  write_wav(dir + "/44k.wav", glmvoice::test::make_clip(4410, 1), 44100);
  std::ofstream(dir + "/text.wav") << "not a wav file";
  for (const std::string& args :
       {"tokenize --model " + model + " " + quote(dir + "/text.wav") + " -o " + quote(dir + "/x.npy"),
        "tokenize --model " + model + " " + quote(dir + "/missing.wav") + " -o " + quote(dir + "/x.npy"),
        "mel --model " + quote(dir + "/no-model") + " " + quote(dir + "/44k.wav") + " -o " + quote(dir + "/x.npy"),
        "tokenize --model " + model + " " + quote(dir + "/44k.wav") + " --chunk 0 -o " + quote(dir + "/x.npy")}) {
    const CliRun r = run_cli(args);
    EXPECT_NE(r.status, 0) << args;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
  }
}

// sox / espeak-ng on PATH (scripts/setup.sh installs both).
bool have(const char* program) { return std::system((std::string("command -v ") + program + " >/dev/null").c_str()) == 0; }

TEST(CliSpeech, test_44k_stereo_file_tokenizes_like_its_16k_version) {
  // Any WAV upstream reads: espeak-ng speech taken by sox to 44.1 kHz stereo 32-bit (channel 1
  // = other speech), and separately to 16 kHz mono 16-bit. tokenize/mel read channel 0 of the
  // first and resample it with torchaudio's sinc filter; the second was resampled by sox. The
  // two resamplers differ by ~1e-3 per sample, which may flip an id where two codewords are
  // almost equally near: at least 90 % of the ids must agree (fixture model when present).
  if (!have("espeak-ng") || !have("sox")) GTEST_SKIP() << "espeak-ng or sox not installed";
  const std::string dir = glmvoice::test::scratch_dir("cli-speech-44k");
  const std::string fx = glmvoice::test::fixtures_dir();
  const std::string model =
      quote(fx.empty() ? glmvoice::test::tiny_model_dir("tokenizer", "mk-a") : fx + "/models/tiny-a/tokenizer");
  const std::string d = quote(dir);
  const std::string cmd =
      "cd " + d + " && espeak-ng -v en -w a.wav 'The quick brown fox jumps over the lazy dog, twice.' && "
      "espeak-ng -v en -w b.wav 'Something else entirely on the other channel.' && "
      "sox -q a.wav -r 44100 -b 32 a44.wav && sox -q b.wav -r 44100 -b 32 b44.wav && "
      "sox -q -M a44.wav b44.wav -b 32 stereo44.wav trim 0 `soxi -D a44.wav` && "
      "sox -q a.wav -r 16000 -b 16 mono16.wav";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ASSERT_EQ(run_cli("tokenize --model " + model + " " + quote(dir + "/stereo44.wav") + " -o " + quote(dir + "/a.npy")).status, 0);
  ASSERT_EQ(run_cli("tokenize --model " + model + " " + quote(dir + "/mono16.wav") + " -o " + quote(dir + "/b.npy")).status, 0);
  ASSERT_EQ(run_cli("mel --model " + model + " " + quote(dir + "/stereo44.wav") + " -o " + quote(dir + "/m.npy")).status, 0);
  const at::Tensor a = glmvoice::io::read_npy(dir + "/a.npy"), b = glmvoice::io::read_npy(dir + "/b.npy");
  ASSERT_EQ(a.numel(), b.numel());
  const int64_t same = (a == b).sum().item<int64_t>();
  std::printf("44.1 kHz stereo vs sox 16 kHz mono: %lld of %lld ids equal\n", static_cast<long long>(same),
              static_cast<long long>(a.numel()));
  EXPECT_GE(same * 10, a.numel() * 9);
  EXPECT_EQ(glmvoice::io::read_npy(dir + "/m.npy").size(0), 128);
}

}  // namespace
