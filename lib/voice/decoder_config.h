// GLM-4-Voice decoder hyper-parameters, read from the HyperPyYAML config.yaml (decoder spec §1).
// Every value comes from the file; the real ones (spec §1.1 tables) are only documentation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmvoice::io {
class YamlConfig;
}

namespace glmvoice::voice {

// flow.encoder (BlockConformerEncoder), spec §1.1 / §3.3.
struct EncoderConfig {
  int64_t input_size = 512;
  int64_t output_size = 512;   // d
  int64_t attention_heads = 8; // H, d_k = d / H
  int64_t linear_units = 2048;
  int64_t num_blocks = 6;
  int64_t block_size = 10;     // block-causal attention block (tokens)
};

// flow.decoder.estimator (ConditionalDecoder U-Net), spec §3.7.
struct EstimatorConfig {
  int64_t in_channels = 320;   // 4 x n_mel: x, mu, spks, cond
  int64_t out_channels = 80;
  std::vector<int64_t> channels{256, 256};
  int64_t attention_head_dim = 64;
  int64_t n_blocks = 4;
  int64_t num_mid_blocks = 12;
  int64_t num_heads = 8;
};

struct FlowConfig {
  int64_t input_size = 512;     // token embedding dim
  int64_t output_size = 80;     // mel bins
  int64_t spk_embed_dim = 192;
  int64_t vocab_size = 16384;
  double input_frame_rate = 12.5;
  EncoderConfig encoder;
  int64_t lr_channels = 80;     // length_regulator.channels
  int64_t lr_out_channels = 80;
  int64_t lr_groups = 4;        // len(sampling_ratios): conv/GroupNorm/Mish groups
  int64_t lr_norm_groups = 1;   // GroupNorm groups
  EstimatorConfig estimator;
  double inference_cfg_rate = 0.7;
  bool cosine_schedule = true;  // t_scheduler == 'cosine'
};

struct HiftConfig {
  int64_t in_channels = 80;
  int64_t base_channels = 512;
  int64_t nb_harmonics = 8;
  double sampling_rate = 22050;
  double nsf_alpha = 0.1;
  double nsf_sigma = 0.003;
  double nsf_voiced_threshold = 10;
  std::vector<int64_t> upsample_rates{8, 8};
  std::vector<int64_t> upsample_kernel_sizes{16, 16};
  int64_t n_fft = 16;
  int64_t hop_len = 4;
  std::vector<int64_t> resblock_kernel_sizes{3, 7, 11};
  std::vector<std::vector<int64_t>> resblock_dilation_sizes{{1, 3, 5}, {1, 3, 5}, {1, 3, 5}};
  std::vector<int64_t> source_resblock_kernel_sizes{7, 11};
  std::vector<std::vector<int64_t>> source_resblock_dilation_sizes{{1, 3, 5}, {1, 3, 5}};
  double lrelu_slope = 0.1;
  double audio_limit = 0.99;
  int64_t f0_in_channels = 80;
  int64_t f0_cond_channels = 512;

  // prod(upsample_rates) x hop_len: samples per mel frame (256).
  int64_t samples_per_frame() const;
};

struct DecoderConfig {
  std::string path;  // config.yaml, for messages
  FlowConfig flow;
  HiftConfig hift;

  // Reads and validates config.yaml (spec §1.2: class tags, supported subset, hop 256).
  // Throws glmvoice::Error kBadConfig naming the file and key.
  static DecoderConfig from_yaml(const io::YamlConfig& yaml);
  static DecoderConfig load(const std::string& path);
};

}  // namespace glmvoice::voice
