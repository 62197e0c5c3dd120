// The decoder's random draws, in one place: the CFM noise (flow) and SineGen's phases and
// noise (HiFT) are drawn through these two functions, so a test can record the decoder's own
// draw order, shapes and values (and compare them with upstream's RNG call log) instead of
// re-running libtorch's generator by hand.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <functional>

namespace glmvoice::voice {

// Called with each draw as made (f32 CPU, before any scaling): what ("flow.z", ...), values.
using DrawRecorder = std::function<void(const char* what, const at::Tensor& values)>;

// Installs a recorder for the draws made on the calling thread (tests only); {} removes it.
void set_draw_recorder(DrawRecorder recorder);

// at::randn / at::rand of f32 CPU values from `gen`, reported to this thread's recorder.
at::Tensor draw_randn(at::IntArrayRef shape, at::Generator& gen, const char* what);
at::Tensor draw_rand(at::IntArrayRef shape, at::Generator& gen, const char* what);

}  // namespace glmvoice::voice
