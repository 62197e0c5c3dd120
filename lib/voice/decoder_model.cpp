// Reference: THUDM/GLM-4-Voice@eb00ce9 flow_inference.py (AudioDecoder.__init__, token2wav),
// web_demo.py (block schedule [25,50,100,150,200], prompt feedback); decoder spec §5.
#include "voice/decoder_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <filesystem>
#include <mutex>
#include <sstream>

#include "io/error.h"
#include "io/torch_pickle.h"
#include "io/yaml_config.h"
#include "voice/flow_model.h"
#include "voice/hift_model.h"
#include "runtime/dtype.h"

namespace glmvoice::voice {

namespace {

// FI AudioDecoder constants (hard-coded upstream, spec §1.1 / §5.1).
constexpr int64_t kTokenOverlapLen = 5;  // tokens
constexpr int64_t kMelCacheLen = 1;      // frames

int64_t count_params(const io::StateDict& dict) {
  int64_t n = 0;
  for (const auto& e : dict.entries) n += e.second.numel();
  return n;
}

void require_file(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw Error(ErrorCode::kNotFound, path, "", "file not found (a decoder directory holds config.yaml, flow.pt, hift.pt)");
  }
}

// np.hamming(M): 0.54 + 0.46 cos(pi n / (M - 1)), n = 1-M, 3-M, ..., M-1 (float64).
std::vector<double> hamming(int64_t M) {
  std::vector<double> w(M);
  for (int64_t i = 0; i < M; ++i) {
    const double n = static_cast<double>(1 - M + 2 * i);
    w[i] = 0.54 + 0.46 * std::cos(M_PI * n / static_cast<double>(M - 1));
  }
  return w;
}

at::Tensor empty_audio() { return at::empty({0}, at::TensorOptions().dtype(at::kFloat)); }

at::Tensor concat_audio(std::vector<at::Tensor>& parts) {
  if (parts.empty()) return empty_audio();
  if (parts.size() == 1) return parts[0];
  return at::cat(parts, 0);
}

}  // namespace

DecoderModel::~DecoderModel() = default;

std::shared_ptr<const DecoderModel> DecoderModel::load(const ModelOptions& options) {
  c10::InferenceMode guard;
  if (options.dtype == c10::ScalarType::Undefined) {  // "auto": this stage's default dtype
    ModelOptions resolved = options;
    resolved.dtype = runtime::default_dtype(runtime::Stage::kDecoder, options.device);
    return load(resolved);
  }
  namespace fs = std::filesystem;
  if (!fs::is_directory(options.path)) {
    throw Error(ErrorCode::kNotFound, options.path, "", "decoder model directory not found");
  }
  const std::string cfg_path = (fs::path(options.path) / "config.yaml").string();
  const std::string flow_path = (fs::path(options.path) / "flow.pt").string();
  const std::string hift_path = (fs::path(options.path) / "hift.pt").string();
  require_file(cfg_path);
  require_file(flow_path);
  require_file(hift_path);

  runtime::resolve_options(options, runtime::Stage::kDecoder);  // refuses int8/int4; TF32 off on CUDA (P16)
  std::shared_ptr<DecoderModel> m(new DecoderModel());
  m->options_ = options;
  m->config_ = DecoderConfig::load(cfg_path);
  if (options.dtype != at::kFloat) {
    runtime::log(runtime::LogLevel::kInfo, "decoder: flow in " + runtime::dtype_name(options.dtype) +
                                               ", HiFT vocoder kept in float32 (phase accumulation, spec P16)");
  }
  {
    io::StateDict flow = io::load_torch_state_dict(flow_path);
    m->flow_params_ = count_params(flow);
    m->flow_ = std::make_unique<FlowModel>(m->config_.flow, flow, options.device, options.dtype);
  }
  {
    io::StateDict hift = io::load_torch_state_dict(hift_path);
    // CosyVoice-2+ files carry a `generator.` prefix; GLM's does not (spec §2.4).
    const std::string gp = "generator.";
    for (auto& e : hift.entries) {
      if (e.first.compare(0, gp.size(), gp) == 0) e.first = e.first.substr(gp.size());
    }
    io::fold_weight_norm(hift);
    m->hift_params_ = count_params(hift);
    m->hift_ = std::make_unique<HiftModel>(m->config_.hift, hift, options.device);
  }
  std::ostringstream msg;
  msg << "decoder: loaded " << options.path << " (flow " << m->flow_params_ << " params, HiFT "
      << m->hift_params_ << " params, vocab " << m->vocab_size() << ", device " << options.device.str() << ")";
  runtime::log(runtime::LogLevel::kInfo, msg.str());
  return m;
}

