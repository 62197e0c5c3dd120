// Reference: see hift_model.h. Operation order follows the upstream Python (fixture parity).
#include "voice/hift_model.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "io/error.h"
#include "io/torch_pickle.h"
#include "voice/noise_draws.h"
#include "voice/weight_table.h"

// The reference's separate tensor ops round every product and sum on its own.
#pragma GCC optimize("fp-contract=off")

namespace glmvoice::voice {

namespace {

constexpr double kSnakeEps = 1e-9;          // Snake no_div_by_zero (activation.py)
constexpr double kMagnitudeMax = 100.0;     // HiFTGenerator._istft clip
constexpr double kPostLreluSlope = 0.01;    // F.leaky_relu default before conv_post (spec P10)

using Conv = HiftModel::Conv;

Conv take_conv(WeightTable& w, const std::string& p, int64_t out, int64_t in, int64_t k,
               int64_t stride = 1, int64_t padding = 0, int64_t dilation = 1) {
  Conv c;
  c.w = w.take(p + ".weight", {out, in, k});
  c.b = w.take(p + ".bias", {out});
  c.stride = stride;
  c.padding = padding;
  c.dilation = dilation;
  return c;
}

at::Tensor conv(const at::Tensor& x, const Conv& c) {
  return at::conv1d(x, c.w, c.b, c.stride, c.padding, c.dilation);
}

HiftModel::ResBlock take_resblock(WeightTable& w, const std::string& p, int64_t ch, int64_t k,
                                  const std::vector<int64_t>& dilations) {
  HiftModel::ResBlock r;
  for (size_t j = 0; j < dilations.size(); ++j) {
    const int64_t d = dilations[j];
    const std::string js = std::to_string(j);
    r.convs1.push_back(take_conv(w, p + ".convs1." + js, ch, ch, k, 1, (k * d - d) / 2, d));
    r.convs2.push_back(take_conv(w, p + ".convs2." + js, ch, ch, k, 1, (k - 1) / 2, 1));
    // Snake: 1 / (alpha + 1e-9) is evaluated as reciprocal() (Tensor.__rtruediv__).
    at::Tensor a1 = w.take(p + ".activations1." + js + ".alpha", {ch}).unsqueeze(0).unsqueeze(-1);
    at::Tensor a2 = w.take(p + ".activations2." + js + ".alpha", {ch}).unsqueeze(0).unsqueeze(-1);
    r.alpha1.push_back(a1);
    r.inv1.push_back(at::reciprocal(a1 + kSnakeEps));
    r.alpha2.push_back(a2);
    r.inv2.push_back(at::reciprocal(a2 + kSnakeEps));
  }
  return r;
}

// out[t] = x[t] + inv * (s[t] * s[t]) into s: pow(s, 2) is s * s in libtorch, and each product
// and the sum round once in f32 as the tensor ops do (no FMA: this file keeps fp-contract off).
void snake_finish_row(const float* x, float* s, float inv, int64_t T) {
  for (int64_t t = 0; t < T; ++t) s[t] = x[t] + inv * (s[t] * s[t]);
}

}  // namespace

// Snake(alpha) (activation.py): x + (1 / (alpha + 1e-9)) * sin(x * alpha)^2. For an f32 CPU
// [1, C, T] x, sin runs in place on x * alpha (libtorch's kernel) and the rest in one loop: the
// tensor ops made four [C, T] intermediates and read them back (~1/5 of a HiFT call). The same
// f32 operations in the same order: bit-identical (test_voice_decoder's
// test_snake_one_pass_is_bit_identical checks it).
at::Tensor hift_snake(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& inv) {
  if (!(x.is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 3 && x.size(0) == 1 && x.is_contiguous() &&
        inv.scalar_type() == at::kFloat && inv.numel() == x.size(1) && inv.is_contiguous())) {
    return x + inv * at::pow(at::sin(x * alpha), 2);
  }
  at::Tensor s = at::mul(x, alpha);
  s.sin_();
  const int64_t C = x.size(1), T = x.size(2);
  const float* px = x.data_ptr<float>();
  const float* pinv = inv.data_ptr<float>();
  float* ps = s.data_ptr<float>();
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) snake_finish_row(px + c * T, ps + c * T, pinv[c], T);
  });
  return s;
}

