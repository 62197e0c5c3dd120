// Reference: THUDM/glm-4-voice-9b modeling_chatglm.py (RMSNorm, RotaryEmbedding,
// apply_rotary_pos_emb, SelfAttention, MLP, GLMBlock), configuration_chatglm.py;
// vllm-project/vllm vllm/model_executor/models/chatglm.py (independent check of the
// rotary layout). Spec: ../shared/spec/llm.md §1–§3.
#include "llm/chatglm_model.h"
#include "llm/cpu_decode_ops.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>

#include "io/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "runtime/cuda_graph.h"
#include "runtime/dtype.h"
#include "runtime/spin_pool.h"

namespace glmvoice::llm {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- config (§1.2, §1.3)

ChatGlmConfig ChatGlmConfig::load(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  const auto j = io::JsonConfig::load(path);
  ChatGlmConfig c;
  const std::string model_type = j.get_string("model_type", "chatglm");
  if (model_type != "chatglm") {
    throw Error(ErrorCode::kBadConfig, path, "model_type", "'" + model_type + "' is not chatglm");
  }
  c.num_layers = j.get_int("num_layers", c.num_layers);
  if (j.has("num_hidden_layers") && !j.json().at("num_hidden_layers").is_null() &&
      j.get_int("num_hidden_layers") != c.num_layers) {
    throw Error(ErrorCode::kBadConfig, path, "num_hidden_layers", "differs from num_layers");
  }
  c.hidden_size = j.get_int("hidden_size", c.hidden_size);
  c.ffn_hidden_size = j.get_int("ffn_hidden_size", c.ffn_hidden_size);
  c.num_attention_heads = j.get_int("num_attention_heads", c.num_attention_heads);
  if (j.has("kv_channels") && !j.json().at("kv_channels").is_null()) {
    c.kv_channels = j.get_int("kv_channels");
  } else {
    c.kv_channels = c.hidden_size / c.num_attention_heads;
  }
  c.multi_query_group_num = j.get_int("multi_query_group_num", c.multi_query_group_num);
  c.padded_vocab_size = j.get_int("padded_vocab_size", c.padded_vocab_size);
  c.seq_length = j.get_int("seq_length", c.seq_length);
  c.layernorm_epsilon = j.get_double("layernorm_epsilon", c.layernorm_epsilon);
  c.add_qkv_bias = j.get_bool("add_qkv_bias", c.add_qkv_bias);
  c.add_bias_linear = j.get_bool("add_bias_linear", c.add_bias_linear);
  c.post_layer_norm = j.get_bool("post_layer_norm", c.post_layer_norm);
  c.apply_residual_connection_post_layernorm =
      j.get_bool("apply_residual_connection_post_layernorm", c.apply_residual_connection_post_layernorm);
  c.rope_ratio = j.get_double("rope_ratio", c.rope_ratio);
  if (!j.get_bool("rmsnorm", true)) {
    throw Error(ErrorCode::kUnsupported, path, "rmsnorm", "LayerNorm variant is not supported");
  }
  if (!j.get_bool("multi_query_attention", false)) {
    throw Error(ErrorCode::kUnsupported, path, "multi_query_attention",
                "only the grouped-query layout [Q|K|V] is supported");
  }
  if (!j.get_bool("original_rope", true)) {
    throw Error(ErrorCode::kUnsupported, path, "original_rope", "false (non-interleaved rotary) is not supported");
  }
  if (c.apply_residual_connection_post_layernorm) {
    throw Error(ErrorCode::kUnsupported, path, "apply_residual_connection_post_layernorm", "true is not supported");
  }
  if (c.num_layers <= 0 || c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.multi_query_group_num <= 0 ||
      c.padded_vocab_size <= 0 || c.seq_length <= 0 || c.ffn_hidden_size <= 0) {
    throw Error(ErrorCode::kBadConfig, path, "sizes", "non-positive size");
  }
  if (c.num_attention_heads % c.multi_query_group_num != 0) {
    throw Error(ErrorCode::kBadConfig, path, "multi_query_group_num", "does not divide num_attention_heads");
  }
  if (c.kv_channels <= 0 || c.kv_channels % 4 != 0) {
    throw Error(ErrorCode::kBadConfig, path, "kv_channels", "must be a positive multiple of 4");
  }
  if (j.has("eos_token_id")) {
    if (j.json().at("eos_token_id").is_array()) {
      c.eos_token_id = j.get_int_list("eos_token_id");
    } else {
      c.eos_token_id = {j.get_int("eos_token_id")};
    }
  }
  c.pad_token_id = j.has("pad_token_id") && !j.json().at("pad_token_id").is_null() ? j.get_int("pad_token_id") : -1;

  const std::string gen_path = (fs::path(dir) / "generation_config.json").string();
  if (fs::exists(gen_path)) {
    const auto g = io::JsonConfig::load(gen_path);
    if (g.has("eos_token_id")) {
      c.eos_token_id = g.json().at("eos_token_id").is_array() ? g.get_int_list("eos_token_id")
                                                               : std::vector<int64_t>{g.get_int("eos_token_id")};
    }
    c.gen_temperature = g.get_double("temperature", c.gen_temperature);
    c.gen_top_p = g.get_double("top_p", c.gen_top_p);
    c.gen_do_sample = g.get_bool("do_sample", c.gen_do_sample);
  }
  return c;
}

// ---------------------------------------------------------------- KV cache (§4.1)

void KvCache::truncate(int64_t n) {
  if (n < 0 || n > length) {
    throw Error(ErrorCode::kBadInput, "", "kv cache", "truncate(" + std::to_string(n) + ") beyond length");
  }
  length = n;
}

// ---------------------------------------------------------------- load (§1.4, §2)

std::shared_ptr<const LlmModel> LlmModel::load(const ModelOptions& options) { return load_impl(options, nullptr); }

std::shared_ptr<const LlmModel> LlmModel::load_random(const ModelOptions& options, uint64_t seed) {
  return load_impl(options, &seed);
}

std::shared_ptr<const LlmModel> LlmModel::load_impl(const ModelOptions& requested, const uint64_t* random_seed) {
  c10::InferenceMode guard;
  // Default dtype per device, fp16 refused (§3.7), int8/int4 = bf16 activations.
  const ModelOptions options = runtime::resolve_options(requested, runtime::Stage::kLlm);
  const std::string& dir = options.path;
  if (!fs::is_directory(dir)) throw Error(ErrorCode::kNotFound, dir, "", "model directory does not exist");
  std::shared_ptr<LlmModel> m(new LlmModel());
  m->options_ = options;
  m->config_ = ChatGlmConfig::load(dir);
  m->tokenizer_ = text::Tokenizer::load(dir);
  const ChatGlmConfig& c = m->config_;
  const auto& tok = m->tokenizer_;
  const std::string cfg_path = (fs::path(dir) / "config.json").string();

  // §7.3 consistency between tokenizer and model.
  if (tok.max_id() >= c.padded_vocab_size) {
    throw Error(ErrorCode::kMismatch, cfg_path, "padded_vocab_size",
                std::to_string(c.padded_vocab_size) + " <= largest token id " + std::to_string(tok.max_id()));
  }
  if (c.eos_token_id.empty()) {
    throw Error(ErrorCode::kBadConfig, cfg_path, "eos_token_id", "no stop ids in generation_config.json or config.json");
  }
  for (int64_t id : c.eos_token_id) {
    if (!tok.is_defined(id)) {
      throw Error(ErrorCode::kMismatch, cfg_path, "eos_token_id", "id " + std::to_string(id) + " is not a token");
    }
  }
  {
    const auto& sp = tok.specials();
    std::set<int64_t> expected = {sp.endoftext, sp.user, sp.observation};
    std::set<int64_t> got(c.eos_token_id.begin(), c.eos_token_id.end());
    if (expected != got) {
      runtime::log(runtime::LogLevel::kWarning,
                   cfg_path + ": eos_token_id differs from {<|endoftext|>, <|user|>, <|observation|>}");
    }
  }

  const auto dtype = runtime::compute_dtype(options.dtype);
  const auto device = options.device;
  std::unique_ptr<io::SafeTensors> st;
  at::Generator rng;
  if (random_seed == nullptr) {
    st = std::make_unique<io::SafeTensors>(io::SafeTensors::open(dir));
  } else {
    rng = device.is_cuda() ? at::detail::getCUDAHooks().getNewGenerator(device.index())
                           : at::detail::createCPUGenerator(*random_seed);
    rng.set_current_seed(*random_seed);
  }
  std::set<std::string> used;
  auto get = [&](const std::string& name, std::vector<int64_t> shape, at::ScalarType dt) {
    used.insert(name);
    if (!st) {  // load_random(): norms 1, everything else N(0, 0.02²), made on the device
      const auto o = at::TensorOptions().dtype(dt).device(device);
      return name.find("layernorm") != std::string::npos ? at::ones(shape, o) : at::randn(shape, rng, o).mul_(0.02);
    }
    if (!st->has(name)) throw Error(ErrorCode::kMismatch, dir, name, "required tensor is missing");
    return st->load_checked(name, shape, dt, device);
  };
  auto weight = [&](const std::string& name, std::vector<int64_t> shape) {
    return LinearWeight::make(get(name, std::move(shape), dtype), options.dtype, name);
  };
  auto get_opt = [&](const std::string& name, std::vector<int64_t> shape, at::ScalarType dt, bool want) {
    if (!want) return at::Tensor();
    return get(name, std::move(shape), dt);
  };
  const int64_t H = c.hidden_size, V = c.padded_vocab_size;
  m->embedding_ = get("transformer.embedding.word_embeddings.weight", {V, H}, dtype);
  m->layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "transformer.encoder.layers." + std::to_string(l) + ".";
    Layer& L = m->layers_[static_cast<size_t>(l)];
    L.input_norm = get(p + "input_layernorm.weight", {H}, at::kFloat);
    L.qkv_w = weight(p + "self_attention.query_key_value.weight", {c.qkv_out(), H});
    L.qkv_b = get_opt(p + "self_attention.query_key_value.bias", {c.qkv_out()}, dtype,
                      c.add_qkv_bias || c.add_bias_linear);
    L.dense_w = weight(p + "self_attention.dense.weight", {H, c.q_size()});
    L.dense_b = get_opt(p + "self_attention.dense.bias", {H}, dtype, c.add_bias_linear);
    L.post_norm = get(p + "post_attention_layernorm.weight", {H}, at::kFloat);
    L.h4h_w = weight(p + "mlp.dense_h_to_4h.weight", {2 * c.ffn_hidden_size, H});
    L.h4h_b = get_opt(p + "mlp.dense_h_to_4h.bias", {2 * c.ffn_hidden_size}, dtype, c.add_bias_linear);
    L.fourh_w = weight(p + "mlp.dense_4h_to_h.weight", {H, c.ffn_hidden_size});
    L.fourh_b = get_opt(p + "mlp.dense_4h_to_h.bias", {H}, dtype, c.add_bias_linear);
  }
  if (c.post_layer_norm) m->final_norm_ = get("transformer.encoder.final_layernorm.weight", {H}, at::kFloat);
  m->output_ = weight("transformer.output_layer.weight", {V, H});
  for (const auto& name : st ? st->names() : std::vector<std::string>{}) {
    if (!used.count(name)) runtime::log(runtime::LogLevel::kDebug, dir + ": ignoring tensor " + name);
  }

