#include "model_args.h"

namespace glmvoice::tools {

ModelOptions model_options(const Args& args, const char* default_dtype) {
  ModelOptions options;
  options.path = args.get("model");
  options.device = runtime::parse_device(args.get("device", "cpu"));
  options.dtype = runtime::parse_dtype(args.get("dtype", default_dtype));
  return options;
}

}  // namespace glmvoice::tools
