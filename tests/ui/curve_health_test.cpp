// Health rules: each fires on a synthetic curve made to show it and stays silent on a healthy run.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "ui/curve_health.h"

using namespace ganpo::ui;

namespace {

struct Curve {
  std::vector<int64_t> steps;
  std::vector<double> values;
};

template <class F>
Curve make(int n, F f, int64_t step_every = 1) {
  Curve c;
  for (int i = 0; i < n; ++i) {
    c.steps.push_back((i + 1) * step_every);
    c.values.push_back(f(i));
  }
  return c;
}

bool fires(const std::vector<HealthFinding>& f, const std::string& rule) {
  for (const auto& x : f)
    if (x.rule == rule) return true;
  return false;
}

// A healthy GANPO run: loss falls, accuracies rise, critics above chance, chosen logps rise,
// rejected fall.
struct Healthy {
  std::mt19937 rng{7};
  std::normal_distribution<double> noise{0, 0.02};
  Curve loss = make(400, [&](int i) { return 0.69 * std::exp(-i / 150.0) + 0.1 + noise(rng); });
  Curve acc = make(400, [&](int i) { return std::min(1.0, 0.5 + i / 500.0 + noise(rng)); });
  Curve critic = make(400, [&](int i) { return 0.75 + noise(rng); });
  Curve lc = make(400, [&](int i) { return -40 + i * 0.01 + noise(rng); });
  Curve lr = make(400, [&](int i) { return -42 - i * 0.02 + noise(rng); });
  CurveSet set() {
    return {{"loss", view_of(loss.steps, loss.values)},
            {"rewards/accuracies", view_of(acc.steps, acc.values)},
            {"critic/acc_chosen", view_of(critic.steps, critic.values)},
            {"critic/acc_rejected", view_of(critic.steps, critic.values)},
            {"logps/chosen", view_of(lc.steps, lc.values)},
            {"logps/rejected", view_of(lr.steps, lr.values)}};
  }
};

}  // namespace

TEST(CurveHealth, HealthyRunIsSilent) {
  Healthy h;
  auto f = check_curve_health(h.set());
  EXPECT_TRUE(f.empty()) << health_summary(f);
  EXPECT_EQ(health_summary(f), "healthy");
  EXPECT_TRUE(check_curve_health({}).empty());
}

TEST(CurveHealth, LossNanSinceFirstNonFiniteStepThatNeverRecovered) {
  Healthy h;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  // A NaN that recovered (step 100) does not count; the run of NaN from step 812 does.
  Curve loss = make(900, [&](int i) { return (i + 1 == 100 || i + 1 >= 812) ? nan : 0.5; });
  auto set = h.set();
  set["loss"] = view_of(loss.steps, loss.values);
  auto f = check_curve_health(set);
  ASSERT_TRUE(fires(f, "loss_nan"));
  EXPECT_NE(health_summary(f).find("loss is NaN since step 812"), std::string::npos) << health_summary(f);
  // Recovered: silent.
  loss.values.back() = 0.4;
  set["loss"] = view_of(loss.steps, loss.values);
  EXPECT_FALSE(fires(check_curve_health(set), "loss_nan"));
  // Inf is named as such.
  Curve inf_loss = make(10, [](int i) { return i < 7 ? 1.0 : std::numeric_limits<double>::infinity(); }, 10);
  set["loss"] = view_of(inf_loss.steps, inf_loss.values);
  EXPECT_NE(health_summary(check_curve_health(set)).find("loss is +Inf since step 80"), std::string::npos);
}

TEST(CurveHealth, CriticAccuracyAtChanceAfterWarmup) {
  Healthy h;
  std::mt19937 rng(3);
  std::normal_distribution<double> noise(0, 0.03);
  Curve chance = make(300, [&](int) { return 0.5 + noise(rng); });
  auto set = h.set();
  set["critic/acc_chosen"] = view_of(chance.steps, chance.values);
  set["critic/acc_rejected"] = view_of(chance.steps, chance.values);
  auto f = check_curve_health(set);
  ASSERT_TRUE(fires(f, "critic_chance"));
  EXPECT_NE(health_summary(f).find("critic accuracy ~50%: the critics cannot tell policy from reference latents"),
            std::string::npos);
  // Before warmup ends (all points at step <= 100) the rule waits.
  Curve early = make(100, [](int) { return 0.5; });
  set["critic/acc_chosen"] = view_of(early.steps, early.values);
  set["critic/acc_rejected"] = view_of(early.steps, early.values);
  EXPECT_FALSE(fires(check_curve_health(set), "critic_chance"));
}