  // §3.3 step 3: theta_i = 1 / base^(2i / r), base = 10000·rope_ratio, in float32.
  const int64_t r = c.rotary_dim();
  const double base = 10000.0 * c.rope_ratio;
  at::Tensor exponent = at::arange(0, r, 2, at::TensorOptions().dtype(at::kFloat)) / static_cast<float>(r);
  m->inv_freq_ = (1.0 / at::pow(static_cast<float>(base), exponent)).to(device);
  // int8/int4 are approximations already, so the CPU's reference-rounding ops buy them nothing:
  // they take the fused path too (mid model, quiet box, medians of 3: int4 decode 29.1 -> 25.5
  // ms/token, int8 32.3 -> 28.2).
  m->fused_ops_ = device.is_cuda() || runtime::is_weight_only(options.dtype);
  if (const char* env = std::getenv("GLMVOICE_LLM_FUSED"); env != nullptr && *env != '\0') {
    m->fused_ops_ = std::string(env) != "0";
  }
  // int8 on CUDA widens each weight to bf16 inside the step: a graph's private pool would keep
  // the largest widened matrix (1.4 GB at 9B) per conversation, for no gain (H200: 32.7 ms/token
  // with the graph in one run, 31.9 eager in an earlier one).
  m->decode_mode_ = device.is_cuda() && runtime::cuda_graphs_built() && options.dtype != runtime::kInt8
                        ? DecodeMode::kGraph
                        : DecodeMode::kEager;
  if (const char* env = std::getenv("GLMVOICE_LLM_DECODE"); env != nullptr && *env != '\0') {
    const std::string mode(env);
    if (mode == "eager") {
      m->decode_mode_ = DecodeMode::kEager;
    } else if (mode == "static" || (mode == "graph" && !device.is_cuda())) {
      m->decode_mode_ = DecodeMode::kStatic;
    } else if (mode == "graph") {
      m->decode_mode_ = runtime::cuda_graphs_built() ? DecodeMode::kGraph : DecodeMode::kStatic;
    } else {
      throw Error(ErrorCode::kBadInput, "", "GLMVOICE_LLM_DECODE", "'" + mode + "': expected eager, graph or static");
    }
  }

