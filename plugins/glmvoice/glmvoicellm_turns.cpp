/* glmvoicellm's turn logic (see glmvoicellm_turns.h).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#include "glmvoicellm_turns.h"

#include "io/error.h"

namespace glmvoice::gst {

namespace {

double ms_since(SteadyTime t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool later(GstClockTime a, GstClockTime b) {  // a > b, NONE counting as the earliest
  return GST_CLOCK_TIME_IS_VALID(a) && (!GST_CLOCK_TIME_IS_VALID(b) || a > b);
}

GValue int_array(const std::vector<int64_t>& ids) {
  GValue array = G_VALUE_INIT;
  gst_value_array_init(&array, static_cast<guint>(ids.size()));
  for (int64_t id : ids) {
    GValue v = G_VALUE_INIT;
    g_value_init(&v, G_TYPE_INT);
    g_value_set_int(&v, static_cast<gint>(id));
    gst_value_array_append_and_take_value(&array, &v);
  }
  return array;
}

}  // namespace

/* ---- LlmTurnQueue ------------------------------------------------------------------ */

void LlmTurnQueue::add_speech(const std::vector<int32_t>& tokens, GstClockTime end) {
  std::lock_guard<std::mutex> lock(mutex_);
  speech_.insert(speech_.end(), tokens.begin(), tokens.end());
  if (later(end, input_end_)) input_end_ = end;
  if (speech_.size() >= prefilled_ + kPrefillEvery) cond_.notify_all();  // prefill while speaking
}

void LlmTurnQueue::add_time(GstClockTime end) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (later(end, input_end_)) input_end_ = end;
  if (!GST_CLOCK_TIME_IS_VALID(input_end_)) return;
  gap_pending_ = true;
  cond_.notify_all();
}

void LlmTurnQueue::queue_turn(QueuedTurn turn, bool barge_in) {
  turn.input_end = input_end_;
  turn.completed_at = std::chrono::steady_clock::now();
  turns_.push_back(std::move(turn));
  // A new turn with barge-in interrupts the answer in progress (text input has no
  // start-of-speech, so this is where it barges in).
  if (barge_in) interrupt_ = true;
  cond_.notify_all();
}

bool LlmTurnQueue::end_speech_turn(const std::string& instruction, bool barge_in) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (speech_.empty()) return false;
  QueuedTurn turn;
  turn.turn = llm::UserTurn::speech(std::move(speech_), instruction);
  speech_.clear();
  prefilled_ = 0;
  queue_turn(std::move(turn), barge_in);
  return true;
}

void LlmTurnQueue::add_text_turn(std::string text, const std::string& instruction, GstClockTime end,
                                 bool barge_in) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (later(end, input_end_)) input_end_ = end;
  QueuedTurn turn;
  turn.turn = llm::UserTurn::from_text(std::move(text), instruction);
  queue_turn(std::move(turn), barge_in);
}

void LlmTurnQueue::interrupt() {
  std::lock_guard<std::mutex> lock(mutex_);
  interrupt_ = true;
  cond_.notify_all();
}

void LlmTurnQueue::request_reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  reset_ = true;
  cond_.notify_all();
}

void LlmTurnQueue::set_input_eos(bool text_input) {
  std::lock_guard<std::mutex> lock(mutex_);
  (text_input ? text_eos_ : speech_eos_) = true;
}

bool LlmTurnQueue::input_eos(bool text_input) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return text_input ? text_eos_ : speech_eos_;
}

void LlmTurnQueue::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  eos_ = true;
  cond_.notify_all();
}

void LlmTurnQueue::set_flushing(bool flushing, bool drop_input) {
  std::lock_guard<std::mutex> lock(mutex_);
  flushing_ = flushing;
  if (drop_input) {
    speech_.clear();
    prefilled_ = 0;
    turns_.clear();
    input_end_ = GST_CLOCK_TIME_NONE;
    gap_pending_ = interrupt_ = eos_ = speech_eos_ = text_eos_ = false;
  }
  cond_.notify_all();
}

LlmWork LlmTurnQueue::wait(bool in_answer) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (!in_answer) {
    cond_.wait(lock, [this] {
      return flushing_ || interrupt_ || !turns_.empty() || gap_pending_ || eos_ || reset_ ||
             speech_.size() >= prefilled_ + kPrefillEvery;
    });
  }
  LlmWork work;
  if (flushing_) {
    work.kind = LlmWork::kFlushing;
    return work;
  }
  if (in_answer) {
    work.kind = interrupt_ ? LlmWork::kInterrupt : LlmWork::kStep;
    interrupt_ = false;
    return work;
  }
  if (interrupt_) {
    // No answer is being generated, but the previous one may still be playing: that is
    // what the user barges in on. Handled before a queued turn starts.
    interrupt_ = false;
    work.kind = LlmWork::kInterruptPlayback;
    return work;
  }
  work.reset = reset_;
  reset_ = false;
  if (!turns_.empty()) {
    work.kind = LlmWork::kStart;
    work.turn = std::move(turns_.front());
    turns_.pop_front();
  } else if (speech_.size() >= prefilled_ + kPrefillEvery) {
    work.kind = LlmWork::kPrefill;
    work.turn.turn = llm::UserTurn::speech(speech_);
    prefilled_ = speech_.size();
  } else if (gap_pending_) {
    work.kind = LlmWork::kGap;
    work.gap_end = input_end_;
    gap_pending_ = false;
  } else if (eos_) {
    work.kind = LlmWork::kEos;
    eos_ = false;
  }
  return work;
}

