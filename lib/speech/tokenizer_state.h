// Streaming speech tokenizer: the per-stream State half (spec tokenizer.md §5).
//
// A State owns the samples of the current 30 s segment, the raw log-mel frames computed so
// far, the running maximum and the per-layer K/V of finished attention blocks. Tokens of an
// attention block (block_size conv frames = 4 s, 50 tokens with the real config) are
// emitted as soon as the segment holds one sample past the block; finish() computes the
// last partial block exactly like the offline path.
//
//   TokenizerState state(model);
//   for (chunk : audio) append(ids, state.push(chunk.data(), chunk.size()));
//   append(ids, state.finish());             // ends the utterance; the state is reset
//
// Exactness (§5.3): the ids do not depend on how the samples are split into pushes. They
// equal the offline ids of TokenizerModel::tokenize() (up to float rounding) for every
// segment whose loudest log-mel value lies in its first attention block; otherwise the
// dynamic-range floor (max - 8 over the segment, §4.3) is only known up to the current block
// and the ids of that segment can differ (§5.2). `offline_exact` buffers each segment and
// runs the offline path when it closes instead (latency up to 30 s).
//
// Not thread-safe: one State per stream; the Model may be shared.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "speech/tokenizer_model.h"

namespace glmvoice::speech {

struct TokenizerStreamOptions {
  bool offline_exact = false;          // buffer each segment, run the offline path at its close
  bool emulate_batch_padding = true;   // upstream batch quirk of §7.3 (as tokenize())
  bool keep_pooled = false;            // record the pooled vectors (tests): pooled()
};

class TokenizerState {
 public:
  explicit TokenizerState(std::shared_ptr<const TokenizerModel> model,
                          TokenizerStreamOptions options = {});

  // Appends mono 16 kHz samples; returns the ids that became final (utterance order).
  std::vector<int32_t> push(const float* samples, int64_t count);
  std::vector<int32_t> push(const at::Tensor& samples);  // f32 [n] on CPU
  // Ends the utterance: computes the last partial block, returns its ids, then reset().
  std::vector<int32_t> finish();
  // Drops everything; the state then equals a fresh one.
  void reset();

  const TokenizerModel& model() const { return *model_; }
  // Samples pushed since the utterance start, and ids emitted for them so far. Token g of
  // the utterance covers samples [g * 1280, (g + 1) * 1280).
  int64_t samples_pushed() const { return samples_before_segment_ + segment_len_; }
  int64_t tokens_emitted() const { return tokens_emitted_; }
  // Diagnostics of the current utterance (after finish(): of the finished one, until the
  // next push). Pooled vectors of all emitted tokens [tokens, d_model] (keep_pooled only):
  at::Tensor pooled() const;
  // The max log10-mel used as floor reference by each processed block (utterance order).
  const std::vector<double>& block_max_logs() const { return block_max_logs_; }

 private:
  void process_block(bool final, std::vector<int32_t>& out);
  void close_segment(std::vector<int32_t>& out);
  void compute_frames(int64_t upto, int64_t len, bool closed);  // lg frames [frames_done_, upto)
  void emit(const at::Tensor& pooled, int64_t count, std::vector<int32_t>& out);
  void clear_segment();

  std::shared_ptr<const TokenizerModel> model_;
  TokenizerStreamOptions options_;
  // current segment
  std::vector<float> segment_;      // samples of the current segment (capacity 30 s)
  int64_t segment_len_ = 0;
  int64_t segment_index_ = 0;
  int64_t samples_before_segment_ = 0;
  at::Tensor lg_;                   // raw log10-mel [n_mels, frames_done_] (unclamped)
  int64_t frames_done_ = 0;
  double running_max_ = -std::numeric_limits<double>::infinity();
  int64_t block_ = 0;               // next block index in the segment
  TokenizerKvCache cache_;
  // utterance
  int64_t tokens_emitted_ = 0;
  std::vector<at::Tensor> pooled_;
  std::vector<double> block_max_logs_;
  bool diagnostics_stale_ = false;  // finish() ran: pooled_/block_max_logs_ go at the next push
};

}  // namespace glmvoice::speech
