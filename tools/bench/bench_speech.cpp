// glmvoice-bench tokenizer: real-time factor of the speech tokenizer at the real width
// (d_model 1280, 20 heads, ffn 5120, codebook 16384, block 200) with random weights.
//
//   glmvoice-bench tokenizer [--layers 2,16] [--seconds 20] [--chunk 1600] [--wav IN.wav]
//                            [--device cpu] [--dtype float32] [--threads N] [--dir DIR]
//
// Models are written once into DIR (default /tmp/glmvoice-bench-tokenizer/real-lN; real-l16
// is 1.4 GB). Audio: IN.wav (16 kHz) looped/cut to --seconds, else a synthetic speech-like
// signal. RTF = compute time / audio duration (< 1 is faster than real time).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cli/args.h"
#include "bench.h"
#include "runtime/options.h"
#include "speech/tiny_model.h"
#include "speech/tokenizer_model.h"
#include "speech/tokenizer_state.h"
#include "speech/wav_file.h"

namespace glmvoice::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Process CPU time (all threads): with --threads 1 on a busy machine this is the better
// measure of the compute itself.
double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

// Gliding tones with syllable-like amplitude modulation (no external data needed).
at::Tensor synthetic_speech(int64_t n) {
  at::Tensor x = at::empty({n}, at::kFloat);
  float* p = x.data_ptr<float>();
  double ph1 = 0, ph2 = 0;
  uint64_t s = 12345;
  for (int64_t i = 0; i < n; ++i) {
    const double t = i / 16000.0;
    ph1 += 2 * M_PI * (180 + 60 * std::sin(2 * M_PI * 0.8 * t)) / 16000.0;
    ph2 += 2 * M_PI * (900 + 500 * std::sin(2 * M_PI * 0.33 * t)) / 16000.0;
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double noise = static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5;
    const double env = std::max(0.0, std::sin(2 * M_PI * 2.5 * t));
    p[i] = static_cast<float>(0.3 * env * (std::sin(ph1) + 0.4 * std::sin(ph2)) + 0.002 * noise);
  }
  return x;
}

}  // namespace

int bench_tokenizer(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {});
  args.check_known({"layers", "seconds", "chunk", "wav", "device", "dtype", "threads", "dir"});
  const double seconds = args.get_double("seconds", 20.0);
  const int64_t chunk = args.get_int("chunk", 1600);
  const int64_t threads = args.get_int("threads", 0);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  const std::string base = args.get("dir", "/tmp/glmvoice-bench-tokenizer");
  std::vector<int64_t> layer_counts;
  {
    std::stringstream ss(args.get("layers", "2,16"));
    std::string item;
    while (std::getline(ss, item, ',')) layer_counts.push_back(std::stoll(item));
  }

  const int64_t n = static_cast<int64_t>(seconds * 16000);
  at::Tensor audio;
  if (args.has("wav")) {
    const at::Tensor wav = speech::read_wav_mono16k(args.get("wav"));
    audio = wav.repeat({(n + wav.size(0) - 1) / wav.size(0)}).slice(0, 0, n).contiguous();
  } else {
    audio = synthetic_speech(n);
  }
  std::printf("tokenizer benchmark: %.1f s of audio, device %s, dtype %s, %d threads\n", seconds,
              args.get("device", "cpu").c_str(), args.get("dtype", "float32").c_str(),
              at::get_num_threads());

  for (int64_t layers : layer_counts) {
    const std::string config = "real-l" + std::to_string(layers);
    const std::string dir = (fs::path(base) / config).string();
    if (!fs::exists(fs::path(dir) / "config.json")) {
      const auto t0 = Clock::now();
      speech::write_tiny_tokenizer(dir, config, 0);
      std::printf("[%s] wrote random weights to %s in %.1f s\n", config.c_str(), dir.c_str(),
                  seconds_since(t0));
    }
    ModelOptions options;
    options.path = dir;
    options.device = runtime::parse_device(args.get("device", "cpu"));
    options.dtype = runtime::parse_dtype(args.get("dtype", "float32"));
    auto t0 = Clock::now();
    const auto model = speech::TokenizerModel::load(options);
    std::printf("[%s] d_model %lld, %lld heads, %lld layers, codebook %lld: load %.2f s\n",
                config.c_str(), static_cast<long long>(model->config().d_model),
                static_cast<long long>(model->config().num_heads),
                static_cast<long long>(model->config().quantize_position),
                static_cast<long long>(model->config().vocab_size), seconds_since(t0));

    // Warm-up: one full untimed call, as tools/bench/upstream/side_by_side.py times upstream
    // (first-call allocations of the full-length buffers are not part of the figure).
    model->tokenize(audio);

    t0 = Clock::now();
    double c0 = cpu_seconds();
    const at::Tensor ids = model->tokenize(audio);
    const double offline = seconds_since(t0);
    const double offline_cpu = cpu_seconds() - c0;
    std::printf("[%s] offline:   %lld tokens in %.2f s  RTF %.3f (CPU time %.2f s, RTF %.3f)\n",
                config.c_str(), static_cast<long long>(ids.size(0)), offline, offline / seconds,
                offline_cpu, offline_cpu / seconds);

    speech::TokenizerState state(model);
    const float* p = audio.data_ptr<float>();
    int64_t tokens = 0;
    double worst_push = 0;
    t0 = Clock::now();
    c0 = cpu_seconds();
    for (int64_t i = 0; i < n; i += chunk) {
      const auto tp = Clock::now();
      tokens += static_cast<int64_t>(state.push(p + i, std::min(chunk, n - i)).size());
      worst_push = std::max(worst_push, seconds_since(tp));
    }
    const auto tf = Clock::now();
    tokens += static_cast<int64_t>(state.finish().size());
    const double finish = seconds_since(tf);
    const double streaming = seconds_since(t0);
    const double streaming_cpu = cpu_seconds() - c0;
    std::printf("[%s] streaming: %lld tokens in %.2f s  RTF %.3f (CPU time %.2f s, RTF %.3f; push %lld "
                "samples; slowest push %.2f s = one %.1f s block; final partial block %.2f s)\n",
                config.c_str(), static_cast<long long>(tokens), streaming, streaming / seconds,
                streaming_cpu, streaming_cpu / seconds,
                static_cast<long long>(chunk), worst_push,
                model->config().block_samples() / 16000.0, finish);
  }
  return 0;
}

}  // namespace glmvoice::tools
