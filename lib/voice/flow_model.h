// Flow half of the GLM-4-Voice decoder: speech tokens -> 80-bin log-mel (decoder spec §3).
// MaskedDiffWithXvec.inference: token embedding, block-causal conformer encoder with
// relative positions, encoder projection, length regulator, ConditionalCFM (cosine schedule,
// Euler, classifier-free guidance) around the ConditionalDecoder U-Net estimator.
//
// Reference: THUDM/GLM-4-Voice@eb00ce9 cosyvoice/flow/{flow.py, flow_matching.py, decoder.py,
// length_regulator.py}, cosyvoice/transformer/{encoder.py, encoder_layer.py, attention.py,
// embedding.py}; shivammehta25/Matcha-TTS@dd9105b matcha/models/components/{decoder.py,
// transformer.py}; flow matching arXiv:2210.02747; CosyVoice arXiv:2407.05407.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "voice/decoder_config.h"

namespace glmvoice::io {
struct StateDict;
}

namespace glmvoice::voice {

class WeightTable;

// Optional intermediate tensors (parity checks).
struct FlowTaps {
  at::Tensor encoder_out;  // [1, T, d] after after_norm, before encoder_proj
  at::Tensor mu;           // [1, M, n_mel] length-regulator output
};

class FlowModel {
 public:
  // `weights` is flow.pt; shapes are checked against `config`, every tensor must be used.
  FlowModel(const FlowConfig& config, const io::StateDict& weights, c10::Device device,
            c10::ScalarType dtype);

  // tokens [1, Tn] int64, prompt_tokens [1, Tp] int64 (Tp may be 0), prompt_feat [1, Pm, n_mel]
  // (Pm may be 0). Draws the CFM noise [1, n_mel, M] from `gen` (CPU; reseeding is the
  // caller's job, spec §5.4). Returns mel [1, n_mel, M - Pm] f32 on CPU.
  at::Tensor inference(const at::Tensor& tokens, const at::Tensor& prompt_tokens,
                       const at::Tensor& prompt_feat, at::Generator& gen, int64_t n_timesteps,
                       double cfg_rate, FlowTaps* taps = nullptr) const;

  // Spec §3.4: fp32, step by step: ((float)T / rate * 22050) / 256, truncated.
  int64_t mel_len(int64_t tokens) const;
  const FlowConfig& config() const { return config_; }

  struct Linear {
    at::Tensor w, b;
  };
  struct Norm {
    at::Tensor w, b;
  };
  struct Conv {
    at::Tensor w, b;
  };
  struct EncoderLayer {
    Norm norm_mha, norm_ff;
    Linear q, k, v, out, w1, w2;
    at::Tensor pos_w, pos_bias_u, pos_bias_v;
  };
  struct Resnet {
    Linear mlp;
    Conv conv1, conv2, res_conv;
    Norm gn1, gn2;
  };
  struct TBlock {
    Norm norm1, norm3;
    at::Tensor to_qkv;  // [3 inner, dim]: to_q, to_k, to_v stacked
    Linear to_out, ff1, ff2;
  };
  struct Stage {
    Resnet resnet;
    std::vector<TBlock> blocks;
    Conv sample;        // down: Conv k3 s2 p1 / s1 p1; up: ConvT k4 s2 p1 / Conv k3 p1
    bool strided = false;  // down: stride 2; up: transposed conv
  };

 private:
  at::Tensor encode(const at::Tensor& tokens, FlowTaps* taps) const;  // -> [1, T, n_mel]
  at::Tensor pos_table(int64_t T) const;                               // [1, 2T-1, d]
  at::Tensor estimator(const at::Tensor& x, const at::Tensor& mu, const at::Tensor& t,
                       const at::Tensor& spks, const at::Tensor& cond) const;
  at::Tensor resnet(const Resnet& r, const at::Tensor& x, const at::Tensor& temb) const;
  at::Tensor tblock(const TBlock& b, const at::Tensor& x) const;

  FlowConfig config_;
  c10::Device device_;
  c10::ScalarType dtype_;
  at::Tensor embedding_;        // [vocab, input_size]
  Linear spk_affine_, proj_;
  Linear embed_linear_;
  Norm embed_norm_, after_norm_;
  std::vector<EncoderLayer> layers_;
  at::Tensor pe_;               // [1, 2*5000-1, d] EspnetRelPositionalEncoding table
  std::vector<Conv> lr_convs_;  // len(sampling_ratios) k3 convs + final k1 conv
  std::vector<Norm> lr_norms_;
  Linear time1_, time2_;
  std::vector<Stage> down_, mid_, up_;
  Conv final_conv_, final_proj_;
  Norm final_norm_;
};

}  // namespace glmvoice::voice
