// Whole-pipeline tests (issue 6) through gst_parse_launch, on the project's tiny models:
// spoken questions in English and Chinese, two endpointed turns with history, an RTP
// loopback bridge, FLUSH / NULL in the middle of generation, a bad model path, and model
// sharing between two pipelines.
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include "glmvoice_model_cache.h"
#include "io/json_config.h"
#include "pipeline_runner.h"
#include "runtime/options.h"
#include "test_support.h"
#include "../elements/element_test_util.h"

namespace fs = std::filesystem;
using glmvoice::test::PipelineResult;

namespace {

// gst_init, and the leak check at gst_deinit (GST_TRACERS=leaks).
const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

struct Models {
  std::string tokenizer, llm, decoder;
};

const Models& tiny_models() {
  static Models models{glmvoice::test::tiny_model_dir("tokenizer"), glmvoice::test::tiny_model_dir("llm"),
                       glmvoice::test::tiny_model_dir("decoder")};
  return models;
}

// Decoder spec §3.4: mel frames for T tokens, evaluated in fp32 step by step.
int64_t mel_len(int64_t tokens) {
  float a = static_cast<float>(tokens);
  a = a / 12.5f;  // input_frame_rate of the tiny decoder config (as the real one)
  a = a * 22050.0f;
  a = a / 256.0f;
  return static_cast<int64_t>(a);
}

// Decoder spec §5.2/§5.3: samples a streamed utterance of n tokens emits with the default
// block schedule 25,50,100,150,200 (last repeats) and the one-token lag rule.
int64_t streamed_samples(int64_t n) {
  const int64_t blocks[] = {25, 50, 100, 150, 200};
  const int64_t overlap = 34, hop = 256;
  int64_t done = 0, prompt_frames = 0, samples = 0;
  int call = 0;
  while (done < n) {
    const int64_t block = blocks[std::min(call, 4)];
    const bool final = n - done <= block;
    const int64_t take = final ? n - done : block;
    const int64_t lm = mel_len(done + take) - prompt_frames;
    int64_t frames = lm + (call > 0 ? 1 : 0);  // the cached frame is prepended from call 2 on
    if (!final) frames -= overlap;
    samples += (final ? frames : frames - 1) * hop;  // non-final calls withhold one frame
    prompt_frames += frames;
    done += take;
    ++call;
  }
  return samples;
}

TEST(LengthRule, test_streamed_samples_match_spec_table) {
  EXPECT_EQ(streamed_samples(25), 44032);
  EXPECT_EQ(streamed_samples(26), 45824);
  EXPECT_EQ(streamed_samples(100), 176128);
  EXPECT_EQ(streamed_samples(1000), 1762304);
}

std::string converse_line(const Models& m, const std::string& question, const std::string& answer,
                          const std::string& tokenize_extra = "", int max_new_tokens = 80) {
  return "filesrc location=\"" + question + "\" ! decodebin ! audioconvert ! audioresample ! "
         "glmvoicetokenize model-path=\"" + m.tokenizer + "\" " + tokenize_extra +
         " ! glmvoicellm name=llm model-path=\"" + m.llm + "\" max-new-tokens=" +
         std::to_string(max_new_tokens) + " ! glmvoicedecode name=dec model-path=\"" + m.decoder +
         "\" ! audioconvert ! wavenc ! filesink location=\"" + answer + "\" llm.text_src ! fakesink";
}

void expect_answer_matches_tokens(const PipelineResult& result, const std::string& answer) {
  ASSERT_TRUE(result.errors.empty()) << result.errors.front();
  ASSERT_TRUE(result.reached_eos) << (result.timed_out ? "timed out" : "no EOS");
  ASSERT_EQ(result.turn_messages.size(), 1u);
  const GstStructure* turn = result.turn_messages[0];
  gint speech_tokens = -1;
  ASSERT_TRUE(gst_structure_get_int(turn, "speech-tokens", &speech_tokens));
  EXPECT_EQ(static_cast<size_t>(speech_tokens), result.probed_tokens.size());
  EXPECT_EQ(result.end_of_responses, 1);
  const gchar* text = gst_structure_get_string(turn, "text");
  ASSERT_NE(text, nullptr);
  EXPECT_GT(std::strlen(text), 0u) << "empty transcript";
  int rate = 0, channels = 0;
  const int64_t samples = glmvoice::test::wav_samples(answer, &rate, &channels);
  EXPECT_EQ(rate, 22050);
  EXPECT_EQ(channels, 1);
  EXPECT_EQ(samples, streamed_samples(static_cast<int64_t>(result.probed_tokens.size())))
      << "answer WAV length vs decoder length rules for " << result.probed_tokens.size() << " tokens";
}

void converse_once(const std::string& voice, const std::string& text) {
  const std::string dir = glmvoice::test::scratch_dir("converse-" + voice);
  const std::string question = dir + "/question.wav", answer = dir + "/answer.wav";
  if (!glmvoice::test::make_speech_wav(question, voice, text)) GTEST_SKIP() << "espeak-ng not available";
  PipelineResult result;
  glmvoice::test::run_pipeline(converse_line(tiny_models(), question, answer), 240, result, "dec.sink");
  expect_answer_matches_tokens(result, answer);
  EXPECT_GT(result.probed_tokens.size(), 0u) << "the tiny LLM generated no speech tokens";
}

TEST(ConverseFile, test_english_question_gives_answer_wav) {
  converse_once("en", "What is the weather like in Beijing today?");
}

TEST(ConverseFile, test_chinese_question_gives_answer_wav) {
  converse_once("cmn", "今天北京的天气怎么样？");
}

// Writes `a` + `silence_s` of silence + `b` as one 16-bit mono WAV at `a`'s rate.
bool concat_with_silence(const std::string& a, const std::string& b, double silence_s, const std::string& out) {
  if (!glmvoice::test::have_program("sox")) return false;
  std::string cmd = "sox \"" + a + "\" -p pad 0 " + std::to_string(silence_s) + " | sox - \"" + b + "\" \"" +
                    out + "\" pad 0 " + std::to_string(silence_s) + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

std::vector<int> int_array(const GstStructure* s, const char* field) {
  std::vector<int> out;
  const GValue* value = gst_structure_get_value(s, field);
  if (value == nullptr) return out;
  if (GST_VALUE_HOLDS_ARRAY(value)) {
    for (guint i = 0; i < gst_value_array_get_size(value); ++i)
      out.push_back(g_value_get_int(gst_value_array_get_value(value, i)));
  } else if (GST_VALUE_HOLDS_LIST(value)) {
    for (guint i = 0; i < gst_value_list_get_size(value); ++i)
      out.push_back(g_value_get_int(gst_value_list_get_value(value, i)));
  }
  return out;
}

TEST(ConverseFile, test_two_endpointed_turns_use_history) {
  const std::string dir = glmvoice::test::scratch_dir("two-turns");
  const std::string q1 = dir + "/q1.wav", q2 = dir + "/q2.wav", both = dir + "/both.wav";
  if (!glmvoice::test::make_speech_wav(q1, "en", "Hello, who are you?") ||
      !glmvoice::test::make_speech_wav(q2, "en", "Tell me a story.")) {
    GTEST_SKIP() << "espeak-ng not available";
  }
  if (!concat_with_silence(q1, q2, 1.5, both)) GTEST_SKIP() << "sox not available";
  PipelineResult result;
  glmvoice::test::run_pipeline(
      converse_line(tiny_models(), both, dir + "/answer.wav", "endpoint-silence-ms=600", 40), 300, result,
      "dec.sink");
  ASSERT_TRUE(result.errors.empty()) << result.errors.front();
  ASSERT_TRUE(result.reached_eos);
  ASSERT_EQ(result.turn_messages.size(), 2u) << "two utterances separated by silence -> two answers";
  EXPECT_EQ(result.end_of_responses, 2);
  const auto input1 = int_array(result.turn_messages[0], "input-ids");
  const auto completion1 = int_array(result.turn_messages[0], "completion-ids");
  const auto input2 = int_array(result.turn_messages[1], "input-ids");
  ASSERT_FALSE(input1.empty());
  ASSERT_GT(input2.size(), input1.size() + completion1.size() - 1);
  // The second prompt starts with the whole first turn: its prompt, then its answer.
  EXPECT_TRUE(std::equal(input1.begin(), input1.end(), input2.begin())) << "history not used";
}

TEST(ConverseFile, test_bad_model_path_posts_one_error) {
  const std::string dir = glmvoice::test::scratch_dir("bad-model");
  const std::string question = dir + "/question.wav";
  if (!glmvoice::test::make_speech_wav(question, "en", "Hello")) GTEST_SKIP() << "espeak-ng not available";
  Models bad = tiny_models();
  bad.llm = dir + "/no-such-model";
  PipelineResult result;
  glmvoice::test::run_pipeline(converse_line(bad, question, dir + "/answer.wav"), 60, result);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].find("no-such-model"), std::string::npos) << result.errors[0];
  EXPECT_FALSE(result.timed_out);
}

