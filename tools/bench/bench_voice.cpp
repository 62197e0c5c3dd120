#include <stdexcept>

#include "bench.h"

namespace glmvoice::tools {

int bench_decoder(int, char**) { throw std::runtime_error("not implemented yet"); }

}  // namespace glmvoice::tools
