#include "core/study_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

namespace ganpo {

double quantile_sorted(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) throw std::invalid_argument("quantile of no values");
  if (!(q >= 0 && q <= 1)) throw std::invalid_argument("a quantile must be in [0, 1], got " + std::to_string(q));
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

Interval bootstrap_mean(const std::vector<double>& values, const BootstrapOptions& options) {
  if (values.empty()) throw std::invalid_argument("a bootstrap interval needs at least one value");
  for (double v : values)
    if (!std::isfinite(v))  // a diverged run's NaN must not turn the interval into NaN unnoticed
      throw std::invalid_argument("a bootstrap interval needs finite values, got " + std::to_string(v));
  if (!(options.level > 0 && options.level < 1))
    throw std::invalid_argument("the interval level must be in (0, 1), got " + std::to_string(options.level));
  Interval out;
  out.n = static_cast<int64_t>(values.size());
  out.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  if (values.size() == 1) {
    out.low = out.high = out.mean;
    return out;
  }
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<size_t> pick(0, values.size() - 1);
  std::vector<double> means(static_cast<size_t>(std::max<int64_t>(options.resamples, 1)));
  for (double& m : means) {
    double sum = 0;
    for (size_t i = 0; i < values.size(); ++i) sum += values[pick(rng)];
    m = sum / static_cast<double>(values.size());
  }
  std::sort(means.begin(), means.end());
  const double tail = (1 - options.level) / 2;
  out.low = quantile_sorted(means, tail);
  out.high = quantile_sorted(means, 1 - tail);
  return out;
}

Interval paired_difference(const std::vector<double>& treated, const std::vector<double>& control,
                           const BootstrapOptions& options) {
  if (treated.size() != control.size())
    throw std::invalid_argument("paired values differ in number: " + std::to_string(treated.size()) + " vs " +
                                std::to_string(control.size()));
  std::vector<double> differences(treated.size());
  for (size_t i = 0; i < treated.size(); ++i) differences[i] = treated[i] - control[i];
  return bootstrap_mean(differences, options);
}

}  // namespace ganpo
