#include "io/error.h"

namespace glmvoice {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotFound: return "not found";
    case ErrorCode::kBadFile: return "bad file";
    case ErrorCode::kMismatch: return "mismatch";
    case ErrorCode::kBadConfig: return "bad config";
    case ErrorCode::kBadInput: return "bad input";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kDevice: return "device";
  }
  return "error";
}

static std::string format_error(const std::string& file, const std::string& key,
                                const std::string& reason) {
  std::string out;
  if (!file.empty()) out += file + ": ";
  if (!key.empty()) out += key + ": ";
  return out + reason;
}

Error::Error(ErrorCode code, std::string file, std::string key, std::string reason)
    : std::runtime_error(format_error(file, key, reason)),
      code_(code),
      file_(std::move(file)),
      key_(std::move(key)),
      reason_(std::move(reason)) {}

}  // namespace glmvoice
