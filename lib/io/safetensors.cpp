// HF safetensors reader / writer. Reference: huggingface/safetensors README ("Format"):
// 8-byte little-endian header size N, N bytes of UTF-8 JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the byte buffer; offsets are relative to the start of the byte buffer.
#include "io/safetensors.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/error.h"
#include "io/mapped_file.h"

namespace fs = std::filesystem;

namespace glmvoice::io {

// ---- dtypes ---------------------------------------------------------------

const char* st_dtype_name(StDType dtype) {
  switch (dtype) {
    case StDType::kF32: return "F32";
    case StDType::kF16: return "F16";
    case StDType::kBF16: return "BF16";
    case StDType::kI32: return "I32";
    case StDType::kI64: return "I64";
    case StDType::kU8: return "U8";
    case StDType::kBool: return "BOOL";
  }
  return "?";
}

at::ScalarType st_dtype_scalar_type(StDType dtype) {
  switch (dtype) {
    case StDType::kF32: return at::kFloat;
    case StDType::kF16: return at::kHalf;
    case StDType::kBF16: return at::kBFloat16;
    case StDType::kI32: return at::kInt;
    case StDType::kI64: return at::kLong;
    case StDType::kU8: return at::kByte;
    case StDType::kBool: return at::kBool;
  }
  return at::kFloat;
}

size_t st_dtype_size(StDType dtype) {
  switch (dtype) {
    case StDType::kF32: return 4;
    case StDType::kF16: return 2;
    case StDType::kBF16: return 2;
    case StDType::kI32: return 4;
    case StDType::kI64: return 8;
    case StDType::kU8: return 1;
    case StDType::kBool: return 1;
  }
  return 0;
}

namespace {

bool parse_st_dtype(const std::string& text, StDType* out) {
  static const std::pair<const char*, StDType> kTable[] = {
      {"F32", StDType::kF32}, {"F16", StDType::kF16}, {"BF16", StDType::kBF16},
      {"I32", StDType::kI32}, {"I64", StDType::kI64}, {"U8", StDType::kU8},
      {"BOOL", StDType::kBool}};
  for (const auto& [name, dtype] : kTable) {
    if (text == name) {
      *out = dtype;
      return true;
    }
  }
  return false;
}

bool scalar_type_st_dtype(at::ScalarType type, StDType* out) {
  switch (type) {
    case at::kFloat: *out = StDType::kF32; return true;
    case at::kHalf: *out = StDType::kF16; return true;
    case at::kBFloat16: *out = StDType::kBF16; return true;
    case at::kInt: *out = StDType::kI32; return true;
    case at::kLong: *out = StDType::kI64; return true;
    case at::kByte: *out = StDType::kU8; return true;
    case at::kBool: *out = StDType::kBool; return true;
    default: return false;
  }
}

// Other dtypes the safetensors format defines: valid files, but not supported here.
bool is_known_unsupported_dtype(const std::string& text) {
  static const std::set<std::string> kOthers = {"F64", "I8", "I16", "U16", "U32", "U64",
                                                "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3",
                                                "F6_E3M2", "C64"};
  return kOthers.count(text) > 0;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

Error bad(const std::string& file, const std::string& key, const std::string& reason) {
  return Error(ErrorCode::kBadFile, file, key, reason);
}

}  // namespace

std::string format_shape(at::IntArrayRef shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// ---- header parsing (also the fuzz entry point) ---------------------------

std::vector<TensorInfo> parse_safetensors_header(const uint8_t* bytes, size_t size,
                                                 const std::string& file, uint64_t* data_start) {
  if (size < 8) {
    throw bad(file, "", "file too short (" + std::to_string(size) +
                            " bytes) to hold the 8-byte header length");
  }
  const uint64_t header_len = read_u64_le(bytes);
  if (header_len > size - 8) {
    throw bad(file, "", "header length " + std::to_string(header_len) +
                            " runs past the end of the file (" + std::to_string(size) + " bytes)");
  }
  const uint64_t start = 8 + header_len;
  const uint64_t data_size = size - start;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + start);
  } catch (const nlohmann::json::exception& e) {
    throw bad(file, "", std::string("malformed JSON header: ") + e.what());
  }
  if (!header.is_object()) throw bad(file, "", "JSON header is not an object");

