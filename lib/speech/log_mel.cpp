// Whisper log-mel front end; see log_mel.h and spec tokenizer.md §4.
#include "speech/log_mel.h"

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "io/error.h"
#include "io/json_config.h"

namespace glmvoice::speech {

FeatureConfig FeatureConfig::load(const std::string& path) {
  const io::JsonConfig json = io::JsonConfig::load(path);
  FeatureConfig config;
  config.feature_size = json.get_int("feature_size");
  config.sampling_rate = json.get_int("sampling_rate");
  config.hop_length = json.get_int("hop_length");
  config.n_fft = json.get_int("n_fft");
  config.padding_value = json.get_double("padding_value", 0.0);
  // The filterbank and the streaming arithmetic (1280 samples per token) assume these (§1.3).
  if (config.sampling_rate != 16000) {
    throw Error(ErrorCode::kUnsupported, path, "sampling_rate",
                std::to_string(config.sampling_rate) + " != 16000 (only 16 kHz is supported)");
  }
  if (config.n_fft != 400) {
    throw Error(ErrorCode::kUnsupported, path, "n_fft", std::to_string(config.n_fft) + " != 400");
  }
  if (config.hop_length != 160) {
    throw Error(ErrorCode::kUnsupported, path, "hop_length",
                std::to_string(config.hop_length) + " != 160");
  }
  if (config.feature_size <= 0) {
    throw Error(ErrorCode::kBadConfig, path, "feature_size", "must be positive");
  }
  return config;
}

namespace {

// Slaney mel scale (librosa htk=False; spec §4.4).
double hz_to_mel(double f) {
  if (f < 1000.0) return 3.0 * f / 200.0;
  return 15.0 + std::log(f / 1000.0) * 27.0 / std::log(6.4);
}

double mel_to_hz(double m) {
  if (m < 15.0) return 200.0 * m / 3.0;
  return 1000.0 * std::exp((std::log(6.4) / 27.0) * (m - 15.0));
}

}  // namespace

at::Tensor mel_filterbank(int64_t n_mels, int64_t n_fft, int64_t sampling_rate) {
  const int64_t n_freqs = n_fft / 2 + 1;
  const double f_max = sampling_rate / 2.0;
  const double mel_max = hz_to_mel(f_max);
  std::vector<double> fpts(n_mels + 2);
  for (int64_t i = 0; i < n_mels + 2; ++i) {
    // linspace(0, mel_max, n_mels + 2)
    fpts[i] = mel_to_hz(mel_max * static_cast<double>(i) / static_cast<double>(n_mels + 1));
  }
  at::Tensor weights = at::zeros({n_mels, n_freqs}, at::kDouble);
  auto w = weights.accessor<double, 2>();
  for (int64_t b = 0; b < n_mels; ++b) {
    const double enorm = 2.0 / (fpts[b + 2] - fpts[b]);  // Slaney area normalization
    for (int64_t k = 0; k < n_freqs; ++k) {
      const double f = f_max * static_cast<double>(k) / static_cast<double>(n_freqs - 1);
      const double down = (f - fpts[b]) / (fpts[b + 1] - fpts[b]);
      const double up = (fpts[b + 2] - f) / (fpts[b + 2] - fpts[b + 1]);
      w[b][k] = std::max(0.0, std::min(down, up)) * enorm;
    }
  }
  return weights;
}

at::Tensor log_mel_raw_frames(const at::Tensor& xp, const at::Tensor& filters, int64_t n_fft,
                              int64_t hop) {
  // xp: [n_fft + hop * (frames - 1)] -> [n_mels, frames]
  const at::Tensor window = at::hann_window(n_fft, /*periodic=*/true, xp.options());
  const at::Tensor spec = at::stft(xp, n_fft, hop, n_fft, window, /*normalized=*/false,
                                   /*onesided=*/true, /*return_complex=*/true);
  const at::Tensor power = spec.abs().pow(2);  // [n_fft/2+1, frames], upstream: abs() ** 2
  return at::matmul(filters, power).clamp_min(1e-10).log10();
}

at::Tensor reflect_slice(const at::Tensor& x, int64_t len, int64_t start, int64_t end) {
  TORCH_CHECK(len > 0 && start >= -(len - 1) && end <= 2 * len - 1 && start <= end,
              "reflect_slice: range [", start, ", ", end, ") outside the padded signal of ", len);
  std::vector<at::Tensor> parts;
  if (start < 0) {
    // positions p in [start, min(end, 0)): xp[p] = x[-p]
    const int64_t stop = std::min<int64_t>(end, 0);
    parts.push_back(x.slice(0, 1 - stop, 1 - start).flip(0));
  }
  const int64_t mid_lo = std::max<int64_t>(start, 0);
  const int64_t mid_hi = std::min<int64_t>(end, len);
  if (mid_hi > mid_lo) parts.push_back(x.slice(0, mid_lo, mid_hi));
  if (end > len) {
    // positions p in [max(start, len), end): xp[p] = x[2(len-1) - p]
    const int64_t first = std::max<int64_t>(start, len);
    parts.push_back(x.slice(0, 2 * len - 1 - end, 2 * len - 1 - first).flip(0));
  }
  return parts.size() == 1 ? parts[0].contiguous() : at::cat(parts);
}

at::Tensor log_mel_raw(const at::Tensor& x, const at::Tensor& filters, int64_t n_fft, int64_t hop) {
  const int64_t len = x.size(0);
  TORCH_CHECK(len % hop == 0, "log_mel_raw: length ", len, " is not a multiple of ", hop);
  const int64_t frames = len / hop;  // the (1 + len/hop)-th frame is dropped
  const int64_t pad = n_fft / 2;
  const at::Tensor xp = reflect_slice(x, len, -pad, hop * (frames - 1) + n_fft - pad);
  return log_mel_raw_frames(xp, filters, n_fft, hop);
}

at::Tensor log_mel_normalize(const at::Tensor& lg, double max_log) {
  return lg.clamp_min(max_log - 8.0).add(4.0).div(4.0);
}

}  // namespace glmvoice::speech
