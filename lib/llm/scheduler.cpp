// Continuous-batching scheduler (see scheduler.h). Reference for the idea, not the code:
// Orca (OSDI '22, iteration-level scheduling) and vLLM's chunked prefill.
#include "llm/scheduler.h"

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

#include "io/error.h"

namespace glmvoice::llm {

namespace {

// One forward() call in flight: ids [done, n) still to run.
struct Request {
  const std::vector<int64_t>* ids = nullptr;
  KvCache* cache = nullptr;
  int64_t done = 0;
  uint64_t order = 0;  // arrival, for first come first served
  bool running = false;
  bool finished = false;
  at::Tensor logits;
  std::exception_ptr error;
};

struct SeqSlot {
  Request* request = nullptr;  // set while forward() waits
  bool expected = false;       // took part in the last step and has not gone idle
  bool cancel = false;
  Sequence::Stats stats;
};

}  // namespace

struct Scheduler::Impl {
  std::mutex mutex;
  std::condition_variable wake;  // the scheduler thread: a request arrived, idle, stop
  std::condition_variable done;  // callers: a request finished
  std::map<int64_t, SeqSlot> seqs;
  int64_t next_id = 0;
  uint64_t next_order = 0;
  int64_t steps = 0;
  int step_threads = 0;  // the scheduler thread's intra-op threads at its last step
  bool stop = false;
  std::thread thread;

  // A request waits for a step: submitted, not in the running step, not being cancelled.
  static bool waiting(const SeqSlot& s) {
    return s.request && !s.request->running && !s.request->finished && !s.cancel;
  }
  size_t n_waiting() const {
    size_t n = 0;
    for (const auto& [id, s] : seqs) n += waiting(s) ? 1 : 0;
    return n;
  }
  bool expected_all_waiting() const {
    for (const auto& [id, s] : seqs) {
      if (s.expected && !waiting(s)) return false;
    }
    return true;
  }
};

std::shared_ptr<Scheduler> Scheduler::create(std::shared_ptr<const LlmModel> model, SchedulerOptions options) {
  if (!model) throw Error(ErrorCode::kBadInput, "", "scheduler", "no model");
  if (options.max_batch < 1) {
    throw Error(ErrorCode::kBadConfig, model->options().path, "max-batch", "must be at least 1");
  }
  if (options.threads <= 0) options.threads = at::get_num_threads();
  std::shared_ptr<Scheduler> s(new Scheduler(std::move(model), options));
  s->impl_->thread = std::thread([raw = s.get()] { raw->run(); });
  return s;
}

Scheduler::Scheduler(std::shared_ptr<const LlmModel> model, SchedulerOptions options)
    : model_(std::move(model)), options_(options), impl_(new Impl) {}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::unique_ptr<Sequence> Scheduler::join() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const int64_t id = impl_->next_id++;
  impl_->seqs[id];
  return std::unique_ptr<Sequence>(new Sequence(shared_from_this(), id));
}

int64_t Scheduler::steps() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->steps;
}

int Scheduler::step_threads() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->step_threads;
}

