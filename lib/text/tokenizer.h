// GLM-4 text tokenizer: tiktoken-format byte-level BPE plus the added (special and audio)
// tokens of tokenizer_config.json (llm spec §5).
//
// Reference: THUDM glm-4-voice-9b tokenization_chatglm.py (ChatGLM4Tokenizer: tiktoken with
// no special tokens; transformers 4.44.1 splits added tokens first), openai/tiktoken
// byte_pair_merge (leftmost tie-break), cl100k_base pre-tokenizer pattern.
//
// Every id is read from the files: ranks from `tokenizer.model`, specials and
// `<|audio_N|>` from `tokenizer_config.json` (`added_tokens_decoder`, optional
// `added_tokens.json`). Thread-safety: a loaded Tokenizer is immutable; all methods are
// const and may be called from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace glmvoice::text {

struct AddedToken {
  int64_t id = -1;
  std::string content;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool special = true;
};

// How a model output id is classified (llm spec §6.4).
enum class TokenKind { kText, kAudio, kAdded, kUndefined };

class Tokenizer {
 public:
  // Reads `dir`/tokenizer.model and `dir`/tokenizer_config.json (+ optional
  // added_tokens.json). Throws glmvoice::Error naming file and key on any inconsistency.
  static Tokenizer load(const std::string& dir);
  // Same from explicit contents (tests). `added` may come in any order.
  static Tokenizer from_parts(const std::vector<std::string>& rank_bytes,
                              const std::vector<AddedToken>& added, const std::string& name);

  // encode(text): added-token split, pre-tokenize + BPE of every text segment, and the
  // `[gMASK]<sop>` prefix if `add_prefix` (spec §5.2, §5.5).
  std::vector<int64_t> encode(const std::string& text, bool add_prefix = true) const;
  // BPE only: added-token strings are treated as plain text.
  std::vector<int64_t> encode_ordinary(const std::string& text) const;
  // Pre-tokenizer pieces of one text segment (spec §5.3).
  std::vector<std::string> pretokenize(const std::string& text) const;
  // BPE of one piece (spec §5.4).
  std::vector<int64_t> bpe(const std::string& piece) const;

  // Concatenated bytes of `ids` decoded with U+FFFD replacement; added ids render as their
  // content, undefined ids as nothing (spec §5.6).
  std::string decode(const std::vector<int64_t>& ids) const;
  // Raw bytes of a rank, content of an added token, "" for an undefined id.
  std::string token_bytes(int64_t id) const;

  TokenKind kind(int64_t id) const;
  bool is_defined(int64_t id) const;
  // Id of an added token by content, or -1.
  int64_t find_added(const std::string& content) const;
  // Id of an added token by content; throws kMismatch naming the file if absent.
  int64_t added_id(const std::string& content) const;

  int64_t n_ranks() const { return static_cast<int64_t>(rank_bytes_.size()); }
  int64_t max_id() const { return max_id_; }  // largest defined id
  int64_t audio_offset() const { return audio_offset_; }  // id of <|audio_0|>, -1 if none
  int64_t n_audio() const { return n_audio_; }
  const std::string& name() const { return name_; }
  const std::vector<AddedToken>& added_tokens() const { return added_; }

  // Ids the prompt builder needs (looked up by content at load; -1 when absent).
  struct Specials {
    int64_t endoftext = -1, gmask = -1, sop = -1, system = -1, user = -1, assistant = -1,
            observation = -1, begin_of_audio = -1, end_of_audio = -1;
  };
  const Specials& specials() const { return specials_; }

  // Breaks every added-token string inside user text (inserts U+200B after each "<|" and
  // "[" that starts one), so user text cannot inject control tokens (spec §5.2.1, a
  // deliberate deviation from upstream).
  std::string sanitize(const std::string& user_text) const;

 private:
  struct Regex;
  void finish_setup();
  void split_added(const std::string& text, std::vector<std::pair<std::string, int64_t>>* out) const;
  void encode_segment(const std::string& text, std::vector<int64_t>* ids) const;

  std::string name_;
  std::vector<std::string> rank_bytes_;
  std::unordered_map<std::string, int64_t> ranks_;
  std::vector<AddedToken> added_;                       // sorted by id
  std::unordered_map<std::string, size_t> added_by_content_;
  std::unordered_map<int64_t, size_t> added_by_id_;
  std::vector<size_t> added_lengths_;                   // distinct content lengths, descending
  bool added_first_byte_[256] = {};
  int64_t max_id_ = -1;
  int64_t audio_offset_ = -1;
  int64_t n_audio_ = 0;
  Specials specials_;
  std::shared_ptr<const Regex> regex_;
};

}  // namespace glmvoice::text
