// lib/io JSON and HyperPyYAML configs: typed reads, !ref, DictConfig content, YAML 1.2
// floats, True/False, the fixture configs, and malformed files.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "io/error.h"
#include "io/json_config.h"
#include "io/yaml_config.h"
#include "test_support.h"

using glmvoice::Error;
using glmvoice::ErrorCode;
using namespace glmvoice::io;

namespace {

template <typename F>
void expect_error(F&& f, ErrorCode code, const std::string& needle) {
  try {
    f();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

const char* kYaml = R"(
__set_seed1: !apply:random.seed [1986]
sample_rate: 22050
spk_embed_dim: 192
alias: !ref <spk_embed_dim>
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    spk_embed_dim: !ref <alias>
    output_type: 'mel'
    quoted_number: '12'
    input_frame_rate: 12.5
    only_mask_loss: True
    off: False
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                inference_cfg_rate: 0.7
                solver: 'euler'
    channels: [32, 64]
    dil: [[1, 3, 5], [1, 3, 5]]
    rates: [0.5, 1e-3, 2]
hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    sampling_rate: !ref <sample_rate>
bad_ref: !ref <nowhere>
expr_ref: !ref <sample_rate> * 2
cycle_a: !ref <cycle_b>
cycle_b: !ref <cycle_a>
)";

}  // namespace

TEST(JsonConfig, TypedReads) {
  auto c = JsonConfig::from_string(
      R"({"a": 3, "b": 2.5, "c": true, "d": "x", "e": [1, 2, 3], "f": 4.0, "n": null,
          "nested": {"k": 7}, "dotted.key": 1})",
      "cfg.json");
  EXPECT_EQ(c.get_int("a"), 3);
  EXPECT_DOUBLE_EQ(c.get_double("b"), 2.5);
  EXPECT_DOUBLE_EQ(c.get_double("a"), 3.0);
  EXPECT_TRUE(c.get_bool("c"));
  EXPECT_EQ(c.get_string("d"), "x");
  EXPECT_EQ(c.get_int_list("e"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(c.get_int("f"), 4);
  EXPECT_EQ(c.get_int("nested.k"), 7);
  EXPECT_EQ(c.get_int("dotted.key"), 1);
  EXPECT_FALSE(c.has("n"));
  EXPECT_FALSE(c.has("zzz"));
  EXPECT_EQ(c.get_int("zzz", 9), 9);
  EXPECT_EQ(c.get_int("n", 9), 9);
  EXPECT_EQ(c.get_string("zzz", "fb"), "fb");
  EXPECT_TRUE(c.get_bool("zzz", true));
  EXPECT_DOUBLE_EQ(c.get_double("zzz", 0.25), 0.25);
  expect_error([&] { c.get_int("zzz"); }, ErrorCode::kBadConfig, "cfg.json: zzz: missing key");
  expect_error([&] { c.get_int("b"); }, ErrorCode::kBadConfig, "expected an integer");
  expect_error([&] { c.get_string("a"); }, ErrorCode::kBadConfig, "cfg.json: a: expected a string");
  expect_error([&] { c.get_bool("d"); }, ErrorCode::kBadConfig, "expected a boolean");
  expect_error([&] { c.get_int_list("d"); }, ErrorCode::kBadConfig, "expected a list");
  expect_error([&] { c.get_int("d", 1); }, ErrorCode::kBadConfig, "expected an integer");
}

TEST(JsonConfig, MalformedAndMissing) {
  expect_error([] { JsonConfig::from_string("{\"a\": [1, 2", "m.json"); }, ErrorCode::kBadFile,
               "m.json: malformed JSON at byte");
  expect_error([] { JsonConfig::from_string("", "e.json"); }, ErrorCode::kBadFile, "malformed JSON");
  expect_error([] { JsonConfig::load("/nonexistent/config.json"); }, ErrorCode::kNotFound, "config.json");
  const std::string dir = glmvoice::test::scratch_dir("json-bad");
  std::ofstream(dir + "/c.json") << "{\"a\": 1,}";
  expect_error([&] { JsonConfig::load(dir + "/c.json"); }, ErrorCode::kBadFile, "c.json: malformed JSON");
}

TEST(JsonConfig, FixtureConfigs) {
  GLMVOICE_REQUIRE_FIXTURES();
  const std::string m = glmvoice::test::fixtures_dir() + "/models/tiny-a/";
  for (const char* f : {"tokenizer/config.json", "tokenizer/preprocessor_config.json", "llm/config.json",
                        "llm/generation_config.json", "llm/tokenizer_config.json", "llm/special_tokens_map.json",
                        "llm/model.safetensors.index.json"}) {
    EXPECT_NO_THROW(JsonConfig::load(m + f)) << f;
  }
  auto llm = JsonConfig::load(m + "llm/config.json");
  EXPECT_EQ(llm.get_int("hidden_size"), 64);
  EXPECT_EQ(llm.get_int("num_layers"), 2);
}

TEST(YamlConfig, ValuesRefsAndTags) {
  auto y = YamlConfig::from_string(kYaml, "config.yaml");
  EXPECT_EQ(y.get_int("sample_rate"), 22050);
  EXPECT_EQ(y.get_int("flow.spk_embed_dim"), 192);  // !ref -> !ref -> value
  EXPECT_EQ(y.get_int("hift.sampling_rate"), 22050);
  EXPECT_EQ(y.get_string("flow.output_type"), "mel");
  EXPECT_DOUBLE_EQ(y.get_double("flow.input_frame_rate"), 12.5);
  EXPECT_TRUE(y.get_bool("flow.only_mask_loss"));
  EXPECT_FALSE(y.get_bool("flow.off"));
  EXPECT_DOUBLE_EQ(y.get_double("flow.decoder.cfm_params.sigma_min"), 1e-6);  // DictConfig content
  EXPECT_DOUBLE_EQ(y.get_double("flow.decoder.cfm_params.inference_cfg_rate"), 0.7);
  EXPECT_EQ(y.get_string("flow.decoder.cfm_params.solver"), "euler");
  EXPECT_DOUBLE_EQ(y.get_double("flow.decoder.cfm_params.content.sigma_min"), 1e-6);
  EXPECT_EQ(y.get_int_list("flow.channels"), (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(y.get_int_list("flow.dil.1"), (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(y.get_int("flow.channels.1"), 64);
  auto rates = y.get_double_list("flow.rates");
  ASSERT_EQ(rates.size(), 3u);
  EXPECT_DOUBLE_EQ(rates[1], 1e-3);
  EXPECT_DOUBLE_EQ(y.get_double("sample_rate"), 22050.0);
  EXPECT_EQ(y.tag("flow"), "!new:cosyvoice.flow.flow.MaskedDiffWithXvec");
  EXPECT_EQ(y.tag("flow.decoder.cfm_params"), "!new:omegaconf.DictConfig");
  EXPECT_EQ(y.tag("__set_seed1"), "!apply:random.seed");
  EXPECT_EQ(y.tag("sample_rate"), "");
  EXPECT_NO_THROW(y.expect_class("flow.decoder", "ConditionalCFM"));
  expect_error([&] { y.expect_class("flow.decoder", "ConditionalDecoder"); }, ErrorCode::kBadConfig,
               "flow.decoder: expected a '!new:...ConditionalDecoder' node");
  EXPECT_TRUE(y.has("flow.decoder.cfm_params.solver"));
  EXPECT_FALSE(y.has("flow.nothing"));
  EXPECT_FALSE(y.has("flow.output_type.deeper"));
  EXPECT_EQ(y.get_int("flow.nothing", 5), 5);
  EXPECT_EQ(y.get_string("flow.nothing", "x"), "x");
  EXPECT_TRUE(y.get_bool("flow.nothing", true));
  EXPECT_DOUBLE_EQ(y.get_double("flow.nothing", 0.5), 0.5);
}

TEST(YamlConfig, Errors) {
  auto y = YamlConfig::from_string(kYaml, "config.yaml");
  expect_error([&] { y.node("flow.encoder"); }, ErrorCode::kBadConfig, "config.yaml: flow.encoder: missing key");
  expect_error([&] { y.get_int("bad_ref"); }, ErrorCode::kBadConfig, "no top-level key 'nowhere'");
  expect_error([&] { y.get_int("expr_ref"); }, ErrorCode::kUnsupported, "only plain '!ref <name>'");
  expect_error([&] { y.get_int("cycle_a"); }, ErrorCode::kBadConfig, "too deep");
  expect_error([&] { y.get_int("flow.input_frame_rate"); }, ErrorCode::kBadConfig, "expected an integer, got '12.5'");
  expect_error([&] { y.get_int("flow.quoted_number"); }, ErrorCode::kBadConfig, "string");
  expect_error([&] { y.get_double("flow.output_type"); }, ErrorCode::kBadConfig, "expected a number");
  expect_error([&] { y.get_bool("sample_rate"); }, ErrorCode::kBadConfig, "expected true/false");
  expect_error([&] { y.get_int("flow"); }, ErrorCode::kBadConfig, "got a mapping");
  expect_error([&] { y.get_int_list("sample_rate"); }, ErrorCode::kBadConfig, "expected a list");
  expect_error([&] { y.get_int("flow.nothing.deeper"); }, ErrorCode::kBadConfig, "missing key");
  // Malformed YAML, with a position.
  expect_error([] { YamlConfig::from_string("a: [1, 2\nb: 3\n", "m.yaml"); }, ErrorCode::kBadFile,
               "m.yaml: malformed YAML at line");
  expect_error([] { YamlConfig::from_string("a: b: c\n", "m.yaml"); }, ErrorCode::kBadFile, "malformed YAML");
  expect_error([] { YamlConfig::from_string("- 1\n- 2\n", "l.yaml"); }, ErrorCode::kBadFile, "not a mapping");
  expect_error([] { YamlConfig::load("/nonexistent/config.yaml"); }, ErrorCode::kNotFound, "config.yaml");
}

TEST(YamlConfig, FixtureDecoderConfig) {
  GLMVOICE_REQUIRE_FIXTURES();
  auto y = YamlConfig::load(glmvoice::test::fixtures_dir() + "/models/tiny-a/decoder/config.yaml");
  EXPECT_EQ(y.get_int("flow.spk_embed_dim"), 192);
  EXPECT_EQ(y.get_int("hift.sampling_rate"), 22050);
  EXPECT_EQ(y.get_int("flow.input_size"), 32);
  EXPECT_DOUBLE_EQ(y.get_double("flow.input_frame_rate"), 12.5);
  EXPECT_DOUBLE_EQ(y.get_double("flow.decoder.cfm_params.inference_cfg_rate"), 0.7);
  EXPECT_DOUBLE_EQ(y.get_double("flow.decoder.cfm_params.sigma_min"), 1e-6);
  EXPECT_EQ(y.get_string("flow.decoder.cfm_params.t_scheduler"), "cosine");
  EXPECT_TRUE(y.get_bool("flow.encoder.normalize_before"));
  EXPECT_FALSE(y.get_bool("flow.encoder.use_cnn_module"));
  EXPECT_EQ(y.get_int_list("flow.decoder.estimator.channels"), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(y.get_int_list("hift.resblock_dilation_sizes.2"), (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(y.get_int("hift.istft_params.n_fft"), 16);
  y.expect_class("flow", "MaskedDiffWithXvec");
  y.expect_class("flow.encoder", "BlockConformerEncoder");
  y.expect_class("flow.length_regulator", "InterpolateRegulator");
  y.expect_class("flow.decoder", "ConditionalCFM");
  y.expect_class("flow.decoder.estimator", "ConditionalDecoder");
  y.expect_class("hift", "HiFTGenerator");
  y.expect_class("hift.f0_predictor", "ConvRNNF0Predictor");
}
