// GLM-4-Voice-9B language model (ChatGLM / GLM-4 architecture) with a KV cache.
//
// Reference: THUDM/glm-4-voice-9b modeling_chatglm.py (verbatim copy in
// WenzheLiu-Speech/GLM-4-Voice-SFT: model/modeling_chatglm.py), transformers 4.44.1;
// GLM-4-Voice arXiv:2412.02612. Spec: ../shared/spec/llm.md §2–§4.
//
// Model/State split: an LlmModel (weights, config, tokenizer) is immutable after load() and
// may be shared by several threads and streams; a KvCache belongs to one conversation.
//
//   auto model = LlmModel::load({"/models/glm-4-voice-9b", cpu, kFloat});
//   KvCache cache = model->new_cache();
//   at::Tensor logits = model->forward(ids, cache);   // [V] f32 of the last position
//
// Batched step (many conversations, one forward): forward_batch() takes B sequences, each
// with its own KvCache and its own chunk of ids (1 token when decoding, a prompt chunk when
// prefilling); the linear layers run once over all rows, attention runs per sequence against
// its own cache. A sequence's result does not depend on the others beyond fp32 rounding.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llm/chatglm_config.h"
#include "llm/quantized_linear.h"
#include "runtime/options.h"
#include "text/tokenizer.h"

namespace glmvoice::llm {

// Per-layer K (post-rotary) and V, [ng, capacity, d] in the compute dtype; `length`
// positions are valid. Positions are 0 … length-1 (§4.2).
struct DecodeGraph;  // chatglm_model.cpp: a captured decode step bound to one cache's tensors

struct KvCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;
  int64_t capacity = 0;
  // The decode step captured as a CUDA graph for these K/V tensors (ensure_capacity() drops it
  // when it reallocates them); null until the first graph-eligible step.
  std::shared_ptr<DecodeGraph> decode_graph;
  // Forgets positions >= n (n <= length); used to reuse a common prefix.
  void truncate(int64_t n);
  void reset() { truncate(0); }
};

// One sequence of a batched step: its ids (positions cache->length …) and its cache.
struct BatchItem {
  enum class Logits { kLast, kAll, kNone };  // [V], [T, V], or none (an intermediate prefill chunk)
  const int64_t* ids = nullptr;
  int64_t n_ids = 0;
  KvCache* cache = nullptr;
  Logits logits = Logits::kLast;
};

class LlmModel {
 public:
  // Loads config.json, generation_config.json, the safetensors (index or single file),
  // tokenizer.model and tokenizer_config.json, and checks their consistency (§7.3).
  // options.dtype: float32, bfloat16, int8 or int4 (weight-only, bf16 activations);
  // Undefined = bfloat16 on CUDA, float32 on CPU; float16 is refused (§3.7).
  static std::shared_ptr<const LlmModel> load(const ModelOptions& options);
  // Benchmarks at real shapes without the checkpoint: config.json and the tokenizer files
  // from options.path, random weights made directly on the device (no safetensors read).
  static std::shared_ptr<const LlmModel> load_random(const ModelOptions& options, uint64_t seed);

  const ChatGlmConfig& config() const { return config_; }
  const text::Tokenizer& tokenizer() const { return tokenizer_; }
  const ModelOptions& options() const { return options_; }

  KvCache new_cache() const;
  // Runs `ids` (positions cache.length … cache.length+T-1) and appends their K/V to the
  // cache. Returns f32 logits on the model's device (the sampler works there; nothing
  // crosses to the host): [T, V] if `all_positions`, else [V] of the last one.
  // Throws kBadInput for an id outside the vocabulary or positions >= seq_length.
  at::Tensor forward(const std::vector<int64_t>& ids, KvCache& cache, bool all_positions = false) const;
  // One forward for several sequences (distinct caches). Returns one tensor per item as
  // forward() would (undefined for Logits::kNone). Every item is checked (check_input) before
  // anything runs, so a bad item throws without touching any cache.
  std::vector<at::Tensor> forward_batch(const std::vector<BatchItem>& items) const;
  // Throws kBadInput if `n` ids at cache.length would overflow seq_length or an id is outside
  // the vocabulary (what forward() checks).
  void check_input(const int64_t* ids, int64_t n, const KvCache& cache) const;

