// glmvoice-cli: runs one stage on files and writes .npy/.wav outputs, so each stage can be
// compared with a reference outside a pipeline. Usage: glmvoice-cli COMMAND [options].
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstring>
#include <exception>

#include "commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* usage;
};

const Command kCommands[] = {
    {"inspect", glmvoice::tools::cmd_inspect, "--model DIR"},
    {"mel", glmvoice::tools::cmd_mel, "--model TOKDIR IN.wav -o FEATS.npy"},
    {"tokenize", glmvoice::tools::cmd_tokenize, "--model TOKDIR IN.wav [--chunk SAMPLES] -o IDS.npy"},
    {"encode-text", glmvoice::tools::cmd_encode_text, "--model LLMDIR --text \"...\" -o IDS.npy"},
    {"decode-text", glmvoice::tools::cmd_decode_text, "--model LLMDIR IDS.npy"},
    {"logits", glmvoice::tools::cmd_logits, "--model LLMDIR IDS.npy -o LOGITS.npy"},
    {"generate", glmvoice::tools::cmd_generate,
     "--model LLMDIR IDS.npy --max-new-tokens N [--greedy | --temperature T --top-p P --seed S] -o OUT.npy"},
    {"flow", glmvoice::tools::cmd_flow, "--model DECDIR TOKENS.npy [--seed S] -o MEL.npy"},
    {"vocode", glmvoice::tools::cmd_vocode, "--model DECDIR MEL.npy [--seed S] [--after-flow-noise] -o WAVE.npy"},
    {"decode", glmvoice::tools::cmd_decode, "--model DECDIR TOKENS.npy [--stream [--mode reference|fast] [--context-tokens N] [--block-sizes LIST]] [--seed S] -o OUT.wav|OUT.npy"},
};

void print_usage(FILE* out) {
  std::fprintf(out, "usage: glmvoice-cli COMMAND [options]\n\ncommands:\n");
  for (const auto& command : kCommands) std::fprintf(out, "  %-12s %s\n", command.name, command.usage);
  std::fprintf(out, "\ncommon options: --device cpu|cuda|cuda:N  --dtype float32|bfloat16|float16\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& command : kCommands) {
    if (std::strcmp(argv[1], command.name) != 0) continue;
    try {
      return command.run(argc, argv);
    } catch (const c10::Error& e) {
      std::fprintf(stderr, "glmvoice-cli %s: %s\n", command.name, e.what_without_backtrace());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "glmvoice-cli %s: %s\n", command.name, e.what());
    }
    return 1;
  }
  std::fprintf(stderr, "glmvoice-cli: unknown command '%s'\n", argv[1]);
  print_usage(stderr);
  return 2;
}
