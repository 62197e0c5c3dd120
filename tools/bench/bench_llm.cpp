#include <stdexcept>

#include "bench.h"

namespace glmvoice::tools {

int bench_llm(int, char**) { throw std::runtime_error("not implemented yet"); }

}  // namespace glmvoice::tools
