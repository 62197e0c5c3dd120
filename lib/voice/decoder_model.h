// GLM-4-Voice speech decoder: speech tokens (12.5 Hz) -> 22050 Hz mono audio, streaming.
//
//   auto model = glmvoice::voice::DecoderModel::load({dir, c10::kCPU, c10::kFloat});
//   glmvoice::voice::DecoderState state(model);          // block schedule 25,50,100,150,200
//   at::Tensor a = state.push(ids);                       // f32 [samples], possibly empty
//   at::Tensor tail = state.finish();                     // end of utterance; state is reset
//
// Thread safety: a DecoderModel is immutable after load() and may be shared by any number of
// DecoderStates on any threads. A DecoderState belongs to one thread at a time.
//
// Reference: THUDM/GLM-4-Voice@eb00ce9 flow_inference.py (AudioDecoder.token2wav),
// web_demo.py (block schedule, prompt feedback); decoder spec §5.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/options.h"
#include "voice/decoder_config.h"

namespace glmvoice::voice {

class FlowModel;
class HiftModel;
struct FlowTaps;
struct HiftTaps;

struct HiftResult {
  at::Tensor audio;   // [1, 256 N] f32 CPU
  at::Tensor source;  // [1, 1, 256 N] f32 CPU
};

// Immutable flow + HiFT weights and config (config.yaml, flow.pt, hift.pt in one directory).
class DecoderModel {
 public:
  // Throws glmvoice::Error naming the file and tensor (missing file, shape mismatch, unused
  // tensor, unsupported config value).
  static std::shared_ptr<const DecoderModel> load(const ModelOptions& options);
  ~DecoderModel();

  const DecoderConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  int64_t vocab_size() const { return config_.flow.vocab_size; }
  int64_t sample_rate() const { return static_cast<int64_t>(config_.hift.sampling_rate); }
  int64_t samples_per_frame() const { return config_.hift.samples_per_frame(); }  // 256
  int64_t n_mel() const { return config_.flow.output_size; }
  // Spec §3.4 mel frames for `tokens` tokens (fp32 formula).
  int64_t mel_len(int64_t tokens) const;
  // Mel frames a non-final streaming call holds back for the cross-fade (5 tokens: 34 frames).
  int64_t overlap_frames() const;
  // Number of parameters (flow, hift) for logs and the benchmark.
  int64_t flow_parameters() const { return flow_params_; }
  int64_t hift_parameters() const { return hift_params_; }

  // One flow call (spec §3): tokens [1, Tn] int, prompt_tokens [1, Tp], prompt_feat
  // [1, Pm, n_mel] (empty allowed). Draws the CFM noise from `gen` (not reseeded here).
  // cfg_rate < 0 means the config's inference_cfg_rate. Returns mel [1, n_mel, M - Pm] f32 CPU.
  at::Tensor flow(const at::Tensor& tokens, const at::Tensor& prompt_tokens, const at::Tensor& prompt_feat,
                  at::Generator& gen, int64_t n_timesteps = 10, double cfg_rate = -1,
                  FlowTaps* taps = nullptr) const;
  // One HiFT call (spec §4): mel [1, n_mel, N], cache_source [1, 1, S] (empty allowed).
  HiftResult hift(const at::Tensor& mel, const at::Tensor& cache_source, at::Generator& gen,
                  HiftTaps* taps = nullptr) const;

  DecoderModel(const DecoderModel&) = delete;
  DecoderModel& operator=(const DecoderModel&) = delete;

