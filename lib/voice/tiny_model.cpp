// Tiny random GLM-4-Voice decoder checkpoints in the real layout (decoder spec §6): config.yaml
// (HyperPyYAML with the ignored `llm`/`!apply:` nodes), flow.pt and hift.pt written as
// torch.save zips. Variants differ only in the HiFT weight-norm spelling (spec §2.2).
#include "voice/tiny_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/error.h"
#include "io/torch_pickle.h"

namespace glmvoice::voice {

namespace {

// Spec §6 tiny configuration.
const char* const kTinyYaml = R"(# tiny GLM-4-Voice decoder (glmvoice-mkmodel); structure follows the release config.yaml
__set_seed1: !apply:torch.manual_seed [1986]   # must be ignored
sample_rate: 22050
spk_embed_dim: 192
llm: !new:cosyvoice.llm.llm.TransformerLM      # must be ignored
    text_token_size: 10
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: 16
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 64
    input_frame_rate: 12.5
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.BlockConformerEncoder
        output_size: 32
        attention_heads: 4
        linear_units: 48
        num_blocks: 2
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'block_rel_selfattn'
        block_size: 4
        input_size: 16
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [16, 16]
            dropout: 0
            attention_head_dim: 8
            n_blocks: 1
            num_mid_blocks: 2
            num_heads: 3
            act_fn: 'gelu'
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 32
    nb_harmonics: 2
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 8]
    upsample_kernel_sizes: [16, 16]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: 16
)";

constexpr double kInitStd = 0.05;        // spec §6: small init keeps exp() in the iSTFT head moderate
constexpr double kF0Bias = 10.0;         // f0 classifier bias at the voiced threshold ...
constexpr double kF0WeightStd = 4.0;     // ... and weights spreading |f0| across it (both branches run)

enum class WnStyle { kOld, kParametrized, kFolded };

struct Writer {
  at::Generator gen;
  std::vector<std::pair<std::string, at::Tensor>> out;

  at::Tensor randn(const std::vector<int64_t>& shape, double std) {
    return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)) * std;
  }
  void add(const std::string& name, at::Tensor t) { out.emplace_back(name, t.contiguous()); }
  void linear(const std::string& p, int64_t o, int64_t i, bool bias = true) {
    add(p + ".weight", randn({o, i}, 1.0 / std::sqrt(static_cast<double>(i))));
    if (bias) add(p + ".bias", randn({o}, kInitStd));
  }
  void norm(const std::string& p, int64_t n) {
    add(p + ".weight", 1 + randn({n}, kInitStd));
    add(p + ".bias", randn({n}, kInitStd));
  }
  void conv(const std::string& p, int64_t o, int64_t i, int64_t k) {
    add(p + ".weight", randn({o, i, k}, 1.0 / std::sqrt(static_cast<double>(i * k))));
    add(p + ".bias", randn({o}, kInitStd));
  }
  // Weight-normed conv (dim 0): v random, g = ||v|| x (1 + noise) so the folded weight is ~v.
  void wn_conv(const std::string& p, std::vector<int64_t> shape, int64_t bias_n, WnStyle style, double std) {
    at::Tensor v = randn(shape, std);
    at::Tensor norm = v.reshape({shape[0], -1}).norm(2, {1}).reshape({shape[0], 1, 1});
    at::Tensor g = norm * (1 + randn({shape[0], 1, 1}, kInitStd));
    switch (style) {
      case WnStyle::kOld:
        add(p + ".weight_g", g);
        add(p + ".weight_v", v);
        break;
      case WnStyle::kParametrized:
        add(p + ".parametrizations.weight.original0", g);
        add(p + ".parametrizations.weight.original1", v);
        break;
      case WnStyle::kFolded:
        add(p + ".weight", at::_weight_norm(v, g, 0));
        break;
    }
    add(p + ".bias", randn({bias_n}, kInitStd));
  }
};

