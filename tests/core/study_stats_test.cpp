#include "core/study_stats.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

namespace ganpo {
namespace {

// Quantiles of Student's t from the printed tables (and the closed forms at 1 and 2 degrees of
// freedom: tan(pi (p - 1/2)) and (2p - 1) / sqrt(2 p (1 - p))).
TEST(StudyStats, StudentTQuantilesAreTheTables) {
  EXPECT_NEAR(student_t_quantile(0.975, 1), 12.7062047362, 1e-8);
  EXPECT_NEAR(student_t_quantile(0.975, 2), 4.30265272975, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.975, 3), 3.18244630528, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.975, 4), 2.77644510520, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.95, 5), 2.01504837333, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.975, 10), 2.22813885196, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.975, 30), 2.04227245630, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.75, 1), 1.0, 1e-10);
  EXPECT_NEAR(student_t_quantile(0.9, 2), 0.8 / std::sqrt(0.18), 1e-10);
  EXPECT_NEAR(student_t_quantile(0.025, 3), -3.18244630528, 1e-9);
  EXPECT_NEAR(student_t_quantile(0.975, 100000), 1.95997, 1e-4) << "the normal's 1.95996 in the limit";
}

TEST(StudyStats, MeanIntervalIsTheTInterval) {
  // n = 5: mean 0.614, s = 0.0698569968, t(0.975, 4) = 2.7764451052.
  const Interval got = mean_interval({0.61, 0.58, 0.66, 0.70, 0.52});
  EXPECT_NEAR(got.mean, 0.614, 1e-12);
  const double half = 2.7764451052 * 0.0698569968 / std::sqrt(5.0);
  EXPECT_NEAR(got.low, 0.614 - half, 1e-9);
  EXPECT_NEAR(got.high, 0.614 + half, 1e-9);
  EXPECT_EQ(got.n, 5);
  // Equal values: no spread, the value itself.
  const Interval flat = mean_interval({0.3, 0.3, 0.3});
  EXPECT_DOUBLE_EQ(flat.low, 0.3);
  EXPECT_DOUBLE_EQ(flat.high, 0.3);
}

// The interval keeps its level at the few seeds a study has: differences of no effect (normal
// seed-to-seed noise) are called about 5 % of the time at 2, 3 and 5 seeds. A percentile
// bootstrap called them 50 %, 25 % and 17 % of the time.
TEST(StudyStats, DifferencesOfNoEffectAreCalledAboutFivePercentOfTheTime) {
  std::mt19937_64 rng(12345);
  std::normal_distribution<double> noise(0.0, 0.02);
  for (const size_t seeds : {2, 3, 5}) {
    int called = 0;
    constexpr int kTrials = 20000;
    for (int trial = 0; trial < kTrials; ++trial) {
      std::vector<double> on(seeds), off(seeds);
      for (size_t i = 0; i < seeds; ++i) on[i] = 0.6 + noise(rng), off[i] = 0.6 + noise(rng);
      called += paired_difference(on, off).excludes_zero();
    }
    const double rate = static_cast<double>(called) / kTrials;
    EXPECT_GT(rate, 0.04) << seeds << " seeds";
    EXPECT_LT(rate, 0.06) << seeds << " seeds";
  }
  // [0.001, 0.002, 0.050]: a percentile bootstrap's interval was [0.001, 0.050], a call; not here.
  EXPECT_FALSE(paired_difference({0.601, 0.602, 0.650}, {0.6, 0.6, 0.6}).excludes_zero());
}

TEST(StudyStats, PairedDifferencesAreCalledOnlyWhenTheIntervalExcludesZero) {
  // GANPO on vs off at four seeds: consistently better by 0.03-0.05.
  const Interval better = paired_difference({0.65, 0.62, 0.70, 0.58}, {0.61, 0.58, 0.65, 0.55});
  EXPECT_NEAR(better.mean, 0.04, 1e-12);
  EXPECT_TRUE(better.excludes_zero()) << better.low << " .. " << better.high;
  // Mixed signs: no call.
  const Interval unclear = paired_difference({0.65, 0.55, 0.70, 0.58}, {0.61, 0.58, 0.65, 0.60});
  EXPECT_FALSE(unclear.excludes_zero()) << unclear.low << " .. " << unclear.high;
  // One seed: the value itself, and never a call.
  const Interval one = paired_difference({0.7}, {0.6});
  EXPECT_NEAR(one.low, 0.1, 1e-12);
  EXPECT_NEAR(one.high, 0.1, 1e-12);
  EXPECT_FALSE(one.excludes_zero());
}

TEST(StudyStats, BadInputIsRefused) {
  EXPECT_THROW(mean_interval({}), std::invalid_argument);
  EXPECT_THROW(paired_difference({1, 2}, {1}), std::invalid_argument);
  EXPECT_THROW(mean_interval({1, 2}, 1.0), std::invalid_argument);
  EXPECT_THROW(mean_interval({0.5, std::nan("")}), std::invalid_argument);
  EXPECT_THROW(student_t_quantile(1.0, 3), std::invalid_argument);
  EXPECT_THROW(student_t_quantile(0.9, 0), std::invalid_argument);
}

}  // namespace
}  // namespace ganpo
