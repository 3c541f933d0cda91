#include "core/train/critic.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/config.h"
#include "core/error.h"
#include "core/parallel_lanes.h"

namespace ganpo {
namespace {

double softplus(double x) { return std::log1p(std::exp(x)); }

double largest_singular_value(const torch::Tensor& w) {
  return at::linalg_svdvals(w.detach().to(torch::kFloat64)).max().item<double>();
}

// ---- SpectralLinear ------------------------------------------------------------------------

TEST(CriticSpectralLinear, TrainingForwardsNormaliseTheLargestSingularValueToOne) {
  torch::manual_seed(1);
  SpectralLinear layer(12, 7);
  // Scale and perturb the weight so the stored u, v no longer fit it: the per-forward power
  // iteration has to re-converge.
  {
    torch::NoGradGuard guard;
    layer->weight.mul_(5.0).add_(torch::randn({7, 12}) * 0.7);
  }
  ASSERT_GT(largest_singular_value(layer->weight), 2.0);
  layer->train();
  auto x = torch::randn({3, 12});
  for (int i = 0; i < 40; ++i) layer->forward(x);
  EXPECT_NEAR(largest_singular_value(layer->normalized_weight()), 1.0, 1e-2);
  // u, v stay unit vectors.
  EXPECT_NEAR(layer->u.norm().item<double>(), 1.0, 1e-5);
  EXPECT_NEAR(layer->v.norm().item<double>(), 1.0, 1e-5);
}

TEST(CriticSpectralLinear, FreshLayerIsAlreadyNormalised) {
  torch::manual_seed(2);
  SpectralLinear layer(16, 16);
  EXPECT_NEAR(largest_singular_value(layer->normalized_weight()), 1.0, 1e-2);
}

TEST(CriticSpectralLinear, EvalModeDoesNotIterateAndComputesLinearOfNormalisedWeight) {
  torch::manual_seed(3);
  SpectralLinear layer(5, 4);
  {
    torch::NoGradGuard guard;
    layer->weight.mul_(3.0).add_(torch::randn({4, 5}));
    layer->bias.copy_(torch::tensor({0.1f, -0.2f, 0.3f, 0.0f}));
  }
  layer->eval();
  auto u0 = layer->u.clone(), v0 = layer->v.clone();
  auto x = torch::randn({6, 5});
  auto y1 = layer->forward(x);
  auto y2 = layer->forward(x);
  EXPECT_TRUE(torch::equal(layer->u, u0));
  EXPECT_TRUE(torch::equal(layer->v, v0));
  EXPECT_TRUE(torch::allclose(y1, y2));
  const auto sigma = torch::dot(u0, torch::mv(layer->weight, v0));
  auto expected = torch::matmul(x, (layer->weight / sigma).t()) + layer->bias;
  EXPECT_TRUE(torch::allclose(y1, expected, 1e-5, 1e-6));

  // Training mode does iterate.
  layer->train();
  layer->forward(x);
  EXPECT_FALSE(torch::equal(layer->u, u0) && torch::equal(layer->v, v0));
}

TEST(CriticSpectralLinear, GradientReachesTheRawWeight) {
  torch::manual_seed(4);
  SpectralLinear layer(4, 3);
  layer->train();
  layer->forward(torch::randn({2, 4})).sum().backward();
  ASSERT_TRUE(layer->weight.grad().defined());
  EXPECT_GT(layer->weight.grad().abs().sum().item<double>(), 0.0);
  ASSERT_TRUE(layer->bias.grad().defined());
  EXPECT_FALSE(layer->u.requires_grad());
}

// ---- LatentCritic --------------------------------------------------------------------------

CriticShape small_shape(double dropout = 0.0) {
  CriticShape s;
  s.input_dim = 8;
  s.hidden = 16;
  s.layers = 2;
  s.heads = 2;
  s.ffn_mult = 2;
  s.max_len = 32;
  s.dropout = dropout;
  return s;
}

TEST(CriticLatentCritic, OutputIsOneLogitPerSequence) {
  torch::manual_seed(5);
  LatentCritic critic(small_shape());
  critic->eval();
  auto out = critic->forward(torch::randn({3, 6, 8}), torch::ones({3, 6}));
  EXPECT_EQ(out.sizes(), torch::IntArrayRef({3}));
  auto out2 = critic->forward(torch::randn({1, 1, 8}), torch::Tensor());
  EXPECT_EQ(out2.sizes(), torch::IntArrayRef({1}));
  EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
}

TEST(CriticLatentCritic, MaskedPositionsDoNotAffectTheScore) {
  torch::manual_seed(6);
  LatentCritic critic(small_shape());
  critic->eval();
  auto latents = torch::randn({3, 7, 8});
  auto mask = torch::ones({3, 7});
  mask[0].slice(0, 4).fill_(0);  // row 0: 4 real positions, then 3 pads
  mask[2].slice(0, 6).fill_(0);  // row 2: 6 real positions
  auto a = critic->forward(latents, mask);
  auto changed = latents.clone();
  changed[0].slice(0, 4) = torch::randn({3, 8}) * 10;
  changed[2][6] = torch::randn({8}) * 10;
  auto b = critic->forward(changed, mask);
  EXPECT_NEAR(a[0].item<double>(), b[0].item<double>(), 1e-5);
  EXPECT_NEAR(a[1].item<double>(), b[1].item<double>(), 1e-5);
  EXPECT_NEAR(a[2].item<double>(), b[2].item<double>(), 1e-5);
  // A masked row scores like the same row with the padding cut off.
  auto cut = critic->forward(latents[0].slice(0, 0, 4).unsqueeze(0), torch::ones({1, 4}));
  EXPECT_NEAR(a[0].item<double>(), cut[0].item<double>(), 1e-5);
  // Without a mask, the same change does move the score (the mask is what hides it).
  auto c = critic->forward(latents, torch::Tensor());
  auto d = critic->forward(changed, torch::Tensor());
  EXPECT_GT(std::abs(c[0].item<double>() - d[0].item<double>()), 1e-6);
}

TEST(CriticLatentCritic, AllOnesMaskEqualsNoMask) {
  torch::manual_seed(7);
  LatentCritic critic(small_shape());
  critic->eval();
  auto x = torch::randn({2, 5, 8});
  EXPECT_TRUE(torch::allclose(critic->forward(x, torch::ones({2, 5})), critic->forward(x, torch::Tensor()),
                              1e-5, 1e-6));
}

TEST(CriticLatentCritic, RowsAreIndependent) {
  torch::manual_seed(8);
  LatentCritic critic(small_shape());
  critic->eval();
  auto x = torch::randn({4, 5, 8});
  auto all = critic->forward(x, torch::ones({4, 5}));
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(all[i].item<double>(), critic->forward(x.slice(0, i, i + 1), torch::ones({1, 5}))[0].item<double>(),
                1e-5);
}

// The critic's forward written out from its parameters (float64): spectral input projection,
// learned positions, pre-norm encoder layers with key-masked softmax attention, masked mean pool,
// spectral head. Whatever attention kernel the build uses (core/sdpa.h) must give these numbers.
torch::Tensor critic_by_hand(LatentCritic& critic, const torch::Tensor& x, const torch::Tensor& mask) {
  auto p = critic->named_parameters();
  auto b = critic->named_buffers();
  auto spectral = [&](const std::string& name, const torch::Tensor& in) {
    const auto& w = p[name + ".weight"];
    auto sigma = torch::dot(b[name + ".u"], torch::mv(w, b[name + ".v"]));
    return torch::nn::functional::linear(in, w / sigma, p[name + ".bias"]);
  };
  auto linear = [&](const std::string& name, const torch::Tensor& in) {
    return torch::nn::functional::linear(in, p[name + ".weight"], p[name + ".bias"]);
  };
  auto norm = [&](const std::string& name, const torch::Tensor& in) {
    return torch::layer_norm(in, {in.size(-1)}, p[name + ".weight"], p[name + ".bias"], 1e-5);
  };
  const auto N = x.size(0), T = x.size(1), h = critic->shape().hidden, heads = critic->shape().heads, hd = h / heads;
  auto hidden = spectral("input_proj", x) + p["pos_embedding"].slice(1, 0, T);
  auto hidden_keys = (mask > 0).view({N, 1, 1, T});
  for (int64_t l = 0; l < critic->shape().layers; ++l) {
    const std::string pre = "layers." + std::to_string(l) + ".";
    auto qkv = linear(pre + "qkv", norm(pre + "norm1", hidden)).view({N, T, 3, heads, hd});
    auto q = qkv.select(2, 0).transpose(1, 2), k = qkv.select(2, 1).transpose(1, 2), v = qkv.select(2, 2).transpose(1, 2);
    auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(hd));  // [N, heads, T, T]
    scores = scores.masked_fill(hidden_keys.logical_not(), -std::numeric_limits<double>::infinity());
    auto ctx = torch::matmul(torch::softmax(scores, -1), v).transpose(1, 2).reshape({N, T, h});
    hidden = hidden + linear(pre + "out", ctx);
    hidden = hidden + linear(pre + "ff2", torch::gelu(linear(pre + "ff1", norm(pre + "norm2", hidden))));
  }
  auto m = mask.to(hidden.dtype()).unsqueeze(-1);
  auto pooled = (hidden * m).sum(1) / m.sum(1);
  return spectral("head2", torch::gelu(spectral("head1", pooled))).squeeze(-1);
}

TEST(CriticLatentCritic, ForwardAndGradientsEqualTheEncoderComputedByHand) {
  torch::manual_seed(9);
  LatentCritic critic(small_shape(/*dropout=*/0.1));  // dropout is off in evaluation, whatever p
  critic->to(torch::kFloat64);
  critic->eval();
  auto x = torch::randn({3, 7, 8}, torch::kFloat64);
  auto mask = torch::ones({3, 7}, torch::kFloat64);
  mask[0].slice(0, 4).fill_(0);
  mask[2].slice(0, 6).fill_(0);
  auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
  auto got = critic->forward(xa, mask);
  const torch::Tensor qkv = critic->named_parameters()["layers.1.qkv.weight"];
  auto got_grads = torch::autograd::grad({got.sum()}, {xa, qkv});
  auto want = critic_by_hand(critic, xb, mask);
  auto want_grads = torch::autograd::grad({want.sum()}, {xb, qkv});
  EXPECT_TRUE(torch::allclose(got, want, 1e-10, 1e-12)) << got << want;
  EXPECT_TRUE(torch::allclose(got_grads[0], want_grads[0], 1e-9, 1e-12));  // into the latents
  EXPECT_TRUE(torch::allclose(got_grads[1], want_grads[1], 1e-9, 1e-12));  // into an attention weight
  EXPECT_GT(got_grads[1].abs().max().item<double>(), 1e-6);
}

TEST(CriticLatentCritic, TooLongSequenceThrows) {
  LatentCritic critic(small_shape());
  EXPECT_THROW(critic->forward(torch::randn({1, 33, 8}), torch::Tensor()), Error);
}

// ---- critic_masks ---------------------------------------------------------------------------

TEST(CriticMasks, AnUnpaddedBatchNeedsNoMaskUnderAttentionButKeepsItsResponseMask) {
  // Every row 6 tokens long: prompt 3 + response 3 on both sides.
  TokenizedPair a{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}};
  TokenizedPair b{{1, 3, 2}, {6, 5, 4}, {9, 8, 7}};
  const auto batch = collate_pairs({&a, &b}, 0, torch::kCPU);
  const auto& rows = batch.sequences;
  EXPECT_FALSE(critic_masks("attention", rows, 2).chosen.defined());
  EXPECT_FALSE(critic_masks("attention", rows, 2).rejected.defined());
  EXPECT_FALSE(critic_masks("none", rows, 2).chosen.defined());
  const auto response = critic_masks("response", rows, 2);
  ASSERT_TRUE(response.chosen.defined());
  EXPECT_TRUE(torch::equal(response.chosen, rows.response_mask.slice(0, 0, 2)));
  EXPECT_TRUE(torch::equal(response.rejected, rows.response_mask.slice(0, 2)));
}

