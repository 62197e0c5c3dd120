// ChatGLMConfig of glm-4-voice-9b (llm spec §1.2, §1.3): config.json with the CONFIGPY
// defaults for absent keys, plus generation_config.json.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace glmvoice::llm {

struct ChatGlmConfig {
  int64_t num_layers = 28;
  int64_t hidden_size = 4096;
  int64_t ffn_hidden_size = 13696;
  int64_t kv_channels = 128;  // head dim
  int64_t num_attention_heads = 32;
  int64_t multi_query_group_num = 1;
  int64_t padded_vocab_size = 65024;
  int64_t seq_length = 2048;
  double layernorm_epsilon = 1e-5;
  bool add_qkv_bias = false;
  bool add_bias_linear = false;
  bool post_layer_norm = true;
  bool apply_residual_connection_post_layernorm = false;
  double rope_ratio = 1.0;
  std::vector<int64_t> eos_token_id;  // generation_config.json, else config.json
  int64_t pad_token_id = -1;
  // generation_config.json sampling defaults (informational; elements use web-demo defaults)
  double gen_temperature = 1.0;
  double gen_top_p = 1.0;
  bool gen_do_sample = false;

  // Derived (§1.2).
  int64_t head_dim() const { return kv_channels; }
  int64_t q_size() const { return num_attention_heads * kv_channels; }
  int64_t kv_size() const { return multi_query_group_num * kv_channels; }
  int64_t qkv_out() const { return q_size() + 2 * kv_size(); }
  int64_t rotary_dim() const { return kv_channels / 2; }
  int64_t heads_per_group() const { return num_attention_heads / multi_query_group_num; }

  // Reads `dir`/config.json (+ generation_config.json if present) and validates (§1.2).
  static ChatGlmConfig load(const std::string& dir);
};

}  // namespace glmvoice::llm