int64_t DecoderModel::mel_len(int64_t tokens) const { return flow_->mel_len(tokens); }

int64_t DecoderModel::overlap_frames() const {
  return static_cast<int64_t>(static_cast<double>(kTokenOverlapLen) / config_.flow.input_frame_rate * 22050 / 256);
}

at::Tensor DecoderModel::flow(const at::Tensor& tokens, const at::Tensor& prompt_tokens,
                              const at::Tensor& prompt_feat, at::Generator& gen, int64_t n_timesteps,
                              double cfg_rate, FlowTaps* taps) const {
  c10::InferenceMode guard;
  if (cfg_rate < 0) cfg_rate = config_.flow.inference_cfg_rate;
  if (n_timesteps < 1) throw Error(ErrorCode::kBadConfig, "", "n-timesteps", "must be >= 1");
  at::Tensor tok = tokens.dim() == 1 ? tokens.unsqueeze(0) : tokens;
  at::Tensor ptok = prompt_tokens.defined() ? prompt_tokens : at::zeros({1, 0}, at::kLong);
  if (ptok.dim() == 1) ptok = ptok.unsqueeze(0);
  at::Tensor pfeat = prompt_feat.defined() ? prompt_feat : at::zeros({1, 0, n_mel()});
  const int64_t max_id = tok.numel() ? tok.max().item<int64_t>() : 0;
  const int64_t max_pid = ptok.numel() ? ptok.max().item<int64_t>() : 0;
  if (max_id >= vocab_size() || max_pid >= vocab_size()) {
    throw Error(ErrorCode::kBadInput, "", "tokens",
                "speech token id " + std::to_string(std::max(max_id, max_pid)) + " >= vocab_size " +
                    std::to_string(vocab_size()));
  }
  if (tok.size(1) + ptok.size(1) == 0) throw Error(ErrorCode::kBadInput, "", "tokens", "no tokens to decode");
  return flow_->inference(tok, ptok, pfeat, gen, n_timesteps, cfg_rate, taps);
}

HiftResult DecoderModel::hift(const at::Tensor& mel, const at::Tensor& cache_source, at::Generator& gen,
                              HiftTaps* taps) const {
  c10::InferenceMode guard;
  at::Tensor m = mel.dim() == 2 ? mel.unsqueeze(0) : mel;
  if (m.dim() != 3 || m.size(1) != n_mel()) {
    throw Error(ErrorCode::kBadInput, "", "mel", "expected a mel of shape [1, " + std::to_string(n_mel()) + ", N]");
  }
  at::Tensor cs = cache_source.defined() ? cache_source : at::zeros({1, 1, 0});
  HiftOutput out = hift_->inference(m, cs, gen, taps);
  return {out.audio, out.source};
}

// ---------------------------------------------------------------------------------------------

std::vector<int64_t> default_block_sizes(StreamMode mode) {
  if (mode == StreamMode::kFast) return {10, 25, 50};
  return {25, 50, 100, 150, 200};
}

StreamMode parse_stream_mode(const std::string& text, const std::string& field) {
  if (text == "reference") return StreamMode::kReference;
  if (text == "fast") return StreamMode::kFast;
  throw Error(ErrorCode::kBadConfig, "", field, "'" + text + "' is not a decoder mode (reference or fast)");
}

std::string stream_mode_name(StreamMode mode) { return mode == StreamMode::kFast ? "fast" : "reference"; }

std::vector<int64_t> parse_block_sizes(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    if (a == std::string::npos) continue;
    item = item.substr(a, b - a + 1);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 1) {
      throw Error(ErrorCode::kBadConfig, "", "block-sizes", "'" + item + "' is not a positive integer");
    }
    out.push_back(v);
  }
  if (out.empty()) throw Error(ErrorCode::kBadConfig, "", "block-sizes", "empty block size list");
  return out;
}

std::string format_block_sizes(const std::vector<int64_t>& sizes) {
  std::string s;
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "," : "") + std::to_string(sizes[i]);
  return s;
}

