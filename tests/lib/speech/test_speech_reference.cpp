// The encoder (spec tokenizer.md §3) against an independent scalar reference written from
// the spec in double precision with plain loops (§6.3 items 3 and 6): pooled vectors within
// 1e-4 relative in f32 (1e-10 in f64), ids equal. The reference shares only the front end
// (checked separately against golden values and the upstream fixtures).
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "io/safetensors.h"
#include "speech/tokenizer_model.h"
#include "speech/tokenizer_state.h"
#include "speech_test_util.h"
#include "test_support.h"

namespace glmvoice::speech {
namespace {

using Mat = std::vector<std::vector<double>>;  // [rows][cols]

struct RefWeights {
  std::vector<double> data;
  std::vector<int64_t> shape;
  double at(int64_t i) const { return data[i]; }
};

RefWeights get(const io::SafeTensors& st, const std::string& name) {
  const at::Tensor t = st.load(name).to(at::kDouble).contiguous();
  RefWeights w;
  w.data.assign(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  w.shape = t.sizes().vec();
  return w;
}

double gelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// y = x W^T + b for every row of x; W [out, in]
Mat linear(const Mat& x, const RefWeights& w, const RefWeights* b) {
  const int64_t out = w.shape[0], in = w.shape[1];
  Mat y(x.size(), std::vector<double>(out));
  for (size_t r = 0; r < x.size(); ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double s = b ? b->at(o) : 0.0;
      for (int64_t i = 0; i < in; ++i) s += x[r][i] * w.at(o * in + i);
      y[r][o] = s;
    }
  }
  return y;
}

Mat layer_norm(const Mat& x, const RefWeights& g, const RefWeights& b) {
  Mat y = x;
  for (auto& row : y) {
    double mean = 0, var = 0;
    for (double v : row) mean += v;
    mean /= row.size();
    for (double v : row) var += (v - mean) * (v - mean);
    var /= row.size();  // biased
    for (size_t i = 0; i < row.size(); ++i) row[i] = (row[i] - mean) / std::sqrt(var + 1e-5) * g.at(i) + b.at(i);
  }
  return y;
}

struct RefOutput {
  Mat pooled;
  std::vector<int64_t> ids;
};

// Scalar forward of one segment (§3.1-3.6), n valid samples. feats_per_block[b] [128][T]
// are the features the conv frames of attention block b are computed from (one matrix for
// the offline path; the streaming floors of §5.3 give one per block).
RefOutput reference_forward(const std::string& dir, const std::vector<Mat>& feats_per_block, int64_t n) {
  const io::SafeTensors st = io::SafeTensors::open(dir);
  const TokenizerConfig c = TokenizerConfig::load(dir);
  const int64_t T = feats_per_block[0][0].size(), D = c.d_model, C = T / 2, H = c.num_heads, hd = D / H;
  // conv1 (causal, zero left pad 2) + GELU, per distinct feature matrix
  const RefWeights w1 = get(st, "conv1.weight"), b1 = get(st, "conv1.bias");
  std::vector<Mat> y1s;
  for (const Mat& feats : feats_per_block) {
    Mat y1(D, std::vector<double>(T));
    for (int64_t o = 0; o < D; ++o) {
      for (int64_t m = 0; m < T; ++m) {
        double s = b1.at(o);
        for (int64_t ci = 0; ci < c.num_mel_bins; ++ci) {
          for (int64_t k = 0; k < 3; ++k) {
            const int64_t src = m - 2 + k;
            if (src >= 0) s += w1.at((o * c.num_mel_bins + ci) * 3 + k) * feats[ci][src];
          }
        }
        y1[o][m] = gelu(s);
      }
    }
    y1s.push_back(std::move(y1));
  }
  // conv2 (causal, stride 2) + GELU, transpose, + positions
  const RefWeights w2 = get(st, "conv2.weight"), b2 = get(st, "conv2.bias");
  const RefWeights pos = get(st, "embed_positions.weight");
  Mat h(C, std::vector<double>(D));
  for (int64_t o = 0; o < D; ++o) {
    for (int64_t i = 0; i < C; ++i) {
      const Mat& y1 = y1s[std::min<size_t>(i / c.block_size, y1s.size() - 1)];
      double s = b2.at(o);
      for (int64_t ci = 0; ci < D; ++ci) {
        for (int64_t k = 0; k < 3; ++k) {
          const int64_t src = 2 * i - 2 + k;
          if (src >= 0) s += w2.at((o * D + ci) * 3 + k) * y1[ci][src];
        }
      }
      h[i][o] = gelu(s) + pos.at(i * D + o);
    }
  }
  auto allowed = [&](int64_t q, int64_t key, bool pooled) {
    const int64_t block = pooled ? c.block_size / c.pooling_kernel_size : c.block_size;
    const int64_t unit = pooled ? 1280 : 320;
    return key / block <= q / block && unit * key < n;
  };
  bool pooled = false;
  for (int64_t l = 0; l < c.quantize_position; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const RefWeights g1 = get(st, p + "self_attn_layer_norm.weight"), be1 = get(st, p + "self_attn_layer_norm.bias");
    const RefWeights qw = get(st, p + "self_attn.q_proj.weight"), qb = get(st, p + "self_attn.q_proj.bias");
    const RefWeights kw = get(st, p + "self_attn.k_proj.weight");
    const RefWeights vw = get(st, p + "self_attn.v_proj.weight"), vb = get(st, p + "self_attn.v_proj.bias");
    const RefWeights ow = get(st, p + "self_attn.out_proj.weight"), ob = get(st, p + "self_attn.out_proj.bias");
    const RefWeights g2 = get(st, p + "final_layer_norm.weight"), be2 = get(st, p + "final_layer_norm.bias");
    const RefWeights f1w = get(st, p + "fc1.weight"), f1b = get(st, p + "fc1.bias");
    const RefWeights f2w = get(st, p + "fc2.weight"), f2b = get(st, p + "fc2.bias");
    const Mat a = layer_norm(h, g1, be1);
    const Mat q = linear(a, qw, &qb), k = linear(a, kw, nullptr), v = linear(a, vw, &vb);
    const int64_t len = h.size();
    Mat o(len, std::vector<double>(D, 0.0));
    for (int64_t head = 0; head < H; ++head) {
      for (int64_t i = 0; i < len; ++i) {
        std::vector<double> s(len, -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j < len; ++j) {
          if (!allowed(i, j, pooled)) continue;
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d) dot += q[i][head * hd + d] * k[j][head * hd + d];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < len; ++j) z += std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx);
        for (int64_t j = 0; j < len; ++j) {
          if (std::isinf(s[j])) continue;
          const double pj = std::exp(s[j] - mx) / z;
          for (int64_t d = 0; d < hd; ++d) o[i][head * hd + d] += pj * v[j][head * hd + d];
        }
      }
    }
    const Mat proj = linear(o, ow, &ob);
    for (int64_t i = 0; i < len; ++i)
      for (int64_t d = 0; d < D; ++d) h[i][d] += proj[i][d];
    Mat f = linear(layer_norm(h, g2, be2), f1w, &f1b);
    for (auto& row : f)
      for (double& x : row) x = gelu(x);
    const Mat f2 = linear(f, f2w, &f2b);
    for (int64_t i = 0; i < len; ++i)
      for (int64_t d = 0; d < D; ++d) h[i][d] += f2[i][d];
    if (l + 1 == c.pooling_position) {
      const int64_t kk = c.pooling_kernel_size;
      Mat pooled_h((len + kk - 1) / kk, std::vector<double>(D, 0.0));
      for (int64_t i = 0; i < len; ++i)
        for (int64_t d = 0; d < D; ++d) pooled_h[i / kk][d] += h[i][d] / kk;  // zero-padded mean
      h = pooled_h;
      pooled = true;
    }
  }
  RefOutput out;
  out.pooled = h;
  const RefWeights cb = get(st, "codebook.weight");
  for (const auto& x : h) {
    int64_t best = 0;
    double best_d = INFINITY;
    for (int64_t v = 0; v < c.vocab_size; ++v) {
      double d2 = 0;
      for (int64_t d = 0; d < D; ++d) d2 += (x[d] - cb.at(v * D + d)) * (x[d] - cb.at(v * D + d));
      if (d2 < best_d) {
        best_d = d2;
        best = v;
      }
    }
    out.ids.push_back(best);
  }
  return out;
}