 private:
  DecoderModel() = default;
  ModelOptions options_;
  DecoderConfig config_;
  std::unique_ptr<FlowModel> flow_;
  std::unique_ptr<HiftModel> hift_;
  int64_t flow_params_ = 0, hift_params_ = 0;
};

// How a stream feeds earlier audio back into the flow (decoder spec §5.2 vs README "fast mode").
enum class StreamMode {
  kReference,  // upstream web_demo: every call re-encodes the whole answer so far (O(n^2))
  kFast,       // the prompt is the last `context_tokens` tokens and their mel (O(block + window))
};

// Per-stream knobs (element properties).
struct StreamOptions {
  std::vector<int64_t> block_sizes{25, 50, 100, 150, 200};  // last entry repeats (DEMO)
  uint64_t seed = 42;                                      // reseeded at every token2wav call
  int64_t n_timesteps = 10;
  double cfg_rate = -1;                                    // < 0: config inference_cfg_rate
  StreamMode mode = StreamMode::kReference;
  int64_t context_tokens = 50;                             // fast mode: prompt window (>= kMinContextTokens)
};

// Fast-mode defaults, chosen by measurement (README "Fast streaming decoder").
constexpr int64_t kDefaultContextTokens = 50;
constexpr int64_t kMinContextTokens = 8;  // must cover the held-back overlap (5 tokens) and a margin
std::vector<int64_t> default_block_sizes(StreamMode mode);  // reference 25,50,100,150,200; fast 10,25,50

// "reference" | "fast"; throws kBadConfig naming `field` otherwise.
StreamMode parse_stream_mode(const std::string& text, const std::string& field = "mode");
std::string stream_mode_name(StreamMode mode);

// "25,50,100" -> {25, 50, 100}; throws kBadConfig on an empty list or a value < 1.
std::vector<int64_t> parse_block_sizes(const std::string& text);
std::string format_block_sizes(const std::vector<int64_t>& sizes);

// What one token2wav call did (for parity tests and logs).
struct BlockReport {
  int index = 0;              // call number within the utterance, from 0
  int64_t n_tokens = 0;       // new tokens (0 for the tail flush)
  int64_t prompt_tokens = 0;
  int64_t prompt_frames = 0;  // Pm
  bool finalize = false;
  bool tail_flush = false;    // spec §5.3 flush (no flow call)
  at::Tensor mel;             // HiFT input [1, n_mel, N] (= the mel token2wav returns)
  at::Tensor speech;          // emitted audio [n]
  at::Tensor mu;              // flow taps [1, M, n_mel] (empty for the tail flush)
  at::Tensor f0;              // [1, N]
};

// Streaming state of one utterance stream (spec §5.1-5.3): pending tokens, prompt tokens and
// mels fed back, 34-frame overlap mel, one-frame HiFT cache, block index, private generator.
// In StreamMode::kFast the prompt is a bounded window and the emitted audio has exactly the
// offline decode's length (mel_len(n) x 256 samples for n tokens); see decoder_fast_stream.cpp.
class DecoderState {
 public:
  explicit DecoderState(std::shared_ptr<const DecoderModel> model, StreamOptions options = {});
  ~DecoderState();

  // Appends speech ids (0 <= id < vocab_size; negative ids are clamped to 0 as upstream);
  // decodes every block that is complete under the one-token lag rule. Returns the audio
  // emitted by those calls, f32 [n] on CPU (n may be 0). Throws kBadInput for an id >= vocab.
  at::Tensor push(const int32_t* ids, size_t n);
  at::Tensor push(const std::vector<int32_t>& ids) { return push(ids.data(), ids.size()); }
  // End of utterance: decodes the pending tokens with finalize (or flushes the held-back
  // overlap and HiFT cache when nothing is pending), returns that audio and resets.
  at::Tensor finish();
  // Drops everything (a reset state equals a fresh one).
  void reset();

  // Offline decode: one finalize call over all `ids` from a fresh utterance (the state is
  // reset before and after). Equals upstream offline_inference / token2wav(finalize=True).
  at::Tensor decode_offline(const std::vector<int32_t>& ids);

  int64_t pending_tokens() const { return static_cast<int64_t>(pending_.size()); }
  // True when nothing is pending and no overlap / cache is held.
  bool idle() const;
  // Tokens the next block needs before it is decoded (block_sizes[bi] + 1: one-token lag).
  int64_t next_block_size() const;
  const StreamOptions& options() const { return options_; }
  const DecoderModel& model() const { return *model_; }
  // Called after every token2wav call with what it did (taps filled only when set).
  void set_observer(std::function<void(const BlockReport&)> observer) { observer_ = std::move(observer); }

 private:
  at::Tensor token2wav(const std::vector<int64_t>& block, bool finalize);
  // Fast mode (decoder_fast_stream.cpp): the flow call over the window, returns the block's
  // new mel with the previous call's held-back frames cross-faded in.
  at::Tensor fast_flow(const std::vector<int64_t>& block, bool finalize, BlockReport& rep, FlowTaps* taps);
  at::Tensor tail_flush();

  std::shared_ptr<const DecoderModel> model_;
  StreamOptions options_;
  at::Generator gen_;
  std::vector<int64_t> pending_;
  std::vector<int64_t> prompt_tokens_;
  std::vector<at::Tensor> mels_;  // returned mels of earlier calls, [1, n_mel, n] each
  at::Tensor overlap_mel_;        // [1, n_mel, 34] or undefined
  at::Tensor cache_mel_;          // [1, n_mel, 1] or undefined
  at::Tensor cache_source_;       // [1, 1, 256] or undefined
  size_t block_index_ = 0;
  int call_index_ = 0;
  // Fast mode: tokens from global index `window_base_` on (the window plus the tokens whose
  // frames are still held back), the last final mel frames, and the frame counters.
  std::vector<int64_t> window_tokens_;
  int64_t window_base_ = 0;
  int64_t tokens_done_ = 0;  // tokens consumed by flow calls
  int64_t frames_final_ = 0; // mel frames passed on to HiFT (held-back frames not counted)
  at::Tensor history_mel_;   // [1, n_mel, h]: the last h final frames (h <= window + margin)
  std::function<void(const BlockReport&)> observer_;
};

}  // namespace glmvoice::voice
