// Band-limited sinc resampling as upstream does it before the tokenizer: GLM-4-Voice's
// extract_speech_token runs torchaudio.transforms.Resample(orig, 16000) with its defaults
// (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99) on any file that is not 16 kHz.
//
// Reference: THUDM/GLM-4-Voice eb00ce9 speech_tokenizer/utils.py (_resample_buffer);
// pytorch/audio torchaudio/functional/functional.py _get_sinc_resample_kernel and
// _apply_sinc_resample_kernel (the transform's kernel is built in float64, cast to float32).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace glmvoice::speech {

struct SincResampleKernel {
  int64_t orig_step = 0;  // orig_freq / gcd: input samples per output period (conv stride)
  int64_t new_step = 0;   // new_freq / gcd: output samples per period (kernel rows)
  int64_t width = 0;      // ceil(lowpass_filter_width * orig_step / base_freq): zero padding
  at::Tensor kernel;      // f32 [new_step, 1, 2 * width + orig_step]
};

// kernel[j][0][k] = sinc(pi t) * cos(pi t / (2 w))^2 * base / orig_step, with
// t = clamp((-j / new_step + (k - width) / orig_step) * base, -w, w), base = min(steps) * rolloff,
// w = lowpass_filter_width (torchaudio's formula, float64, -j / new_step rounded to float32 first
// as torchaudio's integer arange divided by an int does).
SincResampleKernel sinc_resample_kernel(int64_t orig_freq, int64_t new_freq, int64_t lowpass_filter_width = 6,
                                        double rolloff = 0.99);

// wave: f32 [n] (CPU) -> f32 [ceil(n * new_freq / orig_freq)]; the input itself when the rates
// are equal. Throws glmvoice::Error: kBadInput for a rate < 1, kUnsupported when the kernel
// would exceed 2^24 weights (a ratio that reduces badly, e.g. 44101 Hz; common rates need at
// most 160 x 475).
at::Tensor resample(const at::Tensor& wave, int64_t orig_freq, int64_t new_freq);

}  // namespace glmvoice::speech
