// Series smoothing for the dashboard charts: the debiased exponential moving average that
// TensorBoard and Weights & Biases draw over a raw metric curve,
//   s_t = a * s_{t-1} + (1 - a) * x_t,   shown as s_t / (1 - a^n)   (n = finite points so far),
// so the first points are not pulled towards zero. Non-finite inputs (NaN, +-Inf) pass through as
// NaN and leave the state untouched, so one bad step neither hides nor poisons the curve.
// Pure functions; the incremental form lets a live chart smooth only the rows that just arrived.
#pragma once

#include <cstdint>
#include <vector>

namespace ganpo::ui {

// Largest smoothing weight the dashboard offers (the slider runs 0 .. 0.99).
inline constexpr double kMaxSmoothingWeight = 0.99;

struct EmaState {
  double accum = 0;    // undebiased s_{t}
  int64_t count = 0;   // finite points seen
};

// Feeds x into state; returns the debiased smoothed value (NaN when x is not finite).
// weight is clamped to [0, kMaxSmoothingWeight]; weight 0 returns x unchanged.
double smooth_next(EmaState& state, double x, double weight);

// The whole curve smoothed from scratch.
std::vector<double> debiased_ema(const std::vector<double>& values, double weight);

}  // namespace ganpo::ui
