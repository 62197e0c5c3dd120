// glmvoice-cli commands of the speech room (stubs until the speech issue lands).
#include <stdexcept>

#include "commands.h"

namespace glmvoice::tools {

int cmd_mel(int, char**) { throw std::runtime_error("not implemented yet"); }
int cmd_tokenize(int, char**) { throw std::runtime_error("not implemented yet"); }

}  // namespace glmvoice::tools
