#include "text/utf8.h"

#include <cstdint>

namespace glmvoice::text {

namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";

// Decodes from `s[i]`. Returns the number of bytes of a complete valid character (> 0),
// or 0 with `*invalid_len` = length of the maximal invalid subpart (>= 1), or -1 when the
// bytes up to the end are a valid but incomplete prefix.
int scan_char(const std::string& s, size_t i, size_t* invalid_len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) return 1;
  int need = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *invalid_len = 1;
    return 0;
  }
  for (int k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return -1;
    const auto b = static_cast<uint8_t>(s[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80;
    const uint8_t h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) {
      *invalid_len = static_cast<size_t>(k);
      return 0;
    }
  }
  return need + 1;
}

// Appends the valid/replaced form of s[0..) to `out`; returns the offset where an
// incomplete tail starts (s.size() if none, or when `final`).
size_t convert(const std::string& s, bool final, std::string* out) {
  size_t i = 0;
  while (i < s.size()) {
    size_t invalid_len = 0;
    const int n = scan_char(s, i, &invalid_len);
    if (n > 0) {
      out->append(s, i, static_cast<size_t>(n));
      i += static_cast<size_t>(n);
    } else if (n == 0) {
      out->append(kReplacement);
      i += invalid_len;
    } else {
      if (!final) return i;
      out->append(kReplacement);  // truncated sequence at the very end: one replacement
      return s.size();
    }
  }
  return s.size();
}

}  // namespace

std::string utf8_replace_invalid(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  convert(bytes, true, &out);
  return out;
}

std::string Utf8Assembler::push(const std::string& bytes) {
  pending_ += bytes;
  std::string out;
  const size_t keep = convert(pending_, false, &out);
  pending_.erase(0, keep);
  return out;
}

std::string Utf8Assembler::finish() {
  std::string out;
  convert(pending_, true, &out);
  pending_.clear();
  return out;
}

}  // namespace glmvoice::text
