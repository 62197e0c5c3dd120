// Reference: see flow_model.h. Operation order follows the upstream Python line by line
// (the reference fixtures were produced with it, and fp32 rounding depends on the order).
#include "voice/flow_model.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "io/error.h"
#include "io/torch_pickle.h"
#include "voice/noise_draws.h"
#include "voice/weight_table.h"

namespace glmvoice::voice {

namespace {

constexpr int64_t kPosTableLen = 5000;  // EspnetRelPositionalEncoding max_len default (ENC embedding.py)
constexpr double kLnEps = 1e-5;         // nn.LayerNorm / nn.GroupNorm default eps
constexpr int64_t kBlock1dGroups = 8;   // Matcha Block1D GroupNorm groups (hard-coded upstream)
constexpr double kTimeScale = 1000.0;   // Matcha SinusoidalPosEmb scale

using Linear = FlowModel::Linear;
using Norm = FlowModel::Norm;
using Conv = FlowModel::Conv;

Linear take_linear(WeightTable& w, const std::string& p, int64_t out, int64_t in, bool bias = true) {
  Linear l;
  l.w = w.take(p + ".weight", {out, in});
  if (bias) l.b = w.take(p + ".bias", {out});
  return l;
}
Norm take_norm(WeightTable& w, const std::string& p, int64_t n) {
  return {w.take(p + ".weight", {n}), w.take(p + ".bias", {n})};
}
Conv take_conv(WeightTable& w, const std::string& p, int64_t out, int64_t in, int64_t k) {
  return {w.take(p + ".weight", {out, in, k}), w.take(p + ".bias", {out})};
}
// ConvTranspose1d weight layout is [in, out, k].
Conv take_convt(WeightTable& w, const std::string& p, int64_t in, int64_t out, int64_t k) {
  return {w.take(p + ".weight", {in, out, k}), w.take(p + ".bias", {out})};
}

at::Tensor linear(const at::Tensor& x, const Linear& l) { return at::linear(x, l.w, l.b); }
at::Tensor layer_norm(const at::Tensor& x, const Norm& n) {
  return at::layer_norm(x, {n.w.size(0)}, n.w, n.b, kLnEps);
}

FlowModel::Resnet take_resnet(WeightTable& w, const std::string& p, int64_t cin, int64_t cout,
                              int64_t tdim) {
  FlowModel::Resnet r;
  r.mlp = take_linear(w, p + ".mlp.1", cout, tdim);
  r.conv1 = take_conv(w, p + ".block1.block.0", cout, cin, 3);
  r.gn1 = take_norm(w, p + ".block1.block.1", cout);
  r.conv2 = take_conv(w, p + ".block2.block.0", cout, cout, 3);
  r.gn2 = take_norm(w, p + ".block2.block.1", cout);
  r.res_conv = take_conv(w, p + ".res_conv", cout, cin, 1);
  return r;
}

FlowModel::TBlock take_tblock(WeightTable& w, const std::string& p, int64_t dim, int64_t inner) {
  FlowModel::TBlock b;
  b.norm1 = take_norm(w, p + ".norm1", dim);
  // q, k, v in one GEMM: rows [q; k; v] of a fused [3 inner, dim] weight.
  b.to_qkv = at::cat({w.take(p + ".attn1.to_q.weight", {inner, dim}), w.take(p + ".attn1.to_k.weight", {inner, dim}),
                      w.take(p + ".attn1.to_v.weight", {inner, dim})},
                     0);
  b.to_out = take_linear(w, p + ".attn1.to_out.0", dim, inner);
  b.norm3 = take_norm(w, p + ".norm3", dim);
  b.ff1 = take_linear(w, p + ".ff.net.0.proj", 4 * dim, dim);  // diffusers FeedForward mult 4
  b.ff2 = take_linear(w, p + ".ff.net.2", dim, 4 * dim);
  return b;
}

}  // namespace

FlowModel::FlowModel(const FlowConfig& config, const io::StateDict& dict, c10::Device device,
                     c10::ScalarType dtype)
    : config_(config), device_(device), dtype_(dtype) {
  WeightTable w(dict, device, dtype);
  const auto& c = config_;
  const auto& e = c.encoder;
  const int64_t d = e.output_size;
  const int64_t n_mel = c.output_size;

  embedding_ = w.take("input_embedding.weight", {c.vocab_size, c.input_size});
  spk_affine_ = take_linear(w, "spk_embed_affine_layer", n_mel, c.spk_embed_dim);
  proj_ = take_linear(w, "encoder_proj", n_mel, d);

  embed_linear_ = take_linear(w, "encoder.embed.out.0", d, e.input_size);
  embed_norm_ = take_norm(w, "encoder.embed.out.1", d);
  after_norm_ = take_norm(w, "encoder.after_norm", d);
  const int64_t dk = d / e.attention_heads;
  for (int64_t i = 0; i < e.num_blocks; ++i) {
    const std::string p = "encoder.encoders." + std::to_string(i);
    EncoderLayer l;
    l.norm_mha = take_norm(w, p + ".norm_mha", d);
    l.norm_ff = take_norm(w, p + ".norm_ff", d);
    l.q = take_linear(w, p + ".self_attn.linear_q", d, d);
    l.k = take_linear(w, p + ".self_attn.linear_k", d, d);
    l.v = take_linear(w, p + ".self_attn.linear_v", d, d);
    l.out = take_linear(w, p + ".self_attn.linear_out", d, d);
    l.pos_w = w.take(p + ".self_attn.linear_pos.weight", {d, d});
    l.pos_bias_u = w.take(p + ".self_attn.pos_bias_u", {e.attention_heads, dk});
    l.pos_bias_v = w.take(p + ".self_attn.pos_bias_v", {e.attention_heads, dk});
    l.w1 = take_linear(w, p + ".feed_forward.w_1", e.linear_units, d);
    l.w2 = take_linear(w, p + ".feed_forward.w_2", d, e.linear_units);
    layers_.push_back(std::move(l));
  }
  pe_ = pos_table(kPosTableLen);

  for (int64_t i = 0; i < c.lr_groups; ++i) {
    lr_convs_.push_back(take_conv(w, "length_regulator.model." + std::to_string(3 * i), c.lr_channels,
                                  i == 0 ? n_mel : c.lr_channels, 3));
    lr_norms_.push_back(take_norm(w, "length_regulator.model." + std::to_string(3 * i + 1), c.lr_channels));
  }
  lr_convs_.push_back(take_conv(w, "length_regulator.model." + std::to_string(3 * c.lr_groups),
                                c.lr_out_channels, c.lr_channels, 1));

  const auto& s = c.estimator;
  const std::string ep = "decoder.estimator.";
  const int64_t tdim = 4 * s.channels[0];
  const int64_t inner = s.num_heads * s.attention_head_dim;
  time1_ = take_linear(w, ep + "time_mlp.linear_1", tdim, s.in_channels);
  time2_ = take_linear(w, ep + "time_mlp.linear_2", tdim, tdim);
  const size_t n = s.channels.size();
  int64_t prev = s.in_channels;
  for (size_t i = 0; i < n; ++i) {
    const std::string p = ep + "down_blocks." + std::to_string(i);
    const int64_t ch = s.channels[i];
    Stage st;
    st.resnet = take_resnet(w, p + ".0", prev, ch, tdim);
    for (int64_t j = 0; j < s.n_blocks; ++j) st.blocks.push_back(take_tblock(w, p + ".1." + std::to_string(j), ch, inner));
    st.strided = i + 1 < n;
    st.sample = take_conv(w, st.strided ? p + ".2.conv" : p + ".2", ch, ch, 3);
    down_.push_back(std::move(st));
    prev = ch;
  }
  for (int64_t i = 0; i < s.num_mid_blocks; ++i) {
    const std::string p = ep + "mid_blocks." + std::to_string(i);
    const int64_t ch = s.channels.back();
    Stage st;
    st.resnet = take_resnet(w, p + ".0", ch, ch, tdim);
    for (int64_t j = 0; j < s.n_blocks; ++j) st.blocks.push_back(take_tblock(w, p + ".1." + std::to_string(j), ch, inner));
    mid_.push_back(std::move(st));
  }
  std::vector<int64_t> rc(s.channels.rbegin(), s.channels.rend());
  rc.push_back(s.channels[0]);
  for (size_t i = 0; i + 1 < rc.size(); ++i) {
    const std::string p = ep + "up_blocks." + std::to_string(i);
    const int64_t ch = rc[i + 1];
    Stage st;
    st.resnet = take_resnet(w, p + ".0", 2 * rc[i], ch, tdim);
    for (int64_t j = 0; j < s.n_blocks; ++j) st.blocks.push_back(take_tblock(w, p + ".1." + std::to_string(j), ch, inner));
    st.strided = i + 2 < rc.size();
    st.sample = st.strided ? take_convt(w, p + ".2.conv", ch, ch, 4) : take_conv(w, p + ".2", ch, ch, 3);
    up_.push_back(std::move(st));
  }
  final_conv_ = take_conv(w, ep + "final_block.block.0", rc.back(), rc.back(), 3);
  final_norm_ = take_norm(w, ep + "final_block.block.1", rc.back());
  final_proj_ = take_conv(w, ep + "final_proj", s.out_channels, rc.back(), 1);
  w.check_all_used("flow");
}

int64_t FlowModel::mel_len(int64_t tokens) const {
  // flow.py: (token_len / input_frame_rate * 22050 / 256).int() on an int tensor -> fp32.
  float a = static_cast<float>(tokens);
  a = a / static_cast<float>(config_.input_frame_rate);
  a = a * 22050.0f;
  a = a / 256.0f;
  return static_cast<int64_t>(a);
}

// EspnetRelPositionalEncoding.extend_pe (ENC embedding.py), built like upstream on the whole
// [L, d/2] grid so the sin/cos kernels see the same tensor shapes. Row k = distance (L-1) - k.
at::Tensor FlowModel::pos_table(int64_t L) const {
  const int64_t d = config_.encoder.output_size;
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor position = at::arange(0, L, f32).unsqueeze(1);                                    // [L, 1]
  at::Tensor div_term = at::exp(at::arange(0, d, 2, f32) * (-(std::log(10000.0) / d)));      // [d/2]
  at::Tensor pos_arg = position * div_term;
  at::Tensor neg_arg = (position * -1) * div_term;
  at::Tensor pe_pos = at::zeros({L, d}, f32);
  at::Tensor pe_neg = at::zeros({L, d}, f32);
  using at::indexing::Slice;
  pe_pos.index_put_({Slice(), Slice(0, at::indexing::None, 2)}, at::sin(pos_arg));
  pe_pos.index_put_({Slice(), Slice(1, at::indexing::None, 2)}, at::cos(pos_arg));
  pe_neg.index_put_({Slice(), Slice(0, at::indexing::None, 2)}, at::sin(neg_arg));
  pe_neg.index_put_({Slice(), Slice(1, at::indexing::None, 2)}, at::cos(neg_arg));
  pe_pos = at::flip(pe_pos, {0}).unsqueeze(0);
  pe_neg = pe_neg.slice(0, 1).unsqueeze(0);
  return at::cat({pe_pos, pe_neg}, 1).to(device_, dtype_);  // [1, 2L-1, d]
}

// Spec §3.2-3.3. tokens [1, T] int64 -> h [1, T, n_mel].
at::Tensor FlowModel::encode(const at::Tensor& tokens, FlowTaps* taps) const {
  const auto& e = config_.encoder;
  const int64_t T = tokens.size(1);
  const int64_t d = e.output_size;
  const int64_t H = e.attention_heads;
  const int64_t dk = d / H;

  at::Tensor x = at::embedding(embedding_, tokens.clamp_min(0).to(device_));  // [1, T, in]
  x = layer_norm(linear(x, embed_linear_), embed_norm_);                      // LinearNoSubsampling
  x = x * std::sqrt(static_cast<double>(d));                                  // xscale
  at::Tensor pe = pe_;
  if (pe.size(1) < 2 * T - 1) pe = pos_table(T);
  const int64_t center = pe.size(1) / 2;
  at::Tensor pos = pe.slice(1, center - T + 1, center + T);                   // [1, 2T-1, d]

  // Block mask (MASK create_grid_mask, fill_triangle): j < min(T, (i / B + 1) * B).
  at::Tensor i_idx = at::arange(T, at::TensorOptions().dtype(at::kLong)).unsqueeze(1);
  at::Tensor j_idx = at::arange(T, at::TensorOptions().dtype(at::kLong)).unsqueeze(0);
  at::Tensor limit = ((at::div(i_idx, e.block_size, "floor") + 1) * e.block_size).clamp_max(T);
  at::Tensor masked = (j_idx >= limit).unsqueeze(0).unsqueeze(0).to(device_);  // [1, 1, T, T] true = masked

  for (const auto& l : layers_) {
    // BlockRelPositionMultiHeadedAttention.forward (ENC attention.py), pre-LN layer.
    at::Tensor residual = x;
    at::Tensor y = layer_norm(x, l.norm_mha);
    at::Tensor q = linear(y, l.q).view({1, -1, H, dk});                     // [1, T, H, dk]
    at::Tensor k = linear(y, l.k).view({1, -1, H, dk}).transpose(1, 2);     // [1, H, T, dk]
    at::Tensor v = linear(y, l.v).view({1, -1, H, dk}).transpose(1, 2);
    at::Tensor p = at::linear(pos, l.pos_w).view({1, -1, H, dk}).transpose(1, 2);  // [1, H, 2T-1, dk]
    at::Tensor q_u = (q + l.pos_bias_u).transpose(1, 2);
    at::Tensor q_v = (q + l.pos_bias_v).transpose(1, 2);
    at::Tensor ac = at::matmul(q_u, k.transpose(-2, -1));                   // [1, H, T, T]
    at::Tensor bd = at::matmul(q_v, p.transpose(-2, -1));                   // [1, H, T, 2T-1]
    // rel_shift: pad a zero column, reinterpret, drop the first row, keep T columns.
    at::Tensor zero_pad = at::zeros({bd.size(0), bd.size(1), bd.size(2), 1}, bd.options());
    at::Tensor padded = at::cat({zero_pad, bd}, -1).view({bd.size(0), bd.size(1), bd.size(3) + 1, bd.size(2)});
    bd = padded.slice(2, 1).view_as(bd).slice(3, 0, bd.size(-1) / 2 + 1);
    at::Tensor scores = (ac + bd) / std::sqrt(static_cast<double>(dk));
    scores = scores.masked_fill(masked, -std::numeric_limits<double>::infinity());
    at::Tensor attn = at::softmax(scores, -1).masked_fill(masked, 0.0);
    at::Tensor o = at::matmul(attn, v).transpose(1, 2).contiguous().view({1, -1, d});
    x = residual + linear(o, l.out);
    // PositionwiseFeedForward with SiLU; ff_scale 1.0 (no macaron).
    residual = x;
    y = layer_norm(x, l.norm_ff);
    x = residual + linear(at::silu(linear(y, l.w1)), l.w2);
  }
  x = layer_norm(x, after_norm_);
  if (taps) taps->encoder_out = x.to(at::kCPU, at::kFloat);
  return linear(x, proj_);  // [1, T, n_mel]
}

at::Tensor FlowModel::resnet(const Resnet& r, const at::Tensor& x, const at::Tensor& temb) const {
  // Matcha ResnetBlock1D; the `* mask` multiplies are by ones (batch 1) and are dropped.
  at::Tensor h = at::mish(at::group_norm(at::conv1d(x, r.conv1.w, r.conv1.b, 1, 1), kBlock1dGroups,
                                         r.gn1.w, r.gn1.b, kLnEps));
  h += linear(at::mish(temb), r.mlp).unsqueeze(-1);
  h = at::mish(at::group_norm(at::conv1d(h, r.conv2.w, r.conv2.b, 1, 1), kBlock1dGroups, r.gn2.w,
                              r.gn2.b, kLnEps));
  return h + at::conv1d(x, r.res_conv.w, r.res_conv.b);
}

// Matcha BasicTransformerBlock with diffusers Attention (AttnProcessor2_0): x [B, M, C].
// diffusers adds the all-ones float attn_mask to the scores (spec P3): a constant shift that
// softmax cancels, so attention runs unmasked through scaled_dot_product_attention (CPU flash
// attention: no [B, h, M, M] score tensor). The mel moves by ~1e-6 against the written-out
// order (spec §3.7 step 4), well inside the fixtures' tolerance.
at::Tensor FlowModel::tblock(const TBlock& b, const at::Tensor& x) const {
  const auto& s = config_.estimator;
  const int64_t heads = s.num_heads;
  const int64_t hd = s.attention_head_dim;
  const int64_t B = x.size(0);
  at::Tensor n = layer_norm(x, b.norm1);
  at::Tensor qkv = at::linear(n, b.to_qkv).view({B, -1, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3, B, h, M, hd]
  at::Tensor o = at::scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
  o = o.transpose(1, 2).reshape({B, -1, heads * hd});
  at::Tensor h = linear(o, b.to_out) + x;
  return linear(at::gelu(linear(layer_norm(h, b.norm3), b.ff1)), b.ff2) + h;
}

// ConditionalDecoder.forward (EST), spec §3.7. x, mu, cond [B, n_mel, M]; spks [B, n_mel]; t [].
at::Tensor FlowModel::estimator(const at::Tensor& x, const at::Tensor& mu, const at::Tensor& t,
                                const at::Tensor& spks, const at::Tensor& cond) const {
  const auto& s = config_.estimator;
  // SinusoidalPosEmb(in_channels): [sin | cos] halves, 10000^(m/(half-1)), t x 1000.
  const int64_t half = s.in_channels / 2;
  at::Tensor freq = at::exp(at::arange(half, at::TensorOptions().dtype(at::kLong).device(device_)).to(at::kFloat) *
                            (-(std::log(10000.0) / static_cast<double>(half - 1))));
  at::Tensor arg = (kTimeScale * t.unsqueeze(0).unsqueeze(1)) * freq.unsqueeze(0);
  at::Tensor temb = at::cat({arg.sin(), arg.cos()}, -1).to(dtype_);       // [1, in_channels], shared by the batch
  temb = linear(at::silu(linear(temb, time1_)), time2_);                   // [1, 4*C0]

  const int64_t M = x.size(2);
  at::Tensor h = at::cat({x, mu, spks.unsqueeze(-1).expand({spks.size(0), spks.size(1), M}), cond}, 1);

  auto run_blocks = [&](const Stage& st, at::Tensor v) {
    v = resnet(st.resnet, v, temb);
    v = v.transpose(1, 2).contiguous();  // b c t -> b t c
    for (const auto& b : st.blocks) v = tblock(b, v);
    return v.transpose(1, 2).contiguous();
  };

  std::vector<at::Tensor> skips;
  for (const auto& st : down_) {
    h = run_blocks(st, h);
    skips.push_back(h);
    h = at::conv1d(h, st.sample.w, st.sample.b, st.strided ? 2 : 1, 1);
  }
  for (const auto& st : mid_) h = run_blocks(st, h);
  for (const auto& st : up_) {
    at::Tensor skip = skips.back();
    skips.pop_back();
    h = at::cat({h.slice(2, 0, skip.size(2)), skip}, 1);
    h = run_blocks(st, h);
    h = st.strided ? at::conv_transpose1d(h, st.sample.w, st.sample.b, 2, 1)
                   : at::conv1d(h, st.sample.w, st.sample.b, 1, 1);
  }
  h = at::mish(at::group_norm(at::conv1d(h, final_conv_.w, final_conv_.b, 1, 1), kBlock1dGroups,
                              final_norm_.w, final_norm_.b, kLnEps));
  return at::conv1d(h, final_proj_.w, final_proj_.b);
}

at::Tensor FlowModel::inference(const at::Tensor& tokens, const at::Tensor& prompt_tokens,
                                const at::Tensor& prompt_feat, at::Generator& gen, int64_t n_timesteps,
                                double cfg_rate, FlowTaps* taps) const {
  const int64_t n_mel = config_.output_size;
  // §3.1 speaker vector: F.normalize of the (zero) x-vector, then the affine layer.
  // Normalised in float32: F.normalize's eps 1e-12 underflows to 0 in float16, and 0 / 0
  // would make the whole mel NaN.
  at::Tensor embedding = at::zeros({1, config_.spk_embed_dim}, at::TensorOptions().device(device_).dtype(at::kFloat));
  embedding = (embedding / embedding.norm(2, {1}, true).clamp_min(1e-12)).to(dtype_);
  at::Tensor spks = linear(embedding, spk_affine_);  // [1, n_mel]

  // §3.2-3.4: encoder over prompt + new tokens, mel length, length regulator.
  at::Tensor tok = at::cat({prompt_tokens.to(at::kLong), tokens.to(at::kLong)}, 1);
  const int64_t T = tok.size(1);
  const int64_t M = mel_len(T);
  const int64_t Pm = prompt_feat.numel() == 0 ? 0 : prompt_feat.size(1);
  if (Pm >= M) {
    throw Error(ErrorCode::kBadInput, "", "prompt_feat",
                "prompt mel (" + std::to_string(Pm) + " frames) not shorter than the total (" +
                    std::to_string(M) + ")");
  }
  at::Tensor h = encode(tok, taps);                                               // [1, T, n_mel]
  h = at::upsample_nearest1d(h.transpose(1, 2).contiguous(), at::IntArrayRef{M}, std::optional<double>());  // [1, n_mel, M]
  for (int64_t i = 0; i < config_.lr_groups; ++i) {
    h = at::conv1d(h, lr_convs_[i].w, lr_convs_[i].b, 1, 1);
    h = at::mish(at::group_norm(h, config_.lr_norm_groups, lr_norms_[i].w, lr_norms_[i].b, kLnEps));
  }
  h = at::conv1d(h, lr_convs_.back().w, lr_convs_.back().b);
  h = h.transpose(1, 2).contiguous();                                             // [1, M, n_mel]
  if (taps) taps->mu = h.to(at::kCPU, at::kFloat);
  at::Tensor mu = h.transpose(1, 2).contiguous();                                 // [1, n_mel, M]

  // §3.5 conditions.
  at::Tensor cond = at::zeros({1, M, n_mel}, mu.options());
  if (Pm > 0) cond.slice(1, 0, Pm).copy_(prompt_feat.to(device_, dtype_));
  cond = cond.transpose(1, 2);

  // §3.6 ConditionalCFM: noise for all M frames drawn on the CPU generator, cosine schedule,
  // Euler with classifier-free guidance. t and dt stay 0-dim tensors as upstream.
  at::Tensor z = draw_randn({1, n_mel, M}, gen, "flow.z") * 1.0;
  at::Tensor xt = z.to(device_, dtype_);
  at::Tensor t_span = at::linspace(0, 1, n_timesteps + 1, at::TensorOptions().dtype(at::kFloat));
  if (config_.cosine_schedule) t_span = 1 - at::cos(t_span * 0.5 * M_PI);
  t_span = t_span.to(device_);
  at::Tensor t = t_span[0];
  at::Tensor dt = t_span[1] - t_span[0];
  // Classifier-free guidance: the conditional and the unconditional (zero mu, spks, cond)
  // passes run as one batch of 2; upstream runs them as two batch-1 calls (same math).
  const bool cfg = cfg_rate > 0;
  at::Tensor mu_b = cfg ? at::cat({mu, at::zeros_like(mu)}, 0) : mu;
  at::Tensor spks_b = cfg ? at::cat({spks, at::zeros_like(spks)}, 0) : spks;
  at::Tensor cond_b = cfg ? at::cat({cond, at::zeros_like(cond)}, 0) : cond;
  for (int64_t step = 1; step <= n_timesteps; ++step) {
    at::Tensor v = estimator(cfg ? at::cat({xt, xt}, 0) : xt, mu_b, t, spks_b, cond_b);
    if (cfg) v = (1.0 + cfg_rate) * v[0].unsqueeze(0) - cfg_rate * v[1].unsqueeze(0);
    xt = xt + dt.to(xt.scalar_type()) * v;
    t = t + dt;
    if (step < n_timesteps) dt = t_span[step + 1] - t;
  }
  return xt.slice(2, Pm).to(at::kCPU, at::kFloat).contiguous();
}

}  // namespace glmvoice::voice
