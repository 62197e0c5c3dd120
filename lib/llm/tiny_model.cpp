// Tiny GLM-4-Voice LLM checkpoints in the real layout (llm spec §7): config.json,
// generation_config.json, safetensors (+ index), tokenizer.model, tokenizer_config.json.
#include "llm/tiny_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>

#include "io/error.h"
#include "io/safetensors.h"

namespace glmvoice::llm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct TinySpec {
  int64_t num_layers = 2, hidden = 64, heads = 4, kv_channels = 16, groups = 2, ffn = 96;
  int64_t n_audio = 64, padded_vocab = 448;
  double rope_ratio = 1;
  bool seq_length = true;           // write seq_length
  int64_t seq_length_value = 512;
  bool num_hidden_layers = false;   // write the duplicate key
  bool f32_single = false;          // one F32 model.safetensors instead of BF16 shards
  int script = 0;                   // 0 random, 1 bigram script ending in <|user|>, 2 endless loop
};

TinySpec spec_for(const std::string& config, const std::string& dir) {
  TinySpec s;
  if (config == "tiny") return s;
  if (config == "tiny-full") {
    s.n_audio = 16384;
    s.padded_vocab = 16768;
  } else if (config == "tiny-rope500") {
    s.rope_ratio = 500;
  } else if (config == "tiny-defaults") {
    s.seq_length = false;
    s.num_hidden_layers = true;
  } else if (config == "tiny-f32") {
    s.f32_single = true;
  } else if (config == "tiny-script") {
    s.script = 1;
  } else if (config == "tiny-loop") {
    s.script = 2;
  } else if (config == "mid") {
    s.num_layers = 8;
    s.hidden = 1024;
    s.heads = 8;
    s.kv_channels = 128;
    s.ffn = 3424;
    s.n_audio = 16384;
    s.padded_vocab = 168960;
    s.seq_length_value = 8192;  // GLM-4-9B's; the real voice value is unconfirmed (spec §1.2)
  } else {
    throw Error(ErrorCode::kBadConfig, dir, "config", "unknown llm tiny config '" + config + "'");
  }
  return s;
}

// §7.2: 256 single bytes in GPT-2's printable-first order (not the identity), then merges;
// every merge is the concatenation of two lower-ranked tokens. No "oo", "lo", "el".
std::vector<std::string> tiny_ranks() {
  std::vector<std::string> ranks;
  std::vector<bool> used(256, false);
  auto add_byte = [&](int b) {
    ranks.emplace_back(1, static_cast<char>(b));
    used[static_cast<size_t>(b)] = true;
  };
  for (int b = 33; b <= 126; ++b) add_byte(b);
  for (int b = 161; b <= 172; ++b) add_byte(b);
  for (int b = 174; b <= 255; ++b) add_byte(b);
  for (int b = 0; b < 256; ++b) {
    if (!used[static_cast<size_t>(b)]) add_byte(b);
  }
  const char* merges[] = {"he", "ll", "hell", "hello", " w", "or", " wor", "ld", " world", "\n\n", "  ",
                          "\xE7\x9A", "\xE7\x9A\x84", "st", "str", "ea", "eam", "in", "ing", "stream",
                          "streaming", "an", "ran", "_t", "_tran", "sc", "ti", "on", "tion", "ri", "th",
                          " t", " th", " the", "er", " a", "ct", "ru", " in", "ns", "to", "ok", "en", "ed"};
  for (const char* m : merges) ranks.emplace_back(m);
  return ranks;
}

std::string base64_encode(const std::string& in) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8) |
                       static_cast<uint8_t>(in[i + 2]);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    const uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw Error(ErrorCode::kNotFound, path.string(), "", "cannot write file");
}

}  // namespace

std::vector<std::string> tiny_config_names() {
  return {"tiny", "tiny-full", "tiny-rope500", "tiny-defaults", "tiny-f32", "tiny-script", "tiny-loop", "mid"};
}