  runtime::log(runtime::LogLevel::kInfo,
               dir + ": ChatGLM " + std::to_string(c.num_layers) + " layers, hidden " + std::to_string(H) +
                   ", vocab " + std::to_string(V) + ", audio tokens " + std::to_string(tok.n_audio()) + " from id " +
                   std::to_string(tok.audio_offset()) + ", " + runtime::dtype_name(options.dtype) + " on " + device.str());
  return m;
}

int64_t LlmModel::parameter_count() const {
  int64_t n = embedding_.numel() + output_.numel() + (final_norm_.defined() ? final_norm_.numel() : 0);
  for (const auto& L : layers_) {
    for (const at::Tensor* t : {&L.input_norm, &L.qkv_b, &L.dense_b, &L.post_norm, &L.h4h_b, &L.fourh_b}) {
      if (t->defined()) n += t->numel();
    }
    for (const LinearWeight* w : {&L.qkv_w, &L.dense_w, &L.h4h_w, &L.fourh_w}) n += w->numel();
  }
  return n;
}

int64_t LlmModel::weight_bytes_per_token() const {
  auto bytes = [](const at::Tensor& t) { return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : 0; };
  int64_t n = output_.storage_bytes() + bytes(final_norm_);
  for (const auto& L : layers_) {
    n += bytes(L.input_norm) + bytes(L.post_norm) + bytes(L.qkv_b) + bytes(L.dense_b) + bytes(L.h4h_b) + bytes(L.fourh_b);
    for (const LinearWeight* w : {&L.qkv_w, &L.dense_w, &L.h4h_w, &L.fourh_w}) n += w->storage_bytes();
  }
  return n;
}