TEST(CriticMasks, OnePaddedRowGivesEveryRowItsAttentionMask) {
  TokenizedPair a{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}};
  TokenizedPair b{{1, 3, 2}, {6, 5, 4}, {9, 8}};  // one rejected response a token shorter
  const auto batch = collate_pairs({&a, &b}, 0, torch::kCPU);
  const auto& rows = batch.sequences;
  const auto masks = critic_masks("attention", rows, 2);
  ASSERT_TRUE(masks.chosen.defined());
  EXPECT_TRUE(torch::equal(masks.chosen, rows.attention_mask.slice(0, 0, 2)));
  EXPECT_TRUE(torch::equal(masks.rejected, rows.attention_mask.slice(0, 2)));
  EXPECT_EQ(masks.rejected[1].sum().item<double>(), 5.0);
  EXPECT_FALSE(critic_masks("none", rows, 2).rejected.defined());
}

TEST(CriticBce, SoftplusByHand) {
  auto z = torch::tensor({-1.0, 0.5, 2.0}, torch::kFloat64);
  const double one = (softplus(1.0) + softplus(-0.5) + softplus(-2.0)) / 3.0;
  const double zero = (softplus(-1.0) + softplus(0.5) + softplus(2.0)) / 3.0;
  EXPECT_NEAR(bce_with_target(z, true).item<double>(), one, 1e-12);
  EXPECT_NEAR(bce_with_target(z, false).item<double>(), zero, 1e-12);
  // At z = 0 both are ln 2 (chance).
  EXPECT_NEAR(bce_with_target(torch::zeros({4}, torch::kFloat64), true).item<double>(), std::log(2.0), 1e-12);
  // Large |z| does not overflow.
  auto big = torch::tensor({-200.0f, 200.0f});
  EXPECT_NEAR(bce_with_target(big, true).item<double>(), 100.0, 1e-3);
}

