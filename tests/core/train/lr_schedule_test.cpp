#include "core/train/lr_schedule.h"

#include <cmath>
#include <string>

#include <gtest/gtest.h>

namespace ganpo {
namespace {

TEST(LrScheduleWarmup, StepsAreCeilOfRatioTimesTotal) {
  EXPECT_EQ(warmup_steps(0.0, 100), 0);
  EXPECT_EQ(warmup_steps(0.1, 100), 10);
  EXPECT_EQ(warmup_steps(0.05, 10), 1);  // ceil(0.5)
  EXPECT_EQ(warmup_steps(0.25, 10), 3);  // ceil(2.5)
  EXPECT_EQ(warmup_steps(1.0, 7), 7);
}

TEST(LrScheduleWarmup, RampsLinearlyUpToOne) {
  for (const std::string type : {"constant", "linear", "cosine"}) {
    const int64_t total = 20, warmup = 4;
    double prev = 0.0;
    for (int64_t step = 0; step < warmup; ++step) {
      const double m = lr_multiplier(type, step, total, warmup);
      EXPECT_GT(m, prev) << type << " step " << step;
      EXPECT_LT(m, 1.0) << type << " step " << step;
      EXPECT_GT(m, 0.0) << type << " step " << step;  // the first step still learns
      EXPECT_NEAR(m, static_cast<double>(step + 1) / (warmup + 1), 1e-12) << type;
      prev = m;
    }
    // Warmup ends at the peak.
    EXPECT_DOUBLE_EQ(lr_multiplier(type, warmup, total, warmup), 1.0) << type;
  }
}

TEST(LrScheduleLinear, DecaysToZeroAtTheEnd) {
  const int64_t total = 10;
  EXPECT_DOUBLE_EQ(lr_multiplier("linear", 0, total, 0), 1.0);
  EXPECT_NEAR(lr_multiplier("linear", 5, total, 0), 0.5, 1e-12);
  EXPECT_NEAR(lr_multiplier("linear", total, total, 0), 0.0, 1e-12);
  EXPECT_GT(lr_multiplier("linear", total - 1, total, 0), 0.0);  // the last step taken still learns
  // With warmup: decay over the remaining steps.
  EXPECT_NEAR(lr_multiplier("linear", 2 + 4, 10, 2), 0.5, 1e-12);
  EXPECT_NEAR(lr_multiplier("linear", 10, 10, 2), 0.0, 1e-12);
  // Never negative past the end.
  EXPECT_NEAR(lr_multiplier("linear", 15, 10, 2), 0.0, 1e-12);
  double prev = 2.0;
  for (int64_t s = 0; s <= total; ++s) {
    const double m = lr_multiplier("linear", s, total, 0);
    EXPECT_LT(m, prev);
    prev = m;
  }
}

TEST(LrScheduleCosine, MidpointIsHalfAndEndIsZero) {
  EXPECT_DOUBLE_EQ(lr_multiplier("cosine", 0, 10, 0), 1.0);
  EXPECT_NEAR(lr_multiplier("cosine", 5, 10, 0), 0.5, 1e-12);
  EXPECT_NEAR(lr_multiplier("cosine", 10, 10, 0), 0.0, 1e-12);
  EXPECT_NEAR(lr_multiplier("cosine", 2 + 5, 12, 2), 0.5, 1e-12);
  // Quarter point: 0.5 (1 + cos(pi/4)).
  EXPECT_NEAR(lr_multiplier("cosine", 25, 100, 0), 0.5 * (1.0 + std::cos(M_PI / 4)), 1e-12);
}

TEST(LrScheduleConstant, StaysOne) {
  for (int64_t s = 0; s <= 50; ++s) EXPECT_DOUBLE_EQ(lr_multiplier("constant", s, 50, 0), 1.0);
  for (int64_t s = 5; s <= 50; ++s) EXPECT_DOUBLE_EQ(lr_multiplier("constant", s, 50, 5), 1.0);
}

TEST(LrScheduleEdge, SingleStepAndAllWarmup) {
  EXPECT_DOUBLE_EQ(lr_multiplier("linear", 0, 1, 0), 1.0);
  for (const std::string type : {"constant", "linear", "cosine"}) {
    const double m = lr_multiplier(type, 4, 5, 5);  // every step is warmup
    EXPECT_TRUE(std::isfinite(m)) << type;
    EXPECT_GT(m, 0.0) << type;
    EXPECT_LE(m, 1.0) << type;
  }
}

}  // namespace
}  // namespace ganpo
