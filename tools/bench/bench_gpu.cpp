// glmvoice-bench dtypes: the LLM in several weight formats side by side, in one run.
//
//   glmvoice-bench dtypes [--config mid | --real] [--model DIR] [--dtypes float32,bfloat16,int8,int4]
//                         [--device cpu|cuda] [--prompt 128] [--decode 32] [--repeat 2]
//                         [--threads N] [--dir DIR] [--json FILE] [--small-ops-ab]
//
// Per dtype: load time and weight memory, prefill ms/token, decode ms/token at batch 1, and
// the decode bandwidth floor (weight bytes read per token / measured memory read bandwidth;
// the bandwidth is measured again after every dtype, and a last line gives each decode's ratio
// to the floor at the best bandwidth seen in the run: on a shared box it swings 25-35 GB/s);
// against the bfloat16 row: max logits error over the prompt and how many greedy ids stay
// identical. `--config` is a glmvoice-mkmodel config written into DIR (default mid);
// `--real` builds the real GLM-4-Voice-9B shapes (40 layers, hidden 4096, ffn 13696, 32 heads,
// 2 KV groups, 168960 rows) with random weights made on the device in memory: no checkpoint
// file (what scripts/gpu-check.sh runs on a GPU). `--json` writes the rows. `--small-ops-ab`
// (CPU): the repeats alternate the decode step's small ops between libtorch and the plain loops
// of cpu_decode_ops.h (GLMVOICE_CPU_SMALL_OPS), 2 x --repeat rounds, and prints both bests.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <ATen/DeviceAccelerator.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../cli/args.h"
#include "bench.h"
#include "llm/chatglm_model.h"
#include "llm/cpu_decode_ops.h"
#include "llm/tiny_model.h"
#include "runtime/options.h"

namespace glmvoice::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


void sync(const c10::Device& device, const at::Tensor& t) {
  if (device.is_cuda()) (void)t.sum().item<double>();  // waits for the queued kernels
}

// Resident memory of this process (CPU) or the allocator's bytes in use (CUDA), in bytes.
double memory_in_use(const c10::Device& device) {
  if (device.is_cuda()) {  // the caching allocator's live bytes, no CUDA headers needed
    return static_cast<double>(at::accelerator::getDeviceStats(device.index()).allocated_bytes[0].current);
  }
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) * 1024.0;
  }
  return 0;
}

// Memory read bandwidth, bytes/s: best of 5 full reductions of a 1 GiB tensor.
double read_bandwidth(const c10::Device& device) {
  at::Tensor x = at::ones({int64_t{1} << 28}, at::TensorOptions().dtype(at::kFloat).device(device));
  double best = 1e300;
  for (int i = 0; i < 5; ++i) {
    sync(device, x);
    auto t0 = Clock::now();
    at::Tensor s = x.sum();
    sync(device, s);
    best = std::min(best, ms_since(t0));
  }
  return static_cast<double>(x.numel() * 4) / (best / 1000.0);
}

struct Row {
  std::string dtype;
  double load_ms = 0, weight_gb = 0, memory_gb = 0, prefill_ms = 0, decode_ms = 0, floor_ms = 0;
  double decode_libtorch_ms = -1;  // --small-ops-ab: best decode with libtorch's small ops
  double logits_err = -1;  // vs bfloat16, max abs over the prompt
  int64_t greedy_same = -1, greedy_n = 0;
  std::string error;
};

}  // namespace

// The real GLM-4-Voice-9B config (llm spec §1.2) in `dir`, beside the tiny tokenizer files.
void write_real_llm_config(const std::string& dir) {
  llm::write_tiny_llm(dir, "tiny", 0);
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors" || e.path().filename() == "model.safetensors.index.json") {
      fs::remove(e.path());
    }
  }
  const std::string path = (fs::path(dir) / "config.json").string();
  nlohmann::json j;
  {
    std::ifstream in(path);
    j = nlohmann::json::parse(in);
  }
  j["num_layers"] = 40;
  j["hidden_size"] = 4096;
  j["ffn_hidden_size"] = 13696;
  j["num_attention_heads"] = 32;
  j["kv_channels"] = 128;
  j["multi_query_group_num"] = 2;
  j["padded_vocab_size"] = 168960;
  j["seq_length"] = 8192;
  j["rope_ratio"] = 1;
  j["layernorm_epsilon"] = 1.5625e-07;
  j.erase("num_hidden_layers");
  std::ofstream(path) << j.dump(2);
}

