// NumPy .npy reader / writer. Reference: numpy/lib/format.py docstring ("Format Version 1.0"):
// magic "\x93NUMPY", major, minor, header length (u16 LE in v1, u32 LE in v2/v3), a Python
// dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded with
// spaces and ended by '\n', then the raw data.
#include "io/npy.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "io/error.h"

namespace glmvoice::io {

namespace {

Error bad(const std::string& path, const std::string& reason) {
  return Error(ErrorCode::kBadFile, path, "", reason);
}

// Value text after 'key': in the header dict (up to the matching delimiter).
std::string dict_value(const std::string& header, const std::string& key, const std::string& path) {
  size_t pos = header.find("'" + key + "'");
  if (pos == std::string::npos) pos = header.find("\"" + key + "\"");
  if (pos == std::string::npos) throw bad(path, "npy header has no '" + key + "'");
  pos = header.find(':', pos + key.size() + 2);
  if (pos == std::string::npos) throw bad(path, "npy header: no value for '" + key + "'");
  ++pos;
  while (pos < header.size() && std::isspace(static_cast<unsigned char>(header[pos]))) ++pos;
  if (pos >= header.size()) throw bad(path, "npy header: no value for '" + key + "'");
  const char open = header[pos];
  size_t end;
  if (open == '\'' || open == '"') {
    end = header.find(open, pos + 1);
    if (end == std::string::npos) throw bad(path, "npy header: unterminated string");
    return header.substr(pos + 1, end - pos - 1);
  }
  if (open == '(') {
    end = header.find(')', pos);
    if (end == std::string::npos) throw bad(path, "npy header: unterminated shape tuple");
    return header.substr(pos, end - pos + 1);
  }
  end = header.find_first_of(",}", pos);
  if (end == std::string::npos) end = header.size();
  std::string v = header.substr(pos, end - pos);
  while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
  return v;
}

struct NpyType {
  at::ScalarType type;
  size_t size;
  bool u4_to_i64;
};

bool parse_descr(const std::string& descr, NpyType* out) {
  static const struct {
    const char* descr;
    NpyType type;
  } kTable[] = {
      {"<f4", {at::kFloat, 4, false}}, {"<f8", {at::kDouble, 8, false}}, {"<f2", {at::kHalf, 2, false}},
      {"<i4", {at::kInt, 4, false}},   {"<i8", {at::kLong, 8, false}},   {"<u1", {at::kByte, 1, false}},
      {"|u1", {at::kByte, 1, false}},  {"|b1", {at::kBool, 1, false}},   {"<u4", {at::kLong, 4, true}},
  };
  for (const auto& row : kTable) {
    if (descr == row.descr) {
      *out = row.type;
      return true;
    }
  }
  return false;
}

}  // namespace

at::Tensor parse_npy(const uint8_t* data, size_t size, const std::string& path) {
  c10::InferenceMode guard;
  if (size < 8 || std::memcmp(data, "\x93NUMPY", 6) != 0) throw bad(path, "not a .npy file (bad magic)");
  const int major = data[6];
  uint64_t header_len = 0;
  uint64_t prefix = 0;
  if (major == 1) {
    if (size < 10) throw bad(path, "truncated npy header");
    header_len = data[8] | (data[9] << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw bad(path, "truncated npy header");
    header_len = uint64_t(data[8]) | (uint64_t(data[9]) << 8) | (uint64_t(data[10]) << 16) | (uint64_t(data[11]) << 24);
    prefix = 12;
  } else {
    throw Error(ErrorCode::kUnsupported, path, "", "npy format version " + std::to_string(major));
  }
  if (header_len > size - prefix) throw bad(path, "npy header length past end of file");
  const std::string header(reinterpret_cast<const char*>(data + prefix), header_len);

  const std::string descr = dict_value(header, "descr", path);
  NpyType type{};
  if (!parse_descr(descr, &type)) {
    throw Error(ErrorCode::kUnsupported, path, "descr", "npy dtype '" + descr + "' not supported");
  }
  const std::string fortran = dict_value(header, "fortran_order", path);
  if (fortran == "True") throw Error(ErrorCode::kUnsupported, path, "fortran_order", "Fortran order not supported");
  if (fortran != "False") throw bad(path, "npy header: bad fortran_order '" + fortran + "'");
  const std::string shape_text = dict_value(header, "shape", path);
  if (shape_text.empty() || shape_text.front() != '(') throw bad(path, "npy header: bad shape");
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  size_t i = 1;
  while (i < shape_text.size()) {
    const char c = shape_text[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      uint64_t v = 0;
      while (i < shape_text.size() && std::isdigit(static_cast<unsigned char>(shape_text[i]))) {
        v = v * 10 + (shape_text[i] - '0');
        if (v > (uint64_t(1) << 40)) throw bad(path, "npy header: shape dimension too large");
        ++i;
      }
      shape.push_back(static_cast<int64_t>(v));
      if (v && numel > (uint64_t(1) << 42) / v) throw bad(path, "npy header: shape too large");
      numel *= v;
    } else if (c == ',' || c == ' ' || c == ')' || c == 'L') {
      ++i;
    } else {
      throw bad(path, "npy header: bad shape '" + shape_text + "'");
    }
  }
  const uint64_t bytes = numel * type.size;
  const uint64_t available = size - prefix - header_len;
  if (available < bytes) {
    throw bad(path, "npy data truncated: " + std::to_string(available) + " bytes < " + std::to_string(bytes) +
                        " expected");
  }
  const uint8_t* body = data + prefix + header_len;
  if (type.u4_to_i64) {
    at::Tensor out = at::empty(shape, at::kLong);
    int64_t* dst = out.data_ptr<int64_t>();
    for (uint64_t k = 0; k < numel; ++k) {
      uint32_t v;
      std::memcpy(&v, body + 4 * k, 4);
      dst[k] = v;
    }
    return out;
  }
  at::Tensor out = at::empty(shape, type.type);
  if (bytes) std::memcpy(out.data_ptr(), body, bytes);
  if (type.type == at::kBool) {  // numpy writes 0/1; any other byte is not a valid bool
    const uint8_t* b = static_cast<const uint8_t*>(out.data_ptr());
    for (uint64_t k = 0; k < numel; ++k) {
      if (b[k] > 1) throw bad(path, "npy bool data holds a byte other than 0/1");
    }
  }
  return out;
}

at::Tensor read_npy(const std::string& path) {
  c10::InferenceMode guard;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(ErrorCode::kNotFound, path, "", "no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kNotFound, path, "", "cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_npy(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

void write_npy(const std::string& path, const at::Tensor& tensor) {
  c10::InferenceMode guard;
  const char* descr = nullptr;
  switch (tensor.scalar_type()) {
    case at::kFloat: descr = "<f4"; break;
    case at::kDouble: descr = "<f8"; break;
    case at::kHalf: descr = "<f2"; break;
    case at::kInt: descr = "<i4"; break;
    case at::kLong: descr = "<i8"; break;
    case at::kByte: descr = "|u1"; break;
    case at::kBool: descr = "|b1"; break;
    default:
      throw Error(ErrorCode::kUnsupported, path, "",
                  std::string("cannot write dtype ") + c10::toString(tensor.scalar_type()) + " to .npy");
  }
  at::Tensor t = tensor.to(c10::Device(c10::kCPU)).contiguous();
  std::string shape = "(";
  for (int64_t d = 0; d < t.dim(); ++d) {
    shape += std::to_string(t.size(d));
    shape += (t.dim() == 1 || d + 1 < t.dim()) ? "," : "";
    if (d + 1 < t.dim()) shape += " ";
  }
  shape += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(ErrorCode::kNotFound, path, "", std::string("cannot create: ") + std::strerror(errno));
  const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                 static_cast<unsigned char>(header.size() & 0xff),
                                 static_cast<unsigned char>(header.size() >> 8)};
  bool ok = std::fwrite(pre, 1, 10, f) == 10 && std::fwrite(header.data(), 1, header.size(), f) == header.size();
  const size_t bytes = t.numel() * t.element_size();
  if (ok && bytes) ok = std::fwrite(t.data_ptr(), 1, bytes, f) == bytes;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) throw Error(ErrorCode::kBadFile, path, "", "write failed");
}

}  // namespace glmvoice::io
