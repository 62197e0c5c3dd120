// Tiny random checkpoints in the real file layout, for tests and the demo (glmvoice-mkmodel).
//
// Configurations (spec tokenizer.md §6):
//   mk-a      main test model: d_model 64, 4 heads, 2 layers used (4 declared), block 40 conv
//             frames (0.8 s = 10 tokens), codebook 64; layout A (unprefixed names) with the
//             ignored ema_* / embed_positions2 tensors.
//   mk-b      the same values in layout B ("model.encoder." prefix) plus unused layers 2-3,
//             the encoder layer_norm, decoder tensors and proj_out: must give mk-a's ids.
//   mk-c      general path: pooling after layer 1, one post-pool layer (token blocks of 10).
//   real-l2   real width (d_model 1280, 20 heads, ffn 5120, codebook 16384, block 200) with
//   real-l16  2 / 16 layers, random weights: for benchmarks (real-l16 writes 1.4 GB).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmvoice::speech {

// Names of the tiny configurations this writer knows (the first is the default).
std::vector<std::string> tiny_config_names();
// Writes a complete model directory for `config` into `dir` (created if needed),
// deterministic in `seed`. Throws glmvoice::Error for an unknown config.
void write_tiny_tokenizer(const std::string& dir, const std::string& config, uint64_t seed);

}  // namespace glmvoice::speech
