// Runs a gst_parse_launch pipeline to EOS/error with a timeout, collecting bus messages and
// (optionally) the speech tokens that reach a named element, for the whole-pipeline tests.
#pragma once

#include <gst/gst.h>

#include <string>
#include <vector>

namespace glmvoice::test {

struct PipelineResult {
  bool reached_eos = false;
  bool timed_out = false;
  std::vector<std::string> errors;            // "element: message (debug)"
  std::vector<std::string> warnings;          // "element: message"
  std::vector<std::string> element_messages;  // structure strings of element messages
  std::vector<GstStructure*> turn_messages;   // glmvoicellm-turn messages (owned)
  std::vector<int32_t> probed_tokens;         // int32 tokens seen on probe_pad
  int end_of_responses = 0;                   // end-of-response events seen on probe_pad

  PipelineResult() = default;
  PipelineResult(const PipelineResult&) = delete;
  PipelineResult& operator=(const PipelineResult&) = delete;
  ~PipelineResult();
};

// `probe` = "element.pad" whose buffers are int32 tokens (e.g. "dec.sink"), or "".
void run_pipeline(const std::string& description, double timeout_s, PipelineResult& result,
                  const std::string& probe = "");

// espeak-ng speech into a 16-bit WAV at `path`; false if espeak-ng is missing.
bool make_speech_wav(const std::string& path, const std::string& voice, const std::string& text);
bool have_program(const std::string& name);
// Number of samples of a WAV file written by wavenc (data chunk size / block align), -1 on error.
int64_t wav_samples(const std::string& path, int* rate = nullptr, int* channels = nullptr);

}  // namespace glmvoice::test
