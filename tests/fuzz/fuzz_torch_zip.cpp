// libFuzzer target: a whole torch.save zip (central directory, local headers, ZIP64 fields,
// CRC-32, then the pickle) through parse_torch_state_dict. Every input must end in a state
// dict or a glmvoice::Error.
#include <cstddef>
#include <cstdint>

#include "io/error.h"
#include "io/torch_pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    glmvoice::io::parse_torch_state_dict(data, size, "fuzz.pt");
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
