// The spinning worker pool behind parallel_rows() (see the header for why it exists).
//
// One call at a time owns the pool (a second concurrent caller runs its rows alone). A call
// publishes the work, then one 64-bit word: a sequence number and how many workers help
// (workers 1 .. helpers); the caller and its helpers claim chunks from a shared counter until
// none is left, and the caller waits for the helpers to finish theirs. Idle workers spin
// (pause, then yielding the core to any other runnable thread) for kSpinBudget, then sleep
// until the next call wakes them.
#include "runtime/spin_pool.h"

#include <ATen/Parallel.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GLMVOICE_CPU_RELAX() _mm_pause()
#else
#define GLMVOICE_CPU_RELAX() std::this_thread::yield()
#endif

// MKL (inside libtorch on x86) keeps its own per-thread count, set by at::set_num_threads:
// weak, so a libtorch without MKL links too.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace glmvoice::runtime {

namespace {

using Fn = std::function<void(int64_t, int64_t)>;

// Longer than the gap between two decode steps of one conversation (sampling, the element's
// push), so a running conversation keeps its workers awake.
constexpr auto kSpinBudget = std::chrono::milliseconds(4);
constexpr int kPauseRounds = 2000;  // then sched_yield(): another thread may need the core
constexpr int kMaxThreads = 64;
constexpr int64_t kChunksPerThread = 4;

thread_local int t_kernel_threads = 0;  // > 0 inside a DecodeStepScope

// One parallel_rows() call. Helpers hold it by shared_ptr: one that wakes after the call
// ended still reads a live object, finds no chunk left and touches nothing else.
struct Call {
  const Fn* fn = nullptr;
  int64_t begin = 0, end = 0, chunk = 0, n_chunks = 0;
  std::atomic<int64_t> next{0};  // the next unclaimed chunk
  std::atomic<int64_t> done{0};  // chunks finished
  std::mutex error_mutex;
  std::exception_ptr error;

  // Claims chunks until none is left: a helper that is slow to get a core (another process's
  // or OpenMP's spinning thread holds it) leaves its share to the others instead of stalling.
  void take_chunks() {
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_chunks) return;
      const int64_t b = begin + i * chunk, e = std::min(end, b + chunk);
      try {
        (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
      done.fetch_add(1, std::memory_order_acq_rel);
    }
  }
};

class SpinPool {
 public:
  static SpinPool& instance() {
    static SpinPool* pool = new SpinPool();  // never destroyed: workers may run past exit()
    return *pool;
  }

  // false: another call owns the pool (the caller then runs the rows itself).
  bool run(int64_t begin, int64_t end, int helpers, int64_t chunk, const Fn& fn) {
    std::unique_lock<std::mutex> owner(submit_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    ensure_workers(helpers);
    auto call = std::make_shared<Call>();
    call->fn = &fn;
    call->begin = begin;
    call->end = end;
    call->chunk = chunk;
    call->n_chunks = (end - begin + chunk - 1) / chunk;
    {
      std::lock_guard<std::mutex> lock(call_mutex_);
      call_ = call;
    }
    ++seq_;
    word_.store((seq_ << 8) | static_cast<uint64_t>(helpers), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      sleep_cv_.notify_all();
    }
    call->take_chunks();
    while (call->done.load(std::memory_order_acquire) < call->n_chunks) GLMVOICE_CPU_RELAX();
    if (call->error) std::rethrow_exception(call->error);
    return true;
  }

 private:
  void ensure_workers(int n) {
    while (static_cast<int>(workers_.size()) < n) {
      const int index = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, index] { work(index); });
    }
  }

  void work(int index) {
    uint64_t seen = 0;
    for (;;) {
      const uint64_t w = wait_for_call(seen);
      seen = w;
      if (index > static_cast<int>(w & 0xff)) continue;  // not a helper of this call
      std::shared_ptr<Call> call;
      {
        std::lock_guard<std::mutex> lock(call_mutex_);
        call = call_;
      }
      call->take_chunks();
    }
  }

  uint64_t wait_for_call(uint64_t seen) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0;; ++i) {
      const uint64_t w = word_.load(std::memory_order_acquire);
      if (w != seen) return w;
      if (i < kPauseRounds) {
        GLMVOICE_CPU_RELAX();
      } else {
        sched_yield();
        if (i % 64 == 0 && std::chrono::steady_clock::now() - start > kSpinBudget) break;
      }
    }
    // The caller stores the word, then reads sleepers_; we count ourselves, then read the
    // word under the mutex (both sequentially consistent): one of the two sees the other.
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    std::unique_lock<std::mutex> lock(sleep_mutex_);
    sleep_cv_.wait(lock, [&] { return word_.load(std::memory_order_seq_cst) != seen; });
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    return word_.load(std::memory_order_acquire);
  }

  std::mutex submit_;  // one call at a time
  std::vector<std::thread> workers_;
  uint64_t seq_ = 0;
  std::atomic<uint64_t> word_{0};  // seq << 8 | helpers: published after call_
  std::mutex call_mutex_;
  std::shared_ptr<Call> call_;
  std::atomic<int> sleepers_{0};
  std::mutex sleep_mutex_;
  std::condition_variable sleep_cv_;
};

}  // namespace

// GLMVOICE_SPIN_POOL=0: no scope changes anything (the kernels on OpenMP, as before), to
// measure the difference.
bool spin_pool_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("GLMVOICE_SPIN_POOL");
    return !(v != nullptr && std::string(v) == "0");
  }();
  return on;
}

DecodeStepScope::DecodeStepScope() : active_(spin_pool_enabled()), outer_(t_kernel_threads) {
  if (!active_) return;
  at::internal::lazy_init_num_threads();  // so no first-use init resets what is set here
  saved_threads_ = at::get_num_threads();
  if (outer_ == 0) t_kernel_threads = std::clamp(saved_threads_, 1, kMaxThreads);
  // This thread only: at::set_num_threads would also change the count that threads starting
  // their first parallel op copy.
  omp_set_num_threads(1);
  if (MKL_Set_Num_Threads_Local != nullptr) saved_mkl_ = MKL_Set_Num_Threads_Local(1);
}

DecodeStepScope::~DecodeStepScope() {
  if (!active_) return;
  if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(saved_mkl_);
  omp_set_num_threads(saved_threads_);
  t_kernel_threads = outer_;
}

void parallel_rows(int64_t begin, int64_t end, int64_t grain, const Fn& fn) {
  if (begin >= end) return;
  const int threads = t_kernel_threads;
  if (threads == 0) {
    at::parallel_for(begin, end, grain, fn);
    return;
  }
  // kChunksPerThread chunks per thread, each at least `grain` rows, claimed as they go.
  const int64_t n = end - begin, g = std::max<int64_t>(grain, 1);
  const int64_t chunks = std::min<int64_t>(int64_t{threads} * kChunksPerThread, (n + g - 1) / g);
  if (threads > 1 && chunks > 1 &&
      SpinPool::instance().run(begin, end, static_cast<int>(std::min<int64_t>(threads, chunks)) - 1, (n + chunks - 1) / chunks, fn)) {
    return;
  }
  fn(begin, end);
}

int parallel_rows_threads() { return t_kernel_threads > 0 ? t_kernel_threads : at::get_num_threads(); }

}  // namespace glmvoice::runtime
