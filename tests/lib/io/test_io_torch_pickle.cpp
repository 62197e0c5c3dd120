// lib/io torch.save zip: round trip, the fixture flow.pt/hift.pt, weight-norm folding, and
// bad files (bad CRC, missing record, unknown opcode/global, legacy format, truncation).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/error.h"
#include "io/torch_pickle.h"
#include "test_support.h"

namespace fs = std::filesystem;
using glmvoice::Error;
using glmvoice::ErrorCode;
using namespace glmvoice::io;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::pair<std::string, at::Tensor>> sample_entries() {
  at::manual_seed(1);
  return {
      {"conv.weight", at::randn({4, 3, 5})},
      {"conv.bias", at::randn({4})},
      {"half", at::randn({2, 2}).to(at::kHalf)},
      {"bf16", at::randn({3}).to(at::kBFloat16)},
      {"double", at::randn({2}).to(at::kDouble)},
      {"long", at::arange(70000, 70010, at::kLong)},
      {"int", at::arange(-5, 5, at::kInt)},
      {"byte", at::arange(0, 200, 50, at::kLong).to(at::kByte)},
      {"bool", at::tensor({0, 1, 1}, at::kLong).to(at::kBool)},
      {"scalar", at::tensor(3.5f)},
      {"big.dims", at::zeros({70000, 1})},
      {"transposed", at::randn({3, 4}).t()},
  };
}

