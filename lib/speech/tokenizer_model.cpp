// GLM-4-Voice speech tokenizer model; see tokenizer_model.h.
//
// Reference: THUDM/GLM-4-Voice @ eb00ce9142e8d98b0ed7c57cd47e0d6d5dce9a1a
//   https://github.com/THUDM/GLM-4-Voice/blob/eb00ce9142e8d98b0ed7c57cd47e0d6d5dce9a1a/speech_tokenizer/modeling_whisper.py
//   https://github.com/THUDM/GLM-4-Voice/blob/eb00ce9142e8d98b0ed7c57cd47e0d6d5dce9a1a/speech_tokenizer/utils.py
#include "speech/tokenizer_model.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "io/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "runtime/dtype.h"

namespace glmvoice::speech {

namespace fs = std::filesystem;

namespace {

// finfo(dtype).min: the additive mask value upstream uses (§3.3; -3.4028234663852886e38 in
// float32).
double mask_value(c10::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return std::numeric_limits<double>::lowest();
    case at::kBFloat16: return static_cast<double>(std::numeric_limits<c10::BFloat16>::lowest());
    case at::kHalf: return static_cast<double>(std::numeric_limits<c10::Half>::lowest());
    default: return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}
// LayerNorm eps: PyTorch default, upstream passes none (§1.2).
constexpr double kLayerNormEps = 1e-5;
// conv kernel 3 -> causal left padding 2 (CausalConv1d, §3.2).
constexpr int64_t kConvLeftPad = 2;
// Upstream batches at most this many 30 s segments (utils.py batch_size = 128, §4.1).
constexpr int64_t kUpstreamBatchSegments = 128;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Config

TokenizerConfig TokenizerConfig::load(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string pre_path = (fs::path(dir) / "preprocessor_config.json").string();
  const io::JsonConfig json = io::JsonConfig::load(config_path);
  TokenizerConfig c;
  c.d_model = json.get_int("d_model");
  c.num_heads = json.get_int("encoder_attention_heads");
  c.ffn_dim = json.get_int("encoder_ffn_dim");
  c.num_mel_bins = json.get_int("num_mel_bins");
  c.max_source_positions = json.get_int("max_source_positions");
  c.quantize_position = json.get_int("quantize_position");
  c.pooling_position = json.get_int("pooling_position");
  c.pooling_kernel_size = json.get_int("pooling_kernel_size");
  const std::string pooling_type = json.get_string("pooling_type", "avg");
  c.vocab_size = json.get_int("quantize_vocab_size");
  c.block_size = json.get_int("quantize_causal_block_size");
  c.causal_conv = json.get_bool("encoder_causal_convolution", false);
  const std::string activation = json.get_string("activation_function", "gelu");
  const bool causal_attention = json.get_bool("encoder_causal_attention", false);
  const bool causal_encoder = json.get_bool("quantize_causal_encoder", false);

  auto bad = [&](const std::string& key, const std::string& reason) {
    return Error(ErrorCode::kBadConfig, config_path, key, reason);
  };
  if (c.d_model <= 0 || c.num_heads <= 0 || c.d_model % c.num_heads != 0) {
    throw bad("encoder_attention_heads", "d_model " + std::to_string(c.d_model) +
                                             " is not a positive multiple of the head count " +
                                             std::to_string(c.num_heads));
  }
  if (c.ffn_dim <= 0) throw bad("encoder_ffn_dim", "must be positive");
  if (c.quantize_position < 1) throw bad("quantize_position", "must be >= 1");
  if (c.pooling_position < 1 || c.pooling_position > c.quantize_position) {
    throw bad("pooling_position", "must satisfy 1 <= pooling_position <= quantize_position");
  }
  if (c.pooling_kernel_size < 1) throw bad("pooling_kernel_size", "must be >= 1");
  if (pooling_type != "avg" && pooling_type != "max") {
    throw bad("pooling_type", "'" + pooling_type + "' is neither avg nor max");
  }
  c.max_pooling = pooling_type == "max";
  if (c.vocab_size < 1) throw bad("quantize_vocab_size", "must be >= 1");
  if (c.block_size < 1 || c.block_size % c.pooling_kernel_size != 0) {
    throw bad("quantize_causal_block_size",
              "must be a positive multiple of pooling_kernel_size (needed for streaming)");
  }
  if (activation != "gelu") throw bad("activation_function", "'" + activation + "' != gelu");
  if (!c.causal_conv) {
    throw bad("encoder_causal_convolution", "non-causal convolutions are not supported");
  }
  if (causal_attention) throw bad("encoder_causal_attention", "true is not supported");
  if (causal_encoder) throw bad("quantize_causal_encoder", "true is not supported");

  c.features = FeatureConfig::load(pre_path);
  if (c.features.feature_size != c.num_mel_bins) {
    throw Error(ErrorCode::kBadConfig, pre_path, "feature_size",
                std::to_string(c.features.feature_size) + " != num_mel_bins " +
                    std::to_string(c.num_mel_bins) + " of config.json");
  }
  const int64_t segment_frames = c.segment_samples() / c.samples_per_conv_frame();
  if (segment_frames > c.max_source_positions) {
    throw bad("max_source_positions", std::to_string(c.max_source_positions) +
                                          " < conv frames of a 30 s segment (" +
                                          std::to_string(segment_frames) + ")");
  }
  return c;
}

// ---------------------------------------------------------------------------------------
// Loading (§1.4, §1.5)

std::shared_ptr<const TokenizerModel> TokenizerModel::load(const ModelOptions& options) {
  c10::InferenceMode guard;
  if (options.dtype == c10::ScalarType::Undefined) {  // "auto": this stage's default dtype
    ModelOptions resolved = options;
    resolved.dtype = runtime::default_dtype(runtime::Stage::kTokenizer, options.device);
    return load(resolved);
  }
  if (!fs::is_directory(options.path)) {
    throw Error(ErrorCode::kNotFound, options.path, "", "tokenizer model directory not found");
  }
  if (options.dtype != at::kDouble) runtime::resolve_options(options, runtime::Stage::kTokenizer);  // TF32 off on CUDA
  const c10::ScalarType dtype = options.dtype;
  if (dtype != at::kFloat && dtype != at::kDouble && dtype != at::kBFloat16 && dtype != at::kHalf) {
    throw Error(ErrorCode::kUnsupported, options.path, "dtype",
                "unsupported compute dtype " + std::string(c10::toString(dtype)));
  }
  std::shared_ptr<TokenizerModel> model(new TokenizerModel());
  model->options_ = options;
  model->config_ = TokenizerConfig::load(options.path);
  const TokenizerConfig& c = model->config_;
  const c10::Device device = options.device;
  const c10::ScalarType fdtype = model->feature_dtype();

  // Upstream globs model*.safetensors; the release has one model.safetensors.
  std::string weights_path = options.path;
  if (!fs::exists(fs::path(options.path) / "model.safetensors") &&
      !fs::exists(fs::path(options.path) / "model.safetensors.index.json")) {
    for (const auto& entry : fs::directory_iterator(options.path)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("model", 0) == 0 && entry.path().extension() == ".safetensors") {
        weights_path = entry.path().string();
        break;
      }
    }
  }
  const io::SafeTensors st = io::SafeTensors::open(weights_path);