KvCache LlmModel::new_cache() const {
  KvCache cache;
  cache.k.resize(layers_.size());
  cache.v.resize(layers_.size());
  return cache;
}

void LlmModel::ensure_capacity(KvCache& cache, int64_t needed) const {
  if (cache.k.size() != layers_.size()) {
    cache.k.assign(layers_.size(), at::Tensor());
    cache.v.assign(layers_.size(), at::Tensor());
    cache.length = 0;
    cache.capacity = 0;
  }
  if (needed <= cache.capacity) return;
  int64_t cap = std::max<int64_t>(cache.capacity * 2, 256);
  while (cap < needed) cap *= 2;
  cap = std::min<int64_t>(cap, std::max<int64_t>(needed, config_.seq_length));
  const auto opts = at::TensorOptions().dtype(runtime::compute_dtype(options_.dtype)).device(options_.device);
  const int64_t ng = config_.multi_query_group_num, d = config_.head_dim();
  // The static decode step attends over the whole capacity under a mask: unwritten positions
  // must be finite (0 · NaN would leak through the masked softmax).
  const bool zeroed = decode_mode_ != DecodeMode::kEager;
  cache.decode_graph.reset();
  for (size_t l = 0; l < layers_.size(); ++l) {
    at::Tensor k = zeroed ? at::zeros({ng, cap, d}, opts) : at::empty({ng, cap, d}, opts);
    at::Tensor v = zeroed ? at::zeros({ng, cap, d}, opts) : at::empty({ng, cap, d}, opts);
    if (cache.length > 0) {
      k.narrow(1, 0, cache.length).copy_(cache.k[l].narrow(1, 0, cache.length));
      v.narrow(1, 0, cache.length).copy_(cache.v[l].narrow(1, 0, cache.length));
    }
    cache.k[l] = k;
    cache.v[l] = v;
  }
  cache.capacity = cap;
}

// ---------------------------------------------------------------- forward (§3)

// §3.2: one rounding at the end; weight kept in f32.
at::Tensor LlmModel::rms_norm(const at::Tensor& x, const at::Tensor& w) const {
  if (fused_ops_) {  // one kernel on CUDA; the same f32 math, another summation order
    return at::rms_norm(x.to(at::kFloat), {x.size(-1)}, w, config_.layernorm_epsilon).to(x.scalar_type());
  }
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor var = x32.pow(2).mean(-1, /*keepdim=*/true);
  return (w * (x32 * at::rsqrt(var + config_.layernorm_epsilon))).to(x.scalar_type());
}

