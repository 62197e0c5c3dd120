// glmvoice-cli commands of the llm room (stubs until the llm issue lands).
#include <stdexcept>

#include "commands.h"

namespace glmvoice::tools {

int cmd_encode_text(int, char**) { throw std::runtime_error("not implemented yet"); }
int cmd_decode_text(int, char**) { throw std::runtime_error("not implemented yet"); }
int cmd_logits(int, char**) { throw std::runtime_error("not implemented yet"); }
int cmd_generate(int, char**) { throw std::runtime_error("not implemented yet"); }

}  // namespace glmvoice::tools
