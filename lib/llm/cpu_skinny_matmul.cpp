// Skinny matmul kernels (see the header for why and for the batch-invariance contract).
//
// Shape of the work: output rows n are split over runtime::parallel_rows' threads (the spinning
// pool inside a decode step, at::parallel_for elsewhere); each thread walks
// its rows in tiles of NB rows, and for each tile runs every block of MB activation rows over
// the whole of K, so the tile's weights come from memory once and from L1/L2 for the other
// row blocks. Inside a tile, one 8-lane fp32 accumulator per (m, n) (int4: per group) sums
// x[m, k] * w[n, k] over blocks of k in increasing order; a fixed horizontal sum and a scalar
// tail for K % block finish it. The tile shape (NB x MB) is chosen from M for register use
// and independent accumulator chains; it never changes what each accumulator computes.
//
// Weight conversion to fp32, per format, without a dequantized copy:
//   bf16: a 32-byte load is 16 weights; <<16 gives the even columns, & 0xffff0000 the odd ones
//         (x is de-interleaved to match once per call).
//   int8: integer products, like int4 below: x rounded to int16 per group of 128 columns, 16
//         weights sign-extended to int16 (vpmovsxbw) and multiplied with x into int32
//         (vpmaddwd); per group the sum times x's scale in fp32, the row's scale at the end.
//         (The fp32 way, vpmovsxbd + vcvtdq2ps + FMA per 8 weights, was bound by arithmetic.)
//   int4: integer products instead: x is rounded to int16 per group (x / s, s = max |x| / 32767
//         over the group: 15 bits relative to the group's largest value, finer than x's own
//         bf16 rounding), a 32-byte load holds 64 codes (column j in the low nibble of byte j,
//         column 32 + j in the high one), a mask or a shift and mask and two byte-to-word
//         unpacks give 32 codes as int16, and vpmaddwd multiplies 16 of them with x exactly into
//         int32. Per group g the kernel adds scale * s * sum(xq * q) in fp32, and at the end
//         sum_g (zero - 8 * scale) * sum(x over g) (the fp32 group sums of x computed once per
//         call), which together are sum(x * ((q - 8) * scale + zero)) up to x's int16 rounding.
//         (The fp32 way, one and, one conversion and one multiply-add per 8 weights, was bound
//         by the conversions: mid output layer [168960, 1024], 2 threads, 6.5-8.2 -> 5.0 ms.)
#include "llm/cpu_skinny_matmul.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/spin_pool.h"

#define GLMVOICE_AVX2 __attribute__((target("avx2,fma")))

// Complete unrolling of the tile loops early enough that the accumulator arrays live in
// registers (at -O2 GCC unrolls them after scalar replacement, leaving them on the stack).
#pragma GCC optimize("O3")

namespace glmvoice::llm {

namespace {

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> flag{[] {
    const char* v = std::getenv("GLMVOICE_CPU_KERNELS");
    return !(v != nullptr && std::string(v) == "0");
  }()};
  return flag;
}

inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

GLMVOICE_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- weight formats for the dense tile: kBlock columns = kVecs vectors of 8 ---------------

struct F32Rows {
  using T = float;
  static constexpr int kBlock = 8, kVecs = 1;
  // Prefetch only with 2+ rows, spread over all row blocks' passes over a tile (see Prefetcher).
  static constexpr int64_t kPrefetchFromRows = 2;
  static constexpr bool kPrefetchEveryPass = true;
  GLMVOICE_AVX2 static inline __m256 load(const float* w, int64_t b, int) { return _mm256_loadu_ps(w + 8 * b); }
  static float scalar(const float* w, int64_t k) { return w[k]; }
};

struct Bf16Rows {
  using T = uint16_t;
  static constexpr int kBlock = 16, kVecs = 2;
  static constexpr int64_t kPrefetchFromRows = 1;
  static constexpr bool kPrefetchEveryPass = false;
  GLMVOICE_AVX2 static inline __m256 load(const uint16_t* w, int64_t b, int p) {
    const __m256i r = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 16 * b));
    return p == 0 ? _mm256_castsi256_ps(_mm256_slli_epi32(r, 16))  // even columns
                  : _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static float scalar(const uint16_t* w, int64_t k) { return bf16_bits_to_float(w[k]); }
};

// Where a tile's sums go: y[m, n] = sum * row_scale[n] + bias[n], in fp32 or rounded to bf16.
struct Output {
  const float* row_scale = nullptr;  // int8
  const float* bias = nullptr;
  float* y32 = nullptr;
  c10::BFloat16* y16 = nullptr;
  int64_t n_cols = 0;
  GLMVOICE_AVX2 inline void store(int64_t m, int64_t n, float sum) const {
    float v = row_scale != nullptr ? sum * row_scale[n] : sum;
    if (bias != nullptr) v += bias[n];
    if (y32 != nullptr) {
      y32[m * n_cols + n] = v;
    } else {
      y16[m * n_cols + n] = c10::BFloat16(v);  // round to nearest even, once
    }
  }
};

