// glmvoice-bench: benchmarks (not timed tests). Prints per-stage figures and real-time
// factors. Usage: glmvoice-bench tokenizer|llm|decoder [options]
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstring>
#include <exception>

#include "bench.h"

int main(int argc, char** argv) {
  struct Stage {
    const char* name;
    int (*run)(int, char**);
  };
  const Stage stages[] = {{"tokenizer", glmvoice::tools::bench_tokenizer},
                          {"llm", glmvoice::tools::bench_llm},
                          {"decoder", glmvoice::tools::bench_decoder},
                          {"e2e", glmvoice::tools::bench_e2e},
                          {"dtypes", glmvoice::tools::bench_dtypes}};
  if (argc >= 2) {
    for (const auto& stage : stages) {
      if (std::strcmp(argv[1], stage.name) != 0) continue;
      try {
        return stage.run(argc, argv);
      } catch (const c10::Error& e) {
        std::fprintf(stderr, "glmvoice-bench %s: %s\n", stage.name, e.what_without_backtrace());
      } catch (const std::exception& e) {
        std::fprintf(stderr, "glmvoice-bench %s: %s\n", stage.name, e.what());
      }
      return 1;
    }
  }
  std::fprintf(stderr, "usage: glmvoice-bench tokenizer|llm|decoder|e2e|dtypes [options]\n");
  return 2;
}