int bench_dtypes(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {"real", "small-ops-ab"});
  args.check_known({"config", "real", "model", "dtypes", "device", "prompt", "decode", "repeat", "threads", "dir", "json", "small-ops-ab"});
  if (args.has("threads")) at::set_num_threads(static_cast<int>(args.get_int("threads", 1)));
  const c10::Device device = runtime::parse_device(args.get("device", "cpu"));
  const int64_t prompt = args.get_int("prompt", 128), decode = args.get_int("decode", 32);
  const int repeat = static_cast<int>(args.get_int("repeat", 2));
  const bool real = args.has("real");
  const bool small_ops_ab = args.has("small-ops-ab");
  std::string path = args.get("model", "");
  if (path.empty()) {
    const std::string config = real ? "real-9b-shapes" : args.get("config", "mid");
    path = (fs::path(args.get("dir", "/tmp/glmvoice-bench-llm")) / config).string();
    if (!fs::exists(fs::path(path) / "config.json")) {
      std::printf("writing %s into %s ...\n", config.c_str(), path.c_str());
      std::fflush(stdout);
      if (real) {
        write_real_llm_config(path);
      } else {
        llm::write_tiny_llm(path, config, 0);
      }
    }
  }
  const double bandwidth = read_bandwidth(device);
  double best_bandwidth = bandwidth;
  std::printf("glmvoice-bench dtypes: %s on %s, %d threads, memory read bandwidth %.1f GB/s, prompt %lld, decode %lld, "
              "best of %d%s\n",
              path.c_str(), device.str().c_str(), at::get_num_threads(), bandwidth / 1e9, (long long)prompt,
              (long long)decode, repeat, real ? ", random weights in memory" : "");

  std::vector<int64_t> ids;
  at::Tensor ref_logits;
  std::vector<int64_t> ref_greedy;
  std::vector<Row> rows;
  for (const auto& name : split_list(args.get("dtypes", "float32,bfloat16,int8,int4"))) {
    Row row;
    row.dtype = name;
    try {
      ModelOptions options{path, device, runtime::parse_dtype(name)};
      const double mem0 = memory_in_use(device);
      auto t0 = Clock::now();
      auto model = real ? llm::LlmModel::load_random(options, 0) : llm::LlmModel::load(options);
      row.load_ms = ms_since(t0);
      row.memory_gb = (memory_in_use(device) - mem0) / 1e9;
      row.weight_gb = static_cast<double>(model->weight_bytes_per_token()) / 1e9;
      row.floor_ms = static_cast<double>(model->weight_bytes_per_token()) / bandwidth * 1000.0;
      if (ids.empty()) {
        const int64_t n = model->tokenizer().n_ranks();
        for (int64_t i = 0; i < prompt; ++i) ids.push_back((i * 7919 + 13) % n);
      }
      row.prefill_ms = row.decode_ms = 1e300;
      at::Tensor prompt_logits;
      std::vector<int64_t> greedy;
      for (int r = 0; r < (small_ops_ab ? 2 * repeat : repeat); ++r) {
        const bool libtorch_ops = small_ops_ab && r % 2 == 0;  // the last round: the default
        llm::cpu::set_small_ops_enabled(!libtorch_ops);
        auto cache = model->new_cache();
        t0 = Clock::now();
        at::Tensor logits = model->forward(ids, cache);
        sync(device, logits);
        row.prefill_ms = std::min(row.prefill_ms, ms_since(t0) / static_cast<double>(prompt));
        greedy.clear();
        t0 = Clock::now();
        for (int64_t i = 0; i < decode; ++i) {
          greedy.push_back(logits.argmax().item<int64_t>());
          logits = model->forward({greedy.back()}, cache);
        }
        sync(device, logits);
        const double ms = ms_since(t0) / static_cast<double>(std::max<int64_t>(decode, 1));
        if (libtorch_ops) {
          row.decode_libtorch_ms = row.decode_libtorch_ms < 0 ? ms : std::min(row.decode_libtorch_ms, ms);
        } else {
          row.decode_ms = std::min(row.decode_ms, ms);
        }
      }
      llm::cpu::set_small_ops_enabled(true);
      {
        auto cache = model->new_cache();
        prompt_logits = model->forward(ids, cache, true).to(at::kCPU);
      }
      if (name == "bfloat16" || name == "bf16") {
        ref_logits = prompt_logits;
        ref_greedy = greedy;
      } else if (ref_logits.defined()) {
        row.logits_err = (prompt_logits - ref_logits).abs().max().item<double>();
        row.greedy_same = 0;
        while (row.greedy_same < static_cast<int64_t>(greedy.size()) && greedy[row.greedy_same] == ref_greedy[row.greedy_same]) {
          ++row.greedy_same;
        }
        row.greedy_n = static_cast<int64_t>(greedy.size());
      }
    } catch (const std::exception& e) {
      row.error = e.what();
    }
    if (row.error.empty()) {
      std::printf("  %-9s load %8.0f ms, weights %6.2f GB (memory +%6.2f GB) | prefill %8.3f ms/token | decode %8.3f "
                  "ms/token = %6.1f tokens/s, floor %7.3f ms (x%.2f)",
                  name.c_str(), row.load_ms, row.weight_gb, row.memory_gb, row.prefill_ms, row.decode_ms,
                  1000.0 / row.decode_ms, row.floor_ms, row.decode_ms / row.floor_ms);
      if (row.decode_libtorch_ms > 0) {
        std::printf(" | libtorch small ops %.3f ms/token (x%.2f)", row.decode_libtorch_ms, row.decode_libtorch_ms / row.floor_ms);
      }
      if (row.logits_err >= 0) {
        std::printf(" | vs bf16: logits max err %.3g, greedy %lld/%lld same", row.logits_err, (long long)row.greedy_same,
                    (long long)row.greedy_n);
      }
      std::printf("\n");
    } else {
      std::printf("  %-9s %s\n", name.c_str(), row.error.c_str());
    }
    std::fflush(stdout);
    rows.push_back(row);
    best_bandwidth = std::max(best_bandwidth, read_bandwidth(device));
  }
  std::printf("  decode / floor at the run's best bandwidth (%.1f GB/s):", best_bandwidth / 1e9);
  for (const auto& r : rows) {
    if (!r.error.empty()) continue;
    std::printf(" %s x%.2f", r.dtype.c_str(), r.decode_ms / (r.floor_ms * bandwidth / best_bandwidth));
  }
  std::printf("\n");
  const Row* bf16 = nullptr;
  for (const auto& r : rows) {
    if ((r.dtype == "bfloat16" || r.dtype == "bf16") && r.error.empty()) bf16 = &r;
  }
  if (bf16 != nullptr) {
    for (const auto& r : rows) {
      if (r.error.empty() && &r != bf16) {
        std::printf("  %-9s decode time / bf16 = %.2f\n", r.dtype.c_str(), r.decode_ms / bf16->decode_ms);
      }
    }
  }
  if (args.has("json")) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : rows) {
      nlohmann::json j = {{"dtype", r.dtype}, {"device", device.str()}};
      if (!r.error.empty()) {
        j["error"] = r.error;
      } else {
        j.update({{"load_ms", r.load_ms}, {"weight_gb", r.weight_gb}, {"memory_gb", r.memory_gb},
                  {"prefill_ms_per_token", r.prefill_ms}, {"decode_ms_per_token", r.decode_ms},
                  {"decode_floor_ms", r.floor_ms}, {"bandwidth_gb_s", bandwidth / 1e9},
                  {"decode_floor_ms_best_bandwidth", r.floor_ms * bandwidth / best_bandwidth},
                  {"best_bandwidth_gb_s", best_bandwidth / 1e9}});
        if (r.decode_libtorch_ms > 0) j["decode_ms_per_token_libtorch_small_ops"] = r.decode_libtorch_ms;
        if (r.logits_err >= 0) j.update({{"logits_max_err_vs_bf16", r.logits_err}, {"greedy_same_vs_bf16", r.greedy_same}, {"greedy_n", r.greedy_n}});
      }
      out.push_back(j);
    }
    std::ofstream(args.get("json")) << out.dump(2) << "\n";
  }
  return 0;
}

}  // namespace glmvoice::tools
