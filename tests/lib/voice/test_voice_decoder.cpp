// lib/voice on the project's own tiny checkpoints (decoder spec §6): config and checkpoint
// checks, mel-length formula, the streaming length table of spec §5.2, determinism, chunking
// invariance, reset, bad input.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "io/error.h"
#include "test_support.h"
#include "voice/decoder_model.h"
#include "voice/hift_model.h"
#include "voice/tiny_model.h"

namespace {

using glmvoice::Error;
using glmvoice::ErrorCode;
using glmvoice::voice::BlockReport;
using glmvoice::voice::DecoderModel;
using glmvoice::voice::DecoderState;
using glmvoice::voice::StreamOptions;

std::shared_ptr<const DecoderModel> load(const std::string& dir) {
  return DecoderModel::load({dir, c10::Device(c10::kCPU), c10::kFloat});
}

std::shared_ptr<const DecoderModel> tiny() {
  static auto m = load(glmvoice::test::tiny_model_dir("decoder"));
  return m;
}

// One Euler step without CFG: lengths, chunking and state logic do not depend on the solver.
StreamOptions fast_options() {
  StreamOptions so;
  so.n_timesteps = 1;
  so.cfg_rate = 0;
  return so;
}

std::vector<int32_t> random_ids(size_t n, int64_t vocab, unsigned seed = 1) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  return ids;
}

// Pushes `ids` in chunks of `chunk`, returns (emitted chunk sizes, concatenated audio).
std::pair<std::vector<int64_t>, at::Tensor> stream(DecoderState& state, const std::vector<int32_t>& ids,
                                                   size_t chunk) {
  std::vector<int64_t> sizes;
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    at::Tensor a = state.push(ids.data() + i, std::min(chunk, ids.size() - i));
    if (a.numel()) {
      sizes.push_back(a.numel());
      parts.push_back(a);
    }
  }
  at::Tensor tail = state.finish();
  if (tail.numel()) {
    sizes.push_back(tail.numel());
    parts.push_back(tail);
  }
  return {sizes, parts.empty() ? at::empty({0}) : at::cat(parts, 0)};
}

TEST(VoiceDecoder, test_mel_len_formula) {
  auto m = tiny();
  const std::pair<int64_t, int64_t> cases[] = {{10, 68},    {25, 172},   {26, 179},   {50, 344},
                                               {75, 516},   {100, 689},  {175, 1205}, {200, 1378},
                                               {325, 2239}, {525, 3617}, {3392, 23372}};
  for (auto [t, want] : cases) EXPECT_EQ(m->mel_len(t), want) << t << " tokens";
}

TEST(VoiceDecoder, test_tiny_model_shapes) {
  auto m = tiny();
  EXPECT_EQ(m->vocab_size(), 64);
  EXPECT_EQ(m->sample_rate(), 22050);
  EXPECT_EQ(m->samples_per_frame(), 256);
  EXPECT_EQ(m->flow_parameters(), 174224);  // spec §6
  // 98,233 stored values (spec §6) minus the 754 weight-norm g values folded away.
  EXPECT_EQ(m->hift_parameters(), 98233 - 754);
}

TEST(VoiceDecoder, test_offline_25_tokens_length_and_range) {
  DecoderState state(tiny(), fast_options());
  at::Tensor audio = state.decode_offline(random_ids(25, 64));
  EXPECT_EQ(audio.numel(), 44032);
  EXPECT_LE(audio.abs().max().item<float>(), 0.99f);
  EXPECT_GT(audio.abs().max().item<float>(), 0.0f);
}

TEST(VoiceDecoder, test_voiced_and_unvoiced_frames) {
  c10::InferenceMode guard;
  auto m = tiny();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(42);
  std::vector<int32_t> ids = random_ids(40, 64);
  at::Tensor tok = at::tensor(ids, at::kInt).to(at::kLong).unsqueeze(0);
  at::Tensor mel = m->flow(tok, at::Tensor(), at::Tensor(), gen, 10);
  glmvoice::voice::HiftTaps taps;
  m->hift(mel, at::Tensor(), gen, &taps);
  const int64_t voiced = (taps.f0 > 10).sum().item<int64_t>();
  EXPECT_GT(voiced, 0) << "no voiced frame: the voiced SineGen branch is not exercised";
  EXPECT_LT(voiced, taps.f0.numel()) << "no unvoiced frame";
}

TEST(VoiceDecoder, test_deterministic_in_seed) {
  std::vector<int32_t> ids = random_ids(30, 64);
  StreamOptions so;
  so.n_timesteps = 2;  // CFG on
  DecoderState a(tiny(), so), b(tiny(), so);
  StreamOptions other = so;
  other.seed = 7;
  DecoderState c(tiny(), other);
  at::Tensor xa = a.decode_offline(ids), xb = b.decode_offline(ids), xc = c.decode_offline(ids);
  EXPECT_TRUE(at::equal(xa, xb));
  EXPECT_FALSE(at::equal(xa, xc));
}

