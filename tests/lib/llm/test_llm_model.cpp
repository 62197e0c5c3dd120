// lib/llm model: KV-cache consistency, an independent naive fp64 reference of spec §3,
// configuration variants and load errors (llm spec §7.4).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>

#include "io/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "llm/chatglm_model.h"
#include "test_support.h"

using namespace glmvoice;
namespace fs = std::filesystem;

namespace {

std::shared_ptr<const llm::LlmModel> load(const std::string& config, c10::ScalarType dtype = c10::kFloat) {
  return llm::LlmModel::load({test::tiny_model_dir("llm", config), c10::Device(c10::kCPU), dtype});
}

std::vector<int64_t> some_ids(const llm::LlmModel& m, int n) {
  auto ids = m.tokenizer().encode("<|system|>\nhello world, the streaming test<|user|>\n");
  for (int i = 0; static_cast<int>(ids.size()) < n; ++i) ids.push_back(m.tokenizer().audio_offset() + (i * 7) % 50);
  ids.resize(static_cast<size_t>(n));
  return ids;
}

// Plain-loop fp64 implementation of spec §3 straight from the checkpoint files.
at::Tensor naive_logits(const std::string& dir, const std::vector<int64_t>& ids) {
  const auto cfg = io::JsonConfig::load(dir + "/config.json");
  const auto st = io::SafeTensors::open(dir);
  auto W = [&](const std::string& n) { return st.load(n, at::kDouble, c10::Device(c10::kCPU)); };
  const int64_t H = cfg.get_int("hidden_size"), nh = cfg.get_int("num_attention_heads");
  const int64_t ng = cfg.get_int("multi_query_group_num"), d = cfg.get_int("kv_channels");
  const int64_t ffn = cfg.get_int("ffn_hidden_size"), L = cfg.get_int("num_layers");
  const double eps = cfg.get_double("layernorm_epsilon"), base = 10000.0 * cfg.get_double("rope_ratio", 1.0);
  const int64_t T = static_cast<int64_t>(ids.size()), r = d / 2;
  auto rms = [&](const at::Tensor& x, const at::Tensor& w) {
    at::Tensor out = at::empty_like(x);
    for (int64_t t = 0; t < x.size(0); ++t) {
      double ss = 0;
      for (int64_t i = 0; i < H; ++i) ss += x[t][i].item<double>() * x[t][i].item<double>();
      out[t] = x[t] / std::sqrt(ss / H + eps) * w;
    }
    return out;
  };
  auto rope = [&](at::Tensor x) {  // x [T, n, d], in place on a copy
    x = x.clone();
    auto a = x.accessor<double, 3>();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < x.size(1); ++h)
        for (int64_t i = 0; i < r / 2; ++i) {
          const double theta = std::pow(base, -2.0 * i / r), ang = t * theta;
          const double x0 = a[t][h][2 * i], x1 = a[t][h][2 * i + 1];
          a[t][h][2 * i] = x0 * std::cos(ang) - x1 * std::sin(ang);
          a[t][h][2 * i + 1] = x1 * std::cos(ang) + x0 * std::sin(ang);
        }
    return x;
  };
  at::Tensor h = W("transformer.embedding.word_embeddings.weight").index_select(0, at::tensor(ids));
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "transformer.encoder.layers." + std::to_string(l) + ".";
    at::Tensor n1 = rms(h, W(p + "input_layernorm.weight"));
    at::Tensor mixed = at::matmul(n1, W(p + "self_attention.query_key_value.weight").t()) +
                       W(p + "self_attention.query_key_value.bias");
    at::Tensor q = rope(mixed.narrow(1, 0, nh * d).reshape({T, nh, d}));
    at::Tensor k = rope(mixed.narrow(1, nh * d, ng * d).reshape({T, ng, d}));
    at::Tensor v = mixed.narrow(1, nh * d + ng * d, ng * d).reshape({T, ng, d});
    at::Tensor ctx = at::zeros({T, nh * d}, at::kDouble);
    for (int64_t hd = 0; hd < nh; ++hd) {
      const int64_t g = hd / (nh / ng);
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(static_cast<size_t>(i + 1));
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          s[static_cast<size_t>(j)] = at::dot(q[i][hd], k[j][g]).item<double>() / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, s[static_cast<size_t>(j)]);
        }
        for (auto& x : s) sum += (x = std::exp(x - mx));
        at::Tensor o = at::zeros({d}, at::kDouble);
        for (int64_t j = 0; j <= i; ++j) o += v[j][g] * (s[static_cast<size_t>(j)] / sum);
        ctx[i].narrow(0, hd * d, d).copy_(o);
      }
    }
    h = h + at::matmul(ctx, W(p + "self_attention.dense.weight").t());
    at::Tensor n2 = rms(h, W(p + "post_attention_layernorm.weight"));
    at::Tensor u = at::matmul(n2, W(p + "mlp.dense_h_to_4h.weight").t());
    at::Tensor a = u.narrow(1, 0, ffn), b = u.narrow(1, ffn, ffn);
    h = h + at::matmul(a / (1 + at::exp(-a)) * b, W(p + "mlp.dense_4h_to_h.weight").t());
  }
  h = rms(h, W("transformer.encoder.final_layernorm.weight"));
  return at::matmul(h, W("transformer.output_layer.weight").t());
}

}  // namespace

