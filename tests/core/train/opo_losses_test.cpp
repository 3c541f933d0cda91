#include "core/train/opo_losses.h"

#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/error.h"

namespace ganpo {
namespace {

// Hand formulas (../shared/GANPO.md section 1) in plain doubles.
double log_sigmoid(double x) { return -std::log1p(std::exp(-x)); }

torch::Tensor vec(std::vector<double> v, bool grad = false) {
  return torch::tensor(v, torch::TensorOptions().dtype(torch::kFloat64)).requires_grad_(grad);
}

// ---- response_logps ------------------------------------------------------------------------

TEST(OpoResponseLogps, MatchesHandComputationWithShiftAndMask) {
  // N = 2, T = 4, V = 3: logits at position t predict input_ids at t + 1.
  const std::vector<std::vector<std::vector<double>>> L = {
      {{0.1, 0.5, -0.3}, {1.0, -1.0, 0.2}, {0.0, 0.3, 0.7}, {2.0, 1.0, 0.0}},
      {{-0.4, 0.2, 0.9}, {0.3, 0.3, -2.0}, {1.5, -0.5, 0.1}, {0.0, 0.0, 0.0}}};
  const std::vector<std::vector<int64_t>> ids = {{0, 2, 1, 0}, {1, 1, 0, 2}};
  // Row 0: response tokens at positions 2, 3. Row 1: only position 1 (position 3 is padding).
  const std::vector<std::vector<float>> resp = {{0, 0, 1, 1}, {0, 1, 0, 0}};

  auto logits = torch::zeros({2, 4, 3});
  auto input_ids = torch::zeros({2, 4}, torch::kLong);
  auto response_mask = torch::zeros({2, 4});
  for (int n = 0; n < 2; ++n)
    for (int t = 0; t < 4; ++t) {
      for (int v = 0; v < 3; ++v) logits[n][t][v] = L[n][t][v];
      input_ids[n][t] = ids[n][t];
      response_mask[n][t] = resp[n][t];
    }

  auto log_prob = [&](int n, int t, int64_t target) {
    double z = 0;
    for (int v = 0; v < 3; ++v) z += std::exp(L[n][t][v]);
    return L[n][t][target] - std::log(z);
  };
  double expected[2] = {0, 0};
  double counts[2] = {0, 0};
  for (int n = 0; n < 2; ++n)
    for (int t = 1; t < 4; ++t)
      if (resp[n][t] > 0) {
        expected[n] += log_prob(n, t - 1, ids[n][t]);
        counts[n] += 1;
      }
  // Spelled out for row 0: log p(ids[0][2]=1 | logits[0][1]) + log p(ids[0][3]=0 | logits[0][2]).
  const double row0 = (-1.0 - std::log(std::exp(1.0) + std::exp(-1.0) + std::exp(0.2))) +
                      (0.0 - std::log(std::exp(0.0) + std::exp(0.3) + std::exp(0.7)));
  ASSERT_NEAR(expected[0], row0, 1e-12);

  auto out = response_logps(logits, input_ids, response_mask);
  ASSERT_EQ(out.sum.sizes(), torch::IntArrayRef({2}));
  ASSERT_EQ(out.count.sizes(), torch::IntArrayRef({2}));
  for (int n = 0; n < 2; ++n) {
    EXPECT_NEAR(out.sum[n].item<double>(), expected[n], 1e-5) << "row " << n;
    EXPECT_DOUBLE_EQ(out.count[n].item<double>(), counts[n]) << "row " << n;
  }
  EXPECT_DOUBLE_EQ(out.count[0].item<double>(), 2.0);
  EXPECT_DOUBLE_EQ(out.count[1].item<double>(), 1.0);
}

TEST(OpoResponseLogps, LogitsFromAnOffsetScoreLikeTheFullLogits) {
  // Responses start at position 3 or later, so logits from position 2 on score every token.
  auto logits = torch::randn({2, 7, 5});
  auto ids = torch::randint(0, 5, {2, 7}, torch::kLong);
  auto mask = torch::tensor({{0.f, 0.f, 0.f, 1.f, 1.f, 1.f, 0.f}, {0.f, 0.f, 0.f, 0.f, 1.f, 1.f, 1.f}});
  auto full = response_logps(logits, ids, mask);
  auto tail = response_logps(logits.slice(1, 2), ids, mask, 2);
  EXPECT_TRUE(torch::allclose(full.sum, tail.sum, 1e-6, 1e-6));
  EXPECT_TRUE(torch::equal(full.count, tail.count));
  // Logits that do not cover positions from the offset to the end are a programming error.
  EXPECT_THROW(response_logps(logits.slice(1, 3), ids, mask, 2), std::logic_error);
}

TEST(OpoResponseLogps, PositionZeroOfTheMaskIsNeverScored) {
  // The first token has no prediction; a mask bit there must be ignored.
  auto logits = torch::randn({1, 3, 5});
  auto ids = torch::tensor({{1, 2, 3}}, torch::kLong);
  auto with0 = response_logps(logits, ids, torch::tensor({{1.f, 1.f, 1.f}}));
  auto without0 = response_logps(logits, ids, torch::tensor({{0.f, 1.f, 1.f}}));
  EXPECT_FLOAT_EQ(with0.sum.item<float>(), without0.sum.item<float>());
  EXPECT_FLOAT_EQ(with0.count.item<float>(), 2.f);
}

TEST(OpoResponseLogps, MaskedPositionsDoNotAffectTheSum) {
  auto logits = torch::randn({1, 5, 7});
  auto ids = torch::tensor({{1, 2, 3, 4, 5}}, torch::kLong);
  auto mask = torch::tensor({{0.f, 0.f, 1.f, 1.f, 0.f}});
  auto a = response_logps(logits, ids, mask);
  auto logits2 = logits.clone();
  logits2[0][3] += 10.0;  // predicts position 4, which is masked
  logits2[0][0] -= 3.0;   // predicts position 1, masked
  auto ids2 = ids.clone();
  ids2[0][4] = 6;  // masked target
  auto b = response_logps(logits2, ids2, mask);
  EXPECT_NEAR(a.sum.item<double>(), b.sum.item<double>(), 1e-6);
}

TEST(OpoResponseLogps, GradientFlowsToLogits) {
  auto logits = torch::randn({2, 4, 6}, torch::requires_grad());
  auto ids = torch::randint(0, 6, {2, 4}, torch::kLong);
  auto mask = torch::tensor({{0.f, 1.f, 1.f, 1.f}, {0.f, 0.f, 1.f, 0.f}});
  auto out = response_logps(logits, ids, mask);
  out.sum.sum().backward();
  ASSERT_TRUE(logits.grad().defined());
  // The last position predicts nothing; masked predictions get zero gradient.
  EXPECT_EQ(logits.grad().select(1, 3).abs().max().item<float>(), 0.f);
  EXPECT_EQ(logits.grad()[1][0].abs().max().item<float>(), 0.f);
  EXPECT_EQ(logits.grad()[1][2].abs().max().item<float>(), 0.f);
  EXPECT_GT(logits.grad()[1][1].abs().max().item<float>(), 0.f);
}

// ---- losses --------------------------------------------------------------------------------

struct Pairs {
  std::vector<double> pc, pr, rc, rr, lc, lr;
};

const Pairs kPairs = {{-12.5, -30.0}, {-15.0, -28.0}, {-13.0, -29.5}, {-14.0, -29.0}, {5, 12}, {7, 9}};

OpoInputs make_inputs(const Pairs& p, bool grad) {
  return {vec(p.pc, grad), vec(p.pr, grad), vec(p.rc), vec(p.rr), vec(p.lc), vec(p.lr)};
}

double hand_loss(const std::string& type, double beta, double gamma, const Pairs& p) {
  double total = 0;
  for (size_t i = 0; i < p.pc.size(); ++i) {
    const double cr = p.pc[i] - p.rc[i], rr = p.pr[i] - p.rr[i];
    double l = 0;
    if (type == "sigmoid") {
      l = -log_sigmoid(beta * (cr - rr));
    } else if (type == "simpo") {
      l = -log_sigmoid(beta * p.pc[i] / p.lc[i] - beta * p.pr[i] / p.lr[i] - gamma);
    } else if (type == "ipo") {
      const double hw = cr / p.lc[i], hl = rr / p.lr[i];
      l = std::pow(hw - hl - 1.0 / (2.0 * beta), 2);
    } else if (type == "hinge") {
      l = std::max(0.0, 1.0 - beta * (cr - rr));
    }
    total += l;
  }
  return total / static_cast<double>(p.pc.size());
}

TEST(OpoLoss, SigmoidMatchesHand) {
  auto t = opo_loss("sigmoid", 0.1, 0.0, make_inputs(kPairs, false));
  // Row 0: chosen ratio 0.5, rejected ratio -1.0 -> -log sigmoid(0.15).
  // Row 1: chosen ratio -0.5, rejected ratio 1.0 -> -log sigmoid(-0.15).
  const double expected = 0.5 * (std::log1p(std::exp(-0.15)) + std::log1p(std::exp(0.15)));
  EXPECT_NEAR(t.loss.item<double>(), expected, 1e-12);
  EXPECT_NEAR(t.loss.item<double>(), hand_loss("sigmoid", 0.1, 0, kPairs), 1e-12);
  EXPECT_EQ(t.loss.dim(), 0);
}

TEST(OpoLoss, SimpoMatchesHand) {
  const double beta = 2.5, gamma = 1.4;
  auto t = opo_loss("simpo", beta, gamma, make_inputs(kPairs, false));
  const double z0 = beta * (-12.5 / 5) - beta * (-15.0 / 7) - gamma;
  const double z1 = beta * (-30.0 / 12) - beta * (-28.0 / 9) - gamma;
  const double expected = 0.5 * (std::log1p(std::exp(-z0)) + std::log1p(std::exp(-z1)));
  EXPECT_NEAR(t.loss.item<double>(), expected, 1e-12);
  EXPECT_NEAR(t.loss.item<double>(), hand_loss("simpo", beta, gamma, kPairs), 1e-12);
}

TEST(OpoLoss, SimpoIgnoresTheReference) {
  auto a = opo_loss("simpo", 2.5, 1.4, make_inputs(kPairs, false));
  Pairs other = kPairs;
  other.rc = {5.0, -100.0};
  other.rr = {-3.0, 7.0};
  auto b = opo_loss("simpo", 2.5, 1.4, make_inputs(other, false));
  EXPECT_DOUBLE_EQ(a.loss.item<double>(), b.loss.item<double>());
}

TEST(OpoLoss, IpoMatchesHand) {
  const double beta = 0.1;
  auto t = opo_loss("ipo", beta, 0.0, make_inputs(kPairs, false));
  const double h0 = 0.5 / 5 - (-1.0) / 7, h1 = -0.5 / 12 - 1.0 / 9;
  const double expected = 0.5 * (std::pow(h0 - 5.0, 2) + std::pow(h1 - 5.0, 2));
  EXPECT_NEAR(t.loss.item<double>(), expected, 1e-10);
  EXPECT_NEAR(t.loss.item<double>(), hand_loss("ipo", beta, 0, kPairs), 1e-10);
}

TEST(OpoLoss, HingeMatchesHand) {
  // beta 0.5: row 0 margin 1.5 -> relu(1 - 0.75) = 0.25; row 1 margin -1.5 -> relu(1.75) = 1.75.
  auto t = opo_loss("hinge", 0.5, 0.0, make_inputs(kPairs, false));
  EXPECT_NEAR(t.loss.item<double>(), 0.5 * (0.25 + 1.75), 1e-12);
  // beta 2: row 0 -> relu(1 - 3) = 0 (clipped); row 1 -> relu(4) = 4.
  auto t2 = opo_loss("hinge", 2.0, 0.0, make_inputs(kPairs, false));
  EXPECT_NEAR(t2.loss.item<double>(), 0.5 * (0.0 + 4.0), 1e-12);
  EXPECT_NEAR(t2.loss.item<double>(), hand_loss("hinge", 2.0, 0, kPairs), 1e-12);
}

TEST(OpoLoss, RewardsAreBetaTimesLogRatioForEveryLoss) {
  for (const std::string type : {"sigmoid", "simpo", "ipo", "hinge"}) {
    const double beta = 0.3;
    auto t = opo_loss(type, beta, 0.5, make_inputs(kPairs, true));
    ASSERT_EQ(t.chosen_rewards.sizes(), torch::IntArrayRef({2})) << type;
    EXPECT_FALSE(t.chosen_rewards.requires_grad()) << type;
    EXPECT_FALSE(t.rejected_rewards.requires_grad()) << type;
    for (int i = 0; i < 2; ++i) {
      EXPECT_NEAR(t.chosen_rewards[i].item<double>(), beta * (kPairs.pc[i] - kPairs.rc[i]), 1e-12) << type;
      EXPECT_NEAR(t.rejected_rewards[i].item<double>(), beta * (kPairs.pr[i] - kPairs.rr[i]), 1e-12) << type;
    }
  }
}

TEST(OpoLoss, UnknownTypeThrows) {
  EXPECT_ANY_THROW(opo_loss("kto", 0.1, 0.0, make_inputs(kPairs, false)));
}

TEST(OpoLoss, ZeroLengthIsClampedNotDividedByZero) {
  Pairs p = kPairs;
  p.lc = {0, 0};
  p.lr = {0, 0};
  for (const std::string type : {"simpo", "ipo"}) {
    auto t = opo_loss(type, 0.5, 0.1, make_inputs(p, false));
    EXPECT_TRUE(std::isfinite(t.loss.item<double>())) << type;
  }
}

// ---- gradients: autograd vs central finite differences (double) ---------------------------

void check_gradients(const std::string& type, double beta, double gamma, const Pairs& p) {
  auto in = make_inputs(p, true);
  auto t = opo_loss(type, beta, gamma, in);
  t.loss.backward();
  auto gc = in.policy_chosen.grad(), gr = in.policy_rejected.grad();
  ASSERT_TRUE(gc.defined()) << type;
  ASSERT_TRUE(gr.defined()) << type;

  const double eps = 1e-6;
  auto f = [&](const Pairs& q) {
    torch::NoGradGuard guard;
    return opo_loss(type, beta, gamma, make_inputs(q, false)).loss.item<double>();
  };
  for (int which = 0; which < 2; ++which)
    for (size_t i = 0; i < p.pc.size(); ++i) {
      Pairs plus = p, minus = p;
      auto& vp = which == 0 ? plus.pc : plus.pr;
      auto& vm = which == 0 ? minus.pc : minus.pr;
      vp[i] += eps;
      vm[i] -= eps;
      const double fd = (f(plus) - f(minus)) / (2 * eps);
      const double ad = (which == 0 ? gc : gr)[static_cast<int64_t>(i)].item<double>();
      EXPECT_NEAR(ad, fd, 1e-6 * std::max(1.0, std::abs(fd)))
          << type << (which == 0 ? " d/d policy_chosen[" : " d/d policy_rejected[") << i << "]";
    }
}

TEST(OpoLossGradient, SigmoidMatchesFiniteDifferences) { check_gradients("sigmoid", 0.1, 0.0, kPairs); }
TEST(OpoLossGradient, SimpoMatchesFiniteDifferences) { check_gradients("simpo", 2.5, 1.4, kPairs); }
TEST(OpoLossGradient, IpoMatchesFiniteDifferences) { check_gradients("ipo", 0.1, 0.0, kPairs); }
TEST(OpoLossGradient, HingeMatchesFiniteDifferences) {
  // beta 0.5: both rows are on the active (linear) side of the hinge, away from the kink.
  check_gradients("hinge", 0.5, 0.0, kPairs);
  // beta 2: row 0 is clipped (gradient 0), row 1 active.
  check_gradients("hinge", 2.0, 0.0, kPairs);
}

TEST(OpoLossGradient, SigmoidAnalyticGradient) {
  // d/d pc of mean(-log sigmoid(beta*m)) = -(beta/B) * sigmoid(-beta*m).
  auto in = make_inputs(kPairs, true);
  opo_loss("sigmoid", 0.1, 0.0, in).loss.backward();
  const double m0 = 1.5, m1 = -1.5;
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  EXPECT_NEAR(in.policy_chosen.grad()[0].item<double>(), -0.05 * sig(-0.1 * m0), 1e-12);
  EXPECT_NEAR(in.policy_chosen.grad()[1].item<double>(), -0.05 * sig(-0.1 * m1), 1e-12);
  EXPECT_NEAR(in.policy_rejected.grad()[0].item<double>(), 0.05 * sig(-0.1 * m0), 1e-12);
}

}  // namespace
}  // namespace ganpo
