// Chunked prefill and prefill while the user speaks (issue 10 §1): appending a prompt to the KV
// cache in chunks gives the one-shot prefill's next-token logits (fp32 rounding) and the same
// greedy ids, on the upstream fixture prompt (tiny-a) and on the tiny model; an abandoned
// turn rolls back.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "io/error.h"
#include "io/npy.h"
#include "llm/chat.h"
#include "llm/chatglm_model.h"
#include "test_support.h"

using namespace glmvoice;

namespace {

std::vector<int64_t> to_ids(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).flatten().contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

std::string fixture_llm_dir() { return test::fixtures_dir() + "/models/tiny-a/llm"; }
std::string fixture_ref_dir() { return test::fixtures_dir() + "/tiny-a/llm"; }

// Prefills `ids` in chunks of `chunk` (0: one shot), then `n` greedy steps. Returns the ids
// and (through `first`) the next-token logits after the prompt.
std::vector<int64_t> greedy(const llm::LlmModel& m, const std::vector<int64_t>& ids, size_t chunk, int n,
                            at::Tensor* first) {
  auto cache = m.new_cache();
  at::Tensor logits;
  if (chunk == 0) chunk = ids.size();
  for (size_t i = 0; i < ids.size(); i += chunk) {
    const size_t end = std::min(ids.size(), i + chunk);
    logits = m.forward({ids.begin() + static_cast<std::ptrdiff_t>(i), ids.begin() + static_cast<std::ptrdiff_t>(end)},
                       cache);
  }
  EXPECT_EQ(cache.length, static_cast<int64_t>(ids.size()));
  *first = logits;
  std::vector<int64_t> out;
  for (int s = 0; s < n; ++s) {
    out.push_back(logits.argmax().item<int64_t>());
    logits = m.forward({out.back()}, cache);
  }
  return out;
}

// Speech tokens of a prompt's (last) user turn: ids between <|begin_of_audio|> and <|end_of_audio|>.
std::vector<int64_t> speech_of(const llm::LlmModel& m, const std::vector<int64_t>& ids) {
  const auto& tok = m.tokenizer();
  std::vector<int64_t> out;
  bool in = false;
  for (int64_t id : ids) {
    if (id == tok.specials().begin_of_audio) in = true, out.clear();
    else if (id == tok.specials().end_of_audio) in = false;
    else if (in) out.push_back(id - tok.audio_offset());
  }
  return out;
}

llm::ChatOptions greedy_chat(int64_t max_new) {
  llm::ChatOptions o;
  o.sampling.greedy = true;
  o.max_new_tokens = max_new;
  return o;
}

// Runs one turn to its end; returns the completion ids.
std::vector<int64_t> answer(llm::ChatState& chat, const llm::UserTurn& turn) {
  chat.begin_turn(turn);
  for (;;) {
    if (chat.step().kind == llm::ChatEvent::kEnd) break;
  }
  return chat.completion_ids();
}

}  // namespace

TEST(ChunkedPrefill, fixture_prompt_chunks_match_one_shot_and_reference) {
  GLMVOICE_REQUIRE_FIXTURES();
  auto m = llm::LlmModel::load({fixture_llm_dir(), c10::Device(c10::kCPU), c10::kFloat});
  const auto ids = to_ids(io::read_npy(fixture_ref_dir() + "/prompt.input_ids.npy"));
  const auto ref_greedy = to_ids(io::read_npy(fixture_ref_dir() + "/fp32.greedy_ids.npy"));
  at::Tensor ref_last = io::read_npy(fixture_ref_dir() + "/fp32.prompt_logits.npy").squeeze(0)[-1];
  const int n = static_cast<int>(ref_greedy.size());
  at::Tensor one_shot;
  const auto want = greedy(*m, ids, 0, n, &one_shot);
  EXPECT_EQ(want, ref_greedy);
  for (size_t chunk : {1, 7, 8, 25, 64}) {
    at::Tensor first;
    const auto got = greedy(*m, ids, chunk, n, &first);
    const double err = (first - one_shot).abs().max().item<double>();
    const double err_ref = (first - ref_last).abs().max().item<double>();
    std::printf("chunk %zu of %zu: next-token logits max |diff| %.3g vs one-shot, %.3g vs reference\n", chunk,
                ids.size(), err, err_ref);
    EXPECT_LT(err, 1e-4) << "chunk " << chunk;
    EXPECT_LT(err_ref, 1e-4) << "chunk " << chunk;
    EXPECT_EQ(got, ref_greedy) << "chunk " << chunk;
  }
}

