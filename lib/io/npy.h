// NumPy .npy v1/v2 reader and writer (little-endian, C order) for the CLI and parity tests.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace glmvoice::io {

// Supported: <f4 <f8 <f2 <i4 <i8 <u1 |b1 |u1 <u4 (u4 read as int64). Fortran order refused.
at::Tensor read_npy(const std::string& path);
// As read_npy on a whole file held in memory (`path` names it in errors; the fuzz target).
at::Tensor parse_npy(const uint8_t* data, size_t size, const std::string& path);
// Writes f32/f64/f16/i32/i64/u8/bool tensors (made contiguous on CPU first).
void write_npy(const std::string& path, const at::Tensor& tensor);

}  // namespace glmvoice::io
