#include "core/critic.h"

#include <cmath>

#include "core/error.h"

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
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& key_bias) {
    const auto N = x.size(0), T = x.size(1), h = x.size(2), hd = h / heads;
    auto parts = qkv(norm1(x)).view({N, T, 3, heads, hd}).permute({2, 0, 3, 1, 4});
    auto scores = torch::matmul(parts[0], parts[1].transpose(-2, -1)) / std::sqrt(double(hd));
    if (key_bias.defined()) scores = scores + key_bias;
    auto attn = torch::dropout(torch::softmax(scores, -1), dropout, is_training());
    auto ctx = torch::matmul(attn, parts[2]).transpose(1, 2).reshape({N, T, h});
    x = x + torch::dropout(out(ctx), dropout, is_training());
    auto y = ff2(torch::dropout(torch::gelu(ff1(norm2(x))), dropout, is_training()));
    return x + torch::dropout(y, dropout, is_training());
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
  for (size_t i = 0; i < layers_->size(); ++i) x = layers_->ptr<EncoderLayerImpl>(i)->forward(x, key_bias);
  torch::Tensor pooled;
  if (mask.defined()) {
    auto m = mask.to(x.dtype()).unsqueeze(-1);  // [N, T, 1]
    pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0);
  } else {
    pooled = x.mean(1);
  }
  return head2_(torch::gelu(head1_(pooled))).squeeze(-1);
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
}

std::vector<torch::Tensor> GanpoRegularizer::critic_parameters() {
  auto params = critic_w_->parameters();
  for (auto& p : critic_l_->parameters()) params.push_back(p);
  return params;
}

void GanpoRegularizer::update_ema(torch::Tensor& mean, const torch::Tensor& scores) {
  auto batch_mean = scores.detach().mean();
  if (!ema_.initialized || !mean.defined())
    mean = batch_mean.clone();
  else
    mean = config_.ema_momentum * mean + (1.0 - config_.ema_momentum) * batch_mean;
}

CriticPhase GanpoRegularizer::critic_phase(const LatentSets& s) {
  critic_w_->train();
  critic_l_->train();
  const auto B = s.ref_chosen.size(0);
  auto cat_mask = [](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& c) {
    return a.defined() ? torch::cat({a, b, c}) : torch::Tensor();
  };
  // One forward per critic over the three sets it scores; rows are independent, so this equals
  // three separate forwards except that spectral norm iterates once instead of three times.
  auto w_scores = critic_w_->forward(
      torch::cat({s.ref_chosen.detach(), s.ref_rejected.detach(), s.policy_chosen.detach()}),
      cat_mask(s.chosen_mask, s.rejected_mask, s.chosen_mask));
  auto l_scores = critic_l_->forward(
      torch::cat({s.ref_rejected.detach(), s.ref_chosen.detach(), s.policy_rejected.detach()}),
      cat_mask(s.rejected_mask, s.chosen_mask, s.rejected_mask));
  auto w_a = w_scores.slice(0, 0, B), w_b = w_scores.slice(0, B, 2 * B), w_p = w_scores.slice(0, 2 * B);
  auto l_b = l_scores.slice(0, 0, B), l_a = l_scores.slice(0, B, 2 * B), l_p = l_scores.slice(0, 2 * B);

  update_ema(ema_.w_a, w_a);
  update_ema(ema_.w_b, w_b);
  update_ema(ema_.w_p, w_p);
  update_ema(ema_.l_a, l_a);
  update_ema(ema_.l_b, l_b);
  update_ema(ema_.l_p, l_p);
  ema_.initialized = true;

  CriticPhase out;
  out.loss_chosen = 0.25 * (bce_with_target(w_a - ema_.w_p, true) + bce_with_target(w_p - ema_.w_a, false) +
                            bce_with_target(w_p - ema_.w_b, true) + bce_with_target(w_b - ema_.w_p, false));
  out.loss_rejected = 0.25 * (bce_with_target(l_b - ema_.l_p, true) + bce_with_target(l_p - ema_.l_b, false) +
                              bce_with_target(l_p - ema_.l_a, true) + bce_with_target(l_a - ema_.l_p, false));
  torch::NoGradGuard guard;
  auto frac = [](const torch::Tensor& c) { return c.to(torch::kFloat32).mean(); };
  out.acc_chosen = 0.25 * (frac(w_a > ema_.w_p) + frac(w_p < ema_.w_a) + frac(w_p > ema_.w_b) +
                           frac(w_b < ema_.w_p));
  out.acc_rejected = 0.25 * (frac(l_b > ema_.l_p) + frac(l_p < ema_.l_b) + frac(l_p > ema_.l_a) +
                             frac(l_a < ema_.l_p));
  return out;
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

std::map<std::string, torch::Tensor> GanpoRegularizer::ema_metrics() const {
  if (!ema_.initialized) return {};
  return {{"ema/w_ref_chosen", ema_.w_a},   {"ema/w_ref_rejected", ema_.w_b},
          {"ema/w_policy_chosen", ema_.w_p}, {"ema/l_ref_chosen", ema_.l_a},
          {"ema/l_ref_rejected", ema_.l_b},  {"ema/l_policy_rejected", ema_.l_p}};
}

}  // namespace ganpo