// x prepared for the kernel: [M, ld] fp32 in the column order the format reads.
struct Activations {
  const float* x = nullptr;
  int64_t ld = 0;
  const float* group_sums = nullptr;  // int4: [M, groups] sums of x per group
  int64_t groups = 0;
};

// Software prefetch kPrefetchAhead bytes (at least one tile) ahead of the tile being read,
// spread evenly over its blocks. A tile's NB rows are NB short streams, each starting on a
// fresh 4 KiB page (a 1024-column fp32 row is one page) where the hardware prefetchers must
// re-train, and a small int4 tile is over before they do; measured, the loads then wait on
// memory latency instead of streaming.
// fp32 rows stream well enough on their own: measured (1 thread, fp32 [168960, 1024] at one
// row), software prefetch made it ~20 % slower there, while int8/int4 gained 1.3-1.7x. With
// 2+ rows, fp32 makes 2+ passes per tile, the first waiting on memory and the others on the
// multiply-adds; prefetching the next tile across all passes overlaps the two (measured,
// 1 thread, [50000, 1024], M = 8: 24-28 -> 16-21 ms; bf16 the same, int8 ~8 % slower, so
// they keep prefetching in the first pass only).
constexpr int64_t kPrefetchAhead = 16384;

struct Prefetcher {
  const char* next = nullptr;  // first byte to fetch; null: nothing to fetch
  int64_t bytes = 0;           // how many
  int64_t per_block = 0, done = 0, cursor = 0;
  void start(int64_t blocks) { per_block = blocks > 0 ? (bytes + blocks - 1) / blocks : bytes; }
  GLMVOICE_AVX2 inline void step() {
    if (next == nullptr) return;
    cursor += per_block;
    for (; done < cursor && done < bytes; done += 64) _mm_prefetch(next + done, _MM_HINT_T0);
  }
};

// The bytes [tile + ahead, tile + ahead + tile size) of a thread's contiguous rows, clipped to
// its range [begin, end) (row_bytes each, from base).
inline Prefetcher prefetch_ahead(const char* base, int64_t row_bytes, int64_t n0, int64_t nb, int64_t end) {
  const int64_t tile = nb * row_bytes, ahead = std::max(kPrefetchAhead, tile);
  const int64_t from = n0 * row_bytes + ahead, to = std::min(from + tile, end * row_bytes);
  if (from >= to) return {};
  return {base + from, to - from};
}

// One tile: MB activation rows x NB weight rows over all of K; sums[m * NB + n].
template <class R, int MB, int NB>
GLMVOICE_AVX2 void dense_tile(const typename R::T* w, int64_t ldw, const float* x, int64_t ldx, int64_t K,
                              float* sums, Prefetcher& pf) {
  __m256 acc[MB][NB];
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) acc[m][n] = _mm256_setzero_ps();
  }
  const int64_t blocks = K / R::kBlock;
  for (int64_t b = 0; b < blocks; ++b) {
    pf.step();
#pragma GCC unroll 2
    for (int p = 0; p < R::kVecs; ++p) {
      __m256 xv[MB];
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) xv[m] = _mm256_loadu_ps(x + m * ldx + b * R::kBlock + 8 * p);
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) {
        const __m256 wv = R::load(w + n * ldw, b, p);
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) acc[m][n] = _mm256_fmadd_ps(xv[m], wv, acc[m][n]);
      }
    }
  }
  for (int m = 0; m < MB; ++m) {
    for (int n = 0; n < NB; ++n) {
      float s = hsum(acc[m][n]);
      for (int64_t k = blocks * R::kBlock; k < K; ++k) s += x[m * ldx + k] * R::scalar(w + n * ldw, k);
      sums[m * NB + n] = s;
    }
  }
}

// int4: codes [N, K64 / 2] (K64 = K rounded up to 64; 32 bytes per 64 columns), params
// [N, 2, groups] fp32 (the groups' scales, then their zero - 8 * scale).
struct Int4Rows {
  const uint8_t* codes;
  const float* params;
  int64_t group, groups, row_bytes;
};

// x for int4: per row K64 int16 values (x / its group's scale, rounded), each 32-column half
// block in the order the codes unpack to (columns 0-7, 16-23, then 8-15, 24-31 of the half);
// per row and group the scale (max |x| / 32767) and the fp32 sum of x.
struct Int4Activations {
  const int16_t* xq = nullptr;
  int64_t ld = 0;
  const float* xscale = nullptr;  // [M, groups]
  const float* group_sums = nullptr;  // [M, groups]
  int64_t groups = 0;
};

