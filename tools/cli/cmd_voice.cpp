// glmvoice-cli commands of the voice room: flow, vocode, decode (ARCHITECTURE.md contract).
//   flow   --model DECDIR TOKENS.npy [--seed S]                -o MEL.npy   float32 [80, frames]
//   vocode --model DECDIR MEL.npy [--seed S] [--after-flow-noise] -o WAVE.npy float32 [samples]
//   decode --model DECDIR TOKENS.npy [--stream] [--seed S]     -o OUT.wav|OUT.npy
//          --stream: token by token through DecoderState; --mode reference (upstream's schedule,
//          default) or fast (bounded prompt window --context-tokens, default 50; default
//          block sizes 10,25,50); --block-sizes 25,50,100 overrides the schedule.
// --seed seeds a private CPU generator right before the stage draws its noise, in the
// reference's order and shapes (decoder spec §5.4), so a CPU run reproduces its draws.
// vocode --after-flow-noise first draws the CFM noise [1, n_mel, frames] an offline
// token2wav call draws before HiFT, so its output is that call's speech (offline.speech).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "args.h"
#include "commands.h"
#include "io/npy.h"
#include "model_args.h"
#include "runtime/options.h"
#include "voice/decoder_model.h"

namespace glmvoice::tools {

namespace {

const std::set<std::string> kCommon = {"model", "out", "seed", "device", "dtype", "verbose"};

std::shared_ptr<const voice::DecoderModel> load_model(const Args& args) {
  if (args.has("verbose")) {
    runtime::set_log_hook([](runtime::LogLevel, const std::string& m) { std::fprintf(stderr, "%s\n", m.c_str()); });
  }
  return voice::DecoderModel::load(model_options(args));
}

uint64_t seed_of(const Args& args) { return static_cast<uint64_t>(args.get_int("seed", 42)); }

std::vector<int32_t> read_tokens(const std::string& path) {
  at::Tensor t = io::read_npy(path);
  if (at::isFloatingType(t.scalar_type())) throw std::runtime_error(path + ": token ids must be integers");
  t = t.reshape({-1}).to(at::kInt).contiguous();
  return std::vector<int32_t>(t.data_ptr<int32_t>(), t.data_ptr<int32_t>() + t.numel());
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void put_u32(std::ofstream& f, uint32_t v) {
  const unsigned char b[4] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8),
                              static_cast<unsigned char>(v >> 16), static_cast<unsigned char>(v >> 24)};
  f.write(reinterpret_cast<const char*>(b), 4);
}
void put_u16(std::ofstream& f, uint16_t v) {
  const unsigned char b[2] = {static_cast<unsigned char>(v), static_cast<unsigned char>(v >> 8)};
  f.write(reinterpret_cast<const char*>(b), 2);
}

// RIFF/WAVE, PCM 16-bit mono.
void write_wav(const std::string& path, const at::Tensor& audio, int64_t rate) {
  at::Tensor a = audio.reshape({-1}).to(at::kFloat).contiguous();
  const float* p = a.data_ptr<float>();
  const uint32_t n = static_cast<uint32_t>(a.numel());
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open for writing");
  f.write("RIFF", 4);
  put_u32(f, 36 + 2 * n);
  f.write("WAVEfmt ", 8);
  put_u32(f, 16);
  put_u16(f, 1);  // PCM
  put_u16(f, 1);  // mono
  put_u32(f, static_cast<uint32_t>(rate));
  put_u32(f, static_cast<uint32_t>(rate) * 2);
  put_u16(f, 2);
  put_u16(f, 16);
  f.write("data", 4);
  put_u32(f, 2 * n);
  for (uint32_t i = 0; i < n; ++i) {
    const float v = std::max(-1.0f, std::min(1.0f, p[i]));
    put_u16(f, static_cast<uint16_t>(static_cast<int16_t>(std::lrint(v * 32767.0f))));
  }
  if (!f) throw std::runtime_error(path + ": write failed");
}

}  // namespace

