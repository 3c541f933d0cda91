#include "core/train/critic.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>
#include <utility>

#include "core/counter_dropout.h"
#include "core/error.h"
#include "core/sdpa.h"

namespace ganpo {
namespace {

torch::Tensor l2_normalize(const torch::Tensor& x) { return x / (x.norm() + 1e-12); }

void xavier_linear(torch::nn::Linear& layer) {
  torch::NoGradGuard guard;
  torch::nn::init::xavier_uniform_(layer->weight);
  if (layer->bias.defined()) layer->bias.zero_();
}

// Pre-norm transformer encoder layer (torch's TransformerEncoderLayer with norm_first=true,
// GELU): x + drop(attn(ln1 x)); x + drop(ffn(ln2 x)). Padding keys are masked.
struct EncoderLayerImpl : torch::nn::Module {
  EncoderLayerImpl(int64_t h, int64_t heads, int64_t ffn, double dropout)
      : heads(heads), dropout(dropout) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
    qkv = register_module("qkv", torch::nn::Linear(h, 3 * h));
    out = register_module("out", torch::nn::Linear(h, h));
    ff1 = register_module("ff1", torch::nn::Linear(h, ffn));
    ff2 = register_module("ff2", torch::nn::Linear(ffn, h));
    for (auto* l : {&qkv, &out, &ff1, &ff2}) xavier_linear(*l);
  }
  // x [N, T, h]; key_bias [N, 1, 1, T] additive (0 or -inf) or undefined.
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& key_bias, const c10::optional<at::Generator>& gen) {
    const bool train = is_training();
    const auto N = x.size(0), T = x.size(1), h = x.size(2), hd = h / heads;
    auto parts = qkv(norm1(x)).view({N, T, 3, heads, hd}).permute({2, 0, 3, 1, 4});  // [3][N, heads, T, hd]
    x = x + ganpo::dropout(out(attention(parts[0], parts[1], parts[2], key_bias, train, gen)), dropout, train, gen);
    auto y = ff2(ganpo::dropout(torch::gelu(ff1(norm2(x))), dropout, train, gen));
    return x + ganpo::dropout(y, dropout, train, gen);
  }
  // Self-attention over q, k, v [N, heads, T, hd] -> [N, T, h], dropout on the probabilities.
  torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const torch::Tensor& key_bias, bool train, const c10::optional<at::Generator>& gen) const {
    const auto N = q.size(0), T = q.size(2), hd = q.size(3);
    const bool drop = train && dropout > 0.0;
#if GANPO_HAVE_SDPA
    // The fused kernels, except for dropout on the CPU: there the probabilities' mask comes from
    // the critic's own counter-based generator (faster than LibTorch's, and in its checkpoint).
    // On CUDA, SDPA's dropout draws from the device generator, as torch::dropout there does.
    if (!drop || !q.device().is_cpu())
      return at::scaled_dot_product_attention(q, k, v, key_bias.defined() ? c10::optional<torch::Tensor>(key_bias) : c10::nullopt,
                                              drop ? dropout : 0.0)
          .transpose(1, 2)
          .reshape({N, T, heads * hd});
#endif
    // key bias + q k^T / sqrt(hd) as one batched product (baddbmm, BLAS with beta = 1): no
    // separate passes over the [N, heads, T, T] scores to mask them, nor back in the backward.
    auto qs = (q * (1.0 / std::sqrt(double(hd)))).reshape({N * heads, T, hd});
    auto kt = k.reshape({N * heads, T, hd}).transpose(1, 2);
    auto scores = (key_bias.defined() ? at::baddbmm(key_bias.expand({N, heads, 1, T}).reshape({N * heads, 1, T}), qs, kt)
                                      : at::bmm(qs, kt))
                      .view({N, heads, T, T});
    auto attn = ganpo::dropout(torch::softmax(scores, -1), dropout, drop, gen);
    return torch::matmul(attn, v).transpose(1, 2).reshape({N, T, heads * hd});
  }
  int64_t heads;
  double dropout;
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Linear qkv{nullptr}, out{nullptr}, ff1{nullptr}, ff2{nullptr};
};
TORCH_MODULE(EncoderLayer);

}  // namespace

