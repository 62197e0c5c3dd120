// Turn endpointing for live input: decides that the user finished speaking after a stretch
// of trailing silence. Used by glmvoicetokenize (properties endpoint-silence-ms and
// silence-threshold-db); kept here so it is testable without GStreamer.
//
// The input is cut into 10 ms frames; a frame is silent when its RMS level in dBFS
// (20 log10 rms, full scale = 1.0) is below the threshold. The endpointer fires once after
// it has seen at least one non-silent frame followed by `silence_ms` of silent frames, then
// re-arms on the next non-silent frame. With `silence_ms` = 0 it never fires and only tells
// where speech begins (the tokenizer's start-of-speech for barge-in).
#pragma once

#include <cstdint>

namespace glmvoice::speech {

class SilenceEndpointer {
 public:
  SilenceEndpointer(double threshold_db, int64_t silence_ms, int64_t sample_rate);

  // Feeds samples; returns the number of samples (<= n) after which the endpoint fired
  // (counted from the start of this call), or -1 when it did not fire in this call.
  // After firing, the rest of `x` is not examined: call again with x + result.
  int64_t push(const float* x, int64_t n);
  // Where speech began during the last push: the number of samples (counted from the start
  // of that call) up to the end of the first non-silent frame after silence; -1 if it did
  // not begin there. A push that fired the endpoint stops there, so at most one begins.
  int64_t speech_start() const { return speech_start_; }
  // New threshold / silence length (mutable while streaming); the current frame and runs stay.
  void configure(double threshold_db, int64_t silence_ms);
  void reset();
  bool in_speech() const { return in_speech_; }

 private:
  double threshold_db_;
  int64_t silence_frames_needed_;
  int64_t frame_len_;
  double frame_energy_ = 0.0;  // sum of squares of the current partial frame
  int64_t frame_fill_ = 0;
  int64_t silent_run_ = 0;     // consecutive silent frames
  bool in_speech_ = false;
  int64_t speech_start_ = -1;
};

}  // namespace glmvoice::speech
