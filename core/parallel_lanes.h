// Two lanes of independent work in one training step (inter-op parallelism on the CPU).
//
// Parts of a step do not depend on each other: the reference forward and the policy forward;
// the good critic's phase and the bad critic's phase. On a few cores, running such a pair at
// the same time on two threads uses the machine better than splitting each matrix product
// between threads (cpu_runtime.h). ParallelLanes::run(a, b) runs `a` on the calling thread and
// `b` on one long-lived helper thread, with the BLAS pool narrowed to its per-lane size while
// both run, and returns when both are done. With one lane it runs b, then a, on the caller.
// The two closures must not share mutable state, nor draw from a shared random generator, so
// that the result is the same whichever lane finishes first and with one lane or two.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "core/cpu_runtime.h"

namespace ganpo {

class ParallelLanes {
public:
  ParallelLanes() = default;
  ~ParallelLanes();
  ParallelLanes(const ParallelLanes&) = delete;
  ParallelLanes& operator=(const ParallelLanes&) = delete;

  // Takes a new plan (lanes and BLAS threads); the helper thread starts on first use.
  void set_plan(const CpuThreads& plan) { plan_ = plan; }
  const CpuThreads& plan() const { return plan_; }

  // Runs a (here) and b (on the helper) together; rethrows a's exception, else b's. Autograd
  // state is per thread: b runs with gradients enabled unless it disables them itself, and under
  // the CPU's bf16 autocast when the caller is (the testing aid in core/bf16_autocast.h).
  void run(const std::function<void()>& a, const std::function<void()>& b);

private:
  void helper_loop();

  CpuThreads plan_;
  std::thread helper_;
  std::mutex mutex_;
  std::condition_variable cv_;
  const std::function<void()>* job_ = nullptr;
  bool job_done_ = false;
  bool quit_ = false;
  std::exception_ptr job_error_;
};

// lanes->run(a, b), or b then a on the caller when lanes is null.
inline void run_lanes(ParallelLanes* lanes, const std::function<void()>& a, const std::function<void()>& b) {
  if (lanes != nullptr) {
    lanes->run(a, b);
  } else {
    b();
    a();
  }
}

}  // namespace ganpo