void expect_error(const std::string& path, ErrorCode code, const std::string& needle) {
  try {
    load_torch_state_dict(path);
    FAIL() << "no error for " << path;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Offset of the first occurrence of `needle` in `hay` (asserts found).
size_t find(const std::string& hay, const std::string& needle) {
  const size_t pos = hay.find(needle);
  EXPECT_NE(pos, std::string::npos) << needle;
  return pos;
}

}  // namespace

TEST(TorchPickle, RoundTrip) {
  const std::string dir = glmvoice::test::scratch_dir("pt-rt");
  auto entries = sample_entries();
  save_torch_state_dict(dir + "/m.pt", entries, "m");
  StateDict sd = load_torch_state_dict(dir + "/m.pt");
  ASSERT_EQ(sd.entries.size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(sd.entries[i].first, entries[i].first);  // insertion order kept
    const at::Tensor& t = sd.entries[i].second;
    EXPECT_EQ(t.scalar_type(), entries[i].second.scalar_type()) << entries[i].first;
    EXPECT_TRUE(t.is_contiguous());
    EXPECT_TRUE(at::equal(t, entries[i].second)) << entries[i].first;
  }
  EXPECT_TRUE(sd.has("conv.bias"));
  EXPECT_FALSE(sd.has("conv.nope"));
  EXPECT_EQ(sd.get_checked("conv.weight", {4, 3, 5}).size(2), 5);
  EXPECT_EQ(sd.names().front(), "conv.weight");
  // Data records are 64-byte aligned, every entry stored under "m/".
  const std::string bytes = read_bytes(dir + "/m.pt");
  EXPECT_NE(bytes.find("m/data.pkl"), std::string::npos);
  EXPECT_NE(bytes.find("m/version"), std::string::npos);
}

TEST(TorchPickle, AnyArchiveFolder) {
  const std::string dir = glmvoice::test::scratch_dir("pt-folder");
  save_torch_state_dict(dir + "/x.pt", {{"w", at::ones({2})}}, "some_folder-1");
  StateDict sd = load_torch_state_dict(dir + "/x.pt");
  EXPECT_TRUE(at::equal(sd.get("w"), at::ones({2})));
}

TEST(TorchPickle, CurrentTorchRecordsWritten) {
  // torch >= 2.5 writes .format_version, .storage_alignment, byteorder, version and
  // .data/serialization_id beside data.pkl and data/N; ours does too, and reads them back.
  const std::string dir = glmvoice::test::scratch_dir("pt-records");
  save_torch_state_dict(dir + "/m.pt", sample_entries(), "archive");
  const std::string bytes = read_bytes(dir + "/m.pt");
  for (const char* record : {"archive/data.pkl", "archive/.format_version", "archive/.storage_alignment",
                             "archive/byteorder", "archive/version", "archive/.data/serialization_id"}) {
    EXPECT_NE(bytes.find(record), std::string::npos) << record;
  }
  EXPECT_EQ(load_torch_state_dict(dir + "/m.pt").entries.size(), sample_entries().size());
}

// Re-packs our zip with Python's zipfile (another zip writer: no 64-byte padding, its own
// header fields) in the record order torch 2.x uses, with `byteorder` = `order`.
bool repack_like_torch(const std::string& in, const std::string& out, const std::string& order) {
  const std::string script =
      "import sys, zipfile\n"
      "src = zipfile.ZipFile(sys.argv[1])\n"
      "names = [n for n in src.namelist() if n.split('/', 1)[1] not in ('byteorder', '.data/serialization_id')]\n"
      "with zipfile.ZipFile(sys.argv[2], 'w', zipfile.ZIP_STORED) as dst:\n"
      "    dst.writestr('archive/byteorder', sys.argv[3])\n"
      "    for n in names: dst.writestr('archive/' + n.split('/', 1)[1], src.read(n))\n"
      "    dst.writestr('archive/.data/serialization_id', '1234567890123456789012345678901234567890')\n";
  const std::string py = in + ".py";
  write_bytes(py, script);
  const std::string cmd = "python3 '" + py + "' '" + in + "' '" + out + "' '" + order + "'";
  return std::system(cmd.c_str()) == 0;
}

TEST(TorchPickle, ForeignZipWithByteorderAndSerializationId) {
  const std::string dir = glmvoice::test::scratch_dir("pt-foreign");
  auto entries = sample_entries();
  save_torch_state_dict(dir + "/m.pt", entries, "m");
  if (!repack_like_torch(dir + "/m.pt", dir + "/torch.pt", "little")) GTEST_SKIP() << "python3 not available";
  StateDict sd = load_torch_state_dict(dir + "/torch.pt");
  ASSERT_EQ(sd.entries.size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_TRUE(at::equal(sd.entries[i].second, entries[i].second)) << entries[i].first;
  }
  ASSERT_TRUE(repack_like_torch(dir + "/m.pt", dir + "/big.pt", "big"));
  expect_error(dir + "/big.pt", ErrorCode::kUnsupported, "archive/byteorder: byte order 'big'");
}

TEST(TorchPickle, FixtureCheckpointsLoadEveryTensor) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string dir = glmvoice::test::fixtures_dir() + "/models/tiny-a/decoder";
  for (const std::string name : {"flow.pt", "hift.pt"}) {
    StateDict sd = load_torch_state_dict(dir + "/" + name);
    // Every storage record is used by one tensor in these files.
    size_t records = 0;
    const std::string bytes = read_bytes(dir + "/" + name);
    const std::string folder = name.substr(0, name.size() - 3) + "/data/";
    for (size_t pos = bytes.find(folder); pos != std::string::npos; pos = bytes.find(folder, pos + 1)) ++records;
    EXPECT_EQ(sd.entries.size() * 2, records) << name;  // local header + central directory
    for (const auto& [key, t] : sd.entries) {
      EXPECT_EQ(t.scalar_type(), at::kFloat) << key;
      EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << key;
    }
  }
}

TEST(TorchPickle, FoldWeightNormFixtureHift) {
  GLMVOICE_REQUIRE_FIXTURES();
  StateDict sd = load_torch_state_dict(glmvoice::test::fixtures_dir() + "/models/tiny-a/decoder/hift.pt");
  const at::Tensor g = sd.get("conv_pre.weight_g").clone();
  const at::Tensor v = sd.get("conv_pre.weight_v").clone();
  const size_t before = sd.entries.size();
  const int folded = fold_weight_norm(sd);
  EXPECT_GT(folded, 0);
  EXPECT_EQ(sd.entries.size(), before - folded);
  for (const auto& name : sd.names()) {
    EXPECT_EQ(name.find("weight_g"), std::string::npos) << name;
    EXPECT_EQ(name.find("weight_v"), std::string::npos) << name;
  }
  const at::Tensor w = sd.get("conv_pre.weight");
  const at::Tensor ref = v * (g / v.pow(2).sum({1, 2}, true).sqrt());
  EXPECT_LT((w - ref).abs().max().item<float>(), 1e-6f);
  EXPECT_EQ(fold_weight_norm(sd), 0);
}

