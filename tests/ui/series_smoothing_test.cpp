// Debiased EMA against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ui/series_smoothing.h"

using ganpo::ui::debiased_ema;
using ganpo::ui::EmaState;
using ganpo::ui::smooth_next;

TEST(SeriesSmoothing, MatchesHandComputedDebiasedEma) {
  // a = 0.5: s1 = 0.5 -> 0.5 / 0.5 = 1; s2 = 0.25 + 1 = 1.25 -> / 0.75 = 1.6667;
  // s3 = 0.625 + 1.5 = 2.125 -> / 0.875 = 2.428571.
  auto s = debiased_ema({1, 2, 3}, 0.5);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_NEAR(s[0], 1.0, 1e-12);
  EXPECT_NEAR(s[1], 1.25 / 0.75, 1e-12);
  EXPECT_NEAR(s[2], 2.125 / 0.875, 1e-12);
  // a = 0.9 on a constant: debiasing makes the curve exactly the constant from the first point.
  for (double v : debiased_ema({4, 4, 4, 4}, 0.9)) EXPECT_NEAR(v, 4.0, 1e-12);
}

TEST(SeriesSmoothing, ZeroWeightIsIdentityAndWeightIsClamped) {
  auto s = debiased_ema({3, -1, 7}, 0.0);
  EXPECT_EQ(s, (std::vector<double>{3, -1, 7}));
  // 1.5 is clamped to 0.99: s1 = 0.01 * 2 / 0.01 = 2.
  EmaState st;
  EXPECT_NEAR(smooth_next(st, 2.0, 1.5), 2.0, 1e-12);
}

TEST(SeriesSmoothing, NonFiniteValuesPassThroughWithoutPoisoningTheState) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  auto s = debiased_ema({1, nan, inf, 3}, 0.5);
  EXPECT_NEAR(s[0], 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(s[1]));
  EXPECT_TRUE(std::isnan(s[2]));
  // Third input is the second finite one: (0.25 + 1.5) / 0.75.
  EXPECT_NEAR(s[3], 1.75 / 0.75, 1e-12);
}

TEST(SeriesSmoothing, IncrementalEqualsBatch) {
  std::vector<double> v;
  for (int i = 0; i < 100; ++i) v.push_back(std::sin(i * 0.3) + i * 0.01);
  auto batch = debiased_ema(v, 0.8);
  EmaState st;
  for (size_t i = 0; i < v.size(); ++i) EXPECT_DOUBLE_EQ(smooth_next(st, v[i], 0.8), batch[i]);
}