void check_against_reference(const std::string& config, int64_t n) {
  const std::string dir = test::tiny_model_dir("tokenizer", config);
  for (c10::ScalarType dtype : {at::kFloat, at::kDouble}) {
    ModelOptions options;
    options.path = dir;
    options.dtype = dtype;
    const auto model = TokenizerModel::load(options);
    const at::Tensor x = test::to_tensor(test::make_clip(n, 40 + n));
    const at::Tensor feats = model->segment_features(x, model->padded_length(n));
    const at::Tensor fd = feats.to(at::kDouble).contiguous();
    Mat fm(fd.size(0), std::vector<double>(fd.size(1)));
    for (int64_t i = 0; i < fd.size(0); ++i)
      for (int64_t j = 0; j < fd.size(1); ++j) fm[i][j] = fd[i][j].item<double>();
    const RefOutput ref = reference_forward(dir, {fm}, n);
    const TokenizerSegmentOutput got = model->forward_segment(feats, n);
    ASSERT_EQ(got.pooled.size(0), static_cast<int64_t>(ref.pooled.size()));
    at::Tensor ref_t = at::empty({static_cast<int64_t>(ref.pooled.size()), model->config().d_model}, at::kDouble);
    for (size_t i = 0; i < ref.pooled.size(); ++i)
      for (size_t d = 0; d < ref.pooled[i].size(); ++d) ref_t[i][d] = ref.pooled[i][d];
    const double err = (got.pooled.to(at::kDouble) - ref_t).abs().max().item<double>();
    const double scale = ref_t.abs().max().item<double>();
    std::printf("%s n=%lld %s: pooled max abs err %.3g (scale %.3g)\n", config.c_str(),
                static_cast<long long>(n), dtype == at::kFloat ? "f32" : "f64", err, scale);
    EXPECT_LT(err / scale, dtype == at::kFloat ? 1e-4 : 1e-10);
    const at::Tensor ids = got.ids.contiguous();
    EXPECT_EQ(std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()), ref.ids);
  }
}