TEST(LlmModel, kv_cache_matches_full_forward) {
  auto m = load("tiny");
  const auto ids = some_ids(*m, 24);
  auto full_cache = m->new_cache();
  at::Tensor full = m->forward(ids, full_cache, true);
  ASSERT_EQ(full.sizes(), (at::IntArrayRef{24, m->config().padded_vocab_size}));
  // prefill 8, then 1 token at a time
  auto cache = m->new_cache();
  std::vector<at::Tensor> rows = {m->forward({ids.begin(), ids.begin() + 8}, cache, true)};
  for (size_t i = 8; i < ids.size(); ++i) rows.push_back(m->forward({ids[i]}, cache, true));
  EXPECT_LT((at::cat(rows, 0) - full).abs().max().item<double>(), 1e-5);
  // chunked prefill with a non-empty cache (bottom-right aligned mask), and truncation reuse
  auto c2 = m->new_cache();
  m->forward({ids.begin(), ids.begin() + 5}, c2);
  at::Tensor chunk = m->forward({ids.begin() + 5, ids.begin() + 17}, c2, true);
  EXPECT_LT((chunk - full.narrow(0, 5, 12)).abs().max().item<double>(), 1e-5);
  c2.truncate(10);
  at::Tensor again = m->forward({ids.begin() + 10, ids.end()}, c2, true);
  EXPECT_LT((again - full.narrow(0, 10, 14)).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(c2.length, 24);
  // last-position logits equal the last row
  auto c3 = m->new_cache();
  EXPECT_LT((m->forward(ids, c3) - full[23]).abs().max().item<double>(), 1e-6);
}

TEST(LlmModel, matches_naive_fp64_reference) {
  for (const std::string config : {"tiny", "tiny-rope500"}) {
    auto m = load(config);
    const auto ids = some_ids(*m, 12);
    auto cache = m->new_cache();
    at::Tensor got = m->forward(ids, cache, true).to(at::kDouble);
    at::Tensor ref = naive_logits(test::tiny_model_dir("llm", config), ids);
    const double err = (got - ref).abs().max().item<double>();
    std::printf("%s: max abs err vs fp64 reference %.3g\n", config.c_str(), err);
    EXPECT_LT(err, 1e-4) << config;
  }
}

TEST(LlmModel, rope_ratio_changes_the_output) {
  auto a = load("tiny"), b = load("tiny-rope500");
  const auto ids = some_ids(*a, 12);
  auto ca = a->new_cache(), cb = b->new_cache();
  EXPECT_GT((a->forward(ids, ca) - b->forward(ids, cb)).abs().max().item<double>(), 1e-6);
}

TEST(LlmModel, config_variants) {
  auto d = load("tiny-defaults");
  EXPECT_EQ(d->config().seq_length, 2048);  // CONFIGPY default
  EXPECT_EQ(d->config().num_layers, 2);
  auto f = load("tiny-f32");  // single model.safetensors, F32
  EXPECT_FALSE(fs::exists(test::tiny_model_dir("llm", "tiny-f32") + "/model.safetensors.index.json"));
  auto t = load("tiny");
  auto cf = f->new_cache(), ct = t->new_cache();
  const auto ids = some_ids(*t, 6);
  // same seed: BF16 rounding is the only difference
  EXPECT_LT((f->forward(ids, cf) - t->forward(ids, ct)).abs().max().item<double>(), 0.05);
  EXPECT_EQ(t->config().eos_token_id.size(), 3u);
  EXPECT_EQ(t->config().head_dim(), 16);
  EXPECT_EQ(t->config().rotary_dim(), 8);
  EXPECT_EQ(t->parameter_count(), 2 * t->config().padded_vocab_size * 64 + 2 * (128 * 64 + 128 + 64 * 64 + 192 * 64 + 64 * 96 + 128) + 64);
  auto full = load("tiny-full");
  EXPECT_EQ(full->tokenizer().n_audio(), 16384);
  EXPECT_EQ(full->config().padded_vocab_size, 16768);
}

TEST(LlmModel, bf16_close_to_fp32) {
  auto a = load("tiny"), b = load("tiny", c10::kBFloat16);
  const auto ids = some_ids(*a, 10);
  auto ca = a->new_cache(), cb = b->new_cache();
  EXPECT_LT((a->forward(ids, ca) - b->forward(ids, cb)).abs().max().item<double>(), 0.05);
}

TEST(LlmModel, bad_input_and_context_limit) {
  auto m = load("tiny");
  auto cache = m->new_cache();
  EXPECT_THROW(m->forward({m->config().padded_vocab_size}, cache), Error);
  EXPECT_THROW(m->forward({}, cache), Error);
  std::vector<int64_t> too_long(static_cast<size_t>(m->config().seq_length + 1), 5);
  try {
    m->forward(too_long, cache);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kBadInput);
  }
}