at::Tensor LlmModel::norm(const at::Tensor& x, const at::Tensor& w, bool small_ops) const {
  return small_ops ? cpu::rms_norm(x, w, static_cast<float>(config_.layernorm_epsilon)) : rms_norm(x, w);
}

// §3.3 step 3: rotates pairs (2i, 2i+1) of the first r dims of every head. Negation is exact,
// so x·(c, c) + swap(x)·(−s, s) rounds like the reference's x0·c − x1·s and x1·c + x0·s.
void LlmModel::rotary_in_place(const at::Tensor& qk, const at::Tensor& cos2, const at::Tensor& sin2) const {
  const int64_t N = qk.size(0), n = qk.size(1), r = config_.rotary_dim();
  at::Tensor pairs = qk.narrow(2, 0, r).view({N, n, r / 2, 2});
  at::Tensor c = cos2.view({N, 1, r / 2, 2}), s = sin2.view({N, 1, r / 2, 2});
  pairs.copy_(pairs * c + pairs.flip(-1) * s);
}

// The rotary tables for absolute positions pos (int64 [N]): angles in f32, cos/sin rounded
// to the compute dtype, laid out per pair as rotary_in_place() takes them.
std::pair<at::Tensor, at::Tensor> LlmModel::rotary_tables(const at::Tensor& pos) const {
  const auto dtype = runtime::compute_dtype(options_.dtype);
  at::Tensor angles = at::outer(pos.to(at::kFloat), inv_freq_);  // [N, r/2]
  at::Tensor cos = angles.cos(), sin = angles.sin();
  if (dtype != at::kFloat) {
    cos = cos.to(dtype);
    sin = sin.to(dtype);
  }
  return {at::stack({cos, cos}, -1), at::stack({-sin, sin}, -1)};  // [N, r/2, 2]
}

// §3.3 step 8 and §3.4: the attention output projection and the MLP, each with its residual.
at::Tensor LlmModel::dense_and_mlp(const Layer& L, const at::Tensor& h_in, const at::Tensor& ctx, bool small_ops) const {
  const int64_t ffn = config_.ffn_hidden_size;
  at::Tensor h = h_in + linear(ctx, L.dense_w, L.dense_b);
  at::Tensor u = linear(norm(h, L.post_norm, small_ops), L.h4h_w, L.h4h_b);  // [N, 2·ffn]: gate first, up second
  at::Tensor m = small_ops ? cpu::silu_mul(u, ffn) : at::silu(u.narrow(1, 0, ffn)) * u.narrow(1, ffn, ffn);
  return h + linear(m, L.fourh_w, L.fourh_b);
}

void LlmModel::check_input(const int64_t* ids, int64_t T, const KvCache& cache) const {
  const ChatGlmConfig& c = config_;
  if (T <= 0) throw Error(ErrorCode::kBadInput, options_.path, "ids", "empty input");
  const int64_t P = cache.length;
  if (P + T > c.seq_length) {
    throw Error(ErrorCode::kBadInput, options_.path, "seq_length",
                "positions up to " + std::to_string(P + T - 1) + " exceed the context of " +
                    std::to_string(c.seq_length) + " tokens");
  }
  for (int64_t i = 0; i < T; ++i) {
    if (ids[i] < 0 || ids[i] >= c.padded_vocab_size) {
      throw Error(ErrorCode::kBadInput, options_.path, "ids",
                  "token id " + std::to_string(ids[i]) + " outside [0, " + std::to_string(c.padded_vocab_size) + ")");
    }
  }
}

at::Tensor LlmModel::forward(const std::vector<int64_t>& ids, KvCache& cache, bool all_positions) const {
  BatchItem item;
  item.ids = ids.data();
  item.n_ids = static_cast<int64_t>(ids.size());
  item.cache = &cache;
  item.logits = all_positions ? BatchItem::Logits::kAll : BatchItem::Logits::kLast;
  return forward_batch({item}).front();
}