TEST(CurveHealth, RewardAccuracyStuckAtHalf) {
  Healthy h;
  Curve stuck = make(300, [](int i) { return i % 2 ? 0.5625 : 0.4375; });
  auto set = h.set();
  set["rewards/accuracies"] = view_of(stuck.steps, stuck.values);
  auto f = check_curve_health(set);
  ASSERT_TRUE(fires(f, "accuracy_stuck"));
  EXPECT_NE(health_summary(f).find("accuracy stuck at 0.5"), std::string::npos);
  // Noisy but stuck (small batches: accuracies scatter by 0.15 around 0.5), read at every poll
  // of a growing run: it says so nearly always, not now and then.
  std::mt19937 rng(4);
  std::normal_distribution<double> noise(0, 0.15);
  Curve noisy = make(2000, [&](int) { return 0.5 + noise(rng); });
  int polls = 0, fired = 0;
  for (size_t n = 150; n <= 2000; n += 5, ++polls) {
    set["rewards/accuracies"] = view_of(noisy.steps, noisy.values);
    set["rewards/accuracies"].size = n;
    fired += fires(check_curve_health(set), "accuracy_stuck");
  }
  EXPECT_GT(fired, polls * 9 / 10) << fired << " of " << polls;
}

// A curve rising (or falling) through 0.5 is not stuck there, though its recent mean is 0.5.
TEST(CurveHealth, ACurvePassingThroughHalfIsNotAtChance) {
  Healthy h;
  Curve rising = make(150, [](int i) { return i < 100 ? 0.3 : 0.3 + 0.4 * (i - 100) / 49.0; });
  auto set = h.set();
  set["rewards/accuracies"] = view_of(rising.steps, rising.values);
  set["critic/acc_chosen"] = view_of(rising.steps, rising.values);
  set["critic/acc_rejected"] = view_of(rising.steps, rising.values);
  const auto f = check_curve_health(set);
  EXPECT_FALSE(fires(f, "accuracy_stuck")) << health_summary(f);
  EXPECT_FALSE(fires(f, "critic_chance")) << health_summary(f);
}

// A non-finite term the trainer recorded before failing (grad_norm here) is named.
TEST(CurveHealth, ANonFiniteGradNormIsNamed) {
  Healthy h;
  Curve norm = make(40, [](int i) { return i < 39 ? 1.0 : std::numeric_limits<double>::quiet_NaN(); });
  auto set = h.set();
  set["grad_norm"] = view_of(norm.steps, norm.values);
  EXPECT_NE(health_summary(check_curve_health(set)).find("grad_norm is NaN since step 40"), std::string::npos)
      << health_summary(check_curve_health(set));
}

// Flat noisy log-probs that move together (as chosen and rejected do), re-read as a live run
// grows (every 5 steps up to 10000): never "falling". The fitted drop alone fired in about 1 of
// 150 such reads.
TEST(CurveHealth, FlatNoisyLogProbsDoNotFlickerIntoFalling) {
  Healthy h;
  std::mt19937 rng(11);
  std::normal_distribution<double> noise(0, 0.5), own(0, 0.3);
  Curve c = make(10000, [&](int) { return -40 + noise(rng); });
  Curve r = c;
  for (double& v : r.values) v += -5 + own(rng);
  auto set = h.set();
  int fired = 0;
  for (size_t n = 50; n <= 10000; n += 5) {
    set["logps/chosen"] = view_of(c.steps, c.values);
    set["logps/rejected"] = view_of(r.steps, r.values);
    set["logps/chosen"].size = n;
    set["logps/rejected"].size = n;
    fired += fires(check_curve_health(set), "logps_falling");
  }
  EXPECT_EQ(fired, 0);
}

TEST(CurveHealth, BothLogProbsFalling) {
  Healthy h;
  std::mt19937 rng(5);
  std::normal_distribution<double> noise(0, 0.05);
  Curve c = make(200, [&](int i) { return -40 - i * 0.05 + noise(rng); });
  Curve r = make(200, [&](int i) { return -45 - i * 0.08 + noise(rng); });
  auto set = h.set();
  set["logps/chosen"] = view_of(c.steps, c.values);
  set["logps/rejected"] = view_of(r.steps, r.values);
  auto f = check_curve_health(set);
  ASSERT_TRUE(fires(f, "logps_falling"));
  EXPECT_NE(health_summary(f).find("both chosen and rejected log-probs falling"), std::string::npos);
  // Only rejected falling is what DPO wants: silent.
  Curve flat = make(200, [&](int) { return -40 + noise(rng); });
  set["logps/chosen"] = view_of(flat.steps, flat.values);
  EXPECT_FALSE(fires(check_curve_health(set), "logps_falling"));
}