  std::vector<TensorInfo> out;
  out.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) throw bad(file, name, "__metadata__ is not an object");
      continue;
    }
    if (!entry.is_object()) throw bad(file, name, "header entry is not an object");
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string()) throw bad(file, name, "missing or non-string 'dtype'");
    if (sh == entry.end() || !sh->is_array()) throw bad(file, name, "missing or non-array 'shape'");
    if (off == entry.end() || !off->is_array() || off->size() != 2) {
      throw bad(file, name, "'data_offsets' must be an array [begin, end]");
    }
    TensorInfo info;
    info.name = name;
    const std::string dtype_text = dt->get<std::string>();
    if (!parse_st_dtype(dtype_text, &info.dtype)) {
      if (is_known_unsupported_dtype(dtype_text)) {
        throw Error(ErrorCode::kUnsupported, file, name, "dtype '" + dtype_text + "' is not supported");
      }
      throw bad(file, name, "unknown dtype '" + dtype_text + "'");
    }
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& dim : *sh) {
      if (!dim.is_number_unsigned() && !(dim.is_number_integer() && dim.get<int64_t>() >= 0)) {
        throw bad(file, name, "shape entries must be non-negative integers");
      }
      const uint64_t d = dim.get<uint64_t>();
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
      info.shape.push_back(static_cast<int64_t>(d));
      if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / d) overflow = true;
      numel *= d;
    }
    const uint64_t elem = st_dtype_size(info.dtype);
    if (overflow || numel > std::numeric_limits<uint64_t>::max() / elem) {
      throw bad(file, name, "shape " + format_shape(info.shape) + " overflows");
    }
    for (const auto& o : *off) {
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0)) {
        throw bad(file, name, "data_offsets must be non-negative integers");
      }
    }
    info.begin = (*off)[0].get<uint64_t>();
    info.end = (*off)[1].get<uint64_t>();
    if (info.end < info.begin) {
      throw bad(file, name, "data_offsets [" + std::to_string(info.begin) + ", " +
                                std::to_string(info.end) + "] end before begin");
    }
    if (info.end > data_size) {
      throw bad(file, name, "data_offsets [" + std::to_string(info.begin) + ", " +
                                std::to_string(info.end) + "] outside the data block (" +
                                std::to_string(data_size) + " bytes; file truncated?)");
    }
    const uint64_t bytes_needed = numel * elem;
    if (info.end - info.begin != bytes_needed) {
      throw bad(file, name, std::to_string(info.end - info.begin) + " bytes != " +
                                format_shape(info.shape) + " x " + dtype_text + " = " +
                                std::to_string(bytes_needed) + " bytes");
    }
    out.push_back(std::move(info));
  }

  // Non-overlapping: sort the non-empty ranges by begin.
  std::vector<const TensorInfo*> order;
  for (const auto& info : out) {
    if (info.end > info.begin) order.push_back(&info);
  }
  std::sort(order.begin(), order.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i]->begin < order[i - 1]->end) {
      throw bad(file, order[i]->name, "data_offsets overlap those of '" + order[i - 1]->name + "'");
    }
  }
  if (data_start) *data_start = start;
  return out;
}

// ---- SafeTensors ----------------------------------------------------------

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