// §3.3 steps 4–7 for one sequence. q [T, nh, d] at positions P … P+T-1; K, V [ng, P+T, d].
// Query head h uses group h / hpg; the mask is bottom-right aligned (key j visible to query i
// iff j <= P+i), so a chunk appended to a non-empty cache sees the whole prefix.
at::Tensor LlmModel::attend(const at::Tensor& q, const at::Tensor& K, const at::Tensor& V, int64_t P) const {
  const ChatGlmConfig& c = config_;
  const int64_t T = q.size(0), S = P + T;
  const int64_t nh = c.num_attention_heads, ng = c.multi_query_group_num, d = c.head_dim();
  const int64_t hpg = c.heads_per_group();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor qg = q.reshape({T, ng, hpg, d}).permute({1, 2, 0, 3}).reshape({ng, hpg * T, d});
  // In a 16-bit dtype, round like the reference's torch 2.3 CPU SDPA (flash) kernel: scores and
  // their scaling in f32, exp(s - max) in f32 rounded to the 16-bit dtype for the product with
  // V (f32 accumulation), division by the f32 sum, one rounding of the output. Plain 16-bit
  // matmul + softmax leaves bf16 logits as far from the bf16 reference as f32 compute
  // (tests/lib/llm/test_llm_parity.cpp: mean abs err 9.8e-3 vs 5.0e-4 rounded like the kernel).
  const auto dtype = q.scalar_type();
  const bool reduced = dtype != at::kFloat && dtype != at::kDouble;
  at::Tensor scores = reduced ? at::matmul(qg.to(at::kFloat), K.to(at::kFloat).transpose(1, 2)) * scale
                              : at::matmul(qg, K.transpose(1, 2)) * scale;  // [ng, hpg·T, S]
  if (T > 1) {
    const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    at::Tensor qi = at::arange(P, P + T, opts).unsqueeze(1);
    at::Tensor kj = at::arange(0, S, opts).unsqueeze(0);
    scores = scores.view({ng, hpg, T, S}).masked_fill(kj > qi, -std::numeric_limits<double>::infinity())
                 .view({ng, hpg * T, S});
  }
  at::Tensor ctx;  // [ng, hpg·T, d]
  if (reduced) {
    at::Tensor e = (scores - std::get<0>(scores.max(-1, /*keepdim=*/true))).exp();
    ctx = (at::matmul(e.to(dtype).to(at::kFloat), V.to(at::kFloat)) / e.sum(-1, /*keepdim=*/true)).to(dtype);
  } else {
    ctx = at::matmul(at::softmax(scores, -1), V);
  }
  return ctx.view({ng, hpg, T, d}).permute({2, 0, 1, 3}).reshape({T, nh * d});
}

// attend() through SDPA. The hpg query heads of a group share its K/V, so they go in as hpg·T
// query rows of one "head" per group (as attend() lays them out): no K/V expansion, no GQA
// support needed from the kernel. A decode step (T = 1) sees every key: no mask.
at::Tensor LlmModel::attend_fused(const at::Tensor& q, const at::Tensor& K, const at::Tensor& V, int64_t P) const {
  const ChatGlmConfig& c = config_;
  const int64_t T = q.size(0), S = P + T;
  const int64_t nh = c.num_attention_heads, ng = c.multi_query_group_num, d = c.head_dim();
  const int64_t hpg = c.heads_per_group();
  at::Tensor qg = q.reshape({T, ng, hpg, d}).permute({1, 2, 0, 3}).reshape({1, ng, hpg * T, d});
  c10::optional<at::Tensor> mask;
  if (T > 1) {  // row (h, t) sees keys j <= P + t
    const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    at::Tensor qi = at::arange(P, P + T, opts).repeat({hpg}).unsqueeze(1);
    mask = at::arange(0, S, opts).unsqueeze(0) <= qi;  // [hpg·T, S]
  }
  at::Tensor ctx = at::scaled_dot_product_attention(qg, K.unsqueeze(0), V.unsqueeze(0), mask, 0.0, false,
                                                    1.0 / std::sqrt(static_cast<double>(d)));
  return ctx.view({ng, hpg, T, d}).permute({2, 0, 1, 3}).reshape({T, nh * d});
}

// The decode step of one cache as a CUDA graph: the static tensors it reads (id, position)
// and writes (logits), and the K/V storage it was captured against.
// ensure_capacity() drops it whenever it reallocates K/V.
struct DecodeGraph {
  std::unique_ptr<runtime::CapturedGraph> graph;  // null: run decode_step_static eagerly
  at::Tensor id, pos, logits;
};

