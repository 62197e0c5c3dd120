// glmvoice-cli commands of the llm room (contract: ../shared/design/ARCHITECTURE.md):
//   encode-text --model LLMDIR --text "..." [--no-prefix]      -o IDS.npy     # i32 [N], [gMASK]<sop> first
//   decode-text --model LLMDIR IDS.npy                                       # prints UTF-8
//   logits      --model LLMDIR IDS.npy                         -o LOGITS.npy  # f32 [T, vocab]
//   generate    --model LLMDIR IDS.npy --max-new-tokens N
//               [--greedy | --temperature T --top-p P --top-k K --seed S]
//               [--no-stop] [--no-mask]                        -o OUT.npy     # i32 [n] new ids
// generate feeds IDS through the KV cache path, then samples one token at a time; it stops
// after a stop id (which is included in OUT, as HF generate returns it) unless --no-stop;
// --no-mask allows padded vocabulary rows (to reproduce reference ids of random weights).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "args.h"
#include "commands.h"
#include "io/npy.h"
#include "llm/chatglm_model.h"
#include "llm/sampler.h"
#include "model_args.h"
#include "runtime/options.h"
#include "text/tokenizer.h"

namespace glmvoice::tools {

namespace {

std::vector<int64_t> read_ids(const std::string& path) {
  at::Tensor t = io::read_npy(path);
  if (at::isFloatingType(t.scalar_type())) throw std::runtime_error(path + ": ids must be an integer array");
  t = t.to(at::kLong).flatten().contiguous();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

void write_ids(const std::string& path, const std::vector<int64_t>& ids) {
  io::write_npy(path, at::tensor(ids, at::TensorOptions().dtype(at::kLong)).to(at::kInt));
}

}  // namespace

int cmd_encode_text(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {"no-prefix"});
  args.check_known({"model", "text", "out", "device", "dtype", "no-prefix"});
  const auto tok = text::Tokenizer::load(args.get("model"));
  write_ids(args.get("out"), tok.encode(args.get("text"), !args.has("no-prefix")));
  return 0;
}

int cmd_decode_text(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {});
  args.check_known({"model", "device", "dtype"});
  const auto tok = text::Tokenizer::load(args.get("model"));
  const std::string text = tok.decode(read_ids(args.positional(0, "IDS.npy")));
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

int cmd_logits(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {});
  args.check_known({"model", "out", "device", "dtype"});
  const auto model = llm::LlmModel::load(model_options(args, "auto"));  // bf16 on CUDA, f32 on CPU
  auto cache = model->new_cache();
  const at::Tensor logits = model->forward(read_ids(args.positional(0, "IDS.npy")), cache, true);
  io::write_npy(args.get("out"), logits.to(at::kCPU, at::kFloat).contiguous());
  return 0;
}

int cmd_generate(int argc, char** argv) {
  c10::InferenceMode guard;
  Args args(argc, argv, 2, {"greedy", "no-stop", "no-mask"});
  args.check_known({"model", "out", "device", "dtype", "max-new-tokens", "greedy", "temperature", "top-p", "top-k",
                    "seed", "no-stop", "no-mask"});
  const auto model = llm::LlmModel::load(model_options(args, "auto"));  // bf16 on CUDA, f32 on CPU
  const int64_t max_new = args.get_int("max-new-tokens", 0);
  if (max_new < 1) throw std::runtime_error("--max-new-tokens must be >= 1");
  llm::SamplingOptions sampling;
  sampling.greedy = args.has("greedy");
  sampling.temperature = args.get_double("temperature", model->config().gen_temperature);
  sampling.top_p = args.get_double("top-p", model->config().gen_top_p);
  sampling.top_k = args.get_int("top-k", 50);
  llm::Sampler sampler(static_cast<uint64_t>(args.get_int("seed", 0)));
  const int64_t mask_from = args.has("no-mask") ? -1 : model->tokenizer().max_id() + 1;
  const auto& eos = model->config().eos_token_id;

  auto cache = model->new_cache();
  std::vector<int64_t> out;
  at::Tensor logits = model->forward(read_ids(args.positional(0, "IDS.npy")), cache);
  for (int64_t i = 0; i < max_new; ++i) {
    const int64_t next = sampler.sample(logits, sampling, mask_from);
    out.push_back(next);
    if (!args.has("no-stop") && std::find(eos.begin(), eos.end(), next) != eos.end()) break;
    if (i + 1 == max_new || cache.length >= model->config().seq_length) break;
    logits = model->forward({next}, cache);
  }
  write_ids(args.get("out"), out);
  return 0;
}

}  // namespace glmvoice::tools
