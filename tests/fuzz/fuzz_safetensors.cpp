// libFuzzer target: a whole safetensors file (8-byte length, JSON header, data block)
// through the header parser and validator SafeTensors::open() uses. Every input must end
// in a parsed tensor list or a glmvoice::Error; the data ranges it accepts are read in full
// so AddressSanitizer checks them against the input.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "io/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    uint64_t data_start = 0;
    const auto infos = glmvoice::io::parse_safetensors_header(data, size, "fuzz.safetensors", &data_start);
    std::vector<uint8_t> buffer;
    for (const auto& info : infos) {
      if (data_start + info.end > size || info.begin > info.end) __builtin_trap();  // validator bug
      buffer.assign(data + data_start + info.begin, data + data_start + info.end);
    }
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