// The 32 codes of half HALF of a 64-column block as int16: u0 = its columns 0-7 and 16-23,
// u1 = 8-15 and 24-31 (vpunpck{l,h}bw work within 128-bit lanes).
template <int HALF>
GLMVOICE_AVX2 inline void int4_unpack(__m256i raw, __m256i& u0, __m256i& u1) {
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i v = HALF == 0 ? _mm256_and_si256(raw, nibble) : _mm256_and_si256(_mm256_srli_epi16(raw, 4), nibble);
  u0 = _mm256_unpacklo_epi8(v, _mm256_setzero_si256());
  u1 = _mm256_unpackhi_epi8(v, _mm256_setzero_si256());
}

// One half block: acc[m][n] += sum over its 32 columns of q * xq (vpmaddwd: exact in int32).
template <int MB, int NB, int HALF>
GLMVOICE_AVX2 inline void int4_half(const uint8_t* codes, int64_t ldc, const int16_t* xb, int64_t ldx,
                                    __m256i (&acc)[MB][NB]) {
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) {
    __m256i u0, u1;
    int4_unpack<HALF>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + n * ldc)), u0, u1);
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      const __m256i* xm = reinterpret_cast<const __m256i*>(xb + m * ldx);
      acc[m][n] = _mm256_add_epi32(acc[m][n], _mm256_add_epi32(_mm256_madd_epi16(u0, _mm256_loadu_si256(xm)),
                                                                _mm256_madd_epi16(u1, _mm256_loadu_si256(xm + 1))));
    }
  }
}

// Per group g: the integer sums of q * xq over its columns (at most 2 * 15 * 32767 per lane and
// pair, 128 columns: far from overflow), then tot += float(sum) * scale_g * xscale_g; at the
// end the zero term sum_g (zero_g - 8 scale_g) * sum(x over g) from the fp32 group sums of x,
// 8 groups at a time and then one by one, after the horizontal sum of tot.
template <int MB, int NB>
GLMVOICE_AVX2 void int4_tile(const Int4Rows& w, int64_t n0, const Int4Activations& a, int64_t m0, float* sums,
                             Prefetcher& pf) {
  const int64_t groups = w.groups, halves_per_group = w.group / 32;
  const uint8_t* codes = w.codes + n0 * w.row_bytes;
  const float* params = w.params + n0 * 2 * groups;
  const int16_t* x = a.xq + m0 * a.ld;
  const float* xs = a.xscale + m0 * groups;
  const float* gsums = a.group_sums + m0 * groups;
  alignas(32) float tot[MB][NB][8];
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) _mm256_store_ps(tot[m][n], _mm256_setzero_ps());
  }
  int64_t h = 0;  // 32-column half blocks, in k order
  for (int64_t g = 0; g < groups; ++g) {
    __m256i acc[MB][NB];
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[m][n] = _mm256_setzero_si256();
    }
    for (int64_t e = h + halves_per_group; h < e; ++h) {
      pf.step();
      const uint8_t* cb = codes + (h / 2) * 32;
      const int16_t* xb = x + h * 32;
      if (h % 2 == 0) {
        int4_half<MB, NB, 0>(cb, w.row_bytes, xb, a.ld, acc);
      } else {
        int4_half<MB, NB, 1>(cb, w.row_bytes, xb, a.ld, acc);
      }
    }
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) {
      const float sg = params[n * 2 * groups + g];
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) {
        const __m256 scale = _mm256_set1_ps(sg * xs[m * groups + g]);
        _mm256_store_ps(tot[m][n], _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[m][n]), scale, _mm256_load_ps(tot[m][n])));
      }
    }
  }
  for (int m = 0; m < MB; ++m) {
    const float* gs = gsums + m * groups;
    for (int n = 0; n < NB; ++n) {
      const float* zc = params + n * 2 * groups + groups;
      __m256 z = _mm256_setzero_ps();
      int64_t g = 0;
      for (; g + 8 <= groups; g += 8) z = _mm256_fmadd_ps(_mm256_loadu_ps(zc + g), _mm256_loadu_ps(gs + g), z);
      float s = hsum(_mm256_load_ps(tot[m][n])) + hsum(z);
      for (; g < groups; ++g) s += zc[g] * gs[g];
      sums[m * NB + n] = s;
    }
  }
}

