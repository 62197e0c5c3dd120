// GLM-4-Voice speech tokenizer (Whisper-VQ encoder): the immutable Model half.
//
// Reference: THUDM/GLM-4-Voice @ eb00ce9142e8d98b0ed7c57cd47e0d6d5dce9a1a
//   speech_tokenizer/modeling_whisper.py (WhisperVQEncoder, CausalConv1d, block-causal mask,
//   pooling, vector_quantize), speech_tokenizer/utils.py (load_quantize_encoder,
//   extract_speech_token); GLM-4-Voice arXiv:2412.02612 §2.1; Whisper arXiv:2212.04356.
// Spec: ../shared/spec/tokenizer.md (section numbers below refer to it).
//
// Usage (offline = upstream extract_speech_token, any length):
//   auto model = TokenizerModel::load({"/models/glm-4-voice-tokenizer"});
//   at::Tensor ids = model->tokenize(samples);   // samples: f32 [n] mono 16 kHz -> i64 [K]
// Streaming: see tokenizer_state.h (one TokenizerState per stream, sharing the model).
//
// Thread safety: every const method may be called from several threads at once.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/options.h"
#include "speech/log_mel.h"

namespace glmvoice::speech {

// config.json (WhisperVQConfig, spec §1.2) + preprocessor_config.json (§1.3), validated.
struct TokenizerConfig {
  int64_t d_model = 0;
  int64_t num_heads = 0;
  int64_t ffn_dim = 0;
  int64_t num_mel_bins = 0;
  int64_t max_source_positions = 0;
  int64_t quantize_position = 0;    // encoder layers run; VQ after layer quantize_position-1
  int64_t pooling_position = 0;     // pooling after layer pooling_position-1
  int64_t pooling_kernel_size = 1;  // avg/max pool kernel = stride
  bool max_pooling = false;         // pooling_type "max" (not used by the real model)
  int64_t vocab_size = 0;           // codebook rows
  int64_t block_size = 0;           // quantize_causal_block_size, in conv frames
  bool causal_conv = true;          // encoder_causal_convolution
  FeatureConfig features;

  // Upstream hard-codes 30 s segments (utils.py: `16000` and `30`).
  static constexpr int64_t kSegmentSeconds = 30;

  int64_t head_dim() const { return d_model / num_heads; }
  // conv1 stride 1 x conv2 stride 2 (hard-coded upstream).
  int64_t samples_per_conv_frame() const { return features.hop_length * 2; }
  int64_t samples_per_token() const { return samples_per_conv_frame() * pooling_kernel_size; }
  int64_t segment_samples() const { return kSegmentSeconds * features.sampling_rate; }
  int64_t block_samples() const { return samples_per_conv_frame() * block_size; }
  int64_t tokens_per_block() const { return block_size / pooling_kernel_size; }

  // Reads config.json and preprocessor_config.json of `dir`; throws glmvoice::Error.
  static TokenizerConfig load(const std::string& dir);
};

// Per-layer K/V of the frames (or, after pooling, tokens) processed so far in a segment.
struct TokenizerKvCache {
  std::vector<at::Tensor> keys;    // per layer [frames_done, d_model]
  std::vector<at::Tensor> values;  // per layer [frames_done, d_model]
  void clear() {
    keys.clear();
    values.clear();
  }
};

// One segment's forward pass.
struct TokenizerSegmentOutput {
  at::Tensor ids;     // i64 [K] including padded positions (K = T / 8)
  at::Tensor pooled;  // [K, d_model] the vectors fed to VQ (compute dtype)
};

class TokenizerModel {
 public:
  // Loads config + weights from options.path (both tensor layouts of §1.4). Throws
  // glmvoice::Error (kNotFound, kBadConfig, kMismatch, ...) naming the file and key.
  static std::shared_ptr<const TokenizerModel> load(const ModelOptions& options);

  const TokenizerConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  // Dtype of features and of the VQ distances: f64 when the model computes in f64, else f32.
  c10::ScalarType feature_dtype() const;

