// CUDA graphs for fixed-shape work that is launched again and again (the LLM's decode step):
// the CPU submits one graph instead of ~1000 small kernels. At 9B shapes on an H200 the eager
// decode step was bound by kernel launches (10.7 ms/token against a 4.5 ms memory floor).
// Built only where the CUDA runtime headers were found (GLMVOICE_HAVE_CUDA_GRAPHS, see
// meson.build); elsewhere capture_cuda_graph() returns nullptr and callers stay eager.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <memory>

namespace glmvoice::runtime {

class CapturedGraph {
 public:
  virtual ~CapturedGraph() = default;
  // Launches the captured work on the device's current stream.
  virtual void replay() = 0;
};

// True when this build can capture CUDA graphs.
bool cuda_graphs_built();

// Runs `body` twice on a side stream (warm-up: kernel selection, cuBLAS workspaces), then
// captures a third run. Tensors `body` allocates during the capture live in the graph's
// private pool for as long as the graph does; `body` must not synchronise with the host and
// must be safe to run three times (idempotent). Throws what the capture throws; nullptr where
// graphs are not built.
std::unique_ptr<CapturedGraph> capture_cuda_graph(c10::Device device, const std::function<void()>& body);

}  // namespace glmvoice::runtime
