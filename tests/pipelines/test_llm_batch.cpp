// Many calls on one model (issue 11): 8 pipelines in one process, each with its own
// glmvoicellm on the same tiny model, run at once through gst_parse_launch. Their elements
// share one scheduler (batched steps); every pipeline gets its own answer, the same as the
// solo greedy answer computed with lib/llm; one element flushed mid-answer disturbs nobody.
#include <gst/gst.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "llm/chat.h"
#include "llm/chatglm_model.h"
#include "test_support.h"
#include "../elements/element_test_util.h"

namespace fs = std::filesystem;

namespace {

const auto* const kGstEnv = ::testing::AddGlobalTestEnvironment(new glmvoice::test::GstEnvironment);

constexpr double kWatchdogS = 240;  // generous: the build box is shared; a hang never ends
constexpr int kPipelines = 8;
constexpr int kMaxNew = 40;

std::string token_file(int i, const std::vector<int64_t>& tokens) {
  const fs::path dir = fs::temp_directory_path() / ("glmvoice-llm-batch-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / ("q" + std::to_string(i) + ".tok")).string();
  std::string bytes;
  for (int64_t t : tokens) {
    const guint32 le = GUINT32_TO_LE(static_cast<guint32>(t));
    bytes.append(reinterpret_cast<const char*>(&le), 4);
  }
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// Question i: its own speech tokens (lengths differ).
std::vector<int64_t> question(int i) {
  std::vector<int64_t> q;
  for (int t = 0; t < 6 + 5 * i; ++t) q.push_back((t * 5 + i * 17 + 3) % 64);
  return q;
}

// The solo greedy answer of lib/llm (the element's prompt, history policy and stop rules).
std::vector<int64_t> solo_answer(const std::shared_ptr<const glmvoice::llm::LlmModel>& model,
                                 const std::vector<int64_t>& q) {
  glmvoice::llm::ChatOptions o;
  o.sampling.greedy = true;
  o.max_new_tokens = kMaxNew;
  glmvoice::llm::ChatState chat(model, o);
  chat.begin_turn(glmvoice::llm::UserTurn::speech(q));
  while (chat.step().kind != glmvoice::llm::ChatEvent::kEnd) {
  }
  return chat.completion_ids();
}

std::vector<int64_t> ids_of(const GstStructure* s, const char* field) {
  std::vector<int64_t> out;
  const GValue* array = gst_structure_get_value(s, field);
  if (array == nullptr) return out;
  for (guint i = 0; i < gst_value_array_get_size(array); ++i) {
    out.push_back(g_value_get_int(gst_value_array_get_value(array, i)));
  }
  return out;
}

struct Call {
  GstElement* pipeline = nullptr;
  GstBus* bus = nullptr;
  bool eos = false, error = false;
  std::vector<int64_t> completion;
  double batch_size = 0;
  int batch_max = 0;
  std::atomic<int> tokens_out{0};
};

GstPadProbeReturn count_buffers(GstPad*, GstPadProbeInfo*, gpointer user_data) {
  ++static_cast<Call*>(user_data)->tokens_out;
  return GST_PAD_PROBE_OK;
}

void drain_bus(Call& c) {
  while (GstMessage* msg = gst_bus_pop(c.bus)) {
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_EOS) c.eos = true;
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ERROR) {
      GError* err = nullptr;
      gst_message_parse_error(msg, &err, nullptr);
      ADD_FAILURE() << GST_OBJECT_NAME(GST_MESSAGE_SRC(msg)) << ": " << err->message;
      g_clear_error(&err);
      c.error = true;
    }
    const GstStructure* s = gst_message_get_structure(msg);
    if (GST_MESSAGE_TYPE(msg) == GST_MESSAGE_ELEMENT && s && gst_structure_has_name(s, "glmvoicellm-turn")) {
      c.completion = ids_of(s, "completion-ids");
      gst_structure_get_double(s, "batch-size", &c.batch_size);
      gst_structure_get_int(s, "batch-size-max", &c.batch_max);
    }
    gst_message_unref(msg);
  }
}

// Runs the 8 calls at once; call `flushed` (or -1) gets FLUSH_START/STOP on its llm sink once it
// has sent 3 tokens (or finished), and is then stopped. Returns after every other call reached EOS.
void run_calls(std::vector<Call>& calls, int flushed) {
  const std::string model_dir = glmvoice::test::tiny_model_dir("llm", "tiny");
  for (int i = 0; i < kPipelines; ++i) {
    const std::string desc = "filesrc location=\"" + token_file(i, question(i)) +
                             "\" ! audio/x-glm-speech-tokens,framerate=25/2,codebook-size=64 ! "
                             "glmvoicellm name=l max-batch=8 temperature=0 max-new-tokens=" +
                             std::to_string(kMaxNew) + " model-path=\"" + model_dir +
                             "\" ! fakesink sync=false  l.text_src ! fakesink sync=false";
    GError* error = nullptr;
    calls[i].pipeline = gst_parse_launch(desc.c_str(), &error);
    ASSERT_EQ(error, nullptr) << error->message;
    calls[i].bus = gst_element_get_bus(calls[i].pipeline);
    GstElement* llm = gst_bin_get_by_name(GST_BIN(calls[i].pipeline), "l");
    GstPad* src = gst_element_get_static_pad(llm, "src");
    gst_pad_add_probe(src, GST_PAD_PROBE_TYPE_BUFFER, count_buffers, &calls[i], nullptr);
    gst_object_unref(src);
    gst_object_unref(llm);
  }
  for (auto& c : calls) gst_element_set_state(c.pipeline, GST_STATE_PLAYING);
  const gint64 deadline = g_get_monotonic_time() + static_cast<gint64>(kWatchdogS * G_USEC_PER_SEC);
  bool flush_done = flushed < 0;
  for (;;) {
    bool all = true;
    for (int i = 0; i < kPipelines; ++i) {
      drain_bus(calls[i]);
      if (i != flushed && !calls[i].eos && !calls[i].error) all = false;
    }
    if (!flush_done && (calls[flushed].tokens_out.load() >= 3 || calls[flushed].eos)) {
      GstElement* llm = gst_bin_get_by_name(GST_BIN(calls[flushed].pipeline), "l");
      GstPad* sink = gst_element_get_static_pad(llm, "sink");
      gst_pad_send_event(sink, gst_event_new_flush_start());
      gst_pad_send_event(sink, gst_event_new_flush_stop(TRUE));
      gst_object_unref(sink);
      gst_object_unref(llm);
      gst_element_set_state(calls[flushed].pipeline, GST_STATE_NULL);  // leaves the batch
      flush_done = true;
    }
    if (all && flush_done) break;
    ASSERT_LT(g_get_monotonic_time(), deadline) << "watchdog: the calls did not finish";
    g_usleep(2000);
  }
  for (auto& c : calls) {
    gst_element_set_state(c.pipeline, GST_STATE_NULL);
    gst_object_unref(c.bus);
    gst_object_unref(c.pipeline);
  }
}

}  // namespace

