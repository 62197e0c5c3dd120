#include "session.h"

#include <gst/app/gstappsink.h>
#include <gst/app/gstappsrc.h>
#include <gst/sdp/sdp.h>
#define GST_USE_UNSTABLE_API  // webrtc headers warn without it
#include <gst/webrtc/webrtc.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "gst_json.h"
#include "main_thread.h"
#include "model_holder.h"

namespace glmvoice::web {
namespace {

std::atomic<int> g_pipelines_alive{0};
std::atomic<int> g_pipelines_freed{0};

// Names of the elements' custom events and messages (README: "Custom serialized downstream
// events", "Bus messages"), matched by name as any application would.
constexpr const char* kEndOfTurn = "GstGlmVoiceEndOfTurn";
constexpr const char* kEndOfResponse = "GstGlmVoiceEndOfResponse";
constexpr const char* kTurnMessage = "glmvoicellm-turn";

constexpr int kQuestionRate = 16000;               // glmvoicetokenize's input rate
constexpr size_t kQuestionMaxSamples = 30 * kQuestionRate;  // the page shows at most 30 s
constexpr size_t kMaxTypedBytes = 4000;

// The Opus/RTP format both directions use (RFC 7587 §7: "opus/48000/2" whatever the channels;
// browsers refuse an Opus line without the /2).
constexpr const char* kRtpCaps =
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=96,clock-rate=48000,encoding-params=(string)2";

bool event_is(GstEvent* event, const char* name) {
  const GstStructure* s = gst_event_get_structure(event);
  return s && gst_structure_has_name(s, name);
}

void log_line(int id, const std::string& text) {
  std::fprintf(stderr, "glmvoice-web: session %d: %s\n", id, text.c_str());
}

std::string base64_pcm16(const std::vector<float>& samples) {
  std::vector<int16_t> pcm(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const float v = std::fmax(-1.0f, std::fmin(1.0f, samples[i]));
    pcm[i] = static_cast<int16_t>(std::lrint(v * 32767.0f));
  }
  gchar* b64 = g_base64_encode(reinterpret_cast<const guchar*>(pcm.data()), pcm.size() * sizeof(int16_t));
  std::string out = b64;
  g_free(b64);
  return out;
}

}  // namespace

struct Session::Weak {
  std::weak_ptr<Session> session;
  static gpointer make(const std::shared_ptr<Session>& s) { return new Weak{s}; }
  static void free(gpointer data) { delete static_cast<Weak*>(data); }
  static void free_closure(gpointer data, GClosure*) { delete static_cast<Weak*>(data); }
  static std::shared_ptr<Session> lock(gpointer data) { return static_cast<Weak*>(data)->session.lock(); }
};

int Session::pipelines_alive() { return g_pipelines_alive.load(); }
int Session::pipelines_freed() { return g_pipelines_freed.load(); }

Session::Session(int id, ModelSet models, SessionOptions options, Send send, Closed closed)
    : id_(id), models_(std::move(models)), options_(options), send_(std::move(send)), closed_(std::move(closed)) {}

Session::~Session() = default;

void Session::handle(const nlohmann::json& message) {
  if (!message.is_object() || !message.contains("type") || !message["type"].is_string())
    throw std::invalid_argument("a message must be a JSON object with a string \"type\"");
  const std::string type = message["type"];
  if (closed_flag_) return;
  if (type == "start") {
    if (pipeline_) throw std::invalid_argument("start: the session is already started");
    start();
    return;
  }
  if (type == "controls") {
    if (!message.contains("controls") || !message["controls"].is_object())
      throw std::invalid_argument("controls: expected an object \"controls\"");
    set_controls(message["controls"]);
    return;
  }
  if (!pipeline_) throw std::invalid_argument(type + ": send \"start\" first");
  if (type == "answer") {
    if (!message.contains("sdp") || !message["sdp"].is_string())
      throw std::invalid_argument("answer: expected a string \"sdp\"");
    set_remote_answer(message["sdp"]);
  } else if (type == "ice") {
    add_ice_candidate(message);
  } else if (type == "text") {
    if (!message.contains("text") || !message["text"].is_string())
      throw std::invalid_argument("text: expected a string \"text\"");
    push_text(message["text"]);
  } else if (type == "reset") {
    g_signal_emit_by_name(llm_, "reset-history");
    log_line(id_, "history reset");
    emit({{"type", "reset-done"}});
  } else {
    throw std::invalid_argument("unknown message type \"" + type + "\"");
  }
}

void Session::start() {
  const std::string description =
      "webrtcbin name=webrtc bundle-policy=max-bundle "
      "rtpopusdepay name=depay ! opusdec plc=true ! audioconvert ! audioresample "
      "! audio/x-raw,format=F32LE,rate=16000,channels=1 ! valve name=gate drop=false "
      "! glmvoicetokenize name=tokenizer" + element_model_properties(models_, models_.tokenizer_dir) +
      " endpoint-silence-ms=" + std::to_string(options_.endpoint_silence_ms) +
      " silence-threshold-db=" + std::to_string(options_.silence_threshold_db) +
      " ! glmvoicellm name=llm" + element_model_properties(models_, models_.llm_dir) +
      " max-new-tokens=" + std::to_string(options_.max_new_tokens) +
      " ! glmvoicedecode name=decoder" + element_model_properties(models_, models_.decoder_dir) +
      // The decoder runs ahead of real time: the RTP packets are paced (pacer.h) on pay's src.
      " ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1 "
      "! opusenc ! rtpopuspay name=pay pt=96 ! " + std::string(kRtpCaps) + " ! queue ! webrtc. "
      "appsrc name=textin is-live=true format=time do-timestamp=true caps=text/x-raw,format=utf8 "
      "! llm.text_sink "
      "llm.text_src ! appsink name=textout sync=false async=false";
  GError* error = nullptr;
  GstElement* pipeline = gst_parse_launch(description.c_str(), &error);
  if (!pipeline || error) {
    const std::string what = error ? error->message : "unknown error";
    if (error) g_error_free(error);
    if (pipeline) gst_object_unref(pipeline);
    emit({{"type", "error"}, {"message", "cannot build the pipeline: " + what}});
    close("cannot build the pipeline: " + what);
    return;
  }
  pipeline_ = pipeline;
  g_pipelines_alive++;
  webrtc_ = gst_bin_get_by_name(GST_BIN(pipeline_), "webrtc");
  llm_ = gst_bin_get_by_name(GST_BIN(pipeline_), "llm");
  gate_ = gst_bin_get_by_name(GST_BIN(pipeline_), "gate");
  text_in_ = gst_bin_get_by_name(GST_BIN(pipeline_), "textin");
  // Borrowed: the pipeline keeps them alive.
  for (GstElement* e : {webrtc_, llm_, gate_, text_in_}) gst_object_unref(e);
  if (!options_.ice_address.empty()) {
    GObject* ice = nullptr;
    g_object_get(webrtc_, "ice-agent", &ice, NULL);
    gboolean added = FALSE;
    if (ice) {
      g_signal_emit_by_name(ice, "add-local-ip-address", options_.ice_address.c_str(), &added);
      g_object_unref(ice);
    }
    if (!added) g_warning("session %d: ICE could not be limited to %s", id_, options_.ice_address.c_str());
  }

  // The answer audio is sent and the browser's microphone received on one transceiver.
  GstPad* sink = gst_element_get_static_pad(webrtc_, "sink_0");
  if (sink) {
    GstWebRTCRTPTransceiver* transceiver = nullptr;
    g_object_get(sink, "transceiver", &transceiver, nullptr);
    if (transceiver) {
      GstCaps* caps = gst_caps_from_string(kRtpCaps);
      g_object_set(transceiver, "direction", GST_WEBRTC_RTP_TRANSCEIVER_DIRECTION_SENDRECV,
                   "codec-preferences", caps, nullptr);
      gst_caps_unref(caps);
      gst_object_unref(transceiver);
    }
    gst_object_unref(sink);
  }

  auto self = shared_from_this();
  g_signal_connect_data(webrtc_, "on-ice-candidate",
      G_CALLBACK(+[](GstElement*, guint mline, gchar* candidate, gpointer data) {
        std::string text = candidate ? candidate : "";
        auto weak = static_cast<Weak*>(data)->session;
        run_on_main([weak, mline, text] {
          if (auto s = weak.lock(); s && !s->closed_flag_)
            s->emit({{"type", "ice"}, {"candidate", text}, {"sdpMLineIndex", mline}});
        });
      }), Weak::make(self), &Weak::free_closure, GConnectFlags(0));
  g_signal_connect_data(webrtc_, "notify::ice-connection-state",
      G_CALLBACK(+[](GstElement* webrtc, GParamSpec*, gpointer data) {
        GstWebRTCICEConnectionState state;
        g_object_get(webrtc, "ice-connection-state", &state, nullptr);
        GEnumValue* v = g_enum_get_value(
            G_ENUM_CLASS(g_type_class_peek(GST_TYPE_WEBRTC_ICE_CONNECTION_STATE)), state);
        std::string name = v ? v->value_nick : "?";
        auto weak = static_cast<Weak*>(data)->session;
        run_on_main([weak, name] {
          auto s = weak.lock();
          if (!s || s->closed_flag_) return;
          log_line(s->id_, "ICE " + name);
          s->emit({{"type", "ice-state"}, {"state", name}});
          if (name == "failed") s->close("ICE failed");
        });
      }), Weak::make(self), &Weak::free_closure, GConnectFlags(0));
  // The browser's microphone: link the incoming Opus/RTP stream to the depayloader.
  g_signal_connect_data(webrtc_, "pad-added",
      G_CALLBACK(+[](GstElement* webrtc, GstPad* pad, gpointer data) {
        if (GST_PAD_DIRECTION(pad) != GST_PAD_SRC) return;
        GstElement* pipeline = GST_ELEMENT(gst_element_get_parent(webrtc));
        if (!pipeline) return;
        GstElement* depay = gst_bin_get_by_name(GST_BIN(pipeline), "depay");
        GstPad* depay_sink = depay ? gst_element_get_static_pad(depay, "sink") : nullptr;
        std::string result;
        if (depay_sink && !gst_pad_is_linked(depay_sink)) {
          const GstPadLinkReturn ret = gst_pad_link(pad, depay_sink);
          result = ret == GST_PAD_LINK_OK ? "microphone stream linked"
                                          : std::string("cannot link the microphone stream: ") +
                                                gst_pad_link_get_name(ret);
        } else {
          result = "extra incoming stream ignored";
        }
        if (depay_sink) gst_object_unref(depay_sink);
        if (depay) gst_object_unref(depay);
        gst_object_unref(pipeline);
        auto weak = static_cast<Weak*>(data)->session;
        run_on_main([weak, result] {
          if (auto s = weak.lock()) log_line(s->id_, result);
        });
      }), Weak::make(self), &Weak::free_closure, GConnectFlags(0));

  GstElement* text_out = gst_bin_get_by_name(GST_BIN(pipeline_), "textout");
  GstAppSinkCallbacks callbacks{};
  callbacks.new_sample = +[](GstAppSink* sink, gpointer data) -> GstFlowReturn {
    GstSample* sample = gst_app_sink_pull_sample(sink);
    if (!sample) return GST_FLOW_OK;
    GstBuffer* buffer = gst_sample_get_buffer(sample);
    std::string text;
    GstMapInfo map;
    if (buffer && gst_buffer_map(buffer, &map, GST_MAP_READ)) {
      text.assign(reinterpret_cast<const char*>(map.data), map.size);
      gst_buffer_unmap(buffer, &map);
    }
    gst_sample_unref(sample);
    auto weak = static_cast<Weak*>(data)->session;
    run_on_main([weak, text] {
      if (auto s = weak.lock(); s && !s->closed_flag_) s->emit({{"type", "answer-text"}, {"text", text}});
    });
    return GST_FLOW_OK;
  };
  gst_app_sink_set_callbacks(GST_APP_SINK(text_out), &callbacks, Weak::make(self), &Weak::free);
  gst_object_unref(text_out);

  install_probes();
  if (!pending_controls_.empty()) set_controls(nlohmann::json(pending_controls_));

  GstBus* bus = gst_element_get_bus(pipeline_);
  bus_watch_ = gst_bus_add_watch_full(bus, G_PRIORITY_DEFAULT,
      +[](GstBus*, GstMessage* message, gpointer data) -> gboolean {
        if (auto s = Weak::lock(data)) s->on_bus_message(message);
        return G_SOURCE_CONTINUE;
      }, Weak::make(self), &Weak::free);
  gst_object_unref(bus);

  log_line(id_, "pipeline starting");
  if (gst_element_set_state(pipeline_, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    // The bus carries the element's error (e.g. a model that does not load); say it once.
    emit({{"type", "error"}, {"message", "the pipeline did not start (see the progress and error messages)"}});
    close("the pipeline did not start");
    return;
  }
  GstPromise* promise = gst_promise_new_with_change_func(
      +[](GstPromise* promise, gpointer data) {
        if (auto s = Weak::lock(data)) s->send_offer(promise);
      }, Weak::make(self), &Weak::free);
  // webrtcbin keeps its own reference until it replies, or drops the task at shutdown; ours
  // goes now, so a promise that is never answered is still freed.
  g_signal_emit_by_name(webrtc_, "create-offer", nullptr, promise);
  gst_promise_unref(promise);
}

// webrtcbin's thread.
void Session::send_offer(GstPromise* promise) {
  std::string sdp_text, error;
  if (gst_promise_wait(promise) != GST_PROMISE_RESULT_REPLIED) {
    error = "create-offer: no reply";
  } else {
    const GstStructure* reply = gst_promise_get_reply(promise);
    GstWebRTCSessionDescription* offer = nullptr;
    if (reply) gst_structure_get(reply, "offer", GST_TYPE_WEBRTC_SESSION_DESCRIPTION, &offer, nullptr);
    if (!offer) {
      GError* e = nullptr;
      if (reply) gst_structure_get(reply, "error", G_TYPE_ERROR, &e, nullptr);
      error = std::string("create-offer failed: ") + (e ? e->message : "no offer");
      if (e) g_error_free(e);
    } else {
      // On webrtcbin's thread: the session may be closing on the main thread right now.
      GstElement* webrtc = nullptr;
      {
        std::lock_guard<std::mutex> lock(webrtc_lock_);
        if (webrtc_) webrtc = GST_ELEMENT(gst_object_ref(webrtc_));
      }
      if (webrtc) {
        g_signal_emit_by_name(webrtc, "set-local-description", offer, nullptr);
        // Never the last unref on webrtcbin's own thread (finalizing it joins that thread).
        run_on_main([webrtc] { gst_object_unref(webrtc); });
      }
      gchar* text = gst_sdp_message_as_text(offer->sdp);
      sdp_text = text;
      g_free(text);
      gst_webrtc_session_description_free(offer);
    }
  }
  auto weak = std::weak_ptr<Session>(shared_from_this());
  run_on_main([weak, sdp_text, error] {
    auto s = weak.lock();
    if (!s || s->closed_flag_) return;
    if (!error.empty()) {
      s->emit({{"type", "error"}, {"message", error}});
      s->close(error);
      return;
    }
    log_line(s->id_, "offer sent");
    s->emit({{"type", "offer"}, {"sdp", sdp_text}});
  });
}

void Session::set_remote_answer(const std::string& sdp_text) {
  if (sdp_text.rfind("v=0", 0) != 0) throw std::invalid_argument("answer: the SDP must start with \"v=0\"");
  GstSDPMessage* sdp = nullptr;
  if (gst_sdp_message_new_from_text(sdp_text.c_str(), &sdp) != GST_SDP_OK || !sdp)
    throw std::invalid_argument("answer: unparsable SDP");
  if (gst_sdp_message_medias_len(sdp) == 0) {
    gst_sdp_message_free(sdp);
    throw std::invalid_argument("answer: the SDP has no media section");
  }
  GstWebRTCSessionDescription* answer = gst_webrtc_session_description_new(GST_WEBRTC_SDP_TYPE_ANSWER, sdp);
  GstPromise* promise = gst_promise_new_with_change_func(
      +[](GstPromise* promise, gpointer data) {
        std::string error;
        const GstStructure* reply =
            gst_promise_wait(promise) == GST_PROMISE_RESULT_REPLIED ? gst_promise_get_reply(promise) : nullptr;
        if (reply && gst_structure_has_field(reply, "error")) {
          GError* e = nullptr;
          gst_structure_get(reply, "error", G_TYPE_ERROR, &e, nullptr);
          error = std::string("the browser's answer was refused: ") + (e ? e->message : "?");
          if (e) g_error_free(e);
        }
        auto weak = static_cast<Weak*>(data)->session;
        run_on_main([weak, error] {
          auto s = weak.lock();
          if (!s || s->closed_flag_) return;
          if (error.empty()) {
            log_line(s->id_, "answer accepted");
            return;
          }
          s->emit({{"type", "error"}, {"message", error}});
          s->close(error);
        });
      }, Weak::make(shared_from_this()), &Weak::free);
  g_signal_emit_by_name(webrtc_, "set-remote-description", answer, promise);
  gst_promise_unref(promise);  // webrtcbin holds its own until it replies
  gst_webrtc_session_description_free(answer);
}

void Session::add_ice_candidate(const nlohmann::json& message) {
  if (!message.contains("candidate") || !message["candidate"].is_string())
    throw std::invalid_argument("ice: expected a string \"candidate\"");
  if (!message.contains("sdpMLineIndex") || !message["sdpMLineIndex"].is_number_unsigned() ||
      message["sdpMLineIndex"].get<unsigned>() > 63)
    throw std::invalid_argument("ice: expected an integer \"sdpMLineIndex\" in 0..63");
  const std::string candidate = message["candidate"];
  if (candidate.empty()) return;  // end of candidates
  if (candidate.rfind("candidate:", 0) != 0) throw std::invalid_argument("ice: a candidate starts with \"candidate:\"");
  g_signal_emit_by_name(webrtc_, "add-ice-candidate", message["sdpMLineIndex"].get<guint>(), candidate.c_str());
}

void Session::push_text(const std::string& text) {
  if (text.empty() || text.size() > kMaxTypedBytes)
    throw std::invalid_argument("text: 1 to " + std::to_string(kMaxTypedBytes) + " bytes");
  if (!g_utf8_validate(text.data(), static_cast<gssize>(text.size()), nullptr))
    throw std::invalid_argument("text: not valid UTF-8");
  GstBuffer* buffer = gst_buffer_new_memdup(text.data(), text.size());
  if (gst_app_src_push_buffer(GST_APP_SRC(text_in_), buffer) != GST_FLOW_OK)
    throw std::invalid_argument("text: the pipeline does not take input now");
  log_line(id_, "typed question (" + std::to_string(text.size()) + " bytes)");
}

void Session::set_controls(const nlohmann::json& controls) {
  // Page control -> glmvoicellm property, checked against the element's own ranges so the page
  // gets a reason instead of a GLib warning. Before start they are kept and applied at start.
  static const std::pair<const char*, const char*> kLlmControls[] = {
      {"temperature", "temperature"}, {"top_p", "top-p"}, {"max_new_tokens", "max-new-tokens"},
      {"instruction", "instruction"}, {"barge_in", "barge-in"}};
  GstElementFactory* factory = gst_element_factory_find("glmvoicellm");
  if (!factory) throw std::invalid_argument("controls: the glmvoicellm element is not available");
  gpointer klass = g_type_class_ref(gst_element_factory_get_element_type(factory));
  gst_object_unref(factory);
  std::vector<std::pair<std::string, GValue>> values;  // validated first, applied together
  auto release = [&] {
    for (auto& [name, v] : values) g_value_unset(&v);
    g_type_class_unref(klass);
  };
  try {
    for (auto it = controls.begin(); it != controls.end(); ++it) {
      const std::string& key = it.key();
      const nlohmann::json& value = it.value();
      const std::string where = "controls." + key;
      if (key == "mode") {
        if (!value.is_string() || (value != "speak" && value != "type"))
          throw std::invalid_argument(where + ": \"speak\" or \"type\"");
        continue;
      }
      const char* property = nullptr;
      for (const auto& [name, prop] : kLlmControls)
        if (key == name) property = prop;
      if (!property) throw std::invalid_argument("controls: unknown control \"" + key + "\"");
      GParamSpec* spec = g_object_class_find_property(G_OBJECT_CLASS(klass), property);
      if (!spec) throw std::invalid_argument(std::string("controls: glmvoicellm has no property ") + property);
      GValue v = G_VALUE_INIT;
      if (G_IS_PARAM_SPEC_DOUBLE(spec)) {
        auto* d = G_PARAM_SPEC_DOUBLE(spec);
        if (!value.is_number() || value.get<double>() < d->minimum || value.get<double>() > d->maximum)
          throw std::invalid_argument(where + ": a number in [" + std::to_string(d->minimum) + ", " +
                                      std::to_string(d->maximum) + "]");
        g_value_init(&v, G_TYPE_DOUBLE);
        g_value_set_double(&v, value.get<double>());
      } else if (G_IS_PARAM_SPEC_INT(spec)) {
        auto* i = G_PARAM_SPEC_INT(spec);
        if (!value.is_number_integer() || value.get<int64_t>() < i->minimum || value.get<int64_t>() > i->maximum)
          throw std::invalid_argument(where + ": an integer in [" + std::to_string(i->minimum) + ", " +
                                      std::to_string(i->maximum) + "]");
        g_value_init(&v, G_TYPE_INT);
        g_value_set_int(&v, static_cast<int>(value.get<int64_t>()));
      } else if (G_IS_PARAM_SPEC_BOOLEAN(spec)) {
        if (!value.is_boolean()) throw std::invalid_argument(where + ": true or false");
        g_value_init(&v, G_TYPE_BOOLEAN);
        g_value_set_boolean(&v, value.get<bool>());
      } else if (G_IS_PARAM_SPEC_STRING(spec)) {
        if (!value.is_string() || value.get<std::string>().size() > kMaxTypedBytes ||
            !g_utf8_validate(value.get<std::string>().c_str(), -1, nullptr))
          throw std::invalid_argument(where + ": a UTF-8 string of at most " + std::to_string(kMaxTypedBytes) + " bytes");
        g_value_init(&v, G_TYPE_STRING);
        g_value_set_string(&v, value.get<std::string>().c_str());
      } else {
        throw std::invalid_argument(where + ": unsupported property type");
      }
      values.emplace_back(property, v);
    }
  } catch (...) {
    release();
    throw;
  }
  for (auto it = controls.begin(); it != controls.end(); ++it) pending_controls_[it.key()] = it.value();
  if (pipeline_) {
    if (controls.contains("mode")) g_object_set(gate_, "drop", controls["mode"] == "type", nullptr);
    for (auto& [name, v] : values) g_object_set_property(G_OBJECT(llm_), name.c_str(), &v);
  }
  release();
}

void Session::install_probes() {
  auto self = shared_from_this();
  GstElement* tokenizer = gst_bin_get_by_name(GST_BIN(pipeline_), "tokenizer");
  GstPad* tok_sink = gst_element_get_static_pad(tokenizer, "sink");
  GstPad* tok_src = gst_element_get_static_pad(tokenizer, "src");
  // The question's audio, as the tokenizer hears it.
  gst_pad_add_probe(tok_sink, GST_PAD_PROBE_TYPE_BUFFER,
      +[](GstPad*, GstPadProbeInfo* info, gpointer data) -> GstPadProbeReturn {
        if (auto s = Weak::lock(data)) s->capture_question(GST_PAD_PROBE_INFO_BUFFER(info));
        return GST_PAD_PROBE_OK;
      }, Weak::make(self), &Weak::free);
  // end-of-turn out of the tokenizer: the question is complete.
  gst_pad_add_probe(tok_src, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM,
      +[](GstPad*, GstPadProbeInfo* info, gpointer data) -> GstPadProbeReturn {
        if (!event_is(GST_PAD_PROBE_INFO_EVENT(info), kEndOfTurn)) return GST_PAD_PROBE_OK;
        auto s = Weak::lock(data);
        if (!s) return GST_PAD_PROBE_OK;
        std::vector<float> question = s->take_question();
        const double seconds = static_cast<double>(question.size()) / kQuestionRate;
        std::string audio = base64_pcm16(question);
        auto weak = std::weak_ptr<Session>(s);
        run_on_main([weak, seconds, audio] {
          auto s = weak.lock();
          if (!s || s->closed_flag_) return;
          char buf[64];
          std::snprintf(buf, sizeof buf, "end of spoken turn (%.2f s)", seconds);
          log_line(s->id_, buf);
          s->emit({{"type", "user-turn"}, {"mode", "speech"}, {"rate", kQuestionRate}, {"pcm16", audio}});
        });
        return GST_PAD_PROBE_OK;
      }, Weak::make(self), &Weak::free);
  gst_object_unref(tok_sink);
  gst_object_unref(tok_src);
  gst_object_unref(tokenizer);

  // The answer's end: end-of-response out of the decoder (the encoder would hold that event
  // back until more audio comes).
  GstElement* decoder = gst_bin_get_by_name(GST_BIN(pipeline_), "decoder");
  GstPad* decoder_src = gst_element_get_static_pad(decoder, "src");
  gst_pad_add_probe(decoder_src, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM,
      +[](GstPad*, GstPadProbeInfo* info, gpointer data) -> GstPadProbeReturn {
        if (auto s = Weak::lock(data)) s->on_decoded(info);
        return GST_PAD_PROBE_OK;
      }, Weak::make(self), &Weak::free);
  gst_object_unref(decoder_src);
  gst_object_unref(decoder);
  // The answer as RTP packets: paced to real time; the first packet and the one reaching the
  // decoded end bracket what the browser receives of this answer.
  GstElement* pay = gst_bin_get_by_name(GST_BIN(pipeline_), "pay");
  GstPad* pay_src = gst_element_get_static_pad(pay, "src");
  gst_pad_add_probe(pay_src, GST_PAD_PROBE_TYPE_BUFFER,
      +[](GstPad*, GstPadProbeInfo* info, gpointer data) -> GstPadProbeReturn {
        if (auto s = Weak::lock(data)) s->on_packet(GST_PAD_PROBE_INFO_BUFFER(info));
        return GST_PAD_PROBE_OK;
      }, Weak::make(self), &Weak::free);
  gst_object_unref(pay_src);
  gst_object_unref(pay);

  // The answer text ends with end-of-response on text_src too.
  GstElement* text_out = gst_bin_get_by_name(GST_BIN(pipeline_), "textout");
  GstPad* text_sink = gst_element_get_static_pad(text_out, "sink");
  gst_pad_add_probe(text_sink, GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM,
      +[](GstPad*, GstPadProbeInfo* info, gpointer data) -> GstPadProbeReturn {
        GstEvent* e = GST_PAD_PROBE_INFO_EVENT(info);
        if (!event_is(e, kEndOfResponse)) return GST_PAD_PROBE_OK;
        const gchar* r = gst_structure_get_string(gst_event_get_structure(e), "reason");
        std::string reason = r ? r : "";
        auto weak = static_cast<Weak*>(data)->session;
        run_on_main([weak, reason] {
          if (auto s = weak.lock(); s && !s->closed_flag_) s->emit({{"type", "text-end"}, {"reason", reason}});
        });
        return GST_PAD_PROBE_OK;
      }, Weak::make(self), &Weak::free);
  gst_object_unref(text_sink);
  gst_object_unref(text_out);
}

// The decoder's streaming thread, which also pushes through the encoder and the payloader
// (no queue before the one in front of webrtcbin): at end-of-response every packet of the
// answer has been through on_packet(), except the encoder's last partial frame.
void Session::on_decoded(GstPadProbeInfo* info) {
  if (!(info->type & GST_PAD_PROBE_TYPE_EVENT_DOWNSTREAM)) return;
  GstEvent* event = GST_PAD_PROBE_INFO_EVENT(info);
  if (!event_is(event, kEndOfResponse)) return;
  const gchar* reason = gst_structure_get_string(gst_event_get_structure(event), "reason");
  const double wall =
      answering_ ? std::chrono::duration<double>(std::chrono::steady_clock::now() - answer_started_).count() : 0.0;
  // Audio sent vs wall time from its first packet: equal when the answer is paced.
  nlohmann::json end = {{"type", "answer-end"}, {"reason", reason ? reason : ""},
                        {"audio_seconds", static_cast<double>(answer_audio_) / GST_SECOND}, {"wall_seconds", wall}};
  answering_ = false;
  answer_audio_ = 0;
  auto weak = std::weak_ptr<Session>(shared_from_this());
  run_on_main([weak, end] {
    if (auto s = weak.lock()) s->emit(end);
  });
}

// Same thread: pace each packet, report the answer's first one.
void Session::on_packet(GstBuffer* buffer) {
  pacer_.wait(GST_BUFFER_PTS(buffer), GST_BUFFER_DURATION(buffer));
  if (GST_BUFFER_DURATION_IS_VALID(buffer)) answer_audio_ += GST_BUFFER_DURATION(buffer);
  if (answering_) return;
  answering_ = true;
  answer_started_ = std::chrono::steady_clock::now();
  auto weak = std::weak_ptr<Session>(shared_from_this());
  run_on_main([weak] {
    if (auto s = weak.lock()) s->emit({{"type", "answer-start"}});
  });
}

void Session::capture_question(GstBuffer* buffer) {
  GstMapInfo map;
  if (!gst_buffer_map(buffer, &map, GST_MAP_READ)) return;
  const auto* samples = reinterpret_cast<const float*>(map.data);
  const size_t n = map.size / sizeof(float);
  {
    std::lock_guard<std::mutex> lock(question_lock_);
    question_.insert(question_.end(), samples, samples + n);
    if (question_.size() > kQuestionMaxSamples)
      question_.erase(question_.begin(), question_.end() - kQuestionMaxSamples);
  }
  gst_buffer_unmap(buffer, &map);
}

std::vector<float> Session::take_question() {
  std::lock_guard<std::mutex> lock(question_lock_);
  std::vector<float> out;
  out.swap(question_);
  return out;
}

void Session::on_bus_message(GstMessage* message) {
  if (closed_flag_) return;
  switch (GST_MESSAGE_TYPE(message)) {
    case GST_MESSAGE_PROGRESS:
      emit(progress_to_json(message));
      break;
    case GST_MESSAGE_ELEMENT: {
      const GstStructure* s = gst_message_get_structure(message);
      if (s && gst_structure_has_name(s, kTurnMessage)) {
        nlohmann::json turn = structure_to_json(s);
        turn["type"] = "turn";
        log_line(id_, "answered: " + std::string(gst_structure_get_string(s, "reason") ? gst_structure_get_string(s, "reason") : "?"));
        emit(turn);
      }
      break;
    }
    case GST_MESSAGE_WARNING: {
      GError* error = nullptr;
      gchar* debug = nullptr;
      gst_message_parse_warning(message, &error, &debug);
      log_line(id_, std::string("warning from ") + GST_OBJECT_NAME(GST_MESSAGE_SRC(message)) + ": " + error->message);
      g_error_free(error);
      g_free(debug);
      break;
    }
    case GST_MESSAGE_ERROR: {
      GError* error = nullptr;
      gchar* debug = nullptr;
      gst_message_parse_error(message, &error, &debug);
      const std::string what = std::string(GST_OBJECT_NAME(GST_MESSAGE_SRC(message))) + ": " + error->message;
      log_line(id_, "error: " + what + (debug ? std::string(" (") + debug + ")" : ""));
      g_error_free(error);
      g_free(debug);
      emit({{"type", "error"}, {"message", what}});
      close("pipeline error: " + what);
      break;
    }
    default:
      break;
  }
}

void Session::emit(const nlohmann::json& message) {
  if (!closed_flag_ && send_) send_(message);
}

void Session::close(const std::string& reason) {
  if (closed_flag_) return;
  closed_flag_ = true;
  send_ = nullptr;  // the WebSocket may go with the connection
  pacer_.stop();    // releases a streaming thread waiting for its next packet
  if (bus_watch_) {
    g_source_remove(bus_watch_);
    bus_watch_ = 0;
  }
  GstElement* pipeline = pipeline_;
  {
    std::lock_guard<std::mutex> lock(webrtc_lock_);
    pipeline_ = webrtc_ = llm_ = gate_ = text_in_ = nullptr;
  }
  const int id = id_;
  log_line(id, "closing: " + reason);
  if (pipeline) {
    // NULL can wait for streaming threads (a model step, webrtcbin's loop): never on the main loop.
    std::thread([pipeline, id] {
      const auto t0 = std::chrono::steady_clock::now();
      gst_element_set_state(pipeline, GST_STATE_NULL);
      gst_object_unref(pipeline);
      g_pipelines_alive--;
      g_pipelines_freed++;
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
      run_on_main([id, ms] { log_line(id, "pipeline freed in " + std::to_string(ms) + " ms"); });
    }).detach();
  }
  if (closed_) closed_(id, reason);
}

}  // namespace glmvoice::web
