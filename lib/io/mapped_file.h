// A read-only memory mapping of a whole file, shared by the checkpoint readers
// (safetensors shards, torch.save zips). Throws glmvoice::Error (kNotFound / kBadFile)
// naming the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace glmvoice::io {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }  // nullptr for an empty file
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace glmvoice::io