// int8 in integers, like int4: x rounded to int16 per group of kInt8XGroup columns (scale
// max |x| / 32767), each 16 weights sign-extended to int16 (vpmovsxbw) and multiplied with x
// exactly into int32 by vpmaddwd (|q x| <= 127 * 32767: 128 columns per lane pair stay far from
// overflow); per group tot += float(sum) * xscale_g, the row scale at the store. The fp32 way
// (vpmovsxbd, vcvtdq2ps, FMA per 8 weights) reached ~10.5 G weights/s per thread hot in L2
// against ~22 for this (a throwaway driver, [512, 1024], 1 thread): below the memory's pace
// with 2 threads, so int8 decode was bound by arithmetic.
constexpr int64_t kInt8XGroup = kSkinnyInt8XGroup;

struct Int8Activations {
  const int16_t* xq = nullptr;  // [M, ld]: x / xscale rounded, natural column order, zeros past K
  int64_t ld = 0;
  const float* xscale = nullptr;  // [M, groups]
  int64_t groups = 0;
};

template <int MB, int NB>
GLMVOICE_AVX2 void int8_tile(const int8_t* w, int64_t K, const Int8Activations& a, int64_t m0, float* sums,
                             Prefetcher& pf) {
  const int16_t* x = a.xq + m0 * a.ld;
  const float* xs = a.xscale + m0 * a.groups;
  alignas(32) float tot[MB][NB][8];
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) _mm256_store_ps(tot[m][n], _mm256_setzero_ps());
  }
  int32_t tail[MB][NB] = {};
  const int64_t blocks = K / 16;
  for (int64_t g = 0; g < a.groups; ++g) {
    __m256i acc[MB][NB];
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) acc[m][n] = _mm256_setzero_si256();
    }
    const int64_t b_end = std::min(blocks, (g + 1) * (kInt8XGroup / 16));
    for (int64_t b = g * (kInt8XGroup / 16); b < b_end; ++b) {
      pf.step();
      __m256i xv[MB];
#pragma GCC unroll 4
      for (int m = 0; m < MB; ++m) xv[m] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + m * a.ld + 16 * b));
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) {
        const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + n * K + 16 * b)));
#pragma GCC unroll 4
        for (int m = 0; m < MB; ++m) acc[m][n] = _mm256_add_epi32(acc[m][n], _mm256_madd_epi16(wv, xv[m]));
      }
    }
    if (g == a.groups - 1) {  // columns past the last whole 16 (K % 16), in the last group
      for (int64_t k = blocks * 16; k < K; ++k) {
        for (int m = 0; m < MB; ++m) {
          for (int n = 0; n < NB; ++n) tail[m][n] += int32_t{w[n * K + k]} * int32_t{x[m * a.ld + k]};
        }
      }
    }
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      const __m256 scale = _mm256_set1_ps(xs[m * a.groups + g]);
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) {
        __m256i v = acc[m][n];
        if (g == a.groups - 1) v = _mm256_add_epi32(v, _mm256_setr_epi32(tail[m][n], 0, 0, 0, 0, 0, 0, 0));
        _mm256_store_ps(tot[m][n], _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), scale, _mm256_load_ps(tot[m][n])));
      }
    }
  }
  for (int m = 0; m < MB; ++m) {
    for (int n = 0; n < NB; ++n) sums[m * NB + n] = hsum(_mm256_load_ps(tot[m][n]));
  }
}

// All activation rows against weight rows [n0, n0 + NB), in blocks of up to MB rows, each a
// pass over the tile (the first from memory, the others from cache); the next tile is
// prefetched during the first pass or spread over all of them (kPrefetchEveryPass).
template <class Tile, int NB, int MB>
GLMVOICE_AVX2 void rows_tile(const Tile& tile, int64_t n0, int64_t n_end, int64_t M, const Output& out) {
  float sums[MB * NB];
  Prefetcher pf = M >= Tile::kPrefetchFromRows ? prefetch_ahead(tile.base(), tile.row_bytes(), n0, NB, n_end) : Prefetcher{};
  pf.start(tile.steps() * (Tile::kPrefetchEveryPass ? (M + MB - 1) / MB : 1));
  for (int64_t m = 0; m < M; m += MB) {
    const int64_t mb = std::min<int64_t>(MB, M - m);
    if (mb == MB) {
      tile.template run<MB, NB>(n0, m, sums, pf);
    } else if (mb == 3) {
      tile.template run<(MB > 3 ? 3 : 1), NB>(n0, m, sums, pf);
    } else if (mb == 2) {
      tile.template run<(MB > 2 ? 2 : 1), NB>(n0, m, sums, pf);
    } else {
      tile.template run<1, NB>(n0, m, sums, pf);
    }
    for (int64_t i = 0; i < mb; ++i) {
      for (int n = 0; n < NB; ++n) out.store(m + i, n0 + n, sums[i * NB + n]);
    }
    if (!Tile::kPrefetchEveryPass) pf.next = nullptr;
  }
}

