/* glmvoicellm's two outputs and their timeline: speech tokens pushed on `src` by the src
 * task, text queued for `text_src` and pushed by that pad's own task, and the GAP events that
 * keep both timelines level so that neither output ever blocks the other (a sink waits in
 * preroll until every sink of the pipeline has prerolled).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <gst/gst.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

namespace glmvoice::gst {

class LlmAnswerOutput {
 public:
  LlmAnswerOutput(GstPad* src, GstPad* text_src) : src_(src), text_src_(text_src) {}
  ~LlmAnswerOutput();
  LlmAnswerOutput(const LlmAnswerOutput&) = delete;
  LlmAnswerOutput& operator=(const LlmAnswerOutput&) = delete;

  // ---- the src task (or its stream lock held) ----------------------------------------
  // A new output segment from 0 next time (READY->PAUSED, FLUSH_STOP); `new_stream`: also
  // a new stream-start and caps (READY->PAUSED).
  void reset(bool new_stream);
  // Stream-start, caps (`codebook` speech tokens) and segment on both pads, when due.
  void push_sticky_events(gint codebook);
  // Moves both timelines to `end` with GAPs (`always`: even a zero-length one).
  void advance(GstClockTime end, bool always);
  // An answer starts at the later of `input_end` and the end of the previous one.
  // `segment_mode`: text-segments; `lines_mode`: text-lines (one escaped line per answer).
  void begin_answer(GstClockTime input_end, bool segment_mode, bool lines_mode);
  GstClockTime response_start() const { return response_start_; }
  int64_t speech_tokens() const { return speech_index_; }
  GstFlowReturn push_speech_token(int64_t token);
  GstFlowReturn add_text(const std::string& text);
  // The answer ended: `tail` text, held text, end-of-response(`reason`) on both pads.
  GstFlowReturn end_answer(const std::string& tail, const char* reason);
  // Barge-in after an answer was generated: end-of-response(interrupted) on src only, so
  // that the decoder drops that answer's audio not yet played (no answer on text_src).
  void interrupt_playback();
  // EOS on both pads (text first: the speech push may block until PLAYING).
  void push_eos();

  // ---- text_src ---------------------------------------------------------------------
  // Flushing drops what is queued and makes the text task pause; not flushing resumes.
  void set_text_flushing(bool flushing);
  // One iteration of the text_src task: waits for an item and pushes it.
  void text_task_iteration();

 private:
  GstClockTime speech_position() const;
  GstFlowReturn enqueue_text(GstMiniObject* object);
  void cover_text(GstClockTime end, bool always);
  GstFlowReturn push_text_buffer(const std::string& text, GstClockTime pts, GstClockTime duration);
  GstFlowReturn push_held_text();

  GstPad* const src_;
  GstPad* const text_src_;

  // The src task's state.
  bool need_stream_start_ = true, need_segment_ = true, discont_ = true;
  GstClockTime out_pos_ = 0;         // src timeline covered so far (answers and gaps)
  GstClockTime text_pos_ = 0;        // text_src timeline covered so far (queued)
  GstClockTime response_start_ = 0;  // PTS of the current answer's first speech token
  int64_t speech_index_ = 0;         // speech tokens of the current answer so far
  guint64 token_offset_ = 0;         // speech tokens pushed since start / flush
  bool segment_mode_ = false, lines_mode_ = false;
  std::string held_text_;            // text-segments: the segment waiting for its speech run
  GstClockTime held_pts_ = 0;        // start of that run
  int64_t run_tokens_ = 0;           // speech tokens of that run so far

  // text_src's queue: protected by text_mutex_.
  std::mutex text_mutex_;
  std::condition_variable text_cond_;
  std::deque<GstMiniObject*> text_queue_;
  bool text_flushing_ = true;
  GstFlowReturn text_flow_ = GST_FLOW_OK;  // last fatal flow of the text branch
  // The last stream-start, caps and segment made for text_src (owned), even when a flush
  // dropped them from the queue: the text task resends what the pad lacks before data.
  GstEvent* text_sticky_[3] = {nullptr, nullptr, nullptr};
  void remember_text_sticky(GstMiniObject* object);
  void ensure_text_sticky(GstMiniObject* next);
};

}  // namespace glmvoice::gst
