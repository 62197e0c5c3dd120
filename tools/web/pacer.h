// Sends the answer's RTP packets in real time. The decoder produces audio in blocks (up to
// 16 s at once) faster than real time; sent as a burst, the browser's jitter buffer would
// overflow and drop it. The pacer maps PTS to the wall clock once (origin: the first packet)
// and holds each packet until its PTS is due on that mapping. A late packet goes at once and
// leaves the mapping alone: it is the encoder's held-back last frame of an earlier answer, or
// audio the decoder stamped with the time it became ready; re-anchoring on it would push the
// next answer into the future. The mapping restarts when the timeline goes backwards or jumps
// far ahead across a gap. Waits in short steps so that stop() releases the streaming thread.
#pragma once

#include <gst/gst.h>

#include <atomic>
#include <chrono>

namespace glmvoice::web {

class Pacer {
 public:
  // Blocks the calling streaming thread until `pts` is due. Not thread-safe: one stream.
  void wait(GstClockTime pts, GstClockTime duration);
  void stop() { stopped_ = true; }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kStep = std::chrono::milliseconds(50);
  static constexpr auto kMaxWaitAfterGap = std::chrono::seconds(1);
  static constexpr GstClockTime kGap = 100 * GST_MSECOND;

  std::atomic<bool> stopped_{false};
  bool anchored_ = false;
  Clock::time_point origin_;
  GstClockTime origin_pts_ = 0;
  GstClockTime previous_end_ = 0;
};

}  // namespace glmvoice::web
