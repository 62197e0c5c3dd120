/* glmvoicellm's turn logic, without pads or tasks: the queue of completed user turns and
 * barge-in (LlmTurnQueue, fed by the streaming threads), and the conversation with its
 * history, context policy and per-turn report (LlmConversation, used by the src task).
 * gstglmvoicellm.cpp does the pad plumbing around them (chains, events, tasks, timestamps).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gst/gst.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llm/chat.h"
#include "llm/scheduler.h"

namespace glmvoice::gst {

using SteadyTime = std::chrono::steady_clock::time_point;

// A completed user turn waiting for its answer.
struct QueuedTurn {
  llm::UserTurn turn;
  GstClockTime input_end = GST_CLOCK_TIME_NONE;  // running time where the user's input ended
  SteadyTime completed_at;                       // when the turn became complete (latency check)
};

// What the src task does next.
struct LlmWork {
  enum Kind {
    kFlushing,  // pause the task
    kIdle,      // nothing but a history reset (apply `reset`, wait again)
    kStart,     // start answering `turn`
    kStep,      // generate the next token of the answer in progress
    kPrefill,   // no answer in progress: prefill `turn` (the speech heard so far) while the user speaks
    kInterrupt, // barge-in: end the answer in progress now
    kInterruptPlayback,  // barge-in with no answer in progress: the last answer may still be
                         // playing downstream, so tell the decoder to drop it
    kGap,       // no answer: the input moved on to `gap_end` (running time)
    kEos,       // every input is done and every turn answered
  };
  Kind kind = kIdle;
  bool reset = false;  // reset-history requested (only when no answer is in progress)
  QueuedTurn turn;
  GstClockTime gap_end = GST_CLOCK_TIME_NONE;
};

// Thread-safe (own mutex): streaming threads add input, the src task waits for work.
class LlmTurnQueue {
 public:
  // Prefill while the user speaks: a kPrefill every this many new speech tokens (issue 10 §1:
  // 8–25; small so that at the end of the turn little is left to run).
  static constexpr size_t kPrefillEvery = 8;

  // Speech tokens of the unfinished user turn; `end` = running time of their end (or NONE).
  void add_speech(const std::vector<int32_t>& tokens, GstClockTime end);
  // The input moved on to `end` without a turn (a GAP event): forwarded when no answer runs.
  void add_time(GstClockTime end);
  // The speech turn is complete (end-of-turn, EOS). False when it had no tokens.
  bool end_speech_turn(const std::string& instruction, bool barge_in);
  // A complete text turn (a text_sink message or line).
  void add_text_turn(std::string text, const std::string& instruction, GstClockTime end, bool barge_in);
  // The user started speaking (start-of-speech with barge-in): stop the answer in progress.
  void interrupt();
  void request_reset();
  // End of one input; the caller says when every input is done (then EOS after the queued turns).
  void set_input_eos(bool text_input);
  bool input_eos(bool text_input) const;
  void finish();
  // FLUSH_START / deactivation: wake the task and make it pause. FLUSH_STOP / activation:
  // resume; `drop_input` forgets the unfinished and queued turns and the EOS state.
  void set_flushing(bool flushing, bool drop_input);
  // Blocks until there is work. `in_answer`: an answer is in progress (never blocks then).
  LlmWork wait(bool in_answer);

 private:
  void queue_turn(QueuedTurn turn, bool barge_in);  // mutex_ held

  mutable std::mutex mutex_;
  std::condition_variable cond_;
  bool flushing_ = true;
  std::vector<int64_t> speech_;                    // the unfinished speech turn
  GstClockTime input_end_ = GST_CLOCK_TIME_NONE;   // latest end of any input (running time)
  std::deque<QueuedTurn> turns_;
  size_t prefilled_ = 0;  // speech tokens of the unfinished turn handed out as kPrefill
  bool gap_pending_ = false, interrupt_ = false, reset_ = false, eos_ = false;
  bool speech_eos_ = false, text_eos_ = false;
};

// Property values read once at the start of every answer.
struct LlmTurnSettings {
  llm::SamplingOptions sampling;
  int64_t max_new_tokens = 2000;
  std::string system_prompt;
  bool keep_history = true;
};

// The conversation: one ChatState plus the figures of the current answer. Used by the src
// task only (and by FLUSH_STOP / state changes while the task is paused or stopped).
class LlmConversation {
 public:
  // With a `scheduler` (shared by the conversations on one model) the forward passes run in
  // its batched steps; without, on this thread.
  LlmConversation(std::shared_ptr<const llm::LlmModel> model, uint64_t seed,
                  std::shared_ptr<const llm::Scheduler> scheduler = nullptr);

  struct Start {
    bool ok = false;
    std::string error;          // !ok: why the turn cannot be answered (longer than the context)
    int64_t dropped_turns = 0;  // oldest turns dropped from the history to make room
  };
  // Starts the answer to `turn` (the history policy: keep-history, drop the oldest turns
  // when the context is full; see llm::ChatState::begin_turn).
  Start start(const QueuedTurn& turn, const LlmTurnSettings& settings);
  const llm::LlmModel& model() const { return chat_.model(); }
  bool in_answer() const { return chat_.in_turn(); }
  llm::ChatEvent step();       // the next token (times the model alone)
  llm::ChatEvent interrupt();  // ends the answer now (reason interrupted), keeps the history
  void abandon();              // FLUSH: as interrupt(), without a report; drops a partial prefill
  // Prefill while the user speaks (llm::ChatState::prefill_partial) with the turn settings.
  void prefill(const QueuedTurn& partial, const LlmTurnSettings& settings);
  // From any thread (FLUSH_START): a forward waiting in the scheduler throws llm::Cancelled.
  void cancel_forward() {
    if (sequence_) sequence_->cancel();
  }
  void reset() { chat_.reset(); }

  int64_t turn_count() const { return turn_count_; }
  // Milliseconds from the user's turn being complete to the first generated token (-1 before).
  double first_token_ms() const { return first_token_ms_; }
  // Element message glmvoicellm-turn for the answer that just ended (caller posts it).
  GstStructure* turn_report(const llm::ChatEvent& end, int64_t speech_tokens) const;
  // Element message glmvoicellm-context: the history outgrew the context.
  GstStructure* context_report(int64_t dropped_turns) const;

 private:
  std::unique_ptr<llm::Sequence> sequence_;  // before chat_: chat_'s forward hook uses it
  llm::ChatState chat_;
  int64_t turn_count_ = 0;
  SteadyTime completed_at_;
  double prefill_ms_ = -1, first_token_ms_ = -1, decode_ms_ = 0;
  int64_t steps_ = 0;
};

}  // namespace glmvoice::gst
