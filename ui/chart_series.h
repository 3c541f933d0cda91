// Chart series: the in-memory copy of one metric curve as the dashboard received it (every row,
// in arrival order: step, value, wall time, tokens seen), plus the pure helpers the charts need
// around it: min/max bucketing with the run store's bucket formula (for derived series that are
// not stored), and the x coordinate of a point under each x-axis mode.
#pragma once

#include <cstdint>
#include <vector>

#include "db/run_store.h"

namespace ganpo::ui {

enum class XAxisMode { Step = 0, WallTime = 1, TokensSeen = 2 };

struct ChartSeries {
  std::vector<int64_t> steps;
  std::vector<double> values;      // NaN / +-Inf kept as logged
  std::vector<double> wall_times;  // seconds since the epoch
  std::vector<double> tokens;      // tokens seen (carried forward when a row has none)

  size_t size() const { return steps.size(); }
  // Index range [first, last) of the points with lo <= step <= hi (steps ascending).
  std::pair<size_t, size_t> index_range(int64_t lo, int64_t hi) const;
  // x of point i under mode; wall time is relative to wall_origin.
  double x_of(size_t i, XAxisMode mode, double wall_origin) const;
};

// The same buckets RunStore::decimated_series returns, computed over points [first, last).
std::vector<SeriesBucket> decimate_in_memory(const ChartSeries& s, int64_t step_lo, int64_t step_hi, int64_t buckets);

}  // namespace ganpo::ui
