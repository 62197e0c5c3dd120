// Minimal RIFF/WAVE reader for the CLI and tests: PCM 8/16/24/32-bit and IEEE float 32/64,
// any channel count. Samples are scaled like torchaudio.load (int16 / 32768, ...).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace glmvoice::speech {

struct WavData {
  int64_t sample_rate = 0;
  at::Tensor samples;  // f32 [channels, frames] in [-1, 1)
};

// Throws glmvoice::Error (kNotFound, kBadFile naming the chunk or field).
WavData read_wav(const std::string& path);

// Channel 0 of a 16 kHz file as f32 [n] (upstream takes audio[0], no downmix; spec §4.1).
// Other rates are refused (kBadInput): resample first (e.g. sox IN.wav -r 16000 OUT.wav).
at::Tensor read_wav_mono16k(const std::string& path);

}  // namespace glmvoice::speech
