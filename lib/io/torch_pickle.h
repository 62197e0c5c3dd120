// torch.save() zip-format state dicts (flow.pt, hift.pt): a small zip reader (stored
// entries, central directory, CRC-32 checked) and a pickle VM restricted to exactly what
// state dicts use (decoder spec §2.1). It never executes anything: an unknown opcode or
// GLOBAL is a kBadFile error naming it. Also the matching writer for glmvoice-mkmodel.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace glmvoice::io {

// Insertion-ordered (name, tensor) pairs as saved; tensors are CPU, contiguous, and keep
// their stored dtype (Float/Half/BFloat16/Double/Long/Int/...).
struct StateDict {
  std::string path;
  std::vector<std::pair<std::string, at::Tensor>> entries;

  bool has(const std::string& name) const;
  const at::Tensor& get(const std::string& name) const;  // throws kMismatch naming path+name
  // get() plus a shape check (kMismatch "shape [..] != expected [..]").
  const at::Tensor& get_checked(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> names() const;
};

// Reads a torch.save zip. Any top-level folder name; legacy (non-zip) files are refused.
StateDict load_torch_state_dict(const std::string& path);

// As load_torch_state_dict, on a whole file held in memory (`path` names it in errors).
StateDict parse_torch_state_dict(const uint8_t* data, size_t size, const std::string& path);

// Returns storage `key` ("0", "1", ...) as a 1-D CPU tensor of `numel` elements of `dtype`.
using StorageLoader =
    std::function<at::Tensor(const std::string& key, at::ScalarType dtype, int64_t numel)>;
// Runs the restricted pickle VM on a data.pkl body (`record` names it in errors); storages
// come from `loader`. Used by the readers above and by the fuzz target.
StateDict parse_state_dict_pickle(const uint8_t* pkl, size_t size, const std::string& path,
                                  const std::string& record, const StorageLoader& loader);

// Writes a torch.save-compatible zip (protocol 2 pickle, stored entries, 64-byte aligned
// data records, folder = `archive_name`). Loadable by torch.load.
void save_torch_state_dict(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& entries,
                           const std::string& archive_name = "archive");

// Weight norm (decoder spec §2.2): for every parameter P with P.weight_g/P.weight_v or
// P.parametrizations.weight.original0/1, replaces the pair by P.weight =
// at::_weight_norm(v, g, 0) computed in fp32 on CPU. Returns the number folded.
int fold_weight_norm(StateDict& dict);

}  // namespace glmvoice::io
