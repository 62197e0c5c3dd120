// lib/io safetensors: round trips (single file, sharded), the fixture checkpoints, and the
// bad-file suite (each a glmvoice::Error, never a crash).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/error.h"
#include "io/safetensors.h"
#include "test_support.h"

namespace fs = std::filesystem;
using glmvoice::Error;
using glmvoice::ErrorCode;
using namespace glmvoice::io;

namespace {

std::vector<std::pair<std::string, at::Tensor>> sample_tensors() {
  at::manual_seed(0);
  return {
      {"a.f32", at::randn({3, 4})},
      {"b.f16", at::randn({5}).to(at::kHalf)},
      {"c.bf16", at::randn({2, 3, 2}).to(at::kBFloat16)},
      {"d.i32", at::arange(7, at::kInt)},
      {"e.i64", at::arange(-3, 3, at::kLong).reshape({2, 3})},
      {"f.u8", at::arange(0, 250, 10, at::kLong).to(at::kByte)},
      {"g.bool", at::tensor({1, 0, 1}, at::kLong).to(at::kBool)},
      {"h.scalar", at::tensor(2.5f)},
      {"i.empty", at::empty({0, 4})},
  };
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A raw safetensors file from a header string and a data block.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + data;
}

// Expects SafeTensors::open(path) to throw glmvoice::Error with `code`, message containing `needle`.
void expect_open_error(const std::string& path, ErrorCode code, const std::string& needle) {
  try {
    SafeTensors::open(path);
    FAIL() << "no error for " << path;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(SafeTensors, RoundTripSingleFile) {
  const std::string dir = glmvoice::test::scratch_dir("st-single");
  const std::string path = dir + "/model.safetensors";
  auto tensors = sample_tensors();
  write_safetensors(path, tensors, {{"format", "pt"}});
  auto st = SafeTensors::open(path);
  ASSERT_EQ(st.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(st.has(name)) << name;
    EXPECT_EQ(st_dtype_scalar_type(st.info(name).dtype), t.scalar_type()) << name;
    at::Tensor back = st.load(name, t.scalar_type(), c10::Device(c10::kCPU));
    EXPECT_EQ(back.sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(back, t)) << name;
  }
  // Conversion on load, default f32, directory lookup.
  auto st2 = SafeTensors::open(dir);
  at::Tensor c = st2.load("c.bf16");
  EXPECT_EQ(c.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(c, tensors[2].second.to(at::kFloat)));
  EXPECT_EQ(st2.load("e.i64", at::kFloat, c10::Device(c10::kCPU)).sum().item<float>(), -3.f);
  EXPECT_EQ(st.load_checked("a.f32", {3, 4}, at::kFloat, c10::Device(c10::kCPU)).size(1), 4);
}

TEST(SafeTensors, RoundTripSharded) {
  const std::string dir = glmvoice::test::scratch_dir("st-sharded");
  auto tensors = sample_tensors();
  write_sharded_safetensors(dir, tensors, 3);
  EXPECT_TRUE(fs::exists(dir + "/model-00001-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/model-00003-of-00003.safetensors"));
  auto index = nlohmann::json::parse(read_bytes(dir + "/model.safetensors.index.json"));
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  for (const std::string& path : {dir, dir + "/model.safetensors.index.json"}) {
    auto st = SafeTensors::open(path);
    ASSERT_EQ(st.size(), tensors.size());
    EXPECT_EQ(st.shard_paths().size(), 3u);
    for (const auto& [name, t] : tensors) {
      EXPECT_TRUE(at::equal(st.load(name, t.scalar_type(), c10::Device(c10::kCPU)), t)) << name;
      EXPECT_EQ(fs::path(st.file_of(name)).filename().string(), index["weight_map"][name].get<std::string>());
    }
  }
}

TEST(SafeTensors, FixtureCheckpointsLoadEveryTensor) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string models = glmvoice::test::fixtures_dir() + "/models/tiny-a";
  for (const std::string sub : {"tokenizer", "llm"}) {
    auto st = SafeTensors::open(models + "/" + sub);
    EXPECT_GT(st.size(), 0u) << sub;
    uint64_t bytes = 0;
    for (const auto& name : st.names()) {
      at::Tensor t = st.load(name);
      EXPECT_EQ(t.sizes().vec(), st.info(name).shape) << name;
      EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << name;
      bytes += st.info(name).end - st.info(name).begin;
    }
    EXPECT_EQ(bytes, st.total_bytes());
    if (sub == "llm") {
      EXPECT_EQ(st.shard_paths().size(), 2u);
      auto index = nlohmann::json::parse(read_bytes(models + "/llm/model.safetensors.index.json"));
      EXPECT_EQ(index["weight_map"].size(), st.size());
      for (const auto& name : st.names()) EXPECT_EQ(st.info(name).dtype, StDType::kBF16) << name;
    } else {
      for (const auto& name : st.names()) EXPECT_EQ(st.info(name).dtype, StDType::kF32) << name;
    }
  }
}

TEST(SafeTensors, MetadataFirstAndPaddedHeader) {
  // As the safetensors package writes files: "__metadata__" first, then the tensors, the
  // header padded with spaces to a multiple of 8 bytes.
  const std::string dir = glmvoice::test::scratch_dir("st-meta");
  std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const float w[2] = {1.5f, -2.0f};
  std::string data(reinterpret_cast<const char*>(w), 8);
  data += std::string("\x80\x3f", 2);  // bf16 1.0
  write_bytes(dir + "/m.safetensors", make_file(header, data));
  SafeTensors st = SafeTensors::open(dir + "/m.safetensors");
  EXPECT_TRUE(at::equal(st.load("w"), at::tensor({1.5f, -2.0f})));
  EXPECT_EQ(st.load("b").to(at::kFloat).item<float>(), 1.0f);
}

TEST(SafeTensorsBad, NotFound) {
  expect_open_error("/nonexistent/model.safetensors", ErrorCode::kNotFound, "no such");
  const std::string dir = glmvoice::test::scratch_dir("st-empty");
  expect_open_error(dir, ErrorCode::kNotFound, "safetensors");
}

TEST(SafeTensorsBad, TruncatedHeaderAndData) {
  const std::string dir = glmvoice::test::scratch_dir("st-trunc");
  write_safetensors(dir + "/good.safetensors", sample_tensors());
  const std::string good = read_bytes(dir + "/good.safetensors");
  write_bytes(dir + "/short.safetensors", good.substr(0, 5));
  expect_open_error(dir + "/short.safetensors", ErrorCode::kBadFile, "too short");
  write_bytes(dir + "/header.safetensors", good.substr(0, 40));
  expect_open_error(dir + "/header.safetensors", ErrorCode::kBadFile, "past the end");
  write_bytes(dir + "/data.safetensors", good.substr(0, good.size() - 3));
  expect_open_error(dir + "/data.safetensors", ErrorCode::kBadFile, "outside the data block");
  write_bytes(dir + "/empty.safetensors", "");
  expect_open_error(dir + "/empty.safetensors", ErrorCode::kBadFile, "too short");
}

TEST(SafeTensorsBad, HeaderLengthPastEof) {
  const std::string dir = glmvoice::test::scratch_dir("st-len");
  std::string bytes = make_file("{}", "");
  bytes[0] = static_cast<char>(0xff);
  bytes[7] = static_cast<char>(0xff);  // 2^64-ish: must not overflow
  write_bytes(dir + "/a.safetensors", bytes);
  expect_open_error(dir + "/a.safetensors", ErrorCode::kBadFile, "header length");
}

TEST(SafeTensorsBad, MalformedJson) {
  const std::string dir = glmvoice::test::scratch_dir("st-json");
  write_bytes(dir + "/a.safetensors", make_file("{\"x\": {\"dtype\": ", ""));
  expect_open_error(dir + "/a.safetensors", ErrorCode::kBadFile, "malformed JSON");
  write_bytes(dir + "/b.safetensors", make_file("[1, 2]", ""));
  expect_open_error(dir + "/b.safetensors", ErrorCode::kBadFile, "not an object");
  write_bytes(dir + "/c.safetensors", make_file("{\"x\": {\"dtype\": \"F32\", \"shape\": [1]}}", "abcd"));
  expect_open_error(dir + "/c.safetensors", ErrorCode::kBadFile, "data_offsets");
  write_bytes(dir + "/d.safetensors",
              make_file("{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", "abcd"));
  expect_open_error(dir + "/d.safetensors", ErrorCode::kBadFile, "non-negative");
}

TEST(SafeTensorsBad, OverlappingAndOutOfRangeOffsets) {
  const std::string dir = glmvoice::test::scratch_dir("st-off");
  write_bytes(dir + "/overlap.safetensors",
              make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                        " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                        std::string(12, '\0')));
  expect_open_error(dir + "/overlap.safetensors", ErrorCode::kBadFile, "overlap");
  write_bytes(dir + "/range.safetensors",
              make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
                        std::string(12, '\0')));
  expect_open_error(dir + "/range.safetensors", ErrorCode::kBadFile, "outside the data block");
  write_bytes(dir + "/reversed.safetensors",
              make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 0]}}",
                        std::string(12, '\0')));
  expect_open_error(dir + "/reversed.safetensors", ErrorCode::kBadFile, "end before begin");
  write_bytes(dir + "/huge.safetensors",
              make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 8],"
                        " \"data_offsets\": [0, 8]}}",
                        std::string(8, '\0')));
  expect_open_error(dir + "/huge.safetensors", ErrorCode::kBadFile, "overflow");
}

