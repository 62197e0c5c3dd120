// glmvoice-bench stages; each room implements its own in bench_<room>.cpp.
#pragma once

#include <chrono>
#include <sstream>
#include <string>
#include <vector>

namespace glmvoice::tools {

// Shared by the stages: milliseconds since `t0`, and a comma-separated option as a list.
using BenchClock = std::chrono::steady_clock;
inline double ms_since(BenchClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(BenchClock::now() - t0).count();
}
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int bench_tokenizer(int argc, char** argv);  // bench_speech.cpp
int bench_llm(int argc, char** argv);        // bench_llm.cpp
int bench_decoder(int argc, char** argv);    // bench_voice.cpp
int bench_e2e(int argc, char** argv);        // bench_e2e.cpp: one turn through all three
int bench_dtypes(int argc, char** argv);     // bench_gpu.cpp: the LLM per weight format

// The real GLM-4-Voice-9B config.json (llm spec §1.2) in `dir`, beside the tiny tokenizer files
// and without weights: for LlmModel::load_random (bench_gpu.cpp).
void write_real_llm_config(const std::string& dir);

}  // namespace glmvoice::tools
