// HF safetensors reader (mmap, single file or sharded with model.safetensors.index.json)
// and writer (for glmvoice-mkmodel). Reference: huggingface/safetensors format docs.
//
// Layout: u64 LE header length L, L bytes JSON header {name: {dtype, shape, data_offsets}},
// then the data block; offsets are relative to the data block, little-endian, row-major.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace glmvoice::io {

enum class StDType { kF32, kF16, kBF16, kI32, kI64, kU8, kBool };

const char* st_dtype_name(StDType dtype);
at::ScalarType st_dtype_scalar_type(StDType dtype);
size_t st_dtype_size(StDType dtype);

struct TensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offset into the data block
  uint64_t end = 0;
  size_t shard = 0;    // index into SafeTensors::shard_paths()
};

class MappedFile;  // private mmap holder

// A read-only view of one checkpoint (one file, or all shards of an index). Thread-safe
// after open: load() only reads the mapping.
class SafeTensors {
 public:
  // `path` is a .safetensors file, a model.safetensors.index.json, or a directory holding
  // either (index preferred). Validates every header: length within the file, JSON well
  // formed, known dtype, bytes == numel × size, offsets inside the data block and not
  // overlapping. Throws glmvoice::Error naming the file and tensor.
  static SafeTensors open(const std::string& path);

  bool has(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  // throws kMismatch if absent
  std::vector<std::string> names() const;                  // sorted
  size_t size() const { return tensors_.size(); }
  uint64_t total_bytes() const;
  const std::vector<std::string>& shard_paths() const { return shard_paths_; }
  const std::string& path() const { return path_; }
  // Path of the shard holding `name` (for error messages).
  const std::string& file_of(const std::string& name) const;

  // Loads one tensor as a new contiguous tensor in `dtype` on `device`.
  at::Tensor load(const std::string& name, at::ScalarType dtype, c10::Device device) const;
  at::Tensor load(const std::string& name) const;  // f32 on CPU
  // As load(), and throws kMismatch ("shape [..] != expected [..]") on a shape mismatch.
  at::Tensor load_checked(const std::string& name, const std::vector<int64_t>& expected_shape,
                          at::ScalarType dtype, c10::Device device) const;

 private:
  std::string path_;
  std::vector<std::string> shard_paths_;
  std::vector<std::shared_ptr<MappedFile>> maps_;
  std::vector<uint64_t> data_starts_;  // per shard: byte offset of the data block
  std::map<std::string, TensorInfo> tensors_;
};

// Writes `tensors` (CPU, any of the supported dtypes, stored as-is) to one file.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes several shard files plus model.safetensors.index.json into `dir`, splitting
// `tensors` in order into `num_shards` groups (HF names model-0000i-of-0000n.safetensors).
void write_sharded_safetensors(const std::string& dir,
                               const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                               int num_shards);

std::string format_shape(at::IntArrayRef shape);  // "[3, 4]"

// Parses and validates one safetensors file held in memory (`size` bytes: header length,
// JSON header, data block): every check SafeTensors::open() makes. Returns the tensors in
// name order (shard = 0); `data_start` receives the byte offset of the data block.
// Throws glmvoice::Error naming `file`. Used by open() and the fuzz target.
std::vector<TensorInfo> parse_safetensors_header(const uint8_t* bytes, size_t size,
                                                 const std::string& file,
                                                 uint64_t* data_start = nullptr);

}  // namespace glmvoice::io
