// How fast this workspace's machine trains, read from the runs it finished: run_work() of each
// completed run over its wall time (started to finished), the median over the most recent ones.
// With it, a planned study's duration is estimated before anything runs; with no finished run,
// the built-in 2-core figure stands in (reference_work_per_second) and the estimate says so.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "db/run_store.h"

namespace ganpo {

struct WorkSpeed {
  double work_per_second = 0;
  int runs = 0;  // finished runs it was measured on; 0 = the built-in figure
};

WorkSpeed measured_work_speed(RunStore& store, int most_recent = 20);

struct DurationEstimate {
  double seconds = 0;
  std::string basis;  // "measured on 3 finished runs of this workspace" / "the built-in 2-core figure"
};

// The runs one after another (a CPU study runs one at a time, each on every core).
DurationEstimate estimate_duration(const std::vector<RunConfig>& runs, const WorkSpeed& speed);

}  // namespace ganpo
