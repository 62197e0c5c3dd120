// glmvoice-bench e2e: one spoken turn through tokenizer -> LLM -> decoder with the lib APIs
// (what the three elements run, without GStreamer), timed per stage, in two schedules run
// one after the other in this process on the same weights and the same question:
//
//   glmvoice-bench e2e [--size tiny|mid] [--schedule upstream|ours|both] [--wav QUESTION.wav]
//                      [--question-seconds 5] [--answer-tokens 200] [--prefill-chunk 13]
//                      [--context-tokens 50] [--threads N] [--dir DIR] [--rounds 1]
//                      [--device cpu|cuda] [--llm-dtype float32|bfloat16|int8|int4] [--real-llm]
//
//   upstream  the reference demo's order: the question is tokenized after the turn ends
//             (TokenizerModel::tokenize), the prompt is prefilled in one call, the decoder runs
//             upstream's schedule (first block 25 tokens, the whole answer re-encoded per block).
//   ours      streaming tokenizer (only its end-of-turn flush is left after the turn), the
//             prompt prefilled while the user speaks (prefix at the start of the turn, then the
//             speech tokens every --prefill-chunk tokens as they arrive; only the rest and the
//             assistant header after the turn), the fast decoder (first block 10 tokens,
//             bounded prompt window).
// Prefill while speaking is ChatState::prefill_partial; both schedules then step the same
// ChatState loop (sampling as the element: temperature 0.2, top-p 0.8).
//
// Sizes (random weights written once into DIR, default /tmp/glmvoice-bench-e2e/<size>):
//   tiny  tokenizer mk-a, LLM tiny, decoder tiny (the test models)
//   mid   tokenizer real-l2 (d_model 1280, 2 layers), LLM mid (hidden 1024, 8 layers, real
//         vocabulary), decoder real-random (release size: 111 M + 20 M parameters)
// A random LLM does not speak in the 13 text / 26 speech rhythm, so the answer's k-th token is
// routed as text when k mod 39 < 13 and otherwise as speech token (sampled id mod codebook):
// the real model's timeline with random compute.
// `--device` runs all three models there (the LLM in --llm-dtype, default: float32 on CPU,
// bfloat16 on CUDA; tokenizer and decoder in their device defaults); `--real-llm` swaps the
// LLM for the real GLM-4-Voice-9B shapes with random weights made in memory (what
// scripts/gpu-check.sh runs on a GPU).
// Reported per schedule: end-of-turn -> first answer audio (TTFA) and each stage's share of it,
// the answer's real-time factor; then `ttfa ratio upstream/ours: X`. `--rounds N` runs the
// pair N times, alternating (a shared box drifts by 10-30 % between runs): each round is
// reported, then the median ratio and every round's.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../cli/args.h"
#include "bench.h"
#include "llm/chat.h"
#include "llm/chatglm_model.h"
#include "llm/tiny_model.h"
#include "speech/tiny_model.h"
#include "speech/tokenizer_model.h"
#include "speech/tokenizer_state.h"
#include "speech/wav_file.h"
#include "voice/decoder_model.h"
#include "voice/tiny_model.h"
#include "runtime/dtype.h"
#include "runtime/options.h"

