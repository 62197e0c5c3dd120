// glmvoice-cli inspect --model DIR: tells which of the three model kinds DIR holds, and
// summarises its config and checkpoint files (tensor count, dtypes, bytes per file), reading
// every header. Kinds:
//   tokenizer  config.json with model_type "whisper" / a WhisperVQ architecture + safetensors
//   llm        config.json with model_type "chatglm" / a ChatGLM architecture + tokenizer.model
//   decoder    config.yaml + flow.pt + hift.pt
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "io/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io/yaml_config.h"

namespace fs = std::filesystem;

namespace glmvoice::tools {

namespace {

std::string human_bytes(uint64_t bytes) {
  char buf[64];
  if (bytes >= (uint64_t(1) << 30)) {
    std::snprintf(buf, sizeof(buf), "%llu bytes (%.2f GiB)", static_cast<unsigned long long>(bytes), bytes / double(1 << 30));
  } else if (bytes >= (uint64_t(1) << 20)) {
    std::snprintf(buf, sizeof(buf), "%llu bytes (%.2f MiB)", static_cast<unsigned long long>(bytes), bytes / double(1 << 20));
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof(buf), "%llu bytes (%.1f KiB)", static_cast<unsigned long long>(bytes), bytes / 1024.0);
  } else {
    std::snprintf(buf, sizeof(buf), "%llu bytes", static_cast<unsigned long long>(bytes));
  }
  return buf;
}

std::string dtype_counts(const std::map<std::string, size_t>& counts) {
  std::string out;
  for (const auto& [name, n] : counts) {
    if (!out.empty()) out += ", ";
    out += name + " x" + std::to_string(n);
  }
  return out.empty() ? "-" : out;
}

bool contains_arch(const io::JsonConfig& config, const std::string& needle) {
  if (!config.has("architectures") || !config.json()["architectures"].is_array()) return false;
  for (const auto& a : config.json()["architectures"]) {
    if (a.is_string() && a.get<std::string>().find(needle) != std::string::npos) return true;
  }
  return false;
}

// "key value" pairs for the keys present in `config`.
std::string summary(const io::JsonConfig& config, const std::vector<std::pair<const char*, const char*>>& keys) {
  std::string out;
  for (const auto& [key, label] : keys) {
    if (!config.has(key)) continue;
    if (!out.empty()) out += ", ";
    const auto& j = config.json()[key];
    out += std::string(label) + " " + (j.is_string() ? j.get<std::string>() : j.dump());
  }
  return out;
}

void print_safetensors(const std::string& dir) {
  const io::SafeTensors st = io::SafeTensors::open(dir);
  std::map<std::string, size_t> dtypes;
  std::vector<size_t> per_shard_count(st.shard_paths().size(), 0);
  std::vector<uint64_t> per_shard_bytes(st.shard_paths().size(), 0);
  for (const auto& name : st.names()) {
    const io::TensorInfo& info = st.info(name);
    ++dtypes[io::st_dtype_name(info.dtype)];
    ++per_shard_count[info.shard];
    per_shard_bytes[info.shard] += info.end - info.begin;
  }
  std::printf("checkpoint: %s (%zu file%s)\n", fs::path(st.path()).filename().c_str(), st.shard_paths().size(),
              st.shard_paths().size() == 1 ? "" : "s");
  std::printf("  tensors: %zu\n", st.size());
  std::printf("  dtypes: %s\n", dtype_counts(dtypes).c_str());
  std::printf("  tensor bytes: %s\n", human_bytes(st.total_bytes()).c_str());
  for (size_t s = 0; s < st.shard_paths().size(); ++s) {
    std::error_code ec;
    const uint64_t size = fs::file_size(st.shard_paths()[s], ec);
    std::printf("  file %s: %zu tensors, %s tensor data, %s on disk\n",
                fs::path(st.shard_paths()[s]).filename().c_str(), per_shard_count[s],
                human_bytes(per_shard_bytes[s]).c_str(), human_bytes(size).c_str());
  }
}

void print_state_dict(const std::string& path) {
  const io::StateDict sd = io::load_torch_state_dict(path);
  std::map<std::string, size_t> dtypes;
  uint64_t bytes = 0;
  size_t weight_norm = 0;
  for (const auto& [name, t] : sd.entries) {
    ++dtypes[c10::toString(t.scalar_type())];
    bytes += t.numel() * t.element_size();
    if ((name.size() > 9 && name.compare(name.size() - 9, 9, ".weight_g") == 0) ||
        name.find(".parametrizations.weight.original0") != std::string::npos) {
      ++weight_norm;
    }
  }
  std::error_code ec;
  std::printf("checkpoint: %s: %zu tensors, dtypes %s, %s tensor data, %s on disk",
              fs::path(path).filename().c_str(), sd.entries.size(), dtype_counts(dtypes).c_str(),
              human_bytes(bytes).c_str(), human_bytes(fs::file_size(path, ec)).c_str());
  if (weight_norm) std::printf(", %zu weight-norm pairs", weight_norm);
  std::printf("\n");
}

void inspect_tokenizer(const std::string& dir, const io::JsonConfig& config) {
  std::printf("kind: tokenizer (Whisper-VQ speech tokenizer)\n");
  std::printf("config: %s\n",
              summary(config, {{"d_model", "d_model"}, {"encoder_layers", "encoder_layers"},
                               {"encoder_attention_heads", "heads"}, {"encoder_ffn_dim", "ffn"},
                               {"num_mel_bins", "mel_bins"}, {"quantize_position", "quantize_position"},
                               {"quantize_vocab_size", "codebook"}, {"pooling_type", "pooling"},
                               {"pooling_kernel_size", "pooling_kernel"},
                               {"quantize_causal_block_size", "causal_block"}, {"torch_dtype", "torch_dtype"}})
                  .c_str());
  const std::string pre = (fs::path(dir) / "preprocessor_config.json").string();
  if (fs::exists(pre)) {
    const io::JsonConfig p = io::JsonConfig::load(pre);
    std::printf("preprocessor: %s\n",
                summary(p, {{"sampling_rate", "sampling_rate"}, {"feature_size", "feature_size"},
                            {"n_fft", "n_fft"}, {"hop_length", "hop_length"}, {"chunk_length", "chunk_length"}})
                    .c_str());
  }
  print_safetensors(dir);
}

void inspect_llm(const std::string& dir, const io::JsonConfig& config) {
  std::printf("kind: llm (ChatGLM)\n");
  std::printf("config: %s\n",
              summary(config, {{"hidden_size", "hidden"}, {"num_layers", "layers"},
                               {"num_attention_heads", "heads"}, {"kv_channels", "kv_channels"},
                               {"multi_query_group_num", "kv_groups"}, {"ffn_hidden_size", "ffn"},
                               {"padded_vocab_size", "vocab"}, {"seq_length", "seq_length"},
                               {"rope_ratio", "rope_ratio"}, {"torch_dtype", "torch_dtype"}})
                  .c_str());
  const std::string tok = (fs::path(dir) / "tokenizer.model").string();
  size_t lines = 0;
  if (std::FILE* f = std::fopen(tok.c_str(), "rb")) {
    int c;
    while ((c = std::fgetc(f)) != EOF) lines += c == '\n';
    std::fclose(f);
  }
  std::error_code ec;
  std::printf("tokenizer.model: %zu ranks, %s\n", lines, human_bytes(fs::file_size(tok, ec)).c_str());
  const std::string tc = (fs::path(dir) / "tokenizer_config.json").string();
  if (fs::exists(tc)) {
    const io::JsonConfig t = io::JsonConfig::load(tc);
    const auto& added = t.json().contains("added_tokens_decoder") ? t.json()["added_tokens_decoder"] : nlohmann::json();
    std::printf("tokenizer_config.json: %zu added tokens\n", added.is_object() ? added.size() : size_t(0));
  }
  print_safetensors(dir);
}

void inspect_decoder(const std::string& dir) {
  const io::YamlConfig y = io::YamlConfig::load((fs::path(dir) / "config.yaml").string());
  std::printf("kind: decoder (flow matching + HiFT vocoder)\n");
  auto num = [&y](const std::string& key) -> std::string {
    if (!y.has(key)) return "?";
    const YAML::Node n = y.node(key);
    if (n.IsScalar()) return n.Scalar();
    if (n.IsSequence()) {
      std::string out = "[";
      for (size_t i = 0; i < n.size(); ++i) {
        const YAML::Node item = n[i];
        out += (i ? ", " : "") + (item.IsScalar() ? item.Scalar() : std::string("..."));
      }
      return out + "]";
    }
    return "...";
  };
  std::printf("config: flow: input_size %s, vocab %s, output_size %s, encoder %s blocks x %s heads (d %s), "
              "block_size %s, estimator channels %s, mid_blocks %s, cfg_rate %s\n",
              num("flow.input_size").c_str(), num("flow.vocab_size").c_str(), num("flow.output_size").c_str(),
              num("flow.encoder.num_blocks").c_str(), num("flow.encoder.attention_heads").c_str(),
              num("flow.encoder.output_size").c_str(), num("flow.encoder.block_size").c_str(),
              num("flow.decoder.estimator.channels").c_str(), num("flow.decoder.estimator.num_mid_blocks").c_str(),
              num("flow.decoder.cfm_params.inference_cfg_rate").c_str());
  std::printf("config: hift: base_channels %s, sampling_rate %s, upsample_rates %s, n_fft %s, hop_len %s\n",
              num("hift.base_channels").c_str(), num("hift.sampling_rate").c_str(),
              num("hift.upsample_rates").c_str(), num("hift.istft_params.n_fft").c_str(),
              num("hift.istft_params.hop_len").c_str());
  print_state_dict((fs::path(dir) / "flow.pt").string());
  print_state_dict((fs::path(dir) / "hift.pt").string());
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  Args args(argc, argv, 2, {});
  args.check_known({"model"});
  const std::string dir = args.has("model") ? args.get("model") : args.positional(0, "model directory");
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(ErrorCode::kNotFound, dir, "", "no such directory");
  if (!fs::is_directory(dir, ec)) throw Error(ErrorCode::kBadInput, dir, "", "not a directory");
  const fs::path d(dir);
  // Nothing goes to stdout before the kind is known: a bad directory gives one stderr line.
  auto header = [&dir] { std::printf("model: %s\n", dir.c_str()); };

  if (fs::exists(d / "config.yaml") && fs::exists(d / "flow.pt") && fs::exists(d / "hift.pt")) {
    header();
    inspect_decoder(dir);
    return 0;
  }
  if (fs::exists(d / "config.json")) {
    const io::JsonConfig config = io::JsonConfig::load((d / "config.json").string());
    const std::string type = config.get_string("model_type", "");
    if (type == "whisper" || contains_arch(config, "WhisperVQ")) {
      header();
      inspect_tokenizer(dir, config);
      return 0;
    }
    if (type == "chatglm" || contains_arch(config, "ChatGLM")) {
      if (!fs::exists(d / "tokenizer.model")) {
        throw Error(ErrorCode::kNotFound, (d / "tokenizer.model").string(), "",
                    "ChatGLM config.json found but no tokenizer.model next to it");
      }
      header();
      inspect_llm(dir, config);
      return 0;
    }
    throw Error(ErrorCode::kBadConfig, (d / "config.json").string(), "model_type",
                "unknown model (model_type '" + type + "'; expected whisper or chatglm)");
  }
  if (fs::exists(d / "config.yaml")) {
    throw Error(ErrorCode::kNotFound, dir, "", "config.yaml found but flow.pt and/or hift.pt missing");
  }
  throw Error(ErrorCode::kNotFound, dir, "",
              "not a model directory (no config.json, or config.yaml + flow.pt + hift.pt)");
}

}  // namespace glmvoice::tools
