// Sinc resampling like torchaudio's defaults; see resample.h.
#include "speech/resample.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "io/error.h"

namespace glmvoice::speech {

SincResampleKernel sinc_resample_kernel(int64_t orig_freq, int64_t new_freq, int64_t lowpass_filter_width,
                                        double rolloff) {
  if (orig_freq < 1 || new_freq < 1 || lowpass_filter_width < 1) {
    throw Error(ErrorCode::kBadInput, "", "sample_rate",
                "cannot resample " + std::to_string(orig_freq) + " Hz to " + std::to_string(new_freq) + " Hz");
  }
  const int64_t gcd = std::gcd(orig_freq, new_freq);
  SincResampleKernel k;
  k.orig_step = orig_freq / gcd;
  k.new_step = new_freq / gcd;
  const double base_freq = static_cast<double>(std::min(k.orig_step, k.new_step)) * rolloff;
  const double lpw = static_cast<double>(lowpass_filter_width);
  k.width = static_cast<int64_t>(std::ceil(lpw * static_cast<double>(k.orig_step) / base_freq));
  const int64_t taps = 2 * k.width + k.orig_step;
  // torchaudio materialises new_step x taps weights; for rates whose ratio reduces badly (e.g.
  // 44101 -> 16000: 16000 x 44135) that is gigabytes. Refuse those instead of exhausting memory.
  constexpr int64_t kMaxKernelWeights = int64_t(1) << 24;  // 64 MiB of f32
  if (k.new_step > kMaxKernelWeights / taps) {
    throw Error(ErrorCode::kUnsupported, "", "sample_rate",
                "resampling " + std::to_string(orig_freq) + " Hz to " + std::to_string(new_freq) +
                    " Hz needs a " + std::to_string(k.new_step) + " x " + std::to_string(taps) +
                    " sinc kernel (the rates share no large common divisor); resample it first");
  }
  const double scale = base_freq / static_cast<double>(k.orig_step);
  std::vector<float> values(static_cast<size_t>(k.new_step * taps));
  for (int64_t j = 0; j < k.new_step; ++j) {
    // torch.arange(0, -new, -1) / new: an int64 tensor divided in float32
    const double out_pos = static_cast<double>(static_cast<float>(-j) / static_cast<float>(k.new_step));
    for (int64_t i = 0; i < taps; ++i) {
      const double in_pos = static_cast<double>(i - k.width) / static_cast<double>(k.orig_step);
      double t = std::clamp((out_pos + in_pos) * base_freq, -lpw, lpw);
      const double c = std::cos(t * M_PI / lpw / 2);
      const double window = c * c;
      t *= M_PI;
      const double sinc = t == 0.0 ? 1.0 : std::sin(t) / t;
      values[static_cast<size_t>(j * taps + i)] = static_cast<float>(sinc * (window * scale));
    }
  }
  k.kernel = at::tensor(values, at::kFloat).reshape({k.new_step, 1, taps});
  return k;
}

at::Tensor resample(const at::Tensor& wave, int64_t orig_freq, int64_t new_freq) {
  c10::InferenceMode guard;
  if (orig_freq == new_freq && orig_freq > 0) return wave;
  const SincResampleKernel k = sinc_resample_kernel(orig_freq, new_freq);
  const int64_t n = wave.size(0);
  // pad (width, width + orig_step), conv1d with stride orig_step: [1, new_step, periods]
  at::Tensor x = at::constant_pad_nd(wave.to(at::kFloat).reshape({1, 1, n}), {k.width, k.width + k.orig_step});
  at::Tensor y = at::conv1d(x, k.kernel, {}, {k.orig_step});
  y = y.transpose(1, 2).reshape({-1});  // period-major: output j of period p at p * new_step + j
  const auto target = static_cast<int64_t>(
      std::ceil(static_cast<double>(k.new_step) * static_cast<double>(n) / static_cast<double>(k.orig_step)));
  return y.slice(0, 0, std::min<int64_t>(target, y.size(0))).contiguous();
}

}  // namespace glmvoice::speech