namespace glmvoice::tools {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string fixed2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

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

struct TurnTimes {
  double tok_after_turn = 0;   // tokenizer work after end-of-turn
  double prefill_after_turn = 0;
  double prefill_during_turn = 0;
  double llm_before_audio = 0, dec_before_audio = 0;  // after the prefill, until the first audio
  double llm_total = 0, dec_total = 0;
  double ttfa = -1;
  int64_t steps_before_audio = 0, generated = 0, prompt_tokens = 0, speech_tokens = 0;
  double answer_s = 0;
};

// One turn in the given schedule. `upstream`: offline tokenizer, one-shot prefill, reference
// decoder; otherwise streaming tokenizer, prefill while speaking, fast decoder.
TurnTimes run_turn(bool upstream, const at::Tensor& question, const std::shared_ptr<const speech::TokenizerModel>& tokenizer,
                   const std::shared_ptr<const llm::LlmModel>& llm_model,
                   const std::shared_ptr<const voice::DecoderModel>& decoder, int64_t answer_tokens,
                   int64_t prefill_chunk, int64_t context_tokens) {
  TurnTimes r;
  llm::ChatOptions chat_options;
  chat_options.max_new_tokens = answer_tokens;
  llm::ChatState chat(llm_model, chat_options);
  const int64_t n_audio_llm = llm_model->tokenizer().n_audio();
  std::vector<int64_t> speech_tokens;
  Clock::time_point t_turn_end;

  if (upstream) {
    t_turn_end = Clock::now();  // the whole question is there; nothing ran while it was spoken
    at::Tensor ids = tokenizer->tokenize(question);
    for (int64_t i = 0; i < ids.numel(); ++i) speech_tokens.push_back(ids[i].item<int64_t>() % n_audio_llm);
    r.tok_after_turn = seconds_since(t_turn_end);
  } else {
    // While the user speaks: 20 ms pushes into the streaming tokenizer; every `prefill_chunk`
    // new speech tokens, the prompt heard so far goes into the KV cache (ChatState::prefill_partial).
    speech::TokenizerState tok_state(tokenizer);
    const float* x = question.data_ptr<float>();
    size_t last_prefill = 0;
    for (int64_t i = 0; i < question.numel(); i += 320) {
      for (int32_t id : tok_state.push(x + i, std::min<int64_t>(320, question.numel() - i))) {
        speech_tokens.push_back(id % n_audio_llm);
      }
      if (speech_tokens.size() >= last_prefill + static_cast<size_t>(prefill_chunk)) {
        auto t0 = Clock::now();
        chat.prefill_partial(llm::UserTurn::speech(speech_tokens));
        r.prefill_during_turn += seconds_since(t0);
        last_prefill = speech_tokens.size();
      }
    }
    t_turn_end = Clock::now();
    for (int32_t id : tok_state.finish()) speech_tokens.push_back(id % n_audio_llm);
    r.tok_after_turn = seconds_since(t_turn_end);
  }
  r.prompt_tokens = static_cast<int64_t>(chat.begin_turn(llm::UserTurn::speech(speech_tokens)).size());

  // Answer: the first step() runs the (rest of the) prefill; 13 text / 26 speech routing; the
  // decoder gets each speech token as it comes, on the same thread (as the demo's loop).
  voice::StreamOptions so;
  if (!upstream) {
    so.mode = voice::StreamMode::kFast;
    so.context_tokens = context_tokens;
  }
  so.block_sizes = voice::default_block_sizes(so.mode);
  voice::DecoderState dec(decoder, so);
  const int64_t n_audio_dec = decoder->vocab_size();
  int64_t samples = 0;
  for (int64_t k = 0;; ++k) {
    auto t0 = Clock::now();
    const llm::ChatEvent ev = chat.step();
    const double t_step = seconds_since(t0);
    if (k == 0) {
      r.prefill_after_turn = t_step;  // prefill + the first token
    } else {
      r.llm_total += t_step;
      if (r.ttfa < 0) r.llm_before_audio += t_step, ++r.steps_before_audio;
    }
    if (ev.kind == llm::ChatEvent::kEnd) break;
    ++r.generated;
    if (k % 39 < 13) continue;
    const int32_t speech = static_cast<int32_t>(ev.token_id % n_audio_dec);
    ++r.speech_tokens;
    t0 = Clock::now();
    const at::Tensor audio = dec.push(&speech, 1);
    const double t_dec = seconds_since(t0);
    r.dec_total += t_dec;
    if (r.ttfa < 0) r.dec_before_audio += t_dec;
    samples += audio.numel();
    if (audio.numel() > 0 && r.ttfa < 0) r.ttfa = seconds_since(t_turn_end);
  }
  auto t0 = Clock::now();
  const int64_t tail = dec.finish().numel();
  r.dec_total += seconds_since(t0);
  if (r.ttfa < 0) r.dec_before_audio += seconds_since(t0);
  samples += tail;
  if (r.ttfa < 0 && samples > 0) r.ttfa = seconds_since(t_turn_end);
  r.answer_s = static_cast<double>(samples) / static_cast<double>(decoder->sample_rate());
  return r;
}

void report(const char* name, const TurnTimes& r) {
  auto share = [&](double t) { return r.ttfa > 0 ? 100.0 * t / r.ttfa : 0.0; };
  std::printf("%s: end-of-turn -> first answer audio %.1f ms\n", name, r.ttfa * 1e3);
  std::printf("  tokenizer after the turn %.1f ms (%.0f%%); prefill after the turn + first token %.1f ms (%.0f%%, "
              "%lld-token prompt, %.1f ms prefilled while speaking)\n",
              r.tok_after_turn * 1e3, share(r.tok_after_turn), r.prefill_after_turn * 1e3, share(r.prefill_after_turn),
              static_cast<long long>(r.prompt_tokens), r.prefill_during_turn * 1e3);
  std::printf("  LLM %lld steps before the first audio %.1f ms (%.0f%%); decoder before the first audio %.1f ms (%.0f%%)\n",
              static_cast<long long>(r.steps_before_audio), r.llm_before_audio * 1e3, share(r.llm_before_audio),
              r.dec_before_audio * 1e3, share(r.dec_before_audio));
  const double compute = r.tok_after_turn + r.prefill_after_turn + r.llm_total + r.dec_total;
  std::printf("  answer: %lld tokens (%lld speech) -> %.2f s of audio; LLM %.1f ms/token, decoder %.2f s; answer RTF %.3f\n",
              static_cast<long long>(r.generated), static_cast<long long>(r.speech_tokens), r.answer_s,
              r.generated ? r.llm_total * 1e3 / r.generated : 0.0, r.dec_total, r.answer_s > 0 ? compute / r.answer_s : 0.0);
}

}  // namespace

