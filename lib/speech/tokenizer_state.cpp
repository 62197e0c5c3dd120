// Streaming speech tokenizer state; see tokenizer_state.h and spec tokenizer.md §5.3.
#include "speech/tokenizer_state.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "io/error.h"

namespace glmvoice::speech {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Upstream batches at most this many segments (utils.py, §4.1); see emulate_batch_padding.
constexpr int64_t kUpstreamBatchSegments = 128;

}  // namespace

TokenizerState::TokenizerState(std::shared_ptr<const TokenizerModel> model,
                               TokenizerStreamOptions options)
    : model_(std::move(model)), options_(options) {
  if (!model_) throw Error(ErrorCode::kBadInput, "", "model", "TokenizerState needs a model");
  segment_.reserve(model_->config().segment_samples() + model_->config().samples_per_token());
  reset();
}

void TokenizerState::clear_segment() {
  segment_.clear();
  segment_len_ = 0;
  lg_ = at::Tensor();
  frames_done_ = 0;
  block_ = 0;
  cache_.clear();
}

void TokenizerState::reset() {
  clear_segment();
  segment_index_ = 0;
  samples_before_segment_ = 0;
  tokens_emitted_ = 0;
  pooled_.clear();
  block_max_logs_.clear();
  diagnostics_stale_ = false;
}

std::vector<int32_t> TokenizerState::push(const at::Tensor& samples) {
  TORCH_CHECK(samples.dim() == 1, "TokenizerState::push: samples must be 1-D");
  const at::Tensor x = samples.to(at::kCPU, at::kFloat).contiguous();
  return push(x.data_ptr<float>(), x.size(0));
}

std::vector<int32_t> TokenizerState::push(const float* samples, int64_t count) {
  c10::InferenceMode guard;
  if (diagnostics_stale_) {
    pooled_.clear();
    block_max_logs_.clear();
    diagnostics_stale_ = false;
  }
  std::vector<int32_t> out;
  const TokenizerConfig& c = model_->config();
  const int64_t capacity = c.segment_samples();
  while (count > 0) {
    const int64_t take = std::min(count, capacity - segment_len_);
    segment_.insert(segment_.end(), samples, samples + take);
    segment_len_ += take;
    samples += take;
    count -= take;
    // Block b is final once the segment holds one sample past it (§5.3).
    while (!options_.offline_exact && segment_len_ > c.block_samples() * (block_ + 1)) {
      process_block(/*final=*/false, out);
    }
    if (segment_len_ == capacity) close_segment(out);
  }
  return out;
}

std::vector<int32_t> TokenizerState::finish() {
  c10::InferenceMode guard;
  std::vector<int32_t> out;
  if (segment_len_ > 0) close_segment(out);
  // keep the finished utterance's diagnostics readable until the next push
  std::vector<at::Tensor> pooled = std::move(pooled_);
  std::vector<double> max_logs = std::move(block_max_logs_);
  reset();
  pooled_ = std::move(pooled);
  block_max_logs_ = std::move(max_logs);
  diagnostics_stale_ = true;
  return out;
}

void TokenizerState::compute_frames(int64_t upto, int64_t len, bool closed) {
  if (upto <= frames_done_) return;
  const TokenizerConfig& c = model_->config();
  const int64_t hop = c.features.hop_length;
  const int64_t pad = c.features.n_fft / 2;
  // Frame j reads xp[hop j - pad, hop j + pad) (centre padding, reflection at the edges).
  const int64_t start = hop * frames_done_ - pad;
  const int64_t end = hop * (upto - 1) + c.features.n_fft - pad;
  TORCH_CHECK(closed || end <= len, "compute_frames: frame ", upto - 1, " needs ", end,
              " samples, segment has ", len);
  const at::Tensor x = at::from_blob(segment_.data(), {len}, at::kFloat);
  const at::Tensor xp = reflect_slice(x, len, start, end)
                            .to(model_->options().device, model_->feature_dtype());
  const at::Tensor frames = model_->raw_frames(xp);  // [n_mels, upto - frames_done_]
  lg_ = lg_.defined() ? at::cat({lg_, frames}, 1) : frames;
  frames_done_ = upto;
}

void TokenizerState::emit(const at::Tensor& pooled, int64_t count, std::vector<int32_t>& out) {
  const at::Tensor ids = model_->quantize(pooled).slice(0, 0, count).to(at::kCPU, at::kInt);
  const int32_t* p = ids.data_ptr<int32_t>();
  out.insert(out.end(), p, p + ids.size(0));
  tokens_emitted_ += ids.size(0);
  if (options_.keep_pooled) pooled_.push_back(pooled.slice(0, 0, count).to(at::kCPU));
}

