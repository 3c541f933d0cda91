#include "ui/series_smoothing.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ganpo::ui {

double smooth_next(EmaState& state, double x, double weight) {
  if (!std::isfinite(x)) return std::numeric_limits<double>::quiet_NaN();
  const double a = std::clamp(weight, 0.0, kMaxSmoothingWeight);
  state.accum = a * state.accum + (1.0 - a) * x;
  ++state.count;
  if (a == 0.0) return x;
  return state.accum / (1.0 - std::pow(a, static_cast<double>(state.count)));
}

std::vector<double> debiased_ema(const std::vector<double>& values, double weight) {
  std::vector<double> out;
  out.reserve(values.size());
  EmaState state;
  for (double x : values) out.push_back(smooth_next(state, x, weight));
  return out;
}

}  // namespace ganpo::ui
