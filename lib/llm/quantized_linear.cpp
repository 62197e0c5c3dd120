// Reference: pytorch-labs/gpt-fast quantize.py (WeightOnlyInt8QuantHandler,
// get_group_qparams / group_quantize_tensor / pack_scales_and_zeros for int4), PyTorch
// aten/src/ATen/native/LinearAlgebra.cpp (_weight_int8pack_mm, _weight_int4pack_mm_for_cpu
// argument checks) and native/cuda/int4mm.cu (tinygemm layout, sm80+).
#include "llm/quantized_linear.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

#include "io/error.h"
#include "runtime/dtype.h"
#include "runtime/options.h"

namespace glmvoice::llm {

namespace {

// tinygemm's k-tiling: K must be a multiple of 16 · kInnerKTiles for the CUDA layout.
constexpr int64_t kInnerKTiles = 8;

int64_t int4_group_for(int64_t k) {
  for (int64_t g : {kInt4GroupSize, int64_t{64}, int64_t{32}}) {
    if (k % g == 0) return g;
  }
  return 0;
}

// GLMVOICE_INT8_CUDA_KERNEL=pack: libtorch's _weight_int8pack_mm on CUDA too (to measure it).
bool int8_pack_kernel_on_cuda() {
  static const bool pack = [] {
    const char* env = std::getenv("GLMVOICE_INT8_CUDA_KERNEL");
    return env != nullptr && std::string(env) == "pack";
  }();
  return pack;
}

[[noreturn]] void unsupported(const std::string& name, const std::string& why) {
  throw Error(ErrorCode::kUnsupported, "", name, why);
}

}  // namespace

LinearWeight LinearWeight::make(const at::Tensor& weight, c10::ScalarType format, const std::string& name) {
  TORCH_CHECK(weight.dim() == 2, "LinearWeight: weight must be [N, K]");
  LinearWeight lw;
  lw.format_ = format;
  lw.n_ = weight.size(0);
  lw.k_ = weight.size(1);
  const auto dev = weight.device();
  lw.skinny_ = dev.is_cpu() && skinny_kernels_enabled() &&
               (format == at::kFloat || format == at::kBFloat16 || runtime::is_weight_only(format));
  if (!runtime::is_weight_only(format)) {
    lw.dense_ = weight.to(format).contiguous();
    return lw;
  }
  const at::Tensor w = weight.to(at::kFloat);
  if (format == runtime::kInt8) {
    lw.group_ = lw.k_;
    // Scale rounded to bf16 first, so q is chosen for the scale the kernel will use.
    at::Tensor scale = (w.abs().amax(1) / 127.0).clamp_min(1e-10).to(at::kBFloat16);
    lw.packed_ = at::round(w / scale.to(at::kFloat).unsqueeze(1)).clamp(-128, 127).to(at::kChar).contiguous();
    lw.scales_ = scale.contiguous();
  } else {
    lw.group_ = int4_group_for(lw.k_);
    if (lw.group_ == 0) {
      unsupported(name, "int4 needs an input dimension divisible by 32, got " + std::to_string(lw.k_));
    }
    if (dev.is_cuda() && lw.k_ % (16 * kInnerKTiles) != 0) {
      unsupported(name, "int4 on CUDA needs an input dimension divisible by " + std::to_string(16 * kInnerKTiles) +
                            ", got " + std::to_string(lw.k_));
    }
    const int64_t groups = lw.k_ / lw.group_;
    at::Tensor wg = w.view({lw.n_, groups, lw.group_});
    at::Tensor lo = std::get<0>(wg.min(2)), hi = std::get<0>(wg.max(2));  // [N, groups]
    at::Tensor scale = ((hi - lo).clamp_min(1e-6) / 15.0).to(at::kBFloat16);
    at::Tensor zero = (lo + scale.to(at::kFloat) * 8.0).to(at::kBFloat16);
    at::Tensor s32 = scale.to(at::kFloat).unsqueeze(2), min32 = (zero.to(at::kFloat) - scale.to(at::kFloat) * 8.0).unsqueeze(2);
    at::Tensor q = at::round((wg - min32) / s32).clamp(0, 15).to(at::kInt).view({lw.n_, lw.k_});
    if (lw.skinny_) {
      lw.skinny_int4_ = skinny_pack_int4(q, scale, zero, lw.group_);
      return lw;
    }
    // [K/group, N, 2]: scale, zero
    lw.scales_ = at::stack({scale, zero}, 2).transpose(0, 1).contiguous();
    try {
      if (dev.is_cuda()) {
        // two codes per byte, even column in the high nibble
        at::Tensor q8 = (q.slice(1, 0, lw.k_, 2).bitwise_left_shift(4) | q.slice(1, 1, lw.k_, 2)).to(at::kByte);
        lw.packed_ = at::_convert_weight_to_int4pack(q8.contiguous(), kInnerKTiles);
      } else {
        lw.packed_ = at::_convert_weight_to_int4pack_for_cpu(q.contiguous(), kInnerKTiles);
      }
    } catch (const c10::Error& e) {
      unsupported(name, "int4 weights on " + dev.str() + ": " + e.what_without_backtrace());
    }
  }
  // Probe the kernel once now: an unsupported device/dtype fails at load, with the name.
  try {
    lw.forward(at::zeros({1, lw.k_}, at::TensorOptions().dtype(at::kBFloat16).device(dev)));
  } catch (const c10::Error& e) {
    unsupported(name, runtime::dtype_name(format) + " weights on " + dev.str() + ": " + e.what_without_backtrace());
  }
  return lw;
}

int64_t LinearWeight::storage_bytes() const {
  int64_t b = 0;
  for (const at::Tensor* t : {&dense_, &packed_, &scales_, &skinny_int4_.codes, &skinny_int4_.params}) {
    if (t->defined()) b += t->numel() * static_cast<int64_t>(t->element_size());
  }
  return b;
}

at::Tensor LinearWeight::forward(const at::Tensor& x, const at::Tensor& bias) const {
  TORCH_CHECK(x.size(-1) == k_, "LinearWeight: input has ", x.size(-1), " features, weight ", k_);
  auto out_shape = x.sizes().vec();
  out_shape.back() = n_;
  const int64_t rows = k_ > 0 ? x.numel() / k_ : 0;
  // Decode-sized inputs on the CPU: the AVX2 kernels (libtorch's are far from the memory
  // floor there, see cpu_skinny_matmul.h). int4 in the kernel's layout has no other path.
  const bool x_ok = x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16);
  if (skinny_ && x_ok && (rows <= kSkinnyMaxRows || skinny_int4_.codes.defined()) &&
      (!dense_.defined() || x.scalar_type() == dense_.scalar_type())) {
    const at::Tensor a = x.reshape({rows, k_}).contiguous();
    at::Tensor y;
    if (dense_.defined()) {
      y = skinny_linear_dense(a, dense_, bias);
    } else if (format_ == runtime::kInt8) {
      y = skinny_linear_int8(a, packed_, scales_, bias);
    } else {
      y = skinny_linear_int4(a, skinny_int4_, bias);
    }
    return y.view(out_shape);
  }
  if (dense_.defined()) return at::linear(x, dense_, bias.defined() ? c10::optional<at::Tensor>(bias) : c10::nullopt);
  TORCH_CHECK(!skinny_int4_.codes.defined(), "LinearWeight: int4 weights packed for the CPU kernel need a float32 or "
              "bfloat16 input on the CPU");
  at::Tensor a = x.reshape({-1, k_}).contiguous();
  at::Tensor y;
  if (format_ == runtime::kInt8 && a.is_cuda() && !int8_pack_kernel_on_cuda()) {
    // libtorch's CUDA _weight_int8pack_mm is a plain kernel: 85 ms per 9B decode step on an
    // H200, 19x the floor (gpu-check 2026-11-30). The codes widen exactly to bf16, cuBLAS
    // multiplies, the row scale comes after the sum as in the packed kernel (one more rounding).
    y = at::mm(a, packed_.to(a.scalar_type()).t()).mul_(scales_.to(a.scalar_type()));
  } else if (format_ == runtime::kInt8) {
    y = at::_weight_int8pack_mm(a, packed_, scales_.to(a.scalar_type()));
  } else if (a.is_cuda()) {
    y = at::_weight_int4pack_mm(a, packed_, group_, scales_);
  } else {
    y = at::_weight_int4pack_mm_for_cpu(a, packed_, group_, scales_);
  }
  if (bias.defined()) y = y + bias;
  return y.view(out_shape);
}

at::Tensor LinearWeight::dequantized() const {
  if (dense_.defined()) return dense_.to(at::kFloat);
  const auto dev = packed_.defined() ? packed_.device() : skinny_int4_.codes.device();
  at::Tensor eye = at::eye(k_, at::TensorOptions().dtype(at::kBFloat16).device(dev));
  return forward(eye).t().to(at::kFloat).contiguous();
}

}  // namespace glmvoice::llm
