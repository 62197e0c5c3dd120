// libFuzzer target: a decoder config.yaml (HyperPyYAML) through io::YamlConfig::from_string
// and voice::DecoderConfig::from_yaml (tags, !ref resolution, typed reads, the checks the
// decoder makes on every value). Every input must end in a config or a glmvoice::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/error.h"
#include "io/yaml_config.h"
#include "voice/decoder_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto yaml = glmvoice::io::YamlConfig::from_string(text, "fuzz.yaml");
    glmvoice::voice::DecoderConfig::from_yaml(yaml);
  } catch (const glmvoice::Error&) {
  }
  return 0;
}
