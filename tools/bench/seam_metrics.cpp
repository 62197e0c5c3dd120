// See seam_metrics.h.
#include "seam_metrics.h"

#include <ATen/ATen.h>

#include <algorithm>

namespace glmvoice::tools {

namespace {

constexpr int64_t kFft = 1024;
constexpr int64_t kHop = 256;
constexpr int64_t kNear = 2;  // STFT frames either side of a seam

// [frames, bins] log10-magnitude in dB.
at::Tensor log_spec(const at::Tensor& x) {
  at::Tensor win = at::hann_window(kFft);
  at::Tensor s = at::stft(x.to(at::kFloat), kFft, kHop, kFft, win, true, "reflect", false, true, true).abs();
  return (20 * at::log10(s.clamp_min(1e-5))).transpose(0, 1).contiguous();
}

// RMS over bins of the dB change between frame f-1 and f: [frames - 1].
at::Tensor flux(const at::Tensor& spec) {
  return (spec.slice(0, 1) - spec.slice(0, 0, -1)).pow(2).mean(1).sqrt();
}

double seam_flux_ratio(const at::Tensor& fl, const std::vector<int64_t>& seam_frames) {
  if (seam_frames.empty() || fl.numel() == 0) return 0;
  double at_seams = 0;
  int64_t n = 0;
  for (int64_t f : seam_frames) {  // the largest change within +-1 frame of the seam
    const int64_t lo = std::max<int64_t>(0, f - 2), hi = std::min<int64_t>(fl.size(0), f + 1);
    if (lo >= hi) continue;
    at_seams += fl.slice(0, lo, hi).max().item<double>();
    ++n;
  }
  return n ? (at_seams / n) / fl.mean().item<double>() : 0;
}

}  // namespace

SeamMetrics seam_metrics(const at::Tensor& streamed, const at::Tensor& offline, const std::vector<int64_t>& seams) {
  SeamMetrics m;
  const int64_t n = std::min(streamed.numel(), offline.numel());
  if (n < kFft) return m;
  at::Tensor a = log_spec(streamed.reshape({-1}).slice(0, 0, n));
  at::Tensor b = log_spec(offline.reshape({-1}).slice(0, 0, n));
  at::Tensor lsd = (a - b).pow(2).mean(1).sqrt();  // [frames]
  m.lsd_all_db = lsd.mean().item<double>();
  std::vector<int64_t> frames;
  at::Tensor near = at::zeros({lsd.size(0)}, at::kBool);
  for (int64_t s : seams) {
    const int64_t f = (s + kHop / 2) / kHop;  // centred STFT: frame f is centred on sample f * hop
    if (f <= 0 || f >= lsd.size(0)) continue;
    frames.push_back(f);
    near.slice(0, std::max<int64_t>(0, f - kNear), std::min<int64_t>(lsd.size(0), f + kNear + 1)).fill_(true);
  }
  if (near.any().item<bool>()) m.lsd_seam_db = lsd.masked_select(near).mean().item<double>();
  m.flux_ratio = seam_flux_ratio(flux(a), frames);
  m.flux_ratio_offline = seam_flux_ratio(flux(b), frames);
  return m;
}

}  // namespace glmvoice::tools