void TokenizerState::process_block(bool final, std::vector<int32_t>& out) {
  // Conv frames [lo, hi) of block b; mel frames [max(0, 2 lo - 4), 2 hi - 1) feed them.
  const TokenizerConfig& c = model_->config();
  const int64_t lo = c.block_size * block_;
  const int64_t n = segment_len_;
  int64_t hi = lo + c.block_size;
  double max_log = 0.0;
  if (final) {
    const int64_t frames = static_cast<int64_t>(segment_.size()) / c.features.hop_length;  // T
    hi = frames / 2;                                                                      // C
    max_log = running_max_;  // set by close_segment: the offline M of the padded segment
  } else {
    compute_frames(2 * hi - 1, segment_len_, /*closed=*/false);
    max_log = lg_.slice(1, 0, 2 * hi - 1).max().item<double>();
  }
  const int64_t first = std::max<int64_t>(0, 2 * lo - 4);
  const at::Tensor feats = log_mel_normalize(lg_.slice(1, first, 2 * hi - 1), max_log);
  const at::Tensor pooled = model_->encode_block(feats, lo, hi, final ? n : -1, cache_);
  const int64_t count = final ? ceil_div(n, c.samples_per_token()) - c.tokens_per_block() * block_
                              : pooled.size(0);
  block_max_logs_.push_back(max_log);
  emit(pooled, count, out);
  ++block_;
}

void TokenizerState::close_segment(std::vector<int32_t>& out) {
  const TokenizerConfig& c = model_->config();
  const int64_t n = segment_len_;
  const int64_t padded = model_->padded_length(n);
  // Upstream batch quirk (§7.3): a last segment sharing its batch is padded to 30 s.
  const bool batch_padded = options_.emulate_batch_padding &&
                            segment_index_ % kUpstreamBatchSegments != 0 &&
                            padded < model_->padded_length(c.segment_samples());
  segment_.resize(padded, static_cast<float>(c.features.padding_value));
  if (options_.offline_exact) {
    const int64_t full = batch_padded ? model_->padded_length(c.segment_samples()) : padded;
    const at::Tensor x = at::from_blob(segment_.data(), {n}, at::kFloat);
    const at::Tensor feats = model_->segment_features(x, full);
    const TokenizerSegmentOutput res = model_->forward_segment(feats, n);
    block_max_logs_.push_back(std::nan(""));
    emit(res.pooled, ceil_div(n, c.samples_per_token()), out);
  } else {
    const int64_t frames = padded / c.features.hop_length;  // T; frame T-1 reflects (§4.3)
    compute_frames(frames, padded, /*closed=*/true);
    running_max_ = lg_.max().item<double>();
    if (batch_padded) {
      // With 30 s padding frame T-1 sees zeros instead of the reflection, and frames T and
      // T+1 may still reach real samples; later frames are all-zero (-10, the minimum).
      const int64_t hop = c.features.hop_length;
      const int64_t extra = std::min<int64_t>(3, c.segment_samples() / hop - (frames - 1));
      std::vector<float> ext(segment_.begin(), segment_.end());
      ext.resize(padded + hop * (extra + 1) + c.features.n_fft, 0.0f);
      const at::Tensor x = at::from_blob(ext.data(), {static_cast<int64_t>(ext.size())}, at::kFloat);
      const int64_t start = hop * (frames - 1) - c.features.n_fft / 2;
      const at::Tensor xp = x.slice(0, start, start + hop * (extra - 1) + c.features.n_fft)
                                .to(model_->options().device, model_->feature_dtype());
      const at::Tensor tail = model_->raw_frames(xp);
      running_max_ = std::max(lg_.slice(1, 0, frames - 1).max().item<double>(),
                              tail.max().item<double>());
    }
    const int64_t conv_frames = frames / 2;
    const int64_t last_block = (conv_frames - 1) / c.block_size;
    while (block_ <= last_block) process_block(/*final=*/block_ == last_block, out);
  }
  samples_before_segment_ += n;
  ++segment_index_;
  clear_segment();
}

at::Tensor TokenizerState::pooled() const {
  c10::InferenceMode guard;
  if (pooled_.empty()) return at::empty({0, model_->config().d_model});
  return at::cat(pooled_);
}

}  // namespace glmvoice::speech
