// The weight of one linear layer of the LLM: dense in the compute dtype, or weight-only
// int8 / int4 quantized at load, multiplied by libtorch's packed-weight kernels with bfloat16
// activations (what gpt-fast and torchao call int8/int4 weight-only quantization).
//
//   int8: symmetric, one scale per output row (group = the whole input dimension K): that is
//         what at::_weight_int8pack_mm takes (per-channel scales only). q = round(w / s),
//         s = max|w_row| / 127, w ≈ q·s.
//   int4: asymmetric, one scale and zero per group of kInt4GroupSize input columns (64 or 32
//         where K is not a multiple of 128): q ∈ [0, 15], w ≈ (q − 8)·s + z, s = (max − min) / 15,
//         z = min + 8·s; kernels at::_weight_int4pack_mm_for_cpu (CPU) and
//         at::_weight_int4pack_mm (CUDA, sm80+).
// A combination the kernels do not run (e.g. int4 on an older GPU) fails at load with
// ErrorCode::kUnsupported naming the tensor, never at the first token.
//
// On a CPU with AVX2+FMA, activations of at most kSkinnyMaxRows rows (decode steps, batched
// decode) go through the hand-written kernels of cpu_skinny_matmul.h for all four formats
// (same dequantized weights, fp32 accumulation, batch-invariant); int4 is then packed in that
// kernel's layout and runs there for any row count. GLMVOICE_CPU_KERNELS=0 (read when the
// weight is made) keeps libtorch's kernels throughout.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include "llm/cpu_skinny_matmul.h"

#include <cstdint>
#include <string>

namespace glmvoice::llm {

constexpr int64_t kInt4GroupSize = 128;

class LinearWeight {
 public:
  LinearWeight() = default;
  // weight [N, K], any float dtype, on the model's device. `format`: kFloat / kBFloat16 /
  // kHalf (dense, stored in that dtype), runtime::kInt8 or runtime::kInt4 (quantized from
  // the weight's values; activations then bfloat16). `name` is the checkpoint key, for errors.
  static LinearWeight make(const at::Tensor& weight, c10::ScalarType format, const std::string& name = "");

  bool defined() const { return n_ > 0; }
  c10::ScalarType format() const { return format_; }
  int64_t out_features() const { return n_; }
  int64_t in_features() const { return k_; }
  int64_t group_size() const { return group_; }  // int4; K for int8; 0 dense
  int64_t numel() const { return n_ * k_; }      // logical parameters
  int64_t storage_bytes() const;                  // bytes held (packed weight + scales)
  // The weight the kernel multiplies by, [N, K] f32, read back through forward() of the
  // identity (so bf16-rounded like any output); for tests and error measurements.
  at::Tensor dequantized() const;
  // x [..., K] in the compute dtype -> [..., N]; bias [N] added (fused for dense weights).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias = {}) const;

 private:
  c10::ScalarType format_ = c10::kFloat;
  at::Tensor dense_;   // dense: [N, K]
  at::Tensor packed_;  // int8: [N, K] i8; int4: the backend's packed layout
  at::Tensor scales_;  // int8: [N] bf16; int4: [K/group, N, 2] bf16 (scale, zero)
  SkinnyInt4 skinny_int4_;  // int4 in the CPU kernel's layout (instead of packed_/scales_)
  bool skinny_ = false;     // CPU weight made while the skinny kernels were enabled
  int64_t n_ = 0, k_ = 0, group_ = 0;
};

// x [..., K] · Wᵀ (+ bias): what every projection of the model calls.
inline at::Tensor linear(const at::Tensor& x, const LinearWeight& w, const at::Tensor& bias = {}) {
  return w.forward(x, bias);
}

}  // namespace glmvoice::llm