// Brings a pipeline that answers with the never-ending tiny-loop LLM to the middle of
// generation, then interrupts it `times` times; each interruption must return within 1 s.
void interrupt_mid_generation(bool flush_seek, int times) {
  const std::string dir = glmvoice::test::scratch_dir("interrupt");
  const std::string question = dir + "/question.wav";
  if (!glmvoice::test::make_speech_wav(question, "en", "Keep talking.")) GTEST_SKIP() << "espeak-ng not available";
  const std::string loop_llm = glmvoice::test::tiny_model_dir("llm", "tiny-loop");
  const Models& m = tiny_models();
  const std::string line = "filesrc location=\"" + question + "\" ! decodebin ! audioconvert ! audioresample ! "
                           "glmvoicetokenize model-path=\"" + m.tokenizer + "\" ! glmvoicellm name=llm model-path=\"" +
                           loop_llm + "\" max-new-tokens=100000 ! fakesink llm.text_src ! appsink name=text "
                           "sync=false max-buffers=1 drop=true";
  for (int i = 0; i < times; ++i) {
    GError* error = nullptr;
    GstElement* pipeline = gst_parse_launch(line.c_str(), &error);
    ASSERT_EQ(error, nullptr) << error->message;
    GstElement* sink = gst_bin_get_by_name(GST_BIN(pipeline), "text");
    ASSERT_NE(gst_element_set_state(pipeline, GST_STATE_PLAYING), GST_STATE_CHANGE_FAILURE);
    // Generation is running once the answer's text starts to arrive.
    GstSample* sample = nullptr;
    g_object_get(sink, "last-sample", &sample, NULL);
    for (int wait = 0; wait < 600 && sample == nullptr; ++wait) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      g_object_get(sink, "last-sample", &sample, NULL);
    }
    ASSERT_NE(sample, nullptr) << "generation did not start";
    gst_sample_unref(sample);
    const auto start = std::chrono::steady_clock::now();
    if (flush_seek) {
      EXPECT_TRUE(gst_element_seek_simple(pipeline, GST_FORMAT_TIME,
                                          static_cast<GstSeekFlags>(GST_SEEK_FLAG_FLUSH), 0));
    }
    gst_element_set_state(pipeline, GST_STATE_NULL);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 1.0) << "interruption " << i << " took " << seconds << " s";
    gst_object_unref(sink);
    gst_object_unref(pipeline);
  }
}