  // Canonical (layout A) name -> file key. Layout B keys lose their "model.encoder." prefix.
  const std::string kPrefix = "model.encoder.";
  std::map<std::string, std::string> keys;
  std::vector<std::string> unknown;
  std::set<std::string> required;
  for (const char* name : {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                           "embed_positions.weight", "codebook.weight"}) {
    required.insert(name);
  }
  const char* kLayerTensors[] = {
      "self_attn_layer_norm.weight", "self_attn_layer_norm.bias", "self_attn.q_proj.weight",
      "self_attn.q_proj.bias",       "self_attn.k_proj.weight",   "self_attn.v_proj.weight",
      "self_attn.v_proj.bias",       "self_attn.out_proj.weight", "self_attn.out_proj.bias",
      "final_layer_norm.weight",     "final_layer_norm.bias",     "fc1.weight",
      "fc1.bias",                    "fc2.weight",                "fc2.bias"};
  for (int64_t i = 0; i < c.quantize_position; ++i) {
    for (const char* t : kLayerTensors) required.insert("layers." + std::to_string(i) + "." + t);
  }
  for (const std::string& key : st.names()) {
    std::string name = key;
    if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
    // Named skips (§1.4): decoder / head of full checkpoints, training buffers, the
    // post-VQ positional table, the encoder-final LayerNorm, layers past quantize_position.
    if (name.rfind("model.", 0) == 0 || name.rfind("proj_out", 0) == 0 ||
        name.rfind("layer_norm.", 0) == 0 || name.rfind("ema_", 0) == 0 ||
        name.rfind("embed_positions2.", 0) == 0) {
      continue;
    }
    if (name.rfind("layers.", 0) == 0) {
      const size_t dot = name.find('.', 7);
      int64_t index = -1;
      try {
        index = std::stoll(name.substr(7, dot - 7));
      } catch (const std::exception&) {
      }
      if (index >= c.quantize_position) continue;
    }
    if (!required.count(name)) {
      unknown.push_back(key);
      continue;
    }
    if (keys.count(name)) {
      throw Error(ErrorCode::kMismatch, st.file_of(key), key,
                  "tensor present twice (as '" + keys[name] + "' and '" + key + "')");
    }
    keys[name] = key;
  }
  for (const std::string& name : required) {
    if (!keys.count(name)) {
      throw Error(ErrorCode::kMismatch, st.path(), name,
                  "missing tensor (also looked for '" + kPrefix + name + "')");
    }
  }
  if (!unknown.empty()) {
    std::string list;
    for (const auto& k : unknown) list += (list.empty() ? "" : ", ") + k;
    runtime::log(runtime::LogLevel::kWarning,
                 st.path() + ": ignoring " + std::to_string(unknown.size()) +
                     " unknown tensor(s): " + list);
  }

