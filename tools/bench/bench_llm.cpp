// glmvoice-bench llm: prefill and decode speed of the ChatGLM model with the KV cache.
//
//   glmvoice-bench llm [--configs tiny,mid] [--model DIR] [--prompt 128,448] [--decode 64]
//                      [--device cpu] [--dtype float32] [--threads N] [--dir DIR] [--repeat 2]
//                      [--concurrent 1,2,4,8,16 [--concurrent-prompt 64] [--max-batch N]]
//
// Configs are the glmvoice-mkmodel ones (lib/llm/tiny_model.h): `tiny` (hidden 64, 2 layers)
// and `mid` (hidden 1024, 8 layers, 8 heads x 128, 2 KV groups, ffn 3424, the real
// 168960-row vocabulary; random weights), written once into DIR (default
// /tmp/glmvoice-bench-llm/<config>; mid is ~0.9 GB), and `real-9b`: GLM-4-Voice-9B's shapes
// with random weights made in memory on the device (no file; for a GPU, scripts/gpu-check.sh).
// --model benchmarks an existing checkpoint.
// Prefill: one forward of P prompt tokens into an empty cache (ms/token = time / P).
// Decode: D single-token steps after the prompt, each with the greedy argmax (ms/token).
// Real time needs >= 18.75 tokens/s (39 tokens per 2.08 s of speech, spec llm.md §6.4).
//
// --concurrent 1,2,4,8,16 (issue 11): for each N, N calls decode at once (--decode tokens each
// after a --concurrent-prompt-token prompt, default 64) through one llm::Scheduler (batched
// steps, --max-batch, default N), next to N independent batch-1 streams (one thread each, the
// --threads budget split between them: today's one-forward-per-element). One line per N:
//   concurrent N: aggregate X tok/s, per call Y tok/s | independent: aggregate X tok/s, per call Y tok/s
// then how many calls stay real time (>= 18.75 tokens/s each) in each mode. "per CPU second"
// (decoded tokens / process CPU time) is the cost side, robust to a box shared with other jobs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include <sys/resource.h>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cli/args.h"
#include "bench.h"
#include "llm/chatglm_model.h"
#include "llm/scheduler.h"
#include "llm/tiny_model.h"
#include "runtime/options.h"

namespace glmvoice::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


// `real-9b` is made in memory (LlmModel::load_random); everything else is loaded from its files.
std::shared_ptr<const llm::LlmModel> load_model(const std::string& label, const ModelOptions& options) {
  return label == "real-9b" ? llm::LlmModel::load_random(options, 0) : llm::LlmModel::load(options);
}

void bench_model(const std::string& label, const ModelOptions& options, const std::vector<int64_t>& prompts,
                 int64_t decode, int repeat) {
  auto t0 = Clock::now();
  const auto model = load_model(label, options);
  const double load_ms = ms_since(t0);
  const auto& c = model->config();
  std::printf("%s: %s, %lld layers, hidden %lld, heads %lld x %lld, kv groups %lld, ffn %lld, vocab %lld, "
              "%.1f M params, %s on %s (load %.0f ms)\n",
              label.c_str(), options.path.c_str(), (long long)c.num_layers, (long long)c.hidden_size,
              (long long)c.num_attention_heads, (long long)c.head_dim(), (long long)c.multi_query_group_num,
              (long long)c.ffn_hidden_size, (long long)c.padded_vocab_size, model->parameter_count() / 1e6,
              runtime::dtype_name(options.dtype).c_str(), options.device.str().c_str(), load_ms);
  const int64_t vocab_tokens = model->tokenizer().n_ranks();
  for (int64_t p : prompts) {
    if (p + decode > c.seq_length) {
      std::printf("  prompt %lld + decode %lld exceeds seq_length %lld: skipped\n", (long long)p, (long long)decode,
                  (long long)c.seq_length);
      continue;
    }
    std::vector<int64_t> ids(static_cast<size_t>(p));
    for (int64_t i = 0; i < p; ++i) ids[static_cast<size_t>(i)] = (i * 7919) % vocab_tokens;
    double best_prefill = 1e300, best_decode = 1e300;
    for (int r = 0; r < repeat; ++r) {
      auto cache = model->new_cache();
      t0 = Clock::now();
      at::Tensor logits = model->forward(ids, cache);
      const double prefill = ms_since(t0);
      t0 = Clock::now();
      for (int64_t i = 0; i < decode; ++i) {
        const int64_t next = logits.argmax().item<int64_t>();
        logits = model->forward({next}, cache);
      }
      const double dec = ms_since(t0);
      best_prefill = std::min(best_prefill, prefill);
      best_decode = std::min(best_decode, dec);
    }
    const double dec_per = best_decode / static_cast<double>(std::max<int64_t>(decode, 1));
    std::printf("  prompt %5lld: prefill %9.1f ms = %7.3f ms/token | decode %lld tokens: %7.3f ms/token = %7.1f tokens/s%s\n",
                (long long)p, best_prefill, best_prefill / static_cast<double>(p), (long long)decode, dec_per,
                1000.0 / dec_per, 1000.0 / dec_per >= 18.75 ? " (real time)" : " (slower than real time)");
  }
}

