// Minimal RIFF/WAVE reader; see wav_file.h.
#include "speech/wav_file.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include "io/error.h"
#include "speech/resample.h"

namespace glmvoice::speech {

namespace {

uint32_t le32(const unsigned char* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint16_t le16(const unsigned char* p) { return uint16_t(p[0] | (p[1] << 8)); }

constexpr uint16_t kFormatPcm = 1;
constexpr uint16_t kFormatFloat = 3;
constexpr uint16_t kFormatExtensible = 0xFFFE;

}  // namespace

WavData read_wav(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorCode::kNotFound, path, "", "cannot open WAV file");
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_wav(bytes.data(), bytes.size(), path);
}

WavData parse_wav(const uint8_t* file_data, size_t file_size, const std::string& path) {
  c10::InferenceMode guard;
  struct View {
    const uint8_t* p;
    size_t n;
    const uint8_t* data() const { return p; }
    size_t size() const { return n; }
  } d{file_data, file_size};
  if (d.size() < 12 || std::memcmp(d.data(), "RIFF", 4) != 0 || std::memcmp(d.data() + 8, "WAVE", 4) != 0) {
    throw Error(ErrorCode::kBadFile, path, "RIFF", "not a RIFF/WAVE file");
  }
  uint16_t format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  const unsigned char* data = nullptr;
  size_t data_size = 0;
  size_t pos = 12;
  while (pos + 8 <= d.size()) {
    const unsigned char* chunk = d.data() + pos;
    const uint32_t size = le32(chunk + 4);
    const size_t avail = d.size() - pos - 8;
    if (std::memcmp(chunk, "fmt ", 4) == 0) {
      if (size < 16 || size > avail) throw Error(ErrorCode::kBadFile, path, "fmt", "truncated fmt chunk");
      format = le16(chunk + 8);
      channels = le16(chunk + 10);
      rate = le32(chunk + 12);
      bits = le16(chunk + 22);
      if (format == kFormatExtensible && size >= 26) format = le16(chunk + 32);
    } else if (std::memcmp(chunk, "data", 4) == 0) {
      data = chunk + 8;
      data_size = std::min<size_t>(size, avail);  // tolerate a streaming header (size 0xFFFFFFFF)
      break;
    }
    // In size_t: 8 + size in 32 bits wraps to 0 for size 0xFFFFFFF8 (a fuzzer-found endless loop).
    pos += 8 + static_cast<size_t>(size) + (size & 1u);
  }
  if (channels == 0 || rate == 0) throw Error(ErrorCode::kBadFile, path, "fmt", "missing or empty fmt chunk");
  if (!data) throw Error(ErrorCode::kBadFile, path, "data", "missing data chunk");
  const size_t bytes = bits / 8;
  if (!((format == kFormatPcm && (bits == 8 || bits == 16 || bits == 24 || bits == 32)) ||
        (format == kFormatFloat && (bits == 32 || bits == 64)))) {
    throw Error(ErrorCode::kBadFile, path, "fmt",
                "unsupported sample format " + std::to_string(format) + " / " + std::to_string(bits) + " bits");
  }
  const int64_t frames = static_cast<int64_t>(data_size / (bytes * channels));
  at::Tensor out = at::empty({frames, static_cast<int64_t>(channels)}, at::kFloat);
  float* o = out.data_ptr<float>();
  const int64_t total = frames * channels;
  for (int64_t i = 0; i < total; ++i) {
    const unsigned char* p = data + i * bytes;
    float v = 0.0f;
    if (format == kFormatFloat) {
      if (bits == 32) {
        std::memcpy(&v, p, 4);
      } else {
        double dv;
        std::memcpy(&dv, p, 8);
        v = static_cast<float>(dv);
      }
    } else if (bits == 8) {
      v = (static_cast<float>(p[0]) - 128.0f) / 128.0f;
    } else if (bits == 16) {
      v = static_cast<float>(static_cast<int16_t>(le16(p))) / 32768.0f;
    } else if (bits == 24) {
      int32_t s = int32_t(p[0]) | (int32_t(p[1]) << 8) | (int32_t(p[2]) << 16);
      if (s & 0x800000) s -= 0x1000000;
      v = static_cast<float>(s) / 8388608.0f;
    } else {
      v = static_cast<float>(static_cast<double>(static_cast<int32_t>(le32(p))) / 2147483648.0);
    }
    o[i] = v;
  }
  WavData result;
  result.sample_rate = rate;
  result.samples = out.t().contiguous();
  return result;
}

at::Tensor read_wav_mono16k(const std::string& path) {
  c10::InferenceMode guard;
  WavData wav = read_wav(path);
  constexpr int64_t kTokenizerRate = 16000;  // WhisperFeatureExtractor sampling_rate upstream
  at::Tensor channel0 = wav.samples[0].contiguous();
  if (wav.sample_rate == kTokenizerRate) return channel0;
  return resample(channel0, wav.sample_rate, kTokenizerRate);
}

}  // namespace glmvoice::speech