TEST(ChunkedPrefill, tiny_model_chunks_match_one_shot) {
  auto m = llm::LlmModel::load({test::tiny_model_dir("llm", "tiny"), c10::Device(c10::kCPU), c10::kFloat});
  auto ids = m->tokenizer().encode("<|system|>\nchunked prefill test<|user|>\n", true);
  for (int i = 0; i < 60; ++i) ids.push_back(m->tokenizer().audio_offset() + (i * 13) % 64);
  at::Tensor one_shot;
  const auto want = greedy(*m, ids, 0, 20, &one_shot);
  for (size_t chunk : {1, 3, 16}) {
    at::Tensor first;
    const auto got = greedy(*m, ids, chunk, 20, &first);
    EXPECT_LT((first - one_shot).abs().max().item<double>(), 1e-4) << "chunk " << chunk;
    EXPECT_EQ(got, want) << "chunk " << chunk;
  }
}

// The CUDA path (SDPA with the grouped-query rows, the fused RMSNorm) forced on the CPU: the
// fixture prompt in fp32 and bf16, one-shot and chunked (masked rows with a non-empty cache),
// against the references; the explicit path stays the reference-rounding one.
TEST(FusedOps, sdpa_and_fused_norm_match_the_references) {
  GLMVOICE_REQUIRE_FIXTURES();
  const auto ids = to_ids(io::read_npy(fixture_ref_dir() + "/prompt.input_ids.npy"));
  struct Case {
    c10::ScalarType dtype;
    const char* prefix;
    double tol;  // next-token logits vs the reference of that dtype
  };
  for (const Case& k : {Case{c10::kFloat, "fp32", 1e-4}, Case{c10::kBFloat16, "bf16", 0.25}}) {
    const auto ref_greedy = to_ids(io::read_npy(fixture_ref_dir() + "/" + k.prefix + ".greedy_ids.npy"));
    at::Tensor ref_last = io::read_npy(fixture_ref_dir() + "/" + k.prefix + ".prompt_logits.npy").squeeze(0)[-1];
    setenv("GLMVOICE_LLM_FUSED", "1", 1);
    auto fused = llm::LlmModel::load({fixture_llm_dir(), c10::Device(c10::kCPU), k.dtype});
    unsetenv("GLMVOICE_LLM_FUSED");
    const int n = static_cast<int>(ref_greedy.size());
    for (size_t chunk : {0, 7}) {
      at::Tensor first;
      const auto got = greedy(*fused, ids, chunk, n, &first);
      const double err = (first.to(at::kFloat) - ref_last).abs().max().item<double>();
      std::printf("fused %s, chunk %zu: next-token logits max |diff| %.3g vs the reference (tol %g)\n", k.prefix, chunk,
                  err, k.tol);
      EXPECT_LT(err, k.tol) << k.prefix << " chunk " << chunk;
      EXPECT_EQ(got, ref_greedy) << k.prefix << " chunk " << chunk;
    }
  }
}

// The CUDA-graph decode step's body (whole-capacity attention under a mask, K/V written by
// index_copy_ at a device-held position) run eagerly on the CPU: the same greedy ids and
// logits as the eager step, across a capacity growth (256 -> 512) and after a rollback.
TEST(StaticDecode, graph_body_matches_the_eager_step) {
  auto run = [](const char* mode, std::vector<at::Tensor>* logits) {
    setenv("GLMVOICE_LLM_DECODE", mode, 1);
    auto m = llm::LlmModel::load({test::tiny_model_dir("llm", "tiny"), c10::Device(c10::kCPU), c10::kFloat});
    unsetenv("GLMVOICE_LLM_DECODE");
    auto ids = m->tokenizer().encode("<|system|>\nstatic decode test<|user|>\n", true);
    for (int i = 0; i < 200; ++i) ids.push_back(m->tokenizer().audio_offset() + (i * 29) % 64);
    auto cache = m->new_cache();
    at::Tensor l = m->forward(ids, cache);
    std::vector<int64_t> out;
    for (int s = 0; s < 90; ++s) {  // 200 + prefix + 90 crosses the first capacity (256)
      out.push_back(l.argmax().item<int64_t>());
      logits->push_back(l.clone());
      l = m->forward({out.back()}, cache);
    }
    cache.truncate(cache.length - 30);  // a rolled-back turn: positions beyond are stale
    for (int s = 0; s < 5; ++s) {
      logits->push_back(l.clone());
      l = m->forward({out[static_cast<size_t>(s)]}, cache);
    }
    logits->push_back(l);
    return out;
  };
  std::vector<at::Tensor> eager_logits, static_logits;
  const auto eager = run("eager", &eager_logits);
  const auto stat = run("static", &static_logits);
  EXPECT_EQ(stat, eager);
  ASSERT_EQ(static_logits.size(), eager_logits.size());
  double worst = 0;
  for (size_t i = 0; i < eager_logits.size(); ++i) {
    worst = std::max(worst, (static_logits[i] - eager_logits[i]).abs().max().item<double>());
  }
  std::printf("static decode body vs eager: %zu steps, logits max |diff| %.3g\n", eager_logits.size(), worst);
  EXPECT_LT(worst, 1e-4);
}