TEST(SpeechReference, test_encoder_matches_scalar_reference_blocks) { check_against_reference("mk-a", 32000); }

TEST(SpeechReference, test_last_token_padding_semantics) {
  // n = 16000: token 12 averages conv frames 48..51, 50 and 51 being padding; n = 1281: two
  // tokens, the second almost all padding.
  check_against_reference("mk-a", 16000);
  check_against_reference("mk-a", 1281);
}

Mat to_mat(const at::Tensor& t) {
  const at::Tensor d = t.to(at::kDouble).contiguous();
  Mat m(d.size(0), std::vector<double>(d.size(1)));
  for (int64_t i = 0; i < d.size(0); ++i)
    for (int64_t j = 0; j < d.size(1); ++j) m[i][j] = d.data_ptr<double>()[i * d.size(1) + j];
  return m;
}

TEST(SpeechReference, test_streaming_floors_match_reference) {
  // §6.3 item 8: with a louder event after the first block, streaming floors block 0 with a
  // lower running maximum. Its pooled vectors must equal the reference computed with each
  // block's streaming floor (and differ from the plain offline forward).
  const std::string dir = test::tiny_model_dir("tokenizer", "mk-a");
  ModelOptions options;
  options.path = dir;
  options.dtype = at::kDouble;
  const auto model = TokenizerModel::load(options);
  const int64_t n = 32000;
  const std::vector<float> x = test::make_clip(n, 60, 20000);  // loud event in block 1
  TokenizerStreamOptions stream_options;
  stream_options.keep_pooled = true;
  TokenizerState state(model, stream_options);
  for (int64_t i = 0; i < n; i += 1000) state.push(x.data() + i, std::min<int64_t>(1000, n - i));
  state.finish();
  const std::vector<double> floors = state.block_max_logs();
  ASSERT_EQ(floors.size(), 3u);
  EXPECT_LT(floors[0], floors[1]) << "the event must raise the floor after block 0";
  const at::Tensor lg = log_mel_raw(test::to_tensor(x).to(at::kDouble),
                                    mel_filterbank(128, 400, 16000).to(at::kFloat).to(at::kDouble), 400, 160);
  std::vector<Mat> feats;
  for (double m : floors) feats.push_back(to_mat(log_mel_normalize(lg, m)));
  const RefOutput ref = reference_forward(dir, feats, n);
  const at::Tensor got = state.pooled();
  ASSERT_EQ(got.size(0), static_cast<int64_t>(ref.pooled.size()));
  double err = 0;
  for (int64_t i = 0; i < got.size(0); ++i)
    for (int64_t d = 0; d < got.size(1); ++d) err = std::max(err, std::abs(got[i][d].item<double>() - ref.pooled[i][d]));
  std::printf("streaming with per-block floors vs reference: max abs err %.3g\n", err);
  EXPECT_LT(err, 1e-9);
  const auto offline = model->forward_segment(model->segment_features(test::to_tensor(x), n), n);
  EXPECT_GT((offline.pooled.slice(0, 0, 10) - got.slice(0, 0, 10)).abs().max().item<double>(), 1e-6)
      << "block 0 sees a lower floor while streaming";
}

TEST(SpeechReference, test_post_pool_layer_matches_reference) { check_against_reference("mk-c", 16000); }

}  // namespace
}  // namespace glmvoice::speech
