// Reference: THUDM/GLM-4-Voice web_demo.py (inference_fn: system prompts, prompt string,
// `<|user|>` finalize, audio-token split at audio_offset) and model_server.py
// (generate_stream). Spec: ../shared/spec/llm.md §4.3, §4.5, §6.
#include "llm/chat.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>

#include "io/error.h"
#include "runtime/options.h"

namespace glmvoice::llm {

const std::string& default_system_prompt(InputMode mode) {
  // §6.1, byte for byte (including "a interleaved", "13 text token"; speech ends with a space).
  static const std::string speech =
      "User will provide you with a speech instruction. Do it step by step. First, think about the "
      "instruction and respond in a interleaved manner, with 13 text token followed by 26 audio tokens. ";
  static const std::string text =
      "User will provide you with a text instruction. Do it step by step. First, think about the "
      "instruction and respond in a interleaved manner, with 13 text token followed by 26 audio tokens.";
  return mode == InputMode::kSpeech ? speech : text;
}

const char* stop_reason_name(StopReason reason) {
  switch (reason) {
    case StopReason::kNone: return "none";
    case StopReason::kStopToken: return "stop-token";
    case StopReason::kMaxNewTokens: return "max-new-tokens";
    case StopReason::kContext: return "context";
    case StopReason::kInterrupted: return "interrupted";
  }
  return "none";
}

UserTurn UserTurn::speech(std::vector<int64_t> tokens, std::string instruction) {
  UserTurn t;
  t.mode = InputMode::kSpeech;
  t.speech_tokens = std::move(tokens);
  t.instruction = std::move(instruction);
  return t;
}

UserTurn UserTurn::from_text(std::string text, std::string instruction) {
  UserTurn t;
  t.mode = InputMode::kText;
  t.text = std::move(text);
  t.instruction = std::move(instruction);
  return t;
}

ChatState::ChatState(std::shared_ptr<const LlmModel> model, ChatOptions options)
    : model_(std::move(model)), options_(std::move(options)), sampler_(options_.seed) {
  if (!model_) throw Error(ErrorCode::kBadInput, "", "model", "ChatState needs a model");
  cache_ = model_->new_cache();
}

static const std::string& system_for(const ChatOptions& o, InputMode mode) {
  return o.system_prompt.empty() ? default_system_prompt(mode) : o.system_prompt;
}

std::string ChatState::prompt_string(const UserTurn& turn) const {
  const auto& tok = model_->tokenizer();
  std::string prompt;
  if (options_.keep_history && history_.size() > 2 && history_system_ == system_for(options_, turn.mode)) {
    // Upstream keeps strings; the decode of our id history (without [gMASK]<sop>) is equal
    // to it up to the U+FFFD/BPE-boundary effects described in §6.3.
    prompt = tok.decode(std::vector<int64_t>(history_.begin() + 2, history_.end()));
  } else {
    prompt = "<|system|>\n" + system_for(options_, turn.mode);
  }
  prompt += "<|user|>\n";
  if (turn.mode == InputMode::kSpeech) {
    prompt += "<|begin_of_audio|>";
    for (int64_t s : turn.speech_tokens) prompt += "<|audio_" + std::to_string(s) + "|>";
    prompt += "<|end_of_audio|>";
  } else {
    prompt += options_.sanitize_user_text ? tok.sanitize(turn.text) : turn.text;
  }
  if (!turn.instruction.empty()) prompt += "\n" + turn.instruction;
  prompt += "<|assistant|>streaming_transcription\n";
  return prompt;
}

std::vector<int64_t> ChatState::user_turn_ids(const UserTurn& turn) const {
  const auto& tok = model_->tokenizer();
  const auto& sp = tok.specials();
  std::vector<int64_t> ids = {sp.user};
  auto append = [&ids](const std::vector<int64_t>& more) { ids.insert(ids.end(), more.begin(), more.end()); };
  if (turn.mode == InputMode::kSpeech) {
    // §6.2 direct construction: identical to encoding the <|audio_N|> string.
    append(tok.encode("\n", false));
    ids.push_back(sp.begin_of_audio);
    for (int64_t s : turn.speech_tokens) ids.push_back(tok.audio_offset() + s);
    ids.push_back(sp.end_of_audio);
    if (!turn.instruction.empty()) append(tok.encode("\n" + tok.sanitize(turn.instruction), false));
  } else {
    std::string content = options_.sanitize_user_text ? tok.sanitize(turn.text) : turn.text;
    if (!turn.instruction.empty()) content += "\n" + tok.sanitize(turn.instruction);
    append(tok.encode("\n" + content, false));
  }
  ids.push_back(sp.assistant);
  append(tok.encode("streaming_transcription\n", false));
  return ids;
}

std::vector<int64_t> ChatState::build_prompt_ids(const UserTurn& turn) const {
  const std::string& sys = system_for(options_, turn.mode);
  std::vector<int64_t> ids;
  if (options_.keep_history && !history_.empty() && history_system_ == sys) {
    ids = history_;
  } else {
    ids = model_->tokenizer().encode("<|system|>\n" + sys, /*add_prefix=*/true);
  }
  const auto user = user_turn_ids(turn);
  ids.insert(ids.end(), user.begin(), user.end());
  return ids;
}

// §4.3: a prompt fits when it leaves room for min(max_new_tokens, seq_length / 2) new
// tokens (so a max_new_tokens larger than the whole context does not wipe every history).
bool ChatState::fits(size_t prompt_len) const {
  const int64_t seq = model_->config().seq_length;
  return static_cast<int64_t>(prompt_len) + std::min(options_.max_new_tokens, seq / 2) <= seq;
}

const std::vector<int64_t>& ChatState::begin_turn(const UserTurn& turn) {
  c10::InferenceMode guard;
  if (in_turn_) cancel();
  const auto& tok = model_->tokenizer();
  if (turn.mode == InputMode::kSpeech) {
    if (turn.speech_tokens.empty()) throw Error(ErrorCode::kBadInput, "", "user turn", "no speech tokens");
    for (int64_t s : turn.speech_tokens) {
      if (s < 0 || s >= tok.n_audio()) {
        throw Error(ErrorCode::kBadInput, "", "speech token",
                    std::to_string(s) + " outside [0, " + std::to_string(tok.n_audio()) + ")");
      }
    }
  } else if (turn.text.empty()) {
    throw Error(ErrorCode::kBadInput, "", "user turn", "empty text");
  }
  const std::string& sys = system_for(options_, turn.mode);
  if (!options_.keep_history || history_system_ != sys) {
    history_.clear();
    turn_starts_.clear();
  }
  std::vector<int64_t> prompt = build_prompt_ids(turn);
  // §4.3 context policy: drop the oldest whole turns, keep [gMASK]<sop><|system|>…
  while (!fits(prompt.size()) && options_.context_policy == ContextPolicy::kDropOldestTurns &&
         !turn_starts_.empty()) {
    const size_t begin = turn_starts_.front();
    const size_t end = turn_starts_.size() > 1 ? turn_starts_[1] : history_.size();
    history_.erase(history_.begin() + static_cast<std::ptrdiff_t>(begin),
                   history_.begin() + static_cast<std::ptrdiff_t>(end));
    turn_starts_.erase(turn_starts_.begin());
    for (auto& s : turn_starts_) s -= end - begin;
    ++dropped_turns_;
    runtime::log(runtime::LogLevel::kInfo, "llm: context full, dropped the oldest turn of the history");
    prompt = build_prompt_ids(turn);
  }
  const int64_t seq = model_->config().seq_length;
  if (static_cast<int64_t>(prompt.size()) >= seq ||
      (options_.context_policy == ContextPolicy::kRefuse && !fits(prompt.size()))) {
    throw Error(ErrorCode::kBadInput, model_->options().path, "seq_length",
                "prompt of " + std::to_string(prompt.size()) + " tokens + max-new-tokens " +
                    std::to_string(options_.max_new_tokens) + " exceeds the context of " + std::to_string(seq));
  }
  turn_start_ = history_.empty() ? static_cast<size_t>(std::find(prompt.begin(), prompt.end(),
                                                                 tok.specials().user) - prompt.begin())
                                 : history_.size();
  prompt_ = std::move(prompt);
  history_system_ = sys;
  completion_.clear();
  text_ids_.clear();
  utf8_.reset();
  generated_ = 0;
  // Reuse the cached K/V of the longest common prefix; always feed at least one id.
  size_t common = 0;
  while (common < cached_ids_.size() && common < prompt_.size() && cached_ids_[common] == prompt_[common]) ++common;
  common = std::min(common, prompt_.size() - 1);
  cache_.truncate(static_cast<int64_t>(common));
  cached_ids_.resize(common);
  pending_.assign(prompt_.begin() + static_cast<std::ptrdiff_t>(common), prompt_.end());
  partial_base_ = -1;
  in_turn_ = true;
  return prompt_;
}

ChatEvent ChatState::step() {
  c10::InferenceMode guard;
  if (!in_turn_) throw Error(ErrorCode::kBadInput, "", "chat", "step() without a turn");
  if (generated_ >= options_.max_new_tokens) return finish_turn(StopReason::kMaxNewTokens, -1);
  if (cache_.length + static_cast<int64_t>(pending_.size()) > model_->config().seq_length) {
    return finish_turn(StopReason::kContext, -1);
  }
  const auto& tok = model_->tokenizer();
  at::Tensor logits = run_forward(pending_);
  cached_ids_.insert(cached_ids_.end(), pending_.begin(), pending_.end());
  pending_.clear();
  const int64_t id = sampler_.sample(logits, options_.sampling, options_.mask_undefined ? tok.max_id() + 1 : -1);
  completion_.push_back(id);
  ++generated_;
  const auto& eos = model_->config().eos_token_id;
  if (std::find(eos.begin(), eos.end(), id) != eos.end()) return finish_turn(StopReason::kStopToken, id);
  pending_.push_back(id);
  ChatEvent ev;
  ev.token_id = id;
  switch (tok.kind(id)) {
    case text::TokenKind::kAudio:
      ev.kind = ChatEvent::kAudio;
      ev.speech_token = id - tok.audio_offset();
      break;
    case text::TokenKind::kText:
      ev.kind = ChatEvent::kText;
      text_ids_.push_back(id);
      ev.text = utf8_.push(tok.token_bytes(id));
      break;
    default:
      ev.kind = ChatEvent::kOther;  // other specials / padded rows: history only (§6.4)
      runtime::log(runtime::LogLevel::kDebug, "llm: generated non-text, non-audio id " + std::to_string(id));
      break;
  }
  return ev;
}

ChatEvent ChatState::cancel() {
  if (!in_turn_) {
    ChatEvent ev;
    ev.kind = ChatEvent::kEnd;
    ev.reason = StopReason::kInterrupted;
    return ev;
  }
  return finish_turn(StopReason::kInterrupted, -1);
}

ChatEvent ChatState::finish_turn(StopReason reason, int64_t stop_id) {
  ChatEvent ev;
  ev.kind = ChatEvent::kEnd;
  ev.reason = reason;
  ev.token_id = stop_id;
  ev.text = utf8_.finish();
  if (options_.keep_history) {
    // §6.3: history = this turn's prompt + generated ids without the stop token.
    history_ = prompt_;
    const size_t n = completion_.size() - (reason == StopReason::kStopToken ? 1 : 0);
    history_.insert(history_.end(), completion_.begin(), completion_.begin() + static_cast<std::ptrdiff_t>(n));
    turn_starts_.push_back(turn_start_);
  } else {
    history_.clear();
    turn_starts_.clear();
  }
  in_turn_ = false;
  return ev;
}

std::string ChatState::completion_text() const { return model_->tokenizer().decode(text_ids_); }

void ChatState::reset() {
  history_.clear();
  turn_starts_.clear();
  history_system_.clear();
  prompt_.clear();
  completion_.clear();
  text_ids_.clear();
  pending_.clear();
  utf8_.reset();
  cache_.reset();
  cached_ids_.clear();
  in_turn_ = false;
  generated_ = 0;
  dropped_turns_ = 0;
  partial_base_ = -1;
  sampler_.reseed(options_.seed);
}

// ---------------------------------------------------------------- prefill while speaking

at::Tensor ChatState::run_forward(const std::vector<int64_t>& ids) {
  try {
    return forward_ ? forward_(ids, cache_) : model_->forward(ids, cache_);
  } catch (...) {
    // A cancelled chunked prefill may have cached part of `ids`: forget it.
    if (cache_.length > static_cast<int64_t>(cached_ids_.size())) {
      cache_.truncate(static_cast<int64_t>(cached_ids_.size()));
    }
    throw;
  }
}

int64_t ChatState::prefill_partial(const UserTurn& partial) {
  c10::InferenceMode guard;
  if (in_turn_ || partial.mode != InputMode::kSpeech) return 0;
  const auto& tok = model_->tokenizer();
  for (int64_t s : partial.speech_tokens) {
    if (s < 0 || s >= tok.n_audio()) {
      throw Error(ErrorCode::kBadInput, "", "speech token",
                  std::to_string(s) + " outside [0, " + std::to_string(tok.n_audio()) + ")");
    }
  }
  // The full prompt of this turn is ids + <|end_of_audio|> [instruction] <|assistant|>…: keep
  // everything before its (last) <|end_of_audio|>, which text never encodes to.
  std::vector<int64_t> ids = build_prompt_ids(partial);
  const auto eoa = std::find(ids.rbegin(), ids.rend(), tok.specials().end_of_audio);
  if (eoa == ids.rend()) return 0;
  ids.resize(static_cast<size_t>(ids.rend() - eoa) - 1);
  if (!fits(ids.size())) return 0;
  size_t common = 0;
  while (common < cached_ids_.size() && common < ids.size() && cached_ids_[common] == ids[common]) ++common;
  if (partial_base_ < 0) partial_base_ = static_cast<int64_t>(cached_ids_.size());
  partial_base_ = std::min<int64_t>(partial_base_, static_cast<int64_t>(common));
  if (common == ids.size()) return 0;
  cache_.truncate(static_cast<int64_t>(common));
  cached_ids_.resize(common);
  const std::vector<int64_t> rest(ids.begin() + static_cast<std::ptrdiff_t>(common), ids.end());
  run_forward(rest);
  cached_ids_.insert(cached_ids_.end(), rest.begin(), rest.end());
  return static_cast<int64_t>(rest.size());
}

void ChatState::rollback_partial() {
  if (in_turn_ || partial_base_ < 0) return;
  const int64_t n = std::min<int64_t>(partial_base_, static_cast<int64_t>(cached_ids_.size()));
  cache_.truncate(std::min(n, cache_.length));
  cached_ids_.resize(static_cast<size_t>(n));
  partial_base_ = -1;
}

}  // namespace glmvoice::llm