HiftModel::HiftModel(const HiftConfig& config, const io::StateDict& dict, c10::Device device)
    : config_(config), device_(device) {
  WeightTable w(dict, device, at::kFloat);
  const auto& c = config_;
  const int64_t H = c.nb_harmonics + 1;
  l_linear_w_ = w.take("m_source.l_linear.weight", {1, H});
  l_linear_b_ = w.take("m_source.l_linear.bias", {1});
  for (int i = 0; i < 5; ++i) {  // ConvRNNF0Predictor: exactly 5 conv + ELU layers
    f0_convs_.push_back(take_conv(w, "f0_predictor.condnet." + std::to_string(2 * i), c.f0_cond_channels,
                                  i == 0 ? c.f0_in_channels : c.f0_cond_channels, 3, 1, 1));
  }
  f0_cls_w_ = w.take("f0_predictor.classifier.weight", {1, c.f0_cond_channels});
  f0_cls_b_ = w.take("f0_predictor.classifier.bias", {1});
  conv_pre_ = take_conv(w, "conv_pre", c.base_channels, c.in_channels, 7, 1, 3);

  const size_t S = c.upsample_rates.size();
  const int64_t src_ch = c.n_fft + 2;
  // Source branch rates: d = [1] + reverse(upsample_rates)[:-1], c = cumprod(d), stage i uses reverse(c)[i].
  std::vector<int64_t> cum;
  int64_t acc = 1;
  cum.push_back(acc);
  for (size_t i = 0; i + 1 < S; ++i) cum.push_back(acc *= c.upsample_rates[S - 1 - i]);
  for (size_t i = 0; i < S; ++i) {
    const int64_t cin = c.base_channels >> i, cout = c.base_channels >> (i + 1);
    const int64_t k = c.upsample_kernel_sizes[i], u = c.upsample_rates[i];
    Conv up;
    up.w = w.take("ups." + std::to_string(i) + ".weight", {cin, cout, k});
    up.b = w.take("ups." + std::to_string(i) + ".bias", {cout});
    up.stride = u;
    up.padding = (k - u) / 2;
    ups_.push_back(up);
    const int64_t su = cum[S - 1 - i];
    const std::string sp = "source_downs." + std::to_string(i);
    source_downs_.push_back(su > 1 ? take_conv(w, sp, cout, src_ch, 2 * su, su, su / 2)
                                   : take_conv(w, sp, cout, src_ch, 1));
    source_resblocks_.push_back(take_resblock(w, "source_resblocks." + std::to_string(i), cout,
                                              c.source_resblock_kernel_sizes[i],
                                              c.source_resblock_dilation_sizes[i]));
    for (size_t j = 0; j < c.resblock_kernel_sizes.size(); ++j) {
      resblocks_.push_back(take_resblock(w, "resblocks." + std::to_string(i * c.resblock_kernel_sizes.size() + j),
                                         cout, c.resblock_kernel_sizes[j], c.resblock_dilation_sizes[j]));
    }
  }
  conv_post_ = take_conv(w, "conv_post", src_ch, c.base_channels >> S, 7, 1, 3);
  w.check_all_used("HiFT vocoder");

  // scipy get_window("hann", n_fft, fftbins=True) in float64 (general_cosine on
  // linspace(-pi, pi, n+1), first n points), then cast to fp32 (spec §4 step 6).
  const int64_t n = c.n_fft;
  std::vector<float> win(n);
  const double step = (M_PI - (-M_PI)) / static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double fac = static_cast<double>(i) * step + (-M_PI);
    double v = 0.0;
    v += 0.5 * std::cos(0.0 * fac);
    v += 0.5 * std::cos(1.0 * fac);
    win[i] = static_cast<float>(v);
  }
  window_ = at::tensor(win, at::TensorOptions().dtype(at::kFloat)).to(device_);
}

at::Tensor HiftModel::resblock(const ResBlock& r, at::Tensor x) const {
  for (size_t j = 0; j < r.convs1.size(); ++j) {
    at::Tensor t = hift_snake(x, r.alpha1[j], r.inv1[j]);
    t = conv(t, r.convs1[j]);
    t = hift_snake(t, r.alpha2[j], r.inv2[j]);
    t = conv(t, r.convs2[j]);
    x = t.add_(x);  // t + x, into t's buffer (the sum is the same either way round)
  }
  return x;
}

