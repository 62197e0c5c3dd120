// Batched steps and the continuous-batching scheduler (issue 11): a conversation's logits do not
// depend on who else is in the batch (within 1e-4 of its solo run), greedy ids are identical,
// sequences join and leave mid-generation, prefill is chunked, max-batch holds, a cancelled or
// bad sequence stops alone.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "io/error.h"
#include "io/npy.h"
#include "llm/chatglm_model.h"
#include "llm/scheduler.h"
#include "test_support.h"

using namespace glmvoice;

namespace {

std::shared_ptr<const llm::LlmModel> tiny() {
  return llm::LlmModel::load({test::tiny_model_dir("llm", "tiny"), c10::Device(c10::kCPU), c10::kFloat});
}

llm::SchedulerOptions options(int64_t max_batch, int64_t prefill_chunk, double gather_ms) {
  llm::SchedulerOptions o;
  o.max_batch = max_batch;
  o.prefill_chunk = prefill_chunk;
  o.gather_ms = gather_ms;
  return o;
}

// Conversation `i`'s prompt: a common prefix, then its own speech tokens (lengths differ).
std::vector<int64_t> prompt(const llm::LlmModel& m, int i) {
  auto ids = m.tokenizer().encode("<|system|>\nbatch test<|user|>\n", true);
  const int64_t n_audio = m.tokenizer().n_audio();
  for (int t = 0; t < 5 + 9 * i; ++t) ids.push_back(m.tokenizer().audio_offset() + (t * 7 + i * 11) % n_audio);
  return ids;
}

struct Generation {
  std::vector<int64_t> ids;          // greedy ids
  std::vector<at::Tensor> logits;    // next-token logits before each id
};

// A greedy generation of `n` tokens; `fwd` is the model's forward or a Sequence's.
template <class Forward>
Generation generate(const llm::LlmModel& m, const std::vector<int64_t>& p, int n, Forward fwd) {
  Generation r;
  auto cache = m.new_cache();
  at::Tensor logits = fwd(p, cache);
  for (int s = 0; s < n; ++s) {
    r.logits.push_back(logits);
    r.ids.push_back(logits.argmax().item<int64_t>());
    logits = fwd(std::vector<int64_t>{r.ids.back()}, cache);
  }
  return r;
}

Generation solo(const llm::LlmModel& m, const std::vector<int64_t>& p, int n) {
  return generate(m, p, n, [&](const std::vector<int64_t>& ids, llm::KvCache& c) { return m.forward(ids, c); });
}

// Compares a batched run with the solo one: logits within 1e-4; an id flip only at a near-tie
// (printed with its margin, and then the runs are compared only up to the flip).
void expect_same(const Generation& solo_run, const Generation& batched, const std::string& what) {
  ASSERT_EQ(solo_run.ids.size(), batched.ids.size()) << what;
  double worst = 0;
  for (size_t s = 0; s < solo_run.ids.size(); ++s) {
    worst = std::max(worst, (solo_run.logits[s] - batched.logits[s]).abs().max().item<double>());
    if (solo_run.ids[s] != batched.ids[s]) {
      auto top = at::topk(solo_run.logits[s], 2);
      const double margin = (std::get<0>(top)[0] - std::get<0>(top)[1]).item<double>();
      std::printf("%s: greedy flip at step %zu, solo top-2 margin %.3g\n", what.c_str(), s, margin);
      EXPECT_LT(margin, 1e-4) << what << ": a flip that is not a near-tie";
      break;
    }
  }
  EXPECT_LT(worst, 1e-4) << what;
  EXPECT_EQ(solo_run.ids, batched.ids) << what;
}

}  // namespace

