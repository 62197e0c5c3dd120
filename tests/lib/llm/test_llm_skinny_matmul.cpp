// The AVX2 skinny matmul kernels (lib/llm/cpu_skinny_matmul.h) against a float64 reference of
// the same (dequantized) weights, for every weight format, M in {1, 2, 3, 5, 6, 7, 8, 16} and sizes
// with odd N and K tails; batch invariance (row m of an M-row call is bit-identical to the
// 1-row call); bias added before the one bf16 rounding; LinearWeight's dispatch and off switch.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include "llm/cpu_skinny_matmul.h"
#include "llm/quantized_linear.h"
#include "runtime/dtype.h"
#include "runtime/spin_pool.h"

namespace glmvoice::llm {
namespace {

#define SKIP_WITHOUT_KERNELS()                                                            \
  if (!skinny_kernels_supported()) GTEST_SKIP() << "this CPU lacks AVX2/FMA: no skinny kernels"

// 5, 6, 7: row blocks of 4 with a tail of 1, 2, 3 rows (the tile for M >= 4).
const std::vector<int64_t> kRows = {1, 2, 3, 5, 6, 7, 8, 16};

enum class Format { kF32, kBf16, kInt8, kInt4 };
std::string name(Format f) {
  switch (f) {
    case Format::kF32: return "fp32";
    case Format::kBf16: return "bf16";
    case Format::kInt8: return "int8";
    default: return "int4";
  }
}

// One weight in a format, with its dequantized values in float64 (what the kernel must equal).
struct TestWeight {
  Format format;
  at::Tensor dense, q8, scale8;  // dense fp32/bf16; int8 codes + per-row scale
  SkinnyInt4 int4;
  at::Tensor deq;  // [N, K] float64