/* ---- LlmConversation --------------------------------------------------------------- */

LlmConversation::LlmConversation(std::shared_ptr<const llm::LlmModel> model, uint64_t seed,
                                 std::shared_ptr<const llm::Scheduler> scheduler)
    : sequence_(scheduler ? scheduler->join() : nullptr),
      chat_(std::move(model), [seed] {
        llm::ChatOptions options;
        options.seed = seed;
        options.context_policy = llm::ContextPolicy::kDropOldestTurns;
        return options;
      }()) {
  if (sequence_) {
    chat_.set_forward([seq = sequence_.get()](const std::vector<int64_t>& ids, llm::KvCache& cache) {
      return seq->forward(ids, cache);
    });
  }
}

void LlmConversation::prefill(const QueuedTurn& partial, const LlmTurnSettings& settings) {
  auto& o = chat_.options();
  o.system_prompt = settings.system_prompt;
  o.keep_history = settings.keep_history;
  o.max_new_tokens = settings.max_new_tokens;
  chat_.prefill_partial(partial.turn);
  if (sequence_) sequence_->idle();  // the user is still speaking: nobody waits for us
}

LlmConversation::Start LlmConversation::start(const QueuedTurn& turn, const LlmTurnSettings& settings) {
  auto& o = chat_.options();
  o.sampling = settings.sampling;
  o.max_new_tokens = settings.max_new_tokens;
  o.system_prompt = settings.system_prompt;
  o.keep_history = settings.keep_history;
  Start result;
  const int64_t dropped_before = chat_.dropped_turns();
  try {
    chat_.begin_turn(turn.turn);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kBadInput) throw;
    result.error = e.what();
    return result;
  }
  result.ok = true;
  result.dropped_turns = chat_.dropped_turns() - dropped_before;
  ++turn_count_;
  completed_at_ = turn.completed_at;
  prefill_ms_ = first_token_ms_ = -1;
  decode_ms_ = 0;
  steps_ = 0;
  if (sequence_) sequence_->reset_stats();
  return result;
}

llm::ChatEvent LlmConversation::step() {
  const SteadyTime t0 = std::chrono::steady_clock::now();
  llm::ChatEvent ev = chat_.step();
  if (ev.kind == llm::ChatEvent::kEnd && sequence_) sequence_->idle();
  const double ms = ms_since(t0);
  if (prefill_ms_ < 0) {
    prefill_ms_ = ms;  // the first step runs the prompt
    first_token_ms_ = ms_since(completed_at_);
  } else {
    decode_ms_ += ms;
    ++steps_;
  }
  return ev;
}

llm::ChatEvent LlmConversation::interrupt() {
  if (sequence_) sequence_->idle();
  return chat_.cancel();
}

void LlmConversation::abandon() {
  if (sequence_) sequence_->idle();
  if (chat_.in_turn()) chat_.cancel();  // the history keeps what was generated
  chat_.rollback_partial();             // the unfinished user turn is dropped with the input
}

GstStructure* LlmConversation::turn_report(const llm::ChatEvent& end, int64_t speech_tokens) const {
  const int64_t generated = static_cast<int64_t>(chat_.completion_ids().size());
  const double per_token = steps_ > 0 ? decode_ms_ / static_cast<double>(steps_) : 0.0;
  const std::string text = chat_.completion_text();
  GstStructure* s = gst_structure_new(
      "glmvoicellm-turn", "turn", G_TYPE_INT, static_cast<gint>(turn_count_), "text", G_TYPE_STRING, text.c_str(),
      "reason", G_TYPE_STRING, llm::stop_reason_name(end.reason), "prompt-tokens", G_TYPE_INT,
      static_cast<gint>(chat_.prompt_ids().size()), "generated-tokens", G_TYPE_INT, static_cast<gint>(generated),
      "speech-tokens", G_TYPE_INT, static_cast<gint>(speech_tokens), "prefill-ms", G_TYPE_DOUBLE,
      prefill_ms_ < 0 ? 0.0 : prefill_ms_, "decode-ms-per-token", G_TYPE_DOUBLE, per_token, NULL);
  if (sequence_) {  // the batched steps this answer ran in (issue 11)
    const llm::Sequence::Stats st = sequence_->stats();
    gst_structure_set(s, "batch-size", G_TYPE_DOUBLE, st.mean_batch(), "batch-size-max", G_TYPE_INT,
                      static_cast<gint>(st.batch_max), NULL);
  }
  GValue input = int_array(chat_.prompt_ids()), completion = int_array(chat_.completion_ids());
  gst_structure_take_value(s, "input-ids", &input);
  gst_structure_take_value(s, "completion-ids", &completion);
  return s;
}

GstStructure* LlmConversation::context_report(int64_t dropped_turns) const {
  return gst_structure_new("glmvoicellm-context", "dropped-turns", G_TYPE_INT, static_cast<gint>(dropped_turns),
                           "total-dropped-turns", G_TYPE_INT, static_cast<gint>(chat_.dropped_turns()),
                           "prompt-tokens", G_TYPE_INT, static_cast<gint>(chat_.prompt_ids().size()),
                           "context-tokens", G_TYPE_INT, static_cast<gint>(chat_.model().config().seq_length),
                           NULL);
}

}  // namespace glmvoice::gst