SafeTensors SafeTensors::open(const std::string& path_in) {
  c10::InferenceMode guard;
  std::error_code ec;
  if (!fs::exists(path_in, ec)) throw Error(ErrorCode::kNotFound, path_in, "", "no such file or directory");

  std::string path = path_in;
  bool is_index = false;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / "model.safetensors.index.json")) {
      path = (dir / "model.safetensors.index.json").string();
      is_index = true;
    } else if (fs::exists(dir / "model.safetensors")) {
      path = (dir / "model.safetensors").string();
    } else {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(dir, ec)) {
        if (entry.path().extension() == ".safetensors") found.push_back(entry.path().string());
      }
      if (found.size() != 1) {
        throw Error(ErrorCode::kNotFound, path, "",
                    found.empty() ? "no model.safetensors.index.json or *.safetensors file"
                                  : "several *.safetensors files and no model.safetensors.index.json");
      }
      path = found[0];
    }
  } else if (ends_with(path, ".json")) {
    is_index = true;
  }

  SafeTensors st;
  st.path_ = path;

  auto add_shard = [&st](const std::string& shard_path) -> std::vector<TensorInfo> {
    auto map = std::make_shared<MappedFile>(shard_path);
    uint64_t data_start = 0;
    auto infos = parse_safetensors_header(map->data(), map->size(), shard_path, &data_start);
    const size_t shard = st.shard_paths_.size();
    st.shard_paths_.push_back(shard_path);
    st.maps_.push_back(map);
    st.data_starts_.push_back(data_start);
    for (auto& info : infos) info.shard = shard;
    return infos;
  };

  if (!is_index) {
    for (auto& info : add_shard(path)) {
      std::string name = info.name;
      st.tensors_.emplace(std::move(name), std::move(info));
    }
    return st;
  }

  // Sharded: model.safetensors.index.json {"metadata": {...}, "weight_map": {name: file}}.
  nlohmann::json index;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(ErrorCode::kNotFound, path, "", "cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    try {
      index = nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::parse_error& e) {
      throw bad(path, "", "malformed JSON at byte " + std::to_string(e.byte) + ": " + e.what());
    }
  }
  if (!index.is_object()) throw bad(path, "", "index is not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) throw bad(path, "weight_map", "missing or not an object");

  const fs::path dir = fs::path(path).parent_path();
  std::vector<std::string> files;             // shard file names in first-seen order
  std::map<std::string, std::set<std::string>> listed;  // file -> tensor names
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) throw bad(path, "weight_map." + it.key(), "shard file is not a string");
    const std::string file = it.value().get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos || file == "..") {
      throw bad(path, "weight_map." + it.key(), "invalid shard file name '" + file + "'");
    }
    if (!listed.count(file)) files.push_back(file);
    listed[file].insert(it.key());
  }
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    const std::string shard_path = (dir / file).string();
    if (!fs::exists(shard_path, ec)) {
      throw Error(ErrorCode::kNotFound, path, file,
                  "shard listed in the index is missing (" + std::to_string(listed[file].size()) +
                      " tensors, e.g. '" + *listed[file].begin() + "')");
    }
    auto infos = add_shard(shard_path);
    std::set<std::string> present;
    for (auto& info : infos) {
      present.insert(info.name);
      if (st.tensors_.count(info.name)) {
        throw bad(shard_path, info.name, "tensor also stored in " +
                                             st.shard_paths_[st.tensors_.at(info.name).shard]);
      }
      std::string name = info.name;
      st.tensors_.emplace(std::move(name), std::move(info));
    }
    for (const auto& name : listed[file]) {
      if (!present.count(name)) {
        throw Error(ErrorCode::kBadFile, shard_path, name,
                    "tensor listed in " + fs::path(path).filename().string() + " is not in this shard");
      }
    }
  }
  return st;
}

bool SafeTensors::has(const std::string& name) const { return tensors_.count(name) > 0; }

const TensorInfo& SafeTensors::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(ErrorCode::kMismatch, path_, name, "tensor not in checkpoint");
  return it->second;
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

uint64_t SafeTensors::total_bytes() const {
  uint64_t total = 0;
  for (const auto& kv : tensors_) total += kv.second.end - kv.second.begin;
  return total;
}

const std::string& SafeTensors::file_of(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return path_;
  return shard_paths_.at(it->second.shard);
}

