// glmvoice-cli inspect --model DIR (implemented by the foundation issue).
#include <stdexcept>

#include "commands.h"

namespace glmvoice::tools {

int cmd_inspect(int, char**) { throw std::runtime_error("not implemented yet"); }

}  // namespace glmvoice::tools
