// glmvoice-bench stages; each room implements its own in bench_<room>.cpp.
#pragma once

namespace glmvoice::tools {

int bench_tokenizer(int argc, char** argv);  // bench_speech.cpp
int bench_llm(int argc, char** argv);        // bench_llm.cpp
int bench_decoder(int argc, char** argv);    // bench_voice.cpp
int bench_e2e(int argc, char** argv);        // bench_e2e.cpp: one turn through all three
int bench_dtypes(int argc, char** argv);     // bench_gpu.cpp: the LLM per weight format

}  // namespace glmvoice::tools