TEST(Interrupt, test_null_mid_generation_returns_promptly_50x) { interrupt_mid_generation(false, 50); }
TEST(Interrupt, test_flush_seek_mid_generation_returns_promptly) { interrupt_mid_generation(true, 10); }

// RTP loopback: sender (WAV -> Opus/RTP -> udp) -> bridge (pipelines/rtp-bridge.sh's line) ->
// receiver (udp -> Opus -> WAV). The answer must arrive and decode.
TEST(RtpBridge, test_loopback_answer_arrives) {
  const Models& m = tiny_models();
  const std::string dir = glmvoice::test::scratch_dir("rtp");
  const std::string spoken = dir + "/spoken.wav", question = dir + "/question.wav";
  if (!glmvoice::test::make_speech_wav(spoken, "en", "Hello, can you hear me?")) GTEST_SKIP() << "espeak-ng not available";
  if (!glmvoice::test::have_program("sox")) GTEST_SKIP() << "sox not available";
  // Trailing silence lets the bridge's endpointing end the turn (a live call never sends EOS).
  ASSERT_EQ(std::system(("sox \"" + spoken + "\" \"" + question + "\" pad 0 2 >/dev/null 2>&1").c_str()), 0);
  const int in_port = 25000 + (::getpid() % 2000) * 2, out_port = in_port + 1;
  const std::string caps = "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=96";
  GstElement* receiver = gst_parse_launch(
      ("udpsrc port=" + std::to_string(out_port) + " caps=\"" + caps + "\" ! rtpjitterbuffer latency=50 ! "
       "rtpopusdepay ! opusdec ! audioconvert ! appsink name=out sync=false").c_str(), nullptr);
  GstElement* bridge = gst_parse_launch(
      ("udpsrc port=" + std::to_string(in_port) + " caps=\"" + caps + "\" ! rtpjitterbuffer latency=100 ! "
       "rtpopusdepay ! opusdec ! audioconvert ! audioresample ! glmvoicetokenize model-path=\"" + m.tokenizer +
       "\" endpoint-silence-ms=600 ! glmvoicellm model-path=\"" + m.llm + "\" max-new-tokens=80 ! "
       "glmvoicedecode model-path=\"" + m.decoder + "\" ! audioconvert ! audioresample ! opusenc ! "
       "rtpopuspay pt=96 ! udpsink host=127.0.0.1 port=" + std::to_string(out_port)).c_str(), nullptr);
  GstElement* sender = gst_parse_launch(
      ("filesrc location=\"" + question + "\" ! decodebin ! audioconvert ! audioresample ! opusenc ! "
       "rtpopuspay pt=96 ! udpsink host=127.0.0.1 port=" + std::to_string(in_port)).c_str(), nullptr);
  ASSERT_TRUE(receiver && bridge && sender);
  gst_element_set_state(receiver, GST_STATE_PLAYING);
  gst_element_set_state(bridge, GST_STATE_PLAYING);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  gst_element_set_state(sender, GST_STATE_PLAYING);
  GstElement* out = gst_bin_get_by_name(GST_BIN(receiver), "out");
  int64_t received = 0;
  for (int wait = 0; wait < 1200 && received < 2000; ++wait) {  // up to 120 s
    GstSample* sample = nullptr;
    g_signal_emit_by_name(out, "try-pull-sample", static_cast<GstClockTime>(100 * GST_MSECOND), &sample);
    if (sample != nullptr) {
      received += static_cast<int64_t>(gst_buffer_get_size(gst_sample_get_buffer(sample)));
      gst_sample_unref(sample);
    }
    GstMessage* error = gst_bus_pop_filtered(GST_ELEMENT_BUS(bridge), GST_MESSAGE_ERROR);
    if (error != nullptr) {
      gst_message_unref(error);
      ADD_FAILURE() << "the bridge posted an error";
      break;
    }
  }
  EXPECT_GE(received, 2000) << "no answer audio came back over RTP";
  gst_object_unref(out);
  for (GstElement* p : {sender, bridge, receiver}) {
    gst_element_set_state(p, GST_STATE_NULL);
    gst_object_unref(p);
  }
}

