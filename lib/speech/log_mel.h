// Whisper log-mel front end (spec tokenizer.md §4): the Hugging Face WhisperFeatureExtractor
// torch path as GLM-4-Voice's extract_speech_token calls it.
//
// Reference: huggingface/transformers v4.44.1
//   src/transformers/models/whisper/feature_extraction_whisper.py (_torch_extract_fbank_features)
//   src/transformers/audio_utils.py (mel_filter_bank, Slaney scale and norm)
// openai/whisper whisper/audio.py (same recipe), Whisper arXiv:2212.04356 §2.2.
//
// The front end is split so the streaming tokenizer can use it frame by frame:
//   raw frames  lg[b, j] = log10(max(mel, 1e-10))           (§4.3 steps 1-5)
//   normalize   feat = (max(lg, M - 8) + 4) / 4              (§4.3 steps 6-7, M = segment max)
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace glmvoice::speech {

// preprocessor_config.json (spec §1.3). Only 16 kHz / n_fft 400 / hop 160 are supported.
struct FeatureConfig {
  int64_t feature_size = 128;   // mel bins
  int64_t sampling_rate = 16000;
  int64_t n_fft = 400;
  int64_t hop_length = 160;
  double padding_value = 0.0;

  // Reads and validates preprocessor_config.json; throws glmvoice::Error naming file + key.
  static FeatureConfig load(const std::string& path);
};

// Slaney-scale, Slaney-normalized mel filterbank (spec §4.4), computed in double:
// [n_mels, n_fft/2 + 1] float64. Equals librosa filters.mel(sr, n_fft, n_mels).
at::Tensor mel_filterbank(int64_t n_mels, int64_t n_fft, int64_t sampling_rate);

// Raw log10-mel frames (before the dynamic-range floor) of a signal piece.
//   xp:      [n_fft + hop * (frames - 1)] samples, already reflect-padded where the frames
//            touch a segment edge (frame f starts at xp[hop * f])
//   filters: [n_mels, n_fft/2 + 1] in the dtype of xp
// Returns [n_mels, frames] in the dtype of xp. One STFT frame per hop, periodic Hann window,
// power = |X|^2, mel = filters @ power, log10(max(mel, 1e-10)).
at::Tensor log_mel_raw_frames(const at::Tensor& xp, const at::Tensor& filters, int64_t n_fft,
                              int64_t hop);

// Raw log10-mel of one padded segment x [L] (L % hop == 0): centre reflect padding of
// n_fft/2 on both sides, last frame dropped -> [n_mels, L / hop] (§4.3 steps 1-5).
at::Tensor log_mel_raw(const at::Tensor& x, const at::Tensor& filters, int64_t n_fft, int64_t hop);

// Samples [start, end) of the centre-padded signal of x[0..len) (reflection at both edges,
// edge sample not repeated): xp[-k] = x[k], xp[len-1+k] = x[len-1-k]. Needs
// start >= -(len-1) and end <= 2*len-1. x: [>= len] (only x[0..len) is read).
at::Tensor reflect_slice(const at::Tensor& x, int64_t len, int64_t start, int64_t end);

// Dynamic-range floor and scaling (§4.3 steps 6-7): (max(lg, max_log - 8) + 4) / 4.
at::Tensor log_mel_normalize(const at::Tensor& lg, double max_log);

}  // namespace glmvoice::speech
