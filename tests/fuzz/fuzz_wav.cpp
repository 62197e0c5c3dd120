// libFuzzer target: a whole RIFF/WAVE file through speech::parse_wav (chunk walk, fmt
// fields, sample formats), then channel 0 resampled to 16 kHz as glmvoice-cli tokenize does
// (speech/resample.h) when the rate is small enough to keep one input cheap. Every input must
// end in samples or a glmvoice::Error.
#include <cstddef>
#include <cstdint>

#include <ATen/ATen.h>

#include "io/error.h"
#include "speech/resample.h"
#include "speech/wav_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const glmvoice::speech::WavData wav = glmvoice::speech::parse_wav(data, size, "fuzz.wav");
    // The kernel has (rate / gcd) x (16000 / gcd) taps: bound it so one input stays fast.
    if (wav.sample_rate <= 48000 && wav.samples.size(1) <= 4096) {
      glmvoice::speech::resample(wav.samples[0].contiguous(), wav.sample_rate, 16000);
    }
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