at::Tensor SafeTensors::load(const std::string& name, at::ScalarType dtype, c10::Device device) const {
  c10::InferenceMode guard;
  const TensorInfo& ti = info(name);
  const at::ScalarType stored = st_dtype_scalar_type(ti.dtype);
  const MappedFile& map = *maps_.at(ti.shard);
  const uint8_t* ptr = map.data() + data_starts_.at(ti.shard) + ti.begin;
  const size_t bytes = ti.end - ti.begin;
  at::Tensor cpu;
  const size_t elem = st_dtype_size(ti.dtype);
  if (bytes > 0 && reinterpret_cast<uintptr_t>(ptr) % elem == 0) {
    cpu = at::from_blob(const_cast<uint8_t*>(ptr), ti.shape, at::TensorOptions().dtype(stored));
  } else {
    cpu = at::empty(ti.shape, at::TensorOptions().dtype(stored));
    if (bytes) std::memcpy(cpu.data_ptr(), ptr, bytes);
  }
  try {
    // copy=true: never alias the mapping.
    return cpu.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kDevice, file_of(name), name,
                std::string("cannot load to ") + device.str() + ": " + e.what_without_backtrace());
  }
}

at::Tensor SafeTensors::load(const std::string& name) const {
  return load(name, at::kFloat, c10::Device(c10::kCPU));
}

at::Tensor SafeTensors::load_checked(const std::string& name, const std::vector<int64_t>& expected_shape,
                                     at::ScalarType dtype, c10::Device device) const {
  const TensorInfo& ti = info(name);
  if (ti.shape != expected_shape) {
    throw Error(ErrorCode::kMismatch, file_of(name), name,
                "shape " + format_shape(ti.shape) + " != expected " + format_shape(expected_shape));
  }
  return load(name, dtype, device);
}

// ---- writer ---------------------------------------------------------------

namespace {

void write_file(const std::string& path, const std::string& header, const std::vector<at::Tensor>& data) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(ErrorCode::kNotFound, path, "", std::string("cannot create: ") + std::strerror(errno));
  uint8_t len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(header.data(), 1, header.size(), f) == header.size();
  for (const auto& t : data) {
    const size_t bytes = t.numel() * t.element_size();
    if (ok && bytes) ok = std::fwrite(t.data_ptr(), 1, bytes, f) == bytes;
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) throw Error(ErrorCode::kBadFile, path, "", "write failed");
}

}  // namespace

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  c10::InferenceMode guard;
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& kv : metadata) meta[kv.first] = kv.second;
    header["__metadata__"] = meta;
  }
  std::vector<at::Tensor> data;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || !seen.insert(name).second) {
      throw Error(ErrorCode::kBadInput, path, name, "duplicate or reserved tensor name");
    }
    StDType dtype;
    if (!scalar_type_st_dtype(tensor.scalar_type(), &dtype)) {
      throw Error(ErrorCode::kUnsupported, path, name,
                  std::string("cannot store dtype ") + c10::toString(tensor.scalar_type()));
    }
    at::Tensor t = tensor.to(c10::Device(c10::kCPU)).contiguous();
    const uint64_t bytes = t.numel() * t.element_size();
    nlohmann::ordered_json entry;
    entry["dtype"] = st_dtype_name(dtype);
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + bytes};
    header[name] = entry;
    offset += bytes;
    data.push_back(t);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');
  write_file(path, text, data);
}

void write_sharded_safetensors(const std::string& dir,
                               const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                               int num_shards) {
  c10::InferenceMode guard;
  if (num_shards < 1) throw Error(ErrorCode::kBadInput, dir, "", "num_shards must be >= 1");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (!fs::is_directory(dir)) throw Error(ErrorCode::kNotFound, dir, "", "cannot create directory");
  const size_t n = tensors.size();
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total = 0;
  for (int s = 0; s < num_shards; ++s) {
    const size_t lo = n * s / num_shards;
    const size_t hi = n * (s + 1) / num_shards;
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05d-of-%05d.safetensors", s + 1, num_shards);
    std::vector<std::pair<std::string, at::Tensor>> part(tensors.begin() + lo, tensors.begin() + hi);
    write_safetensors((fs::path(dir) / file).string(), part, {{"format", "pt"}});
    for (const auto& [name, t] : part) {
      weight_map[name] = file;
      total += t.numel() * t.element_size();
    }
  }
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = weight_map;
  const std::string path = (fs::path(dir) / "model.safetensors.index.json").string();
  std::ofstream out(path, std::ios::binary);
  out << index.dump(2) << "\n";
  if (!out) throw Error(ErrorCode::kBadFile, path, "", "write failed");
}

}  // namespace glmvoice::io
