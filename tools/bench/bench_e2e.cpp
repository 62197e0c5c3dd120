// glmvoice-bench e2e: one spoken turn through tokenizer -> LLM -> decoder with the lib APIs
// (what the three elements run, without GStreamer), timed per stage.
//
//   glmvoice-bench e2e [--size tiny|mid] [--wav QUESTION.wav] [--answer-tokens 200]
//                      [--model-output] [--threads N] [--dir DIR]
//
// Sizes (random weights written once into DIR, default /tmp/glmvoice-bench-e2e/<size>):
//   tiny  tokenizer mk-a, LLM tiny, decoder tiny (the test models)
//   mid   tokenizer real-l2 (d_model 1280, 2 layers), LLM mid (hidden 1024, 8 layers, real
//         vocabulary), decoder real-random (release size: 111 M + 20 M parameters)
// A random LLM does not speak in the 13 text / 26 speech rhythm, so by default the answer's
// k-th token is routed as text when k mod 39 < 13 and otherwise as speech token
// (sampled id mod codebook): the real model's timeline with random compute. --model-output
// uses the model's own text/speech classification instead (for real checkpoints).
// Reported: tokenizer streaming RTF and its end-of-turn flush, LLM prefill and decode, the
// latency from end-of-turn to the first answer audio, and the answer's real-time factor.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../cli/args.h"
#include "bench.h"
#include "llm/chat.h"
#include "llm/tiny_model.h"
#include "speech/tiny_model.h"
#include "speech/tokenizer_model.h"
#include "speech/tokenizer_state.h"
#include "speech/wav_file.h"
#include "voice/decoder_model.h"
#include "voice/tiny_model.h"

namespace glmvoice::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A speech-like test signal when no WAV is given: two drifting tones with a syllable envelope.
at::Tensor synthetic_question(double seconds) {
  const int64_t n = static_cast<int64_t>(seconds * 16000);
  at::Tensor t = at::arange(n, at::kDouble) / 16000.0;
  at::Tensor envelope = at::sin(t * (2 * M_PI * 3.0)).abs();
  at::Tensor x = (at::sin(t * (2 * M_PI * 180.0) + at::sin(t * 2.0) * 3.0) * 0.6 +
                  at::sin(t * (2 * M_PI * 720.0)) * 0.2) * envelope * 0.3;
  return x.to(at::kFloat);
}

struct Dirs {
  std::string tokenizer, llm, decoder;
};

Dirs ensure_models(const std::string& size, const std::string& root) {
  Dirs d{root + "/tokenizer", root + "/llm", root + "/decoder"};
  const bool mid = size == "mid";
  if (!mid && size != "tiny") throw std::runtime_error("--size must be tiny or mid");
  if (!fs::exists(d.tokenizer + "/config.json")) {
    std::fprintf(stderr, "writing tokenizer model into %s ...\n", d.tokenizer.c_str());
    speech::write_tiny_tokenizer(d.tokenizer, mid ? "real-l2" : "mk-a", 1);
  }
  if (!fs::exists(d.llm + "/config.json")) {
    std::fprintf(stderr, "writing LLM into %s ...\n", d.llm.c_str());
    llm::write_tiny_llm(d.llm, mid ? "mid" : "tiny", 2);
  }
  if (!fs::exists(d.decoder + "/config.yaml")) {
    std::fprintf(stderr, "writing decoder into %s ...\n", d.decoder.c_str());
    voice::write_tiny_decoder(d.decoder, mid ? "real-random" : "tiny", 3);
  }
  return d;
}

}  // namespace

