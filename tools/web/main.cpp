// glmvoice-web: the web demo. Talk to GLM-4-Voice from a browser over WebRTC.
//   glmvoice-web [--port 8888] [--bind 127.0.0.1] [--model-dir DIR] [--device D] [--dtype T]
//                [--max-new-tokens N] [--endpoint-ms MS] [--tiny-dir DIR]
// Serves the page and the signalling WebSocket; one webrtcbin pipeline per browser session
// (session.h). Models: --model-dir, else $GLMVOICE_MODEL_DIR (the three Hugging Face
// repositories side by side), else tiny random models made with glmvoice-mkmodel (noise).
// There is no authentication: it listens on loopback unless --bind says otherwise.
#include <glib-unix.h>
#include <gst/gst.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <regex>
#include <string>
#include <thread>

#include <unistd.h>

#include "../cli/args.h"
#include "model_set.h"
#include "web_server.h"

namespace {

constexpr int kTinyMaxNewTokens = 120;  // tiny models: a few seconds of noise, as scripts/demo.sh

std::string exe_dir() {
  gchar* exe = g_file_read_link("/proc/self/exe", nullptr);
  gchar* dir = exe ? g_path_get_dirname(exe) : g_strdup(".");
  std::string out = dir;
  g_free(exe);
  g_free(dir);
  return out;
}

bool exists(const std::string& path) { return g_file_test(path.c_str(), G_FILE_TEST_EXISTS); }

std::string find_mkmodel() {
  const std::string here = exe_dir();
  for (const std::string& candidate : {here + "/../glmvoice-mkmodel", here + "/glmvoice-mkmodel"})
    if (exists(candidate)) return candidate;
  gchar* found = g_find_program_in_path("glmvoice-mkmodel");
  std::string out = found ? found : "glmvoice-mkmodel";
  g_free(found);
  return out;
}

std::string default_tiny_dir() {
  if (const char* build = g_getenv("GLMVOICE_BUILD"); build && *build) return std::string(build) + "/tiny-models";
  const std::string here = exe_dir();
  if (exists(here + "/../glmvoice-mkmodel")) return here + "/../../tiny-models";  // build tree
  return std::string(g_get_user_cache_dir()) + "/glmvoice/tiny-models";
}

bool is_loopback(const std::string& bind) {
  GInetAddress* address = g_inet_address_new_from_string(bind.c_str());
  const bool loopback = address && g_inet_address_get_is_loopback(address);
  if (address) g_object_unref(address);
  return loopback;
}

// device/dtype go into a pipeline description: accept only what such values look like.
std::string checked_word(const glmvoice::tools::Args& args, const std::string& name) {
  const std::string value = args.get(name, "");
  if (!std::regex_match(value, std::regex("[A-Za-z0-9:_]*")))
    throw std::runtime_error("--" + name + " " + value + ": expected e.g. cpu, cuda:0, float32, bfloat16");
  return value;
}

int run(int argc, char** argv) {
  glmvoice::tools::Args args(argc, argv, 1, {"help"});
  args.check_known({"port", "bind", "model-dir", "device", "dtype", "max-new-tokens", "endpoint-ms",
                    "tiny-dir", "help"});
  if (args.has("help")) {
    std::printf(
        "usage: glmvoice-web [--port 8888] [--bind 127.0.0.1] [--model-dir DIR] [--device D] [--dtype T]\n"
        "                    [--max-new-tokens N] [--endpoint-ms MS] [--tiny-dir DIR]\n"
        "The web demo: open the printed URL in a browser. No authentication: binding to anything\n"
        "but a loopback address exposes the models to that network.\n");
    return 0;
  }
  glmvoice::web::ServerOptions options;
  options.bind = args.get("bind", "127.0.0.1");
  if (GInetAddress* address = g_inet_address_new_from_string(options.bind.c_str())) {
    // Served on loopback only: the WebRTC media stays on loopback too.
    if (g_inet_address_get_is_loopback(address)) options.session.ice_address = options.bind;
    g_object_unref(address);
  } else
    throw std::runtime_error("--bind " + options.bind + ": not an IP address (e.g. 127.0.0.1, ::1, 0.0.0.0)");
  options.port = static_cast<int>(args.get_int("port", 8888));
  if (options.port < 0 || options.port > 65535) throw std::runtime_error("--port: 0..65535");

  glmvoice::web::ModelSet models;
  std::string model_dir = args.get("model-dir", "");
  if (model_dir.empty() && g_getenv("GLMVOICE_MODEL_DIR")) model_dir = g_getenv("GLMVOICE_MODEL_DIR");
  if (!model_dir.empty()) {
    models = glmvoice::web::model_set_from_dir(model_dir);
  } else {
    const std::string tiny_dir = args.get("tiny-dir", default_tiny_dir());
    std::fprintf(stderr,
                 "glmvoice-web: NOTE: no --model-dir and no GLMVOICE_MODEL_DIR: using tiny RANDOM models in %s "
                 "(made with glmvoice-mkmodel when absent); the answers are noise, not speech.\n",
                 tiny_dir.c_str());
    models = glmvoice::web::model_set_tiny(tiny_dir, find_mkmodel());
  }
  models.device = checked_word(args, "device");
  models.dtype = checked_word(args, "dtype");
  options.session.max_new_tokens =
      static_cast<int>(args.get_int("max-new-tokens", models.tiny ? kTinyMaxNewTokens : 2000));
  options.session.endpoint_silence_ms = static_cast<int>(args.get_int("endpoint-ms", 600));

  if (!is_loopback(options.bind))
    std::fprintf(stderr, "glmvoice-web: WARNING: listening on %s, not loopback: there is no authentication, "
                         "anyone who can reach this address can use the models.\n", options.bind.c_str());

  GMainLoop* loop = g_main_loop_new(nullptr, FALSE);
  int status = 0;
  {
    glmvoice::web::WebServer server(options, models);
    const std::string url = server.start();
    std::printf("glmvoice-web: open %s in a browser\n", url.c_str());
    std::fflush(stdout);
    auto quit = +[](gpointer loop) -> gboolean {
      g_main_loop_quit(static_cast<GMainLoop*>(loop));
      return G_SOURCE_CONTINUE;
    };
    g_unix_signal_add(SIGINT, quit, loop);
    g_unix_signal_add(SIGTERM, quit, loop);
    g_main_loop_run(loop);
    std::fprintf(stderr, "glmvoice-web: stopping\n");
  }
  // Sessions free their pipelines on worker threads: let them finish (bounded) before exit.
  for (int i = 0; i < 200 && glmvoice::web::Session::pipelines_alive() > 0; ++i) g_usleep(50 * 1000);
  g_main_loop_unref(loop);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  gst_init(&argc, &argv);
  int status = 1;
  try {
    status = run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "glmvoice-web: %s\n", e.what());
  }
  // gst_deinit joins every GStreamer task thread. Now and then webrtcbin (1.22) leaves a torn-down
  // session's nicesrc task running (a race in its teardown: the web tests see its receive bin
  // alive at exit), and that join never returns: bound it, so that SIGTERM always ends the server.
  std::atomic<bool> deinit_done{false};
  std::thread deinit_watchdog([&deinit_done, status] {
    for (int i = 0; i < 100 && !deinit_done; ++i) g_usleep(100 * 1000);
    if (!deinit_done) {
      std::fprintf(stderr, "glmvoice-web: GStreamer teardown still waiting for a task after 10 s "
                           "(webrtcbin left one running); exiting\n");
      std::fflush(stderr);
      _exit(status);
    }
  });
  gst_deinit();  // GST_TRACERS=leaks reports what is left here
  deinit_done = true;
  deinit_watchdog.join();
  return status;
}
