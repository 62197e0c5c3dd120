// The common options of every glmvoice-cli stage: --model DIR, --device, --dtype.
#pragma once

#include "args.h"
#include "runtime/options.h"

namespace glmvoice::tools {

// --model (required), --device (default cpu), --dtype (default float32).
ModelOptions model_options(const Args& args);

}  // namespace glmvoice::tools