int bench_e2e(int argc, char** argv) {
  Args args(argc, argv, 2, {"real-llm"});
  args.check_known({"size", "schedule", "wav", "question-seconds", "answer-tokens", "prefill-chunk", "context-tokens",
                    "threads", "dir", "device", "llm-dtype", "real-llm", "rounds"});
  const std::string size = args.get("size", "tiny");
  const std::string schedule = args.get("schedule", "both");
  if (schedule != "upstream" && schedule != "ours" && schedule != "both") {
    throw std::runtime_error("--schedule must be upstream, ours or both");
  }
  const int64_t answer_tokens = args.get_int("answer-tokens", 200);
  at::set_num_threads(static_cast<int>(args.get_int("threads", 1)));
  c10::InferenceMode guard;

  const Dirs dirs = ensure_models(size, args.get("dir", "/tmp/glmvoice-bench-e2e/" + size));
  const c10::Device device = runtime::parse_device(args.get("device", "cpu"));
  const c10::ScalarType llm_dtype = args.has("llm-dtype") ? runtime::parse_dtype(args.get("llm-dtype"))
                                                          : runtime::default_dtype(runtime::Stage::kLlm, device);
  auto t_load = Clock::now();
  auto tokenizer = speech::TokenizerModel::load(
      {dirs.tokenizer, device, runtime::default_dtype(runtime::Stage::kTokenizer, device)});
  std::shared_ptr<const llm::LlmModel> llm_model;
  std::string llm_name = size;
  if (args.has("real-llm")) {
    const std::string real_dir = dirs.llm + "-real-9b-shapes";
    if (!fs::exists(real_dir + "/config.json")) write_real_llm_config(real_dir);
    llm_model = llm::LlmModel::load_random({real_dir, device, llm_dtype}, 2);
    llm_name = "real 9B shapes, random";
  } else {
    llm_model = llm::LlmModel::load({dirs.llm, device, llm_dtype});
  }
  auto decoder = voice::DecoderModel::load({dirs.decoder, device, runtime::default_dtype(runtime::Stage::kDecoder, device)});
  std::printf("e2e %s on %s: LLM %s in %s; models loaded in %.2f s (threads %d)\n", size.c_str(), device.str().c_str(),
              llm_name.c_str(), runtime::dtype_name(llm_dtype).c_str(), seconds_since(t_load), at::get_num_threads());
  const at::Tensor question = args.has("wav") ? speech::read_wav_mono16k(args.get("wav"))
                                              : synthetic_question(args.get_double("question-seconds", 5.0));
  std::printf("question: %.2f s; answer: %lld tokens, 13 text / 26 speech routing\n",
              static_cast<double>(question.numel()) / 16000.0, static_cast<long long>(answer_tokens));
  const int64_t chunk = args.get_int("prefill-chunk", 13);
  const int64_t context = args.get_int("context-tokens", voice::kDefaultContextTokens);

  // Warm-up of both schedules (first-call allocations, kernel selection for each prompt and
  // block shape: on a GPU the first one-shot prefill of a new length took 1.25 s), then the
  // measured turns.
  for (bool upstream_order : {true, false}) {
    run_turn(upstream_order, question, tokenizer, llm_model, decoder, std::min<int64_t>(answer_tokens, 40), chunk,
             context);
  }
  const int64_t rounds = std::max<int64_t>(1, args.get_int("rounds", 1));
  std::vector<double> ratios;
  for (int64_t round = 0; round < rounds; ++round) {
    if (rounds > 1) std::printf("round %lld of %lld\n", static_cast<long long>(round + 1), static_cast<long long>(rounds));
    TurnTimes up, ours;
    if (schedule != "ours") {
      up = run_turn(true, question, tokenizer, llm_model, decoder, answer_tokens, chunk, context);
      report("upstream", up);
    }
    if (schedule != "upstream") {
      ours = run_turn(false, question, tokenizer, llm_model, decoder, answer_tokens, chunk, context);
      report("ours", ours);
    }
    if (schedule == "both" && ours.ttfa > 0) {
      ratios.push_back(up.ttfa / ours.ttfa);
      if (rounds > 1) std::printf("round ttfa ratio upstream/ours: %.2f\n", ratios.back());
    }
  }
  if (!ratios.empty()) {
    std::string all;
    for (double r : ratios) all += (all.empty() ? "" : ", ") + fixed2(r);
    std::vector<double> sorted = ratios;
    std::sort(sorted.begin(), sorted.end());
    const size_t m = sorted.size();
    const double median = m % 2 ? sorted[m / 2] : 0.5 * (sorted[m / 2 - 1] + sorted[m / 2]);
    if (rounds > 1) {
      std::printf("ttfa ratio upstream/ours: %.2f (median of %zu rounds: %s)\n", median, m, all.c_str());
    } else {
      std::printf("ttfa ratio upstream/ours: %.2f\n", median);
    }
  }
  return 0;
}

}  // namespace glmvoice::tools
