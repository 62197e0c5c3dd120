// glmvoicellm in whole pipelines with BOTH outputs linked to real sinks (issue 9, bug 1):
// sinks preroll on the first buffer or GAP and then block until PLAYING, so a sparse
// output that gets nothing while the other one pushes hangs the pipeline forever. Every
// case runs under a watchdog (run_pipeline's timeout) and must reach EOS.
#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "glmvoice_caps.h"
#include "llm/chat.h"
#include "llm/chatglm_model.h"
#include "pipeline_runner.h"
#include "test_support.h"
#include "../elements/element_test_util.h"

namespace fs = std::filesystem;
using glmvoice::test::PipelineResult;

namespace {

// gst_init, and the leak check at gst_deinit (GST_TRACERS=leaks).
const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

constexpr double kWatchdogS = 120;  // generous: the build box is shared; a hang never ends

std::string scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("glmvoice-llm-pipelines-" + std::to_string(getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

std::string write_file(const std::string& name, const std::string& bytes) {
  const std::string path = scratch(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string token_file(const std::string& name, const std::vector<int32_t>& tokens) {
  std::string bytes;
  for (int32_t t : tokens) {
    const guint32 le = GUINT32_TO_LE(static_cast<guint32>(t));
    bytes.append(reinterpret_cast<const char*>(&le), 4);
  }
  return write_file(name, bytes);
}

// Tokens from a file into glmvoicellm (options), both outputs into fakesinks.
std::string tokens_into_llm(const std::string& file, const std::string& llm_options) {
  return "filesrc location=\"" + file + "\" ! audio/x-glm-speech-tokens,framerate=25/2,codebook-size=64 ! " +
         "glmvoicellm name=l model-path=\"" + glmvoice::test::tiny_model_dir("llm", "tiny-script") + "\" " +
         llm_options + " ! fakesink  l.text_src ! fakesink";
}

std::string describe(const PipelineResult& r) {
  std::string s = r.timed_out ? "TIMED OUT (hang)" : (r.reached_eos ? "EOS" : "stopped");
  for (const auto& e : r.errors) s += "\n  error: " + e;
  return s;
}

}  // namespace

TEST(LlmPipelines, test_eos_without_data_both_outputs_linked) {
  PipelineResult r;
  glmvoice::test::run_pipeline(tokens_into_llm(write_file("empty.tok", ""), ""), kWatchdogS, r);
  EXPECT_TRUE(r.reached_eos) << describe(r);
  EXPECT_TRUE(r.errors.empty()) << describe(r);
}

TEST(LlmPipelines, test_one_turn_both_outputs_linked) {
  PipelineResult r;
  glmvoice::test::run_pipeline(tokens_into_llm(token_file("q.tok", {1, 2, 3}), ""), kWatchdogS, r, "l.src");
  EXPECT_TRUE(r.reached_eos) << describe(r);
  EXPECT_EQ(r.probed_tokens, (std::vector<int32_t>{3, 4}));
  EXPECT_EQ(r.turn_messages.size(), 1u);
}

TEST(LlmPipelines, test_text_segments_both_outputs_linked) {
  // The segment's text is held until its speech run is complete: the speech goes first.
  PipelineResult r;
  glmvoice::test::run_pipeline(tokens_into_llm(token_file("q2.tok", {1, 2, 3}), "text-segments=true"), kWatchdogS,
                               r, "l.src");
  EXPECT_TRUE(r.reached_eos) << describe(r);
  EXPECT_EQ(r.probed_tokens, (std::vector<int32_t>{3, 4}));
}

TEST(LlmPipelines, test_zero_sample_wav_through_tokenizer_and_llm) {
  // A valid WAV header with an empty data chunk.
  std::string wav = "RIFF";
  auto u32 = [&wav](guint32 v) { v = GUINT32_TO_LE(v); wav.append(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&wav](guint16 v) { v = GUINT16_TO_LE(v); wav.append(reinterpret_cast<const char*>(&v), 2); };
  u32(36);
  wav += "WAVEfmt ";
  u32(16);
  u16(1);
  u16(1);
  u32(16000);
  u32(32000);
  u16(2);
  u16(16);
  wav += "data";
  u32(0);
  const std::string path = write_file("zero.wav", wav);
  PipelineResult r;
  glmvoice::test::run_pipeline(
      "filesrc location=\"" + path + "\" ! wavparse ! audioconvert ! audioresample ! " +
          "glmvoicetokenize model-path=\"" + glmvoice::test::tiny_model_dir("tokenizer") + "\" ! " +
          "glmvoicellm name=l model-path=\"" + glmvoice::test::tiny_model_dir("llm", "tiny-script") +
          "\" ! fakesink  l.text_src ! fakesink",
      kWatchdogS, r);
  EXPECT_FALSE(r.timed_out) << describe(r);
}

TEST(LlmPipelines, test_question_longer_than_the_context) {
  // 5 KB of text: longer than the tiny model's 512-token context. Not answered (a warning
  // and end-of-response reason=context), and the pipeline ends.
  std::string text;
  while (text.size() < 5000) text += "tell me a story about streaming and the transcription ";
  const std::string path = write_file("long.txt", text);
  PipelineResult r;
  glmvoice::test::run_pipeline("filesrc location=\"" + path + "\" ! text/x-raw,format=utf8 ! l.text_sink " +
                                   "glmvoicellm name=l model-path=\"" +
                                   glmvoice::test::tiny_model_dir("llm", "tiny-script") +
                                   "\" text-lines=true ! fakesink  l.text_src ! fakesink",
                               kWatchdogS, r, "l.src");
  EXPECT_TRUE(r.reached_eos) << describe(r);
  EXPECT_TRUE(r.errors.empty()) << describe(r);
  ASSERT_FALSE(r.warnings.empty());
  EXPECT_NE(r.warnings[0].find("context"), std::string::npos) << r.warnings[0];
  EXPECT_EQ(r.end_of_responses, 1);
}

TEST(LlmPipelines, test_first_answer_token_is_speech) {
  // Find a seed for which the tiny random model's first answer token is a speech token
  // (the element samples with the same ChatState, prompt and seed).
  const std::string dir = glmvoice::test::tiny_model_dir("llm", "tiny");
  glmvoice::ModelOptions options;
  options.path = dir;
  auto model = glmvoice::llm::LlmModel::load(options);
  int64_t seed = -1;
  for (int64_t s = 1; s < 200 && seed < 0; ++s) {
    glmvoice::llm::ChatOptions o;
    o.seed = static_cast<uint64_t>(s);
    o.sampling.temperature = 1.0;
    o.sampling.top_p = 1.0;
    o.sampling.top_k = 0;
    glmvoice::llm::ChatState chat(model, o);
    chat.begin_turn(glmvoice::llm::UserTurn::speech({1, 2, 3}));
    if (chat.step().kind == glmvoice::llm::ChatEvent::kAudio) seed = s;
  }
  ASSERT_GT(seed, 0) << "no seed with a speech token first";
  const std::string file = token_file("q3.tok", {1, 2, 3});
  PipelineResult r;
  glmvoice::test::run_pipeline(
      "filesrc location=\"" + file + "\" ! audio/x-glm-speech-tokens,framerate=25/2,codebook-size=64 ! " +
          "glmvoicellm name=l model-path=\"" + dir + "\" seed=" + std::to_string(seed) +
          " temperature=1 top-p=1 top-k=0 max-new-tokens=6 ! fakesink  l.text_src ! fakesink",
      kWatchdogS, r, "l.src");
  EXPECT_TRUE(r.reached_eos) << describe(r);
  ASSERT_FALSE(r.probed_tokens.empty());
}

// text-chat as a user runs it: lines arrive while the input stays open; every answer must
// reach the text sink before the input ends (the speech sink gets GAPs, so the pipeline
// prerolls and plays even though text-only answers push no speech).
TEST(LlmPipelines, test_text_lines_answer_while_input_open) {
  GError* error = nullptr;
  const std::string description =
      "appsrc name=in caps=text/x-raw,format=utf8 format=time ! l.text_sink glmvoicellm name=l model-path=\"" +
      glmvoice::test::tiny_model_dir("llm", "tiny-loop") +
      "\" text-lines=true max-new-tokens=3 ! fakesink  l.text_src ! appsink name=out sync=false";
  GstElement* pipeline = gst_parse_launch(description.c_str(), &error);
  ASSERT_EQ(error, nullptr) << error->message;
  GstElement* in = gst_bin_get_by_name(GST_BIN(pipeline), "in");
  GstElement* out = gst_bin_get_by_name(GST_BIN(pipeline), "out");
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  auto push_line = [in](const std::string& line) {
    gst_app_src_push_buffer(GST_APP_SRC(in), gst_buffer_new_memdup(line.data(), line.size()));
  };
  auto read_answer = [out]() {  // one answer line, or "(timeout)"
    std::string text;
    while (text.empty() || text.back() != '\n') {
      GstSample* sample = gst_app_sink_try_pull_sample(GST_APP_SINK(out), 60 * GST_SECOND);
      if (!sample) return text + "(timeout)";
      GstBuffer* b = gst_sample_get_buffer(sample);
      GstMapInfo map;
      gst_buffer_map(b, &map, GST_MAP_READ);
      text.append(reinterpret_cast<const char*>(map.data), map.size);
      gst_buffer_unmap(b, &map);
      gst_sample_unref(sample);
    }
    return text;
  };
  push_line("Hello there\n");
  EXPECT_EQ(read_answer(), "HiH\n");
  push_line("and again\nthird");
  EXPECT_EQ(read_answer(), "HiH\n");
  gst_app_src_end_of_stream(GST_APP_SRC(in));  // "third" is a turn at EOS
  EXPECT_EQ(read_answer(), "HiH\n");
  GstBus* bus = gst_element_get_bus(pipeline);
  GstMessage* m = gst_bus_timed_pop_filtered(bus, 60 * GST_SECOND,
                                             static_cast<GstMessageType>(GST_MESSAGE_EOS | GST_MESSAGE_ERROR));
  ASSERT_NE(m, nullptr) << "no EOS";
  EXPECT_EQ(GST_MESSAGE_TYPE(m), GST_MESSAGE_EOS);
  gst_message_unref(m);
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(in);
  gst_object_unref(out);
  gst_object_unref(pipeline);
}

TEST(LlmPipelines, test_caps_mismatch_is_not_negotiated) {
  // The model has 64 speech tokens; upstream insists on 100: not-negotiated, not a decode error.
  const std::string file = token_file("q4.tok", {1, 2, 3});
  PipelineResult r;
  glmvoice::test::run_pipeline(
      "filesrc location=\"" + file + "\" ! audio/x-glm-speech-tokens,framerate=25/2,codebook-size=100 ! " +
          "glmvoicellm name=l model-path=\"" + glmvoice::test::tiny_model_dir("llm", "tiny-script") +
          "\" ! fakesink  l.text_src ! fakesink",
      kWatchdogS, r);
  // Negotiation fails upstream (the CAPS query of the LLM's sink answers 64): the LLM posts
  // no decode error.
  ASSERT_EQ(r.errors.size(), 1u) << describe(r);
  EXPECT_NE(r.errors[0].find("caps"), std::string::npos) << r.errors[0];
  EXPECT_NE(r.errors[0].rfind("l: ", 0), 0u) << r.errors[0];
}

TEST(LlmPipelines, test_latency_not_live) {
  // Not live upstream: upstream's answer (not live, 0), whatever the budget.
  GError* error = nullptr;
  GstElement* pipeline = gst_parse_launch(
      ("filesrc location=/dev/null ! audio/x-glm-speech-tokens,framerate=25/2,codebook-size=64 ! "
       "glmvoicellm name=l latency=700000000 model-path=\"" +
       glmvoice::test::tiny_model_dir("llm", "tiny-script") + "\" ! fakesink  l.text_src ! fakesink")
          .c_str(),
      &error);
  ASSERT_EQ(error, nullptr);
  ASSERT_EQ(gst_element_set_state(pipeline, GST_STATE_PAUSED), GST_STATE_CHANGE_ASYNC);
  GstElement* l = gst_bin_get_by_name(GST_BIN(pipeline), "l");
  GstPad* src = gst_element_get_static_pad(l, "src");
  GstQuery* q = gst_query_new_latency();
  ASSERT_TRUE(gst_pad_query(src, q));
  gboolean live = TRUE;
  GstClockTime min = 1, max = 1;
  gst_query_parse_latency(q, &live, &min, &max);
  EXPECT_FALSE(live);
  EXPECT_EQ(min, 0u) << "nothing of the budget when upstream is not live";
  gst_query_unref(q);
  gst_object_unref(src);
  gst_object_unref(l);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}