at::Tensor LlmModel::decode_step_static(const at::Tensor& id, const at::Tensor& pos, KvCache& cache) const {
  const ChatGlmConfig& c = config_;
  const int64_t nh = c.num_attention_heads, ng = c.multi_query_group_num, d = c.head_dim();
  const int64_t hpg = c.heads_per_group(), cap = cache.capacity;
  at::Tensor h = embedding_.index_select(0, id);  // [1, H]
  const auto [cos2, sin2] = rotary_tables(pos);
  const at::Tensor visible = (at::arange(cap, pos.options()) <= pos).view({1, 1, 1, cap});
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    at::Tensor mixed = linear(rms_norm(h, L.input_norm), L.qkv_w, L.qkv_b);
    rotary_in_place(mixed.narrow(1, 0, c.q_size() + c.kv_size()).view({1, nh + ng, d}), cos2, sin2);
    at::Tensor q = mixed.narrow(1, 0, c.q_size()).view({1, ng, hpg, d});  // head g·hpg + j
    at::Tensor k = mixed.narrow(1, c.q_size(), c.kv_size()).view({ng, 1, d});
    at::Tensor v = mixed.narrow(1, c.q_size() + c.kv_size(), c.kv_size()).view({ng, 1, d});
    cache.k[l].index_copy_(1, pos, k);
    cache.v[l].index_copy_(1, pos, v);
    at::Tensor ctx = at::scaled_dot_product_attention(q, cache.k[l].unsqueeze(0), cache.v[l].unsqueeze(0), visible, 0.0,
                                                      false, scale);
    h = dense_and_mlp(L, h, ctx.reshape({1, nh * d}));
  }
  if (final_norm_.defined()) h = rms_norm(h, final_norm_);
  return linear(h, output_).to(at::kFloat);
}

at::Tensor LlmModel::decode_with_graph(int64_t id, KvCache& cache) const {
  std::shared_ptr<DecodeGraph>& g = cache.decode_graph;
  if (!g) {
    const auto opts = at::TensorOptions().dtype(at::kLong).device(options_.device);
    g = std::make_shared<DecodeGraph>();
    g->id = at::full({1}, id, opts);
    g->pos = at::full({1}, cache.length, opts);
    if (decode_mode_ == DecodeMode::kGraph) {
      DecodeGraph* raw = g.get();
      try {
        raw->graph = runtime::capture_cuda_graph(options_.device, [this, raw, &cache] {
          raw->logits = decode_step_static(raw->id, raw->pos, cache);
        });
      } catch (const std::exception& e) {  // the step still runs, eagerly (same math)
        raw->graph.reset();
        runtime::log(runtime::LogLevel::kWarning,
                     options_.path + ": CUDA graph capture of the decode step failed, running it eagerly: " + e.what());
      }
    }
  } else {
    g->id.fill_(id);
    g->pos.fill_(cache.length);
  }
  if (g->graph) {
    g->graph->replay();  // also right after the capture: a captured run records, it does not compute
  } else {
    g->logits = decode_step_static(g->id, g->pos, cache);
  }
  cache.length += 1;
  return g->logits[0].clone();  // the next replay overwrites g->logits
}

