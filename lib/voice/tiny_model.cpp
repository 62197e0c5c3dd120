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
#include "voice/decoder_config.h"

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

// Real decoder size (spec §1.1 values), for the benchmark: random weights, same layout.
const char* const kRealYaml = R"(# GLM-4-Voice decoder at the release size (spec §1.1), random weights (glmvoice-bench)
__set_seed1: !apply:random.seed [1986]
sample_rate: 22050
spk_embed_dim: 192
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 16384
    input_frame_rate: 12.5
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.BlockConformerEncoder
        output_size: 512
        attention_heads: 8
        linear_units: 2048
        num_blocks: 6
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'block_rel_selfattn'
        block_size: 10
        input_size: 512
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1, 1, 1]
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
            channels: [256, 256]
            dropout: 0
            attention_head_dim: 64
            n_blocks: 4
            num_mid_blocks: 12
            num_heads: 8
            act_fn: 'gelu'
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: 512
    nb_harmonics: 8
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
        cond_channels: 512
)";

// Every flow.pt tensor of spec §2.3 for `c`.
void write_flow(Writer& w, const FlowConfig& c) {
  const auto& e = c.encoder;
  const int64_t d = e.output_size, heads = e.attention_heads, n_mel = c.output_size;
  w.add("input_embedding.weight", w.randn({c.vocab_size, c.input_size}, 1.0));
  w.linear("spk_embed_affine_layer", n_mel, c.spk_embed_dim);
  w.linear("encoder_proj", n_mel, d);
  w.linear("encoder.embed.out.0", d, e.input_size);
  w.norm("encoder.embed.out.1", d);
  w.norm("encoder.after_norm", d);
  for (int64_t l = 0; l < e.num_blocks; ++l) {
    const std::string p = "encoder.encoders." + std::to_string(l);
    w.add(p + ".self_attn.pos_bias_u", w.randn({heads, d / heads}, kInitStd));
    w.add(p + ".self_attn.pos_bias_v", w.randn({heads, d / heads}, kInitStd));
    for (const char* n : {"linear_q", "linear_k", "linear_v", "linear_out"}) w.linear(p + ".self_attn." + n, d, d);
    w.linear(p + ".self_attn.linear_pos", d, d, /*bias=*/false);
    w.linear(p + ".feed_forward.w_1", e.linear_units, d);
    w.linear(p + ".feed_forward.w_2", d, e.linear_units);
    w.norm(p + ".norm_mha", d);
    w.norm(p + ".norm_ff", d);
  }
  for (int64_t i = 0; i < c.lr_groups; ++i) {
    w.conv("length_regulator.model." + std::to_string(3 * i), c.lr_channels, i == 0 ? n_mel : c.lr_channels, 3);
    w.norm("length_regulator.model." + std::to_string(3 * i + 1), c.lr_channels);
  }
  w.conv("length_regulator.model." + std::to_string(3 * c.lr_groups), c.lr_out_channels, c.lr_channels, 1);

  const auto& s = c.estimator;
  const std::string ep = "decoder.estimator.";
  const int64_t tdim = 4 * s.channels[0], inner = s.num_heads * s.attention_head_dim;
  w.linear(ep + "time_mlp.linear_1", tdim, s.in_channels);
  w.linear(ep + "time_mlp.linear_2", tdim, tdim);
  auto resnet = [&](const std::string& p, int64_t cin, int64_t cout) {
    w.linear(p + ".mlp.1", cout, tdim);
    w.conv(p + ".block1.block.0", cout, cin, 3);
    w.norm(p + ".block1.block.1", cout);
    w.conv(p + ".block2.block.0", cout, cout, 3);
    w.norm(p + ".block2.block.1", cout);
    w.conv(p + ".res_conv", cout, cin, 1);
  };
  auto tblocks = [&](const std::string& p, int64_t dim) {
    for (int64_t j = 0; j < s.n_blocks; ++j) {
      const std::string b = p + ".1." + std::to_string(j);
      w.norm(b + ".norm1", dim);
      w.linear(b + ".attn1.to_q", inner, dim, false);
      w.linear(b + ".attn1.to_k", inner, dim, false);
      w.linear(b + ".attn1.to_v", inner, dim, false);
      w.linear(b + ".attn1.to_out.0", dim, inner);
      w.norm(b + ".norm3", dim);
      w.linear(b + ".ff.net.0.proj", 4 * dim, dim);
      w.linear(b + ".ff.net.2", dim, 4 * dim);
    }
  };
  const size_t n = s.channels.size();
  int64_t prev = s.in_channels;
  for (size_t i = 0; i < n; ++i) {
    const std::string p = ep + "down_blocks." + std::to_string(i);
    const int64_t ch = s.channels[i];
    resnet(p + ".0", prev, ch);
    tblocks(p, ch);
    w.conv(i + 1 < n ? p + ".2.conv" : p + ".2", ch, ch, 3);
    prev = ch;
  }
  for (int64_t i = 0; i < s.num_mid_blocks; ++i) {
    const std::string p = ep + "mid_blocks." + std::to_string(i);
    resnet(p + ".0", s.channels.back(), s.channels.back());
    tblocks(p, s.channels.back());
  }
  std::vector<int64_t> rc(s.channels.rbegin(), s.channels.rend());
  rc.push_back(s.channels[0]);
  for (size_t i = 0; i + 1 < rc.size(); ++i) {
    const std::string p = ep + "up_blocks." + std::to_string(i);
    const int64_t ch = rc[i + 1];
    resnet(p + ".0", 2 * rc[i], ch);
    tblocks(p, ch);
    if (i + 2 < rc.size()) {  // ConvTranspose1d k4 s2 p1, weight [in, out, k]
      w.add(p + ".2.conv.weight", w.randn({ch, ch, 4}, 1.0 / std::sqrt(4.0 * ch)));
      w.add(p + ".2.conv.bias", w.randn({ch}, kInitStd));
    } else {
      w.conv(p + ".2", ch, ch, 3);
    }
  }
  w.conv(ep + "final_block.block.0", rc.back(), rc.back(), 3);
  w.norm(ep + "final_block.block.1", rc.back());
  w.conv(ep + "final_proj", s.out_channels, rc.back(), 1);
}

