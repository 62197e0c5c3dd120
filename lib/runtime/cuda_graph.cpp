// CUDA graph capture through libtorch (at::cuda::CUDAGraph), see cuda_graph.h.
#include "runtime/cuda_graph.h"

#if GLMVOICE_HAVE_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace glmvoice::runtime {

#if GLMVOICE_HAVE_CUDA_GRAPHS

namespace {

class CudaGraph final : public CapturedGraph {
 public:
  at::cuda::CUDAGraph graph;
  void replay() override { graph.replay(); }
};

}  // namespace

bool cuda_graphs_built() { return true; }

std::unique_ptr<CapturedGraph> capture_cuda_graph(c10::Device device, const std::function<void()>& body) {
  // Device-generic guards and stream calls only (they dispatch through libc10_cuda): the
  // CUDA-specific inline ones would call the CUDA runtime directly, which this library does
  // not link.
  c10::DeviceGuard device_guard(device);
  // Capture needs a stream other than the default one; what `body` reads was written on the
  // current stream, so that finishes first.
  c10::Stream current = c10::cuda::getCurrentCUDAStream(device.index()).unwrap();
  current.synchronize();
  c10::Stream side = c10::cuda::getStreamFromPool(false, device.index()).unwrap();
  auto out = std::make_unique<CudaGraph>();
  {
    c10::StreamGuard stream_guard(side);
    body();
    body();
    side.synchronize();
    // Thread-local mode: other threads (other conversations on this GPU) may keep launching.
    out->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    try {
      body();
    } catch (...) {
      try {
        out->graph.capture_end();
      } catch (...) {
      }
      throw;
    }
    out->graph.capture_end();
  }
  side.synchronize();
  return out;
}

#else

bool cuda_graphs_built() { return false; }

std::unique_ptr<CapturedGraph> capture_cuda_graph(c10::Device, const std::function<void()>&) { return nullptr; }

#endif

}  // namespace glmvoice::runtime
