// lib/io .npy: round trips for every written dtype and shapes (scalar, 1-D, empty), v2
// headers, u4 read as int64, and bad files.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>

#include "io/error.h"
#include "io/npy.h"
#include "test_support.h"

using glmvoice::Error;
using glmvoice::ErrorCode;
using namespace glmvoice::io;

namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A hand-made .npy (version `major`) with the given header dict and data.
std::string make_npy(int major, const std::string& dict, const std::string& data) {
  std::string header = dict;
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64) header.push_back(' ');
  header.push_back('\n');
  std::string out = std::string("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  const size_t n = header.size();
  out.push_back(static_cast<char>(n & 0xff));
  out.push_back(static_cast<char>(n >> 8));
  if (major != 1) out += std::string(2, '\0');
  return out + header + data;
}

void expect_error(const std::string& path, ErrorCode code, const std::string& needle) {
  try {
    read_npy(path);
    FAIL() << "no error for " << path;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Npy, RoundTrip) {
  const std::string dir = glmvoice::test::scratch_dir("npy-rt");
  at::manual_seed(3);
  const std::vector<at::Tensor> tensors = {
      at::randn({3, 4}),          at::randn({5}).to(at::kDouble), at::randn({2, 2}).to(at::kHalf),
      at::arange(-3, 4, at::kInt), at::arange(7, at::kLong).reshape({7, 1, 1}),
      at::arange(0, 250, 25, at::kLong).to(at::kByte), at::tensor({1, 0}, at::kLong).to(at::kBool),
      at::randn({}),              at::empty({0, 3}),                at::randn({4, 3}).t(),
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string path = dir + "/t" + std::to_string(i) + ".npy";
    write_npy(path, tensors[i]);
    at::Tensor back = read_npy(path);
    EXPECT_EQ(back.scalar_type(), tensors[i].scalar_type()) << i;
    EXPECT_EQ(back.sizes(), tensors[i].sizes()) << i;
    EXPECT_TRUE(at::equal(back, tensors[i])) << i;
  }
  EXPECT_THROW(write_npy(dir + "/bf16.npy", at::ones({2}, at::kBFloat16)), Error);
}

TEST(Npy, HandMadeHeaders) {
  const std::string dir = glmvoice::test::scratch_dir("npy-hand");
  std::string data;
  for (uint32_t v : {1u, 4000000000u}) data.append(reinterpret_cast<const char*>(&v), 4);
  write_bytes(dir + "/u4.npy", make_npy(2, "{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", data));
  at::Tensor t = read_npy(dir + "/u4.npy");
  EXPECT_EQ(t.scalar_type(), at::kLong);
  EXPECT_EQ(t[1].item<int64_t>(), 4000000000LL);
  write_bytes(dir + "/s.npy", make_npy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (), }", std::string(8, '\0')));
  EXPECT_EQ(read_npy(dir + "/s.npy").dim(), 0);
}

TEST(NpyBad, Files) {
  const std::string dir = glmvoice::test::scratch_dir("npy-bad");
  expect_error(dir + "/absent.npy", ErrorCode::kNotFound, "absent.npy");
  write_bytes(dir + "/magic.npy", "not numpy at all");
  expect_error(dir + "/magic.npy", ErrorCode::kBadFile, "bad magic");
  write_bytes(dir + "/fortran.npy", make_npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", "abcd"));
  expect_error(dir + "/fortran.npy", ErrorCode::kUnsupported, "Fortran");
  write_bytes(dir + "/be.npy", make_npy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", "abcd"));
  expect_error(dir + "/be.npy", ErrorCode::kUnsupported, ">f4");
  write_bytes(dir + "/short.npy", make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "abcd"));
  expect_error(dir + "/short.npy", ErrorCode::kBadFile, "truncated");
  write_bytes(dir + "/shape.npy", make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (x,), }", ""));
  expect_error(dir + "/shape.npy", ErrorCode::kBadFile, "shape");
  write_bytes(dir + "/hdr.npy", make_npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "").substr(0, 20));
  expect_error(dir + "/hdr.npy", ErrorCode::kBadFile, "header");
  write_bytes(dir + "/nodescr.npy", make_npy(1, "{'fortran_order': False, 'shape': (1,), }", "abcd"));
  expect_error(dir + "/nodescr.npy", ErrorCode::kBadFile, "descr");
}