DecoderState::DecoderState(std::shared_ptr<const DecoderModel> model, StreamOptions options)
    : model_(std::move(model)), options_(std::move(options)) {
  if (!model_) throw Error(ErrorCode::kBadConfig, "", "model", "no decoder model");
  if (options_.block_sizes.empty()) throw Error(ErrorCode::kBadConfig, "", "block-sizes", "empty block size list");
  for (int64_t b : options_.block_sizes) {
    if (b < 1) throw Error(ErrorCode::kBadConfig, "", "block-sizes", "block sizes must be >= 1");
  }
  if (options_.n_timesteps < 1) throw Error(ErrorCode::kBadConfig, "", "n-timesteps", "must be >= 1");
  if (options_.mode == StreamMode::kFast && options_.context_tokens < kMinContextTokens) {
    throw Error(ErrorCode::kBadConfig, "", "context-tokens",
                "must be >= " + std::to_string(kMinContextTokens) + " (the held-back overlap plus a margin)");
  }
  gen_ = at::make_generator<at::CPUGeneratorImpl>(options_.seed);
}

DecoderState::~DecoderState() = default;

void DecoderState::reset() {
  pending_.clear();
  prompt_tokens_.clear();
  mels_.clear();
  overlap_mel_ = at::Tensor();
  cache_mel_ = at::Tensor();
  cache_source_ = at::Tensor();
  block_index_ = 0;
  call_index_ = 0;
  window_tokens_.clear();
  window_base_ = 0;
  tokens_done_ = 0;
  frames_final_ = 0;
  history_mel_ = at::Tensor();
}

bool DecoderState::idle() const { return pending_.empty() && !overlap_mel_.defined() && !cache_mel_.defined(); }

int64_t DecoderState::next_block_size() const { return options_.block_sizes[block_index_] + 1; }

at::Tensor DecoderState::push(const int32_t* ids, size_t n) {
  c10::InferenceMode guard;
  const int64_t vocab = model_->vocab_size();
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] >= vocab) {
      throw Error(ErrorCode::kBadInput, "", "tokens",
                  "speech token id " + std::to_string(ids[i]) + " >= vocab_size " + std::to_string(vocab));
    }
  }
  for (size_t i = 0; i < n; ++i) pending_.push_back(std::max<int32_t>(ids[i], 0));  // upstream clamp(min=0)
  std::vector<at::Tensor> out;
  // One-token lag (DEMO, spec §5.3): decode a block once MORE than block_sizes[bi] are pending.
  while (static_cast<int64_t>(pending_.size()) > options_.block_sizes[block_index_]) {
    const int64_t size = options_.block_sizes[block_index_];
    std::vector<int64_t> block(pending_.begin(), pending_.begin() + size);
    pending_.erase(pending_.begin(), pending_.begin() + size);
    out.push_back(token2wav(block, /*finalize=*/false));
    block_index_ = std::min(block_index_ + 1, options_.block_sizes.size() - 1);
  }
  return concat_audio(out);
}

at::Tensor DecoderState::finish() {
  c10::InferenceMode guard;
  at::Tensor out;
  if (!pending_.empty()) {
    std::vector<int64_t> block = pending_;
    pending_.clear();
    out = token2wav(block, /*finalize=*/true);
  } else if (overlap_mel_.defined()) {
    out = tail_flush();
  } else {
    out = empty_audio();
  }
  reset();
  return out;
}

at::Tensor DecoderState::decode_offline(const std::vector<int32_t>& ids) {
  c10::InferenceMode guard;
  reset();
  const int64_t vocab = model_->vocab_size();
  std::vector<int64_t> block;
  for (int32_t id : ids) {
    if (id >= vocab) {
      throw Error(ErrorCode::kBadInput, "", "tokens",
                  "speech token id " + std::to_string(id) + " >= vocab_size " + std::to_string(vocab));
    }
    block.push_back(std::max<int32_t>(id, 0));
  }
  if (block.empty()) return empty_audio();
  at::Tensor out = token2wav(block, /*finalize=*/true);
  reset();
  return out;
}