SpectralLinearImpl::SpectralLinearImpl(int64_t in, int64_t out) {
  weight = register_parameter("weight", torch::empty({out, in}));
  bias = register_parameter("bias", torch::zeros({out}));
  torch::nn::init::xavier_uniform_(weight);
  torch::NoGradGuard guard;
  u = register_buffer("u", l2_normalize(torch::randn({out})));
  v = register_buffer("v", l2_normalize(torch::randn({in})));
  // A few warm-up iterations so sigma is accurate from the first step (as torch's
  // parametrized spectral_norm does); training then runs one iteration per forward.
  for (int i = 0; i < 15; ++i) {
    v.copy_(l2_normalize(torch::mv(weight.t(), u)));
    u.copy_(l2_normalize(torch::mv(weight, v)));
  }
}

torch::Tensor SpectralLinearImpl::normalized_weight() {
  auto sigma = torch::dot(u, torch::mv(weight, v));
  return weight / sigma;
}

torch::Tensor SpectralLinearImpl::forward(const torch::Tensor& x) {
  if (is_training()) {
    torch::NoGradGuard guard;
    v.copy_(l2_normalize(torch::mv(weight.t(), u)));
    u.copy_(l2_normalize(torch::mv(weight, v)));
  }
  return torch::nn::functional::linear(x, normalized_weight(), bias);
}

CriticShape critic_shape(const GanpoConfig& c, int64_t input_dim) {
  return {input_dim, c.critic_hidden, c.critic_layers, c.critic_heads, c.critic_ffn_mult,
          c.critic_max_len, c.critic_dropout};
}

std::string critic_attention_note(double dropout, const torch::Device& device) {
  if (!GANPO_HAVE_SDPA) return "explicit softmax (this LibTorch has no scaled_dot_product_attention)";
  if (dropout > 0.0 && device.is_cpu())
    return "scaled_dot_product_attention when evaluating; while training, explicit softmax with the critics' "
           "counter-based dropout of the attention probabilities (CPU)";
  return "scaled_dot_product_attention";
}

LatentCriticImpl::LatentCriticImpl(const CriticShape& s) : shape_(s) {
  input_proj_ = register_module("input_proj", SpectralLinear(s.input_dim, s.hidden));
  pos_embedding_ = register_parameter("pos_embedding", torch::randn({1, s.max_len, s.hidden}) * 0.02);
  layers_ = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < s.layers; ++i)
    layers_->push_back(EncoderLayer(s.hidden, s.heads, s.hidden * s.ffn_mult, s.dropout));
  head1_ = register_module("head1", SpectralLinear(s.hidden, s.hidden));
  head2_ = register_module("head2", SpectralLinear(s.hidden, 1));
}

torch::Tensor LatentCriticImpl::forward(const torch::Tensor& latents, const torch::Tensor& mask) {
  const auto N = latents.size(0), T = latents.size(1);
  if (T > shape_.max_len)
    throw Error("sequence of " + std::to_string(T) + " positions exceeds the critic's max_len " +
                std::to_string(shape_.max_len) + "; raise ganpo.critic_max_len");
  auto x = input_proj_(latents.to(pos_embedding_.dtype())) + pos_embedding_.slice(1, 0, T);
  torch::Tensor key_bias;
  if (mask.defined())
    key_bias = torch::zeros({N, 1, 1, T}, x.options())
                   .masked_fill(mask.view({N, 1, 1, T}) <= 0, -std::numeric_limits<float>::infinity());
  for (size_t i = 0; i < layers_->size(); ++i) x = layers_->ptr<EncoderLayerImpl>(i)->forward(x, key_bias, dropout_gen_);
  torch::Tensor pooled;
  if (mask.defined()) {
    auto m = mask.to(x.dtype()).unsqueeze(-1);  // [N, T, 1]
    pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0);
  } else {
    pooled = x.mean(1);
  }
  // Scores at float32 or wider whatever the autocast (bf16 under it): the losses and the EMA
  // means are taken over them.
  auto scores = head2_(torch::gelu(head1_(pooled))).squeeze(-1);
  return scores.to(c10::promoteTypes(scores.scalar_type(), torch::kFloat32));
}