TEST(LlmBatch, test_eight_pipelines_get_their_solo_answers) {
  glmvoice::ModelOptions options;
  options.path = glmvoice::test::tiny_model_dir("llm", "tiny");
  auto model = glmvoice::llm::LlmModel::load(options);
  std::vector<Call> calls(kPipelines);
  run_calls(calls, -1);
  int batch_max = 0;
  for (int i = 0; i < kPipelines; ++i) {
    EXPECT_TRUE(calls[i].eos) << "call " << i;
    EXPECT_EQ(calls[i].completion, solo_answer(model, question(i))) << "call " << i;
    EXPECT_GE(calls[i].batch_size, 1.0) << "call " << i << ": no batch-size in the turn message";
    batch_max = std::max(batch_max, calls[i].batch_max);
  }
  std::printf("8 calls: largest batch %d\n", batch_max);
  EXPECT_GT(batch_max, 1) << "the calls never shared a step";
}

TEST(LlmBatch, test_one_flushing_element_does_not_disturb_the_others) {
  glmvoice::ModelOptions options;
  options.path = glmvoice::test::tiny_model_dir("llm", "tiny");
  auto model = glmvoice::llm::LlmModel::load(options);
  std::vector<Call> calls(kPipelines);
  const int flushed = 2;
  run_calls(calls, flushed);
  for (int i = 0; i < kPipelines; ++i) {
    if (i == flushed) continue;
    EXPECT_TRUE(calls[i].eos) << "call " << i;
    EXPECT_EQ(calls[i].completion, solo_answer(model, question(i))) << "call " << i;
  }
}