void write_tiny_llm(const std::string& dir, const std::string& config, uint64_t seed) {
  c10::InferenceMode guard;
  const TinySpec s = spec_for(config, dir);
  fs::create_directories(dir);
  const fs::path root(dir);

  // ---- tokenizer (§7.2) ----
  const auto ranks = tiny_ranks();
  const int64_t n_ranks = static_cast<int64_t>(ranks.size());
  {
    std::string text;
    for (size_t r = 0; r < ranks.size(); ++r) text += base64_encode(ranks[r]) + " " + std::to_string(r) + "\n";
    write_text(root / "tokenizer.model", text);
  }
  std::vector<std::string> specials = {"<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
                                       "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
                                       "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
                                       "<|end_of_video|>", "<|begin_of_audio|>", "<|end_of_audio|>"};
  for (int i = 0; i < 4; ++i) specials.push_back("<|reserved_" + std::to_string(i) + "|>");
  std::map<std::string, int64_t> id_of;
  json decoder = json::object();
  int64_t next_id = n_ranks;
  auto add_token = [&](const std::string& content) {
    decoder[std::to_string(next_id)] = {{"content", content}, {"lstrip", false}, {"normalized", false},
                                        {"rstrip", false}, {"single_word", false}, {"special", true}};
    id_of[content] = next_id++;
  };
  for (const auto& sp : specials) add_token(sp);
  const int64_t audio_offset = next_id;
  for (int64_t n = 0; n < s.n_audio; ++n) add_token("<|audio_" + std::to_string(n) + "|>");
  if (next_id > s.padded_vocab) {
    throw Error(ErrorCode::kBadConfig, dir, "padded_vocab_size", "smaller than the number of tokens");
  }
  json tok_config = {{"added_tokens_decoder", decoder},
                     {"clean_up_tokenization_spaces", false},
                     {"do_lower_case", false},
                     {"eos_token", "<|endoftext|>"},
                     {"pad_token", "<|endoftext|>"},
                     {"padding_side", "left"},
                     {"remove_space", false},
                     {"tokenizer_class", "ChatGLM4Tokenizer"}};
  write_text(root / "tokenizer_config.json", tok_config.dump(2));

  // ---- configs (§7.1) ----
  const std::vector<int64_t> eos = {id_of["<|endoftext|>"], id_of["<|user|>"], id_of["<|observation|>"]};
  json cfg = {{"model_type", "chatglm"},
              {"architectures", {"ChatGLMForConditionalGeneration"}},
              {"num_layers", s.num_layers},
              {"hidden_size", s.hidden},
              {"num_attention_heads", s.heads},
              {"kv_channels", s.kv_channels},
              {"multi_query_attention", true},
              {"multi_query_group_num", s.groups},
              {"ffn_hidden_size", s.ffn},
              {"padded_vocab_size", s.padded_vocab},
              {"vocab_size", s.padded_vocab},
              {"layernorm_epsilon", 3.90625e-08},
              {"rmsnorm", true},
              {"add_qkv_bias", true},
              {"add_bias_linear", false},
              {"apply_residual_connection_post_layernorm", false},
              {"post_layer_norm", true},
              {"rope_ratio", s.rope_ratio},
              {"original_rope", true},
              {"torch_dtype", s.f32_single ? "float32" : "bfloat16"},
              {"eos_token_id", eos},
              {"pad_token_id", id_of["<|endoftext|>"]},
              {"tie_word_embeddings", false}};
  if (s.seq_length) cfg["seq_length"] = s.seq_length_value;
  if (s.num_hidden_layers) cfg["num_hidden_layers"] = s.num_layers;
  write_text(root / "config.json", cfg.dump(2));
  json gen = {{"do_sample", true},     {"eos_token_id", eos}, {"max_length", 512},
              {"pad_token_id", eos[0]}, {"temperature", 0.8}, {"top_p", 0.8}};
  write_text(root / "generation_config.json", gen.dump(2));

  // ---- weights ----
  auto gen_rng = at::detail::createCPUGenerator(seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  auto randn = [&](std::vector<int64_t> shape) { return at::randn(shape, gen_rng, f32) * 0.02; };
  const int64_t d = s.kv_channels, qkv_out = s.heads * d + 2 * s.groups * d;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  at::Tensor embedding = randn({s.padded_vocab, s.hidden});
  at::Tensor output = randn({s.padded_vocab, s.hidden});
  if (s.script) {
    // Bigram chain: token i of the chain has embedding e_i; the output row of its successor
    // is 10·e_i. Layers contribute nothing, so logits = 10·8 for the successor, 0 elsewhere.
    auto rank_of = [&](const std::string& bytes) {
      for (size_t r = 0; r < ranks.size(); ++r) {
        if (ranks[r] == bytes) return static_cast<int64_t>(r);
      }
      throw Error(ErrorCode::kBadConfig, dir, "script", "no rank for a script token");
    };
    std::vector<int64_t> chain = {rank_of("\n"), rank_of("H"), rank_of("i")};
    if (s.script == 1) {
      chain.insert(chain.end(), {rank_of("\xE7\x9A"), audio_offset + 3, audio_offset + 4, rank_of("\x84"),
                                 rank_of(" world"), id_of["<|user|>"]});
    } else {
      chain.push_back(rank_of("H"));  // "\n" -> H -> i -> H -> ...
    }
    const int64_t sink = s.hidden - 1;
    embedding.zero_();
    output.zero_();
    embedding.select(1, sink).fill_(1.0);
    std::map<int64_t, int64_t> direction;  // chain token -> its embedding axis
    for (size_t i = 0; i + 1 < chain.size(); ++i) {
      const int64_t from = chain[i];
      if (!direction.count(from)) {
        const auto axis = static_cast<int64_t>(direction.size());
        direction[from] = axis;
        embedding[from].zero_();
        embedding[from][axis] = 1.0;
      }
      output[chain[i + 1]][direction[from]] = 10.0;
    }
    output[id_of["<|user|>"]][sink] = 10.0;  // anything else -> <|user|>
  }
  tensors.emplace_back("transformer.embedding.word_embeddings.weight", embedding);
  // inv_freq is present in the real checkpoint and must be ignored (§2): write nonsense.
  tensors.emplace_back("transformer.rotary_pos_emb.inv_freq", at::full({d / 4}, 123.0, f32));
  for (int64_t l = 0; l < s.num_layers; ++l) {
    const std::string p = "transformer.encoder.layers." + std::to_string(l) + ".";
    at::Tensor qkv = randn({qkv_out, s.hidden}), qkv_b = randn({qkv_out});
    at::Tensor dense = randn({s.hidden, s.heads * d});
    at::Tensor h4h = randn({2 * s.ffn, s.hidden}), fourh = randn({s.hidden, s.ffn});
    if (s.script) {
      dense.zero_();
      fourh.zero_();
    }
    tensors.emplace_back(p + "input_layernorm.weight", at::ones({s.hidden}, f32));
    tensors.emplace_back(p + "self_attention.query_key_value.weight", qkv);
    tensors.emplace_back(p + "self_attention.query_key_value.bias", qkv_b);
    tensors.emplace_back(p + "self_attention.dense.weight", dense);
    tensors.emplace_back(p + "post_attention_layernorm.weight", at::ones({s.hidden}, f32));
    tensors.emplace_back(p + "mlp.dense_h_to_4h.weight", h4h);
    tensors.emplace_back(p + "mlp.dense_4h_to_h.weight", fourh);
  }
  tensors.emplace_back("transformer.encoder.final_layernorm.weight", at::ones({s.hidden}, f32));
  tensors.emplace_back("transformer.output_layer.weight", output);
  if (s.f32_single) {
    io::write_safetensors((root / "model.safetensors").string(), tensors, {{"format", "pt"}});
  } else {
    for (auto& t : tensors) t.second = t.second.to(at::kBFloat16);
    io::write_sharded_safetensors(dir, tensors, 2);
  }
}

}  // namespace glmvoice::llm
