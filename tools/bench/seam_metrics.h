// Seam quality of a streamed decode against the offline decode of the same tokens (bench only).
//
// Log-spectral distance (dB, STFT 1024 / hop 256 / Hann, magnitudes floored at 1e-5) between
// the streamed and the offline audio, over all STFT frames and over the frames within +-2 hops
// of a seam (a boundary between two emitted chunks); and the spectral flux (RMS dB change
// between consecutive frames) at the seams divided by the signal's mean flux: ~1 means the
// seams are as smooth as any other point of the audio, >1 a jump.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace glmvoice::tools {

struct SeamMetrics {
  double lsd_all_db = 0;   // streamed vs offline, all frames (common length)
  double lsd_seam_db = 0;  // streamed vs offline, frames near seams
  double flux_ratio = 0;   // streamed: flux at seams / mean flux
  double flux_ratio_offline = 0;  // the same positions in the offline audio (control)
};

// `seams`: sample offsets in `streamed` where one emitted chunk ends and the next begins.
SeamMetrics seam_metrics(const at::Tensor& streamed, const at::Tensor& offline, const std::vector<int64_t>& seams);

}  // namespace glmvoice::tools
