// The common options of every glmvoice-cli stage: --model DIR, --device, --dtype.
#pragma once

#include "args.h"
#include "runtime/options.h"

namespace glmvoice::tools {

// --model (required), --device (default cpu), --dtype (default `default_dtype`; "auto" lets
// the model choose: the LLM runs bfloat16 on CUDA, float32 on CPU). --dtype int8 / int4
// = the LLM's weight-only formats.
ModelOptions model_options(const Args& args, const char* default_dtype = "float32");

}  // namespace glmvoice::tools
