#include "runtime/options.h"

#include "runtime/dtype.h"

#include <ATen/Context.h>

#include <mutex>

#include "io/error.h"

namespace glmvoice::runtime {

bool cuda_available() { return at::hasCUDA(); }

c10::Device canonical_device(c10::Device device) {
  if (device.is_cuda() && !device.has_index()) return c10::Device(c10::kCUDA, 0);
  return device;
}

c10::Device parse_device(const std::string& text) {
  if (text.empty() || text == "auto") {
    return cuda_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  try {
    c10::Device device(text);
    if (device.is_cpu() || device.is_cuda()) return canonical_device(device);
  } catch (const std::exception&) {
  }
  throw Error(ErrorCode::kBadConfig, "", "device",
              "unknown device '" + text + "' (expected cpu, cuda or cuda:N)");
}

c10::ScalarType parse_dtype(const std::string& text) {
  if (text.empty() || text == "auto") return c10::ScalarType::Undefined;
  if (text == "float32" || text == "fp32" || text == "f32" || text == "float") return c10::kFloat;
  if (text == "bfloat16" || text == "bf16") return c10::kBFloat16;
  if (text == "float16" || text == "fp16" || text == "f16" || text == "half") return c10::kHalf;
  if (text == "int8") return kInt8;
  if (text == "int4") return kInt4;
  throw Error(ErrorCode::kBadConfig, "", "dtype",
              "unknown dtype '" + text + "' (expected float32, bfloat16, float16, int8 or int4)");
}

std::string dtype_name(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    case kInt8: return "int8";
    case kInt4: return "int4";
    case c10::ScalarType::Undefined: return "auto";
    default: return c10::toString(dtype);
  }
}

bool is_weight_only(c10::ScalarType dtype) { return dtype == kInt8 || dtype == kInt4; }

c10::ScalarType compute_dtype(c10::ScalarType dtype) {
  return is_weight_only(dtype) ? c10::kBFloat16 : dtype;
}

c10::ScalarType default_dtype(Stage stage, c10::Device device) {
  return stage == Stage::kLlm && device.is_cuda() ? c10::kBFloat16 : c10::kFloat;
}

ModelOptions resolve_options(ModelOptions options, Stage stage) {
  options.device = canonical_device(options.device);
  if (options.device.is_cuda()) {
    if (!cuda_available()) {
      throw Error(ErrorCode::kUnsupported, options.path, "device",
                  options.device.str() + " requested, but this build or machine has no CUDA (" +
                      std::string(GLMVOICE_HAVE_CUDA ? "no usable GPU" : "libglmvoice was built CPU-only") + ")");
    }
    configure_cuda_numerics();
  }
  if (options.dtype == c10::ScalarType::Undefined) options.dtype = default_dtype(stage, options.device);
  const char* what = stage == Stage::kLlm ? "LLM" : stage == Stage::kTokenizer ? "tokenizer" : "decoder";
  if (stage == Stage::kLlm && options.dtype == c10::kHalf) {
    // llm spec §3.7: GLM-4 activations overflow float16's range (its tiny RMSNorm eps is a hint).
    throw Error(ErrorCode::kUnsupported, options.path, "dtype",
                "float16 is not supported for the LLM (its activations overflow float16): use bfloat16, "
                "float32, int8 or int4");
  }
  if (stage != Stage::kLlm && is_weight_only(options.dtype)) {
    throw Error(ErrorCode::kUnsupported, options.path, "dtype",
                dtype_name(options.dtype) + " weights are an LLM option; the " + std::string(what) +
                    " runs float32, bfloat16 or float16");
  }
  if (options.dtype != c10::kFloat && options.dtype != c10::kBFloat16 && options.dtype != c10::kHalf &&
      !is_weight_only(options.dtype)) {
    throw Error(ErrorCode::kUnsupported, options.path, "dtype", "unsupported dtype " + dtype_name(options.dtype));
  }
  return options;
}

std::string options_key(const ModelOptions& options) {
  return options.path + "|" + canonical_device(options.device).str() + "|" + dtype_name(options.dtype);
}

void configure_cuda_numerics() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!cuda_available()) return;
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  });
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