// Every hift.pt tensor of spec §2.4 for `c`, weight norm spelled as `style`.
void write_hift(Writer& w, const HiftConfig& c, WnStyle style) {
  const int64_t base = c.base_channels, H = c.nb_harmonics + 1, nf2 = c.n_fft + 2, cond = c.f0_cond_channels;
  const size_t S = c.upsample_rates.size();
  w.linear("m_source.l_linear", 1, H);
  w.wn_conv("conv_pre", {base, c.in_channels, 7}, base, style, 1.0 / std::sqrt(c.in_channels * 7.0));
  for (size_t i = 0; i < S; ++i) {
    const int64_t cin = base >> i, cout = base >> (i + 1), k = c.upsample_kernel_sizes[i];
    w.wn_conv("ups." + std::to_string(i), {cin, cout, k}, cout, style,
              1.0 / std::sqrt(static_cast<double>(cin * k) / c.upsample_rates[i]));
  }
  std::vector<int64_t> cum{1};
  for (size_t i = 0; i + 1 < S; ++i) cum.push_back(cum.back() * c.upsample_rates[S - 1 - i]);
  auto resblock = [&](const std::string& p, int64_t ch, int64_t k, size_t n_dil) {
    for (size_t j = 0; j < n_dil; ++j) {
      const std::string js = std::to_string(j);
      w.wn_conv(p + ".convs1." + js, {ch, ch, k}, ch, style, 0.5 / std::sqrt(static_cast<double>(ch * k)));
      w.wn_conv(p + ".convs2." + js, {ch, ch, k}, ch, style, 0.5 / std::sqrt(static_cast<double>(ch * k)));
    }
    for (size_t j = 0; j < n_dil; ++j) w.add(p + ".activations1." + std::to_string(j) + ".alpha", 1 + w.randn({ch}, 0.1));
    for (size_t j = 0; j < n_dil; ++j) w.add(p + ".activations2." + std::to_string(j) + ".alpha", 1 + w.randn({ch}, 0.1));
  };
  for (size_t i = 0; i < S; ++i) {
    const int64_t cout = base >> (i + 1), u = cum[S - 1 - i];
    w.conv("source_downs." + std::to_string(i), cout, nf2, u > 1 ? 2 * u : 1);
    resblock("source_resblocks." + std::to_string(i), cout, c.source_resblock_kernel_sizes[i],
             c.source_resblock_dilation_sizes[i].size());
  }
  const size_t K = c.resblock_kernel_sizes.size();
  for (size_t i = 0; i < S; ++i) {
    for (size_t j = 0; j < K; ++j) {
      resblock("resblocks." + std::to_string(i * K + j), base >> (i + 1), c.resblock_kernel_sizes[j],
               c.resblock_dilation_sizes[j].size());
    }
  }
  w.wn_conv("conv_post", {nf2, base >> S, 7}, nf2, style, 0.5 / std::sqrt((base >> S) * 7.0));
  for (int i = 0; i < 5; ++i) {
    const int64_t cin = i == 0 ? c.f0_in_channels : cond;
    w.wn_conv("f0_predictor.condnet." + std::to_string(2 * i), {cond, cin, 3}, cond, style,
              1.0 / std::sqrt(cin * 3.0));
  }
  w.add("f0_predictor.classifier.weight", w.randn({1, cond}, kF0WeightStd));
  w.add("f0_predictor.classifier.bias", at::full({1}, kF0Bias));
}

}  // namespace