  // Number of loaded parameters (for sanity checks and logs).
  int64_t parameter_count() const;
  // Bytes of weights one decode step reads: every layer, the final norm and the output layer
  // as stored (quantized or not); the embedding table (one row read) is not counted.
  int64_t weight_bytes_per_token() const;

 private:
  struct Layer {
    at::Tensor input_norm, qkv_b, dense_b, post_norm, h4h_b, fourh_b;
    LinearWeight qkv_w, dense_w, h4h_w, fourh_w;  // dense, or int8/int4 weight-only
  };
  LlmModel() = default;
  static std::shared_ptr<const LlmModel> load_impl(const ModelOptions& options, const uint64_t* random_seed);
  at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w) const;
  // §3.3 step 3 in place on qk [N, n, d] (q and k heads side by side); cos2 = (c, c) and
  // sin2 = (-s, s) per pair [N, r/2, 2]. Rounds exactly like x0·c − x1·s, x1·c + x0·s.
  void rotary_in_place(const at::Tensor& qk, const at::Tensor& cos2, const at::Tensor& sin2) const;
  std::pair<at::Tensor, at::Tensor> rotary_tables(const at::Tensor& pos) const;  // (cos2, sin2)
  // h + dense(ctx), then + MLP(norm(·)): the rest of a layer after attention.
  // small_ops: the decode step's CPU loops (cpu_decode_ops.h) instead of libtorch ops.
  at::Tensor dense_and_mlp(const Layer& L, const at::Tensor& h, const at::Tensor& ctx, bool small_ops = false) const;
  at::Tensor norm(const at::Tensor& x, const at::Tensor& w, bool small_ops) const;
  void ensure_capacity(KvCache& cache, int64_t needed) const;
  // Attention of one sequence's rows q [T, nh, d] against its cache (positions 0 … P+T-1,
  // the last T just written): ctx [T, nh·d].
  at::Tensor attend(const at::Tensor& q, const at::Tensor& K, const at::Tensor& V, int64_t P) const;
  // The same through scaled_dot_product_attention (flash / memory-efficient kernels).
  at::Tensor attend_fused(const at::Tensor& q, const at::Tensor& K, const at::Tensor& V, int64_t P) const;
  // One decode step with shapes and addresses that never change between steps, for a CUDA
  // graph: the id and position come from device tensors [1], attention covers the cache's
  // whole capacity under a mask (positions > pos hidden), K/V are written by index_copy_.
  // Returns the logits [1, V] f32. `cache` has capacity > pos and zero-filled K/V.
  at::Tensor decode_step_static(const at::Tensor& id, const at::Tensor& pos, KvCache& cache) const;
  // Runs a single-token kLast step through the cache's graph (captured on first use); the
  // caller has ensured capacity. Returns the logits [V] f32.
  at::Tensor decode_with_graph(int64_t id, KvCache& cache) const;

  ModelOptions options_;
  ChatGlmConfig config_;
  text::Tokenizer tokenizer_;
  at::Tensor embedding_, final_norm_;  // the embedding stays in the compute dtype (a lookup)
  LinearWeight output_;                 // quantized too in int8/int4 (the largest matrix)
  at::Tensor inv_freq_;  // [r/2] f32, from base 10000·rope_ratio (checkpoint's value ignored)
  // On CUDA, and for int8/int4 weights anywhere: SDPA and the fused RMSNorm kernel (a decode
  // step is ~25 kernels per layer instead of ~65; at 9B shapes it was bound by launch overhead,
  // 7.9x the memory floor). fp32/bf16 on the CPU keep the explicit ops that round like the
  // reference. GLMVOICE_LLM_FUSED=1/0 forces either (tests compare the two on the CPU).
  bool fused_ops_ = false;
  // How single-token decode steps run: kEager (forward_batch), kGraph (a CUDA graph per
  // cache, the default on CUDA when graphs are built), kStatic (decode_step_static run
  // eagerly: the graph's body, for tests on the CPU). GLMVOICE_LLM_DECODE=eager|graph|static.
  enum class DecodeMode { kEager, kGraph, kStatic };
  DecodeMode decode_mode_ = DecodeMode::kEager;
  std::vector<Layer> layers_;
};

}  // namespace glmvoice::llm
