// Continuous batching for one loaded LlmModel: many conversations share each forward step.
//
// Decoding is memory-bound (a step reads every weight once), so one step for 8 sequences costs
// little more than one for 1. A Scheduler owns one thread; each conversation joins with a
// Sequence and calls Sequence::forward() from its own thread exactly as it would call
// LlmModel::forward(): the call blocks while the scheduler thread runs batched steps
// (LlmModel::forward_batch) holding this request beside the other sequences' requests, and
// returns this sequence's logits. Sampling stays with the caller (its own settings and seed).
//
//   auto sched = llm::Scheduler::create(model, options);  // options.max_batch = 8, …
//   auto seq = sched->join();                      // one per conversation
//   KvCache cache = model->new_cache();
//   at::Tensor logits = seq->forward(ids, cache);  // [V] f32, as model->forward(ids, cache)
//   seq->idle();                                   // turn over: others need not wait for us
//
// Scheduling: a step starts when every sequence of the previous step has submitted again (or
// `gather_ms` after the first waiting request, so a slow caller never stalls the others for
// long), or when `max_batch` requests wait. Requests are served first come, first served, at
// most `max_batch` per step. A long prompt is split: at most `prefill_chunk` prompt tokens per
// step over all sequences, so a new caller's prefill never stalls the decoding ones for long;
// single tokens (decode steps) always go in. Sequences join and leave between steps.
//
// Results do not depend on the batch: the linear layers run over all rows at once and attention
// per sequence on its own cache, so a sequence's logits equal its solo run within fp32
// rounding (tests/lib/llm/test_llm_scheduler.cpp).
//
// Thread-safety: Scheduler and Sequence methods may be called from any thread; one
// Sequence serves one conversation (one forward() at a time); cancel() may come from
// another thread. The KvCache passed to forward() must not be touched by the caller until
// forward() returns.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "llm/chatglm_model.h"

namespace glmvoice::llm {

struct SchedulerOptions {
  int64_t max_batch = 8;        // most sequences in one step (>= 1)
  int64_t prefill_chunk = 64;   // most prompt tokens per step, over all sequences (<= 0: no limit)
  double gather_ms = 5.0;       // longest wait for the previous step's sequences to resubmit
  int threads = 0;              // intra-op threads of the scheduler thread (0: the creator's)
};

// Thrown by Sequence::forward() when Sequence::cancel() stopped it. The cache then holds the
// ids of the chunks that ran (cache.length tells how many).
class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("llm forward cancelled") {}
};

class Scheduler;

class Sequence {
 public:
  struct Stats {
    int64_t steps = 0;       // batched steps this sequence took part in
    int64_t tokens = 0;      // ids it fed
    int64_t batch_sum = 0;   // sum over those steps of the number of sequences in the step
    int64_t batch_max = 0;
    int64_t last_batch = 0;
    double mean_batch() const { return steps ? static_cast<double>(batch_sum) / steps : 0.0; }
  };

  ~Sequence();  // leaves the scheduler (no forward() may be running)
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  // As LlmModel::forward(ids, cache) (last-position logits [V] f32 CPU), run in the scheduler's
  // batched steps. Blocks. Throws what LlmModel::check_input throws (before anything runs),
  // Cancelled after cancel(), or the step's error.
  at::Tensor forward(const std::vector<int64_t>& ids, KvCache& cache);
  // Makes a forward() in flight throw Cancelled: at once if its request waits, after the
  // running step otherwise (if that step completes the request, forward() returns normally).
  // No effect when no forward() is in flight.
  void cancel();
  // This sequence will not submit for a while (its turn is over): steps stop waiting for it.
  void idle();

  Stats stats() const;
  void reset_stats();

 private:
  friend class Scheduler;
  Sequence(std::shared_ptr<const Scheduler> scheduler, int64_t id) : scheduler_(std::move(scheduler)), id_(id) {}
  std::shared_ptr<const Scheduler> scheduler_;
  int64_t id_;
};

class Scheduler : public std::enable_shared_from_this<Scheduler> {
 public:
  static std::shared_ptr<Scheduler> create(std::shared_ptr<const LlmModel> model, SchedulerOptions options = {});
  ~Scheduler();  // stops the thread (every Sequence holds the scheduler, so none is left)
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // A new sequence (const: a scheduler shared as const, e.g. from a model cache, still serves).
  std::unique_ptr<Sequence> join() const;
  const LlmModel& model() const { return *model_; }
  const std::shared_ptr<const LlmModel>& model_ptr() const { return model_; }
  const SchedulerOptions& options() const { return options_; }
  int64_t steps() const;  // batched steps run so far
  int step_threads() const;  // intra-op threads the last step ran on (options().threads)

 private:
  friend class Sequence;
  struct Impl;
  Scheduler(std::shared_ptr<const LlmModel> model, SchedulerOptions options);
  void run();

  std::shared_ptr<const LlmModel> model_;
  SchedulerOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace glmvoice::llm
