#include "core/cpu_job.h"

namespace ganpo {

CpuJob::CpuJob(int64_t requested)
    : requested_(requested), available_(available_cpu_cores()) {
  tune_allocator_for_tensors();
  plan_ = plan_cpu_threads(requested_, available_, share_.participants());
  apply_cpu_threads(plan_);
  lanes_.set_plan(plan_);
  checked_ = std::chrono::steady_clock::now();
}

int CpuJob::refresh(double recheck_seconds) {
  if (requested_ > 0) return 0;
  const auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - checked_).count() < recheck_seconds) return 0;
  checked_ = now;
  const int jobs = share_.participants();
  const CpuThreads plan = plan_cpu_threads(0, available_, jobs);
  if (plan == plan_) return 0;
  plan_ = plan;
  apply_cpu_threads(plan_);
  lanes_.set_plan(plan_);
  return jobs;
}

}  // namespace ganpo
