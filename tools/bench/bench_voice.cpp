// glmvoice-bench decoder: real-time factor of the speech decoder (flow + HiFT) at the release
// size (decoder spec §1.1: flow 111 M, HiFT 20 M parameters) with random weights.
//
//   glmvoice-bench decoder [--tokens 200] [--mode reference|fast|both] [--block-sizes LIST]
//                          [--context-tokens 50] [--n-timesteps 10] [--device cpu]
//                          [--dtype float32] [--threads N] [--dir DIR] [--config real-random]
//                          [--skip-offline] [--skip-stream] [--calls] [--accuracy-dtype bfloat16]
//
// The model is written once into DIR (default /tmp/glmvoice-bench-decoder/<config>, ~530 MB
// for real-random; --config tiny for the test size). Reported: offline decode of --tokens
// tokens (one finalize call, flow and HiFT timed apart), then for each mode the streamed decode
// of the same tokens pushed one at a time (reference: upstream's schedule 25, 50, 100, ... with
// the whole answer as prompt, spec §5.2; fast: bounded prompt window, blocks 10, 25, 50 by
// default): total time and its ratio to offline, time to the first audio buffer, and the seam
// quality against the offline audio (tools/bench/seam_metrics.h). --calls lists every call.
// --accuracy-dtype D: also loads the model in dtype D (flow in D, HiFT in fp32) and compares its
// offline mel and audio with --dtype's (max / relative L2 mel error, log-spectral distance).
// RTF = compute time / audio duration.
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
#include "seam_metrics.h"
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
  Args args(argc, argv, 2, {"skip-offline", "skip-stream", "calls"});
  args.check_known({"tokens", "mode", "block-sizes", "context-tokens", "n-timesteps", "device", "dtype", "threads",
                    "dir", "config", "skip-offline", "skip-stream", "calls", "accuracy-dtype"});
  const int64_t n_tokens = args.get_int("tokens", 200);
  const int64_t threads = args.get_int("threads", 0);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  const std::string config = args.get("config", "real-random");
  const std::string dir = args.get("dir", "/tmp/glmvoice-bench-decoder/" + config);
  if (!fs::exists(fs::path(dir) / "hift.pt")) {
    const auto t0 = Clock::now();
    voice::write_tiny_decoder(dir, config, 0);
    say("wrote %s random weights to %s in %.1f s\n", config.c_str(), dir.c_str(), seconds_since(t0));
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
  voice::StreamOptions base;
  base.n_timesteps = args.get_int("n-timesteps", 10);
  base.context_tokens = args.get_int("context-tokens", voice::kDefaultContextTokens);
  const double rate = static_cast<double>(model->sample_rate());

  {  // warm-up: a short block
    voice::DecoderState warm(model, base);
    std::vector<int32_t> few(ids.begin(), ids.begin() + std::min<int64_t>(5, n_tokens));
    warm.decode_offline(few);
  }

  double offline_s = 0;
  at::Tensor offline_audio, offline_mel;
  if (!args.has("skip-offline")) {
    // One token2wav(finalize) call, timed per stage: flow (encoder + n_timesteps estimator
    // passes of batch 2) then HiFT, with the reference's seeding and draw order.
    c10::InferenceMode guard;
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(base.seed);
    at::Tensor tokens = at::tensor(ids, at::TensorOptions().dtype(at::kInt)).to(at::kLong).unsqueeze(0);
    t0 = Clock::now();
    const at::Tensor mel = model->flow(tokens, at::Tensor(), at::Tensor(), gen, base.n_timesteps);
    offline_mel = mel;
    const double t_flow = seconds_since(t0);
    t0 = Clock::now();
    offline_audio = model->hift(mel, at::Tensor(), gen).audio.reshape({-1});
    const double t_hift = seconds_since(t0);
    offline_s = t_flow + t_hift;
    const double dur = offline_audio.numel() / rate;
    say("offline:  %lld tokens -> %.2f s of audio (%lld samples) in %.2f s  RTF %.3f (flow %.2f s, HiFT %.2f s)\n",
        static_cast<long long>(n_tokens), dur, static_cast<long long>(offline_audio.numel()), offline_s,
        offline_s / dur, t_flow, t_hift);
  }
  if (args.has("accuracy-dtype") && offline_mel.defined()) {
    // The same offline decode in another dtype (same tokens, same noise), against this one.
    c10::InferenceMode guard;
    ModelOptions other = options;
    other.dtype = runtime::parse_dtype(args.get("accuracy-dtype"));
    const auto model2 = voice::DecoderModel::load(other);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(base.seed);
    at::Tensor tokens = at::tensor(ids, at::TensorOptions().dtype(at::kInt)).to(at::kLong).unsqueeze(0);
    t0 = Clock::now();
    const at::Tensor mel = model2->flow(tokens, at::Tensor(), at::Tensor(), gen, base.n_timesteps);
    const double t_flow = seconds_since(t0);
    t0 = Clock::now();
    const at::Tensor audio = model2->hift(mel, at::Tensor(), gen).audio.reshape({-1});
    const double t_hift = seconds_since(t0);
    const at::Tensor d = (mel - offline_mel).abs();
    const double rel = ((mel - offline_mel).norm() / offline_mel.norm()).item<double>();
    const SeamMetrics sm = seam_metrics(audio, offline_audio, {});
    say("offline in %s: flow %.2f s, HiFT %.2f s; mel vs %s: max abs err %.3g, mean abs err %.3g, relative L2 %.3g; "
        "audio log-spectral distance %.2f dB\n",
        args.get("accuracy-dtype").c_str(), t_flow, t_hift, runtime::dtype_name(options.dtype).c_str(),
        d.max().item<double>(), d.mean().item<double>(), rel, sm.lsd_all_db);
  }
  if (args.has("skip-stream")) return 0;

  const std::string mode_arg = args.get("mode", "both");
  std::vector<voice::StreamMode> modes;
  if (mode_arg == "both") {
    modes = {voice::StreamMode::kReference, voice::StreamMode::kFast};
  } else {
    modes = {voice::parse_stream_mode(mode_arg, "--mode")};
  }
  for (voice::StreamMode mode : modes) {
    voice::StreamOptions so = base;
    so.mode = mode;
    so.block_sizes = args.has("block-sizes") ? voice::parse_block_sizes(args.get("block-sizes"))
                                             : voice::default_block_sizes(mode);
    voice::DecoderState stream(model, so);
    std::vector<double> call_times;
    std::vector<int64_t> call_samples;
    std::vector<at::Tensor> parts;
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
        parts.push_back(a);
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
    parts.push_back(tail);
    samples += tail.numel();
    const double dur = samples / rate;
    const std::string name = voice::stream_mode_name(mode);
    say("streamed %s (blocks %s%s): %lld tokens -> %.2f s of audio (%lld samples) in %.2f s  RTF %.3f (%zu calls)",
        name.c_str(), voice::format_block_sizes(so.block_sizes).c_str(),
        mode == voice::StreamMode::kFast ? (", context " + std::to_string(so.context_tokens)).c_str() : "",
        static_cast<long long>(n_tokens), dur, static_cast<long long>(samples), total, total / dur,
        call_times.size());
    if (offline_s > 0) say("; %.2fx offline", total / offline_s);
    say("\n");
    if (args.has("calls")) {
      for (size_t k = 0; k < call_times.size(); ++k) {
        say("  call %zu: %lld samples (%.2f s) in %.2f s  RTF %.3f\n", k + 1,
            static_cast<long long>(call_samples[k]), call_samples[k] / rate, call_times[k],
            call_times[k] / (call_samples[k] / rate));
      }
    }
    if (first_audio >= 0) {
      say("  time to first audio: %.2f s for the first %lld-token block (plus %lld x 80 ms of tokens)\n",
          first_audio, static_cast<long long>(so.block_sizes.front()),
          static_cast<long long>(so.block_sizes.front() + 1));
    }
    if (offline_audio.defined()) {
      std::vector<int64_t> seams;
      int64_t at_sample = 0;
      for (size_t k = 0; k + 1 < call_samples.size(); ++k) seams.push_back(at_sample += call_samples[k]);
      const SeamMetrics sm = seam_metrics(at::cat(parts, 0), offline_audio, seams);
      say("  vs offline: log-spectral distance %.2f dB overall, %.2f dB at %zu seams; seam flux ratio %.2f "
          "(offline at the same points %.2f)\n",
          sm.lsd_all_db, sm.lsd_seam_db, seams.size(), sm.flux_ratio, sm.flux_ratio_offline);
    }
  }
  return 0;
}

}  // namespace glmvoice::tools
