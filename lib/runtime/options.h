// Device / dtype choice shared by the three models, and the library log hook.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <functional>
#include <string>

namespace glmvoice {

// What identifies a loaded model: the model cache keys on all three fields.
struct ModelOptions {
  std::string path;                      // model directory (HF layout)
  c10::Device device = c10::Device(c10::kCPU);
  c10::ScalarType dtype = c10::kFloat;   // compute dtype
};

namespace runtime {

bool cuda_available();
// "cpu", "cuda", "cuda:N"; "" or "auto" = CUDA when available, else CPU. kBadConfig otherwise.
c10::Device parse_device(const std::string& text);
// "float32"/"fp32"/"f32", "bfloat16"/"bf16", "float16"/"fp16"/"half"; kBadConfig otherwise.
c10::ScalarType parse_dtype(const std::string& text);
std::string dtype_name(c10::ScalarType dtype);  // "float32", "bfloat16", "float16"
std::string options_key(const ModelOptions& options);  // "path|device|dtype"

enum class LogLevel { kDebug, kInfo, kWarning };
using LogHook = std::function<void(LogLevel, const std::string&)>;
// lib never prints: it calls this hook (default: none). The gst/ layer bridges it to the
// `glmvoicelib` debug category, the CLI to stderr with --verbose.
void set_log_hook(LogHook hook);
void log(LogLevel level, const std::string& message);

}  // namespace runtime
}  // namespace glmvoice
