// Recordable random draws of the decoder; see noise_draws.h.
#include "voice/noise_draws.h"

#include <ATen/ATen.h>

#include <utility>

namespace glmvoice::voice {

namespace {
// Per thread, so a test's recorder never sees another stream's draws.
thread_local DrawRecorder t_recorder;

at::Tensor report(const char* what, at::Tensor values) {
  if (t_recorder) t_recorder(what, values);
  return values;
}
}  // namespace

void set_draw_recorder(DrawRecorder recorder) { t_recorder = std::move(recorder); }

at::Tensor draw_randn(at::IntArrayRef shape, at::Generator& gen, const char* what) {
  return report(what, at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)));
}

at::Tensor draw_rand(at::IntArrayRef shape, at::Generator& gen, const char* what) {
  return report(what, at::rand(shape, gen, at::TensorOptions().dtype(at::kFloat)));
}

}  // namespace glmvoice::voice