TEST(TorchPickle, FoldWeightNormBothSpellings) {
  at::manual_seed(2);
  // ConvTranspose-like: dim 0 = input channels, g [in, 1, 1].
  at::Tensor v = at::randn({3, 2, 4});
  at::Tensor g = at::rand({3, 1, 1}) + 0.5;
  StateDict sd;
  sd.path = "mem";
  sd.entries = {{"a.weight_g", g}, {"a.bias", at::zeros({2})}, {"a.weight_v", v},
                {"b.parametrizations.weight.original0", g}, {"b.parametrizations.weight.original1", v}};
  EXPECT_EQ(fold_weight_norm(sd), 2);
  ASSERT_EQ(sd.names(), (std::vector<std::string>{"a.weight", "a.bias", "b.weight"}));
  const at::Tensor ref = at::_weight_norm(v, g, 0);
  EXPECT_TRUE(at::equal(sd.get("a.weight"), ref));
  EXPECT_TRUE(at::equal(sd.get("b.weight"), ref));
  const at::Tensor norm = sd.get("a.weight").pow(2).sum({1, 2}).sqrt();
  EXPECT_LT((norm - g.flatten()).abs().max().item<float>(), 1e-5f);
  // Half a pair is an error.
  StateDict half;
  half.entries = {{"c.weight_g", g}};
  EXPECT_THROW(fold_weight_norm(half), Error);
}

TEST(TorchPickleBad, NotFoundLegacyAndNotZip) {
  expect_error("/nonexistent/flow.pt", ErrorCode::kNotFound, "no such");
  const std::string dir = glmvoice::test::scratch_dir("pt-legacy");
  write_bytes(dir + "/legacy.pt", std::string("\x80\x02\x8a\x0a", 4) + std::string(40, '\0'));
  expect_error(dir + "/legacy.pt", ErrorCode::kUnsupported, "legacy");
  write_bytes(dir + "/text.pt", "hello world, not a zip");
  expect_error(dir + "/text.pt", ErrorCode::kBadFile, "not a torch.save zip");
  write_bytes(dir + "/empty.pt", "");
  expect_error(dir + "/empty.pt", ErrorCode::kBadFile, "");
}

TEST(TorchPickleBad, BadCrc) {
  const std::string dir = glmvoice::test::scratch_dir("pt-crc");
  save_torch_state_dict(dir + "/m.pt", sample_entries(), "m");
  std::string bytes = read_bytes(dir + "/m.pt");
  // Flip one byte in the first storage record's data (just after its padded local header).
  const size_t name = find(bytes, "m/data/0");
  size_t data = name + 8;
  data += 4 + static_cast<uint8_t>(bytes[data + 2]) + (static_cast<uint8_t>(bytes[data + 3]) << 8);
  bytes[data] ^= 0x5a;
  write_bytes(dir + "/bad.pt", bytes);
  expect_error(dir + "/bad.pt", ErrorCode::kBadFile, "CRC-32 mismatch");
}

TEST(TorchPickleBad, MissingRecord) {
  const std::string dir = glmvoice::test::scratch_dir("pt-missing");
  save_torch_state_dict(dir + "/m.pt", sample_entries(), "m");
  std::string bytes = read_bytes(dir + "/m.pt");
  // Rename the record "m/data/1" to "m/data/X" in both local header and central directory.
  for (size_t pos = bytes.find("m/data/1"); pos != std::string::npos; pos = bytes.find("m/data/1", pos + 1)) {
    if (pos + 8 < bytes.size() && bytes[pos + 8] != '0' && bytes[pos + 8] != '1') bytes[pos + 7] = 'X';
  }
  write_bytes(dir + "/bad.pt", bytes);
  expect_error(dir + "/bad.pt", ErrorCode::kBadFile, "m/data/1: storage record missing");
  // data.pkl itself missing.
  bytes = read_bytes(dir + "/m.pt");
  for (size_t pos = bytes.find("m/data.pkl"); pos != std::string::npos; pos = bytes.find("m/data.pkl", pos + 1)) {
    bytes[pos + 7] = 'q';
  }
  write_bytes(dir + "/nopkl.pt", bytes);
  expect_error(dir + "/nopkl.pt", ErrorCode::kBadFile, "data.pkl");
}

