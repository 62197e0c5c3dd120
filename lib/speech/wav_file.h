// Minimal RIFF/WAVE reader for the CLI and tests: PCM 8/16/24/32-bit and IEEE float 32/64,
// any channel count. Samples are scaled like torchaudio.load (int16 / 32768, ...).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace glmvoice::speech {

struct WavData {
  int64_t sample_rate = 0;
  at::Tensor samples;  // f32 [channels, frames] in [-1, 1)
};

// Throws glmvoice::Error (kNotFound, kBadFile naming the chunk or field).
WavData read_wav(const std::string& path);
// As read_wav on a whole file held in memory (`path` names it in errors; the fuzz target).
WavData parse_wav(const uint8_t* data, size_t size, const std::string& path);

// Channel 0 as f32 [n] at 16 kHz, as upstream's extract_speech_token prepares any file:
// torchaudio.load, Resample(rate, 16000) when the rate differs (speech/resample.h), then
// audio[0] (no downmix; spec §4.1). Resampling is per channel, so channel 0 alone is resampled.
at::Tensor read_wav_mono16k(const std::string& path);

}  // namespace glmvoice::speech
