#include "runtime/options.h"

#include <ATen/Context.h>

#include <mutex>

#include "io/error.h"

namespace glmvoice::runtime {

bool cuda_available() { return at::hasCUDA(); }

c10::Device parse_device(const std::string& text) {
  if (text.empty() || text == "auto") {
    return cuda_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  try {
    c10::Device device(text);
    if (device.is_cpu() || device.is_cuda()) return device;
  } catch (const std::exception&) {
  }
  throw Error(ErrorCode::kBadConfig, "", "device",
              "unknown device '" + text + "' (expected cpu, cuda or cuda:N)");
}

c10::ScalarType parse_dtype(const std::string& text) {
  if (text == "float32" || text == "fp32" || text == "f32" || text == "float") return c10::kFloat;
  if (text == "bfloat16" || text == "bf16") return c10::kBFloat16;
  if (text == "float16" || text == "fp16" || text == "f16" || text == "half") return c10::kHalf;
  throw Error(ErrorCode::kBadConfig, "", "dtype",
              "unknown dtype '" + text + "' (expected float32, bfloat16 or float16)");
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: return c10::toString(dtype);
  }
}

std::string options_key(const ModelOptions& options) {
  return options.path + "|" + options.device.str() + "|" + dtype_name(options.dtype);
}

namespace {
std::mutex& hook_mutex() {
  static std::mutex mutex;
  return mutex;
}
LogHook& hook_slot() {
  static LogHook hook;
  return hook;
}
}  // namespace

void set_log_hook(LogHook hook) {
  std::lock_guard<std::mutex> lock(hook_mutex());
  hook_slot() = std::move(hook);
}

void log(LogLevel level, const std::string& message) {
  LogHook hook;
  {
    std::lock_guard<std::mutex> lock(hook_mutex());
    hook = hook_slot();
  }
  if (hook) hook(level, message);
}

}  // namespace glmvoice::runtime