// The element's schedule: speech tokens arrive in chunks and are prefilled as they come; at the
// end of the turn only <|end_of_audio|><|assistant|>… runs. Same answer as the one-shot turn,
// for two turns with history.
TEST(PrefillWhileSpeaking, partial_prefill_gives_the_one_shot_answer) {
  GLMVOICE_REQUIRE_FIXTURES();
  auto m = llm::LlmModel::load({fixture_llm_dir(), c10::Device(c10::kCPU), c10::kFloat});
  const auto ids = to_ids(io::read_npy(fixture_ref_dir() + "/prompt.input_ids.npy"));
  const auto speech = speech_of(*m, ids);
  ASSERT_GT(speech.size(), 20u);
  const auto second = std::vector<int64_t>(speech.rbegin(), speech.rend());  // another question

  llm::ChatState solo(m, greedy_chat(24));
  const auto want1 = answer(solo, llm::UserTurn::speech(speech));
  EXPECT_EQ(solo.prompt_ids(), ids);
  const auto want2 = answer(solo, llm::UserTurn::speech(second));

  for (size_t chunk : {1, 8, 25}) {
    llm::ChatState chat(m, greedy_chat(24));
    int64_t prefilled = 0;
    for (size_t n = chunk; n < speech.size() + chunk; n += chunk) {
      const size_t have = std::min(n, speech.size());
      prefilled += chat.prefill_partial(llm::UserTurn::speech({speech.begin(), speech.begin() + have}));
    }
    // Everything up to the last speech token is cached: the end of turn runs only the suffix.
    const int64_t before = chat.cached_length();
    EXPECT_EQ(before, prefilled);
    ASSERT_LT(before, static_cast<int64_t>(ids.size()));
    EXPECT_EQ(ids[static_cast<size_t>(before)], m->tokenizer().specials().end_of_audio);
    EXPECT_EQ(answer(chat, llm::UserTurn::speech(speech)), want1) << "chunk " << chunk;
    EXPECT_EQ(chat.prompt_ids(), ids);
    for (size_t n = chunk; n < second.size() + chunk; n += chunk) {
      chat.prefill_partial(llm::UserTurn::speech({second.begin(), second.begin() + std::min(n, second.size())}));
    }
    EXPECT_EQ(answer(chat, llm::UserTurn::speech(second)), want2) << "chunk " << chunk;
  }
}

TEST(PrefillWhileSpeaking, abandoned_turn_rolls_back) {
  auto m = llm::LlmModel::load({test::tiny_model_dir("llm", "tiny"), c10::Device(c10::kCPU), c10::kFloat});
  const std::vector<int64_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, b = {40, 41, 42, 43};
  llm::ChatState solo(m, greedy_chat(16));
  const auto first = answer(solo, llm::UserTurn::speech(a));
  const int64_t after_first = solo.cached_length();
  const auto want = answer(solo, llm::UserTurn::speech(b));

  llm::ChatState chat(m, greedy_chat(16));
  EXPECT_EQ(answer(chat, llm::UserTurn::speech(a)), first);
  EXPECT_EQ(chat.cached_length(), after_first);
  // The user starts a turn (a's tokens again, then more), but it is abandoned.
  EXPECT_GT(chat.prefill_partial(llm::UserTurn::speech({5, 5, 5, 6})), 0);
  EXPECT_GT(chat.cached_length(), after_first);
  chat.rollback_partial();
  EXPECT_EQ(chat.cached_length(), after_first);
  EXPECT_EQ(answer(chat, llm::UserTurn::speech(b)), want);
  // Without a rollback, a partial prefill of another question reuses only the common prefix.
  llm::ChatState chat2(m, greedy_chat(16));
  answer(chat2, llm::UserTurn::speech(a));
  chat2.prefill_partial(llm::UserTurn::speech({5, 5, 5, 6}));
  chat2.prefill_partial(llm::UserTurn::speech({b.begin(), b.begin() + 2}));
  chat2.prefill_partial(llm::UserTurn::speech(b));
  EXPECT_EQ(answer(chat2, llm::UserTurn::speech(b)), want);
  // Nothing happens during a turn or for text; bad tokens are refused.
  chat.begin_turn(llm::UserTurn::speech(a));
  EXPECT_EQ(chat.prefill_partial(llm::UserTurn::speech(b)), 0);
  chat.cancel();
  EXPECT_EQ(chat.prefill_partial(llm::UserTurn::from_text("hello")), 0);
  EXPECT_THROW(chat.prefill_partial(llm::UserTurn::speech({m->tokenizer().n_audio()})), Error);
}
