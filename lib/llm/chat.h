// GLM-4-Voice conversation protocol (llm spec §6): system prompts, prompt building,
// id-based multi-turn history, stop handling, and a token-by-token generator that yields
// text (complete UTF-8), speech tokens (id − audio offset) and an end event with its reason.
//
// Reference: THUDM/GLM-4-Voice web_demo.py (prompt format, system prompts, audio-token
// detection, `<|user|>` end) and model_server.py (generate call).
//
//   ChatState chat(model, ChatOptions{});
//   chat.begin_turn(UserTurn::speech({12, 7, 300}));
//   for (;;) { auto ev = chat.step(); ...; if (ev.kind == ChatEvent::kEnd) break; }
//
// Thread-safety: one ChatState per conversation, used from one thread at a time (the
// element's task); cancel() may be called from that same thread between step() calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "llm/chatglm_model.h"
#include "llm/sampler.h"
#include "text/utf8.h"

namespace glmvoice::llm {

enum class InputMode { kSpeech, kText };

// Verbatim DEMO system prompts (§6.1; the speech variant ends with a space).
const std::string& default_system_prompt(InputMode mode);

enum class StopReason { kNone, kStopToken, kMaxNewTokens, kContext, kInterrupted };
const char* stop_reason_name(StopReason reason);  // "stop-token", "max-new-tokens", "context", "interrupted"

// What to do when prompt + min(max_new_tokens, seq_length/2) exceeds seq_length (§4.3).
// Generation itself always stops at seq_length (reason kContext).
enum class ContextPolicy { kDropOldestTurns, kRefuse };

struct ChatOptions {
  std::string system_prompt;  // "" = default_system_prompt(mode of the turn)
  bool keep_history = true;
  int64_t max_new_tokens = 2000;
  SamplingOptions sampling;
  uint64_t seed = 0;
  bool mask_undefined = true;  // never sample padded rows (§4.4)
  bool sanitize_user_text = true;
  ContextPolicy context_policy = ContextPolicy::kDropOldestTurns;
};

struct UserTurn {
  InputMode mode = InputMode::kSpeech;
  std::string text;                   // text mode
  std::vector<int64_t> speech_tokens;  // speech mode: values 0 … n_audio-1
  std::string instruction;            // appended to the user content ("\n" + instruction)
  static UserTurn speech(std::vector<int64_t> tokens, std::string instruction = "");
  static UserTurn from_text(std::string text, std::string instruction = "");
};

struct ChatEvent {
  enum Kind { kText, kAudio, kOther, kEnd };
  Kind kind = kOther;
  int64_t token_id = -1;     // the sampled id (kEnd: the stop id, or -1)
  int64_t speech_token = -1; // kAudio: id − audio_offset
  std::string text;          // kText: newly completed UTF-8 (may be empty); kEnd: flushed tail
  StopReason reason = StopReason::kNone;  // kEnd only
};

class ChatState {
 public:
  ChatState(std::shared_ptr<const LlmModel> model, ChatOptions options);

  const LlmModel& model() const { return *model_; }
  ChatOptions& options() { return options_; }  // sampling knobs may change between turns
  const ChatOptions& options() const { return options_; }

  // Prompt string exactly as the DEMO builds it for `turn` on the current history (§6.2);
  // informational (the ids are built directly, see build_prompt_ids).
  std::string prompt_string(const UserTurn& turn) const;
  // Ids of the next prompt: history (or prefix + system) + user turn + assistant header.
  std::vector<int64_t> build_prompt_ids(const UserTurn& turn) const;

  // Starts a turn: builds the prompt, applies the context policy, prefills lazily on the
  // first step(). Throws kBadInput for a speech token out of range, an empty turn, or a
  // prompt that does not fit (policy kRefuse). Returns the prompt ids.
  const std::vector<int64_t>& begin_turn(const UserTurn& turn);
  bool in_turn() const { return in_turn_; }
  // Generates one token. After kEnd the turn is over (history updated).
  ChatEvent step();
  // Ends the current turn now (reason kInterrupted): flushes text, keeps what was generated.
  ChatEvent cancel();

  // Forgets the history and the KV cache; the sampler is reseeded from options().seed.
  void reset();

  // Where the forward passes go (empty: the model's own forward). A conversation served by a
  // shared Scheduler (scheduler.h) points it at its Sequence::forward, so conversations share
  // batched steps.
  using ForwardFn = std::function<at::Tensor(const std::vector<int64_t>& ids, KvCache& cache)>;
  void set_forward(ForwardFn forward) { forward_ = std::move(forward); }

  // Prefill while the user speaks (issue 10 §1): appends to the KV cache the prompt of the
  // speech turn heard so far (`partial.speech_tokens`): history or system prefix,
  // <|user|>\n<|begin_of_audio|> and those tokens, reusing what is cached. begin_turn() with
  // the complete turn then runs only the rest and the assistant suffix. Returns the number of
  // ids run; 0 (nothing done) during a turn, for a text turn, or when the prompt would not fit
  // (begin_turn applies the context policy). Throws kBadInput for a token out of range.
  int64_t prefill_partial(const UserTurn& partial);
  // Drops what prefill_partial() cached since the last turn (an abandoned turn: flush, reset).
  void rollback_partial();
  int64_t cached_length() const { return cache_.length; }

  const std::vector<int64_t>& history() const { return history_; }
  const std::vector<int64_t>& prompt_ids() const { return prompt_; }
  const std::vector<int64_t>& completion_ids() const { return completion_; }  // incl. stop id
  const std::vector<int64_t>& completion_text_ids() const { return text_ids_; }
  std::string completion_text() const;  // decode of all text ids of the turn at once
  int64_t dropped_turns() const { return dropped_turns_; }

 private:
  ChatEvent finish_turn(StopReason reason, int64_t stop_id);
  std::vector<int64_t> user_turn_ids(const UserTurn& turn) const;
  bool fits(size_t prompt_len) const;
  at::Tensor run_forward(const std::vector<int64_t>& ids);  // through forward_, cache kept in sync

  std::shared_ptr<const LlmModel> model_;
  ChatOptions options_;
  Sampler sampler_;
  KvCache cache_;
  std::vector<int64_t> cached_ids_;  // ids whose K/V are in cache_
  std::vector<int64_t> history_;     // ids of all finished turns (starts with [gMASK]<sop>)
  std::vector<size_t> turn_starts_;  // offsets in history_ of each finished turn's <|user|>
  std::string history_system_;       // system prompt the history was built with
  size_t turn_start_ = 0;            // offset of the current turn's <|user|> in prompt_
  std::vector<int64_t> prompt_, completion_, text_ids_, pending_;
  text::Utf8Assembler utf8_;
  bool in_turn_ = false;
  int64_t generated_ = 0;
  int64_t dropped_turns_ = 0;
  ForwardFn forward_;
  int64_t partial_base_ = -1;  // cached length before this turn's first prefill_partial (-1: none)
};

}  // namespace glmvoice::llm