TEST(VoiceDecoder, test_stream_lengths_table) {
  // Spec §5.2 table (one-token lag, blocks 25, 50, 100, 150, 200, ...). The lengths do not
  // depend on the number of Euler steps: one step without CFG keeps 1000 tokens fast.
  StreamOptions fast = fast_options();
  struct Case {
    size_t tokens;
    std::vector<int64_t> chunks;
  };
  const Case cases[] = {
      {25, {44032}},
      {26, {35072, 10752}},
      {100, {35072, 88064, 52992}},
      {1000, {35072, 88064, 176128, 264448, 352512, 352512, 352512, 141056}},
  };
  for (const auto& c : cases) {
    DecoderState state(tiny(), fast);
    std::vector<BlockReport> reports;
    state.set_observer([&](const BlockReport& r) { reports.push_back(r); });
    auto [sizes, audio] = stream(state, random_ids(c.tokens, 64, 3), 1);
    EXPECT_EQ(sizes, c.chunks) << c.tokens << " tokens";
    int64_t total = 0;
    for (int64_t s : c.chunks) total += s;
    EXPECT_EQ(audio.numel(), total);
    if (c.tokens == 1000) {
      const int64_t prompt[8] = {0, 138, 483, 1172, 2206, 3584, 4962, 6340};
      ASSERT_EQ(reports.size(), 8u);
      for (int i = 0; i < 8; ++i) EXPECT_EQ(reports[i].prompt_frames, prompt[i]) << "call " << i + 1;
    }
  }
}

TEST(VoiceDecoder, test_stream_chunking_invariant) {
  std::vector<int32_t> ids = random_ids(90, 64, 5);
  StreamOptions so = fast_options();
  so.block_sizes = {10, 20, 30};
  DecoderState s1(tiny(), so), s7(tiny(), so), sall(tiny(), so);
  auto [z1, a1] = stream(s1, ids, 1);
  auto [z7, a7] = stream(s7, ids, 7);
  auto [zall, aall] = stream(sall, ids, ids.size());
  EXPECT_TRUE(at::equal(a1, a7));
  EXPECT_TRUE(at::equal(a1, aall));
  EXPECT_EQ(z1.size(), 4u);  // 10, 20, 30 with lag, then 30 final
}

TEST(VoiceDecoder, test_reset_equals_fresh) {
  std::vector<int32_t> ids = random_ids(40, 64, 9);
  StreamOptions so = fast_options();
  DecoderState used(tiny(), so), fresh(tiny(), so);
  used.push(random_ids(33, 64, 11));  // leaves overlap, cache, prompt and pending behind
  EXPECT_FALSE(used.idle());
  used.reset();
  EXPECT_TRUE(used.idle());
  auto [za, a] = stream(used, ids, 1);
  auto [zb, b] = stream(fresh, ids, 1);
  EXPECT_TRUE(at::equal(a, b));
}

TEST(VoiceDecoder, test_bad_token_rejected) {
  DecoderState state(tiny());
  std::vector<int32_t> ids = {1, 2, 64};
  try {
    state.push(ids);
    FAIL() << "id 64 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadInput);
    EXPECT_NE(std::string(e.what()).find("64"), std::string::npos) << e.what();
  }
  EXPECT_EQ(state.pending_tokens(), 0) << "a refused buffer must not be half-applied";
}

TEST(VoiceDecoder, test_weight_norm_spellings_identical) {
  std::vector<int32_t> ids = random_ids(26, 64, 13);
  StreamOptions so = fast_options();
  at::Tensor ref;
  for (const auto& name : glmvoice::voice::tiny_config_names()) {
    DecoderState s(load(glmvoice::test::tiny_model_dir("decoder", name)), so);
    at::Tensor a = s.decode_offline(ids);
    if (!ref.defined()) ref = a;
    else EXPECT_TRUE(at::equal(ref, a)) << name;
  }
}

void replace_in_file(const std::string& path, const std::string& from, const std::string& to) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  auto pos = s.find(from);
  ASSERT_NE(pos, std::string::npos) << from;
  s.replace(pos, from.size(), to);
  std::ofstream(path) << s;
}

