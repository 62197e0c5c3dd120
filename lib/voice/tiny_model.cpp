#include "voice/tiny_model.h"

#include "io/error.h"

namespace glmvoice::voice {

std::vector<std::string> tiny_config_names() { return {}; }

void write_tiny_decoder(const std::string& dir, const std::string& config, uint64_t) {
  throw Error(ErrorCode::kUnsupported, dir, config, "the voice tiny model writer is not implemented yet");
}

}  // namespace glmvoice::voice
