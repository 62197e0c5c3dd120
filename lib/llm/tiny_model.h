// Tiny random checkpoints in the real file layout, for tests and the demo (glmvoice-mkmodel).
//
// Configurations (llm spec §7; token ids deliberately differ from the real model):
//   tiny          default: spec §7.1 shapes, 64 audio tokens (= the tiny speech tokenizer /
//                 decoder codebook, so the three tiny models chain), padded_vocab_size 448;
//                 BF16, two shards + index
//   tiny-full     spec §7.1 exactly: 16384 audio tokens, padded_vocab_size 16768
//   tiny-rope500  as tiny with rope_ratio 500
//   tiny-defaults as tiny without seq_length (CONFIGPY default 2048), num_hidden_layers present
//   tiny-f32      as tiny, F32 tensors in one model.safetensors (no index)
//   tiny-script   as tiny, but every layer's output projections are zero and the embedding /
//                 output rows form a bigram chain, so greedy (and low-temperature) decoding
//                 after a prompt ending in "\n" emits exactly: "H" "i" <E7 9A> <|audio_3|>
//                 <|audio_4|> <84> " world" <|user|>  (text "Hi的 world", audio [3, 4]).
//   tiny-loop     as tiny-script but the chain never stops: "H" "i" "H" "i" ...
//   mid           benchmark size: hidden 1024, 8 layers, 8 heads x 128, 2 KV groups,
//                 ffn 3424, padded_vocab_size 168960 (the real vocabulary rows), seq_length
//                 8192, BF16
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmvoice::llm {

// Names of the tiny configurations this writer knows (the first is the default).
std::vector<std::string> tiny_config_names();
// Writes a complete model directory for `config` into `dir` (created if needed),
// deterministic in `seed`. Throws glmvoice::Error for an unknown config.
void write_tiny_llm(const std::string& dir, const std::string& config, uint64_t seed);

}  // namespace glmvoice::llm