int bench_e2e(int argc, char** argv) {
  Args args(argc, argv, 2, {"model-output"});
  args.check_known({"size", "wav", "answer-tokens", "model-output", "threads", "dir"});
  const std::string size = args.get("size", "tiny");
  const int64_t answer_tokens = args.get_int("answer-tokens", 200);
  const bool model_output = args.has("model-output");
  at::set_num_threads(static_cast<int>(args.get_int("threads", 1)));
  c10::InferenceMode guard;

  const Dirs dirs = ensure_models(size, args.get("dir", "/tmp/glmvoice-bench-e2e/" + size));
  auto t_load = Clock::now();
  auto tokenizer = speech::TokenizerModel::load({dirs.tokenizer, c10::kCPU, c10::kFloat});
  auto llm_model = llm::LlmModel::load({dirs.llm, c10::kCPU, c10::kFloat});
  auto decoder = voice::DecoderModel::load({dirs.decoder, c10::kCPU, c10::kFloat});
  std::printf("e2e %s: models loaded in %.2f s (threads %d)\n", size.c_str(), seconds_since(t_load),
              at::get_num_threads());

  const at::Tensor question = args.has("wav") ? speech::read_wav_mono16k(args.get("wav")) : synthetic_question(3.0);
  const double question_s = static_cast<double>(question.numel()) / 16000.0;

  // 1. tokenizer, streamed in 20 ms pushes as the element gets them from a live source
  speech::TokenizerState tok_state(tokenizer);
  std::vector<int64_t> speech_tokens;
  const float* x = question.data_ptr<float>();
  auto t0 = Clock::now();
  for (int64_t i = 0; i < question.numel(); i += 320) {
    for (int32_t id : tok_state.push(x + i, std::min<int64_t>(320, question.numel() - i))) speech_tokens.push_back(id);
  }
  const double tok_stream_s = seconds_since(t0);
  auto t_turn_end = Clock::now();  // end-of-turn
  for (int32_t id : tok_state.finish()) speech_tokens.push_back(id);
  const double tok_finish_s = seconds_since(t_turn_end);

  // 2. LLM turn + 3. decoder, interleaved token by token as in the pipeline
  llm::ChatOptions chat_options;
  chat_options.max_new_tokens = answer_tokens;
  llm::ChatState chat(llm_model, chat_options);
  const int64_t n_audio_llm = llm_model->tokenizer().n_audio();
  for (auto& s : speech_tokens) s %= n_audio_llm;
  voice::DecoderState dec_state(decoder);
  const int64_t n_audio_dec = decoder->vocab_size();

  auto t_prefill = Clock::now();
  chat.begin_turn(llm::UserTurn::speech(speech_tokens));
  double prefill_s = 0, llm_s = 0, dec_s = 0, first_audio_s = -1;
  int64_t generated = 0, answer_speech = 0, samples = 0;
  for (int64_t k = 0;; ++k) {
    auto t_step = Clock::now();
    const llm::ChatEvent ev = chat.step();
    const double step_s = seconds_since(t_step);
    if (k == 0) prefill_s = seconds_since(t_prefill); else llm_s += step_s;
    if (ev.kind == llm::ChatEvent::kEnd) break;
    ++generated;
    int32_t speech = -1;
    if (model_output) {
      if (ev.kind == llm::ChatEvent::kAudio) speech = static_cast<int32_t>(ev.speech_token % n_audio_dec);
    } else if (k % 39 >= 13) {
      speech = static_cast<int32_t>(ev.token_id % n_audio_dec);
    }
    if (speech < 0) continue;
    ++answer_speech;
    auto t_dec = Clock::now();
    const at::Tensor audio = dec_state.push(&speech, 1);
    dec_s += seconds_since(t_dec);
    samples += audio.numel();
    if (audio.numel() > 0 && first_audio_s < 0) first_audio_s = seconds_since(t_turn_end);
  }
  auto t_dec = Clock::now();
  samples += dec_state.finish().numel();
  dec_s += seconds_since(t_dec);
  if (first_audio_s < 0 && samples > 0) first_audio_s = seconds_since(t_turn_end);
  const double answer_s = static_cast<double>(samples) / static_cast<double>(decoder->sample_rate());
  const double compute_s = tok_finish_s + prefill_s + llm_s + dec_s;

  std::printf("  question: %.2f s -> %zu speech tokens; tokenizer streaming RTF %.3f, end-of-turn flush %.1f ms\n",
              question_s, speech_tokens.size(), tok_stream_s / question_s, tok_finish_s * 1e3);
  std::printf("  llm: prompt %zu tokens, prefill %.1f ms; %lld answer tokens, decode %.2f ms/token (%.1f tokens/s)\n",
              chat.prompt_ids().size(), prefill_s * 1e3, static_cast<long long>(generated),
              generated > 1 ? llm_s * 1e3 / (generated - 1) : 0.0, generated > 1 ? (generated - 1) / llm_s : 0.0);
  std::printf("  decoder: %lld speech tokens -> %.2f s of audio, %.1f ms compute (RTF %.3f)\n",
              static_cast<long long>(answer_speech), answer_s, dec_s * 1e3, answer_s > 0 ? dec_s / answer_s : 0.0);
  std::printf("  end-of-turn -> first answer audio: %.1f ms%s\n", first_audio_s * 1e3,
              model_output ? "" : " (13 text / 26 speech routing)");
  std::printf("  answer RTF (tokenizer flush + LLM + decoder compute / answer audio): %.3f\n",
              answer_s > 0 ? compute_s / answer_s : 0.0);
  return 0;
}

}  // namespace glmvoice::tools
