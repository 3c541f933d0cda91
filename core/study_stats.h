// The numbers a study's report stands on: a mean over seeds with its 95% bootstrap interval,
// and the paired difference of two arms matched by seed (GANPO on minus GANPO off, same base
// loss, noise and seed) with its interval. A difference is called only when its interval
// excludes 0.
//
// Percentile bootstrap: `resamples` draws of n values with replacement (pairs, for a paired
// difference), the mean of each, and the (1 - level) / 2 and (1 + level) / 2 quantiles of those
// means (linear interpolation between order statistics, numpy's default). Draws come from a
// seeded generator, so a report is reproducible. With one value the interval is that value.
#pragma once

#include <cstdint>
#include <vector>

namespace ganpo {

struct Interval {
  double mean = 0;
  double low = 0, high = 0;
  int64_t n = 0;
  bool excludes_zero() const { return excludes(0.0); }
  // Whether the interval (of at least two values) lies wholly above or below `value`.
  bool excludes(double value) const { return n > 1 && (low > value || high < value); }
};

struct BootstrapOptions {
  int64_t resamples = 10000;
  double level = 0.95;
  uint64_t seed = 1;
};

// Throws std::invalid_argument for no values, or a level outside (0, 1).
Interval bootstrap_mean(const std::vector<double>& values, const BootstrapOptions& options = {});
// treated[i] - control[i] for each matched pair; throws when the sizes differ.
Interval paired_difference(const std::vector<double>& treated, const std::vector<double>& control,
                           const BootstrapOptions& options = {});

// The q-quantile of sorted values, interpolating linearly between order statistics.
double quantile_sorted(const std::vector<double>& sorted, double q);

}  // namespace ganpo