template <class Tile, int NB, int MB>
GLMVOICE_AVX2 void rows_range(const Tile& tile, int64_t n_begin, int64_t n_end, int64_t M, const Output& out) {
  int64_t n = n_begin;
  for (; n + NB <= n_end; n += NB) rows_tile<Tile, NB, MB>(tile, n, n_end, M, out);
  for (; n < n_end; ++n) rows_tile<Tile, 1, MB>(tile, n, n_end, M, out);
}

template <class R>
struct DenseTile {
  static constexpr bool kIntegerTiles = false;
  static constexpr int64_t kPrefetchFromRows = R::kPrefetchFromRows;
  static constexpr bool kPrefetchEveryPass = R::kPrefetchEveryPass;
  const typename R::T* w;
  int64_t K;
  Activations a;
  template <int MB, int NB>
  GLMVOICE_AVX2 void run(int64_t n0, int64_t m0, float* sums, Prefetcher& pf) const {
    dense_tile<R, MB, NB>(w + n0 * K, K, a.x + m0 * a.ld, a.ld, K, sums, pf);
  }
  int64_t steps() const { return K / R::kBlock; }  // pf.step() calls per pass
  const char* base() const { return reinterpret_cast<const char*>(w); }
  int64_t row_bytes() const { return K * int64_t{sizeof(typename R::T)}; }
};

struct Int4Tile {
  static constexpr bool kIntegerTiles = true;
  static constexpr int64_t kPrefetchFromRows = 1;
  static constexpr bool kPrefetchEveryPass = false;
  Int4Rows w;
  int64_t K;
  Int4Activations a;
  template <int MB, int NB>
  GLMVOICE_AVX2 void run(int64_t n0, int64_t m0, float* sums, Prefetcher& pf) const {
    int4_tile<MB, NB>(w, n0, a, m0, sums, pf);
  }
  int64_t steps() const { return K / 32; }
  const char* base() const { return reinterpret_cast<const char*>(w.codes); }
  int64_t row_bytes() const { return w.row_bytes; }
};

struct Int8Tile {
  static constexpr bool kIntegerTiles = true;
  static constexpr int64_t kPrefetchFromRows = 1;
  static constexpr bool kPrefetchEveryPass = false;
  const int8_t* w;
  int64_t K;
  Int8Activations a;
  template <int MB, int NB>
  GLMVOICE_AVX2 void run(int64_t n0, int64_t m0, float* sums, Prefetcher& pf) const {
    int8_tile<MB, NB>(w + n0 * K, K, a, m0, sums, pf);
  }
  int64_t steps() const { return K / 16; }
  const char* base() const { return reinterpret_cast<const char*>(w); }
  int64_t row_bytes() const { return K; }
};

// Tile shape by M: 8 independent accumulators at M = 1 (FMA latency), then as many activation
// rows per converted weight vector as the 16 ymm registers allow. M >= 4: 4 activation rows x
// 3 weight rows, 12 accumulators, 7 vector loads per 12 multiply-adds (4 x 2 needed 10 per 8;
// measured, 1 thread, [50000, 1024], M = 8: fp32 29 -> 22 ms, int8 15.5 -> 12.2 ms).
template <class Tile>
void run_tiles(const Tile& tile, int64_t N, int64_t M, const Output& out) {
  runtime::parallel_rows(0, N, /*grain=*/64, [&](int64_t begin, int64_t end) {
    if (Tile::kIntegerTiles) {  // int4/int8: integer accumulators, per-group fp32 totals in memory
      if (M == 1) {
        rows_range<Tile, 5, 1>(tile, begin, end, M, out);
      } else if (M == 2) {
        rows_range<Tile, 4, 2>(tile, begin, end, M, out);
      } else if (M == 3) {
        rows_range<Tile, 2, 3>(tile, begin, end, M, out);
      } else {
        rows_range<Tile, 2, 4>(tile, begin, end, M, out);
      }
    } else if (M == 1) {
      rows_range<Tile, 8, 1>(tile, begin, end, M, out);
    } else if (M == 2) {
      rows_range<Tile, 4, 2>(tile, begin, end, M, out);
    } else if (M == 3) {
      rows_range<Tile, 3, 3>(tile, begin, end, M, out);
    } else {
      rows_range<Tile, 3, 4>(tile, begin, end, M, out);
    }
  });
}

// ---- activations ---------------------------------------------------------------------------
// Prepared with plain loops into per-thread scratch: a decode step makes ~5 calls per layer,
// and tensor ops here (copies, views, allocations) cost tens of microseconds each.

