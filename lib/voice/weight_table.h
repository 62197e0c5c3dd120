// Strict loading of a state dict by name: every expected tensor must exist with its shape,
// and every stored tensor must be used (decoder spec §2.1 loading policy). Internal to lib/voice.
#pragma once

#include <ATen/core/Tensor.h>

#include <set>
#include <string>
#include <vector>

namespace glmvoice::io {
struct StateDict;
}

namespace glmvoice::voice {

class WeightTable {
 public:
  // Tensors are converted to `dtype` and moved to `device` as they are taken.
  WeightTable(const io::StateDict& dict, c10::Device device, c10::ScalarType dtype);

  // The tensor `prefix + name`, shape-checked (kMismatch naming file and tensor).
  at::Tensor take(const std::string& name, const std::vector<int64_t>& shape);
  // As take(), but keeps fp32 regardless of the table dtype.
  at::Tensor take_f32(const std::string& name, const std::vector<int64_t>& shape);
  bool has(const std::string& name) const;
  // Throws kMismatch naming the first stored tensor that no take() consumed.
  void check_all_used(const std::string& what) const;

 private:
  const io::StateDict& dict_;
  c10::Device device_;
  c10::ScalarType dtype_;
  std::set<std::string> used_;
};

}  // namespace glmvoice::voice