HiftOutput HiftModel::inference(const at::Tensor& mel_in, const at::Tensor& cache_source, at::Generator& gen,
                                HiftTaps* taps, bool draw_unused_noise) const {
  const auto& c = config_;
  const int64_t N = mel_in.size(2);
  if (N < 1) throw Error(ErrorCode::kBadInput, "", "mel", "HiFT needs at least one mel frame");
  const int64_t up = c.samples_per_frame();
  const int64_t L = up * N;
  const int64_t H = c.nb_harmonics + 1;
  auto cpu_f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor mel = mel_in.to(device_, at::kFloat);

  // 1. F0 predictor (f0_predictor.py): 5 x (Conv k3 -> ELU), classifier, |.|.
  at::Tensor h = mel;
  for (const auto& cv : f0_convs_) h = at::elu(conv(h, cv));
  at::Tensor f0 = at::abs(at::linear(h.transpose(1, 2), f0_cls_w_, f0_cls_b_).squeeze(-1));  // [1, N]
  if (taps) taps->f0 = f0.to(at::kCPU);

  // 2. Nearest upsampling by prod(upsample_rates) x hop_len: each frame repeated.
  at::Tensor f0_up = at::upsample_nearest1d(f0.unsqueeze(1), c10::nullopt,
                                            at::ArrayRef<double>{static_cast<double>(up)});  // [1, 1, L]

  // 3. SineGen: harmonics, running phase, random initial phases, voiced/unvoiced noise.
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < H; ++i) rows.push_back(f0_up * static_cast<double>(i + 1) / c.sampling_rate);
  at::Tensor F = at::cat(rows, 1);                                                   // [1, H, L]
  // A double scan rounded per element: what the CPU's float cumsum does internally (decoder
  // spec, SineGen), spelled out so CUDA does the same; CUDA's float scan drifts along the call
  // and moves every harmonic's phase (P16: 2.7e-2 STFT error on tiny-a, 2.3e-3 this way).
  at::Tensor cumulative = at::cumsum(F.to(at::kDouble), -1).to(F.scalar_type());
  at::Tensor theta = (2 * M_PI) * at::remainder(cumulative, 1);
  at::Tensor low = at::scalar_tensor(-M_PI, cpu_f32), high = at::scalar_tensor(M_PI, cpu_f32);
  at::Tensor phase = low + draw_rand({1, H, 1}, gen, "hift.phase") * (high - low);          // draw #2
  phase.select(1, 0).zero_();
  at::Tensor sine = c.nsf_alpha * at::sin(theta + phase.to(device_));
  at::Tensor uv = (f0_up > c.nsf_voiced_threshold).to(at::kFloat);
  at::Tensor noise_amp = uv * c.nsf_sigma + (1 - uv) * c.nsf_alpha / 3;
  at::Tensor noise = noise_amp * draw_randn({1, H, L}, gen, "hift.noise").to(device_);      // draw #3
  sine = sine * uv + noise;
  // 4. SourceModuleHnNSF: tanh(Linear over harmonics); upstream's unused noise = draw #4.
  at::Tensor s = at::tanh(at::linear(sine.transpose(1, 2), l_linear_w_, l_linear_b_));  // [1, L, 1]
  if (draw_unused_noise) (void)draw_randn({1, L, 1}, gen, "hift.unused_noise");
  s = s.transpose(1, 2).contiguous();                                                // [1, 1, L]
  // 5. Cache splice.
  const int64_t S = cache_source.numel() == 0 ? 0 : cache_source.size(2);
  if (S > 0) s.slice(2, 0, std::min(S, L)).copy_(cache_source.slice(2, 0, std::min(S, L)).to(device_, at::kFloat));

  // 6. Source STFT, real parts then imaginary parts.
  at::Tensor spec = at::stft(s.squeeze(1), c.n_fft, c.hop_len, c.n_fft, window_, /*center=*/true, "reflect",
                             /*normalized=*/false, /*onesided=*/true, /*return_complex=*/true);
  at::Tensor ri = at::view_as_real(spec);
  at::Tensor s_stft = at::cat({ri.select(-1, 0), ri.select(-1, 1)}, 1);                // [1, n_fft+2, F]

  // 7. Trunk.
  at::Tensor x = conv(mel, conv_pre_);
  const size_t stages = ups_.size();
  const size_t K = c.resblock_kernel_sizes.size();
  for (size_t i = 0; i < stages; ++i) {
    x = at::leaky_relu(x, c.lrelu_slope);
    x = at::conv_transpose1d(x, ups_[i].w, ups_[i].b, ups_[i].stride, ups_[i].padding);
    if (i + 1 == stages) x = at::reflection_pad1d(x, {1, 0});
    at::Tensor si = resblock(source_resblocks_[i], conv(s_stft, source_downs_[i]));
    x = x + si;
    at::Tensor xs = resblock(resblocks_[i * K], x);
    for (size_t j = 1; j < K; ++j) xs += resblock(resblocks_[i * K + j], x);
    x = xs / static_cast<int64_t>(K);
  }
  x = at::leaky_relu(x, kPostLreluSlope);
  x = conv(x, conv_post_);
  // 8. iSTFT head.
  const int64_t nb = c.n_fft / 2 + 1;
  at::Tensor magnitude = at::exp(x.slice(1, 0, nb));
  at::Tensor ph = at::sin(x.slice(1, nb));
  magnitude = at::clamp_max(magnitude, kMagnitudeMax);
  at::Tensor real = magnitude * at::cos(ph);
  at::Tensor imag = magnitude * at::sin(ph);
  at::Tensor audio = at::istft(at::complex(real, imag), c.n_fft, c.hop_len, c.n_fft, window_,
                               /*center=*/true, /*normalized=*/false, /*onesided=*/c10::nullopt,
                               /*length=*/c10::nullopt, /*return_complex=*/false);
  // 9. Clip.
  audio = at::clamp(audio, -c.audio_limit, c.audio_limit);
  if (audio.size(-1) != L) {
    throw Error(ErrorCode::kMismatch, "", "hift", "iSTFT produced " + std::to_string(audio.size(-1)) +
                                                      " samples, expected " + std::to_string(L));
  }
  return {audio.to(at::kCPU).contiguous(), s.to(at::kCPU)};
}

}  // namespace glmvoice::voice
