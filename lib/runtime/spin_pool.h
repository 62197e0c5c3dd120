// Worker threads for the hand-written CPU kernels of a decode step, kept spinning between calls.
//
// Why not OpenMP (libtorch's at::parallel_for): libgomp makes idle workers spin only while the
// process has no more OpenMP threads than CPUs; once a second thread has started a parallel
// region (a GStreamer streaming thread beside the one that loaded the model, the batching
// scheduler, the decoder), every worker goes to sleep right after each region and the next
// region waits for it to be woken. A decode step is ~40 short kernel calls: measured on the
// 2-core box, mid model, the same decode on a second thread took 50-57 ms/token (int4 25)
// against 42 (int4 16) on the thread that loaded the model.
//
// DecodeStepScope marks a step on the calling thread: for its lifetime libtorch's own ops run
// on that thread alone (their OpenMP team would compete with the spinning workers for the same
// cores, and a decode step's libtorch ops are small), and parallel_rows() runs on this pool
// with the thread count the caller had. Outside a scope parallel_rows() is at::parallel_for.
// GLMVOICE_SPIN_POOL=0 in the environment makes scopes do nothing (for A/B measurements).
#pragma once

#include <cstdint>
#include <functional>

namespace glmvoice::runtime {

class DecodeStepScope {
 public:
  DecodeStepScope();   // reads the calling thread's intra-op thread count, then sets it to 1
  ~DecodeStepScope();  // restores it
  DecodeStepScope(const DecodeStepScope&) = delete;
  DecodeStepScope& operator=(const DecodeStepScope&) = delete;

 private:
  bool active_ = true;  // false under GLMVOICE_SPIN_POOL=0
  int saved_threads_ = 0;
  int saved_mkl_ = 0;  // MKL's per-thread count (0: its default)
  int outer_ = 0;  // the enclosing scope's kernel threads (scopes nest)
};

// fn(b, e) over [begin, end) in at most `threads` contiguous chunks of at least `grain`
// (the chunks at::parallel_for would make); the caller runs the first chunk. Every index is
// in exactly one chunk, whatever the thread count.
void parallel_rows(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Threads parallel_rows() uses on the calling thread now (for tests and benchmarks).
int parallel_rows_threads();

}  // namespace glmvoice::runtime
