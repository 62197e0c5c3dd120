// Hand-written AVX2+FMA matmul kernels for the LLM's linear layers when the activation has few
// rows (decode steps, batched decode: M <= kSkinnyMaxRows): y[m, n] = sum_k x[m, k] * W[n, k]
// (+ bias[n]), fp32 accumulation, for the four weight formats of LinearWeight (fp32, bf16,
// int8 with one scale per row, int4 with a scale and zero per group).
//
// Why not libtorch: on this project's AVX2-only CPU (AMD EPYC), libtorch 2.11's MKL SGEMM takes
// a slow path (fp32 decode at 2.2x the memory floor), oneDNN has no bf16 compute without
// AVX512-BF16 (cost grows linearly with M, so batching saves nothing), and the int8/int4
// packed-weight kernels run at 3-5x their floors. A decode step is memory-bound: these kernels
// read each weight once per call whatever M is, converting it to fp32 in registers.
//
// Batch invariance: every output's dot product is computed in the same order whatever M is and
// wherever its row falls in a tile (one 8-lane accumulator per (m, n), blocks in k order, a
// fixed horizontal sum, then the scalar tail), so row m of an M-row call is bit-identical to
// the 1-row call for the same x row.
//
// Off switch: GLMVOICE_CPU_KERNELS=0 in the environment (or set_skinny_kernels_enabled(false))
// makes LinearWeight use libtorch as before; it is read when a LinearWeight is made.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace glmvoice::llm {

constexpr int64_t kSkinnyMaxRows = 16;

// The CPU has AVX2 and FMA.
bool skinny_kernels_supported();
// Supported and not switched off (GLMVOICE_CPU_KERNELS=0, set_skinny_kernels_enabled(false)).
bool skinny_kernels_enabled();
void set_skinny_kernels_enabled(bool on);  // process-wide; for A/B measurements and tests

// int4 weights in the kernel's layout. codes [N, K64 / 2] uint8, K64 = K rounded up to 64:
// byte j of each block of 64 input columns holds the code of column j in its low nibble and of
// column 32 + j in its high nibble. params [N, 2, K/group] fp32: per row, the groups' scales,
// then their zero - 8 * scale (scale and zero rounded to bf16 first, as LinearWeight keeps
// them). Dequantized w = (q - 8) * scale + zero = q * scale + (zero - 8 * scale). The kernel
// multiplies x rounded to int16 per group (see cpu_skinny_matmul.cpp).
struct SkinnyInt4 {
  at::Tensor codes, params;
  int64_t group = 0, in_features = 0;
};
// q [N, K] integer codes in [0, 15]; scale, zero [N, K/group]. K must be a multiple of 32 and
// of group, group a multiple of 32.
SkinnyInt4 skinny_pack_int4(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& zero, int64_t group);

// x [M, K] float32 or bfloat16, contiguous, on the CPU; the result [M, N] in x's dtype (bf16
// rounded once from the fp32 sum, bias added before that rounding). Callers check
// skinny_kernels_supported(); any M works (int4 has no other CPU path in this layout), though
// only M <= kSkinnyMaxRows is what they are made for.
// Dense: w [N, K] in x's dtype (fp32 or bf16).
at::Tensor skinny_linear_dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias);
// int8: q [N, K] int8, scale [N] (w = q * scale); the kernel multiplies x rounded to int16
// per group of kSkinnyInt8XGroup columns (see cpu_skinny_matmul.cpp).
constexpr int64_t kSkinnyInt8XGroup = 128;
at::Tensor skinny_linear_int8(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias);
at::Tensor skinny_linear_int4(const at::Tensor& x, const SkinnyInt4& w, const at::Tensor& bias);

}  // namespace glmvoice::llm