// All rows of all items go through the projections and the MLP as one [N, H] matrix (the
// weights are read once per step, whatever B is); rotary and attention are per row / per item.
std::vector<at::Tensor> LlmModel::forward_batch(const std::vector<BatchItem>& items) const {
  c10::InferenceMode guard;
  const ChatGlmConfig& c = config_;
  const size_t B = items.size();
  if (B == 0) return {};
  for (size_t b = 0; b < B; ++b) {
    if (items[b].cache == nullptr) throw Error(ErrorCode::kBadInput, options_.path, "batch", "item without a cache");
    for (size_t o = 0; o < b; ++o) {
      if (items[o].cache == items[b].cache) {
        throw Error(ErrorCode::kBadInput, options_.path, "batch", "two items share one KV cache");
      }
    }
    check_input(items[b].ids, items[b].n_ids, *items[b].cache);
  }
  if (decode_mode_ != DecodeMode::kEager && B == 1 && items[0].n_ids == 1 &&
      items[0].logits == BatchItem::Logits::kLast) {
    ensure_capacity(*items[0].cache, items[0].cache->length + 1);
    return {decode_with_graph(items[0].ids[0], *items[0].cache)};
  }
  const auto dev = options_.device;
  const int64_t nh = c.num_attention_heads, ng = c.multi_query_group_num, d = c.head_dim();

  // Row offsets, ids and absolute positions of every item, concatenated.
  std::vector<int64_t> offset(B + 1, 0), all_ids, positions;
  for (size_t b = 0; b < B; ++b) {
    const BatchItem& it = items[b];
    ensure_capacity(*it.cache, it.cache->length + it.n_ids);
    offset[b + 1] = offset[b] + it.n_ids;
    all_ids.insert(all_ids.end(), it.ids, it.ids + it.n_ids);
    for (int64_t i = 0; i < it.n_ids; ++i) positions.push_back(it.cache->length + i);
  }
  const int64_t N = offset[B];
  // A decode-sized step on the CPU: the hand-written kernels on their spinning pool, libtorch's
  // small ops on this thread (runtime/spin_pool.h).
  std::optional<runtime::DecodeStepScope> step_scope;
  if (dev.is_cpu() && N <= kSkinnyMaxRows && skinny_kernels_enabled()) step_scope.emplace();
  // ... and its small ops as plain loops too (cpu_decode_ops.h).
  const auto compute = embedding_.scalar_type();
  const bool small_ops = step_scope.has_value() && (compute == at::kFloat || compute == at::kBFloat16) &&
                         cpu::small_ops_enabled();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  at::Tensor idx = at::tensor(all_ids, at::TensorOptions().dtype(at::kLong)).to(dev);
  at::Tensor h = embedding_.index_select(0, idx);  // [N, H]

  // Rotary table per row (float32 product, rounded to a 16-bit compute dtype).
  const auto [cos2, sin2] = rotary_tables(at::tensor(positions, at::TensorOptions().dtype(at::kLong)).to(dev));

  std::vector<at::Tensor> ctx_parts(B);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    at::Tensor n1 = norm(h, L.input_norm, small_ops);
    at::Tensor mixed = linear(n1, L.qkv_w, L.qkv_b);  // [N, qkv_out], bias fused (§3.7)
    if (small_ops) {
      cpu::rotary(mixed, nh + ng, d, c.rotary_dim(), cos2, sin2);
    } else {
      rotary_in_place(mixed.narrow(1, 0, c.q_size() + c.kv_size()).view({N, nh + ng, d}), cos2, sin2);
    }
    at::Tensor q = mixed.narrow(1, 0, c.q_size()).view({N, nh, d});
    at::Tensor k = mixed.narrow(1, c.q_size(), c.kv_size()).view({N, ng, d});
    at::Tensor v = mixed.narrow(1, c.q_size() + c.kv_size(), c.kv_size()).view({N, ng, d});
    for (size_t b = 0; b < B; ++b) {
      KvCache& cache = *items[b].cache;
      const int64_t P = cache.length, T = items[b].n_ids;
      cache.k[l].narrow(1, P, T).copy_(k.narrow(0, offset[b], T).transpose(0, 1));
      cache.v[l].narrow(1, P, T).copy_(v.narrow(0, offset[b], T).transpose(0, 1));
      const at::Tensor qb = q.narrow(0, offset[b], T), Kb = cache.k[l].narrow(1, 0, P + T),
                       Vb = cache.v[l].narrow(1, 0, P + T);
      if (small_ops && T == 1) {
        ctx_parts[b] = cpu::attend_one(qb, Kb, Vb, nh, scale);
      } else {
        ctx_parts[b] = fused_ops_ ? attend_fused(qb, Kb, Vb, P) : attend(qb, Kb, Vb, P);
      }
    }
    at::Tensor ctx = B == 1 ? ctx_parts[0] : at::cat(ctx_parts, 0);  // [N, nh·d]
    h = dense_and_mlp(L, h, ctx, small_ops);
  }
  for (size_t b = 0; b < B; ++b) items[b].cache->length += items[b].n_ids;

  // §3.6: project only the rows asked for (the last row of each kLast item, all rows of kAll).
  std::vector<int64_t> rows;
  for (size_t b = 0; b < B; ++b) {
    if (items[b].logits == BatchItem::Logits::kAll) {
      for (int64_t r = offset[b]; r < offset[b + 1]; ++r) rows.push_back(r);
    } else if (items[b].logits == BatchItem::Logits::kLast) {
      rows.push_back(offset[b + 1] - 1);
    }
  }
  std::vector<at::Tensor> out(B);
  if (rows.empty()) return out;
  h = static_cast<int64_t>(rows.size()) == N ? h : h.index_select(0, at::tensor(rows, at::TensorOptions().dtype(at::kLong)).to(dev));
  if (final_norm_.defined()) h = norm(h, final_norm_, small_ops);
  at::Tensor logits = linear(h, output_).to(at::kFloat);  // [rows, V], stays on the device (sampling there)
  int64_t r = 0;
  for (size_t b = 0; b < B; ++b) {
    const int64_t T = items[b].n_ids;
    if (items[b].logits == BatchItem::Logits::kAll) {
      out[b] = logits.narrow(0, r, T);
      r += T;
    } else if (items[b].logits == BatchItem::Logits::kLast) {
      out[b] = logits[r];
      r += 1;
    }
  }
  return out;
}

}  // namespace glmvoice::llm
