// One computation's place on the machine's CPU: a training run, an evaluation, the workbench's
// generation thread while it generates.
//
// A CpuJob joins the machine's CPU share (cpu_share.h), plans and applies this process's
// threads from train.num_threads and the number of CPU jobs running (cpu_runtime.h), and owns
// the two lanes a step runs on (parallel_lanes.h). A job on the default (requested 0) re-plans
// when refresh() sees the number of jobs change, so concurrent runs split the cores and a run
// left alone takes them all back.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/cpu_runtime.h"
#include "core/cpu_share.h"
#include "core/parallel_lanes.h"

namespace ganpo {

class CpuJob {
public:
  // requested: threads asked for (0 = a fair share of the available cores).
  explicit CpuJob(int64_t requested = 0);

  ParallelLanes* lanes() { return &lanes_; }
  const CpuThreads& plan() const { return plan_; }
  std::string describe() const { return describe_cpu_threads(plan_); }
  int available_cores() const { return available_; }

  // Recounts the CPU jobs (at most every recheck_seconds) and applies a changed plan. Returns
  // the number of jobs seen when the plan changed, else 0.
  int refresh(double recheck_seconds = 2.0);

private:
  int64_t requested_;
  int available_;
  CpuShare share_;
  CpuThreads plan_;
  ParallelLanes lanes_;
  std::chrono::steady_clock::time_point checked_;
};

}  // namespace ganpo