int cmd_flow(int argc, char** argv) {
  Args args(argc, argv, 2, {"verbose"});
  auto known = kCommon;
  known.insert({"n-timesteps", "cfg-rate"});
  args.check_known(known);
  const std::string in = args.positional(0, "TOKENS.npy");
  const std::string out = args.get("out");
  auto model = load_model(args);
  c10::InferenceMode guard;
  std::vector<int32_t> ids = read_tokens(in);
  if (ids.empty()) throw std::runtime_error(in + ": no tokens");
  for (int32_t id : ids) {
    if (id >= model->vocab_size())
      throw std::runtime_error(in + ": token id " + std::to_string(id) + " >= vocab_size " +
                               std::to_string(model->vocab_size()));
  }
  at::Tensor tokens = at::tensor(ids, at::TensorOptions().dtype(at::kInt)).to(at::kLong).clamp_min(0).unsqueeze(0);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed_of(args));
  at::Tensor mel = model->flow(tokens, at::Tensor(), at::Tensor(), gen, args.get_int("n-timesteps", 10),
                               args.get_double("cfg-rate", -1));
  io::write_npy(out, mel.squeeze(0).contiguous());  // [80, frames]
  return 0;
}

int cmd_vocode(int argc, char** argv) {
  Args args(argc, argv, 2, {"verbose", "after-flow-noise"});
  auto known = kCommon;
  known.insert("after-flow-noise");
  args.check_known(known);
  const std::string in = args.positional(0, "MEL.npy");
  const std::string out = args.get("out");
  auto model = load_model(args);
  c10::InferenceMode guard;
  at::Tensor mel = io::read_npy(in).to(at::kFloat);
  if (mel.dim() == 2) mel = mel.unsqueeze(0);
  if (mel.dim() != 3 || mel.size(0) != 1 || mel.size(1) != model->n_mel() || mel.size(2) < 1) {
    throw std::runtime_error(in + ": expected a mel of shape [" + std::to_string(model->n_mel()) + ", frames]");
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed_of(args));
  if (args.has("after-flow-noise")) (void)at::randn(mel.sizes(), gen, at::TensorOptions().dtype(at::kFloat));
  auto r = model->hift(mel, at::Tensor(), gen);
  io::write_npy(out, r.audio.reshape({-1}).contiguous());
  return 0;
}

int cmd_decode(int argc, char** argv) {
  Args args(argc, argv, 2, {"verbose", "stream"});
  auto known = kCommon;
  known.insert({"stream", "block-sizes", "n-timesteps", "cfg-rate", "mode", "context-tokens"});
  args.check_known(known);
  const std::string in = args.positional(0, "TOKENS.npy");
  const std::string out = args.get("out");
  auto model = load_model(args);
  voice::StreamOptions so;
  so.seed = seed_of(args);
  so.n_timesteps = args.get_int("n-timesteps", 10);
  so.cfg_rate = args.get_double("cfg-rate", -1);
  so.mode = voice::parse_stream_mode(args.get("mode", "reference"), "--mode");
  so.context_tokens = args.get_int("context-tokens", voice::kDefaultContextTokens);
  so.block_sizes = args.has("block-sizes") ? voice::parse_block_sizes(args.get("block-sizes"))
                                           : voice::default_block_sizes(so.mode);
  voice::DecoderState state(model, so);
  std::vector<int32_t> ids = read_tokens(in);
  at::Tensor audio;
  if (args.has("stream")) {
    std::vector<at::Tensor> parts;
    for (int32_t id : ids) {  // one token at a time, as an LLM emits them
      at::Tensor a = state.push(&id, 1);
      if (a.numel()) parts.push_back(a);
    }
    parts.push_back(state.finish());
    audio = at::cat(parts, 0);
  } else {
    audio = state.decode_offline(ids);
  }
  if (ends_with(out, ".npy")) {
    io::write_npy(out, audio.contiguous());
  } else {
    write_wav(out, audio, model->sample_rate());
  }
  return 0;
}

}  // namespace glmvoice::tools
