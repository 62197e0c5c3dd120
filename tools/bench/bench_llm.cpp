// glmvoice-bench llm: prefill and decode speed of the ChatGLM model with the KV cache.
//
//   glmvoice-bench llm [--configs tiny,mid] [--model DIR] [--prompt 128,448] [--decode 64]
//                      [--device cpu] [--dtype float32] [--threads N] [--dir DIR] [--repeat 2]
//
// Configs are the glmvoice-mkmodel ones (lib/llm/tiny_model.h): `tiny` (hidden 64, 2 layers)
// and `mid` (hidden 1024, 8 layers, 8 heads x 128, 2 KV groups, ffn 3424, the real
// 168960-row vocabulary; random weights), written once into DIR (default
// /tmp/glmvoice-bench-llm/<config>; mid is ~0.9 GB). --model benchmarks an existing checkpoint.
// Prefill: one forward of P prompt tokens into an empty cache (ms/token = time / P).
// Decode: D single-token steps after the prompt, each with the greedy argmax (ms/token).
// Real time needs >= 18.75 tokens/s (39 tokens per 2.08 s of speech, spec llm.md §6.4).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cli/args.h"
#include "bench.h"
#include "llm/chatglm_model.h"
#include "llm/tiny_model.h"
#include "runtime/options.h"

namespace glmvoice::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void bench_model(const std::string& label, const ModelOptions& options, const std::vector<int64_t>& prompts,
                 int64_t decode, int repeat) {
  auto t0 = Clock::now();
  const auto model = llm::LlmModel::load(options);
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

}  // namespace

int bench_llm(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {});
  args.check_known({"configs", "model", "prompt", "decode", "device", "dtype", "threads", "dir", "repeat"});
  if (args.has("threads")) at::set_num_threads(static_cast<int>(args.get_int("threads", 1)));
  const std::string dir = args.get("dir", "/tmp/glmvoice-bench-llm");
  std::vector<int64_t> prompts;
  for (const auto& p : split(args.get("prompt", "128,448"))) prompts.push_back(std::stoll(p));
  const int64_t decode = args.get_int("decode", 64);
  const int repeat = static_cast<int>(args.get_int("repeat", 2));
  ModelOptions options;
  options.device = runtime::parse_device(args.get("device", "cpu"));
  options.dtype = runtime::parse_dtype(args.get("dtype", "float32"));
  std::printf("glmvoice-bench llm: %d threads, best of %d\n", at::get_num_threads(), repeat);
  if (args.has("model")) {
    options.path = args.get("model");
    bench_model("model", options, prompts, decode, repeat);
    return 0;
  }
  for (const auto& config : split(args.get("configs", "tiny,mid"))) {
    options.path = (fs::path(dir) / config).string();
    if (!fs::exists(fs::path(options.path) / "config.json")) {
      std::printf("writing %s checkpoint to %s ...\n", config.c_str(), options.path.c_str());
      std::fflush(stdout);
      llm::write_tiny_llm(options.path, config, 0);
    }
    bench_model(config, options, prompts, decode, repeat);
  }
  return 0;
}

}  // namespace glmvoice::tools
