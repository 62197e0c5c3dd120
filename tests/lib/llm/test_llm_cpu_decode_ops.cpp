// The decode step's CPU loops (lib/llm/cpu_decode_ops.h) against the libtorch ops LlmModel
// uses otherwise, in float32 and bfloat16: rotary bit for bit (no sums involved, so the same
// roundings give the same bits), the others within a few f32 ulps / one bf16 ulp (only
// summation orders differ); exp against std::exp, rows independent of the batch.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "llm/cpu_decode_ops.h"
#include "llm/cpu_skinny_matmul.h"
#include "runtime/spin_pool.h"

namespace glmvoice::llm {
namespace {

#define SKIP_WITHOUT_AVX2() \
  if (!skinny_kernels_supported()) GTEST_SKIP() << "this CPU lacks AVX2/FMA: the decode step keeps libtorch's ops"

const at::ScalarType kDtypes[] = {at::kFloat, at::kBFloat16};

// Bound on |ours - ref| for outputs in dtype: f32 rounding noise, or one bf16 step of the value.
void expect_close(const at::Tensor& ours, const at::Tensor& ref, at::ScalarType dtype, const char* what) {
  ASSERT_EQ(ours.sizes(), ref.sizes()) << what;
  ASSERT_EQ(ours.scalar_type(), ref.scalar_type()) << what;
  const at::Tensor a = ours.to(at::kFloat), b = ref.to(at::kFloat);
  const double rel = dtype == at::kFloat ? 1e-5 : 1.0 / 128;  // bf16: 8 significant bits
  const at::Tensor bound = b.abs() * rel + 1e-6;
  const bool ok = ((a - b).abs() <= bound).all().item<bool>();
  EXPECT_TRUE(ok) << what << " (" << c10::toString(dtype) << "): max abs diff " << (a - b).abs().max().item<double>();
  if (dtype == at::kBFloat16) {  // and most values bit-equal: a rounding fault would change many
    const double same = (a == b).to(at::kFloat).mean().item<double>();
    EXPECT_GT(same, 0.95) << what << ": only " << 100 * same << " % bit-equal";
  }
}

at::Tensor reference_rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor var = x32.pow(2).mean(-1, true);
  return (w * (x32 * at::rsqrt(var + eps))).to(x.scalar_type());
}

TEST(CpuDecodeOps, rms_norm_matches_libtorch) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(1);
  for (auto dtype : kDtypes) {
    for (int64_t H : {1024, 1037}) {  // a tail past the 8-wide blocks
      const at::Tensor x = (at::randn({3, H}) * 4).to(dtype), w = at::rand({H}) + 0.5;
      expect_close(cpu::rms_norm(x, w, 1.5625e-7f), reference_rms_norm(x, w, 1.5625e-7), dtype, "rms_norm");
    }
  }
}

TEST(CpuDecodeOps, rotary_is_bit_identical_to_the_tensor_ops) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(2);
  const int64_t N = 3, heads = 10, d = 128, r = 64, out = heads * d + 256;  // + V columns, untouched
  for (auto dtype : kDtypes) {
    const at::Tensor mixed = at::randn({N, out}).to(dtype);
    const at::Tensor angles = at::rand({N, r / 2}) * 50;
    const at::Tensor c = angles.cos().to(dtype), s = angles.sin().to(dtype);
    const at::Tensor cos2 = at::stack({c, c}, -1), sin2 = at::stack({-s, s}, -1);
    at::Tensor ref = mixed.clone();
    at::Tensor pairs = ref.narrow(1, 0, heads * d).view({N, heads, d}).narrow(2, 0, r).view({N, heads, r / 2, 2});
    const at::Tensor cv = cos2.view({N, 1, r / 2, 2}), sv = sin2.view({N, 1, r / 2, 2});
    pairs.copy_(pairs * cv + pairs.flip(-1) * sv);
    at::Tensor ours = mixed.clone();
    cpu::rotary(ours, heads, d, r, cos2, sin2);
    EXPECT_TRUE(at::equal(ours, ref)) << c10::toString(dtype) << ": max abs diff "
                                      << (ours.to(at::kFloat) - ref.to(at::kFloat)).abs().max().item<double>();
  }
}

// LlmModel::attend for one query row that sees every key, in dtype's rounding.
at::Tensor reference_attend(const at::Tensor& q, const at::Tensor& K, const at::Tensor& V, int64_t nh, double scale) {
  const int64_t ng = K.size(0), d = K.size(2), hpg = nh / ng;
  const at::Tensor qg = q.reshape({ng, hpg, d});
  if (q.scalar_type() == at::kFloat) {
    return at::matmul(at::softmax(at::matmul(qg, K.transpose(1, 2)) * scale, -1), V).reshape({1, nh * d});
  }
  const at::Tensor scores = at::matmul(qg.to(at::kFloat), K.to(at::kFloat).transpose(1, 2)) * scale;
  const at::Tensor e = (scores - std::get<0>(scores.max(-1, true))).exp();
  const at::Tensor ctx = at::matmul(e.to(q.scalar_type()).to(at::kFloat), V.to(at::kFloat)) / e.sum(-1, true);
  return ctx.to(q.scalar_type()).reshape({1, nh * d});
}

