// Reference: ATen/core/MT19937RNGEngine.h (torch 2.x): next_state() and operator(); the
// algorithm is Matsumoto and Nishimura's MT19937 (mt19937ar), with its twist on v & 1.
#include "llm/mt19937_fill.h"

#include <immintrin.h>

#include <algorithm>

#define GLMVOICE_AVX2 __attribute__((target("avx2")))

namespace glmvoice::llm {

namespace {

constexpr int64_t kN = 624, kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0df, kUpper = 0x80000000, kLower = 0x7fffffff;

inline uint32_t twist(uint32_t u, uint32_t v) { return (((u & kUpper) | (v & kLower)) >> 1) ^ ((v & 1) ? kMatrixA : 0); }

GLMVOICE_AVX2 inline __m256i load(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
GLMVOICE_AVX2 inline void store(uint32_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }

GLMVOICE_AVX2 inline __m256i twist8(__m256i u, __m256i v) {
  const __m256i mixed = _mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(static_cast<int>(kUpper))),
                                        _mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(kLower))));
  const __m256i odd = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_and_si256(v, _mm256_set1_epi32(1)));
  return _mm256_xor_si256(_mm256_srli_epi32(mixed, 1), _mm256_and_si256(odd, _mm256_set1_epi32(static_cast<int>(kMatrixA))));
}

// s[i] = s[i + M] ^ twist(s[i], s[i + 1]) for i < N - M (s[i + M] not yet renewed), then
// s[i] = s[i + M - N] ^ twist(...) (renewed) and the last word with s[0]. 8 lanes never reach
// a word renewed in the same vector: M - N = -227 and i + 1 .. i + 8 lie ahead.
GLMVOICE_AVX2 void next_state(uint32_t* s) {
  int64_t i = 0;
  for (; i + 8 <= kN - kM; i += 8) store(s + i, _mm256_xor_si256(load(s + i + kM), twist8(load(s + i), load(s + i + 1))));
  for (; i < kN - kM; ++i) s[i] = s[i + kM] ^ twist(s[i], s[i + 1]);
  for (; i + 8 <= kN - 1; i += 8) {
    store(s + i, _mm256_xor_si256(load(s + i + kM - kN), twist8(load(s + i), load(s + i + 1))));
  }
  for (; i < kN - 1; ++i) s[i] = s[i + kM - kN] ^ twist(s[i], s[i + 1]);
  s[kN - 1] = s[kM - 1] ^ twist(s[kN - 1], s[0]);
}

inline uint32_t temper(uint32_t y) {
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680;
  y ^= (y << 15) & 0xefc60000;
  return y ^ (y >> 18);
}

GLMVOICE_AVX2 void temper_words(const uint32_t* s, uint32_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i y = load(s + i);
    y = _mm256_xor_si256(y, _mm256_srli_epi32(y, 11));
    y = _mm256_xor_si256(y, _mm256_and_si256(_mm256_slli_epi32(y, 7), _mm256_set1_epi32(static_cast<int>(0x9d2c5680u))));
    y = _mm256_xor_si256(y, _mm256_and_si256(_mm256_slli_epi32(y, 15), _mm256_set1_epi32(static_cast<int>(0xefc60000u))));
    store(out + i, _mm256_xor_si256(y, _mm256_srli_epi32(y, 18)));
  }
  for (; i < n; ++i) out[i] = temper(s[i]);
}

}  // namespace

void mt19937_fill(at::mt19937& engine, uint32_t* out, int64_t n) {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (!avx2) {
    for (int64_t i = 0; i < n; ++i) out[i] = engine();
    return;
  }
  // engine() renews the state when --left_ reaches 0, then reads state[next_++]: left_ - 1
  // words are readable before the next renewal.
  at::mt19937_data_pod d = engine.data();
  while (n > 0) {
    if (d.left_ == 1) {
      next_state(d.state_.data());
      d.left_ = static_cast<int>(kN) + 1;  // the renewing call reads word 0 and leaves left_ = N
      d.next_ = 0;
    }
    const int64_t take = std::min<int64_t>(n, d.left_ - 1);
    temper_words(d.state_.data() + d.next_, out, take);
    d.next_ += static_cast<uint32_t>(take);
    d.left_ -= static_cast<int>(take);
    out += take;
    n -= take;
  }
  engine.set_data(d);
}

}  // namespace glmvoice::llm
