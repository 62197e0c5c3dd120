// DecoderState in StreamMode::kFast: a bounded flow prompt (README "Fast streaming decoder").
//
// Upstream's schedule (spec §5.2) feeds the whole answer so far back as the flow prompt, so
// call k costs O(answer) and the stream O(answer^2). Here a call over tokens [n, n + b) gives
// the flow only the last `context_tokens` tokens before n as prompt tokens, with their final
// mel frames as prompt_feat, and asks for exactly the frames the offline decode has for these
// tokens: frames [E, mel_len(n + b)), E = frames already final. A non-final call holds its
// last overlap_frames() back (they lack right context); the next call generates them again
// with that context and cross-fades them in (complementary raised-cosine halves). So the
// emitted mel has mel_len(total tokens) frames, like offline, and HiFT (same one-frame cache
// as the reference schedule) turns it into mel_len(total) x 256 samples.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "io/error.h"
#include "voice/decoder_model.h"
#include "voice/flow_model.h"

namespace glmvoice::voice {

namespace {

// w_in[i] = sin^2(pi/2 (i + 1) / (L + 1)); the held frames get 1 - w_in (sum exactly 1).
at::Tensor fade_in_window(int64_t L, const at::TensorOptions& opts) {
  at::Tensor i = at::arange(1, L + 1, opts.dtype(at::kDouble));
  return at::sin(i * (M_PI / 2 / static_cast<double>(L + 1))).pow(2).to(opts.dtype());
}

}  // namespace

at::Tensor DecoderState::fast_flow(const std::vector<int64_t>& block, bool finalize, BlockReport& rep,
                                   FlowTaps* taps) {
  const DecoderModel& m = *model_;
  const int64_t n = tokens_done_;
  const int64_t b = static_cast<int64_t>(block.size());
  window_tokens_.insert(window_tokens_.end(), block.begin(), block.end());
  // Prompt window: the context_tokens tokens before this block (fewer at the start).
  const int64_t start = std::max<int64_t>(0, n - options_.context_tokens);
  if (start > window_base_) {
    window_tokens_.erase(window_tokens_.begin(), window_tokens_.begin() + (start - window_base_));
    window_base_ = start;
  }
  const int64_t want = m.mel_len(n + b) - frames_final_;     // frames [E, mel_len(n + b))
  const int64_t total = m.mel_len(n + b - start);            // the flow's M for the window
  const int64_t prompt_frames = total - want;                // Pm: the last final frames
  const int64_t history = history_mel_.defined() ? history_mel_.size(2) : 0;
  if (prompt_frames < 0 || prompt_frames > history || want < 1) {
    throw Error(ErrorCode::kBadConfig, "", "context-tokens",
                "window of " + std::to_string(n + b - start) + " tokens gives " + std::to_string(prompt_frames) +
                    " prompt frames (" + std::to_string(history) + " kept, " + std::to_string(want) + " wanted)");
  }
  at::Tensor tokens = at::tensor(window_tokens_, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
  at::Tensor prompt_feat = prompt_frames > 0 ? history_mel_.slice(2, history - prompt_frames).transpose(1, 2)
                                             : at::zeros({1, 0, m.n_mel()});
  rep.prompt_tokens = n - start;
  rep.prompt_frames = prompt_frames;
  at::Tensor mel = m.flow(tokens, at::Tensor(), prompt_feat, gen_, options_.n_timesteps, options_.cfg_rate, taps);

  if (overlap_mel_.defined()) {  // the previous call's held frames, now with right context
    const int64_t L = std::min(overlap_mel_.size(2), want);
    const at::Tensor w_in = fade_in_window(L, mel.options());
    mel = mel.clone();
    at::Tensor head = mel.slice(2, 0, L);
    head.copy_(head * w_in + overlap_mel_.slice(2, 0, L) * (1 - w_in));
  }
  const int64_t hold = finalize ? 0 : std::min(m.overlap_frames(), want - 1);
  overlap_mel_ = hold > 0 ? mel.slice(2, want - hold).contiguous() : at::Tensor();
  at::Tensor out = mel.slice(2, 0, want - hold).contiguous();

  // Keep the frames the next window can ask for: mel_len(context) plus a small margin.
  at::Tensor kept = history_mel_.defined() ? at::cat({history_mel_, out}, 2) : out;
  const int64_t keep = m.mel_len(options_.context_tokens) + 8;
  history_mel_ = kept.size(2) > keep ? kept.slice(2, kept.size(2) - keep).contiguous() : kept;
  frames_final_ += out.size(2);
  tokens_done_ = n + b;
  return out;
}

}  // namespace glmvoice::voice
