#include "ui/chart_series.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ganpo::ui {

std::pair<size_t, size_t> ChartSeries::index_range(int64_t lo, int64_t hi) const {
  auto first = std::lower_bound(steps.begin(), steps.end(), lo);
  auto last = std::upper_bound(first, steps.end(), hi);
  return {static_cast<size_t>(first - steps.begin()), static_cast<size_t>(last - steps.begin())};
}

double ChartSeries::x_of(size_t i, XAxisMode mode, double wall_origin) const {
  switch (mode) {
    case XAxisMode::WallTime: return wall_times[i] - wall_origin;
    case XAxisMode::TokensSeen: return tokens[i];
    case XAxisMode::Step: break;
  }
  return static_cast<double>(steps[i]);
}

std::vector<SeriesBucket> decimate_in_memory(const ChartSeries& s, int64_t step_lo, int64_t step_hi, int64_t buckets) {
  std::vector<SeriesBucket> out;
  if (buckets <= 0 || step_hi < step_lo) return out;
  const int64_t span = step_hi - step_lo + 1;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto [first, last] = s.index_range(step_lo, step_hi);
  int64_t current = -1;
  for (size_t i = first; i < last; ++i) {
    const int64_t b = RunStore::bucket_of(s.steps[i], step_lo, step_hi, buckets);
    if (b != current) {
      SeriesBucket bk;
      bk.step_lo = step_lo + (b * span + buckets - 1) / buckets;
      bk.step_hi = step_lo + ((b + 1) * span + buckets - 1) / buckets - 1;
      bk.first_step = s.steps[i];
      bk.min = bk.max = bk.last = bk.mean = nan;
      out.push_back(bk);
      current = b;
    }
    SeriesBucket& bk = out.back();
    bk.last_step = s.steps[i];
    const double v = s.values[i];
    bk.last = std::isfinite(v) ? v : nan;  // like the store: the value at the bucket's last step, NaN when not finite
    if (!std::isfinite(v)) {
      ++bk.nan_count;
      continue;
    }
    bk.min = std::isnan(bk.min) ? v : std::min(bk.min, v);
    bk.max = std::isnan(bk.max) ? v : std::max(bk.max, v);
    bk.mean = std::isnan(bk.mean) ? v : bk.mean + (v - bk.mean) / static_cast<double>(bk.count + 1);
    ++bk.count;
  }
  return out;
}

}  // namespace ganpo::ui
