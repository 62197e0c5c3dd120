// The small ops of a CPU decode step; see the header for why and for the rounding contract.
#include "llm/cpu_decode_ops.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "runtime/spin_pool.h"

#define GLMVOICE_AVX2 __attribute__((target("avx2,fma")))

// The reference's separate tensor ops round every product and sum on its own: no contraction
// into FMA here except where written as an intrinsic (exp's polynomial, dot products).
#pragma GCC optimize("fp-contract=off")

namespace glmvoice::llm::cpu {

namespace {

// A row of bf16 or f32 values as f32 (bf16 widening is exact).
inline float load_value(const at::BFloat16* p, int64_t i) { return static_cast<float>(p[i]); }
inline float load_value(const float* p, int64_t i) { return p[i]; }
inline void store_value(at::BFloat16* p, int64_t i, float v) { p[i] = at::BFloat16(v); }  // nearest even
inline void store_value(float* p, int64_t i, float v) { p[i] = v; }
// What a separate tensor op in dtype T leaves of an f32 result: itself, or its bf16 rounding.
inline float round_as(const float*, float v) { return v; }
inline float round_as(const at::BFloat16*, float v) { return static_cast<float>(at::BFloat16(v)); }

GLMVOICE_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
GLMVOICE_AVX2 inline __m256 load8(const at::BFloat16* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

GLMVOICE_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-7 polynomial, times 2^n.
GLMVOICE_AVX2 inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504019f);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  // Past the ends: +inf above (as std::exp overflows), 0 below; NaN stays NaN.
  y = _mm256_blendv_ps(y, _mm256_set1_ps(std::numeric_limits<float>::infinity()), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

GLMVOICE_AVX2 void exp_avx2(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(tail, x + i, static_cast<size_t>(n - i) * sizeof(float));
    _mm256_store_ps(tail, exp8(_mm256_load_ps(tail)));
    std::memcpy(x + i, tail, static_cast<size_t>(n - i) * sizeof(float));
  }
}

template <class T>
GLMVOICE_AVX2 void rms_norm_rows(const T* x, const float* w, T* y, int64_t N, int64_t H, float eps) {
  for (int64_t m = 0; m < N; ++m) {
    const T* xr = x + m * H;
    __m256 acc = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= H; k += 8) {
      const __m256 v = load8(xr + k);
      acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = hsum(acc);
    for (; k < H; ++k) ss += load_value(xr, k) * load_value(xr, k);
    const float var = ss / static_cast<float>(H);
    const float inv = 1.0f / std::sqrt(var + eps);  // rsqrt as libtorch computes it: 1 / sqrt
    for (k = 0; k < H; ++k) store_value(y + m * H, k, w[k] * (load_value(xr, k) * inv));
  }
}

template <class T>
void rotary_rows(T* mixed, int64_t N, int64_t row_stride, int64_t heads, int64_t d, int64_t r, const T* cos2,
                 const T* sin2) {
  for (int64_t m = 0; m < N; ++m) {
    const T* c = cos2 + m * r;
    const T* s = sin2 + m * r;
    for (int64_t h = 0; h < heads; ++h) {
      T* x = mixed + m * row_stride + h * d;
      for (int64_t i = 0; i < r; i += 2) {
        const float x0 = load_value(x, i), x1 = load_value(x, i + 1);
        const float a0 = round_as(x, x0 * load_value(c, i)), b0 = round_as(x, x1 * load_value(s, i));
        const float a1 = round_as(x, x1 * load_value(c, i + 1)), b1 = round_as(x, x0 * load_value(s, i + 1));
        store_value(x, i, a0 + b0);
        store_value(x, i + 1, a1 + b1);
      }
    }
  }
}

// Scores of one query head against consecutive keys (both widened to f32 already): scale *
// (q . k_t). Each dot sums its 8 lanes over k in increasing order, then hsum, then the scalar
// tail. Four keys at a time give the FMAs independent chains (named accumulators: an array of
// them is kept on the stack at -O2).
constexpr int64_t kKeysPerPass = 4;

GLMVOICE_AVX2 inline float finish_score(__m256 acc, const float* qh, const float* key, int64_t k, int64_t d,
                                        float scale) {
  float dot = hsum(acc);
  for (; k < d; ++k) dot += qh[k] * key[k];
  return dot * scale;
}

GLMVOICE_AVX2 inline void four_key_scores(const float* qh, const float* keys, int64_t d, float scale, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= d; k += 8) {
    const __m256 qv = _mm256_loadu_ps(qh + k);
    a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys + k), a0);
    a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys + d + k), a1);
    a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys + 2 * d + k), a2);
    a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys + 3 * d + k), a3);
  }
  out[0] = finish_score(a0, qh, keys, k, d, scale);
  out[1] = finish_score(a1, qh, keys + d, k, d, scale);
  out[2] = finish_score(a2, qh, keys + 2 * d, k, d, scale);
  out[3] = finish_score(a3, qh, keys + 3 * d, k, d, scale);
}