// forward_batch itself (no threads): decodes and prefill chunks of different lengths in one step.
TEST(BatchedStep, ragged_batch_equals_solo_forwards) {
  auto m = tiny();
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < 5; ++i) prompts.push_back(prompt(*m, i));
  std::vector<llm::KvCache> solo_c, batch_c;
  for (int i = 0; i < 5; ++i) solo_c.push_back(m->new_cache()), batch_c.push_back(m->new_cache());
  // Sequences 0..2 already prefilled; 3 and 4 prefill in this step (one of them all positions).
  for (int i = 0; i < 3; ++i) m->forward(prompts[i], solo_c[i]), m->forward(prompts[i], batch_c[i]);
  const std::vector<int64_t> one = {m->tokenizer().audio_offset() + 3};
  std::vector<llm::BatchItem> items(5);
  std::vector<at::Tensor> want(5);
  for (int i = 0; i < 5; ++i) {
    const auto& ids = i < 3 ? one : prompts[i];
    items[i].ids = ids.data();
    items[i].n_ids = static_cast<int64_t>(ids.size());
    items[i].cache = &batch_c[i];
    items[i].logits = i == 4 ? llm::BatchItem::Logits::kAll : llm::BatchItem::Logits::kLast;
    want[i] = m->forward(ids, solo_c[i], i == 4);
  }
  const auto got = m->forward_batch(items);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(got[i].sizes(), want[i].sizes()) << i;
    EXPECT_LT((got[i] - want[i]).abs().max().item<double>(), 1e-5) << i;
    EXPECT_EQ(batch_c[i].length, solo_c[i].length);
  }
  // An intermediate chunk asks for no logits; a bad item throws before any cache moves.
  items.resize(1);
  items[0].logits = llm::BatchItem::Logits::kNone;
  EXPECT_FALSE(m->forward_batch(items)[0].defined());
  const int64_t len0 = batch_c[0].length;
  const std::vector<int64_t> bad = {m->config().padded_vocab_size};
  llm::BatchItem b2;
  b2.ids = bad.data();
  b2.n_ids = 1;
  b2.cache = &batch_c[1];
  items.push_back(b2);
  EXPECT_THROW(m->forward_batch(items), Error);
  EXPECT_EQ(batch_c[0].length, len0);
}

// 8 conversations from 8 threads through one scheduler: each equals its solo run.
void batch_invariance(std::shared_ptr<const llm::LlmModel> m, const std::vector<std::vector<int64_t>>& prompts,
                      int n, const std::string& name) {
  const size_t N = prompts.size();
  std::vector<Generation> want(N), got(N);
  for (size_t i = 0; i < N; ++i) want[i] = solo(*m, prompts[i], n);
  auto sched = llm::Scheduler::create(m, options(8, 32, 50));
  std::vector<std::thread> threads;
  std::vector<llm::Sequence::Stats> stats(N);
  for (size_t i = 0; i < N; ++i) {
    threads.emplace_back([&, i] {
      auto seq = sched->join();
      got[i] = generate(*m, prompts[i], n,
                        [&](const std::vector<int64_t>& ids, llm::KvCache& c) { return seq->forward(ids, c); });
      stats[i] = seq->stats();
      seq->idle();
    });
  }
  for (auto& t : threads) t.join();
  int64_t batch_max = 0;
  for (size_t i = 0; i < N; ++i) {
    expect_same(want[i], got[i], name + " conversation " + std::to_string(i));
    batch_max = std::max(batch_max, stats[i].batch_max);
    EXPECT_LE(stats[i].batch_max, 8);
  }
  std::printf("%s: %zu conversations, %lld steps, largest batch %lld\n", name.c_str(), N, (long long)sched->steps(),
              (long long)batch_max);
  EXPECT_GT(batch_max, 1) << "the conversations never shared a step";
}

TEST(Scheduler, batch_invariance_tiny) {
  auto m = tiny();
  std::vector<std::vector<int64_t>> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(prompt(*m, i));
  batch_invariance(m, prompts, 24, "tiny");
}

