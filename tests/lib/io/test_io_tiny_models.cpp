// Round trip through the real layouts: the tiny-model writers (glmvoice-mkmodel) → the
// lib/io readers, for all three kinds; every tensor loads, configs parse.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "io/json_config.h"
#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io/yaml_config.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace glmvoice::io;

namespace {

void load_all_safetensors(const std::string& dir) {
  auto st = SafeTensors::open(dir);
  ASSERT_GT(st.size(), 0u) << dir;
  for (const auto& name : st.names()) {
    at::Tensor t = st.load(name);
    EXPECT_EQ(t.sizes().vec(), st.info(name).shape) << name;
    EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << name;
  }
}

}  // namespace

TEST(TinyModels, Tokenizer) {
  const std::string dir = glmvoice::test::tiny_model_dir("tokenizer");
  EXPECT_NO_THROW(JsonConfig::load(dir + "/config.json"));
  load_all_safetensors(dir);
}

TEST(TinyModels, Llm) {
  const std::string dir = glmvoice::test::tiny_model_dir("llm");
  auto config = JsonConfig::load(dir + "/config.json");
  EXPECT_TRUE(fs::exists(dir + "/tokenizer.model"));
  EXPECT_NO_THROW(JsonConfig::load(dir + "/tokenizer_config.json"));
  load_all_safetensors(dir);
}

TEST(TinyModels, Decoder) {
  const std::string dir = glmvoice::test::tiny_model_dir("decoder");
  auto y = YamlConfig::load(dir + "/config.yaml");
  EXPECT_NO_THROW(y.expect_class("flow", "MaskedDiffWithXvec"));
  EXPECT_NO_THROW(y.expect_class("hift", "HiFTGenerator"));
  for (const char* f : {"flow.pt", "hift.pt"}) {
    StateDict sd = load_torch_state_dict(dir + "/" + f);
    EXPECT_GT(sd.entries.size(), 0u) << f;
    fold_weight_norm(sd);
    for (const auto& [name, t] : sd.entries) EXPECT_TRUE(at::isfinite(t).all().item<bool>()) << name;
  }
}
