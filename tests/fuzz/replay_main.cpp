// A main() for the fuzz targets in ordinary (gcc, no libFuzzer) builds: runs each file given
// on the command line through LLVMFuzzerTestOneInput, then `--mutations=N` deterministic
// mutants of it (byte flips, truncations, insertions, splices of header-like bytes). Used
// by meson test (tests/lib/io) so the seeds and every bad-input path stay crash-free
// without clang. Exit status 0 unless a target crashes (then the process dies).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

uint64_t next(uint64_t& s) {  // xorshift64*
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545F4914F6CDD1DULL;
}

std::string mutate(const std::string& in, uint64_t& s) {
  std::string out = in;
  const int edits = 1 + static_cast<int>(next(s) % 4);
  for (int e = 0; e < edits; ++e) {
    const uint64_t r = next(s);
    const size_t pos = out.empty() ? 0 : next(s) % out.size();
    switch (r % 6) {
      case 0:  // flip a byte
        if (!out.empty()) out[pos] = static_cast<char>(out[pos] ^ (1 + next(s) % 255));
        break;
      case 1:  // truncate
        out.resize(pos);
        break;
      case 2:  // insert random bytes
        out.insert(pos, std::string(1 + next(s) % 8, static_cast<char>(next(s))));
        break;
      case 3:  // set a byte to an interesting value
        if (!out.empty()) {
          static const uint8_t kValues[] = {0x00, 0xff, 0x7f, 0x80, '(', ')', '.', 'c', 'R', 'X', '"', '{', '}', '9'};
          out[pos] = static_cast<char>(kValues[next(s) % sizeof(kValues)]);
        }
        break;
      case 4:  // erase a range
        out.erase(pos, 1 + next(s) % 16);
        break;
      default:  // duplicate a range
        if (!out.empty()) out.insert(next(s) % out.size(), out.substr(pos, 1 + next(s) % 16));
        break;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  long mutations = 0;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--mutations=", 12) == 0) {
      mutations = std::strtol(argv[i] + 12, nullptr, 10);
    } else {
      files.push_back(argv[i]);
    }
  }
  long runs = 0;
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", file.c_str());
      return 1;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string seed = ss.str();
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(seed.data()), seed.size());
    ++runs;
    uint64_t state = 0x9E3779B97F4A7C15ULL ^ seed.size();
    for (long m = 0; m < mutations; ++m) {
      const std::string input = mutate(seed, state);
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
      ++runs;
    }
  }
  std::printf("%ld inputs, no crash\n", runs);
  return 0;
}
