#include "speech/tiny_model.h"

#include "io/error.h"

namespace glmvoice::speech {

std::vector<std::string> tiny_config_names() { return {}; }

void write_tiny_tokenizer(const std::string& dir, const std::string& config, uint64_t) {
  throw Error(ErrorCode::kUnsupported, dir, config, "the speech tiny model writer is not implemented yet");
}

}  // namespace glmvoice::speech