TEST(VoiceDecoder, test_config_checkpoint_mismatch) {
  const std::string dir = glmvoice::test::scratch_dir("decoder-mismatch");
  glmvoice::voice::write_tiny_decoder(dir, "tiny", 0);
  replace_in_file(dir + "/config.yaml", "num_mid_blocks: 2", "num_mid_blocks: 3");
  try {
    load(dir);
    FAIL() << "mismatch accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMismatch);
    EXPECT_NE(std::string(e.what()).find("mid_blocks.2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("flow.pt"), std::string::npos) << e.what();
  }
  glmvoice::voice::write_tiny_decoder(dir, "tiny", 0);
  replace_in_file(dir + "/config.yaml", "num_mid_blocks: 2", "num_mid_blocks: 1");
  EXPECT_THROW(load(dir), Error);  // unused mid_blocks.1.* tensors
}

TEST(VoiceDecoder, test_missing_files) {
  const std::string dir = glmvoice::test::scratch_dir("decoder-missing");
  glmvoice::voice::write_tiny_decoder(dir, "tiny", 0);
  std::filesystem::remove(dir + "/hift.pt");
  try {
    load(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("hift.pt"), std::string::npos) << e.what();
  }
  replace_in_file(dir + "/config.yaml", "ConditionalDecoder", "SomethingElse");
  EXPECT_THROW(load(dir), Error);
}

TEST(VoiceDecoder, test_unsupported_config_rejected) {
  const std::string dir = glmvoice::test::scratch_dir("decoder-unsupported");
  glmvoice::voice::write_tiny_decoder(dir, "tiny", 0);
  replace_in_file(dir + "/config.yaml", "upsample_rates: [8, 8]", "upsample_rates: [8, 4]");
  try {
    load(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadConfig);
    EXPECT_NE(std::string(e.what()).find("upsample_rates"), std::string::npos) << e.what();
  }
}

TEST(VoiceDecoder, test_two_states_do_not_disturb_each_other) {
  // Private generators: interleaving two streams gives each the audio it gets alone, and the
  // global generator is left untouched.
  const std::vector<int32_t> a_ids = random_ids(40, 64, 21), b_ids = random_ids(40, 64, 22);
  StreamOptions sa = fast_options(), sb = fast_options();
  sb.seed = 5;
  DecoderState a(tiny(), sa), b(tiny(), sb), a_alone(tiny(), sa), b_alone(tiny(), sb);
  auto [za, xa] = stream(a_alone, a_ids, 1);
  auto [zb, xb] = stream(b_alone, b_ids, 1);
  at::manual_seed(123);
  const at::Tensor before = at::randn({4});
  at::manual_seed(123);
  std::vector<at::Tensor> pa, pb;
  for (size_t i = 0; i < a_ids.size(); ++i) {
    pa.push_back(a.push(&a_ids[i], 1));
    pb.push_back(b.push(&b_ids[i], 1));
  }
  pa.push_back(a.finish());
  pb.push_back(b.finish());
  EXPECT_TRUE(at::equal(at::cat(pa, 0), xa));
  EXPECT_TRUE(at::equal(at::cat(pb, 0), xb));
  EXPECT_TRUE(at::equal(at::randn({4}), before)) << "the global generator was used";
}

TEST(VoiceDecoder, test_parse_block_sizes) {
  EXPECT_EQ(glmvoice::voice::parse_block_sizes("25,50, 100"), (std::vector<int64_t>{25, 50, 100}));
  EXPECT_THROW(glmvoice::voice::parse_block_sizes(""), Error);
  EXPECT_THROW(glmvoice::voice::parse_block_sizes("25,x"), Error);
  EXPECT_THROW(glmvoice::voice::parse_block_sizes("0"), Error);
  EXPECT_EQ(glmvoice::voice::format_block_sizes({25, 50}), "25,50");
}

}  // namespace

// The one-pass Snake against upstream's expression as tensor ops: bit for bit, over values
// where sin's argument is small, large (range reduction) and exactly zero, with odd lengths.
TEST(VoiceDecoder, test_snake_one_pass_is_bit_identical) {
  c10::InferenceMode guard;
  at::manual_seed(11);
  for (int64_t T : {1, 7, 8, 1000, 4097}) {
    const int64_t C = 5;
    at::Tensor x = at::randn({1, C, T}) * 3;
    x.select(1, 1).mul_(400);  // large arguments
    x.select(1, 2).zero_();
    const at::Tensor alpha = (at::rand({C}) * 2 + 0.05).unsqueeze(0).unsqueeze(-1);
    const at::Tensor inv = at::reciprocal(alpha + 1e-9);
    const at::Tensor want = x + inv * at::pow(at::sin(x * alpha), 2);
    const at::Tensor got = glmvoice::voice::hift_snake(x, alpha, inv);
    EXPECT_TRUE(at::equal(want, got)) << "T " << T << ": max abs diff " << (want - got).abs().max().item<double>();
  }
}
