#include "pipeline_runner.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "glmvoice_events.h"

namespace glmvoice::test {

PipelineResult::~PipelineResult() {
  for (GstStructure* s : turn_messages) gst_structure_free(s);
}

namespace {

GstPadProbeReturn on_probe(GstPad*, GstPadProbeInfo* info, gpointer user_data) {
  auto* result = static_cast<PipelineResult*>(user_data);
  if (info->type & GST_PAD_PROBE_TYPE_BUFFER) {
    GstBuffer* buffer = GST_PAD_PROBE_INFO_BUFFER(info);
    GstMapInfo map;
    if (gst_buffer_map(buffer, &map, GST_MAP_READ)) {
      for (gsize i = 0; i + 4 <= map.size; i += 4) {
        guint32 v;
        std::memcpy(&v, map.data + i, 4);
        result->probed_tokens.push_back(static_cast<int32_t>(GUINT32_FROM_LE(v)));
      }
      gst_buffer_unmap(buffer, &map);
    }
  } else if (info->type & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM) {
    if (gst_glm_voice_event_is_end_of_response(GST_PAD_PROBE_INFO_EVENT(info))) {
      result->end_of_responses += 1;
    }
  }
  return GST_PAD_PROBE_OK;
}

}  // namespace

void run_pipeline(const std::string& description, double timeout_s, PipelineResult& result,
                  const std::string& probe) {
  GError* error = nullptr;
  GstElement* pipeline = gst_parse_launch(description.c_str(), &error);
  if (error != nullptr) {
    result.errors.push_back(std::string("parse: ") + error->message);
    g_clear_error(&error);
    if (pipeline) gst_object_unref(pipeline);
    return;
  }
  if (!probe.empty()) {
    auto dot = probe.find('.');
    GstElement* element = gst_bin_get_by_name(GST_BIN(pipeline), probe.substr(0, dot).c_str());
    if (element != nullptr) {
      GstPad* pad = gst_element_get_static_pad(element, probe.substr(dot + 1).c_str());
      if (pad != nullptr) {
        gst_pad_add_probe(pad,
                          static_cast<GstPadProbeType>(GST_PAD_PROBE_TYPE_BUFFER |
                                                       GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM),
                          on_probe, &result, nullptr);
        gst_object_unref(pad);
      }
      gst_object_unref(element);
    }
  }
  gst_element_set_state(pipeline, GST_STATE_PLAYING);
  GstBus* bus = gst_element_get_bus(pipeline);
  const gint64 deadline = g_get_monotonic_time() + static_cast<gint64>(timeout_s * G_USEC_PER_SEC);
  bool done = false;
  while (!done) {
    gint64 left = deadline - g_get_monotonic_time();
    if (left <= 0) {
      result.timed_out = true;
      break;
    }
    GstMessage* msg = gst_bus_timed_pop(bus, left * GST_USECOND);
    if (msg == nullptr) continue;
    switch (GST_MESSAGE_TYPE(msg)) {
      case GST_MESSAGE_EOS:
        result.reached_eos = true;
        done = true;
        break;
      case GST_MESSAGE_ERROR: {
        GError* err = nullptr;
        gchar* debug = nullptr;
        gst_message_parse_error(msg, &err, &debug);
        result.errors.push_back(std::string(GST_OBJECT_NAME(GST_MESSAGE_SRC(msg))) + ": " +
                                err->message + " (" + (debug ? debug : "") + ")");
        g_clear_error(&err);
        g_free(debug);
        done = true;
        break;
      }
      case GST_MESSAGE_WARNING: {
        GError* err = nullptr;
        gst_message_parse_warning(msg, &err, nullptr);
        result.warnings.push_back(std::string(GST_OBJECT_NAME(GST_MESSAGE_SRC(msg))) + ": " + err->message);
        g_clear_error(&err);
        break;
      }
      case GST_MESSAGE_ELEMENT: {
        const GstStructure* s = gst_message_get_structure(msg);
        if (s != nullptr) {
          gchar* text = gst_structure_to_string(s);
          result.element_messages.emplace_back(text);
          g_free(text);
          if (gst_structure_has_name(s, "glmvoicellm-turn")) {
            result.turn_messages.push_back(gst_structure_copy(s));
          }
        }
        break;
      }
      default:
        break;
    }
    gst_message_unref(msg);
  }
  gst_object_unref(bus);
  gst_element_set_state(pipeline, GST_STATE_NULL);
  gst_object_unref(pipeline);
}

bool have_program(const std::string& name) {
  gchar* path = g_find_program_in_path(name.c_str());
  bool found = path != nullptr;
  g_free(path);
  return found;
}

bool make_speech_wav(const std::string& path, const std::string& voice, const std::string& text) {
  if (!have_program("espeak-ng")) return false;
  gchar* quoted_path = g_shell_quote(path.c_str());
  gchar* quoted_text = g_shell_quote(text.c_str());
  gchar* quoted_voice = g_shell_quote(voice.c_str());
  std::string command = std::string("espeak-ng -v ") + quoted_voice + " -w " + quoted_path + " " +
                        quoted_text + " >/dev/null 2>&1";
  g_free(quoted_path);
  g_free(quoted_text);
  g_free(quoted_voice);
  return std::system(command.c_str()) == 0;
}

int64_t wav_samples(const std::string& path, int* rate, int* channels) {
  std::ifstream in(path, std::ios::binary);
  char riff[12];
  if (!in.read(riff, 12) || std::memcmp(riff, "RIFF", 4) != 0 || std::memcmp(riff + 8, "WAVE", 4) != 0) {
    return -1;
  }
  int block_align = 0;
  while (in) {
    char header[8];
    if (!in.read(header, 8)) return -1;
    uint32_t size;
    std::memcpy(&size, header + 4, 4);
    if (std::memcmp(header, "fmt ", 4) == 0) {
      std::vector<char> fmt(size);
      if (!in.read(fmt.data(), size) || size < 16) return -1;
      uint16_t ch, align;
      uint32_t sr;
      std::memcpy(&ch, fmt.data() + 2, 2);
      std::memcpy(&sr, fmt.data() + 4, 4);
      std::memcpy(&align, fmt.data() + 12, 2);
      if (rate) *rate = static_cast<int>(sr);
      if (channels) *channels = ch;
      block_align = align;
    } else if (std::memcmp(header, "data", 4) == 0) {
      return block_align > 0 ? static_cast<int64_t>(size) / block_align : -1;
    } else {
      in.seekg(size + (size & 1), std::ios::cur);
    }
  }
  return -1;
}

}  // namespace glmvoice::test