TEST(TorchPickleBad, TruncatedZip) {
  const std::string dir = glmvoice::test::scratch_dir("pt-trunc");
  save_torch_state_dict(dir + "/m.pt", sample_entries(), "m");
  const std::string bytes = read_bytes(dir + "/m.pt");
  for (size_t keep : {size_t(10), size_t(100), bytes.size() / 2, bytes.size() - 10}) {
    write_bytes(dir + "/t.pt", bytes.substr(0, keep));
    expect_error(dir + "/t.pt", ErrorCode::kBadFile, "");
  }
}

// Pickle-level errors go through parse_state_dict_pickle (no zip needed).
namespace {

void expect_pickle_error(const std::string& pkl, const std::string& needle) {
  StorageLoader loader = [](const std::string&, at::ScalarType dtype, int64_t numel) {
    return at::zeros({numel}, dtype);
  };
  try {
    parse_state_dict_pickle(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size(), "x.pt", "x/data.pkl", loader);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadFile) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(TorchPickleBad, UnknownOpcodeAndGlobal) {
  // PROTO 2, GLOBAL os.system, ... : refused at the GLOBAL, never called.
  expect_pickle_error(std::string("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00lsR.", 22), "GLOBAL 'os.system'");
  expect_pickle_error(std::string("\x80\x02" "cbuiltins\neval\n", 17), "builtins.eval");
  // INST ('i') is not supported.
  expect_pickle_error(std::string("\x80\x02(ios\nsystem\n.", 15), "unsupported pickle opcode 0x69 'i'");
  // Unknown byte.
  expect_pickle_error(std::string("\x80\x02\xff.", 4), "opcode 0xff");
  // Stack underflow, memo miss, missing STOP, truncated string, wrong root.
  expect_pickle_error(std::string("\x80\x02s.", 4), "underflow");
  expect_pickle_error(std::string("\x80\x02h\x05.", 5), "memo entry 5 missing");
  expect_pickle_error(std::string("\x80\x02}", 3), "without STOP");
  expect_pickle_error(std::string("\x80\x02X\xff\x00\x00\x00" "ab", 9), "truncated");
  expect_pickle_error(std::string("\x80\x02K\x01.", 5), "not a state dict");
  // A dict value that is not a tensor.
  expect_pickle_error(std::string("\x80\x02}X\x01\x00\x00\x00" "aK\x01s.", 14), "not a tensor");
}

TEST(TorchPickleBad, TensorViewOutsideStorage) {
  const std::string dir = glmvoice::test::scratch_dir("pt-view");
  save_torch_state_dict(dir + "/m.pt", {{"w", at::ones({2, 3})}}, "m");
  std::string bytes = read_bytes(dir + "/m.pt");
  // The pickled size tuple "(K\x02K\x03t": make it (2, 4) so the view needs 8 > 6 elements.
  // (The CRC of data.pkl then fails first, which is also a clean error.)
  const size_t pos = find(bytes, std::string("(K\x02K\x03t", 6));
  bytes[pos + 4] = 4;
  write_bytes(dir + "/bad.pt", bytes);
  expect_error(dir + "/bad.pt", ErrorCode::kBadFile, "CRC-32");
  // Directly through the VM: storage of 6, view [2, 4] stride [4, 1].
  StorageLoader loader = [](const std::string&, at::ScalarType dtype, int64_t numel) {
    return at::zeros({numel}, dtype);
  };
  std::string pkl =
      std::string("\x80\x02}X\x01\x00\x00\x00w", 9) + "ctorch._utils\n_rebuild_tensor_v2\n(" +
      std::string("(X\x07\x00\x00\x00storage", 13) + std::string("ctorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x06tQ", 38) +
      std::string("K\x00(K\x02K\x04t(K\x04K\x01t\x89}tRs.", 20);
  try {
    parse_state_dict_pickle(reinterpret_cast<const uint8_t*>(pkl.data()), pkl.size(), "x.pt", "x/data.pkl", loader);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("runs past its storage"), std::string::npos) << e.what();
  }
}

TEST(TorchPickleBad, ShapeMismatchViaGetChecked) {
  const std::string dir = glmvoice::test::scratch_dir("pt-shape");
  save_torch_state_dict(dir + "/m.pt", {{"w", at::ones({2, 3})}}, "m");
  StateDict sd = load_torch_state_dict(dir + "/m.pt");
  try {
    sd.get_checked("w", {3, 2});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kMismatch);
    EXPECT_NE(std::string(e.what()).find("shape [2, 3] != expected [3, 2]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sd.get("missing"), Error);
}