// ---- GanpoRegularizer ----------------------------------------------------------------------

GanpoConfig small_config(double dropout = 0.0) {
  GanpoConfig c;
  c.critic_hidden = 16;
  c.critic_layers = 1;
  c.critic_heads = 2;
  c.critic_ffn_mult = 2;
  c.critic_max_len = 32;
  c.critic_dropout = dropout;
  c.ema_momentum = 0.9;
  return c;
}

constexpr int64_t kB = 3, kT = 6, kD = 8;

LatentSets random_sets(torch::Dtype dtype = torch::kFloat32, bool grad = false) {
  auto opts = torch::TensorOptions().dtype(dtype);
  LatentSets s;
  s.ref_chosen = torch::randn({kB, kT, kD}, opts).requires_grad_(grad);
  s.ref_rejected = torch::randn({kB, kT, kD}, opts).requires_grad_(grad);
  s.policy_chosen = torch::randn({kB, kT, kD}, opts).requires_grad_(grad);
  s.policy_rejected = torch::randn({kB, kT, kD}, opts).requires_grad_(grad);
  s.chosen_mask = torch::ones({kB, kT});
  s.rejected_mask = torch::ones({kB, kT});
  s.chosen_mask[1].slice(0, 4).fill_(0);
  s.rejected_mask[0].slice(0, 3).fill_(0);
  s.rejected_mask[2].slice(0, 5).fill_(0);
  return s;
}

