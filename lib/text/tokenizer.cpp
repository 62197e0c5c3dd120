// Reference: THUDM/glm-4-voice-9b tokenization_chatglm.py (tiktoken with the cl100k pattern,
// no special tokens), transformers 4.44.1 added-token trie split, openai/tiktoken
// src/lib.rs byte_pair_merge. Spec: ../shared/spec/llm.md §5.
#include "text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdint>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "io/error.h"
#include "io/json_config.h"
#include "runtime/options.h"
#include "text/utf8.h"

namespace glmvoice::text {

namespace fs = std::filesystem;

// §5.3: the cl100k_base / Llama-3 pre-tokenizer pattern (first matching alternative wins).
static const char kPattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
    "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)"
    "|\\s+";

struct Tokenizer::Regex {
  pcre2_code* code = nullptr;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

namespace {

constexpr int64_t kNoRank = std::numeric_limits<int64_t>::max();

std::string base64_decode(const std::string& in, const std::string& file, size_t line) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int v = value(c);
    if (v < 0) {
      throw Error(ErrorCode::kBadFile, file, "line " + std::to_string(line),
                  "invalid base64 character in '" + in + "'");
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kNotFound, path, "", "cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool is_space_byte(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  const std::string model_path = (fs::path(dir) / "tokenizer.model").string();
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();

  // tokenizer.model: "base64 rank" per line (§5.1).
  const std::string text = read_file(model_path);
  std::vector<std::string> rank_bytes;
  std::vector<bool> seen;
  std::istringstream lines(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    std::istringstream fields(line);
    std::string b64, rank_text;
    if (!(fields >> b64)) continue;  // empty line
    if (!(fields >> rank_text)) {
      throw Error(ErrorCode::kBadFile, model_path, "line " + std::to_string(line_no), "missing rank");
    }
    int64_t rank = -1;
    try {
      size_t used = 0;
      rank = std::stoll(rank_text, &used);
      if (used != rank_text.size()) rank = -1;
    } catch (const std::exception&) {
    }
    if (rank < 0 || rank > 10'000'000) {
      throw Error(ErrorCode::kBadFile, model_path, "line " + std::to_string(line_no),
                  "bad rank '" + rank_text + "'");
    }
    const auto r = static_cast<size_t>(rank);
    if (r >= rank_bytes.size()) {
      rank_bytes.resize(r + 1);
      seen.resize(r + 1, false);
    }
    if (seen[r]) {
      throw Error(ErrorCode::kBadFile, model_path, "line " + std::to_string(line_no),
                  "duplicate rank " + rank_text);
    }
    seen[r] = true;
    rank_bytes[r] = base64_decode(b64, model_path, line_no);
  }
  for (size_t r = 0; r < seen.size(); ++r) {
    if (!seen[r]) {
      throw Error(ErrorCode::kBadFile, model_path, "rank " + std::to_string(r),
                  "ranks are not contiguous from 0");
    }
  }

  // tokenizer_config.json added_tokens_decoder (+ added_tokens.json).
  const auto config = io::JsonConfig::load(config_path);
  std::vector<AddedToken> added;
  std::set<int64_t> ids;
  if (config.has("added_tokens_decoder")) {
    const auto& decoder = config.json().at("added_tokens_decoder");
    if (!decoder.is_object()) {
      throw Error(ErrorCode::kBadConfig, config_path, "added_tokens_decoder", "not an object");
    }
    for (auto it = decoder.begin(); it != decoder.end(); ++it) {
      AddedToken token;
      try {
        size_t used = 0;
        token.id = std::stoll(it.key(), &used);
        if (used != it.key().size()) token.id = -1;
      } catch (const std::exception&) {
        token.id = -1;
      }
      const auto& v = it.value();
      if (token.id < 0 || !v.is_object() || !v.contains("content") || !v["content"].is_string()) {
        throw Error(ErrorCode::kBadConfig, config_path, "added_tokens_decoder." + it.key(),
                    "expected a decimal id with {\"content\": string, ...}");
      }
      token.content = v["content"].get<std::string>();
      auto flag = [&](const char* key) { return v.contains(key) && v[key].is_boolean() && v[key].get<bool>(); };
      token.lstrip = flag("lstrip");
      token.rstrip = flag("rstrip");
      token.single_word = flag("single_word");
      token.special = !v.contains("special") || flag("special");
      if (token.single_word) {
        throw Error(ErrorCode::kUnsupported, config_path, "added_tokens_decoder." + it.key(),
                    "single_word added tokens are not supported");
      }
      ids.insert(token.id);
      added.push_back(std::move(token));
    }
  }
  const std::string extra_path = (fs::path(dir) / "added_tokens.json").string();
  if (fs::exists(extra_path)) {
    const auto extra = io::JsonConfig::load(extra_path);
    for (auto it = extra.json().begin(); it != extra.json().end(); ++it) {
      if (!it.value().is_number_integer()) {
        throw Error(ErrorCode::kBadConfig, extra_path, it.key(), "expected an integer id");
      }
      const int64_t id = it.value().get<int64_t>();
      bool known = false;
      for (const auto& t : added) {
        if (t.id == id) {
          if (t.content != it.key()) {
            throw Error(ErrorCode::kMismatch, extra_path, it.key(),
                        "id " + std::to_string(id) + " is '" + t.content + "' in tokenizer_config.json");
          }
          known = true;
        }
      }
      if (!known) {
        AddedToken token;
        token.id = id;
        token.content = it.key();
        added.push_back(std::move(token));
      }
    }
  }
  Tokenizer tok = from_parts(rank_bytes, added, dir);
  // §7.3 rule 5: the ids the chat protocol needs must exist.
  for (const char* required : {"[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
                               "<|begin_of_audio|>", "<|end_of_audio|>"}) {
    if (tok.find_added(required) < 0) {
      throw Error(ErrorCode::kMismatch, config_path, "added_tokens_decoder",
                  std::string("required token ") + required + " is not defined");
    }
  }
  return tok;
}

Tokenizer Tokenizer::from_parts(const std::vector<std::string>& rank_bytes,
                                const std::vector<AddedToken>& added, const std::string& name) {
  Tokenizer tok;
  tok.name_ = name;
  tok.rank_bytes_ = rank_bytes;
  tok.ranks_.reserve(rank_bytes.size() * 2);
  for (size_t r = 0; r < rank_bytes.size(); ++r) {
    if (!tok.ranks_.emplace(rank_bytes[r], static_cast<int64_t>(r)).second) {
      throw Error(ErrorCode::kBadFile, name, "rank " + std::to_string(r), "duplicate token bytes");
    }
  }
  for (int b = 0; b < 256; ++b) {
    if (!tok.ranks_.count(std::string(1, static_cast<char>(b)))) {
      throw Error(ErrorCode::kBadFile, name, "tokenizer.model",
                  "single byte 0x" + std::to_string(b) + " has no rank (text would be unencodable)");
    }
  }
  tok.added_ = added;
  std::sort(tok.added_.begin(), tok.added_.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  tok.finish_setup();
  return tok;
}

void Tokenizer::finish_setup() {
  std::set<size_t> lengths;
  max_id_ = n_ranks() - 1;
  for (size_t i = 0; i < added_.size(); ++i) {
    const auto& t = added_[i];
    if (t.id < n_ranks()) {
      throw Error(ErrorCode::kMismatch, name_, t.content,
                  "added id " + std::to_string(t.id) + " collides with the BPE ranks (" +
                      std::to_string(n_ranks()) + ")");
    }
    if (t.content.empty()) throw Error(ErrorCode::kBadConfig, name_, std::to_string(t.id), "empty content");
    if (!added_by_id_.emplace(t.id, i).second) {
      throw Error(ErrorCode::kMismatch, name_, t.content, "duplicate added id " + std::to_string(t.id));
    }
    if (!added_by_content_.emplace(t.content, i).second) {
      throw Error(ErrorCode::kMismatch, name_, t.content, "duplicate added token content");
    }
    lengths.insert(t.content.size());
    added_first_byte_[static_cast<uint8_t>(t.content[0])] = true;
    max_id_ = std::max(max_id_, t.id);
  }
  added_lengths_.assign(lengths.rbegin(), lengths.rend());

  specials_.endoftext = find_added("<|endoftext|>");
  specials_.gmask = find_added("[gMASK]");
  specials_.sop = find_added("<sop>");
  specials_.system = find_added("<|system|>");
  specials_.user = find_added("<|user|>");
  specials_.assistant = find_added("<|assistant|>");
  specials_.observation = find_added("<|observation|>");
  specials_.begin_of_audio = find_added("<|begin_of_audio|>");
  specials_.end_of_audio = find_added("<|end_of_audio|>");

  // §5.7: audio tokens contiguous from id(<|audio_0|>).
  audio_offset_ = find_added("<|audio_0|>");
  n_audio_ = 0;
  if (audio_offset_ >= 0) {
    while (find_added("<|audio_" + std::to_string(n_audio_) + "|>") == audio_offset_ + n_audio_) ++n_audio_;
    const std::string next = "<|audio_" + std::to_string(n_audio_) + "|>";
    if (find_added(next) >= 0) {
      throw Error(ErrorCode::kMismatch, name_, next,
                  "audio tokens are not contiguous from <|audio_0|> = " + std::to_string(audio_offset_));
    }
  }

  auto regex = std::make_shared<Regex>();
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP, &err, &err_offset, nullptr);
  if (!regex->code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(err, buffer, sizeof(buffer));
    throw Error(ErrorCode::kUnsupported, name_, "pre-tokenizer",
                std::string("PCRE2 cannot compile the pattern: ") + reinterpret_cast<char*>(buffer));
  }
  pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);  // optional speed-up; ignore failure
  regex_ = regex;
}

int64_t Tokenizer::find_added(const std::string& content) const {
  auto it = added_by_content_.find(content);
  return it == added_by_content_.end() ? -1 : added_[it->second].id;
}

int64_t Tokenizer::added_id(const std::string& content) const {
  const int64_t id = find_added(content);
  if (id < 0) throw Error(ErrorCode::kMismatch, name_, content, "token is not defined by the tokenizer");
  return id;
}

bool Tokenizer::is_defined(int64_t id) const {
  return (id >= 0 && id < n_ranks()) || added_by_id_.count(id) > 0;
}

TokenKind Tokenizer::kind(int64_t id) const {
  if (id >= 0 && id < n_ranks()) return TokenKind::kText;
  if (audio_offset_ >= 0 && id >= audio_offset_ && id < audio_offset_ + n_audio_) return TokenKind::kAudio;
  if (added_by_id_.count(id)) return TokenKind::kAdded;
  return TokenKind::kUndefined;
}

std::string Tokenizer::token_bytes(int64_t id) const {
  if (id >= 0 && id < n_ranks()) return rank_bytes_[static_cast<size_t>(id)];
  auto it = added_by_id_.find(id);
  return it == added_by_id_.end() ? std::string() : added_[it->second].content;
}

// §5.2.1: leftmost-longest split on added-token contents, honouring lstrip/rstrip.
void Tokenizer::split_added(const std::string& text,
                            std::vector<std::pair<std::string, int64_t>>* out) const {
  std::vector<std::pair<std::string, int64_t>> segs;
  size_t start = 0, pos = 0;
  while (pos < text.size()) {
    size_t matched = 0;
    int64_t id = -1;
    if (added_first_byte_[static_cast<uint8_t>(text[pos])]) {
      for (size_t len : added_lengths_) {
        if (pos + len > text.size()) continue;
        auto it = added_by_content_.find(text.substr(pos, len));
        if (it != added_by_content_.end()) {
          matched = len;
          id = added_[it->second].id;
          break;
        }
      }
    }
    if (!matched) {
      ++pos;
      continue;
    }
    if (pos > start) segs.emplace_back(text.substr(start, pos - start), -1);
    segs.emplace_back(std::string(), id);
    pos += matched;
    start = pos;
  }
  if (start < text.size()) segs.emplace_back(text.substr(start), -1);

  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].second < 0) continue;
    const auto& tok = added_[added_by_id_.at(segs[i].second)];
    if (tok.lstrip && i > 0 && segs[i - 1].second < 0) {
      auto& s = segs[i - 1].first;
      while (!s.empty() && is_space_byte(s.back())) s.pop_back();
    }
    if (tok.rstrip && i + 1 < segs.size() && segs[i + 1].second < 0) {
      auto& s = segs[i + 1].first;
      size_t k = 0;
      while (k < s.size() && is_space_byte(s[k])) ++k;
      s.erase(0, k);
    }
  }
  for (auto& s : segs) {
    if (s.second >= 0 || !s.first.empty()) out->push_back(std::move(s));
  }
}

