// Sends the answer's RTP packets in real time. The decoder produces audio in blocks (up to
// 16 s at once) faster than real time; sent as a burst, the browser's jitter buffer would
// overflow and drop it. The pacer holds each packet until its PTS, measured from an origin
// taken at the first packet of a run; a packet that is already late (the decoder was slower
// than real time, or a new answer starts after a pause) re-anchors the origin, so pauses
// between answers are never "caught up" with a burst. Waits in short steps so that stop()
// releases the streaming thread quickly.
#pragma once

#include <gst/gst.h>

#include <atomic>
#include <chrono>

namespace glmvoice::web {

class Pacer {
 public:
  // Blocks the calling streaming thread until `pts` is due. Not thread-safe: one stream.
  void wait(GstClockTime pts);
  void stop() { stopped_ = true; }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kLateSlack = std::chrono::milliseconds(200);
  static constexpr auto kStep = std::chrono::milliseconds(50);

  std::atomic<bool> stopped_{false};
  bool anchored_ = false;
  Clock::time_point origin_;
  GstClockTime origin_pts_ = 0;
};

}  // namespace glmvoice::web
