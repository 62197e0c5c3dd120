// Trailing-silence endpointing; see endpointer.h.
#include "speech/endpointer.h"

#include <cstdint>
#include <algorithm>
#include <cmath>

namespace glmvoice::speech {

namespace {
constexpr int64_t kFrameMs = 10;

// Silent frames that end a turn; 0 = never (silence_ms 0: detection only).
int64_t frames_for(int64_t silence_ms) {
  return silence_ms <= 0 ? 0 : std::max<int64_t>(1, (silence_ms + kFrameMs - 1) / kFrameMs);
}
}  // namespace

SilenceEndpointer::SilenceEndpointer(double threshold_db, int64_t silence_ms, int64_t sample_rate)
    : threshold_db_(threshold_db),
      silence_frames_needed_(frames_for(silence_ms)),
      frame_len_(std::max<int64_t>(1, sample_rate * kFrameMs / 1000)) {}

void SilenceEndpointer::configure(double threshold_db, int64_t silence_ms) {
  threshold_db_ = threshold_db;
  silence_frames_needed_ = frames_for(silence_ms);
}

void SilenceEndpointer::reset() {
  frame_energy_ = 0.0;
  frame_fill_ = 0;
  silent_run_ = 0;
  in_speech_ = false;
  speech_start_ = -1;
}

int64_t SilenceEndpointer::push(const float* x, int64_t n) {
  speech_start_ = -1;
  for (int64_t i = 0; i < n; ++i) {
    frame_energy_ += static_cast<double>(x[i]) * x[i];
    if (++frame_fill_ < frame_len_) continue;
    const double rms = std::sqrt(frame_energy_ / static_cast<double>(frame_len_));
    const double db = rms > 0.0 ? 20.0 * std::log10(rms) : -400.0;
    frame_energy_ = 0.0;
    frame_fill_ = 0;
    if (db >= threshold_db_) {
      if (!in_speech_ && speech_start_ < 0) speech_start_ = i + 1;
      in_speech_ = true;
      silent_run_ = 0;
      continue;
    }
    if (in_speech_ && silence_frames_needed_ > 0 && ++silent_run_ >= silence_frames_needed_) {
      in_speech_ = false;
      silent_run_ = 0;
      return i + 1;
    }
  }
  return -1;
}

}  // namespace glmvoice::speech
