#include "pacer.h"

#include <algorithm>
#include <thread>

namespace glmvoice::web {

void Pacer::wait(GstClockTime pts, GstClockTime duration) {
  if (!GST_CLOCK_TIME_IS_VALID(pts) || stopped_) return;
  const bool after_gap = anchored_ && pts > previous_end_ + kGap;
  previous_end_ = pts + (GST_CLOCK_TIME_IS_VALID(duration) ? duration : 0);
  const auto now = Clock::now();
  if (!anchored_ || pts < origin_pts_) {
    anchored_ = true;
    origin_ = now;
    origin_pts_ = pts;
    return;
  }
  const auto due = origin_ + std::chrono::nanoseconds(pts - origin_pts_);
  if (due <= now) return;  // late: at once, the mapping stays
  if (after_gap && due - now > kMaxWaitAfterGap) {  // the timeline jumped ahead: restart it here
    origin_ = now;
    origin_pts_ = pts;
    return;
  }
  while (!stopped_ && Clock::now() < due)
    std::this_thread::sleep_for(std::min<Clock::duration>(kStep, due - Clock::now()));
}

}  // namespace glmvoice::web
