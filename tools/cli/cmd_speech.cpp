// glmvoice-cli commands of the speech room (contract: ../shared/design/ARCHITECTURE.md):
//   glmvoice-cli mel      --model TOKDIR IN.wav                   -o FEATS.npy  # f32 [128, T]
//   glmvoice-cli tokenize --model TOKDIR IN.wav [--chunk SAMPLES] -o IDS.npy    # i32 [K]
// IN.wav: any WAV upstream reads (any rate and channel count, 8/16/24/32-bit int, 32/64-bit
// float); channel 0 is used and resampled to 16 kHz like upstream (speech/resample.h).
// --chunk N streams the file through TokenizerState with pushes of N samples; without it the
// offline path runs.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <stdexcept>

#include "args.h"
#include "commands.h"
#include "io/npy.h"
#include "model_args.h"
#include "runtime/options.h"
#include "speech/tokenizer_model.h"
#include "speech/tokenizer_state.h"
#include "speech/wav_file.h"

namespace glmvoice::tools {

namespace {

}  // namespace

int cmd_mel(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {});
  args.check_known({"model", "out", "device", "dtype"});
  const auto model = speech::TokenizerModel::load(model_options(args));
  const at::Tensor samples = speech::read_wav_mono16k(args.positional(0, "IN.wav"));
  const at::Tensor feats = model->features(samples).to(at::kFloat);
  io::write_npy(args.get("out"), feats);
  return 0;
}

int cmd_tokenize(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {"offline-exact"});
  args.check_known({"model", "out", "device", "dtype", "chunk", "offline-exact"});
  const auto model = speech::TokenizerModel::load(model_options(args));
  const at::Tensor samples = speech::read_wav_mono16k(args.positional(0, "IN.wav"));
  at::Tensor ids;
  if (args.has("chunk")) {
    const int64_t chunk = args.get_int("chunk", 0);
    if (chunk < 1) throw std::runtime_error("--chunk must be >= 1");
    speech::TokenizerStreamOptions stream_options;
    stream_options.offline_exact = args.has("offline-exact");
    speech::TokenizerState state(model, stream_options);
    std::vector<int32_t> out;
    const float* p = samples.data_ptr<float>();
    const int64_t n = samples.size(0);
    for (int64_t i = 0; i < n; i += chunk) {
      const auto got = state.push(p + i, std::min(chunk, n - i));
      out.insert(out.end(), got.begin(), got.end());
    }
    const auto tail = state.finish();
    out.insert(out.end(), tail.begin(), tail.end());
    ids = at::tensor(std::vector<int32_t>(out), at::kInt);
    if (out.empty()) ids = at::empty({0}, at::kInt);
  } else {
    ids = model->tokenize(samples).to(at::kInt);
  }
  io::write_npy(args.get("out"), ids);
  return 0;
}

}  // namespace glmvoice::tools