TEST(SafeTensorsBad, UnknownDtype) {
  const std::string dir = glmvoice::test::scratch_dir("st-dtype");
  write_bytes(dir + "/a.safetensors",
              make_file("{\"a\": {\"dtype\": \"Q7\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                        std::string(8, '\0')));
  expect_open_error(dir + "/a.safetensors", ErrorCode::kBadFile, "unknown dtype 'Q7'");
  write_bytes(dir + "/b.safetensors",
              make_file("{\"a\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}",
                        std::string(8, '\0')));
  expect_open_error(dir + "/b.safetensors", ErrorCode::kUnsupported, "F64");
}

TEST(SafeTensorsBad, BytesNotShapeTimesDtype) {
  const std::string dir = glmvoice::test::scratch_dir("st-bytes");
  write_bytes(dir + "/a.safetensors",
              make_file("{\"a\": {\"dtype\": \"BF16\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
                        std::string(8, '\0')));
  expect_open_error(dir + "/a.safetensors", ErrorCode::kBadFile, "8 bytes != [3] x BF16 = 6 bytes");
}

TEST(SafeTensorsBad, MissingShardAndMissingTensor) {
  const std::string dir = glmvoice::test::scratch_dir("st-shard");
  write_sharded_safetensors(dir, sample_tensors(), 2);
  fs::rename(dir + "/model-00002-of-00002.safetensors", dir + "/moved.safetensors");
  expect_open_error(dir, ErrorCode::kNotFound, "model-00002-of-00002.safetensors");
  // Listed in the index, absent from its shard.
  fs::rename(dir + "/moved.safetensors", dir + "/model-00002-of-00002.safetensors");
  auto index = nlohmann::json::parse(read_bytes(dir + "/model.safetensors.index.json"));
  index["weight_map"]["ghost.weight"] = "model-00001-of-00002.safetensors";
  write_bytes(dir + "/model.safetensors.index.json", index.dump());
  expect_open_error(dir, ErrorCode::kBadFile, "ghost.weight");
  write_bytes(dir + "/model.safetensors.index.json", "{\"weight_map\": {");
  expect_open_error(dir, ErrorCode::kBadFile, "malformed JSON");
}

TEST(SafeTensorsBad, ShapeMismatchViaLoadChecked) {
  const std::string dir = glmvoice::test::scratch_dir("st-check");
  write_safetensors(dir + "/m.safetensors", sample_tensors());
  auto st = SafeTensors::open(dir + "/m.safetensors");
  try {
    st.load_checked("a.f32", {3, 5}, at::kFloat, c10::Device(c10::kCPU));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMismatch);
    EXPECT_EQ(e.key(), "a.f32");
    EXPECT_NE(std::string(e.what()).find("shape [3, 4] != expected [3, 5]"), std::string::npos) << e.what();
  }
  try {
    st.load("missing.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMismatch);
  }
}