GLMVOICE_AVX2 inline float key_score(const float* qh, const float* key, int64_t d, float scale) {
  __m256 acc = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= d; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qh + k), _mm256_loadu_ps(key + k), acc);
  return finish_score(acc, qh, key, k, d, scale);
}

// The largest score. Any order gives the same value unless a score is NaN, and then every
// output is NaN whatever this returns.
GLMVOICE_AVX2 inline float max_score(const float* sc, int64_t S) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t t = 0;
  for (; t + 8 <= S; t += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(sc + t));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float mx = lanes[0];
  for (int i = 1; i < 8; ++i) mx = std::max(mx, lanes[i]);
  for (; t < S; ++t) mx = std::max(mx, sc[t]);
  return mx;
}

// num[0, d) += sum over t of p[t] * V[t] (V widened to f32 already), t increasing for every
// element (num holds the sum of the keys before; 0 to start), 64 columns at a time in
// registers, the rest in memory.
GLMVOICE_AVX2 void add_weighted_values(const float* p, const float* V, int64_t n, int64_t d, float* num) {
  int64_t c = 0;
  for (; c + 64 <= d; c += 64) {
    __m256 acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) acc[v] = _mm256_loadu_ps(num + c + 8 * v);
    for (int64_t t = 0; t < n; ++t) {
      const __m256 pt = _mm256_set1_ps(p[t]);
      const float* vt = V + t * d + c;
#pragma GCC unroll 8
      for (int v = 0; v < 8; ++v) acc[v] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vt + 8 * v), acc[v]);
    }
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) _mm256_storeu_ps(num + c + 8 * v, acc[v]);
  }
  for (int64_t t = 0; t < n && c < d; ++t) {
    const __m256 pt = _mm256_set1_ps(p[t]);
    const float* vt = V + t * d;
    int64_t k = c;
    for (; k + 8 <= d; k += 8) _mm256_storeu_ps(num + k, _mm256_fmadd_ps(pt, _mm256_loadu_ps(vt + k), _mm256_loadu_ps(num + k)));
    for (; k < d; ++k) num[k] += p[t] * vt[k];
  }
}

// Keys (or values) per block, as f32: a block stays in L1 while every head of the group reads it.
constexpr int64_t kKvBlockBytes = 8192;

// n values of a bf16 or f32 array as f32: bf16 widened into buf (exactly), f32 as it is.
GLMVOICE_AVX2 inline const float* as_f32(const float* src, int64_t, float*) { return src; }
GLMVOICE_AVX2 inline const float* as_f32(const at::BFloat16* src, int64_t n, float* buf) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(buf + i, load8(src + i));
  for (; i < n; ++i) buf[i] = load_value(src, i);
  return buf;
}

