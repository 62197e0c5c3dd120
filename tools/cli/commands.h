// glmvoice-cli subcommands (contract: ../shared/design/ARCHITECTURE.md). Each room's
// commands live in their own cmd_<room>.cpp; main.cpp only dispatches.
#pragma once

namespace glmvoice::tools {

// Each takes (argc, argv) with argv[1] = the subcommand name; returns the exit status.
// They may throw: main() prints one line and exits 1.
int cmd_inspect(int argc, char** argv);      // cmd_inspect.cpp
int cmd_mel(int argc, char** argv);          // cmd_speech.cpp
int cmd_tokenize(int argc, char** argv);     // cmd_speech.cpp
int cmd_encode_text(int argc, char** argv);  // cmd_llm.cpp
int cmd_decode_text(int argc, char** argv);  // cmd_llm.cpp
int cmd_logits(int argc, char** argv);       // cmd_llm.cpp
int cmd_generate(int argc, char** argv);     // cmd_llm.cpp
int cmd_flow(int argc, char** argv);         // cmd_voice.cpp
int cmd_vocode(int argc, char** argv);       // cmd_voice.cpp
int cmd_decode(int argc, char** argv);       // cmd_voice.cpp

}  // namespace glmvoice::tools