  auto get = [&](const std::string& name, const std::vector<int64_t>& shape,
                 c10::ScalarType type) { return st.load_checked(keys.at(name), shape, type, device); };
  const int64_t D = c.d_model;
  model->conv1_w_ = get("conv1.weight", {D, c.num_mel_bins, 3}, dtype);
  model->conv1_b_ = get("conv1.bias", {D}, dtype);
  model->conv2_w_ = get("conv2.weight", {D, D, 3}, dtype);
  model->conv2_b_ = get("conv2.bias", {D}, dtype);
  model->embed_positions_ = get("embed_positions.weight", {c.max_source_positions, D}, dtype);
  for (int64_t i = 0; i < c.quantize_position; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    LayerWeights w;
    w.ln1_w = get(p + "self_attn_layer_norm.weight", {D}, dtype);
    w.ln1_b = get(p + "self_attn_layer_norm.bias", {D}, dtype);
    w.q_w = get(p + "self_attn.q_proj.weight", {D, D}, dtype);
    w.q_b = get(p + "self_attn.q_proj.bias", {D}, dtype);
    w.k_w = get(p + "self_attn.k_proj.weight", {D, D}, dtype);
    w.v_w = get(p + "self_attn.v_proj.weight", {D, D}, dtype);
    w.v_b = get(p + "self_attn.v_proj.bias", {D}, dtype);
    w.o_w = get(p + "self_attn.out_proj.weight", {D, D}, dtype);
    w.o_b = get(p + "self_attn.out_proj.bias", {D}, dtype);
    w.ln2_w = get(p + "final_layer_norm.weight", {D}, dtype);
    w.ln2_b = get(p + "final_layer_norm.bias", {D}, dtype);
    w.fc1_w = get(p + "fc1.weight", {c.ffn_dim, D}, dtype);
    w.fc1_b = get(p + "fc1.bias", {c.ffn_dim}, dtype);
    w.fc2_w = get(p + "fc2.weight", {D, c.ffn_dim}, dtype);
    w.fc2_b = get(p + "fc2.bias", {D}, dtype);
    model->layers_.push_back(std::move(w));
  }
  // VQ stays in f32 (f64 for an f64 model) whatever the compute dtype (§7.7).
  model->codebook_ = get("codebook.weight", {c.vocab_size, D}, fdtype);
  model->codebook_sq_ = at::sum(model->codebook_.pow(2), 1);
  // Upstream stores mel_filters as [n_freqs, n_mels] float32 and uses mel_filters.T.
  model->mel_filters_ =
      mel_filterbank(c.num_mel_bins, c.features.n_fft, c.features.sampling_rate)
          .to(at::kFloat)
          .to(fdtype)
          .t()
          .contiguous()
          .to(device);
  return model;
}

c10::ScalarType TokenizerModel::feature_dtype() const {
  return options_.dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// ---------------------------------------------------------------------------------------
// Front end and segmentation (§4)

int64_t TokenizerModel::padded_length(int64_t n) const {
  const int64_t stride = config_.samples_per_token();
  return ceil_div(n, stride) * stride;
}

at::Tensor TokenizerModel::raw_frames(const at::Tensor& xp) const {
  c10::InferenceMode guard;
  return log_mel_raw_frames(xp, mel_filters_.t(), config_.features.n_fft, config_.features.hop_length);
}

at::Tensor TokenizerModel::segment_features(const at::Tensor& segment, int64_t padded_len) const {
  c10::InferenceMode guard;
  const int64_t n = segment.size(0);
  TORCH_CHECK(n >= 1 && padded_len >= n && padded_len % config_.samples_per_token() == 0,
              "segment_features: bad lengths n=", n, " padded=", padded_len);
  at::Tensor x = segment.to(options_.device, feature_dtype());
  if (padded_len > n) {
    x = at::cat({x, at::full({padded_len - n}, config_.features.padding_value, x.options())});
  }
  // x: [L] -> lg: [n_mels, L/160]; M over every frame of the padded segment (§4.3 step 6).
  const at::Tensor lg = log_mel_raw(x, mel_filters_.t(), config_.features.n_fft,
                                    config_.features.hop_length);
  return log_mel_normalize(lg, lg.max().item<double>());
}

namespace {

// Segments of an utterance and their padded lengths (§4.1, §4.2, §7.3).
struct SegmentPlan {
  int64_t begin, n, padded;
};

std::vector<SegmentPlan> plan_segments(const TokenizerModel& model, int64_t total,
                                       bool emulate_batch_padding) {
  const int64_t seg = model.config().segment_samples();
  std::vector<SegmentPlan> plan;
  for (int64_t begin = 0; begin < total; begin += seg) {
    const int64_t n = std::min(seg, total - begin);
    plan.push_back({begin, n, model.padded_length(n)});
  }
  if (emulate_batch_padding && !plan.empty()) {
    // Upstream pads every segment of a batch to the longest one: the last segment grows to
    // 30 s when it is not alone in its 128-segment batch.
    const int64_t last = static_cast<int64_t>(plan.size()) - 1;
    if (last % kUpstreamBatchSegments != 0) plan.back().padded = model.padded_length(seg);
  }
  return plan;
}

}  // namespace

at::Tensor TokenizerModel::tokenize(const at::Tensor& samples, bool emulate_batch_padding) const {
  c10::InferenceMode guard;
  TORCH_CHECK(samples.dim() == 1, "tokenize: samples must be 1-D, got ", samples.dim(), "-D");
  std::vector<at::Tensor> ids;
  for (const SegmentPlan& p : plan_segments(*this, samples.size(0), emulate_batch_padding)) {
    const at::Tensor feats = segment_features(samples.slice(0, p.begin, p.begin + p.n), p.padded);
    TokenizerSegmentOutput out = forward_segment(feats, p.n);
    // keep the ceil(n/1280) valid tokens (§3.7)
    ids.push_back(out.ids.slice(0, 0, ceil_div(p.n, config_.samples_per_token())).cpu());
  }
  if (ids.empty()) return at::empty({0}, at::kLong);
  return at::cat(ids);
}

at::Tensor TokenizerModel::features(const at::Tensor& samples, bool emulate_batch_padding) const {
  c10::InferenceMode guard;
  TORCH_CHECK(samples.dim() == 1, "features: samples must be 1-D");
  std::vector<at::Tensor> parts;
  for (const SegmentPlan& p : plan_segments(*this, samples.size(0), emulate_batch_padding)) {
    parts.push_back(segment_features(samples.slice(0, p.begin, p.begin + p.n), p.padded).cpu());
  }
  if (parts.empty()) return at::empty({config_.num_mel_bins, 0}, feature_dtype());
  return at::cat(parts, 1);
}

// ---------------------------------------------------------------------------------------
// Encoder (§3)

at::Tensor TokenizerModel::conv_stem(const at::Tensor& features, bool at_start) const {
  // features: [n_mels, F] -> [C, D]
  at::Tensor x = features.to(options_.dtype).unsqueeze(0);  // [1, n_mels, F]
  if (at_start) x = at::constant_pad_nd(x, {kConvLeftPad, 0});  // zeros in feature space (§7.11)
  x = at::gelu(at::conv1d(x, conv1_w_, conv1_b_));             // exact erf GELU (§7.9)
  if (at_start) x = at::constant_pad_nd(x, {kConvLeftPad, 0});
  x = at::gelu(at::conv1d(x, conv2_w_, conv2_b_, /*stride=*/2));
  return x.squeeze(0).transpose(0, 1);  // [C, D]
}

at::Tensor TokenizerModel::layer_forward(const LayerWeights& w, const at::Tensor& h,
                                         const at::Tensor& past_k, const at::Tensor& past_v,
                                         const at::Tensor& mask, at::Tensor* k_out,
                                         at::Tensor* v_out) const {
  // h: [Tq, D]; keys [Tk, D] = past ++ new
  const int64_t Tq = h.size(0);
  const int64_t H = config_.num_heads;
  const int64_t hd = config_.head_dim();
  const at::Tensor a = at::layer_norm(h, {config_.d_model}, w.ln1_w, w.ln1_b, kLayerNormEps);
  const at::Tensor q = at::linear(a, w.q_w, w.q_b);
  at::Tensor k = at::linear(a, w.k_w);  // k_proj has no bias (§7.10)
  at::Tensor v = at::linear(a, w.v_w, w.v_b);
  if (past_k.defined() && past_k.size(0) > 0) {
    k = at::cat({past_k, k});
    v = at::cat({past_v, v});
  }
  if (k_out) *k_out = k;
  if (v_out) *v_out = v;
  const int64_t Tk = k.size(0);
  // [T, D] -> [1, H, T, hd]
  const at::Tensor qh = q.view({1, Tq, H, hd}).transpose(1, 2);
  const at::Tensor kh = k.view({1, Tk, H, hd}).transpose(1, 2);
  const at::Tensor vh = v.view({1, Tk, H, hd}).transpose(1, 2);
  // Upstream's WhisperSdpaAttention: scaled_dot_product_attention with the additive mask. On
  // the CPU it runs flash attention in key blocks and never builds the [H, Tq, Tk] scores; it
  // takes only 4-D inputs (batch, heads, T, hd): 3-D ones fell back to the math kernel, which
  // made the whole tokenizer 1.23x slower than upstream.
  const c10::optional<at::Tensor> mask4 =
      mask.defined() ? c10::optional<at::Tensor>(mask.view({1, 1, mask.size(0), mask.size(1)})) : c10::nullopt;
  const at::Tensor attn = at::scaled_dot_product_attention(qh, kh, vh, mask4);  // [1, H, Tq, hd]
  const at::Tensor o = attn.transpose(1, 2).reshape({Tq, config_.d_model});
  at::Tensor out = h + at::linear(o, w.o_w, w.o_b);
  const at::Tensor f = at::layer_norm(out, {config_.d_model}, w.ln2_w, w.ln2_b, kLayerNormEps);
  out = out + at::linear(at::gelu(at::linear(f, w.fc1_w, w.fc1_b)), w.fc2_w, w.fc2_b);
  return out;
}

at::Tensor TokenizerModel::pool(const at::Tensor& h) const {
  // [C, D] -> [ceil(C/k), D]; upstream right-pads with zeros to a multiple of k (§3.5)
  const int64_t k = config_.pooling_kernel_size;
  at::Tensor x = h.transpose(0, 1).unsqueeze(0);  // [1, D, C]
  const int64_t rem = x.size(2) % k;
  if (rem != 0) x = at::constant_pad_nd(x, {0, k - rem});
  x = config_.max_pooling ? at::max_pool1d(x, {k}) : at::avg_pool1d(x, {k});
  return x.squeeze(0).transpose(0, 1);
}

at::Tensor TokenizerModel::quantize(const at::Tensor& pooled) const {
  c10::InferenceMode guard;
  // d(x, v) = (||c_v||^2 + ||x||^2) - 2 <x, c_v>, as upstream vector_quantize (§3.6)
  const at::Tensor x = pooled.to(feature_dtype()).contiguous();
  const at::Tensor x_sq = at::sum(x.pow(2), 1, /*keepdim=*/true);
  const at::Tensor dist = at::addmm(codebook_sq_ + x_sq, x, codebook_.t(), /*beta=*/1, /*alpha=*/-2);
  // torch.min(dim) returns the first minimal index: lowest id on ties
  return std::get<1>(at::min(dist, 1));
}

namespace {

// Additive block-causal mask (§3.3): allowed(i, j) = block(j) <= block(i) and j < valid.
at::Tensor block_causal_mask(int64_t n, int64_t block, int64_t valid, const at::TensorOptions& opts) {
  const at::Tensor idx = at::arange(n, opts.dtype(at::kLong));
  const at::Tensor bq = idx.div(block, "floor").unsqueeze(1);
  const at::Tensor bk = idx.div(block, "floor").unsqueeze(0);
  const at::Tensor allowed = bk.le(bq).logical_and(idx.lt(valid).unsqueeze(0));
  return at::zeros({n, n}, opts).masked_fill(allowed.logical_not(), mask_value(opts.dtype().toScalarType()));
}

// Key-padding mask for the final block of a segment: keys >= valid masked. [Tq, Tk]
at::Tensor key_padding_mask(int64_t tq, int64_t tk, int64_t valid, const at::TensorOptions& opts) {
  const at::Tensor key_idx = at::arange(tk, opts.dtype(at::kLong));
  return at::zeros({tq, tk}, opts)
      .masked_fill(key_idx.ge(valid).unsqueeze(0), mask_value(opts.dtype().toScalarType()));
}

}  // namespace

TokenizerSegmentOutput TokenizerModel::forward_segment(const at::Tensor& features,
                                                       int64_t n_valid) const {
  c10::InferenceMode guard;
  TORCH_CHECK(features.dim() == 2 && features.size(0) == config_.num_mel_bins,
              "forward_segment: features must be [", config_.num_mel_bins, ", T]");
  const at::TensorOptions opts = at::TensorOptions().dtype(options_.dtype).device(options_.device);
  at::Tensor h = conv_stem(features.to(options_.device), /*at_start=*/true);  // [C, D]
  const int64_t C = h.size(0);
  TORCH_CHECK(C <= config_.max_source_positions, "forward_segment: ", C,
              " conv frames > max_source_positions");
  h = h + embed_positions_.slice(0, 0, C);
  const int64_t valid_frames = ceil_div(n_valid, config_.samples_per_conv_frame());
  at::Tensor mask = block_causal_mask(C, config_.block_size, valid_frames, opts);
  for (int64_t l = 0; l < config_.quantize_position; ++l) {
    h = layer_forward(layers_[l], h, {}, {}, mask, nullptr, nullptr);
    if (l + 1 == config_.pooling_position) {
      h = pool(h);
      const int64_t valid_tokens = ceil_div(n_valid, config_.samples_per_token());
      mask = block_causal_mask(h.size(0), config_.tokens_per_block(), valid_tokens, opts);
    }
  }
  TokenizerSegmentOutput out;
  out.pooled = h;
  out.ids = quantize(h);
  return out;
}

at::Tensor TokenizerModel::encode_block(const at::Tensor& features, int64_t lo, int64_t hi,
                                        int64_t n_valid, TokenizerKvCache& cache) const {
  c10::InferenceMode guard;
  const at::TensorOptions opts = at::TensorOptions().dtype(options_.dtype).device(options_.device);
  const int64_t first = std::max<int64_t>(0, 2 * lo - 2 * kConvLeftPad);
  TORCH_CHECK(features.size(1) == 2 * hi - 1 - first, "encode_block: expected ",
              2 * hi - 1 - first, " feature frames, got ", features.size(1));
  at::Tensor h = conv_stem(features.to(options_.device), lo == 0);  // [hi - lo, D]
  TORCH_CHECK(h.size(0) == hi - lo, "encode_block: conv stem gave ", h.size(0), " frames");
  h = h + embed_positions_.slice(0, lo, hi);
  if (cache.keys.size() != static_cast<size_t>(config_.quantize_position)) {
    cache.keys.assign(config_.quantize_position, at::Tensor());
    cache.values.assign(config_.quantize_position, at::Tensor());
  }
  bool pooled = false;
  for (int64_t l = 0; l < config_.quantize_position; ++l) {
    at::Tensor mask;
    if (n_valid >= 0) {
      // final block: mask padded keys (frames, or tokens after pooling)
      const int64_t unit = pooled ? config_.samples_per_token() : config_.samples_per_conv_frame();
      const int64_t past = cache.keys[l].defined() ? cache.keys[l].size(0) : 0;
      mask = key_padding_mask(h.size(0), past + h.size(0), ceil_div(n_valid, unit), opts);
    }
    h = layer_forward(layers_[l], h, cache.keys[l], cache.values[l], mask, &cache.keys[l],
                      &cache.values[l]);
    if (l + 1 == config_.pooling_position) {
      h = pool(h);
      pooled = true;
    }
  }
  return h;
}

}  // namespace glmvoice::speech
