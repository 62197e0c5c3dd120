#include "llm/tiny_model.h"

#include "io/error.h"

namespace glmvoice::llm {

std::vector<std::string> tiny_config_names() { return {}; }

void write_tiny_llm(const std::string& dir, const std::string& config, uint64_t) {
  throw Error(ErrorCode::kUnsupported, dir, config, "the llm tiny model writer is not implemented yet");
}

}  // namespace glmvoice::llm
