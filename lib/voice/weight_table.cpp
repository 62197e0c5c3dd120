#include "voice/weight_table.h"

#include <ATen/ATen.h>

#include "io/error.h"
#include "io/torch_pickle.h"

namespace glmvoice::voice {

WeightTable::WeightTable(const io::StateDict& dict, c10::Device device, c10::ScalarType dtype)
    : dict_(dict), device_(device), dtype_(dtype) {}

bool WeightTable::has(const std::string& name) const { return dict_.has(name); }

at::Tensor WeightTable::take(const std::string& name, const std::vector<int64_t>& shape) {
  const at::Tensor& t = dict_.get_checked(name, shape);
  used_.insert(name);
  // Convert on CPU in fp32 first (the stored dtype may be f16/bf16/f64), then to the target.
  return t.to(at::kFloat).to(device_, dtype_).contiguous();
}

at::Tensor WeightTable::take_f32(const std::string& name, const std::vector<int64_t>& shape) {
  const at::Tensor& t = dict_.get_checked(name, shape);
  used_.insert(name);
  return t.to(at::kFloat).to(device_).contiguous();
}

void WeightTable::check_all_used(const std::string& what) const {
  for (const auto& entry : dict_.entries) {
    if (!used_.count(entry.first)) {
      throw Error(ErrorCode::kMismatch, dict_.path, entry.first,
                  "tensor not used by the " + what +
                      " described in config.yaml (config and checkpoint disagree)");
    }
  }
}

}  // namespace glmvoice::voice