// Every element keeps working next to standard elements: the tokenizer fed by audiotestsrc
// into a filesink (a token file), and that file read back by filesrc into the decoder.
TEST(StandardElements, test_token_file_round_trip_through_the_decoder) {
  const Models& m = tiny_models();
  const std::string dir = glmvoice::test::scratch_dir("token-file");
  const std::string tokens = dir + "/tokens.bin", answer = dir + "/answer.wav";
  PipelineResult write;
  glmvoice::test::run_pipeline("audiotestsrc num-buffers=40 samplesperbuffer=1600 wave=pink-noise ! "
                               "audio/x-raw,rate=16000,channels=1,format=F32LE ! glmvoicetokenize model-path=\"" +
                                   m.tokenizer + "\" ! filesink location=\"" + tokens + "\"",
                               60, write);
  ASSERT_TRUE(write.errors.empty()) << write.errors.front();
  ASSERT_TRUE(write.reached_eos);
  const int64_t n_tokens = static_cast<int64_t>(fs::file_size(tokens) / 4);
  EXPECT_EQ(n_tokens, 50) << "4 s of audio at 12.5 tokens/s";
  const int64_t codebook = glmvoice::io::JsonConfig::load(m.tokenizer + "/config.json").get_int("quantize_vocab_size");
  PipelineResult read;
  glmvoice::test::run_pipeline("filesrc location=\"" + tokens + "\" ! audio/x-glm-speech-tokens,framerate=25/2,"
                               "codebook-size=" + std::to_string(codebook) + " ! glmvoicedecode model-path=\"" + m.decoder +
                                   "\" ! audioconvert ! wavenc ! filesink location=\"" + answer + "\"",
                               120, read);
  ASSERT_TRUE(read.errors.empty()) << read.errors.front();
  ASSERT_TRUE(read.reached_eos);
  EXPECT_EQ(glmvoice::test::wav_samples(answer), streamed_samples(n_tokens));
}