void Scheduler::run() {
  c10::InferenceMode guard;
  // Intra-op threads are per calling thread (OpenMP). A thread's lazy first-use init sets them
  // to the process-wide count, which another thread may have changed since, so both copies of
  // that init (the inline one compiled into this library, libtorch's own) run before the set.
  at::internal::lazy_init_num_threads();
  (void)at::get_num_threads();
  at::set_num_threads(options_.threads);
  Impl& m = *impl_;
  const auto gather = std::chrono::duration<double, std::milli>(options_.gather_ms);
  std::unique_lock<std::mutex> lock(m.mutex);
  for (;;) {
    m.wake.wait(lock, [&] { return m.stop || m.n_waiting() > 0; });
    if (m.stop) return;
    // Gather: the previous step's sequences normally resubmit within a sampling time.
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(gather);
    m.wake.wait_until(lock, deadline, [&] {
      return m.stop || m.expected_all_waiting() ||
             static_cast<int64_t>(m.n_waiting()) >= options_.max_batch;
    });
    if (m.stop) return;
    // Whoever did not come back in time is no longer waited for (until it runs again).
    for (auto& [id, s] : m.seqs) {
      if (!Impl::waiting(s)) s.expected = false;
    }

    // Pick: oldest requests first, at most max_batch; prompt tokens within the chunk budget.
    std::vector<std::pair<uint64_t, int64_t>> order;  // (arrival, sequence id)
    for (auto& [id, s] : m.seqs) {
      if (Impl::waiting(s)) order.emplace_back(s.request->order, id);
    }
    std::sort(order.begin(), order.end());
    int64_t budget = options_.prefill_chunk > 0 ? options_.prefill_chunk : INT64_MAX;
    std::vector<int64_t> chosen;
    std::vector<BatchItem> items;
    for (const auto& [arrival, id] : order) {
      if (static_cast<int64_t>(items.size()) >= options_.max_batch) break;
      Request& r = *m.seqs[id].request;
      const int64_t rest = static_cast<int64_t>(r.ids->size()) - r.done;
      int64_t take = rest;
      if (rest > 1) {
        if (budget <= 0) continue;
        take = std::min(rest, budget);
        budget -= take;
      }
      BatchItem it;
      it.ids = r.ids->data() + r.done;
      it.n_ids = take;
      it.cache = r.cache;
      it.logits = r.done + take == static_cast<int64_t>(r.ids->size()) ? BatchItem::Logits::kLast
                                                                       : BatchItem::Logits::kNone;
      r.running = true;
      chosen.push_back(id);
      items.push_back(it);
    }
    if (items.empty()) continue;  // cannot happen: the oldest waiting request always fits

    lock.unlock();
    std::vector<at::Tensor> out;
    std::exception_ptr error;
    try {
      out = model_->forward_batch(items);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();

    ++m.steps;
    m.step_threads = at::get_num_threads();
    const int64_t B = static_cast<int64_t>(chosen.size());
    for (size_t i = 0; i < chosen.size(); ++i) {
      SeqSlot& s = m.seqs[chosen[i]];
      Request& r = *s.request;
      r.running = false;
      s.expected = true;
      s.stats.steps += 1;
      s.stats.tokens += items[i].n_ids;
      s.stats.batch_sum += B;
      s.stats.batch_max = std::max(s.stats.batch_max, B);
      s.stats.last_batch = B;
      if (error) {
        r.error = error;
        r.finished = true;
      } else {
        r.done += items[i].n_ids;
        if (r.done == static_cast<int64_t>(r.ids->size())) {
          r.logits = out[i];
          r.finished = true;
        } else if (s.cancel) {
          r.finished = true;  // the caller throws Cancelled; the cache keeps what ran
        }
      }
    }
    m.done.notify_all();
  }
}

Sequence::~Sequence() {
  auto& m = *scheduler_->impl_;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    m.seqs.erase(id_);
  }
  m.wake.notify_all();
}

at::Tensor Sequence::forward(const std::vector<int64_t>& ids, KvCache& cache) {
  scheduler_->model_->check_input(ids.data(), static_cast<int64_t>(ids.size()), cache);
  auto& m = *scheduler_->impl_;
  Request r;
  r.ids = &ids;
  r.cache = &cache;
  std::unique_lock<std::mutex> lock(m.mutex);
  SeqSlot& s = m.seqs.at(id_);
  r.order = m.next_order++;
  s.request = &r;
  m.wake.notify_all();
  m.done.wait(lock, [&] { return r.finished || (s.cancel && !r.running); });
  s.request = nullptr;
  s.cancel = false;
  m.wake.notify_all();  // the scheduler may be gathering and waiting for us
  if (r.error) std::rethrow_exception(r.error);
  if (r.logits.defined()) return r.logits;  // completed, even if a cancel came during the last step
  throw Cancelled();
}

void Sequence::cancel() {
  auto& m = *scheduler_->impl_;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    SeqSlot& s = m.seqs.at(id_);
    if (s.request) s.cancel = true;  // only a forward() in flight
  }
  m.done.notify_all();
}

void Sequence::idle() {
  auto& m = *scheduler_->impl_;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    m.seqs.at(id_).expected = false;
  }
  m.wake.notify_all();
}

Sequence::Stats Sequence::stats() const {
  auto& m = *scheduler_->impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  return m.seqs.at(id_).stats;
}

void Sequence::reset_stats() {
  auto& m = *scheduler_->impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  m.seqs.at(id_).stats = Stats{};
}

}  // namespace glmvoice::llm
