// glmvoice::Error — the one exception type lib/ throws. It carries the file, the key or
// tensor name, and the reason, so a GStreamer element or the CLI can report exactly
// what was wrong ("flow.pt: decoder.estimator.x.weight: shape [3,4] != expected [3,5]").
#pragma once

#include <stdexcept>
#include <string>

namespace glmvoice {

enum class ErrorCode {
  kNotFound,     // a file or directory does not exist
  kBadFile,      // a file exists but is truncated, malformed or of an unknown format
  kMismatch,     // checkpoint and config disagree (missing tensor, wrong shape)
  kBadConfig,    // a config value is missing, of the wrong type or unsupported
  kBadInput,     // runtime input out of range (token id, audio format)
  kUnsupported,  // valid but not implemented (dtype, device)
  kDevice,       // device / allocation failure
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string file, std::string key, std::string reason);

  ErrorCode code() const { return code_; }
  const std::string& file() const { return file_; }
  const std::string& key() const { return key_; }
  const std::string& reason() const { return reason_; }

 private:
  ErrorCode code_;
  std::string file_;
  std::string key_;
  std::string reason_;
};

}  // namespace glmvoice
