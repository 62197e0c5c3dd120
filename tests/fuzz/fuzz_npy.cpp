// libFuzzer target: a whole .npy file through io::parse_npy (magic, version, header dict,
// dtype, shape bounds, data length). Every input must end in a tensor or a glmvoice::Error.
#include <cstddef>
#include <cstdint>

#include "io/error.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    glmvoice::io::parse_npy(data, size, "fuzz.npy");
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
