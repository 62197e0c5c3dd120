// lib/voice StreamMode::kFast on the project's tiny decoder (README "Fast streaming decoder"):
// same number of samples as the offline decode for any token count and chunking, a prompt
// bounded by context_tokens, offline decode unchanged, chunking invariance, reset, bad options.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <random>

#include "io/error.h"
#include "test_support.h"
#include "voice/decoder_model.h"

namespace {

using glmvoice::Error;
using glmvoice::ErrorCode;
using glmvoice::voice::BlockReport;
using glmvoice::voice::DecoderModel;
using glmvoice::voice::DecoderState;
using glmvoice::voice::StreamMode;
using glmvoice::voice::StreamOptions;

std::shared_ptr<const DecoderModel> tiny() {
  static auto m = DecoderModel::load({glmvoice::test::tiny_model_dir("decoder"), c10::Device(c10::kCPU), c10::kFloat});
  return m;
}

// One Euler step without CFG (lengths and windows do not depend on the solver), fast mode.
StreamOptions fast_mode(int64_t context = 8, std::vector<int64_t> blocks = {10, 25, 50}) {
  StreamOptions so;
  so.n_timesteps = 1;
  so.cfg_rate = 0;
  so.mode = StreamMode::kFast;
  so.context_tokens = context;
  so.block_sizes = std::move(blocks);
  return so;
}

std::vector<int32_t> random_ids(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % tiny()->vocab_size());
  return ids;
}

// Pushes `ids` in chunks of `chunk`, then finish(); returns the concatenated audio.
at::Tensor stream(DecoderState& state, const std::vector<int32_t>& ids, size_t chunk) {
  std::vector<at::Tensor> parts;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    at::Tensor a = state.push(ids.data() + i, std::min(chunk, ids.size() - i));
    if (a.numel()) parts.push_back(a);
  }
  parts.push_back(state.finish());
  return at::cat(parts, 0);
}

TEST(VoiceFastStream, test_same_samples_as_offline) {
  // Token counts around the block boundaries (11 = first block + lag, 36 = second), chunks
  // of 1 and 7, the smallest window and the default one.
  struct Case {
    size_t tokens, chunk;
    int64_t context;
  };
  const Case cases[] = {{1, 1, 8}, {11, 1, 8}, {12, 7, 8}, {37, 1, 8}, {100, 7, 8}, {87, 1, 50}};
  for (const auto& c : cases) {
    std::vector<int32_t> ids = random_ids(c.tokens, static_cast<unsigned>(c.tokens));
    DecoderState fast(tiny(), fast_mode(c.context));
    const at::Tensor audio = stream(fast, ids, c.chunk);
    EXPECT_EQ(audio.numel(), tiny()->mel_len(static_cast<int64_t>(c.tokens)) * tiny()->samples_per_frame())
        << c.tokens << " tokens, context " << c.context << ", chunks of " << c.chunk;
    EXPECT_TRUE(fast.idle());
  }
}

TEST(VoiceFastStream, test_first_block_of_ten_tokens) {
  // The first call waits for 11 tokens (one-token lag) and emits its first 10 tokens' frames
  // except the 34 held back and the one-frame HiFT cache: (68 - 34 - 1) x 256 samples.
  DecoderState fast(tiny(), fast_mode());
  std::vector<int32_t> ids = random_ids(11, 2);
  EXPECT_EQ(fast.push(ids.data(), 10).numel(), 0);
  EXPECT_EQ(fast.push(ids.data() + 10, 1).numel(), (68 - 34 - 1) * 256);
}

TEST(VoiceFastStream, test_prompt_bounded_by_context) {
  const int64_t context = 20;
  DecoderState fast(tiny(), fast_mode(context, {10, 25}));
  std::vector<BlockReport> reports;
  fast.set_observer([&](const BlockReport& r) { reports.push_back(r); });
  stream(fast, random_ids(130, 4), 1);
  ASSERT_GE(reports.size(), 5u);
  int64_t max_frames = 0;
  for (const auto& r : reports) {
    if (r.tail_flush) continue;
    EXPECT_LE(r.prompt_tokens, context) << "call " << r.index;
    max_frames = std::max(max_frames, r.prompt_frames);
  }
  // The prompt mel is the context's frames minus the held-back overlap (34), within a frame.
  EXPECT_LE(max_frames, tiny()->mel_len(context) - 34 + 2);
  EXPECT_GE(max_frames, tiny()->mel_len(context) - 34 - 2);
}

TEST(VoiceFastStream, test_offline_decode_unchanged) {
  std::vector<int32_t> ids = random_ids(30, 6);
  StreamOptions ref = fast_mode();
  ref.mode = StreamMode::kReference;
  DecoderState a(tiny(), ref), b(tiny(), fast_mode());
  EXPECT_TRUE(at::equal(a.decode_offline(ids), b.decode_offline(ids)));
}

TEST(VoiceFastStream, test_single_final_call_equals_offline) {
  // Fewer tokens than the first block: finish() decodes them in one call like offline.
  std::vector<int32_t> ids = random_ids(9, 7);
  DecoderState a(tiny(), fast_mode()), b(tiny(), fast_mode());
  EXPECT_TRUE(at::equal(stream(a, ids, 1), b.decode_offline(ids)));
}

TEST(VoiceFastStream, test_chunking_invariant_and_reset) {
  std::vector<int32_t> ids = random_ids(60, 8);
  DecoderState s1(tiny(), fast_mode()), s7(tiny(), fast_mode()), used(tiny(), fast_mode());
  const at::Tensor a1 = stream(s1, ids, 1);
  EXPECT_TRUE(at::equal(a1, stream(s7, ids, 7)));
  used.push(random_ids(40, 9));  // leaves a window, held frames, cache and pending behind
  EXPECT_FALSE(used.idle());
  used.reset();
  EXPECT_TRUE(at::equal(a1, stream(used, ids, 1)));
}

TEST(VoiceFastStream, test_fast_differs_from_reference_once_windowed) {
  // Sanity: beyond the window the fast schedule really is a different computation.
  std::vector<int32_t> ids = random_ids(50, 10);
  StreamOptions ref = fast_mode(8, {10, 25, 50});
  ref.mode = StreamMode::kReference;
  DecoderState a(tiny(), ref), b(tiny(), fast_mode(8, {10, 25, 50}));
  const at::Tensor xa = stream(a, ids, 1), xb = stream(b, ids, 1);
  EXPECT_NE(xa.numel(), xb.numel());  // the reference schedule drops a frame per call from call 3
}

TEST(VoiceFastStream, test_options_checked) {
  try {
    DecoderState bad(tiny(), fast_mode(3));
    FAIL() << "context 3 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadConfig);
    EXPECT_NE(std::string(e.what()).find("context-tokens"), std::string::npos) << e.what();
  }
  EXPECT_EQ(glmvoice::voice::parse_stream_mode("fast"), StreamMode::kFast);
  EXPECT_EQ(glmvoice::voice::parse_stream_mode("reference"), StreamMode::kReference);
  EXPECT_EQ(glmvoice::voice::stream_mode_name(StreamMode::kFast), "fast");
  EXPECT_THROW(glmvoice::voice::parse_stream_mode("quick"), Error);
  EXPECT_EQ(glmvoice::voice::default_block_sizes(StreamMode::kFast), (std::vector<int64_t>{10, 25, 50}));
}

}  // namespace