// Scratch of the calling thread, reused across calls (the workers only read it).
float* scratch(int slot, int64_t n) {
  thread_local std::vector<float> buffers[4];  // x, a row, int4 group sums, bias
  auto& b = buffers[slot];
  if (static_cast<int64_t>(b.size()) < n) b.resize(static_cast<size_t>(n));
  return b.data();
}

// bf16 -> fp32 is exact: the bits move up by 16.
GLMVOICE_AVX2 void bf16_row_to_float(const uint16_t* src, int64_t K, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + k));
    _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16)));
  }
  for (; k < K; ++k) dst[k] = bf16_bits_to_float(src[k]);
}

// Row m of x (fp32 or bf16, contiguous) as fp32 into dst[0, K).
void row_to_float(const at::Tensor& x, int64_t m, float* dst) {
  const int64_t K = x.size(1);
  if (x.scalar_type() == at::kFloat) {
    std::memcpy(dst, x.data_ptr<float>() + m * K, static_cast<size_t>(K) * sizeof(float));
  } else {
    bf16_row_to_float(reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>()) + m * K, K, dst);
  }
}

// x as fp32 rows of K columns in natural order (fp32 weights).
Activations natural_rows(const at::Tensor& x) {
  const int64_t M = x.size(0), K = x.size(1);
  if (x.scalar_type() == at::kFloat) return {x.data_ptr<float>(), K};
  float* d = scratch(0, M * K);
  for (int64_t m = 0; m < M; ++m) row_to_float(x, m, d + m * K);
  return {d, K};
}

// bf16 weights read each 16-column block as its even columns, then its odd ones.
Activations deinterleaved_rows(const at::Tensor& x) {
  const int64_t M = x.size(0), K = x.size(1), main = K / 16 * 16;
  float* row = scratch(1, K);
  float* d = scratch(0, M * K);
  for (int64_t m = 0; m < M; ++m) {
    row_to_float(x, m, row);
    float* out = d + m * K;
    for (int64_t b = 0; b < main; b += 16) {
      for (int j = 0; j < 8; ++j) {
        out[b + j] = row[b + 2 * j];
        out[b + 8 + j] = row[b + 2 * j + 1];
      }
    }
    for (int64_t k = main; k < K; ++k) out[k] = row[k];
  }
  return {d, K};
}

// x rounded to int16 for the integer kernels (int4, int8): x * inv to nearest even (as
// std::nearbyint), 8 values from a and 8 from b as one vector [a0..a7, b0..b7]. packs works per
// 128-bit lane (a0-3, b0-3 | a4-7, b4-7); the 64-bit swap puts them in order.
GLMVOICE_AVX2 inline __m256i round_to_int32(const float* p, __m256 inv) {
  return _mm256_cvtps_epi32(
      _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(p), inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
GLMVOICE_AVX2 inline __m256i round_to_int16(const float* a, const float* b, __m256 inv) {
  return _mm256_permute4x64_epi64(_mm256_packs_epi32(round_to_int32(a, inv), round_to_int32(b, inv)), 0xd8);
}

// The largest of 8 lanes of |x| maxima.
GLMVOICE_AVX2 inline float lane_max(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  return *std::max_element(lanes, lanes + 8);
}

// int4: x / scale_g rounded to int16 in the codes' column order (Int4Activations), zeros past
// K; the scale of each group (max |x| / 32767, so the largest value maps to +-32767 and every
// value keeps 15 bits relative to it: finer than x's own bf16 rounding), and the fp32 sum of x
// over each group (8 lanes, then a fixed horizontal sum). Per row, in AVX2: the scalar version
// (std::nearbyint per value) cost ~4 us per call, a tenth of a 1024 x 1024 int4 product.
GLMVOICE_AVX2 void int4_quantize_row(const float* row, int64_t K, int64_t K64, int64_t group, int16_t* out,
                                     float* xs, float* sums) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t g = 0; g < K / group; ++g) {
    const float* xg = row + g * group;
    __m256 acc = _mm256_setzero_ps(), peak8 = _mm256_setzero_ps();
    for (int64_t k = 0; k < group; k += 8) {
      const __m256 v = _mm256_loadu_ps(xg + k);
      acc = _mm256_add_ps(acc, v);
      peak8 = _mm256_max_ps(peak8, _mm256_and_ps(v, abs_mask));
    }
    const float peak = lane_max(peak8);
    sums[g] = hsum(acc);
    xs[g] = peak / 32767.0f;
    const __m256 inv = _mm256_set1_ps(peak > 0 ? 32767.0f / peak : 0.0f);
    for (int64_t h = 0; h < group; h += 32) {  // columns 0-7, 16-23, then 8-15, 24-31
      int16_t* o = out + g * group + h;
      const float* xh = xg + h;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), round_to_int16(xh, xh + 16, inv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), round_to_int16(xh + 8, xh + 24, inv));
    }
  }
  std::fill(out + K, out + K64, int16_t{0});
}

