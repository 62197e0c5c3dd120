// glmvoice-mkmodel: writes tiny random checkpoints in the real layouts, so tests and the
// demo need nothing from outside the project.
//   glmvoice-mkmodel --kind tokenizer|llm|decoder [--config NAME] [--seed N] --out DIR
#include <c10/util/Exception.h>

#include <cstdio>
#include <exception>
#include <string>

#include "../cli/args.h"
#include "llm/tiny_model.h"
#include "speech/tiny_model.h"
#include "voice/tiny_model.h"

namespace {

std::string default_config(const std::vector<std::string>& names) {
  return names.empty() ? std::string() : names.front();
}

int run(int argc, char** argv) {
  glmvoice::tools::Args args(argc, argv, 1, {"help"});
  args.check_known({"kind", "config", "seed", "out", "help"});
  if (args.has("help")) {
    std::printf("usage: glmvoice-mkmodel --kind tokenizer|llm|decoder [--config NAME] [--seed N] --out DIR\n");
    return 0;
  }
  const std::string kind = args.get("kind");
  const std::string out = args.get("out");
  const auto seed = static_cast<uint64_t>(args.get_int("seed", 0));
  if (kind == "tokenizer") {
    glmvoice::speech::write_tiny_tokenizer(
        out, args.get("config", default_config(glmvoice::speech::tiny_config_names())), seed);
  } else if (kind == "llm") {
    glmvoice::llm::write_tiny_llm(
        out, args.get("config", default_config(glmvoice::llm::tiny_config_names())), seed);
  } else if (kind == "decoder") {
    glmvoice::voice::write_tiny_decoder(
        out, args.get("config", default_config(glmvoice::voice::tiny_config_names())), seed);
  } else {
    throw std::runtime_error("unknown --kind '" + kind + "' (tokenizer, llm or decoder)");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "glmvoice-mkmodel: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "glmvoice-mkmodel: %s\n", e.what());
  }
  return 1;
}