  // Offline tokenization of one utterance = upstream extract_speech_token (§4.7): 30 s
  // segments, ceil(n/1280) ids per segment. `emulate_batch_padding` reproduces upstream's
  // batch quirk (§7.3): the last segment of a multi-segment utterance is padded to 30 s when
  // it shares its 128-segment batch with other segments.
  // samples: f32 [n] (any device) -> i64 [K] on CPU.
  at::Tensor tokenize(const at::Tensor& samples, bool emulate_batch_padding = true) const;

  // Log-mel features exactly as fed to the encoder, segments concatenated along time:
  // samples f32 [n] -> [n_mels, sum of T_s] on CPU (same padding rule as tokenize()).
  at::Tensor features(const at::Tensor& samples, bool emulate_batch_padding = true) const;

  // One segment: valid samples f32 [n] zero-padded to `padded_len` (multiple of 1280)
  // -> features [n_mels, padded_len / 160] (feature dtype, model device).
  at::Tensor segment_features(const at::Tensor& segment, int64_t padded_len) const;
  // Padded length of a segment of n samples (ceil to a multiple of samples_per_token()).
  int64_t padded_length(int64_t n) const;

  // Encoder forward of one segment (§3): features [n_mels, T] (T multiple of 8), n valid
  // samples -> ids and pooled vectors for all T/8 positions.
  TokenizerSegmentOutput forward_segment(const at::Tensor& features, int64_t n_valid) const;

  // ---- Building blocks of TokenizerState (§5.3) ----

  // Raw log10-mel frames of a reflect-padded signal piece (see log_mel_raw_frames):
  // xp [400 + 160 (F-1)] (feature dtype, model device) -> [n_mels, F].
  at::Tensor raw_frames(const at::Tensor& xp) const;
  // Encoder for conv frames [lo, hi) of a segment, continuing `cache`.
  //   features: normalized mel frames [max(0, 2 lo - 4), 2 hi - 1)  [n_mels, F]
  //   n_valid:  -1 for a non-final block; for the segment's final block the valid sample
  //             count (keys at or past it are masked)
  // Returns the pooled vectors [(hi - lo) / pooling_kernel_size, d_model] after all
  // quantize_position layers (compute dtype).
  at::Tensor encode_block(const at::Tensor& features, int64_t lo, int64_t hi, int64_t n_valid,
                          TokenizerKvCache& cache) const;
  // Nearest codebook rows (§3.6), lowest index on ties: [K, d_model] -> i64 [K].
  at::Tensor quantize(const at::Tensor& pooled) const;

  struct LayerWeights {
    at::Tensor ln1_w, ln1_b;  // self_attn_layer_norm
    at::Tensor q_w, q_b, k_w, v_w, v_b, o_w, o_b;
    at::Tensor ln2_w, ln2_b;  // final_layer_norm
    at::Tensor fc1_w, fc1_b, fc2_w, fc2_b;
  };

 private:
  TokenizerModel() = default;

  // Conv stem (§3.2) over a feature slice; `at_start` = conv frame 0 is included (zero
  // left padding of both convs). [n_mels, F] -> [C, d_model].
  at::Tensor conv_stem(const at::Tensor& features, bool at_start) const;
  // One pre-LN encoder layer (§3.4). `past_k`/`past_v` (may be undefined) are prepended to
  // the keys; `mask` (may be undefined) is additive [Tq, Tk]. The new keys/values of all
  // positions are returned through `k_out`/`v_out`.
  at::Tensor layer_forward(const LayerWeights& w, const at::Tensor& h, const at::Tensor& past_k,
                           const at::Tensor& past_v, const at::Tensor& mask, at::Tensor* k_out,
                           at::Tensor* v_out) const;
  at::Tensor pool(const at::Tensor& h) const;  // [C, D] -> [ceil(C/k), D] (§3.5)

  TokenizerConfig config_;
  ModelOptions options_;
  at::Tensor mel_filters_;  // [n_freqs, n_mels] feature dtype (upstream layout; used transposed)
  at::Tensor conv1_w_, conv1_b_, conv2_w_, conv2_b_;
  at::Tensor embed_positions_;  // [max_source_positions, d_model]
  std::vector<LayerWeights> layers_;
  at::Tensor codebook_;     // [vocab, d_model] feature dtype
  at::Tensor codebook_sq_;  // [vocab] ||c_v||^2
};

}  // namespace glmvoice::speech