  at::Tensor run(const at::Tensor& x, const at::Tensor& bias) const {
    switch (format) {
      case Format::kF32:
      case Format::kBf16: return skinny_linear_dense(x, dense, bias);
      case Format::kInt8: return skinny_linear_int8(x, q8, scale8, bias);
      default: return skinny_linear_int4(x, int4, bias);
    }
  }
  at::ScalarType x_dtype() const { return format == Format::kF32 ? at::kFloat : at::kBFloat16; }
};

TestWeight make_weight(Format f, int64_t n, int64_t k, int64_t group, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  TestWeight w{f, {}, {}, {}, {}, {}};
  if (f == Format::kF32 || f == Format::kBf16) {
    w.dense = (at::randn({n, k}, gen) * 0.05).to(f == Format::kF32 ? at::kFloat : at::kBFloat16);
    w.deq = w.dense.to(at::kDouble);
  } else if (f == Format::kInt8) {
    w.q8 = at::randint(-128, 128, {n, k}, gen).to(at::kChar);
    w.scale8 = (at::rand({n}, gen) * 0.01 + 1e-3).to(at::kBFloat16);
    w.deq = w.q8.to(at::kDouble) * w.scale8.to(at::kDouble).unsqueeze(1);
  } else {
    at::Tensor q = at::randint(0, 16, {n, k}, gen);
    at::Tensor scale = (at::rand({n, k / group}, gen) * 0.01 + 1e-3).to(at::kBFloat16);
    at::Tensor zero = (at::randn({n, k / group}, gen) * 0.02).to(at::kBFloat16);
    w.int4 = skinny_pack_int4(q, scale, zero, group);
    w.deq = ((q.to(at::kDouble) - 8).view({n, k / group, group}) * scale.to(at::kDouble).unsqueeze(2) +
             zero.to(at::kDouble).unsqueeze(2))
                .view({n, k});
  }
  return w;
}

// One bf16 ulp at |v| (the spacing of bf16 values there).
at::Tensor bf16_ulp(const at::Tensor& v) {
  at::Tensor e = at::floor(at::log2(v.abs().clamp_min(1e-30)));
  return at::pow(2.0, e - 7);
}

struct Case {
  Format format;
  int64_t n, k, group;
};

// Sizes with odd N (tile remainders) and K tails (fp32/int8: K % 8, bf16: K % 16; int4: K a
// multiple of the group, with and without K % 64 == 32).
const std::vector<Case> kCases = {
    {Format::kF32, 37, 77, 0},   {Format::kF32, 203, 1030, 0},  {Format::kF32, 9, 8, 0},
    {Format::kBf16, 37, 77, 0},  {Format::kBf16, 203, 1030, 0}, {Format::kBf16, 11, 16, 0},
    {Format::kInt8, 37, 77, 0},  {Format::kInt8, 203, 1030, 0}, {Format::kInt8, 5, 3, 0},
    {Format::kInt4, 37, 96, 32}, {Format::kInt4, 203, 1024, 128}, {Format::kInt4, 19, 192, 64},
    {Format::kInt4, 13, 224, 32},
    // int4's zero term runs over the groups 8 at a time, then one by one: 11 and 107 groups
    // (3424 columns in groups of 32: the mid model's FFN down-projection).
    {Format::kInt4, 21, 352, 32}, {Format::kInt4, 7, 3424, 32},
};

TEST(SkinnyMatmul, matches_float64_reference_for_every_format_and_row_count) {
  SKIP_WITHOUT_KERNELS();
  uint64_t seed = 1;
  for (const Case& c : kCases) {
    const TestWeight w = make_weight(c.format, c.n, c.k, c.group, seed++);
    for (int64_t M : kRows) {
      for (bool with_bias : {false, true}) {
        auto gen = at::detail::createCPUGenerator(seed++);
        const at::Tensor x = at::randn({M, c.k}, gen).to(w.x_dtype());
        const at::Tensor bias = with_bias ? (at::randn({c.n}, gen) * 0.1).to(w.x_dtype()) : at::Tensor();
        const at::Tensor y = w.run(x, bias);
        const std::string what = name(c.format) + " N=" + std::to_string(c.n) + " K=" + std::to_string(c.k) +
                                 " M=" + std::to_string(M) + (with_bias ? " +bias" : "");
        ASSERT_EQ(y.scalar_type(), x.scalar_type()) << what;
        ASSERT_EQ(y.sizes(), (at::IntArrayRef{M, c.n})) << what;
        const at::Tensor xd = x.to(at::kDouble);
        at::Tensor ref = at::matmul(xd, w.deq.t());
        if (with_bias) ref = ref + bias.to(at::kDouble);
        const at::Tensor scale = at::matmul(xd.abs(), w.deq.abs().t());  // sum |x w|: the rounding scale
        const at::Tensor err = (y.to(at::kDouble) - ref).abs();
        // fp32 accumulation: ~1e-5 of sum |x w|; a bf16 output adds its one rounding (<= 1 ulp
        // here, as the fp32 sum can sit on the other side of a rounding boundary).
        at::Tensor bound = scale * 1e-5 + 1e-30;
        if (y.scalar_type() == at::kBFloat16) bound = bound + bf16_ulp(ref);
        if (c.format == Format::kInt4 || c.format == Format::kInt8) {
          // int4 and int8 multiply x as int16 (x / s_g rounded, s_g = max |x over group g| /
          // 32767; int8's groups are kSkinnyInt8XGroup columns, the last one shorter): each x
          // moves by at most s_g / 2.
          const int64_t group = c.format == Format::kInt4 ? c.group : kSkinnyInt8XGroup;
          const int64_t groups = (c.k + group - 1) / group;
          const at::Tensor pad = at::zeros({M, groups * group - c.k}, xd.options());
          const at::Tensor wpad = at::zeros({c.n, groups * group - c.k}, xd.options());
          const at::Tensor half_step = at::cat({xd, pad}, 1).abs().view({M, groups, group}).amax(2) / 65534.0;
          const at::Tensor w_abs = at::cat({w.deq, wpad}, 1).abs().view({c.n, groups, group}).sum(2);
          bound = bound + at::matmul(half_step, w_abs.t());
        }
        const double worst = (err / bound).max().item<double>();
        EXPECT_LE(worst, 1.0) << what << ": error " << worst << " x the bound";
      }
    }
  }
}

// int4 and int8 multiply x rounded to int16: per group (the last one may be short),
// q = round(x * 32767 / max |x|), times max |x| / 32767. With fp32 x and output, the kernel
// equals that rule within fp32 rounding.
at::Tensor int16_rounded(const at::Tensor& xd, int64_t group) {
  at::Tensor out = xd.clone();
  for (int64_t k0 = 0; k0 < xd.size(1); k0 += group) {
    const int64_t width = std::min(group, xd.size(1) - k0);
    const at::Tensor part = xd.narrow(1, k0, width);
    const at::Tensor peak = part.abs().amax(1, true);
    const at::Tensor s = at::where(peak > 0, peak / 32767.0, at::ones_like(peak));
    out.narrow(1, k0, width).copy_(at::round(part / s) * s);
  }
  return out;
}

TEST(SkinnyMatmul, int4_and_int8_round_x_to_int16_per_group) {
  SKIP_WITHOUT_KERNELS();
  uint64_t seed = 700;
  for (const Case& c : kCases) {
    if (c.format != Format::kInt4 && c.format != Format::kInt8) continue;
    const int64_t group = c.format == Format::kInt4 ? c.group : kSkinnyInt8XGroup;
    const TestWeight w = make_weight(c.format, c.n, c.k, c.group, seed++);
    for (int64_t M : {1, 5}) {
      auto gen = at::detail::createCPUGenerator(seed++);
      at::Tensor x = at::randn({M, c.k}, gen);  // fp32: no output rounding to hide behind
      // int8: one large value per group makes the int16 steps coarse (~0.03 against |x| ~ 0.8),
      // so multiplying the unrounded x would miss the reference by far more than the bound.
      // (Not int4: its zero-point term takes the fp32 sums of the unrounded x.)
      if (c.format == Format::kInt8) {
        for (int64_t k0 = 0; k0 < c.k; k0 += group) x.select(1, k0).mul_(1000);
      }
      const at::Tensor y = w.run(x, {}).to(at::kDouble);
      const at::Tensor xq = int16_rounded(x.to(at::kDouble), group);
      const at::Tensor ref = at::matmul(xq, w.deq.t());
      // int4: the zero point enters as a second sum (sum_g zero_g * sum x) beside sum s * x * q:
      // the two partly cancel, so their own sizes, up to ~4x sum |x w| here, set the rounding.
      const double rel = c.format == Format::kInt4 ? 4e-5 : 1e-5;
      const at::Tensor bound = at::matmul(xq.abs(), w.deq.abs().t()) * rel + 1e-30;
      const double worst = ((y - ref).abs() / bound).max().item<double>();
      EXPECT_LE(worst, 1.0) << "N=" << c.n << " K=" << c.k << " M=" << M << ": error " << worst << " x the bound";
    }
  }
}

TEST(SkinnyMatmul, rows_are_batch_invariant_bit_for_bit) {
  SKIP_WITHOUT_KERNELS();
  uint64_t seed = 100;
  for (const Case& c : kCases) {
    const TestWeight w = make_weight(c.format, c.n, c.k, c.group, seed++);
    auto gen = at::detail::createCPUGenerator(seed++);
    const at::Tensor x = at::randn({16, c.k}, gen).to(w.x_dtype());
    const at::Tensor bias = (at::randn({c.n}, gen) * 0.1).to(w.x_dtype());
    std::vector<at::Tensor> solo;
    for (int64_t m = 0; m < 16; ++m) solo.push_back(w.run(x.narrow(0, m, 1), bias));
    for (int64_t M : kRows) {
      const at::Tensor y = w.run(x.narrow(0, 0, M), bias);
      for (int64_t m = 0; m < M; ++m) {
        EXPECT_TRUE(at::equal(y.narrow(0, m, 1), solo[static_cast<size_t>(m)]))
            << name(c.format) << " N=" << c.n << " K=" << c.k << ": row " << m << " of " << M
            << " differs from its 1-row call";
      }
    }
  }
}

// How many distinct threads runtime::parallel_rows (what the kernels split their rows with)
// runs on from this thread now. Each chunk waits (up to 200 ms) for a second thread to show
// up, so a caller that is quick to claim every chunk itself does not hide an idle helper.
int rows_threads_seen() {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  runtime::parallel_rows(0, 64, /*grain=*/1, [&](int64_t, int64_t) {
    std::unique_lock<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
    while (seen.size() < 2 && std::chrono::steady_clock::now() < deadline) {
      lock.unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      lock.lock();
    }
  });
  return static_cast<int>(seen.size());
}

// The kernels' row split really uses the threads (at::parallel_for silently ran on one while
// the library was built without OpenMP).
TEST(SkinnyMatmul, kernels_run_on_the_intra_op_threads) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  EXPECT_EQ(rows_threads_seen(), 2);
  at::set_num_threads(1);
  EXPECT_EQ(rows_threads_seen(), 1);
  at::set_num_threads(threads);
}

// Inside a decode step the kernels run on the spinning pool with the caller's thread count,
// libtorch's ops on the caller alone; both counts come back afterwards.
TEST(SkinnyMatmul, decode_step_scope_moves_the_kernels_to_the_pool) {
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  {
    runtime::DecodeStepScope scope;
    EXPECT_EQ(at::get_num_threads(), 1);
    EXPECT_EQ(runtime::parallel_rows_threads(), 2);
    EXPECT_EQ(rows_threads_seen(), 2);
  }
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(runtime::parallel_rows_threads(), 2);
  at::set_num_threads(threads);
}

TEST(SkinnyMatmul, pool_and_openmp_give_the_same_bits) {
  SKIP_WITHOUT_KERNELS();
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  uint64_t seed = 500;
  for (const Case& c : kCases) {
    const TestWeight w = make_weight(c.format, c.n, c.k, c.group, seed++);
    auto gen = at::detail::createCPUGenerator(seed++);
    const at::Tensor x = at::randn({3, c.k}, gen).to(w.x_dtype());
    const at::Tensor omp = w.run(x, {});
    at::Tensor pool;
    {
      runtime::DecodeStepScope scope;
      pool = w.run(x, {});
    }
    EXPECT_TRUE(at::equal(omp, pool)) << name(c.format) << " N=" << c.n << " K=" << c.k;
  }
  at::set_num_threads(threads);
}

TEST(SkinnyMatmul, thread_count_does_not_change_results) {
  SKIP_WITHOUT_KERNELS();
  const int threads = at::get_num_threads();
  uint64_t seed = 300;
  for (const Case& c : kCases) {
    const TestWeight w = make_weight(c.format, c.n, c.k, c.group, seed++);
    auto gen = at::detail::createCPUGenerator(seed++);
    const at::Tensor x = at::randn({3, c.k}, gen).to(w.x_dtype());
    at::set_num_threads(1);
    const at::Tensor one = w.run(x, {});
    at::set_num_threads(2);
    const at::Tensor two = w.run(x, {});
    EXPECT_TRUE(at::equal(one, two)) << name(c.format) << " N=" << c.n << " K=" << c.k;
  }
  at::set_num_threads(threads);
}

// y = 1 + 3·2^-10 before the bias, bias 3·2^-10: rounding once gives 1 + 2^-7; rounding the
// product first (to 1) and then the sum gives 1.
TEST(SkinnyMatmul, bias_is_added_before_the_one_bf16_rounding) {
  SKIP_WITHOUT_KERNELS();
  const double small = 3.0 / 1024;
  const auto bf = at::TensorOptions().dtype(at::kBFloat16);
  const at::Tensor x = at::ones({1, 32}, bf);
  at::Tensor wf = at::zeros({3, 32}, at::kFloat);
  wf[0][0] = 1.0;
  wf[0][5] = small;
  wf[1][31] = 1.0;  // same through the last column of a 16-block
  wf[1][17] = small;
  wf[2][0] = 1.0;
  const at::Tensor bias = at::full({3}, small, bf);
  const at::Tensor y = skinny_linear_dense(x, wf.to(at::kBFloat16), bias).to(at::kDouble);
  EXPECT_EQ(y[0][0].item<double>(), 1.0 + 1.0 / 128);
  EXPECT_EQ(y[0][1].item<double>(), 1.0 + 1.0 / 128);
  EXPECT_EQ(y[0][2].item<double>(), 1.0);  // 1 + 3·2^-10 alone rounds down
  // int8, scale 2^-7: x · q = 127 + 1 + 0.375 = 128.375, times the scale 1 + 3·2^-10.
  at::Tensor x8 = at::ones({1, 32}, at::kFloat);
  x8[0][9] = 0.375;
  at::Tensor q = at::zeros({1, 32}, at::kChar);
  q[0][0] = 127;
  q[0][1] = 1;
  q[0][9] = 1;
  const at::Tensor y8 = skinny_linear_int8(x8.to(at::kBFloat16), q, at::full({1}, 1.0 / 128, bf), at::full({1}, small, bf));
  EXPECT_EQ(y8.to(at::kDouble)[0][0].item<double>(), 1.0 + 1.0 / 128);
}

TEST(SkinnyMatmul, linear_weight_uses_the_kernels_and_the_off_switch_restores_libtorch) {
  SKIP_WITHOUT_KERNELS();
  auto gen = at::detail::createCPUGenerator(7);
  const int64_t N = 48, K = 256;  // libtorch's int4 packing needs N % 16 == 0
  const at::Tensor weight = at::randn({N, K}, gen) * 0.05;
  const at::Tensor bias32 = at::randn({N}, gen) * 0.1;
  for (c10::ScalarType format : {at::kFloat, at::kBFloat16, runtime::kInt8, runtime::kInt4}) {
    const auto act = runtime::compute_dtype(format);
    const at::Tensor bias = bias32.to(act);
    set_skinny_kernels_enabled(true);
    const LinearWeight on = LinearWeight::make(weight, format, "w");
    set_skinny_kernels_enabled(false);
    const LinearWeight off = LinearWeight::make(weight, format, "w");
    set_skinny_kernels_enabled(true);
    const std::string what = runtime::dtype_name(format);
    // The same dequantized weights either way (int4: the same codes, scales and zeros).
    EXPECT_TRUE(at::allclose(on.dequantized(), off.dequantized(), 0, 1e-6)) << what;
    EXPECT_EQ(on.storage_bytes() > 0, true) << what;
    for (int64_t M : {1, 5, 16, 40}) {  // 40: past the kernels' row limit (prefill)
      const at::Tensor x = at::randn({M, K}, gen).to(act);
      const at::Tensor a = on.forward(x, bias), b = off.forward(x, bias);
      ASSERT_EQ(a.sizes(), b.sizes()) << what;
      ASSERT_EQ(a.scalar_type(), b.scalar_type()) << what;
      const double tol = act == at::kFloat ? 1e-4 : 0.05;
      EXPECT_TRUE(at::allclose(a.to(at::kFloat), b.to(at::kFloat), tol, tol)) << what << " M=" << M;
    }
    // [B, T, K] inputs keep their leading shape.
    const at::Tensor x3 = at::randn({2, 3, K}, gen).to(act);
    EXPECT_EQ(on.forward(x3).sizes(), (at::IntArrayRef{2, 3, N})) << what;
  }
}

}  // namespace
}  // namespace glmvoice::llm