Int4Activations int4_activations(const at::Tensor& x, int64_t K64, int64_t group) {
  const int64_t M = x.size(0), K = x.size(1), groups = K / group;
  float* row = scratch(1, K64);
  auto* xq = reinterpret_cast<int16_t*>(scratch(0, (M * K64 + 1) / 2));
  float* xs = scratch(2, 2 * M * groups);
  float* sums = xs + M * groups;
  for (int64_t m = 0; m < M; ++m) {
    row_to_float(x, m, row);
    int4_quantize_row(row, K, K64, group, xq + m * K64, xs + m * groups, sums + m * groups);
  }
  return {xq, K64, xs, sums, groups};
}

// int8: x / scale_g rounded to int16 (nearest even) in natural column order, zeros past K up to
// a whole 16; scale_g = max |x| / 32767 over group g's columns (the last group may be short).
GLMVOICE_AVX2 void int8_quantize_row(const float* row, int64_t K, int64_t ld, int16_t* out, float* xs) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t g0 = 0, g = 0; g0 < K; g0 += kInt8XGroup, ++g) {
    const int64_t g1 = std::min(K, g0 + kInt8XGroup);
    __m256 peak8 = _mm256_setzero_ps();
    int64_t k = g0;
    for (; k + 8 <= g1; k += 8) peak8 = _mm256_max_ps(peak8, _mm256_and_ps(_mm256_loadu_ps(row + k), abs_mask));
    float peak = lane_max(peak8);
    for (; k < g1; ++k) peak = std::max(peak, std::fabs(row[k]));
    xs[g] = peak / 32767.0f;
    const float inv = peak > 0 ? 32767.0f / peak : 0.0f;
    for (k = g0; k + 16 <= g1; k += 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), round_to_int16(row + k, row + k + 8, _mm256_set1_ps(inv)));
    }
    for (; k < g1; ++k) out[k] = static_cast<int16_t>(std::nearbyint(row[k] * inv));  // the row's last K % 16
  }
  std::fill(out + K, out + ld, int16_t{0});
}

Int8Activations int8_activations(const at::Tensor& x) {
  const int64_t M = x.size(0), K = x.size(1), groups = (K + kInt8XGroup - 1) / kInt8XGroup;
  const int64_t ld = (K + 15) / 16 * 16;
  float* row = scratch(1, K);
  auto* xq = reinterpret_cast<int16_t*>(scratch(0, (M * ld + 1) / 2));
  float* xs = scratch(2, M * groups);
  for (int64_t m = 0; m < M; ++m) {
    row_to_float(x, m, row);
    int8_quantize_row(row, K, ld, xq + m * ld, xs + m * groups);
  }
  return {xq, ld, xs, groups};
}

struct Prepared {
  Output out;
  at::Tensor y;
};

Prepared prepare_output(const at::Tensor& x, int64_t N, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu() && x.is_contiguous(), "skinny matmul: x must be contiguous [M, K] on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "skinny matmul: x must be float32 or bfloat16");
  Prepared p;
  p.y = at::empty({x.size(0), N}, x.options());
  p.out.n_cols = N;
  if (x.scalar_type() == at::kFloat) {
    p.out.y32 = p.y.data_ptr<float>();
  } else {
    p.out.y16 = p.y.data_ptr<c10::BFloat16>();
  }
  if (bias.defined()) {
    TORCH_CHECK(bias.numel() == N && bias.device().is_cpu(), "skinny matmul: bias has ", bias.numel(), " values for ", N,
                " outputs");
    if (bias.scalar_type() == at::kFloat && bias.is_contiguous()) {
      p.out.bias = bias.data_ptr<float>();
    } else {
      const at::Tensor b = bias.to(at::kFloat).contiguous();
      float* d = scratch(3, N);
      std::memcpy(d, b.data_ptr<float>(), static_cast<size_t>(N) * sizeof(float));
      p.out.bias = d;
    }
  }
  return p;
}

}  // namespace

bool skinny_kernels_supported() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

bool skinny_kernels_enabled() { return skinny_kernels_supported() && enabled_flag().load(); }

void set_skinny_kernels_enabled(bool on) { enabled_flag().store(on); }