std::vector<double> to_vec(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// Eval-mode scores of both critics on the four sets (with dropout 0 these equal the
// training-mode scores of the last critic_phase, whose single power iteration already ran).
struct Scores {
  std::vector<double> w_a, w_b, w_p, l_a, l_b, l_p;
};

Scores eval_scores(GanpoRegularizer& reg, const LatentSets& s) {
  torch::NoGradGuard guard;
  reg.critic_w()->eval();
  reg.critic_l()->eval();
  Scores o;
  o.w_a = to_vec(reg.critic_w()->forward(s.ref_chosen, s.chosen_mask));
  o.w_b = to_vec(reg.critic_w()->forward(s.ref_rejected, s.rejected_mask));
  o.w_p = to_vec(reg.critic_w()->forward(s.policy_chosen, s.chosen_mask));
  o.l_a = to_vec(reg.critic_l()->forward(s.ref_chosen, s.chosen_mask));
  o.l_b = to_vec(reg.critic_l()->forward(s.ref_rejected, s.rejected_mask));
  o.l_p = to_vec(reg.critic_l()->forward(s.policy_rejected, s.rejected_mask));
  return o;
}

double bce(const std::vector<double>& z, double shift, bool target) {
  double s = 0;
  for (double x : z) s += target ? softplus(-(x - shift)) : softplus(x - shift);
  return s / static_cast<double>(z.size());
}

double frac(const std::vector<double>& z, double shift, bool greater) {
  double s = 0;
  for (double x : z) s += greater ? (x > shift) : (x < shift);
  return s / static_cast<double>(z.size());
}

TEST(CriticRegularizer, FirstCriticPhaseCopiesTheBatchMeans) {
  torch::manual_seed(10);
  GanpoRegularizer reg(small_config(), kD, torch::kCPU);
  EXPECT_FALSE(reg.ema().initialized);
  EXPECT_TRUE(reg.ema_metrics().empty());
  auto s = random_sets();
  reg.critic_phase(s);
  ASSERT_TRUE(reg.ema().initialized);
  auto sc = eval_scores(reg, s);
  const auto& e = reg.ema();
  EXPECT_NEAR(e.w_a.item<double>(), mean(sc.w_a), 1e-5);
  EXPECT_NEAR(e.w_b.item<double>(), mean(sc.w_b), 1e-5);
  EXPECT_NEAR(e.w_p.item<double>(), mean(sc.w_p), 1e-5);
  EXPECT_NEAR(e.l_a.item<double>(), mean(sc.l_a), 1e-5);
  EXPECT_NEAR(e.l_b.item<double>(), mean(sc.l_b), 1e-5);
  EXPECT_NEAR(e.l_p.item<double>(), mean(sc.l_p), 1e-5);
  EXPECT_FALSE(e.w_a.requires_grad());

  auto m = reg.ema_metrics();
  ASSERT_EQ(m.size(), 6u);
  EXPECT_DOUBLE_EQ(m.at("ema/w_ref_chosen").item<double>(), e.w_a.item<double>());
  EXPECT_DOUBLE_EQ(m.at("ema/w_ref_rejected").item<double>(), e.w_b.item<double>());
  EXPECT_DOUBLE_EQ(m.at("ema/w_policy_chosen").item<double>(), e.w_p.item<double>());
  EXPECT_DOUBLE_EQ(m.at("ema/l_ref_chosen").item<double>(), e.l_a.item<double>());
  EXPECT_DOUBLE_EQ(m.at("ema/l_ref_rejected").item<double>(), e.l_b.item<double>());
  EXPECT_DOUBLE_EQ(m.at("ema/l_policy_rejected").item<double>(), e.l_p.item<double>());
}

TEST(CriticRegularizer, SecondCriticPhaseBlendsWithMomentum) {
  torch::manual_seed(11);
  auto cfg = small_config();
  cfg.ema_momentum = 0.8;
  GanpoRegularizer reg(cfg, kD, torch::kCPU);
  reg.critic_phase(random_sets());
  const double w_a1 = reg.ema().w_a.item<double>(), w_b1 = reg.ema().w_b.item<double>(),
               w_p1 = reg.ema().w_p.item<double>(), l_a1 = reg.ema().l_a.item<double>(),
               l_b1 = reg.ema().l_b.item<double>(), l_p1 = reg.ema().l_p.item<double>();
  auto s2 = random_sets();
  reg.critic_phase(s2);
  auto sc = eval_scores(reg, s2);
  const double m = 0.8;
  const auto& e = reg.ema();
  EXPECT_NEAR(e.w_a.item<double>(), m * w_a1 + (1 - m) * mean(sc.w_a), 1e-5);
  EXPECT_NEAR(e.w_b.item<double>(), m * w_b1 + (1 - m) * mean(sc.w_b), 1e-5);
  EXPECT_NEAR(e.w_p.item<double>(), m * w_p1 + (1 - m) * mean(sc.w_p), 1e-5);
  EXPECT_NEAR(e.l_a.item<double>(), m * l_a1 + (1 - m) * mean(sc.l_a), 1e-5);
  EXPECT_NEAR(e.l_b.item<double>(), m * l_b1 + (1 - m) * mean(sc.l_b), 1e-5);
  EXPECT_NEAR(e.l_p.item<double>(), m * l_p1 + (1 - m) * mean(sc.l_p), 1e-5);
}

TEST(CriticRegularizer, CriticLossesAndAccuraciesMatchHandRecomputation) {
  torch::manual_seed(12);
  GanpoRegularizer reg(small_config(), kD, torch::kCPU);
  reg.critic_phase(random_sets());  // initialise the EMA from another batch
  auto s = random_sets();
  auto out = reg.critic_phase(s);
  auto sc = eval_scores(reg, s);
  const auto& e = reg.ema();
  const double mw_a = e.w_a.item<double>(), mw_b = e.w_b.item<double>(), mw_p = e.w_p.item<double>();
  const double ml_a = e.l_a.item<double>(), ml_b = e.l_b.item<double>(), ml_p = e.l_p.item<double>();

  const double L_dw = 0.25 * (bce(sc.w_a, mw_p, true) + bce(sc.w_p, mw_a, false) + bce(sc.w_p, mw_b, true) +
                              bce(sc.w_b, mw_p, false));
  const double L_dl = 0.25 * (bce(sc.l_b, ml_p, true) + bce(sc.l_p, ml_b, false) + bce(sc.l_p, ml_a, true) +
                              bce(sc.l_a, ml_p, false));
  EXPECT_NEAR(out.loss_chosen.item<double>(), L_dw, 1e-5);
  EXPECT_NEAR(out.loss_rejected.item<double>(), L_dl, 1e-5);
  EXPECT_EQ(out.loss_chosen.dim(), 0);

  const double acc_w = 0.25 * (frac(sc.w_a, mw_p, true) + frac(sc.w_p, mw_a, false) + frac(sc.w_p, mw_b, true) +
                               frac(sc.w_b, mw_p, false));
  const double acc_l = 0.25 * (frac(sc.l_b, ml_p, true) + frac(sc.l_p, ml_b, false) + frac(sc.l_p, ml_a, true) +
                               frac(sc.l_a, ml_p, false));
  EXPECT_NEAR(out.acc_chosen.item<double>(), acc_w, 1e-6);
  EXPECT_NEAR(out.acc_rejected.item<double>(), acc_l, 1e-6);
  for (const auto& a : {out.acc_chosen, out.acc_rejected}) {
    EXPECT_GE(a.item<double>(), 0.0);
    EXPECT_LE(a.item<double>(), 1.0);
  }
}

TEST(CriticRegularizer, AccuraciesStayInUnitIntervalWithDropout) {
  torch::manual_seed(13);
  GanpoRegularizer reg(small_config(0.1), kD, torch::kCPU);
  for (int i = 0; i < 4; ++i) {
    auto out = reg.critic_phase(random_sets());
    for (const auto& a : {out.acc_chosen, out.acc_rejected}) {
      EXPECT_GE(a.item<double>(), 0.0);
      EXPECT_LE(a.item<double>(), 1.0);
      // Four comparisons over B = 3 rows each: a multiple of 1/12.
      EXPECT_NEAR(a.item<double>() * 12.0, std::round(a.item<double>() * 12.0), 1e-5);
    }
  }
}

TEST(CriticRegularizer, CriticPhaseGivesNoGradientToLatents) {
  torch::manual_seed(14);
  GanpoRegularizer reg(small_config(0.1), kD, torch::kCPU);
  auto s = random_sets(torch::kFloat32, /*grad=*/true);
  auto out = reg.critic_phase(s);
  (out.loss_chosen + out.loss_rejected).backward();
  for (const auto* t : {&s.ref_chosen, &s.ref_rejected, &s.policy_chosen, &s.policy_rejected}) {
    const auto& g = t->grad();
    EXPECT_TRUE(!g.defined() || g.abs().max().item<double>() == 0.0);
  }
  // ... and the critics do get gradients.
  double total = 0;
  for (auto& p : reg.critic_parameters()) {
    ASSERT_TRUE(p.grad().defined());
    total += p.grad().abs().sum().item<double>();
  }
  EXPECT_GT(total, 0.0);
}

TEST(CriticRegularizer, AdversarialTermBeforeCriticPhaseIsAnError) {
  GanpoRegularizer reg(small_config(), kD, torch::kCPU);
  EXPECT_ANY_THROW(reg.adversarial_term(random_sets()));
}

TEST(CriticRegularizer, AdversarialTermGradientsReachOnlyThePolicyLatents) {
  torch::manual_seed(15);
  GanpoRegularizer reg(small_config(0.1), kD, torch::kCPU);
  auto s = random_sets(torch::kFloat32, /*grad=*/true);
  reg.critic_phase(s);
  auto params = reg.critic_parameters();
  auto adv = reg.adversarial_term(s);
  EXPECT_TRUE(adv.loss.requires_grad());
  adv.loss.backward();
  for (auto& p : params) {
    const auto& g = p.grad();
    EXPECT_TRUE(!g.defined() || g.abs().max().item<double>() == 0.0);
    EXPECT_TRUE(p.requires_grad());  // restored after the term is built
  }
  ASSERT_TRUE(s.policy_chosen.grad().defined());
  ASSERT_TRUE(s.policy_rejected.grad().defined());
  EXPECT_GT(s.policy_chosen.grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(s.policy_rejected.grad().abs().sum().item<double>(), 0.0);
  for (const auto* t : {&s.ref_chosen, &s.ref_rejected}) {
    const auto& g = t->grad();
    EXPECT_TRUE(!g.defined() || g.abs().max().item<double>() == 0.0);
  }
  // Padded positions get no gradient.
  EXPECT_EQ(s.policy_chosen.grad()[1].slice(0, 4).abs().max().item<double>(), 0.0);
  EXPECT_EQ(s.policy_rejected.grad()[0].slice(0, 3).abs().max().item<double>(), 0.0);
  // The critics are left in eval mode.
  EXPECT_FALSE(reg.critic_w()->is_training());
  EXPECT_FALSE(reg.critic_l()->is_training());
}

TEST(CriticRegularizer, AdversarialTermDoesNotDisturbCriticGradientsOrBuffers) {
  torch::manual_seed(16);
  GanpoRegularizer reg(small_config(), kD, torch::kCPU);
  auto s = random_sets(torch::kFloat32, true);
  auto c = reg.critic_phase(s);
  (c.loss_chosen + c.loss_rejected).backward();
  std::vector<torch::Tensor> grads, buffers;
  for (auto& p : reg.critic_parameters()) grads.push_back(p.grad().clone());
  for (auto& b : reg.critic_w()->buffers()) buffers.push_back(b.clone());
  reg.adversarial_term(s).loss.backward();
  auto params = reg.critic_parameters();
  for (size_t i = 0; i < params.size(); ++i) EXPECT_TRUE(torch::equal(params[i].grad(), grads[i])) << i;
  auto now = reg.critic_w()->buffers();
  for (size_t i = 0; i < now.size(); ++i) EXPECT_TRUE(torch::equal(now[i], buffers[i])) << i;
}

TEST(CriticRegularizer, AdversarialTermMatchesHandRecomputation) {
  torch::manual_seed(17);
  GanpoRegularizer reg(small_config(0.1), kD, torch::kCPU);
  auto s = random_sets();
  reg.critic_phase(random_sets());
  reg.critic_phase(s);
  auto adv = reg.adversarial_term(s);
  // Critics in eval mode: dropout off, u, v fixed, so this recomputation is exact.
  auto sc = eval_scores(reg, s);
  const auto& e = reg.ema();
  const double gw = bce(sc.w_p, e.w_a.item<double>(), true);
  const double gl = bce(sc.l_p, e.l_b.item<double>(), true);
  EXPECT_NEAR(adv.g_chosen.item<double>(), gw, 1e-5);
  EXPECT_NEAR(adv.g_rejected.item<double>(), gl, 1e-5);
  EXPECT_NEAR(adv.loss.item<double>(), 0.5 * (gw + gl), 1e-5);
  // adversarial_term leaves the EMA alone.
  auto again = reg.adversarial_term(s);
  EXPECT_DOUBLE_EQ(again.loss.item<double>(), adv.loss.item<double>());
}

TEST(CriticRegularizer, UndefinedMasksScoreAllPositions) {
  torch::manual_seed(18);
  GanpoRegularizer reg(small_config(), kD, torch::kCPU);
  auto s = random_sets();
  s.chosen_mask = torch::Tensor();
  s.rejected_mask = torch::Tensor();
  auto c = reg.critic_phase(s);
  auto a = reg.adversarial_term(s);
  EXPECT_TRUE(std::isfinite(c.loss_chosen.item<double>()));
  EXPECT_TRUE(std::isfinite(a.loss.item<double>()));
  auto sc = eval_scores(reg, s);
  EXPECT_NEAR(a.g_chosen.item<double>(), bce(sc.w_p, reg.ema().w_a.item<double>(), true), 1e-5);
}

TEST(CriticRegularizerGradient, AdversarialTermMatchesFiniteDifferencesInDouble) {
  torch::manual_seed(19);
  GanpoRegularizer reg(small_config(0.1), kD, torch::kCPU);
  reg.critic_w()->to(torch::kFloat64);
  reg.critic_l()->to(torch::kFloat64);
  auto s = random_sets(torch::kFloat64, /*grad=*/false);
  reg.critic_phase(s);
  ASSERT_EQ(reg.ema().w_a.scalar_type(), torch::kFloat64);

  auto pw = s.policy_chosen.clone().requires_grad_(true);
  auto pl = s.policy_rejected.clone().requires_grad_(true);
  LatentSets g = s;
  g.policy_chosen = pw;
  g.policy_rejected = pl;
  reg.adversarial_term(g).loss.backward();

  auto value = [&](const torch::Tensor& w, const torch::Tensor& l) {
    torch::NoGradGuard guard;
    LatentSets t = s;
    t.policy_chosen = w;
    t.policy_rejected = l;
    return reg.adversarial_term(t).loss.item<double>();
  };
  const double eps = 1e-6;
  struct Probe {
    bool chosen;
    int64_t b, t, d;
  };
  for (const Probe& p : {Probe{true, 0, 1, 2}, Probe{true, 2, 5, 7}, Probe{false, 1, 0, 3}, Probe{false, 2, 4, 0}}) {
    auto base = p.chosen ? s.policy_chosen : s.policy_rejected;
    auto plus = base.clone(), minus = base.clone();
    plus[p.b][p.t][p.d] += eps;
    minus[p.b][p.t][p.d] -= eps;
    const double fp = p.chosen ? value(plus, s.policy_rejected) : value(s.policy_chosen, plus);
    const double fm = p.chosen ? value(minus, s.policy_rejected) : value(s.policy_chosen, minus);
    const double fd = (fp - fm) / (2 * eps);
    const double ad = (p.chosen ? pw : pl).grad()[p.b][p.t][p.d].item<double>();
    EXPECT_NEAR(ad, fd, 1e-6 * std::max(1.0, std::abs(fd)))
        << (p.chosen ? "P_w" : "P_l") << "[" << p.b << "][" << p.t << "][" << p.d << "]";
    EXPECT_GT(std::abs(ad), 1e-9);
  }
}

// Both halves of the critic phase with their backward, on two lanes or one after the other,
// give the same losses and gradients: the critics share no state and each draws dropout from its
// own generator.
TEST(CriticRegularizer, CriticPhaseOnTwoLanesEqualsOneLane) {
  auto config = small_config();
  config.critic_dropout = 0.2;
  auto run = [&](int lanes_wanted) {
    torch::manual_seed(21);
    GanpoRegularizer reg(config, kD, torch::kCPU);
    ParallelLanes lanes;
    lanes.set_plan(plan_cpu_threads(lanes_wanted, lanes_wanted, 1));
    std::vector<torch::Tensor> out;
    for (int step = 0; step < 3; ++step) {
      auto phase = reg.critic_phase_backward(random_sets(), 0.5, &lanes);
      out.insert(out.end(), {phase.loss_chosen, phase.loss_rejected, phase.acc_chosen, phase.acc_rejected,
                             reg.ema().w_p, reg.ema().l_p});
    }
    for (auto& p : reg.critic_parameters()) out.push_back(p.grad().clone());
    return out;
  };
  auto one = run(1), two = run(2);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(torch::allclose(one[i], two[i], 1e-6, 1e-7)) << i;
}

// The dropout generators' states travel with checkpoints: restoring them repeats the draws.
TEST(CriticRegularizer, DropoutGeneratorStateRestoresTheSameDraws) {
  torch::manual_seed(5);
  GanpoRegularizer reg(small_config(0.3), kD, torch::kCPU);
  auto state = reg.rng_state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].first, "critic_w");
  EXPECT_EQ(state[1].first, "critic_l");
  const std::map<std::string, torch::Tensor> saved(state.begin(), state.end());
  auto draw = [&](GanpoRegularizer& r) {
    return torch::cat({torch::empty({256}).bernoulli_(0.5, *r.critic_w()->dropout_generator()),
                       torch::empty({256}).bernoulli_(0.5, *r.critic_l()->dropout_generator())});
  };
  auto first = draw(reg);
  auto next = draw(reg);
  EXPECT_FALSE(torch::equal(first, next));
  reg.set_rng_state(saved);
  EXPECT_TRUE(torch::equal(draw(reg), first));
  // The two critics draw different streams, both fixed by the run's seed.
  EXPECT_FALSE(torch::equal(first.slice(0, 0, 256), first.slice(0, 256)));
  torch::manual_seed(5);
  GanpoRegularizer twin(small_config(0.3), kD, torch::kCPU);
  EXPECT_TRUE(torch::equal(draw(twin), first));
}

}  // namespace
}  // namespace ganpo
