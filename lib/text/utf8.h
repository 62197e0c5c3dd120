// UTF-8 helpers for the text tokenizer: validation with U+FFFD replacement (Python
// `errors="replace"` semantics: one U+FFFD per maximal invalid subpart, Unicode §3.9) and a
// streaming assembler that only ever emits complete characters (llm spec §5.6).
#pragma once

#include <string>

namespace glmvoice::text {

// Returns `bytes` with every maximal invalid subpart replaced by U+FFFD (EF BF BD).
std::string utf8_replace_invalid(const std::string& bytes);

// Streaming UTF-8 assembler. push() appends bytes and returns the longest complete prefix
// (invalid subparts become U+FFFD as soon as they can never become valid); an incomplete
// but still valid tail (at most 3 bytes) is held back. finish() flushes the tail with
// replacement. Non-text tokens between two push() calls do not flush anything.
class Utf8Assembler {
 public:
  std::string push(const std::string& bytes);
  std::string finish();
  void reset() { pending_.clear(); }
  size_t pending_bytes() const { return pending_.size(); }

 private:
  std::string pending_;
};

}  // namespace glmvoice::text