// Releases all waiting threads once `n` have arrived.
class Barrier {
 public:
  explicit Barrier(size_t n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (++count_ == n_) {
      cond_.notify_all();
      return;
    }
    cond_.wait(lock, [&] { return count_ >= n_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cond_;
  size_t n_, count_ = 0;
};

// CPU seconds used by this process so far (all threads).
double process_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

struct ConcurrentResult {
  double aggregate = 0;  // decoded tokens of all calls / wall time of the decode phase
  double per_cpu_s = 0;  // decoded tokens of all calls / CPU seconds of the decode phase
  double per_call = 0;   // the slowest call's tokens/s
  double mean_batch = 0;
};

// N calls, each: prefill `prompt` ids, then `decode` greedy steps; timed from the moment all
// have prefilled. `batched`: through one Scheduler; else N batch-1 streams on their own threads.
ConcurrentResult run_concurrent(const std::shared_ptr<const llm::LlmModel>& model, int64_t n, int64_t prompt,
                                int64_t decode, bool batched, int64_t max_batch, int threads) {
  const int64_t vocab_tokens = model->tokenizer().n_ranks();
  std::shared_ptr<llm::Scheduler> sched;
  if (batched) {
    llm::SchedulerOptions o;
    o.max_batch = max_batch > 0 ? max_batch : n;
    o.threads = threads;
    sched = llm::Scheduler::create(model, o);
  }
  Barrier ready(static_cast<size_t>(n) + 1);
  std::atomic<bool> go{false};
  std::vector<double> call_ms(static_cast<size_t>(n));
  std::vector<double> mean_batch(static_cast<size_t>(n));
  std::vector<std::thread> calls;
  for (int64_t c = 0; c < n; ++c) {
    calls.emplace_back([&, c] {
      c10::InferenceMode guard;
      // Independent streams split the threads; batched callers only pick the next id (an
      // OpenMP team of their own would spin beside the scheduler's on the same cores).
      at::set_num_threads(sched ? 1 : std::max(1, threads / static_cast<int>(n)));
      std::unique_ptr<llm::Sequence> seq = sched ? sched->join() : nullptr;
      auto fwd = [&](const std::vector<int64_t>& ids, llm::KvCache& cache) {
        return seq ? seq->forward(ids, cache) : model->forward(ids, cache);
      };
      std::vector<int64_t> ids(static_cast<size_t>(prompt));
      for (int64_t i = 0; i < prompt; ++i) ids[static_cast<size_t>(i)] = (i * 7919 + c * 104729) % vocab_tokens;
      auto cache = model->new_cache();
      at::Tensor logits = fwd(ids, cache);
      if (seq) seq->idle();
      ready.arrive_and_wait();
      while (!go.load()) std::this_thread::yield();
      if (seq) seq->reset_stats();
      const auto t0 = Clock::now();
      for (int64_t i = 0; i < decode; ++i) logits = fwd({logits.argmax().item<int64_t>()}, cache);
      call_ms[static_cast<size_t>(c)] = ms_since(t0);
      if (seq) {
        mean_batch[static_cast<size_t>(c)] = seq->stats().mean_batch();
        seq->idle();
      }
    });
  }
  ready.arrive_and_wait();
  const auto t0 = Clock::now();
  const double cpu0 = process_cpu_s();
  go = true;
  for (auto& t : calls) t.join();
  const double wall = ms_since(t0);
  const double cpu = process_cpu_s() - cpu0;
  ConcurrentResult r;
  r.aggregate = static_cast<double>(n * decode) * 1000.0 / wall;
  r.per_cpu_s = static_cast<double>(n * decode) / std::max(cpu, 1e-9);
  r.per_call = static_cast<double>(decode) * 1000.0 / *std::max_element(call_ms.begin(), call_ms.end());
  for (double b : mean_batch) r.mean_batch += b / static_cast<double>(n);
  return r;
}

void bench_concurrent(const std::string& label, const ModelOptions& options, const std::vector<int64_t>& ns,
                      int64_t prompt, int64_t decode, int64_t max_batch) {
  const auto model = load_model(label, options);
  const int threads = at::get_num_threads();
  std::printf("%s: concurrent calls, prompt %lld, %lld decode tokens each, %d threads, max-batch %s\n",
              label.c_str(), (long long)prompt, (long long)decode, threads,
              max_batch > 0 ? std::to_string(max_batch).c_str() : "N");
  std::fflush(stdout);
  run_concurrent(model, 1, prompt, 4, true, max_batch, threads);  // warm-up
  int64_t rt_batched = 0, rt_independent = 0;
  double solo = 0;
  for (int64_t n : ns) {
    const auto b = run_concurrent(model, n, prompt, decode, true, max_batch, threads);
    const auto i = run_concurrent(model, n, prompt, decode, false, max_batch, threads);
    if (n == 1 || solo == 0) solo = b.per_call;
    std::printf("concurrent %lld: aggregate %.1f tok/s, per call %.1f tok/s | independent: aggregate %.1f tok/s, "
                "per call %.1f tok/s | mean batch %.2f, aggregate x%.2f of one call, per call %.0f %% of one call | "
                "per CPU second: %.1f tok batched, %.1f tok independent\n",
                (long long)n, b.aggregate, b.per_call, i.aggregate, i.per_call, b.mean_batch, b.aggregate / solo,
                100.0 * b.per_call / solo, b.per_cpu_s, i.per_cpu_s);
    std::fflush(stdout);
    if (b.per_call >= 18.75) rt_batched = std::max(rt_batched, n);
    if (i.per_call >= 18.75) rt_independent = std::max(rt_independent, n);
  }
  std::printf("%s: real time (>= 18.75 tok/s per call) up to %lld concurrent calls batched, %lld independent "
              "(of the N measured)\n",
              label.c_str(), (long long)rt_batched, (long long)rt_independent);
}

}  // namespace

int bench_llm(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {});
  args.check_known({"configs", "model", "prompt", "decode", "device", "dtype", "threads", "dir", "repeat",
                    "concurrent", "concurrent-prompt", "max-batch"});
  if (args.has("threads")) at::set_num_threads(static_cast<int>(args.get_int("threads", 1)));
  const std::string dir = args.get("dir", "/tmp/glmvoice-bench-llm");
  std::vector<int64_t> prompts;
  for (const auto& p : split_list(args.get("prompt", "128,448"))) prompts.push_back(std::stoll(p));
  const int64_t decode = args.get_int("decode", 64);
  const int repeat = static_cast<int>(args.get_int("repeat", 2));
  ModelOptions options;
  options.device = runtime::parse_device(args.get("device", "cpu"));
  options.dtype = runtime::parse_dtype(args.get("dtype", "float32"));
  std::vector<int64_t> concurrent;
  for (const auto& n : split_list(args.get("concurrent", ""))) concurrent.push_back(std::stoll(n));
  const int64_t concurrent_prompt = args.get_int("concurrent-prompt", 64);
  const int64_t max_batch = args.get_int("max-batch", 0);
  auto run = [&](const std::string& label) {
    if (concurrent.empty()) {
      bench_model(label, options, prompts, decode, repeat);
    } else {
      bench_concurrent(label, options, concurrent, concurrent_prompt, decode, max_batch);
    }
  };
  std::printf("glmvoice-bench llm: %d threads, best of %d\n", at::get_num_threads(), repeat);
  if (args.has("model")) {
    options.path = args.get("model");
    run("model");
    return 0;
  }
  for (const auto& config : split_list(args.get("configs", "tiny,mid"))) {
    options.path = (fs::path(dir) / config).string();
    if (!fs::exists(fs::path(options.path) / "config.json")) {
      std::printf("writing %s checkpoint to %s ...\n", config.c_str(), options.path.c_str());
      std::fflush(stdout);
      if (config == "real-9b") {
        write_real_llm_config(options.path);
      } else {
        llm::write_tiny_llm(options.path, config, 0);
      }
    }
    run(config);
  }
  return 0;
}

}  // namespace glmvoice::tools