// Query heads [h0, h1) of one row: scores, softmax, weighted sum of V, into ctx. The heads of
// one KV group go together, block of keys by block of keys: the block is read from memory
// (and widened from bf16) once for all the group's heads instead of once per head. Every
// score, exp and sum is computed as for a head on its own, in the same order, from the same
// f32 values.
template <class T>
GLMVOICE_AVX2 void attend_heads(const T* q, const T* K, const T* V, T* ctx, int64_t h0, int64_t h1, int64_t S,
                                int64_t d, int64_t hpg, int64_t ks, float scale) {
  constexpr bool kReduced = !std::is_same<T, float>::value;
  const int64_t block = std::max<int64_t>(kKeysPerPass, kKvBlockBytes / (d * 4) / kKeysPerPass * kKeysPerPass);
  const int64_t span = std::min(h1 - h0, hpg);  // at most one group's heads at a time
  // Per-thread scratch, kept across calls (fresh buffers per call and layer cost page faults
  // once S is long).
  thread_local std::vector<float> score_buf, num_buf, q_buf, kv_buf, sums;
  auto grow = [](std::vector<float>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
  };
  float* const scores = grow(score_buf, span * S);
  float* const nums = grow(num_buf, span * d);
  float* const qbuf = grow(q_buf, span * d);
  float* const kvbuf = grow(kv_buf, block * d);
  float* const sum = grow(sums, span);
  for (int64_t a = h0; a < h1;) {
    const int64_t g = a / hpg, b = std::min(h1, (g + 1) * hpg), n = b - a;
    const T* Kg = K + g * ks;
    const T* Vg = V + g * ks;
    const float* qf = as_f32(q + a * d, n * d, qbuf);
    for (int64_t t0 = 0; t0 < S; t0 += block) {
      const int64_t t1 = std::min(S, t0 + block);
      const float* kf = as_f32(Kg + t0 * d, (t1 - t0) * d, kvbuf);  // keys t0 .. t1 - 1
      for (int64_t j = 0; j < n; ++j) {
        const float* qh = qf + j * d;
        float* sc = scores + j * S;
        int64_t t = t0;
        for (; t + kKeysPerPass <= t1; t += kKeysPerPass) four_key_scores(qh, kf + (t - t0) * d, d, scale, sc + t);
        for (; t < t1; ++t) sc[t] = key_score(qh, kf + (t - t0) * d, d, scale);
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      float* sc = scores + j * S;
      const float mx = max_score(sc, S);
      for (int64_t t = 0; t < S; ++t) sc[t] -= mx;
      exp_avx2(sc, S);
      float total = 0;
      for (int64_t t = 0; t < S; ++t) total += sc[t];
      // bf16: the weights meet V rounded to bf16 and the sum divides afterwards; f32: softmax first.
      for (int64_t t = 0; t < S; ++t) sc[t] = kReduced ? static_cast<float>(at::BFloat16(sc[t])) : sc[t] / total;
      sum[j] = total;
    }
    std::fill(nums, nums + n * d, 0.0f);
    for (int64_t t0 = 0; t0 < S; t0 += block) {
      const int64_t tn = std::min(S - t0, block);
      const float* vf = as_f32(Vg + t0 * d, tn * d, kvbuf);
      for (int64_t j = 0; j < n; ++j) add_weighted_values(scores + j * S + t0, vf, tn, d, nums + j * d);
    }
    for (int64_t j = 0; j < n; ++j) {
      const float* num = nums + j * d;
      for (int64_t k = 0; k < d; ++k) store_value(ctx + (a + j) * d, k, kReduced ? num[k] / sum[j] : num[k]);
    }
    a = b;
  }
}

template <class T>
GLMVOICE_AVX2 void silu_mul_rows(const T* u, T* out, int64_t N, int64_t ffn) {
  std::vector<float> g(static_cast<size_t>(ffn));
  for (int64_t m = 0; m < N; ++m) {
    const T* gate = u + m * 2 * ffn;
    const T* up = gate + ffn;
    for (int64_t k = 0; k < ffn; ++k) g[k] = -load_value(gate, k);
    exp_avx2(g.data(), ffn);  // exp(-x)
    for (int64_t k = 0; k < ffn; ++k) {
      const float silu = round_as(out, load_value(gate, k) / (1.0f + g[k]));
      store_value(out + m * ffn, k, silu * load_value(up, k));
    }
  }
}

void check_rows(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16),
              "cpu decode ops: ", what, " must be a contiguous float32 or bfloat16 CPU tensor");
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag{[] {
    const char* v = std::getenv("GLMVOICE_CPU_SMALL_OPS");
    return !(v != nullptr && std::string(v) == "0");
  }()};
  return flag;
}

}  // namespace

bool small_ops_enabled() { return enabled_flag().load(std::memory_order_relaxed); }
void set_small_ops_enabled(bool on) { enabled_flag().store(on, std::memory_order_relaxed); }

void exp_inplace(float* x, int64_t n) { exp_avx2(x, n); }

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, float eps) {
  check_rows(x, "x");
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.numel() == x.size(-1), "cpu rms_norm: weight");
  const int64_t H = x.size(-1), N = x.numel() / H;
  at::Tensor y = at::empty_like(x);
  if (x.scalar_type() == at::kFloat) {
    rms_norm_rows(x.data_ptr<float>(), w.data_ptr<float>(), y.data_ptr<float>(), N, H, eps);
  } else {
    rms_norm_rows(x.data_ptr<at::BFloat16>(), w.data_ptr<float>(), y.data_ptr<at::BFloat16>(), N, H, eps);
  }
  return y;
}

