// The numbers a study's report stands on: a mean over seeds with its 95% interval, and the paired
// difference of two arms matched by seed (GANPO on minus GANPO off, same base loss, noise and
// seed) with its interval. A difference is called only when its interval excludes 0.
//
// Student's t interval: mean +- t(1 - (1 - level) / 2, n - 1) * s / sqrt(n), with s the sample
// standard deviation (n - 1 in its denominator); for a paired difference, over the per-seed
// differences. Studies have few seeds (3 by default), where a percentile bootstrap's interval is
// far too short: with 3 values it is [min, max], so a difference of no effect would be called
// whenever its three signs agree, 25 % of the time instead of 5 %. The t interval keeps its level
// at any n for normally distributed seed-to-seed noise. With one value there is no interval (low
// = high = the value, never called).
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

// Throws std::invalid_argument for no values, a value that is not finite, or a level outside (0, 1).
Interval mean_interval(const std::vector<double>& values, double level = 0.95);
// treated[i] - control[i] for each matched pair; throws when the sizes differ.
Interval paired_difference(const std::vector<double>& treated, const std::vector<double>& control,
                           double level = 0.95);

// The p-quantile of Student's t distribution with df degrees of freedom (p in (0, 1), df >= 1),
// from its distribution function (the regularized incomplete beta function) by bisection.
double student_t_quantile(double p, int64_t df);

}  // namespace ganpo