// FI AudioDecoder.token2wav with DEMO's prompt feedback (spec §5.1-5.2).
at::Tensor DecoderState::token2wav(const std::vector<int64_t>& block, bool finalize) {
  const DecoderModel& m = *model_;
  const int64_t n_mel = m.n_mel();
  const int64_t spf = m.samples_per_frame();
  const int64_t overlap = m.overlap_frames();
  const int64_t source_cache_len = kMelCacheLen * spf;
  {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed(options_.seed);  // upstream: torch.manual_seed(42) in ConditionalCFM
  }
  auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor tokens = at::tensor(block, i64).unsqueeze(0);
  at::Tensor prompt = at::tensor(prompt_tokens_, i64).reshape({1, -1});
  at::Tensor prompt_feat = mels_.empty() ? at::zeros({1, 0, n_mel}) : at::cat(mels_, 2).transpose(1, 2);

  FlowTaps flow_taps;
  HiftTaps hift_taps;
  const bool report = static_cast<bool>(observer_);
  BlockReport rep;
  rep.index = call_index_++;
  rep.n_tokens = static_cast<int64_t>(block.size());
  rep.prompt_tokens = static_cast<int64_t>(prompt_tokens_.size());
  rep.prompt_frames = prompt_feat.size(1);
  rep.finalize = finalize;

  const bool fast = options_.mode == StreamMode::kFast;
  at::Tensor mel;
  if (fast) {
    mel = fast_flow(block, finalize, rep, report ? &flow_taps : nullptr);  // final frames only
  } else {
    mel = m.flow(tokens, prompt, prompt_feat, gen_, options_.n_timesteps, options_.cfg_rate,
                 report ? &flow_taps : nullptr);  // [1, n_mel, Lm]
  }
  if (!fast && overlap_mel_.defined()) {
    // fade_in_out: fp32 mel x float64 Hamming halves, summed in float64, stored as fp32 (P6).
    const int64_t L = overlap_mel_.size(2);
    std::vector<double> w = hamming(2 * L);
    at::Tensor win = at::tensor(w, at::TensorOptions().dtype(at::kDouble));
    at::Tensor head = mel.slice(2, 0, L);
    at::Tensor faded = head * win.slice(0, 0, L) + overlap_mel_.slice(2, -L) * win.slice(0, L);
    mel = mel.clone();
    mel.slice(2, 0, L).copy_(faded);
  }
  at::Tensor src_cache;
  if (cache_mel_.defined()) {
    mel = at::cat({cache_mel_, mel}, 2);
    src_cache = cache_source_;
  } else {
    src_cache = at::zeros({1, 1, 0});
  }
  at::Tensor speech;
  if (!finalize) {
    if (!fast) {  // fast_flow holds its own overlap back
      overlap_mel_ = mel.slice(2, mel.size(2) - overlap).contiguous();
      mel = mel.slice(2, 0, mel.size(2) - overlap).contiguous();
    }
    if (mel.size(2) == 0) {
      // A first block too short to outlast the overlap (block-sizes below ~7 tokens): all of
      // its frames are held back and faded into the next call; nothing to vocode yet.
      speech = empty_audio();
    } else {
      HiftResult r = m.hift(mel, src_cache, gen_, report ? &hift_taps : nullptr);
      cache_mel_ = mel.slice(2, std::max<int64_t>(0, mel.size(2) - kMelCacheLen)).contiguous();
      cache_source_ = r.source.slice(2, std::max<int64_t>(0, r.source.size(2) - source_cache_len)).contiguous();
      speech = r.audio.slice(1, 0, std::max<int64_t>(0, r.audio.size(1) - source_cache_len)).reshape({-1}).contiguous();
    }
  } else {
    HiftResult r = m.hift(mel, src_cache, gen_, report ? &hift_taps : nullptr);
    speech = r.audio.reshape({-1}).contiguous();
    overlap_mel_ = at::Tensor();
    cache_mel_ = at::Tensor();
    cache_source_ = at::Tensor();
  }
  if (!fast) {
    mels_.push_back(mel);
    prompt_tokens_.insert(prompt_tokens_.end(), block.begin(), block.end());
  }
  if (report) {
    rep.mel = mel;
    rep.speech = speech;
    rep.mu = flow_taps.mu;
    rep.f0 = hift_taps.f0;
    observer_(rep);
  }
  return speech;
}

// Spec §5.3 deviation: end of utterance with nothing pending but overlap + cache held
// (upstream loses these frames): vocode concat(cache mel, overlap mel) with the cached source.
at::Tensor DecoderState::tail_flush() {
  const DecoderModel& m = *model_;
  {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed(options_.seed);
  }
  at::Tensor mel = cache_mel_.defined() ? at::cat({cache_mel_, overlap_mel_}, 2) : overlap_mel_;
  at::Tensor src = cache_mel_.defined() ? cache_source_ : at::zeros({1, 1, 0});
  HiftTaps taps;
  HiftResult r = m.hift(mel, src, gen_, observer_ ? &taps : nullptr);
  at::Tensor speech = r.audio.reshape({-1}).contiguous();
  if (observer_) {
    BlockReport rep;
    rep.index = call_index_++;
    rep.prompt_tokens = static_cast<int64_t>(prompt_tokens_.size());
    rep.finalize = true;
    rep.tail_flush = true;
    rep.mel = mel;
    rep.speech = speech;
    rep.f0 = taps.f0;
    observer_(rep);
  }
  overlap_mel_ = at::Tensor();
  cache_mel_ = at::Tensor();
  cache_source_ = at::Tensor();
  return speech;
}

}  // namespace glmvoice::voice