CriticMasks critic_masks(const std::string& mode, const SequenceBatch& rows, int64_t pairs) {
  if (mode == "none") return {};
  const bool padded = rows.tokens < rows.input_ids.numel();
  if (mode == "attention" && !padded) return {};
  const auto& m = mode == "response" ? rows.response_mask : rows.attention_mask;
  return {m.slice(0, 0, pairs), m.slice(0, pairs)};
}

torch::Tensor bce_with_target(const torch::Tensor& z, bool target) {
  return target ? torch::softplus(-z).mean() : torch::softplus(z).mean();
}

GanpoRegularizer::GanpoRegularizer(const GanpoConfig& config, int64_t input_dim,
                                   const torch::Device& device)
    : config_(config) {
  critic_w_ = LatentCritic(critic_shape(config, input_dim));
  critic_l_ = LatentCritic(critic_shape(config, input_dim));
  critic_w_->to(device);
  critic_l_->to(device);
  if (device.is_cpu()) {
    // Seeds drawn from the global generator keep runs reproducible from the run's seed.
    auto seed = [] { return static_cast<uint64_t>(torch::randint(int64_t{1} << 62, {1}, torch::kLong).item<int64_t>()); };
    critic_w_->set_dropout_generator(at::make_generator<at::CPUGeneratorImpl>(seed()));
    critic_l_->set_dropout_generator(at::make_generator<at::CPUGeneratorImpl>(seed()));
  }
}

std::vector<torch::Tensor> GanpoRegularizer::critic_parameters() {
  auto params = critic_w_->parameters();
  for (auto& p : critic_l_->parameters()) params.push_back(p);
  return params;
}

GanpoRegularizer::PhaseState GanpoRegularizer::set_aside() {
  PhaseState state{ema_, {}, {}};
  for (auto* critic : {&critic_w_, &critic_l_})
    for (auto& b : (*critic)->buffers()) state.buffers.push_back(b.clone());
  for (auto& p : critic_parameters()) state.grads.push_back(std::exchange(p.mutable_grad(), torch::Tensor()));
  return state;
}

void GanpoRegularizer::put_back(PhaseState state) {
  torch::NoGradGuard guard;
  ema_ = std::move(state.ema);
  size_t i = 0;
  for (auto* critic : {&critic_w_, &critic_l_})
    for (auto& b : (*critic)->buffers()) b.copy_(state.buffers.at(i++));
  i = 0;
  for (auto& p : critic_parameters()) p.mutable_grad() = std::move(state.grads.at(i++));
}

void GanpoRegularizer::update_ema(torch::Tensor& mean, const torch::Tensor& scores) {
  auto batch_mean = scores.detach().mean();
  if (batch_mean_reducer_) batch_mean_reducer_(batch_mean);
  if (!ema_.initialized || !mean.defined())
    mean = batch_mean.clone();
  else
    mean = config_.ema_momentum * mean + (1.0 - config_.ema_momentum) * batch_mean;
}

CriticHalf GanpoRegularizer::critic_half(CriticSide side, const LatentSets& s) {
  const bool chosen = side == CriticSide::Chosen;
  LatentCritic& critic = chosen ? critic_w_ : critic_l_;
  critic->train();
  // This critic's "own" reference set (A for D_w, B for D_l), the other one, and its policy set.
  const auto& own = chosen ? s.ref_chosen : s.ref_rejected;
  const auto& other = chosen ? s.ref_rejected : s.ref_chosen;
  const auto& pol = chosen ? s.policy_chosen : s.policy_rejected;
  const auto& own_mask = chosen ? s.chosen_mask : s.rejected_mask;
  const auto& other_mask = chosen ? s.rejected_mask : s.chosen_mask;
  const auto B = own.size(0);
  // One forward over the three sets it scores; rows are independent, so this equals three
  // separate forwards except that spectral norm iterates once instead of three times.
  auto mask = own_mask.defined() ? torch::cat({own_mask, other_mask, own_mask}) : torch::Tensor();
  auto scores = critic->forward(torch::cat({own.detach(), other.detach(), pol.detach()}), mask);
  auto s_own = scores.slice(0, 0, B), s_other = scores.slice(0, B, 2 * B), s_pol = scores.slice(0, 2 * B);

  // mu[own], mu[other], mu[P] of this critic: (w_a, w_b, w_p) for D_w, (l_b, l_a, l_p) for D_l.
  torch::Tensor& mu_own = chosen ? ema_.w_a : ema_.l_b;
  torch::Tensor& mu_other = chosen ? ema_.w_b : ema_.l_a;
  torch::Tensor& mu_pol = chosen ? ema_.w_p : ema_.l_p;
  update_ema(mu_own, s_own);
  update_ema(mu_other, s_other);
  update_ema(mu_pol, s_pol);

  CriticHalf out;
  // own > policy > other, relativistically (GANPO.md: L_Dw, L_Dl).
  out.loss = 0.25 * (bce_with_target(s_own - mu_pol, true) + bce_with_target(s_pol - mu_own, false) +
                     bce_with_target(s_pol - mu_other, true) + bce_with_target(s_other - mu_pol, false));
  torch::NoGradGuard guard;
  auto frac = [](const torch::Tensor& c) { return c.to(torch::kFloat32).mean(); };
  out.acc = 0.25 * (frac(s_own > mu_pol) + frac(s_pol < mu_own) + frac(s_pol > mu_other) + frac(s_other < mu_pol));
  return out;
}

