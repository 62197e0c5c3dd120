// libFuzzer target: the restricted pickle VM on a raw data.pkl body. Storages are served as
// zero tensors (capped in size). Every input must end in a state dict or a glmvoice::Error;
// anything else (crash, other exception, sanitizer report) is a bug.
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

#include "io/error.h"
#include "io/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const glmvoice::io::StorageLoader loader = [](const std::string& key, at::ScalarType dtype,
                                                int64_t numel) -> at::Tensor {
    if (numel > (1 << 16)) throw glmvoice::Error(glmvoice::ErrorCode::kBadFile, "fuzz.pt", key, "storage too large");
    return at::zeros({numel}, at::TensorOptions().dtype(dtype));
  };
  try {
    glmvoice::io::parse_state_dict_pickle(data, size, "fuzz.pt", "archive/data.pkl", loader);
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
