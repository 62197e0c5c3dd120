// HiFT vocoder half of the GLM-4-Voice decoder: 80-bin log-mel -> 22050 Hz audio (decoder
// spec §4): F0 predictor, harmonic sine source (NSF), source STFT, upsampling trunk with
// source fusion and Snake resblocks, iSTFT head, clip, cache_source splice.
//
// Reference: THUDM/GLM-4-Voice@eb00ce9 cosyvoice/hifigan/{generator.py, f0_predictor.py},
// cosyvoice/transformer/activation.py (Snake); HiFTNet arXiv:2309.09493; NSF arXiv:1904.12088.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "voice/decoder_config.h"

namespace glmvoice::io {
struct StateDict;
}

namespace glmvoice::voice {

struct HiftTaps {
  at::Tensor f0;      // [1, N] Hz
};

struct HiftOutput {
  at::Tensor audio;   // [1, 256 N] f32 CPU, clipped to audio_limit
  at::Tensor source;  // [1, 1, 256 N] f32 CPU (after the cache splice)
};

// Snake (activation.py): x + inv * sin(x * alpha)^2 with inv = 1 / (alpha + 1e-9); x [1, C, T],
// alpha and inv [1, C, 1]. Bit-identical to those tensor ops; f32 CPU in one pass after sin.
at::Tensor hift_snake(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& inv);

class HiftModel {
 public:
  // `weights` is hift.pt with weight norm already folded (io::fold_weight_norm).
  HiftModel(const HiftConfig& config, const io::StateDict& weights, c10::Device device);

  // mel [1, n_mel, N] (N >= 1); cache_source [1, 1, S] (S may be 0). Draws (spec §5.4 #2-#4)
  // rand [1, H, 1], randn [1, H, L], randn [1, L, 1] from the CPU `gen`, in that order
  // (#4 only if draw_unused_noise, to keep the generator in step with upstream).
  HiftOutput inference(const at::Tensor& mel, const at::Tensor& cache_source, at::Generator& gen,
                       HiftTaps* taps = nullptr, bool draw_unused_noise = true) const;

  const HiftConfig& config() const { return config_; }

  struct Conv {
    at::Tensor w, b;
    int64_t stride = 1, padding = 0, dilation = 1;
  };
  struct ResBlock {
    std::vector<Conv> convs1, convs2;
    // Snake alpha and 1 / (alpha + 1e-9), each [1, ch, 1]
    std::vector<at::Tensor> alpha1, inv1, alpha2, inv2;
  };

 private:
  at::Tensor resblock(const ResBlock& r, at::Tensor x) const;

  HiftConfig config_;
  c10::Device device_;
  at::Tensor l_linear_w_, l_linear_b_;
  std::vector<Conv> f0_convs_;
  at::Tensor f0_cls_w_, f0_cls_b_;
  Conv conv_pre_, conv_post_;
  std::vector<Conv> ups_, source_downs_;
  std::vector<ResBlock> source_resblocks_, resblocks_;
  at::Tensor window_;  // periodic Hann(n_fft), computed in double, stored f32
};

}  // namespace glmvoice::voice
