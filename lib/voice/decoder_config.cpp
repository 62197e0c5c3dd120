// Reference: THUDM/GLM-4-Voice@eb00ce9 glm-4-voice-decoder/config.yaml (decoder spec §1).
#include "voice/decoder_config.h"

#include <yaml-cpp/yaml.h>

#include "io/error.h"
#include "io/yaml_config.h"
#include <cstdint>

namespace glmvoice::voice {

namespace {

[[noreturn]] void bad(const io::YamlConfig& yaml, const std::string& key, const std::string& why) {
  throw Error(ErrorCode::kBadConfig, yaml.path(), key, why);
}

void expect_string(const io::YamlConfig& yaml, const std::string& key, const std::string& want,
                   bool optional = false) {
  if (optional && !yaml.has(key)) return;
  const std::string got = yaml.get_string(key);
  if (got != want) bad(yaml, key, "unsupported value '" + got + "' (only '" + want + "' is implemented)");
}

void expect_bool(const io::YamlConfig& yaml, const std::string& key, bool want) {
  if (!yaml.has(key)) return;
  if (yaml.get_bool(key) != want)
    bad(yaml, key, std::string("unsupported value (only ") + (want ? "True" : "False") + " is implemented)");
}

std::vector<std::vector<int64_t>> int_list_list(const io::YamlConfig& yaml, const std::string& key) {
  YAML::Node node = yaml.node(key);
  if (!node.IsSequence()) bad(yaml, key, "expected a list of lists");
  std::vector<std::vector<int64_t>> out;
  try {
    for (const auto& row : node) {
      if (!row.IsSequence()) bad(yaml, key, "expected a list of lists");
      std::vector<int64_t> values;
      for (const auto& v : row) values.push_back(v.as<int64_t>());
      out.push_back(values);
    }
  } catch (const YAML::Exception& e) {
    bad(yaml, key, std::string("not a list of integer lists: ") + e.what());
  }
  return out;
}

int64_t positive(const io::YamlConfig& yaml, const std::string& key) {
  const int64_t v = yaml.get_int(key);
  if (v <= 0) bad(yaml, key, "must be positive, got " + std::to_string(v));
  return v;
}

}  // namespace

int64_t HiftConfig::samples_per_frame() const {
  int64_t p = hop_len;
  for (int64_t r : upsample_rates) p *= r;
  return p;
}

DecoderConfig DecoderConfig::from_yaml(const io::YamlConfig& yaml) {
  DecoderConfig c;
  c.path = yaml.path();
  // §1.2: class tags validate the structure; `llm` and `!apply:` nodes are ignored.
  yaml.expect_class("flow", "MaskedDiffWithXvec");
  yaml.expect_class("flow.encoder", "BlockConformerEncoder");
  yaml.expect_class("flow.length_regulator", "InterpolateRegulator");
  yaml.expect_class("flow.decoder", "ConditionalCFM");
  yaml.expect_class("flow.decoder.estimator", "ConditionalDecoder");
  yaml.expect_class("hift", "HiFTGenerator");
  yaml.expect_class("hift.f0_predictor", "ConvRNNF0Predictor");

  FlowConfig& f = c.flow;
  f.input_size = positive(yaml, "flow.input_size");
  f.output_size = positive(yaml, "flow.output_size");
  f.spk_embed_dim = positive(yaml, "flow.spk_embed_dim");
  f.vocab_size = positive(yaml, "flow.vocab_size");
  f.input_frame_rate = yaml.get_double("flow.input_frame_rate");
  if (!(f.input_frame_rate > 0)) bad(yaml, "flow.input_frame_rate", "must be positive");

  EncoderConfig& e = f.encoder;
  e.output_size = positive(yaml, "flow.encoder.output_size");
  e.attention_heads = positive(yaml, "flow.encoder.attention_heads");
  e.linear_units = positive(yaml, "flow.encoder.linear_units");
  e.num_blocks = positive(yaml, "flow.encoder.num_blocks");
  e.block_size = positive(yaml, "flow.encoder.block_size");
  e.input_size = yaml.get_int("flow.encoder.input_size", f.input_size);
  if (e.input_size != f.input_size)
    bad(yaml, "flow.encoder.input_size", "must equal flow.input_size (" + std::to_string(f.input_size) + ")");
  if (e.output_size % e.attention_heads != 0)
    bad(yaml, "flow.encoder.attention_heads", "must divide flow.encoder.output_size");
  if (e.output_size % 2 != 0) bad(yaml, "flow.encoder.output_size", "must be even (sinusoid table)");
  expect_string(yaml, "flow.encoder.input_layer", "linear");
  expect_string(yaml, "flow.encoder.pos_enc_layer_type", "rel_pos_espnet");
  expect_string(yaml, "flow.encoder.selfattention_layer_type", "block_rel_selfattn");
  expect_string(yaml, "flow.encoder.activation_type", "swish", /*optional=*/true);
  expect_bool(yaml, "flow.encoder.use_cnn_module", false);
  expect_bool(yaml, "flow.encoder.macaron_style", false);
  if (!yaml.get_bool("flow.encoder.normalize_before", true))
    bad(yaml, "flow.encoder.normalize_before", "only True (pre-LN) is implemented");
  if (yaml.has("flow.encoder.static_chunk_size") && yaml.get_int("flow.encoder.static_chunk_size") != 0)
    bad(yaml, "flow.encoder.static_chunk_size", "only 0 is implemented");
  expect_bool(yaml, "flow.encoder.use_dynamic_chunk", false);
  expect_bool(yaml, "flow.encoder.key_bias", true);

  f.lr_channels = positive(yaml, "flow.length_regulator.channels");
  f.lr_out_channels = yaml.get_int("flow.length_regulator.out_channels", f.lr_channels);
  f.lr_groups = static_cast<int64_t>(yaml.get_int_list("flow.length_regulator.sampling_ratios").size());
  f.lr_norm_groups = yaml.get_int("flow.length_regulator.groups", 1);
  if (f.lr_channels != f.output_size || f.lr_out_channels != f.output_size)
    bad(yaml, "flow.length_regulator.channels", "must equal flow.output_size");

  if (yaml.get_int("flow.decoder.n_spks", 1) != 1) bad(yaml, "flow.decoder.n_spks", "only 1 is implemented");
  expect_string(yaml, "flow.decoder.cfm_params.solver", "euler");
  const std::string sched = yaml.get_string("flow.decoder.cfm_params.t_scheduler", "cosine");
  if (sched == "cosine") {
    f.cosine_schedule = true;
  } else if (sched == "linear" || sched.empty()) {
    f.cosine_schedule = false;
  } else {
    bad(yaml, "flow.decoder.cfm_params.t_scheduler", "unsupported value '" + sched + "' (cosine or linear)");
  }
  f.inference_cfg_rate = yaml.get_double("flow.decoder.cfm_params.inference_cfg_rate");

  EstimatorConfig& s = f.estimator;
  const std::string ek = "flow.decoder.estimator.";
  s.in_channels = positive(yaml, ek + "in_channels");
  s.out_channels = positive(yaml, ek + "out_channels");
  s.channels = yaml.get_int_list(ek + "channels");
  if (s.channels.empty()) bad(yaml, ek + "channels", "must not be empty");
  s.attention_head_dim = positive(yaml, ek + "attention_head_dim");
  s.n_blocks = yaml.get_int(ek + "n_blocks");
  s.num_mid_blocks = yaml.get_int(ek + "num_mid_blocks");
  s.num_heads = positive(yaml, ek + "num_heads");
  expect_string(yaml, ek + "act_fn", "gelu", /*optional=*/true);
  if (s.in_channels != 4 * f.output_size)
    bad(yaml, ek + "in_channels", "must be 4 x flow.output_size (x, mu, spks, cond)");
  if (s.out_channels != f.output_size) bad(yaml, ek + "out_channels", "must equal flow.output_size");
  if (s.in_channels % 2 != 0) bad(yaml, ek + "in_channels", "must be even (time embedding)");

  HiftConfig& h = c.hift;
  h.in_channels = positive(yaml, "hift.in_channels");
  h.base_channels = positive(yaml, "hift.base_channels");
  h.nb_harmonics = yaml.get_int("hift.nb_harmonics");
  h.sampling_rate = yaml.get_double("hift.sampling_rate");
  h.nsf_alpha = yaml.get_double("hift.nsf_alpha");
  h.nsf_sigma = yaml.get_double("hift.nsf_sigma");
  h.nsf_voiced_threshold = yaml.get_double("hift.nsf_voiced_threshold");
  h.upsample_rates = yaml.get_int_list("hift.upsample_rates");
  h.upsample_kernel_sizes = yaml.get_int_list("hift.upsample_kernel_sizes");
  h.n_fft = positive(yaml, "hift.istft_params.n_fft");
  h.hop_len = positive(yaml, "hift.istft_params.hop_len");
  h.resblock_kernel_sizes = yaml.get_int_list("hift.resblock_kernel_sizes");
  h.resblock_dilation_sizes = int_list_list(yaml, "hift.resblock_dilation_sizes");
  h.source_resblock_kernel_sizes = yaml.get_int_list("hift.source_resblock_kernel_sizes");
  h.source_resblock_dilation_sizes = int_list_list(yaml, "hift.source_resblock_dilation_sizes");
  h.lrelu_slope = yaml.get_double("hift.lrelu_slope", 0.1);
  h.audio_limit = yaml.get_double("hift.audio_limit", 0.99);
  if (yaml.get_int("hift.f0_predictor.num_class", 1) != 1)
    bad(yaml, "hift.f0_predictor.num_class", "only 1 is implemented");
  h.f0_in_channels = positive(yaml, "hift.f0_predictor.in_channels");
  h.f0_cond_channels = positive(yaml, "hift.f0_predictor.cond_channels");

  if (h.upsample_rates.empty() || h.upsample_rates.size() != h.upsample_kernel_sizes.size())
    bad(yaml, "hift.upsample_kernel_sizes", "must have one entry per upsample rate");
  if (h.resblock_kernel_sizes.size() != h.resblock_dilation_sizes.size())
    bad(yaml, "hift.resblock_dilation_sizes", "must have one entry per resblock kernel size");
  if (h.source_resblock_kernel_sizes.size() != h.upsample_rates.size() ||
      h.source_resblock_dilation_sizes.size() != h.upsample_rates.size())
    bad(yaml, "hift.source_resblock_kernel_sizes", "must have one entry per upsample stage");
  if (h.samples_per_frame() != 256)
    bad(yaml, "hift.upsample_rates", "prod(upsample_rates) x hop_len must be 256 (the flow's mel hop)");
  if (h.in_channels != f.output_size || h.f0_in_channels != f.output_size)
    bad(yaml, "hift.in_channels", "must equal flow.output_size");
  if (h.base_channels % (int64_t{1} << h.upsample_rates.size()) != 0)
    bad(yaml, "hift.base_channels", "must be divisible by 2^len(upsample_rates)");
  if (h.n_fft % 2 != 0) bad(yaml, "hift.istft_params.n_fft", "must be even");
  return c;
}

DecoderConfig DecoderConfig::load(const std::string& path) {
  return from_yaml(io::YamlConfig::load(path));
}

}  // namespace glmvoice::voice