TEST(CpuDecodeOps, attend_one_matches_the_reference_attention) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(3);
  const int64_t d = 128, cap = 700;
  // 8 heads in 2 groups; 12 heads in 1 group, which two threads split within the group.
  for (auto [nh, ng] : {std::pair<int64_t, int64_t>{8, 2}, {12, 1}}) {
    for (auto dtype : kDtypes) {
      for (int64_t S : {1, 7, 161, 650}) {  // 650: enough work to split the heads over threads
        const at::Tensor q = (at::randn({nh * d}) * 2).to(dtype);
        const at::Tensor Kc = at::randn({ng, cap, d}).to(dtype), Vc = at::randn({ng, cap, d}).to(dtype);
        const at::Tensor K = Kc.narrow(1, 0, S), V = Vc.narrow(1, 0, S);  // cache views, as the model passes them
        const double scale = 1.0 / std::sqrt(static_cast<double>(d));
        expect_close(cpu::attend_one(q, K, V, nh, scale), reference_attend(q, K, V, nh, scale), dtype, "attend_one");
      }
    }
  }
}

// Heads split over threads (the suite runs with one thread: this sets two): whole groups, or
// parts of one group, give the bits of the one-thread call.
TEST(CpuDecodeOps, attend_one_split_over_threads_gives_the_same_bits) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(6);
  const int64_t d = 64, S = 900;
  const int threads = at::get_num_threads();
  for (auto [nh, ng] : {std::pair<int64_t, int64_t>{16, 2}, {12, 1}}) {
    for (auto dtype : kDtypes) {
      const at::Tensor q = (at::randn({nh * d}) * 2).to(dtype);
      const at::Tensor K = at::randn({ng, S, d}).to(dtype), V = at::randn({ng, S, d}).to(dtype);
      at::set_num_threads(1);
      const at::Tensor one = cpu::attend_one(q, K, V, nh, 0.125);
      at::set_num_threads(2);
      at::Tensor pool, omp = cpu::attend_one(q, K, V, nh, 0.125);
      {
        runtime::DecodeStepScope scope;  // the step's spinning pool
        pool = cpu::attend_one(q, K, V, nh, 0.125);
      }
      at::set_num_threads(threads);
      EXPECT_TRUE(at::equal(one, omp)) << nh << " heads, " << ng << " groups, " << c10::toString(dtype);
      EXPECT_TRUE(at::equal(one, pool)) << nh << " heads, " << ng << " groups, " << c10::toString(dtype);
    }
  }
}

TEST(CpuDecodeOps, silu_mul_matches_libtorch) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(4);
  const int64_t ffn = 3424;
  for (auto dtype : kDtypes) {
    at::Tensor u = (at::randn({2, 2 * ffn}) * 6).to(dtype);
    u[0][0] = -200.0;  // exp(-x) overflows: silu is -0, not NaN
    u[0][1] = 200.0;
    const at::Tensor ref = at::silu(u.narrow(1, 0, ffn)) * u.narrow(1, ffn, ffn);
    const at::Tensor ours = cpu::silu_mul(u, ffn);
    expect_close(ours, ref, dtype, "silu_mul");
    EXPECT_FALSE(at::isnan(ours).any().item<bool>());
  }
}

TEST(CpuDecodeOps, rows_do_not_depend_on_the_batch) {
  SKIP_WITHOUT_AVX2();
  at::manual_seed(5);
  for (auto dtype : kDtypes) {
    const at::Tensor x = at::randn({5, 1024}).to(dtype), w = at::rand({1024});
    const at::Tensor all = cpu::rms_norm(x, w, 1e-6f);
    const at::Tensor u = at::randn({5, 2 * 512}).to(dtype);
    const at::Tensor m = cpu::silu_mul(u, 512);
    for (int64_t i = 0; i < 5; ++i) {
      EXPECT_TRUE(at::equal(all[i], cpu::rms_norm(x.narrow(0, i, 1).contiguous(), w, 1e-6f)[0]));
      EXPECT_TRUE(at::equal(m[i], cpu::silu_mul(u.narrow(0, i, 1).contiguous(), 512)[0]));
    }
  }
}

// Distance in units in the last place between two finite floats of the same sign.
int64_t ulps(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::abs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

TEST(CpuDecodeOps, exp_is_within_two_ulps_of_std_exp) {
  SKIP_WITHOUT_AVX2();
  std::vector<float> x;
  for (float v = -87.0f; v <= 88.0f; v += 0.0137f) x.push_back(v);
  std::vector<float> y = x;
  cpu::exp_inplace(y.data(), static_cast<int64_t>(y.size()));  // odd count: the tail path too
  int64_t worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, ulps(y[i], std::exp(x[i])));
  EXPECT_LE(worst, 2);
  float edge[4] = {100.0f, -100.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f};
  cpu::exp_inplace(edge, 4);
  EXPECT_TRUE(std::isinf(edge[0]) && edge[0] > 0);
  EXPECT_EQ(edge[1], 0.0f);
  EXPECT_TRUE(std::isnan(edge[2]));
  EXPECT_EQ(edge[3], 1.0f);
}

}  // namespace
}  // namespace glmvoice::llm