void rotary(const at::Tensor& mixed, int64_t heads, int64_t d, int64_t r, const at::Tensor& cos2,
            const at::Tensor& sin2) {
  check_rows(mixed, "qkv");
  TORCH_CHECK(cos2.scalar_type() == mixed.scalar_type() && sin2.scalar_type() == mixed.scalar_type() &&
                  cos2.is_contiguous() && sin2.is_contiguous() && cos2.numel() == mixed.size(0) * r &&
                  sin2.numel() == cos2.numel() && r % 2 == 0 && r <= d && heads * d <= mixed.size(1),
              "cpu rotary: tables or shapes");
  const int64_t N = mixed.size(0), stride = mixed.size(1);
  if (mixed.scalar_type() == at::kFloat) {
    rotary_rows(mixed.data_ptr<float>(), N, stride, heads, d, r, cos2.data_ptr<float>(), sin2.data_ptr<float>());
  } else {
    rotary_rows(mixed.data_ptr<at::BFloat16>(), N, stride, heads, d, r, cos2.data_ptr<at::BFloat16>(),
                sin2.data_ptr<at::BFloat16>());
  }
}

at::Tensor attend_one(const at::Tensor& q_row, const at::Tensor& K, const at::Tensor& V, int64_t nh, double scale) {
  TORCH_CHECK(K.dim() == 3 && V.sizes() == K.sizes() && K.stride(2) == 1 && K.stride(1) == K.size(2) &&
                  V.stride(0) == K.stride(0) && V.stride(1) == K.stride(1) && V.stride(2) == 1,
              "cpu attend_one: K/V must be [ng, S, d] with contiguous rows");
  const int64_t ng = K.size(0), S = K.size(1), d = K.size(2), ks = K.stride(0);
  TORCH_CHECK(q_row.device().is_cpu() && q_row.stride(-1) == 1 && q_row.numel() == nh * d && nh % ng == 0 &&
                  K.scalar_type() == q_row.scalar_type() && V.scalar_type() == q_row.scalar_type(),
              "cpu attend_one: q must be nh * d contiguous values in K's dtype");
  at::Tensor ctx = at::empty({1, nh * d}, q_row.options());
  const float sc = static_cast<float>(scale);  // as `tensor * double` scales an f32 tensor
  // Heads are independent: spread them over the step's threads once there is enough work, in
  // chunks of whole groups where there are enough groups for the threads (a group's heads share
  // each read of its K/V block), of equal parts of a group otherwise.
  const int64_t hpg = nh / ng, parts = std::max<int64_t>(1, (runtime::parallel_rows_threads() + ng - 1) / ng);
  const int64_t grain = std::max({int64_t{1}, 32768 / std::max<int64_t>(1, S * d), hpg / parts});
  runtime::parallel_rows(0, nh, grain, [&](int64_t h0, int64_t h1) {
    if (q_row.scalar_type() == at::kFloat) {
      attend_heads(q_row.data_ptr<float>(), K.data_ptr<float>(), V.data_ptr<float>(), ctx.data_ptr<float>(), h0, h1,
                   S, d, hpg, ks, sc);
    } else {
      attend_heads(q_row.data_ptr<at::BFloat16>(), K.data_ptr<at::BFloat16>(), V.data_ptr<at::BFloat16>(),
                   ctx.data_ptr<at::BFloat16>(), h0, h1, S, d, hpg, ks, sc);
    }
  });
  return ctx;
}

at::Tensor silu_mul(const at::Tensor& u, int64_t ffn) {
  check_rows(u, "u");
  TORCH_CHECK(u.dim() == 2 && u.size(1) == 2 * ffn, "cpu silu_mul: u must be [N, 2 * ffn]");
  const int64_t N = u.size(0);
  at::Tensor out = at::empty({N, ffn}, u.options());
  if (u.scalar_type() == at::kFloat) {
    silu_mul_rows(u.data_ptr<float>(), out.data_ptr<float>(), N, ffn);
  } else {
    silu_mul_rows(u.data_ptr<at::BFloat16>(), out.data_ptr<at::BFloat16>(), N, ffn);
  }
  return out;
}

}  // namespace glmvoice::llm::cpu