TEST(Scheduler, batch_invariance_fixture_prompt) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string fx = test::fixtures_dir();
  auto m = llm::LlmModel::load({fx + "/models/tiny-a/llm", c10::Device(c10::kCPU), c10::kFloat});
  at::Tensor t = io::read_npy(fx + "/tiny-a/llm/prompt.input_ids.npy").to(at::kLong).flatten().contiguous();
  const std::vector<int64_t> ref(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  // The reference prompt beside 7 others (its prefixes of different lengths).
  std::vector<std::vector<int64_t>> prompts = {ref};
  for (int i = 1; i < 8; ++i) prompts.emplace_back(ref.begin(), ref.end() - 3 * i);
  batch_invariance(m, prompts, 40, "tiny-a");
  t = io::read_npy(fx + "/tiny-a/llm/fp32.greedy_ids.npy").to(at::kLong).flatten().contiguous();
  const std::vector<int64_t> ref_greedy(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  EXPECT_EQ(solo(*m, ref, 40).ids, ref_greedy);
}

// Conversations join and leave while others generate; the long-running one is undisturbed and
// the newcomer's long prompt is prefilled in chunks beside it.
// The scheduler thread keeps its own thread count when another thread changes the
// process-wide one before the scheduler's first step (torch's lazy per-thread init).
TEST(Scheduler, steps_run_on_the_configured_threads) {
  auto m = tiny();
  const int before = at::get_num_threads();
  llm::SchedulerOptions o = options(2, 16, 5);
  o.threads = 2;
  auto sched = llm::Scheduler::create(m, o);
  std::thread other([] { at::set_num_threads(1); });
  other.join();
  auto seq = sched->join();
  auto cache = m->new_cache();
  seq->forward(prompt(*m, 1), cache);
  EXPECT_EQ(sched->step_threads(), 2);
  at::set_num_threads(before);
}

TEST(Scheduler, join_and_leave_mid_generation) {
  auto m = tiny();
  const auto p0 = prompt(*m, 1), p1 = prompt(*m, 2);
  auto p2 = prompt(*m, 3);
  for (int i = 0; i < 80; ++i) p2.push_back(m->tokenizer().audio_offset() + i % 64);  // long prompt
  const Generation want0 = solo(*m, p0, 60), want1 = solo(*m, p1, 10), want2 = solo(*m, p2, 10);
  auto sched = llm::Scheduler::create(m, options(4, 16, 50));
  std::atomic<int> progress{0};
  Generation got0, got1, got2;
  llm::Sequence::Stats s2;
  std::thread t0([&] {
    auto seq = sched->join();
    got0 = generate(*m, p0, 60, [&](const std::vector<int64_t>& ids, llm::KvCache& c) {
      ++progress;
      return seq->forward(ids, c);
    });
  });
  auto wait_for = [&](int n) {
    while (progress.load() < n) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  wait_for(10);
  std::thread t1([&] {  // joins at step ~10, leaves after 10 tokens
    auto seq = sched->join();
    got1 = generate(*m, p1, 10, [&](const std::vector<int64_t>& ids, llm::KvCache& c) { return seq->forward(ids, c); });
  });
  t1.join();
  wait_for(30);
  std::thread t2([&] {  // joins later with a long prompt
    auto seq = sched->join();
    got2 = generate(*m, p2, 10, [&](const std::vector<int64_t>& ids, llm::KvCache& c) { return seq->forward(ids, c); });
    s2 = seq->stats();
  });
  t2.join();
  t0.join();
  expect_same(want0, got0, "long-running");
  expect_same(want1, got1, "joined and left");
  expect_same(want2, got2, "long prompt");
  // p2 (> 80 ids) took at least ceil(|p2| / 16) steps for its prompt, then 10 single-token steps.
  EXPECT_GE(s2.steps, static_cast<int64_t>((p2.size() + 15) / 16) + 10);
  EXPECT_EQ(s2.tokens, static_cast<int64_t>(p2.size()) + 10);
}

TEST(Scheduler, bad_input_and_cancel_stop_only_that_sequence) {
  auto m = tiny();
  auto sched = llm::Scheduler::create(m, options(8, 4, 5));
  const auto p = prompt(*m, 4);
  const Generation want = solo(*m, p, 30);
  Generation got;
  std::thread good([&] {
    auto seq = sched->join();
    got = generate(*m, p, 30, [&](const std::vector<int64_t>& ids, llm::KvCache& c) { return seq->forward(ids, c); });
  });
  {
    auto bad = sched->join();
    auto cache = m->new_cache();
    EXPECT_THROW(bad->forward({m->config().padded_vocab_size}, cache), Error);
    std::vector<int64_t> too_long(static_cast<size_t>(m->config().seq_length + 1), 5);
    EXPECT_THROW(bad->forward(too_long, cache), Error);
    EXPECT_EQ(cache.length, 0);
    // A long prefill in chunks of 4 is cancelled from another thread.
    std::vector<int64_t> longp(400, m->tokenizer().audio_offset() + 1);
    std::thread canceller([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      bad->cancel();
    });
    bool cancelled = false;
    try {
      bad->forward(longp, cache);
    } catch (const llm::Cancelled&) {
      cancelled = true;
    }
    canceller.join();
    EXPECT_TRUE(cancelled);
    EXPECT_LT(cache.length, 400);
    // The sequence works again afterwards (a cancel with nothing in flight does nothing).
    bad->cancel();
    cache.truncate(0);
    EXPECT_EQ(bad->forward(p, cache).sizes(), (at::IntArrayRef{m->config().padded_vocab_size}));
  }
  good.join();
  expect_same(want, got, "undisturbed");
}