CriticPhase GanpoRegularizer::critic_phase(const LatentSets& s) {
  auto w = critic_half(CriticSide::Chosen, s);
  auto l = critic_half(CriticSide::Rejected, s);
  ema_.initialized = true;
  return {w.loss, l.loss, w.acc, l.acc};
}

CriticPhase GanpoRegularizer::critic_phase_backward(const LatentSets& s, double loss_scale, ParallelLanes* lanes) {
  CriticHalf w, l;
  auto half = [&](CriticSide side, CriticHalf& out) {
    out = critic_half(side, s);
    (out.loss * loss_scale).backward();
  };
  run_lanes(
      batch_mean_reducer_ ? nullptr : lanes, [&] { half(CriticSide::Chosen, w); }, [&] { half(CriticSide::Rejected, l); });
  ema_.initialized = true;
  return {w.loss.detach(), l.loss.detach(), w.acc, l.acc};
}

AdversarialTerm GanpoRegularizer::adversarial_term(const LatentSets& s) {
  GANPO_ASSERT(ema_.initialized, "critic_phase must run before adversarial_term");
  critic_w_->eval();
  critic_l_->eval();
  auto params = critic_parameters();
  for (auto& p : params) p.requires_grad_(false);
  AdversarialTerm out;
  out.g_chosen = bce_with_target(critic_w_->forward(s.policy_chosen, s.chosen_mask) - ema_.w_a, true);
  out.g_rejected = bce_with_target(critic_l_->forward(s.policy_rejected, s.rejected_mask) - ema_.l_b, true);
  out.loss = 0.5 * (out.g_chosen + out.g_rejected);
  for (auto& p : params) p.requires_grad_(true);
  return out;
}

std::vector<std::pair<const char*, LatentCritic*>> GanpoRegularizer::named_critics() {
  return {{"critic_w", &critic_w_}, {"critic_l", &critic_l_}};
}

std::vector<std::pair<std::string, torch::Tensor>> GanpoRegularizer::rng_state() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, critic] : named_critics()) {
    auto gen = (*critic)->dropout_generator();
    if (!gen.has_value()) continue;
    std::lock_guard<std::mutex> lock(gen->mutex());
    out.emplace_back(name, gen->get_state());
  }
  return out;
}

void GanpoRegularizer::set_rng_state(const std::map<std::string, torch::Tensor>& state) {
  for (const auto& [name, critic] : named_critics()) {
    auto gen = (*critic)->dropout_generator();
    auto it = state.find(name);
    if (!gen.has_value() || it == state.end()) continue;
    std::lock_guard<std::mutex> lock(gen->mutex());
    gen->set_state(it->second);
  }
}

std::map<std::string, torch::Tensor> GanpoRegularizer::ema_metrics() const {
  if (!ema_.initialized) return {};
  return {{"ema/w_ref_chosen", ema_.w_a},   {"ema/w_ref_rejected", ema_.w_b},
          {"ema/w_policy_chosen", ema_.w_p}, {"ema/l_ref_chosen", ema_.l_a},
          {"ema/l_ref_rejected", ema_.l_b},  {"ema/l_policy_rejected", ema_.l_p}};
}

}  // namespace ganpo