TEST(LlmModel, missing_tensor_and_bad_shape_name_the_tensor) {
  const std::string src = test::tiny_model_dir("llm", "tiny-f32");
  const auto st = io::SafeTensors::open(src + "/model.safetensors");
  for (int variant = 0; variant < 2; ++variant) {
    const std::string dir = test::scratch_dir("llm-broken");
    for (const char* f : {"config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"}) {
      fs::copy_file(src + "/" + f, dir + "/" + f);
    }
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    const std::string victim = "transformer.encoder.layers.1.mlp.dense_4h_to_h.weight";
    for (const auto& name : st.names()) {
      if (name == victim && variant == 0) continue;
      at::Tensor t = st.load(name);
      if (name == victim) t = t.narrow(1, 0, 10).contiguous();
      tensors.emplace_back(name, t);
    }
    io::write_safetensors(dir + "/model.safetensors", tensors);
    try {
      llm::LlmModel::load({dir, c10::Device(c10::kCPU), c10::kFloat});
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kMismatch);
      EXPECT_NE(std::string(e.what()).find(victim), std::string::npos) << e.what();
    }
  }
}

TEST(LlmModel, missing_directory_is_not_found) {
  try {
    llm::LlmModel::load({"/nonexistent/llm", c10::Device(c10::kCPU), c10::kFloat});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
}

TEST(LlmModel, inv_freq_tensor_is_ignored) {
  const std::string src = test::tiny_model_dir("llm", "tiny-f32");
  const auto st = io::SafeTensors::open(src + "/model.safetensors");
  const std::string dir = test::scratch_dir("llm-invfreq");
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"}) {
    fs::copy_file(src + "/" + f, dir + "/" + f);
  }
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& name : st.names()) {
    at::Tensor t = st.load(name);
    if (name == "transformer.rotary_pos_emb.inv_freq") t = at::rand_like(t) * 1000;
    tensors.emplace_back(name, t);
  }
  io::write_safetensors(dir + "/model.safetensors", tensors);
  auto a = llm::LlmModel::load({src, c10::Device(c10::kCPU), c10::kFloat});
  auto b = llm::LlmModel::load({dir, c10::Device(c10::kCPU), c10::kFloat});
  const auto ids = some_ids(*a, 16);
  auto ca = a->new_cache(), cb = b->new_cache();
  EXPECT_TRUE(at::equal(a->forward(ids, ca, true), b->forward(ids, cb, true)));
}