void write_flow(Writer& w) {
  const int64_t vocab = 64, in = 16, d = 32, heads = 4, ffn = 48, layers = 2, n_mel = 80, spk = 192;
  w.add("input_embedding.weight", w.randn({vocab, in}, 1.0));
  w.linear("spk_embed_affine_layer", n_mel, spk);
  w.linear("encoder_proj", n_mel, d);
  w.linear("encoder.embed.out.0", d, in);
  w.norm("encoder.embed.out.1", d);
  w.norm("encoder.after_norm", d);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "encoder.encoders." + std::to_string(l);
    w.add(p + ".self_attn.pos_bias_u", w.randn({heads, d / heads}, kInitStd));
    w.add(p + ".self_attn.pos_bias_v", w.randn({heads, d / heads}, kInitStd));
    for (const char* n : {"linear_q", "linear_k", "linear_v", "linear_out"}) w.linear(p + ".self_attn." + n, d, d);
    w.linear(p + ".self_attn.linear_pos", d, d, /*bias=*/false);
    w.linear(p + ".feed_forward.w_1", ffn, d);
    w.linear(p + ".feed_forward.w_2", d, ffn);
    w.norm(p + ".norm_mha", d);
    w.norm(p + ".norm_ff", d);
  }
  // Length regulator: 2 groups (sampling_ratios [1, 1]) then the k1 conv at index 6.
  w.conv("length_regulator.model.0", n_mel, n_mel, 3);
  w.norm("length_regulator.model.1", n_mel);
  w.conv("length_regulator.model.3", n_mel, n_mel, 3);
  w.norm("length_regulator.model.4", n_mel);
  w.conv("length_regulator.model.6", n_mel, n_mel, 1);
  // Estimator: channels [16, 16], 3 heads x 8 (inner 24), 1 transformer block, 2 mid blocks.
  const std::string e = "decoder.estimator.";
  const int64_t C = 16, tdim = 4 * C, inner = 24, ein = 320;
  w.linear(e + "time_mlp.linear_1", tdim, ein);
  w.linear(e + "time_mlp.linear_2", tdim, tdim);
  auto resnet = [&](const std::string& p, int64_t cin) {
    w.linear(p + ".mlp.1", C, tdim);
    w.conv(p + ".block1.block.0", C, cin, 3);
    w.norm(p + ".block1.block.1", C);
    w.conv(p + ".block2.block.0", C, C, 3);
    w.norm(p + ".block2.block.1", C);
    w.conv(p + ".res_conv", C, cin, 1);
  };
  auto tblock = [&](const std::string& p) {
    w.norm(p + ".norm1", C);
    w.linear(p + ".attn1.to_q", inner, C, false);
    w.linear(p + ".attn1.to_k", inner, C, false);
    w.linear(p + ".attn1.to_v", inner, C, false);
    w.linear(p + ".attn1.to_out.0", C, inner);
    w.norm(p + ".norm3", C);
    w.linear(p + ".ff.net.0.proj", 4 * C, C);
    w.linear(p + ".ff.net.2", C, 4 * C);
  };
  resnet(e + "down_blocks.0.0", ein);
  tblock(e + "down_blocks.0.1.0");
  w.conv(e + "down_blocks.0.2.conv", C, C, 3);
  resnet(e + "down_blocks.1.0", C);
  tblock(e + "down_blocks.1.1.0");
  w.conv(e + "down_blocks.1.2", C, C, 3);
  for (int i = 0; i < 2; ++i) {
    resnet(e + "mid_blocks." + std::to_string(i) + ".0", C);
    tblock(e + "mid_blocks." + std::to_string(i) + ".1.0");
  }
  resnet(e + "up_blocks.0.0", 2 * C);
  tblock(e + "up_blocks.0.1.0");
  w.add(e + "up_blocks.0.2.conv.weight", w.randn({C, C, 4}, 1.0 / std::sqrt(4.0 * C)));  // ConvT [in, out, k]
  w.add(e + "up_blocks.0.2.conv.bias", w.randn({C}, kInitStd));
  resnet(e + "up_blocks.1.0", 2 * C);
  tblock(e + "up_blocks.1.1.0");
  w.conv(e + "up_blocks.1.2", C, C, 3);
  w.conv(e + "final_block.block.0", C, C, 3);
  w.norm(e + "final_block.block.1", C);
  w.conv(e + "final_proj", n_mel, C, 1);
}

