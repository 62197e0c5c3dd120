#include "pacer.h"

#include <algorithm>
#include <thread>

namespace glmvoice::web {

void Pacer::wait(GstClockTime pts) {
  if (!GST_CLOCK_TIME_IS_VALID(pts) || stopped_) return;
  const auto now = Clock::now();
  auto due = origin_ + std::chrono::nanoseconds(pts - origin_pts_);
  if (!anchored_ || pts < origin_pts_ || due + kLateSlack < now) {
    anchored_ = true;
    origin_ = now;
    origin_pts_ = pts;
    return;
  }
  while (!stopped_ && Clock::now() < due) std::this_thread::sleep_for(std::min<Clock::duration>(kStep, due - Clock::now()));
}

}  // namespace glmvoice::web
