// Reference: transformers 4.44.1 generation/logits_process.py (TemperatureLogitsWarper,
// TopKLogitsWarper, TopPLogitsWarper) and GenerationMixin._sample; PyTorch
// aten/src/ATen/native/Distributions.cpp (multinomial without replacement = argmax of p / q,
// q ~ Exp(1)). Spec: llm.md §4.4.
#include "llm/sampler.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "llm/mt19937_fill.h"

namespace glmvoice::llm {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
// First candidate count when top-p runs without top-k; grows x4 until it holds the nucleus.
constexpr int64_t kFirstNucleusCandidates = 256;
// Probability mass the candidates must exceed top_p by, so that the cut provably falls
// among them despite rounding (the rest, all smaller, is then removed as a whole).
constexpr double kNucleusMargin = 1e-3;

struct Ranked {
  at::Tensor values, ids;  // candidates, any order
  bool rest_is_empty;      // every other row is -inf (top-k applied) or there is no other row
};

// The n largest values of a contiguous f32 CPU vector (n <= V) and their ids, descending, in
// one pass: a min-heap of the best n so far, and 8 values at a time compared with its smallest,
// which random logits rarely pass after the first few thousand (at::topk took ~0.5 ms for
// 51 of 168960). Among values equal to the n-th, the lowest ids are kept; nullopt when z holds
// a NaN (at::topk's NaN order then decides).
std::optional<std::pair<at::Tensor, at::Tensor>> top_n_cpu(const at::Tensor& z, int64_t n) {
  const float* x = z.data_ptr<float>();
  const int64_t V = z.numel();
  using Entry = std::pair<float, int64_t>;  // (value, id); the heap's top is the one to evict
  auto evict_first = [](const Entry& a, const Entry& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  std::vector<Entry> heap;
  heap.reserve(static_cast<size_t>(n));
  bool nan = false;
  auto offer = [&](int64_t i) {
    const float v = x[i];
    if (std::isnan(v)) {
      nan = true;
    } else if (static_cast<int64_t>(heap.size()) < n) {
      heap.emplace_back(v, i);
      std::push_heap(heap.begin(), heap.end(), evict_first);
    } else if (v > heap.front().first) {
      std::pop_heap(heap.begin(), heap.end(), evict_first);
      heap.back() = {v, i};
      std::push_heap(heap.begin(), heap.end(), evict_first);
    }
  };
  int64_t i = 0;
  for (; i < V && static_cast<int64_t>(heap.size()) < n; ++i) offer(i);
  for (; i + 8 <= V; i += 8) {
    // Only a value above the heap's smallest (or a NaN) can change anything.
    const float floor = heap.front().first;
    bool any = false;
    for (int j = 0; j < 8; ++j) any |= !(x[i + j] <= floor);
    if (any) {
      for (int j = 0; j < 8; ++j) offer(i + j);
    }
  }
  for (; i < V; ++i) offer(i);
  if (nan) return std::nullopt;
  std::sort(heap.begin(), heap.end(), evict_first);  // descending values, ties by id
  at::Tensor values = at::empty({n}, z.options()), ids = at::empty({n}, z.options().dtype(at::kLong));
  float* pv = values.data_ptr<float>();
  int64_t* pi = ids.data_ptr<int64_t>();
  for (int64_t j = 0; j < n; ++j) pv[j] = heap[static_cast<size_t>(j)].first, pi[j] = heap[static_cast<size_t>(j)].second;
  return std::make_pair(values, ids);
}

// Top-k (HF keeps every logit equal to the k-th largest, so ties past k are kept too).
Ranked top_k_candidates(const at::Tensor& z, int64_t k) {
  const int64_t V = z.numel();
  if (k >= V) return {z, at::arange(V, z.options().dtype(at::kLong)), true};
  // Only the (k+1)-th value is read past the first k, and the first k are the same set for
  // any tie order unless the k-th ties the (k+1)-th, which is settled from z below.
  std::optional<std::pair<at::Tensor, at::Tensor>> top;
  if (z.is_cpu() && z.scalar_type() == at::kFloat && z.is_contiguous()) top = top_n_cpu(z, k + 1);
  auto [tv, ti] = top ? *top : at::topk(z, k + 1);  // descending
  if (!at::equal(tv.narrow(0, k, 1), tv.narrow(0, k - 1, 1))) {
    return {tv.narrow(0, 0, k), ti.narrow(0, 0, k), true};
  }
  at::Tensor ids = (z >= tv.narrow(0, k - 1, 1)).nonzero().squeeze(1);
  return {z.index_select(0, ids), ids, true};
}

// Without top-k: the smallest set of top logits that certainly holds the top-p nucleus.
Ranked nucleus_candidates(const at::Tensor& z, double top_p) {
  const int64_t V = z.numel();
  const at::Tensor lse = at::logsumexp(z, 0);
  for (int64_t c = std::min(kFirstNucleusCandidates, V);; c = std::min(c * 4, V)) {
    if (c == V) return {z, at::arange(V, z.options().dtype(at::kLong)), true};
    auto [tv, ti] = at::topk(z, c);
    if (at::exp(tv - lse).sum().item<double>() >= top_p + kNucleusMargin) return {tv, ti, false};
  }
}

// at::multinomial(p, 1, /*replacement=*/false, gen) for p [V] f32 that is zero off `ids`
// (ascending): q_i ~ Exp(1) for every row i, the first argmax of p / q (NaN first, as
// at::argmax). libtorch's CPU exponential_ is a serial loop, one
// exponential_distribution<double> draw per row (two mt19937 words, u = low 53 bits / 2^53,
// q = float(-log1p(-u))), taking 4 ms for the 168960-row vocabulary; here the engine runs
// inline and the logarithm is taken for the candidates only, the other rows only advance it
// (and would give p / q = 0, or 0 / 0 = NaN where u = 0). Same id, same generator state after
// (test_llm_sampler checks both against at::multinomial).
int64_t multinomial_one(const at::Tensor& p, const at::Tensor& ids, at::Generator& gen) {
  constexpr uint64_t kMask53 = (uint64_t{1} << 53) - 1;
  constexpr double kTwoPowMinus53 = 1.0 / static_cast<double>(uint64_t{1} << 53);
  constexpr int64_t kRowsPerBlock = 2048;
  const int64_t V = p.numel(), n = ids.numel();
  const float* pp = p.data_ptr<float>();
  const int64_t* id = ids.data_ptr<int64_t>();
  std::lock_guard<std::mutex> lock(gen.mutex());
  auto* impl = at::check_generator<at::CPUGeneratorImpl>(gen);
  at::mt19937 engine = impl->engine();
  int64_t next = 0, best_at = -1, nan_at = -1, zero_at = -1;
  float best = 0;
  auto row = [&](int64_t i, uint64_t hi, uint64_t lo) {
    const uint64_t bits = ((hi << 32) | lo) & kMask53;
    float v;
    if (next < n && id[next] == i) {
      ++next;
      const float q = static_cast<float>(-std::log1p(-static_cast<double>(bits) * kTwoPowMinus53));
      v = pp[i] / q;
    } else {
      v = bits == 0 ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    }
    if (std::isnan(v)) {
      if (nan_at < 0) nan_at = i;
    } else if (v > best) {
      best = v;
      best_at = i;
    } else if (v == 0 && zero_at < 0) {
      zero_at = i;
    }
  };
  std::array<uint32_t, 2 * kRowsPerBlock> words;  // on the stack: no allocation per token
  for (int64_t r0 = 0; r0 < V; r0 += kRowsPerBlock) {
    const int64_t rows = std::min(kRowsPerBlock, V - r0);
    mt19937_fill(engine, words.data(), 2 * rows);
    // A row off the candidates counts only as the first with p / q = 0 (zero_at) or where its
    // 53 bits are all zero (0 / 0 = NaN); otherwise the block's candidates alone decide.
    bool zero_draw = false;
    for (int64_t k = 0; k < rows; ++k) zero_draw |= ((words[2 * k] & 0x1fffff) | words[2 * k + 1]) == 0;
    if (zero_draw || zero_at < 0) {
      for (int64_t k = 0; k < rows; ++k) row(r0 + k, words[2 * k], words[2 * k + 1]);
    } else {
      for (; next < n && id[next] < r0 + rows;) {
        const int64_t k = id[next] - r0;
        row(r0 + k, words[2 * k], words[2 * k + 1]);
      }
    }
  }
  impl->set_engine(engine);
  if (nan_at >= 0) return nan_at;
  return best_at >= 0 ? best_at : zero_at;
}

}  // namespace

Candidates sampling_candidates(const at::Tensor& logits_in, const SamplingOptions& o) {
  c10::InferenceMode guard;
  at::Tensor z = logits_in.to(at::kFloat).flatten();
  const int64_t V = z.numel();
  const int64_t keep_min = std::max<int64_t>(o.min_tokens_to_keep, 1);
  // 1. temperature (only when != 1); element-wise, so the same bits as on the whole vector
  if (o.temperature > 0 && o.temperature != 1.0) z = z / o.temperature;
  // 2. top-k
  Ranked r;
  if (o.top_k > 0) {
    r = top_k_candidates(z, std::min(std::max(o.top_k, keep_min), V));
  } else if (o.top_p < 1.0 && !z.is_cpu()) {
    r = nucleus_candidates(z, o.top_p);
  } else {
    // No top-k: on CPU top-p sorts the whole vocabulary as before, because the nucleus sum
    // over candidates only would round differently and could move the cut by one token.
    r = {z, at::Tensor(), true};
  }
  at::Tensor ids, values;
  if (!r.ids.defined()) {
    ids = at::arange(V, z.options().dtype(at::kLong));
    values = z;
  } else {
    // Ascending id order, so a stable sort by value orders ties as at::sort of the whole
    // vocabulary does (by id).
    at::Tensor by_id;
    std::tie(ids, by_id) = at::sort(r.ids);
    values = r.values.index_select(0, by_id);
  }
  if (o.top_p >= 1.0) return {ids, values};

  // 3. top-p: ascending, remove cumulative probability <= 1 - p, keep the largest keep_min.
  auto [asc, order] = at::sort(values, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const int64_t n = asc.numel();
  at::Tensor cum;
  if (r.rest_is_empty && z.is_cpu()) {
    // The whole vocabulary in ascending order is [-inf x (V - n), asc], built without a sort;
    // its softmax is bit for bit the one of the sorted vocabulary (same array, same lanes).
    at::Tensor full = n == V ? asc : at::cat({at::full({V - n}, kNegInf, asc.options()), asc});
    cum = at::softmax(full, 0).narrow(0, V - n, n).cumsum(0);
  } else if (r.rest_is_empty) {
    cum = at::softmax(asc, 0).cumsum(0);
  } else {
    at::Tensor p = at::exp(asc - at::logsumexp(z, 0));
    cum = (1.0 - p.sum()) + p.cumsum(0);
  }
  at::Tensor keep = cum > (1.0 - o.top_p);
  const int64_t forced = std::min(keep_min, n);
  keep.narrow(0, n - forced, forced).fill_(true);
  at::Tensor kept = std::get<0>(at::sort(order.masked_select(keep)));
  return {ids.index_select(0, kept), values.index_select(0, kept)};
}

at::Tensor sampling_filter(const at::Tensor& logits, const SamplingOptions& o) {
  c10::InferenceMode guard;
  const Candidates c = sampling_candidates(logits, o);
  at::Tensor z = at::full({logits.numel()}, kNegInf, logits.options().dtype(at::kFloat));
  return z.index_copy_(0, c.ids, c.logits);
}

Sampler::Sampler(uint64_t seed) : seed_(seed), cpu_generator_(at::detail::createCPUGenerator(seed)) {}

void Sampler::reseed(uint64_t seed) {
  seed_ = seed;
  for (at::Generator* g : {&cpu_generator_, &device_generator_}) {
    if (!g->defined()) continue;
    std::lock_guard<std::mutex> lock(g->mutex());
    g->set_current_seed(seed);
  }
}

at::Generator& Sampler::generator_for(const c10::Device& device) {
  if (device.is_cpu()) return cpu_generator_;
  const c10::DeviceIndex index = device.has_index() ? device.index() : 0;
  if (!device_generator_.defined() || device_generator_.device() != c10::Device(device.type(), index)) {
    device_generator_ = at::detail::getCUDAHooks().getNewGenerator(index);
    device_generator_.set_current_seed(seed_);
  }
  return device_generator_;
}

int64_t Sampler::sample(const at::Tensor& logits_in, const SamplingOptions& o, int64_t mask_from) {
  c10::InferenceMode guard;
  at::Tensor z = logits_in.to(at::kFloat).flatten();
  const int64_t V = z.numel();
  if (mask_from >= 0 && mask_from < V) {
    z = z.clone();
    z.narrow(0, mask_from, V - mask_from).fill_(kNegInf);
  }
  if (o.greedy || o.temperature <= 0) return z.argmax().item<int64_t>();
  const Candidates c = sampling_candidates(z, o);
  at::Generator& gen = generator_for(z.device());
  if (z.is_cpu()) {
    // The draw at::multinomial(softmax(filtered), 1) makes over the whole vocabulary: one
    // Exp(1) per row from this generator, so the stream of ids is the reference's. The
    // softmax stays over the whole vector: its sum's lanes, and so its bits, depend on where
    // each candidate sits.
    at::Tensor filtered = at::full({V}, kNegInf, z.options()).index_copy_(0, c.ids, c.logits);
    return multinomial_one(at::softmax(filtered, 0).contiguous(), c.ids.contiguous(), gen);
  }
  // On the device: the same Gumbel-max draw over the candidates only; one id to the host.
  at::Tensor p = at::softmax(c.logits, 0);
  at::Tensor q = at::empty_like(p).exponential_(1.0, gen);
  return c.ids.index_select(0, (p / q).argmax().unsqueeze(0)).item<int64_t>();
}

}  // namespace glmvoice::llm