std::vector<std::string> tiny_config_names() { return {"tiny", "tiny-parametrized", "tiny-folded"}; }

void write_tiny_decoder(const std::string& dir, const std::string& config, uint64_t seed) {
  c10::InferenceMode guard;
  WnStyle style = WnStyle::kOld;
  const char* yaml = kTinyYaml;
  if (config == "tiny") {
    style = WnStyle::kOld;
  } else if (config == "tiny-parametrized") {
    style = WnStyle::kParametrized;
  } else if (config == "tiny-folded") {
    style = WnStyle::kFolded;
  } else if (config == "real-random") {
    yaml = kRealYaml;  // 111 M + 20 M random parameters, ~530 MB on disk (benchmark only)
  } else {
    throw Error(ErrorCode::kBadConfig, dir, config,
                "unknown tiny decoder config (tiny, tiny-parametrized, tiny-folded, real-random)");
  }
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw Error(ErrorCode::kNotFound, dir, "", "cannot create directory");
  const std::string cfg_path = (fs::path(dir) / "config.yaml").string();
  {
    std::ofstream f(cfg_path);
    f << yaml;
    if (!f) throw Error(ErrorCode::kBadFile, cfg_path, "", "write failed");
  }
  const DecoderConfig cfg = DecoderConfig::load(cfg_path);
  // Same seed -> same flow and same folded HiFT weights whatever the spelling.
  {
    Writer flow{at::make_generator<at::CPUGeneratorImpl>(seed), {}};
    write_flow(flow, cfg.flow);
    io::save_torch_state_dict((fs::path(dir) / "flow.pt").string(), flow.out, "flow");
  }
  Writer hift{at::make_generator<at::CPUGeneratorImpl>(seed + 1), {}};
  write_hift(hift, cfg.hift, style);
  io::save_torch_state_dict((fs::path(dir) / "hift.pt").string(), hift.out, "hift");
}

}  // namespace glmvoice::voice