TEST(ModelSharing, test_two_pipelines_load_each_model_once) {
  const Models& m = tiny_models();
  const std::string dir = glmvoice::test::scratch_dir("sharing");
  const std::string question = dir + "/question.wav";
  if (!glmvoice::test::make_speech_wav(question, "en", "Hello")) GTEST_SKIP() << "espeak-ng not available";
  auto options = [](const std::string& path) {
    glmvoice::ModelOptions o;
    o.path = path;
    o.device = glmvoice::runtime::parse_device("");
    o.dtype = c10::kFloat;
    return o;
  };
  // Counts are per process; earlier tests may have loaded (and released) the same models.
  const int before[3] = {glmvoice::gst::model_cache_load_count("tokenizer", options(m.tokenizer)),
                         glmvoice::gst::model_cache_load_count("llm", options(m.llm)),
                         glmvoice::gst::model_cache_load_count("decoder", options(m.decoder))};
  GstElement* pipelines[2];
  for (auto& p : pipelines) {
    p = gst_parse_launch(converse_line(m, question, dir + "/a.wav").c_str(), nullptr);
    ASSERT_NE(p, nullptr);
    ASSERT_NE(gst_element_set_state(p, GST_STATE_READY), GST_STATE_CHANGE_FAILURE);
  }
  EXPECT_EQ(glmvoice::gst::model_cache_load_count("tokenizer", options(m.tokenizer)) - before[0], 1);
  EXPECT_EQ(glmvoice::gst::model_cache_load_count("llm", options(m.llm)) - before[1], 1);
  EXPECT_EQ(glmvoice::gst::model_cache_load_count("decoder", options(m.decoder)) - before[2], 1);
  for (auto* p : pipelines) {
    gst_element_set_state(p, GST_STATE_NULL);
    gst_object_unref(p);
  }
}

}  // namespace