void write_hift(Writer& w, WnStyle style) {
  const int64_t n_mel = 80, base = 32, H = 3, nf2 = 18, cond = 16;
  w.linear("m_source.l_linear", 1, H);
  w.wn_conv("conv_pre", {base, n_mel, 7}, base, style, 1.0 / std::sqrt(n_mel * 7.0));
  w.wn_conv("ups.0", {base, base / 2, 16}, base / 2, style, 1.0 / std::sqrt(base * 2.0));
  w.wn_conv("ups.1", {base / 2, base / 4, 16}, base / 4, style, 1.0 / std::sqrt(base * 1.0));
  w.conv("source_downs.0", base / 2, nf2, 16);
  w.conv("source_downs.1", base / 4, nf2, 1);
  auto resblock = [&](const std::string& p, int64_t ch, int64_t k) {
    for (int j = 0; j < 3; ++j) {
      const std::string js = std::to_string(j);
      w.wn_conv(p + ".convs1." + js, {ch, ch, k}, ch, style, 0.5 / std::sqrt(static_cast<double>(ch * k)));
      w.wn_conv(p + ".convs2." + js, {ch, ch, k}, ch, style, 0.5 / std::sqrt(static_cast<double>(ch * k)));
    }
    for (int j = 0; j < 3; ++j) w.add(p + ".activations1." + std::to_string(j) + ".alpha", 1 + w.randn({ch}, 0.1));
    for (int j = 0; j < 3; ++j) w.add(p + ".activations2." + std::to_string(j) + ".alpha", 1 + w.randn({ch}, 0.1));
  };
  resblock("source_resblocks.0", base / 2, 7);
  resblock("source_resblocks.1", base / 4, 11);
  const int64_t ks[3] = {3, 7, 11};
  for (int i = 0; i < 6; ++i) resblock("resblocks." + std::to_string(i), i < 3 ? base / 2 : base / 4, ks[i % 3]);
  w.wn_conv("conv_post", {nf2, base / 4, 7}, nf2, style, 0.5 / std::sqrt(base / 4 * 7.0));
  for (int i = 0; i < 5; ++i) {
    w.wn_conv("f0_predictor.condnet." + std::to_string(2 * i), {cond, i == 0 ? n_mel : cond, 3}, cond, style,
              1.0 / std::sqrt((i == 0 ? n_mel : cond) * 3.0));
  }
  w.add("f0_predictor.classifier.weight", w.randn({1, cond}, kF0WeightStd));
  w.add("f0_predictor.classifier.bias", at::full({1}, kF0Bias));
}

}  // namespace

std::vector<std::string> tiny_config_names() { return {"tiny", "tiny-parametrized", "tiny-folded"}; }

void write_tiny_decoder(const std::string& dir, const std::string& config, uint64_t seed) {
  c10::InferenceMode guard;
  WnStyle style;
  if (config == "tiny") {
    style = WnStyle::kOld;
  } else if (config == "tiny-parametrized") {
    style = WnStyle::kParametrized;
  } else if (config == "tiny-folded") {
    style = WnStyle::kFolded;
  } else {
    throw Error(ErrorCode::kBadConfig, dir, config,
                "unknown tiny decoder config (tiny, tiny-parametrized, tiny-folded)");
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw Error(ErrorCode::kNotFound, dir, "", "cannot create directory");
  {
    std::ofstream f(fs::path(dir) / "config.yaml");
    f << kTinyYaml;
    if (!f) throw Error(ErrorCode::kBadFile, (fs::path(dir) / "config.yaml").string(), "", "write failed");
  }
  // Same seed -> same flow and same folded HiFT weights whatever the spelling.
  Writer flow{at::make_generator<at::CPUGeneratorImpl>(seed), {}};
  write_flow(flow);
  io::save_torch_state_dict((fs::path(dir) / "flow.pt").string(), flow.out, "flow");
  Writer hift{at::make_generator<at::CPUGeneratorImpl>(seed + 1), {}};
  write_hift(hift, style);
  io::save_torch_state_dict((fs::path(dir) / "hift.pt").string(), hift.out, "hift");
}

}  // namespace glmvoice::voice
