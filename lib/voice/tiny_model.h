// Tiny random checkpoints in the real file layout, for tests and the demo (glmvoice-mkmodel).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmvoice::voice {

// Names of the tiny configurations this writer knows (the first is the default).
std::vector<std::string> tiny_config_names();
// Writes a complete model directory for `config` into `dir` (created if needed),
// deterministic in `seed`. Besides these names, "real-random" writes the release-size
// decoder (spec §1.1) with random weights for the benchmark (~530 MB).
// Throws glmvoice::Error for an unknown config.
void write_tiny_decoder(const std::string& dir, const std::string& config, uint64_t seed);

}  // namespace glmvoice::voice
