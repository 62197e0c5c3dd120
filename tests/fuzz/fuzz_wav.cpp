// libFuzzer target: a whole RIFF/WAVE file through speech::parse_wav (chunk walk, fmt
// fields, sample formats), then channel 0 resampled to 16 kHz as glmvoice-cli tokenize does
// (speech/resample.h) when the rate is small enough to keep one input cheap. Every input must
// end in samples or a glmvoice::Error.
#include <cstddef>
#include <cstdint>
#include <numeric>

#include <ATen/ATen.h>

#include "io/error.h"
#include "speech/resample.h"
#include "speech/wav_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const glmvoice::speech::WavData wav = glmvoice::speech::parse_wav(data, size, "fuzz.wav");
    // The kernel has about (rate / gcd) x (16000 / gcd) weights. The library refuses above
    // 2^24; below that, an odd rate such as 8076 Hz (4000 x 2100 weights) or 15888 Hz (993 x
    // 1000) is valid but takes 10 s under ASan on a loaded box: a timeout of the harness, not
    // a finding. Bound it here; 44.1 kHz (441 x 160) and 22.05 kHz (441 x 320) stay in.
    const int64_t g = std::gcd<int64_t>(wav.sample_rate, 16000);
    const int64_t weights = g > 0 ? (wav.sample_rate / g) * (16000 / g) : 0;
    if (wav.sample_rate <= 48000 && wav.samples.size(1) <= 4096 && weights <= (int64_t{1} << 18)) {
      glmvoice::speech::resample(wav.samples[0].contiguous(), wav.sample_rate, 16000);
    }
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
