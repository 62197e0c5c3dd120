// The small ops of a CPU decode step (RMSNorm, rotary, one-query attention, SiLU gate), each
// one pass over its rows in plain loops.
//
// Why: a decode step on the CPU is ~500 libtorch calls around 33 matrix products; measured
// with the autograd profiler (mid model, int4, 2 threads) they took ~3.7 ms of a ~13 ms step
// (at::rms_norm alone ~70 us per call). These functions do the same math with the same
// roundings as LlmModel's libtorch path (llm spec §3.2-3.4: f32 compute, one rounding to the
// compute dtype where the reference rounds); only summation orders differ (last-bit f32
// differences). Every row is computed on its own: results do not depend on the batch.
//
// Inputs: contiguous CPU tensors in float32 or bfloat16 (the compute dtype). Callers check
// skinny_kernels_supported() (AVX2 + FMA) first.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace glmvoice::llm::cpu {

// Whether LlmModel uses these in decode steps (default on; GLMVOICE_CPU_SMALL_OPS=0 or
// set_small_ops_enabled(false) for the libtorch ops, for A/B measurements). Process-wide.
bool small_ops_enabled();
void set_small_ops_enabled(bool on);

// §3.2: rows of x [N, H] -> round(w * (x * rsqrt(mean(x^2) + eps))), w float32 [H].
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, float eps);

// §3.3 step 3, in place: qk [N, heads, d] (a view into the fused qkv output, rows of
// `row_stride` elements); the first r dims of every head rotate by pairs (2i, 2i+1) with
// cos2 = (c, c) and sin2 = (-s, s) per pair [N, r/2, 2] in the compute dtype:
// x' = x * cos2 + swap(x) * sin2, each product and the sum rounded like separate tensor ops.
void rotary(const at::Tensor& mixed, int64_t heads, int64_t d, int64_t r, const at::Tensor& cos2,
            const at::Tensor& sin2);

// §3.3 steps 4-7 for one query row that sees every key: q [nh * d] (a row of the qkv output),
// K, V [ng, S, d] (cache views, rows contiguous); query head h uses group h / (nh / ng).
// float32: softmax(q.k * scale) . V. bfloat16, rounded as LlmModel::attend: scores f32,
// exp(s - max) f32 rounded to bf16 for the product with V, division by the f32 sum, one
// rounding. Returns [1, nh * d].
at::Tensor attend_one(const at::Tensor& q_row, const at::Tensor& K, const at::Tensor& V, int64_t nh, double scale);

// §3.4: u [N, 2 * ffn] (gate first, up second) -> silu(gate) * up [N, ffn]; in bfloat16 the
// SiLU is rounded before the product, as at::silu then a multiply.
at::Tensor silu_mul(const at::Tensor& u, int64_t ffn);

// exp(x) for 8 floats (AVX2), within 2 ulp of std::exp over [-87, 88]; 0 below, for the
// softmax and SiLU above (exposed for its test).
void exp_inplace(float* x, int64_t n);

}  // namespace glmvoice::llm::cpu
