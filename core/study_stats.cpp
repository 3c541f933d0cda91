#include "core/study_stats.h"

#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

namespace ganpo {
namespace {

// The continued fraction of the incomplete beta function, evaluated by the modified Lentz method.
double incomplete_beta_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300, kEpsilon = 1e-15;
  const auto not_tiny = [](double v) { return std::fabs(v) < kTiny ? kTiny : v; };
  double c = 1, d = 1 / not_tiny(1 - (a + b) * x / (a + 1)), h = d;
  for (int m = 1; m <= 1000; ++m) {
    const double even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 / not_tiny(1 + even * d);
    c = not_tiny(1 + even / c);
    h *= d * c;
    const double odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 / not_tiny(1 + odd * d);
    c = not_tiny(1 + odd / c);
    h *= d * c;
    if (std::fabs(d * c - 1) < kEpsilon) break;
  }
  return h;
}

// I_x(a, b), the regularized incomplete beta function.
double regularized_incomplete_beta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front =
      std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  // The fraction converges fast on this side of the mean; the symmetry I_x(a, b) = 1 - I_1-x(b, a) otherwise.
  if (x < (a + 1) / (a + b + 2)) return front * incomplete_beta_fraction(a, b, x) / a;
  return 1 - front * incomplete_beta_fraction(b, a, 1 - x) / b;
}

// P(T <= t) for Student's t with df degrees of freedom.
double student_t_cdf(double t, double df) {
  const double tail = 0.5 * regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t));
  return t >= 0 ? 1 - tail : tail;
}

}  // namespace

double student_t_quantile(double p, int64_t df) {
  if (!(p > 0 && p < 1)) throw std::invalid_argument("a t quantile needs p in (0, 1), got " + std::to_string(p));
  if (df < 1) throw std::invalid_argument("a t quantile needs at least 1 degree of freedom, got " + std::to_string(df));
  if (p < 0.5) return -student_t_quantile(1 - p, df);
  double low = 0, high = 1;
  while (student_t_cdf(high, static_cast<double>(df)) < p) high *= 2;
  for (int i = 0; i < 200 && high - low > 1e-13 * high; ++i) {
    const double mid = (low + high) / 2;
    (student_t_cdf(mid, static_cast<double>(df)) < p ? low : high) = mid;
  }
  return (low + high) / 2;
}

Interval mean_interval(const std::vector<double>& values, double level) {
  if (values.empty()) throw std::invalid_argument("an interval needs at least one value");
  for (double v : values)
    if (!std::isfinite(v))  // a diverged run's NaN must not turn the interval into NaN unnoticed
      throw std::invalid_argument("an interval needs finite values, got " + std::to_string(v));
  if (!(level > 0 && level < 1))
    throw std::invalid_argument("the interval level must be in (0, 1), got " + std::to_string(level));
  Interval out;
  out.n = static_cast<int64_t>(values.size());
  const double n = static_cast<double>(values.size());
  out.mean = std::accumulate(values.begin(), values.end(), 0.0) / n;
  out.low = out.high = out.mean;
  if (values.size() == 1) return out;
  double squares = 0;
  for (double v : values) squares += (v - out.mean) * (v - out.mean);
  const double standard_error = std::sqrt(squares / (n - 1) / n);
  const double half_width = student_t_quantile(1 - (1 - level) / 2, out.n - 1) * standard_error;
  out.low = out.mean - half_width;
  out.high = out.mean + half_width;
  return out;
}

Interval paired_difference(const std::vector<double>& treated, const std::vector<double>& control, double level) {
  if (treated.size() != control.size())
    throw std::invalid_argument("paired values differ in number: " + std::to_string(treated.size()) + " vs " +
                                std::to_string(control.size()));
  std::vector<double> differences(treated.size());
  for (size_t i = 0; i < treated.size(); ++i) differences[i] = treated[i] - control[i];
  return mean_interval(differences, level);
}

}  // namespace ganpo