std::vector<std::string> Tokenizer::pretokenize(const std::string& raw) const {
  std::string text = utf8_replace_invalid(raw);
  if (text.size() != raw.size() || text != raw) {
    runtime::log(runtime::LogLevel::kWarning, "text tokenizer: invalid UTF-8 replaced by U+FFFD");
  }
  std::vector<std::string> pieces;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    const int rc = pcre2_match(regex_->code, subject, text.size(), offset, PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) {  // cannot happen (the alternatives cover every character); keep the rest
      pieces.push_back(text.substr(offset));
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[0] > offset) pieces.push_back(text.substr(offset, ov[0] - offset));
    if (ov[1] <= ov[0]) {  // empty match: advance one character
      size_t next = ov[0] + 1;
      while (next < text.size() && (static_cast<uint8_t>(text[next]) & 0xC0) == 0x80) ++next;
      pieces.push_back(text.substr(ov[0], next - ov[0]));
      offset = next;
      continue;
    }
    pieces.push_back(text.substr(ov[0], ov[1] - ov[0]));
    offset = ov[1];
  }
  pcre2_match_data_free(md);
  return pieces;
}

// §5.4: tiktoken byte_pair_merge: smallest rank first, leftmost on ties.
std::vector<int64_t> Tokenizer::bpe(const std::string& piece) const {
  auto whole = ranks_.find(piece);
  if (whole != ranks_.end()) return {whole->second};
  std::vector<size_t> starts(piece.size() + 1);
  for (size_t i = 0; i <= piece.size(); ++i) starts[i] = i;
  auto pair_rank = [&](size_t j) -> int64_t {
    if (j + 2 >= starts.size()) return kNoRank;
    auto it = ranks_.find(piece.substr(starts[j], starts[j + 2] - starts[j]));
    return it == ranks_.end() ? kNoRank : it->second;
  };
  std::vector<int64_t> ranks(starts.size() > 2 ? starts.size() - 2 : 0);
  for (size_t j = 0; j < ranks.size(); ++j) ranks[j] = pair_rank(j);
  while (!ranks.empty()) {
    size_t best = 0;
    for (size_t j = 1; j < ranks.size(); ++j) {
      if (ranks[j] < ranks[best]) best = j;
    }
    if (ranks[best] == kNoRank) break;
    starts.erase(starts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
    ranks.erase(ranks.begin() + static_cast<std::ptrdiff_t>(best));
    if (best < ranks.size()) ranks[best] = pair_rank(best);
    if (best > 0) ranks[best - 1] = pair_rank(best - 1);
  }
  std::vector<int64_t> ids;
  ids.reserve(starts.size() - 1);
  for (size_t j = 0; j + 1 < starts.size(); ++j) {
    auto it = ranks_.find(piece.substr(starts[j], starts[j + 1] - starts[j]));
    if (it == ranks_.end()) throw Error(ErrorCode::kBadFile, name_, "bpe", "part without rank");
    ids.push_back(it->second);
  }
  return ids;
}

void Tokenizer::encode_segment(const std::string& text, std::vector<int64_t>* ids) const {
  for (const auto& piece : pretokenize(text)) {
    const auto part = bpe(piece);
    ids->insert(ids->end(), part.begin(), part.end());
  }
}

std::vector<int64_t> Tokenizer::encode_ordinary(const std::string& text) const {
  std::vector<int64_t> ids;
  encode_segment(text, &ids);
  return ids;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_prefix) const {
  std::vector<int64_t> ids;
  if (add_prefix) {
    if (specials_.gmask < 0 || specials_.sop < 0) {
      throw Error(ErrorCode::kMismatch, name_, "[gMASK]/<sop>", "prefix tokens are not defined");
    }
    ids.push_back(specials_.gmask);
    ids.push_back(specials_.sop);
  }
  std::vector<std::pair<std::string, int64_t>> segs;
  split_added(text, &segs);
  for (const auto& seg : segs) {
    if (seg.second >= 0) {
      ids.push_back(seg.second);
    } else {
      encode_segment(seg.first, &ids);
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string bytes;
  for (int64_t id : ids) {
    if (!is_defined(id)) {
      runtime::log(runtime::LogLevel::kWarning, "text tokenizer: id " + std::to_string(id) +
                                                    " is not a token; decoded as nothing");
      continue;
    }
    bytes += token_bytes(id);
  }
  return utf8_replace_invalid(bytes);
}

std::string Tokenizer::sanitize(const std::string& user_text) const {
  std::vector<std::pair<std::string, int64_t>> segs;
  split_added(user_text, &segs);
  bool any = false;
  for (const auto& s : segs) any = any || s.second >= 0;
  if (!any) return user_text;
  // Re-scan without stripping: rebuild from the original text so whitespace is preserved.
  std::string out;
  size_t pos = 0;
  while (pos < user_text.size()) {
    size_t matched = 0;
    if (added_first_byte_[static_cast<uint8_t>(user_text[pos])]) {
      for (size_t len : added_lengths_) {
        if (pos + len <= user_text.size() && added_by_content_.count(user_text.substr(pos, len))) {
          matched = len;
          break;
        }
      }
    }
    if (!matched) {
      out.push_back(user_text[pos++]);
      continue;
    }
    out.push_back(user_text[pos]);
    out += "\xE2\x80\x8B";  // U+200B ZERO WIDTH SPACE breaks the control-token string
    out.append(user_text, pos + 1, matched - 1);
    pos += matched;
  }
  return out;
}

}  // namespace glmvoice::text
