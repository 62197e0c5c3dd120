#include "model_set.h"

#include <glib.h>

#include <stdexcept>

namespace glmvoice::web {
namespace {

bool is_dir(const std::string& path) { return g_file_test(path.c_str(), G_FILE_TEST_IS_DIR); }
bool is_file(const std::string& path) { return g_file_test(path.c_str(), G_FILE_TEST_IS_REGULAR); }

void make_tiny(const std::string& mkmodel, const std::string& kind, int seed, const std::string& out) {
  const std::string seed_text = std::to_string(seed);
  const gchar* argv[] = {mkmodel.c_str(), "--kind", kind.c_str(), "--seed", seed_text.c_str(),
                         "--out", out.c_str(), nullptr};
  gint status = 0;
  gchar* err = nullptr;
  GError* error = nullptr;
  if (!g_spawn_sync(nullptr, const_cast<gchar**>(argv), nullptr, G_SPAWN_DEFAULT, nullptr, nullptr,
                    nullptr, &err, &status, &error)) {
    std::string what = error->message;
    g_error_free(error);
    throw std::runtime_error("cannot run " + mkmodel + ": " + what);
  }
  std::string message = err ? err : "";
  g_free(err);
  if (!g_spawn_check_wait_status(status, nullptr))
    throw std::runtime_error(mkmodel + " --kind " + kind + " failed: " + message);
}

}  // namespace

ModelSet model_set_from_dir(const std::string& model_dir) {
  ModelSet set;
  set.tokenizer_dir = model_dir + "/glm-4-voice-tokenizer";
  set.llm_dir = model_dir + "/glm-4-voice-9b";
  set.decoder_dir = model_dir + "/glm-4-voice-decoder";
  for (const auto& dir : {set.tokenizer_dir, set.llm_dir, set.decoder_dir})
    if (!is_dir(dir)) throw std::runtime_error("model directory " + model_dir + ": missing " + dir);
  return set;
}

ModelSet model_set_tiny(const std::string& tiny_dir, const std::string& mkmodel_path) {
  ModelSet set;
  set.tiny = true;
  set.tokenizer_dir = tiny_dir + "/glm-4-voice-tokenizer";
  set.llm_dir = tiny_dir + "/glm-4-voice-9b";
  set.decoder_dir = tiny_dir + "/glm-4-voice-decoder";
  if (!is_file(set.tokenizer_dir + "/config.json")) make_tiny(mkmodel_path, "tokenizer", 1, set.tokenizer_dir);
  if (!is_file(set.llm_dir + "/config.json")) make_tiny(mkmodel_path, "llm", 2, set.llm_dir);
  if (!is_file(set.decoder_dir + "/config.yaml")) make_tiny(mkmodel_path, "decoder", 3, set.decoder_dir);
  return set;
}

std::string element_model_properties(const ModelSet& models, const std::string& model_dir) {
  gchar* quoted = g_strescape(model_dir.c_str(), nullptr);
  std::string out = std::string(" model-path=\"") + quoted + "\"";
  g_free(quoted);
  if (!models.device.empty()) out += " device=" + models.device;
  if (!models.dtype.empty()) out += " dtype=" + models.dtype;
  return out;
}

}  // namespace glmvoice::web
