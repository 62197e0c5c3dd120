// glmvoice-cli commands of the voice room (stubs until the voice issue lands).
#include <stdexcept>

#include "commands.h"

namespace glmvoice::tools {

int cmd_flow(int, char**) { throw std::runtime_error("not implemented yet"); }
int cmd_vocode(int, char**) { throw std::runtime_error("not implemented yet"); }
int cmd_decode(int, char**) { throw std::runtime_error("not implemented yet"); }

}  // namespace glmvoice::tools