at::Tensor skinny_linear_dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  TORCH_CHECK(skinny_kernels_supported(), "skinny matmul: this CPU lacks AVX2/FMA");
  TORCH_CHECK(w.dim() == 2 && w.size(1) == x.size(-1) && w.scalar_type() == x.scalar_type() && w.is_contiguous(),
              "skinny matmul: dense weight must be contiguous [N, K] in x's dtype");
  const int64_t M = x.size(0), N = w.size(0), K = w.size(1);
  Prepared p = prepare_output(x, N, bias);
  if (M == 0 || N == 0) return p.y;
  if (w.scalar_type() == at::kFloat) {
    run_tiles(DenseTile<F32Rows>{w.data_ptr<float>(), K, natural_rows(x)}, N, M, p.out);
  } else {
    const auto* w16 = reinterpret_cast<const uint16_t*>(w.data_ptr<c10::BFloat16>());
    run_tiles(DenseTile<Bf16Rows>{w16, K, deinterleaved_rows(x)}, N, M, p.out);
  }
  return p.y;
}

at::Tensor skinny_linear_int8(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scale, const at::Tensor& bias) {
  TORCH_CHECK(skinny_kernels_supported(), "skinny matmul: this CPU lacks AVX2/FMA");
  TORCH_CHECK(q.dim() == 2 && q.size(1) == x.size(-1) && q.scalar_type() == at::kChar && q.is_contiguous(),
              "skinny matmul: int8 weight must be contiguous [N, K] int8");
  const int64_t M = x.size(0), N = q.size(0), K = q.size(1);
  TORCH_CHECK(scale.numel() == N, "skinny matmul: int8 needs one scale per output row");
  Prepared p = prepare_output(x, N, bias);
  if (M == 0 || N == 0) return p.y;
  const at::Tensor s32 = scale.scalar_type() == at::kFloat ? scale.contiguous() : scale.to(at::kFloat).contiguous();
  p.out.row_scale = s32.data_ptr<float>();
  run_tiles(Int8Tile{q.data_ptr<int8_t>(), K, int8_activations(x)}, N, M, p.out);
  return p.y;
}

SkinnyInt4 skinny_pack_int4(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& zero, int64_t group) {
  TORCH_CHECK(q.dim() == 2, "skinny int4: codes must be [N, K]");
  const int64_t N = q.size(0), K = q.size(1), K64 = (K + 63) / 64 * 64;
  TORCH_CHECK(group > 0 && group % 32 == 0 && K % group == 0, "skinny int4: K ", K, " and group ", group,
              " must be multiples of 32, K of the group");
  TORCH_CHECK(scale.sizes() == zero.sizes() && scale.numel() == N * (K / group), "skinny int4: scale/zero must be [N, K/group]");
  // byte j of 64-column block b: column 64b + j in the low nibble, 64b + 32 + j in the high one
  // (columns past K: code 0).
  at::Tensor qb = at::constant_pad_nd(q.to(at::kByte), {0, K64 - K}).view({N, K64 / 64, 2, 32});
  at::Tensor bytes = qb.select(2, 0).bitwise_or(qb.select(2, 1).bitwise_left_shift(4));  // [N, K64/64, 32]
  SkinnyInt4 w;
  w.codes = bytes.contiguous().view({N, K64 / 2});
  // fp32 of the bf16 scale and zero (as LinearWeight rounds them); zero - 8 * scale rounded once.
  const at::Tensor s32 = scale.to(at::kBFloat16).to(at::kFloat).reshape({N, K / group});
  const at::Tensor z32 = zero.to(at::kBFloat16).to(at::kFloat).reshape({N, K / group});
  w.params = at::stack({s32, z32 - s32 * 8.0}, 1).contiguous();  // [N, 2, groups]
  w.group = group;
  w.in_features = K;
  return w;
}

at::Tensor skinny_linear_int4(const at::Tensor& x, const SkinnyInt4& w, const at::Tensor& bias) {
  TORCH_CHECK(skinny_kernels_supported(), "skinny matmul: this CPU lacks AVX2/FMA");
  const int64_t M = x.size(0), N = w.codes.size(0), K = w.in_features, K64 = w.codes.size(1) * 2;
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K, "skinny int4: input has ", x.size(-1), " features, weight ", K);
  Prepared p = prepare_output(x, N, bias);
  if (M == 0 || N == 0) return p.y;
  TORCH_CHECK(w.params.scalar_type() == at::kFloat && w.params.numel() == N * 2 * (K / w.group),
              "skinny int4: params must be [N, 2, K/group] float32 (from skinny_pack_int4)");
  const Int4Rows rows{w.codes.data_ptr<uint8_t>(), w.params.data_ptr<float>(), w.group, K / w.group, K64 / 2};
  run_tiles(Int4Tile{rows, K, int4_activations(x, K64, w.group)}, N, M, p.out);
  return p.y;
}

}  // namespace glmvoice::llm
