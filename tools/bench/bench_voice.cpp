// glmvoice-bench decoder: real-time factor of the speech decoder (flow + HiFT) at the release
// size (decoder spec §1.1: flow 111 M, HiFT 20 M parameters) with random weights.
//
//   glmvoice-bench decoder [--tokens 200] [--first-block 25] [--n-timesteps 10] [--device cpu]
//                          [--dtype float32] [--threads N] [--dir DIR] [--skip-offline] [--skip-stream]
//
// The model is written once into DIR (default /tmp/glmvoice-bench-decoder/real-random, ~530 MB).
// Reported: offline decode of --tokens tokens (one finalize call), the web_demo streaming
// schedule over the same tokens pushed one at a time (blocks 25, 50, 100, ... with the growing
// prompt, spec §5.2), and the time to the first audio buffer (the first 25-token block, from
// the arrival of the token that triggers it). RTF = compute time / audio duration.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "../cli/args.h"
#include "bench.h"
#include "runtime/options.h"
#include "voice/decoder_model.h"
#include "voice/tiny_model.h"

namespace glmvoice::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// printf + flush, so progress shows when stdout is a file.
template <class... A>
void say(const char* fmt, A... a) {
  std::printf(fmt, a...);
  std::fflush(stdout);
}

}  // namespace

int bench_decoder(int argc, char** argv) {
  Args args(argc, argv, 2, {"skip-offline", "skip-stream"});
  args.check_known({"tokens", "first-block", "n-timesteps", "device", "dtype", "threads", "dir", "skip-offline",
                    "skip-stream"});
  const int64_t n_tokens = args.get_int("tokens", 200);
  const int64_t first_block = args.get_int("first-block", 25);
  const int64_t threads = args.get_int("threads", 0);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  const std::string dir = args.get("dir", "/tmp/glmvoice-bench-decoder/real-random");
  if (!fs::exists(fs::path(dir) / "hift.pt")) {
    const auto t0 = Clock::now();
    voice::write_tiny_decoder(dir, "real-random", 0);
    say("wrote release-size random weights to %s in %.1f s\n", dir.c_str(), seconds_since(t0));
  }
  ModelOptions options;
  options.path = dir;
  options.device = runtime::parse_device(args.get("device", "cpu"));
  options.dtype = runtime::parse_dtype(args.get("dtype", "float32"));
  auto t0 = Clock::now();
  const auto model = voice::DecoderModel::load(options);
  say("decoder benchmark: flow %lld params, HiFT %lld params, device %s, dtype %s, %d threads; load %.2f s\n",
              static_cast<long long>(model->flow_parameters()), static_cast<long long>(model->hift_parameters()),
              options.device.str().c_str(), runtime::dtype_name(options.dtype).c_str(), at::get_num_threads(),
              seconds_since(t0));

  std::mt19937 rng(1);
  std::vector<int32_t> ids(n_tokens);
  for (auto& id : ids) id = static_cast<int32_t>(rng() % model->vocab_size());
  voice::StreamOptions so;
  so.n_timesteps = args.get_int("n-timesteps", 10);
  const double rate = static_cast<double>(model->sample_rate());

  {  // warm-up: a short block
    voice::DecoderState warm(model, so);
    std::vector<int32_t> few(ids.begin(), ids.begin() + std::min<int64_t>(5, n_tokens));
    warm.decode_offline(few);
  }

  if (!args.has("skip-offline")) {
    // One token2wav(finalize) call, timed per stage: flow (encoder + 2 x n_timesteps
    // estimator passes) then HiFT, with the reference's seeding and draw order.
    c10::InferenceMode guard;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(so.seed);
    at::Tensor tokens = at::tensor(ids, at::TensorOptions().dtype(at::kInt)).to(at::kLong).unsqueeze(0);
    t0 = Clock::now();
    const at::Tensor mel = model->flow(tokens, at::Tensor(), at::Tensor(), gen, so.n_timesteps);
    const double t_flow = seconds_since(t0);
    t0 = Clock::now();
    const at::Tensor audio = model->hift(mel, at::Tensor(), gen).audio;
    const double t_hift = seconds_since(t0);
    const double dur = audio.numel() / rate;
    say("offline:  %lld tokens -> %.2f s of audio in %.2f s  RTF %.3f (flow %.2f s, HiFT %.2f s)\n",
        static_cast<long long>(n_tokens), dur, t_flow + t_hift, (t_flow + t_hift) / dur, t_flow, t_hift);
  }

  if (!args.has("skip-stream")) {
    so.block_sizes.front() = first_block;
    voice::DecoderState stream(model, so);
    std::vector<double> call_times;
    std::vector<int64_t> call_samples;
    double total = 0, first_audio = -1;
    int64_t samples = 0;
    for (int64_t i = 0; i < n_tokens; ++i) {
      t0 = Clock::now();
      const at::Tensor a = stream.push(&ids[i], 1);
      const double t = seconds_since(t0);
      total += t;
      if (a.numel()) {
        call_times.push_back(t);
        call_samples.push_back(a.numel());
        if (first_audio < 0) first_audio = t;
        samples += a.numel();
      }
    }
    t0 = Clock::now();
    const at::Tensor tail = stream.finish();
    const double t = seconds_since(t0);
    total += t;
    call_times.push_back(t);
    call_samples.push_back(tail.numel());
    samples += tail.numel();
    const double dur = samples / rate;
    say("streamed: %lld tokens -> %.2f s of audio in %.2f s  RTF %.3f (%zu calls)\n",
                static_cast<long long>(n_tokens), dur, total, total / dur, call_times.size());
    for (size_t k = 0; k < call_times.size(); ++k) {
      say("  call %zu: %lld samples (%.2f s) in %.2f s  RTF %.3f\n", k + 1,
                  static_cast<long long>(call_samples[k]), call_samples[k] / rate, call_times[k],
                  call_times[k] / (call_samples[k] / rate));
    }
    if (first_audio >= 0) {
      say("time to first audio: %.2f s for the first %lld-token block (plus %lld x 80 ms of tokens)\n",
                  first_audio, static_cast<long long>(first_block), static_cast<long long>(first_block + 1));
    }
  }
  return 0;
}

}  // namespace glmvoice::tools
