/* glmvoicellm's outputs and their timeline (see glmvoicellm_output.h).
 * SPDX-License-Identifier: LGPL-2.1-or-later */
#include "glmvoicellm_output.h"

#include <algorithm>

#include "glmvoice_caps.h"
#include "glmvoice_events.h"

namespace glmvoice::gst {

namespace {

// text-lines: one line per answer, so newlines and control bytes inside it are escaped.
std::string escape_line(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char hex[8];
          g_snprintf(hex, sizeof hex, "\\x%02X", c);
          out += hex;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

}  // namespace

LlmAnswerOutput::~LlmAnswerOutput() {
  for (GstMiniObject* object : text_queue_) gst_mini_object_unref(object);
  for (GstEvent*& event : text_sticky_) gst_clear_event(&event);
}

/* ---- src task ------------------------------------------------------------------------ */

void LlmAnswerOutput::reset(bool new_stream) {
  if (new_stream) need_stream_start_ = true;
  need_segment_ = true;
  discont_ = true;
  out_pos_ = text_pos_ = response_start_ = 0;
  speech_index_ = 0;
  token_offset_ = 0;
  held_text_.clear();
  run_tokens_ = 0;
}

void LlmAnswerOutput::push_sticky_events(gint codebook) {
  if (need_stream_start_) {
    // The answer is a new stream (not derived from one upstream stream: there can be two
    // sink pads, so gst_pad_create_stream_id() cannot be used).
    const guint group = gst_util_group_id_next();
    const guint32 r1 = g_random_int(), r2 = g_random_int();
    for (GstPad* pad : {text_src_, src_}) {
      gchar* id = g_strdup_printf("%08x%08x/%s", r1, r2, pad == src_ ? "speech" : "text");
      GstEvent* event = gst_event_new_stream_start(id);
      gst_event_set_group_id(event, group);
      if (pad == src_) {
        gst_pad_push_event(pad, event);
      } else {
        enqueue_text(GST_MINI_OBJECT_CAST(event));
      }
      g_free(id);
    }
    GstCaps* caps = gst_caps_from_string(GST_GLM_VOICE_TEXT_CAPS);
    enqueue_text(GST_MINI_OBJECT_CAST(gst_event_new_caps(caps)));
    gst_caps_unref(caps);
    caps = gst_glm_voice_tokens_caps_new(codebook);
    gst_pad_push_event(src_, gst_event_new_caps(caps));
    gst_caps_unref(caps);
    need_stream_start_ = false;
  }
  if (need_segment_) {
    GstSegment segment;
    gst_segment_init(&segment, GST_FORMAT_TIME);
    enqueue_text(GST_MINI_OBJECT_CAST(gst_event_new_segment(&segment)));
    gst_pad_push_event(src_, gst_event_new_segment(&segment));
    need_segment_ = false;
  }
}

GstClockTime LlmAnswerOutput::speech_position() const {
  return response_start_ + speech_index_ * GST_GLM_VOICE_TOKEN_DURATION;
}

// Covers text_src's timeline up to `end` with a GAP (queued: never blocks). `always`: also a
// zero-length GAP, so that a text sink prerolls before a speech push that may block.
void LlmAnswerOutput::cover_text(GstClockTime end, bool always) {
  if (end < text_pos_ || (end == text_pos_ && !always)) return;
  enqueue_text(GST_MINI_OBJECT_CAST(gst_event_new_gap(text_pos_, end - text_pos_)));
  text_pos_ = end;
}

void LlmAnswerOutput::advance(GstClockTime end, bool always) {
  if (!GST_CLOCK_TIME_IS_VALID(end) || end < out_pos_ || (end == out_pos_ && !always)) return;
  cover_text(end, always);  // first: the push on src may block in a sink's preroll
  gst_pad_push_event(src_, gst_event_new_gap(out_pos_, end - out_pos_));
  out_pos_ = end;
}

void LlmAnswerOutput::begin_answer(GstClockTime input_end, bool segment_mode, bool lines_mode) {
  response_start_ = out_pos_;
  if (GST_CLOCK_TIME_IS_VALID(input_end) && input_end > response_start_) response_start_ = input_end;
  speech_index_ = 0;
  held_text_.clear();
  run_tokens_ = 0;
  segment_mode_ = segment_mode;
  lines_mode_ = lines_mode;
  advance(response_start_, false);
}

GstFlowReturn LlmAnswerOutput::push_text_buffer(const std::string& text, GstClockTime pts, GstClockTime duration) {
  const std::string out = lines_mode_ ? escape_line(text) : text;
  if (out.empty()) return GST_FLOW_OK;
  GstBuffer* buffer = gst_buffer_new_memdup(out.data(), out.size());
  GST_BUFFER_PTS(buffer) = pts;
  GST_BUFFER_DURATION(buffer) = duration;
  text_pos_ = std::max(text_pos_, pts);
  if (GST_CLOCK_TIME_IS_VALID(duration)) text_pos_ = std::max(text_pos_, pts + duration);
  return enqueue_text(GST_MINI_OBJECT_CAST(buffer));
}

// text-segments: the held segment goes out with the speech run that followed it.
GstFlowReturn LlmAnswerOutput::push_held_text() {
  if (held_text_.empty()) return GST_FLOW_OK;
  const GstClockTime pts = run_tokens_ > 0 ? held_pts_ : speech_position();
  const GstFlowReturn ret = push_text_buffer(held_text_, pts, run_tokens_ * GST_GLM_VOICE_TOKEN_DURATION);
  held_text_.clear();
  run_tokens_ = 0;
  return ret;
}

GstFlowReturn LlmAnswerOutput::add_text(const std::string& text) {
  if (text.empty()) return GST_FLOW_OK;
  if (!segment_mode_) return push_text_buffer(text, speech_position(), GST_CLOCK_TIME_NONE);
  GstFlowReturn ret = GST_FLOW_OK;
  if (run_tokens_ > 0) ret = push_held_text();  // a new segment begins
  held_text_ += text;
  return ret;
}

GstFlowReturn LlmAnswerOutput::push_speech_token(int64_t token) {
  const GstClockTime pts = speech_position();
  if (segment_mode_ && !held_text_.empty()) {
    // The held text will carry this run's start: the text timeline waits there.
    if (run_tokens_ == 0) {
      held_pts_ = pts;
      cover_text(pts, /*always=*/true);
    }
    ++run_tokens_;
  } else {
    cover_text(pts + GST_GLM_VOICE_TOKEN_DURATION, false);
  }
  const gint32 value = static_cast<gint32>(token);
  GstBuffer* buffer = gst_glm_voice_tokens_buffer_new(&value, 1);
  GST_BUFFER_PTS(buffer) = pts;
  GST_BUFFER_DURATION(buffer) = GST_GLM_VOICE_TOKEN_DURATION;
  GST_BUFFER_OFFSET(buffer) = token_offset_;
  GST_BUFFER_OFFSET_END(buffer) = token_offset_ + 1;
  if (discont_) {
    GST_BUFFER_FLAG_SET(buffer, GST_BUFFER_FLAG_DISCONT);
    discont_ = false;
  }
  ++speech_index_;
  ++token_offset_;
  out_pos_ = pts + GST_GLM_VOICE_TOKEN_DURATION;
  const GstFlowReturn ret = gst_pad_push(src_, buffer);
  // Text-only use: an unlinked speech pad is fine while text_src is linked.
  if (ret == GST_FLOW_NOT_LINKED && gst_pad_is_linked(text_src_)) return GST_FLOW_OK;
  return ret;
}

GstFlowReturn LlmAnswerOutput::end_answer(const std::string& tail, const char* reason) {
  GstFlowReturn ret = add_text(tail);
  const GstFlowReturn held = push_held_text();
  if (ret == GST_FLOW_OK) ret = held;
  const GstClockTime end = speech_position();
  if (lines_mode_) {
    GstBuffer* newline = gst_buffer_new_memdup("\n", 1);
    GST_BUFFER_PTS(newline) = std::max(end, text_pos_);
    enqueue_text(GST_MINI_OBJECT_CAST(newline));
  }
  cover_text(end, false);
  enqueue_text(GST_MINI_OBJECT_CAST(gst_glm_voice_event_new_end_of_response(reason)));
  // An answer without speech: a GAP on src, so that its sink prerolls too.
  if (speech_index_ == 0) advance(end, /*always=*/true);
  gst_pad_push_event(src_, gst_glm_voice_event_new_end_of_response(reason));
  return ret;
}

void LlmAnswerOutput::interrupt_playback() {
  gst_pad_push_event(src_, gst_glm_voice_event_new_end_of_response(GST_GLM_VOICE_REASON_INTERRUPTED));
}

void LlmAnswerOutput::push_eos() {
  enqueue_text(GST_MINI_OBJECT_CAST(gst_event_new_eos()));
  gst_pad_push_event(src_, gst_event_new_eos());
}

/* ---- text_src ------------------------------------------------------------------------ */

// Queues a buffer or event for text_src (takes ownership); never blocks. Returns the text
// branch's last fatal flow (GST_FLOW_OK if none).
GstFlowReturn LlmAnswerOutput::enqueue_text(GstMiniObject* object) {
  std::lock_guard<std::mutex> lock(text_mutex_);
  remember_text_sticky(object);
  if (text_flushing_) {
    gst_mini_object_unref(object);
    return GST_FLOW_OK;
  }
  text_queue_.push_back(object);
  text_cond_.notify_all();
  return text_flow_;
}

void LlmAnswerOutput::set_text_flushing(bool flushing) {
  std::lock_guard<std::mutex> lock(text_mutex_);
  text_flushing_ = flushing;
  for (GstMiniObject* object : text_queue_) gst_mini_object_unref(object);
  text_queue_.clear();
  if (!flushing) text_flow_ = GST_FLOW_OK;
  text_cond_.notify_all();
}

namespace {
constexpr GstEventType kTextSticky[3] = {GST_EVENT_STREAM_START, GST_EVENT_CAPS, GST_EVENT_SEGMENT};
}  // namespace

// With text_mutex_ held.
void LlmAnswerOutput::remember_text_sticky(GstMiniObject* object) {
  if (!GST_IS_EVENT(object)) return;
  for (int i = 0; i < 3; ++i) {
    if (GST_EVENT_TYPE(object) == kTextSticky[i]) gst_event_replace(&text_sticky_[i], GST_EVENT(object));
  }
}

// A flush empties the queue, and may take a stream-start/caps that were queued but not yet
// pushed; a FLUSH_STOP also clears the pad's segment. Before `next` (data, or one of the
// three), text_src gets those of them that come earlier in the required order.
void LlmAnswerOutput::ensure_text_sticky(GstMiniObject* next) {
  int before = 3;
  for (int i = 0; i < 3; ++i) {
    if (GST_IS_EVENT(next) && GST_EVENT_TYPE(next) == kTextSticky[i]) before = i;
  }
  for (int i = 0; i < before; ++i) {
    if (GstEvent* have = gst_pad_get_sticky_event(text_src_, kTextSticky[i], 0)) {
      gst_event_unref(have);
      continue;
    }
    GstEvent* event = nullptr;
    {
      std::lock_guard<std::mutex> lock(text_mutex_);
      if (text_sticky_[i]) event = gst_event_ref(text_sticky_[i]);
    }
    if (event) gst_pad_push_event(text_src_, event);
  }
}

void LlmAnswerOutput::text_task_iteration() {
  GstMiniObject* object = nullptr;
  {
    std::unique_lock<std::mutex> lock(text_mutex_);
    text_cond_.wait(lock, [this] { return text_flushing_ || !text_queue_.empty(); });
    if (text_flushing_) {
      lock.unlock();
      gst_pad_pause_task(text_src_);
      return;
    }
    object = text_queue_.front();
    text_queue_.pop_front();
  }
  ensure_text_sticky(object);
  if (GST_IS_BUFFER(object)) {
    const GstFlowReturn ret = gst_pad_push(text_src_, GST_BUFFER(object));
    // An unlinked text pad is fine; fatal flows (not-negotiated, error) stop the element.
    if (ret < GST_FLOW_EOS && ret != GST_FLOW_NOT_LINKED) {
      std::lock_guard<std::mutex> lock(text_mutex_);
      text_flow_ = ret;
    }
  } else {
    gst_pad_push_event(text_src_, GST_EVENT(object));
  }
}

}  // namespace glmvoice::gst
