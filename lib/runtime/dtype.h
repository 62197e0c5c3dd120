// Which dtype and device a stage runs in: per-stage defaults and refusals, the LLM's weight-only
// formats, one canonical name per device, and the CUDA numerics. (options.h holds ModelOptions
// and the parsers; parse_dtype() also accepts "int8", "int4" and "auto".)
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "runtime/options.h"

namespace glmvoice::runtime {

// Weight-only quantized formats, carried in ModelOptions::dtype (LLM only): weights quantized
// at load, activations bfloat16.
constexpr c10::ScalarType kInt8 = c10::kChar;
constexpr c10::ScalarType kInt4 = c10::kQUInt4x2;

bool is_weight_only(c10::ScalarType dtype);  // int8 / int4
// The dtype activations are computed in: bfloat16 for the weight-only formats, else dtype.
c10::ScalarType compute_dtype(c10::ScalarType dtype);

// "cuda" is "cuda:0" (the process's first device), so one physical device has one name and
// one model-cache key (parse_device() and options_key() apply it).
c10::Device canonical_device(c10::Device device);

// Stage defaults when dtype is Undefined ("auto"): the LLM runs bfloat16 on CUDA and float32
// on CPU (llm spec §3.7); the tokenizer and the decoder float32 everywhere.
enum class Stage { kTokenizer, kLlm, kDecoder };
c10::ScalarType default_dtype(Stage stage, c10::Device device);
// Fills Undefined with the stage default and canonicalises the device; throws kUnsupported for
// a dtype the stage cannot run (float16 for the LLM, int8/int4 outside the LLM) and for a CUDA
// device in a CPU-only build or without a GPU. On CUDA, sets the numerics once
// (configure_cuda_numerics()).
ModelOptions resolve_options(ModelOptions options, Stage stage);

// TF32 off for cuDNN convolutions and cuBLAS matmuls, once per process (decoder spec P16:
// TF32's 10-bit mantissa moves the mel by ~1e-3 relative, which the phase accumulation turns
// into audible-size drift). No-op without CUDA.
void configure_cuda_numerics();

}  // namespace glmvoice::runtime
